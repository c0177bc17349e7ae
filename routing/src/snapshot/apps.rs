//! The `apps` table: per-app overrides of the per-client limits.
//!
//! Each cell is optional: NULL leaves the edge's setting
//! (`--client-max-connections`, `--client-rate`) in force for that app. A
//! count of 0 means "no limit for this app", even when the setting has one.
//! `client_rate_period_seconds` (1..=86400) is the period of the app's
//! rate; set while `client_rate` is NULL, it changes the period of the
//! setting's count for this app; NULL while `client_rate` is set, the
//! setting's period applies, or 60 s when the setting has none. The
//! snapshot only carries the cells; the limiter resolves them against the
//! settings.

use std::time::Duration;

use super::cells::Cells;
use super::{FastMap, RowError, MAX_LIMIT};
use crate::model::AppId;
use crate::raw::{AppRow, Value};

/// Largest `client_rate_period_seconds`: one day.
pub const MAX_RATE_PERIOD_SECONDS: i64 = 86_400;

/// Per-app overrides of the per-client limits, as in routing.db (None = the setting's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppLimits {
    /// Connections held at once per client IP; `Some(0)`: no limit for this app.
    pub client_max_connections: Option<u32>,
    /// New connections per client IP per period; `Some(0)`: no limit for this app.
    pub client_rate: Option<u32>,
    /// The period of the rate (of the app's, or of the setting's when
    /// `client_rate` is None).
    pub client_rate_period: Option<Duration>,
}

/// An optional integer cell in `range`: NULL is `Some(None)`, an error `None`.
fn optional(
    c: &mut Cells<'_>,
    col: &'static str,
    v: &Value,
    range: (i64, i64),
) -> Option<Option<i64>> {
    match v {
        Value::Null => Some(None),
        v => c.int(col, v, None, range).map(Some),
    }
}

/// Validates the `apps` rows into limits by app.
pub(super) fn validate(rows: &[AppRow], errors: &mut Vec<RowError>) -> FastMap<AppId, AppLimits> {
    let mut out: FastMap<AppId, AppLimits> = FastMap::default();
    for r in rows {
        let mut c = Cells {
            errors,
            table: "apps",
            id: &r.app,
            rowid: r.rowid,
        };
        let app = c.text("app", &r.app, true);
        let max = optional(
            &mut c,
            "client_max_connections",
            &r.client_max_connections,
            (0, MAX_LIMIT),
        );
        let rate = optional(&mut c, "client_rate", &r.client_rate, (0, MAX_LIMIT));
        let period = optional(
            &mut c,
            "client_rate_period_seconds",
            &r.client_rate_period_seconds,
            (1, MAX_RATE_PERIOD_SECONDS),
        );
        let (Some(app), Some(max), Some(rate), Some(period)) = (app, max, rate, period) else {
            continue;
        };
        let limits = AppLimits {
            client_max_connections: max.map(|n| n as u32),
            client_rate: rate.map(|n| n as u32),
            client_rate_period: period.map(|s| Duration::from_secs(s as u64)),
        };
        if out.insert(AppId::new(app), limits).is_some() {
            c.err(Some("app"), "duplicate app".into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(app: &str, max: Value, rate: Value, period: Value) -> AppRow {
        AppRow {
            rowid: 1,
            app: app.into(),
            client_max_connections: max,
            client_rate: rate,
            client_rate_period_seconds: period,
        }
    }

    #[test]
    fn cells_are_optional_and_bounded() {
        let mut errors = Vec::new();
        let rows = [
            row("web", 10.into(), Value::Null, Value::Null),
            row("api", 0.into(), 100.into(), 1.into()),
            row("ssh", Value::Null, Value::Null, 86_400.into()),
        ];
        let m = validate(&rows, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            m["web"],
            AppLimits {
                client_max_connections: Some(10),
                ..AppLimits::default()
            }
        );
        assert_eq!(m["api"].client_rate, Some(100));
        assert_eq!(m["api"].client_rate_period, Some(Duration::from_secs(1)));
        assert_eq!(
            m["ssh"].client_rate_period,
            Some(Duration::from_secs(86_400))
        );

        let bad = [
            row("a", (-1).into(), Value::Null, Value::Null),
            row("b", Value::Null, (MAX_LIMIT + 1).into(), Value::Null),
            row("c", Value::Null, Value::Null, 0.into()),
            row("d", Value::Null, Value::Null, 86_401.into()),
            row("e", "many".into(), Value::Null, Value::Null),
            row(" ", Value::Null, Value::Null, Value::Null),
            row("web", Value::Null, Value::Null, Value::Null),
            row(" web ", Value::Null, Value::Null, Value::Null),
        ];
        let mut errors = Vec::new();
        validate(&bad, &mut errors);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "apps \"a\" column client_max_connections: -1 is negative",
                &format!("apps \"b\" column client_rate: {} is outside 0..={MAX_LIMIT}", MAX_LIMIT + 1),
                "apps \"c\" column client_rate_period_seconds: 0 is outside 1..=86400",
                "apps \"d\" column client_rate_period_seconds: 86401 is outside 1..=86400",
                "apps \"e\" column client_max_connections: expected an integer, found text \"many\"",
                "apps rowid 1 column app: must not be empty",
                "apps \"web\" column app: duplicate app",
            ]
        );
    }
}
