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
//! listeners serve; every app's when a listener reads the ClientHello,
//! since routing.db's `sni_routes` may name any app and change with any
//! edit), spread evenly over the period, and the period grows
//! with the table so that the checks never exceed
//! `--health-check-max-rate` per second: a table of 100,000 backends costs
//! the same connects per second as one of 2,000 (each backend is checked
//! less often; passive ejection still sees every failed client connect).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_routing::{
    AppId, Backend, BackendId, BackendLoad, ConnectFailure, HealthChange, Router,
};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::control::config::CheckOptions;
use crate::control::table_events;
use crate::data::health_log::{more, CHANGE_LINES};
use crate::data::throttle::Throttle;

/// Starts checking the backends of `apps` (`None`: every app) in
/// `router`'s table, following
/// reloads. Aborting the returned task stops every check.
pub fn spawn(
    router: Arc<Router>,
    options: CheckOptions,
    apps: Option<Vec<AppId>>,
) -> JoinHandle<()> {
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

async fn supervise(router: Arc<Router>, options: CheckOptions, apps: Option<Vec<AppId>>) {
    let mut checkers = Checkers::default();
    // Subscribed before the first look, so no change falls in between.
    let mut changes = table_events::subscribe(router.table());
    loop {
        let snap = router.table().snapshot();
        let checked =
            |b: &Backend| !b.deleted && apps.as_ref().is_none_or(|apps| apps.contains(&b.app));
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
        // Until routing.db changes (a burst of changes is one re-sync).
        if changes.changed().await.is_none() {
            return;
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
    let local_failed = Throttle::new(crate::data::proxy::FAILURE_LOG_INTERVAL);
    loop {
        tick.tick().await;
        let result = match tokio::time::timeout(options.timeout, TcpStream::connect(backend.addr))
            .await
        {
            Ok(Ok(_stream)) => Ok(()),
            Ok(Err(e)) => {
                let why = crate::data::proxy::classify(&e);
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
