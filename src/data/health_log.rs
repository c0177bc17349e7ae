//! Log lines of backend health changes, whoever caused them (a proxy
//! connect here in the data plane, an active check in the control plane):
//! one line budget for all of them, so a whole table going down at once
//! writes a few lines, and each line logged says how many were not.

use std::time::{Duration, Instant};

use geoedge_routing::{Backend, HealthChange, Router};

use crate::data::throttle::LineBudget;

/// Backend health changes logged per [`CHANGE_LINES_INTERVAL`] at most;
/// past it they are counted, and the next line logged says how many were
/// not: a whole large table going down at once writes a few
/// lines, and `edge_region_backends` has the counts.
pub const CHANGE_LINES_MAX: u32 = 20;
/// See [`CHANGE_LINES_MAX`].
pub const CHANGE_LINES_INTERVAL: Duration = Duration::from_secs(10);
/// The log budget of health changes (checks and connects alike).
pub static CHANGE_LINES: LineBudget = LineBudget::new(CHANGE_LINES_MAX, CHANGE_LINES_INTERVAL);

/// The end of a health change's line that says how many were not logged
/// since the last one (nothing when none were).
pub fn more(not_logged: u64) -> String {
    if not_logged == 0 {
        String::new()
    } else {
        format!(" ({not_logged} more health changes not logged since the last line)")
    }
}

/// Logs a change that a proxy connect caused.
pub fn log_connect_change(backend: &Backend, change: HealthChange, router: &Router) {
    if matches!(change, HealthChange::Down | HealthChange::Up) {
        return;
    }
    let Some(not_logged) = CHANGE_LINES.check(Instant::now()) else {
        return;
    };
    match change {
        HealthChange::Ejected {
            backoff,
            trial_failed: false,
        } => tracing::warn!(
            backend = %backend.id,
            "backend ejected after {} failed connects in a row; a trial connect in {backoff:?}{}",
            router.health_config().eject_after,
            more(not_logged)
        ),
        HealthChange::Ejected {
            backoff,
            trial_failed: true,
        } => tracing::warn!(
            backend = %backend.id,
            "trial connect to an ejected backend failed; next trial in {backoff:?}{}",
            more(not_logged)
        ),
        HealthChange::Readmitted => {
            tracing::info!(backend = %backend.id, "ejected backend re-admitted: a connect succeeded{}", more(not_logged))
        }
        HealthChange::Down | HealthChange::Up => {}
    }
}
