//! Active health checks: a TCP connect to every backend of the routing
//! table each `--health-check-interval`, failed when it is refused or takes
//! longer than `--health-check-timeout`. Results go to the routing core
//! ([`Router::report_check`]), whose rise and fall counters decide when a
//! backend goes down or comes back up; changes are logged here.
//!
//! One task per backend on the control runtime, under a supervisor that
//! follows table reloads: a backend that appears gets a checker, one that
//! is removed, soft-deleted or moved to another address loses its own (a
//! moved one gets a new checker). A connect is all a check does: the socket
//! is closed at once, nothing is sent. No lock is held across an await.
//!
//! Only backends this edge can route to are checked (those of the apps its
//! listeners serve), spread evenly over the period, and the period grows
//! with the table so that the checks never exceed
//! `--health-check-max-rate` per second: a table of 100,000 backends costs
//! the same connects per second as one of 2,000 (each backend is checked
//! less often; passive ejection still sees every failed client connect).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use geoedge_routing::{
    AppId, Backend, BackendId, BackendLoad, ConnectFailure, HealthChange, HealthConfig, Router,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::{HumanDuration, Layer};
use crate::throttle::{LineBudget, Throttle};

/// How the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    /// Time between two checks of one backend.
    pub interval: Duration,
    /// A check's connect fails after this long.
    pub timeout: Duration,
    /// Checks per second at most, over all backends.
    pub max_rate: u32,
}

/// The default of `--health-check-max-rate`: at the default 2 s interval,
/// up to 2,000 backends are each checked every interval.
pub const DEFAULT_MAX_RATE: u32 = 1000;

impl CheckOptions {
    /// The time between two checks of one backend when `backends` are
    /// checked: the interval, or longer when checking them all every
    /// interval would exceed the rate.
    pub fn period(&self, backends: usize) -> Duration {
        let at_rate = Duration::from_secs_f64(backends as f64 / f64::from(self.max_rate.max(1)));
        self.interval.max(at_rate)
    }
}

/// The health settings of a layer, with their defaults and bounds.
pub fn settings(l: &Layer) -> anyhow::Result<(HealthConfig, Option<CheckOptions>)> {
    let d = HealthConfig::default();
    let longest = Duration::from_secs(3600);
    let bounded = |key: &str, v: Option<HumanDuration>, default: Duration| {
        let v = v.map_or(default, |v| v.0);
        if v > longest {
            bail!("{key} {}: at most 1h", humantime::format_duration(v));
        }
        Ok(v)
    };
    let config = HealthConfig {
        rise: l.health_check_rise.unwrap_or(d.rise),
        fall: l.health_check_fall.unwrap_or(d.fall),
        eject_after: l.eject_after.unwrap_or(d.eject_after),
        backoff: bounded("eject_backoff", l.eject_backoff, d.backoff)?,
        backoff_max: bounded("eject_backoff_max", l.eject_backoff_max, d.backoff_max)?,
    };
    if config.backoff_max < config.backoff {
        bail!(
            "eject_backoff_max {} is shorter than eject_backoff {}",
            humantime::format_duration(config.backoff_max),
            humantime::format_duration(config.backoff)
        );
    }
    let interval = l
        .health_check_interval
        .map_or(Some(Duration::from_secs(2)), |i| i.0);
    let checks = match interval {
        None => None,
        Some(interval) => {
            let interval = bounded("health_check_interval", None, interval)?;
            let timeout = bounded(
                "health_check_timeout",
                l.health_check_timeout,
                Duration::from_secs(1),
            )?;
            if timeout.is_zero() {
                bail!("health_check_timeout must be above 0");
            }
            Some(CheckOptions {
                interval,
                timeout,
                max_rate: l.health_check_max_rate.unwrap_or(DEFAULT_MAX_RATE),
            })
        }
    };
    Ok((config, checks))
}

/// How often the supervisor looks for a new table generation.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

/// Starts checking the backends of `apps` in `router`'s table, following
/// reloads. Aborting the returned task stops every check.
pub fn spawn(router: Arc<Router>, options: CheckOptions, apps: Vec<AppId>) -> JoinHandle<()> {
    tokio::spawn(supervise(router, options, apps))
}

/// One backend's checker.
struct Checker {
    /// The address it checks.
    addr: std::net::SocketAddr,
    /// The counters it reports into (a backend removed and added back gets
    /// new ones, and a new checker).
    load: Arc<BackendLoad>,
    /// Its task.
    task: JoinHandle<()>,
    /// The time between two of its checks.
    period: Duration,
}

/// The checkers by backend id; dropping it stops them all (also when the
/// supervisor is aborted).
#[derive(Default)]
struct Checkers(HashMap<BackendId, Checker>);

impl Drop for Checkers {
    fn drop(&mut self) {
        for c in self.0.values() {
            c.task.abort();
        }
    }
}

async fn supervise(router: Arc<Router>, options: CheckOptions, apps: Vec<AppId>) {
    let mut checkers = Checkers::default();
    let mut seen = None;
    let mut tick = tokio::time::interval(FOLLOW_EVERY.min(options.interval));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let generation = router.table().generation();
        if seen == Some(generation) {
            continue;
        }
        seen = Some(generation);
        let snap = router.table().snapshot();
        let checked = |b: &Backend| !b.deleted && apps.contains(&b.app);
        let count = snap.backends.iter().filter(|b| checked(b)).count();
        let period = options.period(count);
        checkers.0.retain(|id, c| {
            let keep = c.period == period
                && snap.backend(id.as_str()).is_some_and(|b| {
                    checked(b) && b.addr == c.addr && Arc::ptr_eq(&b.load, &c.load)
                });
            if !keep {
                c.task.abort();
            }
            keep
        });
        // New checkers start spread over one period, so a large table is
        // not checked all at once.
        let step = period / count.max(1) as u32;
        for (i, b) in snap.backends.iter().filter(|b| checked(b)).enumerate() {
            if checkers.0.contains_key(&b.id) {
                continue;
            }
            let delay = step * i as u32;
            let task = tokio::spawn(check_loop(
                Arc::clone(&router),
                Arc::clone(b),
                options,
                period,
                delay,
            ));
            checkers.0.insert(
                b.id.clone(),
                Checker {
                    addr: b.addr,
                    load: Arc::clone(&b.load),
                    task,
                    period,
                },
            );
        }
    }
}

/// Checks one backend every `period`, the first time after `delay`.
async fn check_loop(
    router: Arc<Router>,
    backend: Arc<Backend>,
    options: CheckOptions,
    period: Duration,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let local_failed = Throttle::new(crate::proxy::FAILURE_LOG_INTERVAL);
    loop {
        tick.tick().await;
        let result = match tokio::time::timeout(options.timeout, TcpStream::connect(backend.addr))
            .await
        {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => {
                let why = crate::proxy::classify(&e);
                if why == ConnectFailure::Local {
                    if let Some(suppressed) = local_failed.check(Instant::now()) {
                        tracing::warn!(
                            backend = %backend.id,
                            suppressed,
                            "no socket for a health check (not counted against the backend): {e}"
                        );
                    }
                }
                Err(why)
            }
            Err(_) => Err(ConnectFailure::Timeout),
        };
        let now = Instant::now();
        let change = router.report_check(&backend, result, now);
        let config = router.health_config();
        let Some(not_logged) = change
            .filter(|c| matches!(c, HealthChange::Down | HealthChange::Up))
            .and_then(|_| CHANGE_LINES.check(now))
        else {
            continue;
        };
        match change {
            Some(HealthChange::Down) => tracing::warn!(
                backend = %backend.id,
                reason = result.err().map_or("ok", |w| w.as_str()),
                "backend down: {} health checks failed in a row{}",
                config.fall,
                more(not_logged)
            ),
            Some(HealthChange::Up) => tracing::info!(
                backend = %backend.id,
                "backend up: {} health checks passed in a row{}",
                config.rise,
                more(not_logged)
            ),
            _ => {}
        }
    }
}

/// Backend health changes logged per [`CHANGE_LINES_INTERVAL`] at most;
/// past it they are counted, and the next line logged says how many were
/// not: a whole large table going down at once writes a few
/// lines, and `edge_region_backends` has the counts.
const CHANGE_LINES_MAX: u32 = 20;
/// See [`CHANGE_LINES_MAX`].
const CHANGE_LINES_INTERVAL: Duration = Duration::from_secs(10);
/// The log budget of health changes (checks and connects alike).
static CHANGE_LINES: LineBudget = LineBudget::new(CHANGE_LINES_MAX, CHANGE_LINES_INTERVAL);

/// The end of a health change's line that says how many were not logged
/// since the last one (nothing when none were).
fn more(not_logged: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layer, Settings};

    #[test]
    fn the_check_period_grows_with_the_table_past_the_rate() {
        let o = CheckOptions {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            max_rate: 1000,
        };
        assert_eq!(o.period(0), Duration::from_secs(2));
        assert_eq!(o.period(2000), Duration::from_secs(2));
        assert_eq!(o.period(10_000), Duration::from_secs(10));
        assert_eq!(o.period(100_000), Duration::from_secs(100));
    }

    #[test]
    fn health_settings_have_defaults_bounds_and_an_off_switch() {
        let resolve = |toml: &str| Settings::resolve(toml::from_str::<Layer>(toml).unwrap(), None);
        let s = resolve("").unwrap();
        assert_eq!(s.health, HealthConfig::default());
        assert_eq!(
            s.health_checks,
            Some(CheckOptions {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                max_rate: DEFAULT_MAX_RATE,
            })
        );
        let s = resolve(
            "health_check_interval = '500ms'\nhealth_check_timeout = '200ms'\nhealth_check_max_rate = 50\nhealth_check_rise = 1\nhealth_check_fall = 5\neject_after = 0\neject_backoff = '250ms'\neject_backoff_max = 4",
        )
        .unwrap();
        assert_eq!(
            s.health_checks,
            Some(CheckOptions {
                interval: Duration::from_millis(500),
                timeout: Duration::from_millis(200),
                max_rate: 50,
            })
        );
        assert_eq!(
            (s.health.rise, s.health.fall, s.health.eject_after),
            (1, 5, 0)
        );
        assert_eq!(s.health.backoff, Duration::from_millis(250));
        assert_eq!(s.health.backoff_max, Duration::from_secs(4));
        for off in ["'off'", "0", "'0'", "'0s'"] {
            let s = resolve(&format!("health_check_interval = {off}")).unwrap();
            assert_eq!(s.health_checks, None, "{off}");
        }
        for (bad, key) in [
            (
                "eject_backoff = '10s'\neject_backoff_max = '5s'",
                "eject_backoff_max",
            ),
            ("health_check_timeout = '0s'", "health_check_timeout"),
            ("eject_backoff_max = '2h'", "eject_backoff_max"),
            ("health_check_interval = '1d'", "health_check_interval"),
        ] {
            let e = resolve(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        assert!(toml::from_str::<Layer>("health_check_interval = 'sometimes'").is_err());
    }
}
