//! The collector for the fleet follower (`geoedge run --nats`): the
//! installed and current revisions, the age of the last sync, installs,
//! follow errors by reason, and whether routing.db was edited by hand.
//! Read at scrape time from [`FollowState`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::{desc, Family};
use super::names::{self as n, Def};
use geoedge_routing::Router;

use crate::control::fleet::follow::{FollowError, FollowState};
use crate::control::fleet::lease::RequestResult;

const METRICS: &[Def] = &[
    n::FLEET_REVISION,
    n::FLEET_CURRENT_REVISION,
    n::FLEET_SYNC_AGE,
    n::FLEET_INSTALLS_TOTAL,
    n::FLEET_FOLLOW_ERRORS_TOTAL,
    n::FLEET_DIVERGED,
    n::FLEET_LOAD_REPORT_AGE,
    n::FLEET_LOAD_REPORTERS,
    n::FLEET_LEASE_SLOTS,
    n::FLEET_LENT_SLOTS,
    n::FLEET_LEASE_REQUESTS_TOTAL,
    n::FLEET_LEASE_ADMISSIONS_TOTAL,
    n::FLEET_SPILLS_SPREAD_TOTAL,
];

/// The `edge_fleet_*` metrics.
pub struct FleetCollector {
    /// What the follower reports.
    state: Arc<FollowState>,
    /// The router: the backends (what this POP lent of its own), this
    /// edge's leases of other POPs' backends, the spills spread.
    router: Arc<Router>,
    /// The descriptors announced.
    descs: Vec<Desc>,
}

impl FleetCollector {
    /// A collector over the follower's state.
    pub fn new(state: Arc<FollowState>, router: Arc<Router>) -> Self {
        Self {
            state,
            router,
            descs: METRICS.iter().map(desc).collect(),
        }
    }
}

impl Collector for FleetCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.state;
        let gauge = |def: Def, v: f64| {
            let mut f = Family::new(def);
            f.add(&[], v);
            f.finish()
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut errors = Family::new(n::FLEET_FOLLOW_ERRORS_TOTAL);
        for reason in FollowError::ALL {
            errors.add(&[reason.as_str()], s.errors(reason) as f64);
        }
        let mut requests = Family::new(n::FLEET_LEASE_REQUESTS_TOTAL);
        for r in RequestResult::ALL {
            requests.add(
                &[r.as_str()],
                s.lease_requests[r as usize].load(Ordering::Relaxed) as f64,
            );
        }
        let mut admissions = Family::new(n::FLEET_LEASE_ADMISSIONS_TOTAL);
        let held = match self.router.leases() {
            Some(g) => {
                for (result, count) in [
                    ("lease", &g.by_lease),
                    ("fallback", &g.by_fallback),
                    ("refused", &g.refused),
                    ("waiting", &g.waiting),
                ] {
                    admissions.add(&[result], count.load(Ordering::Relaxed) as f64);
                }
                let now = std::time::Instant::now();
                g.with_holder(|h| h.total_slots(now))
            }
            None => 0,
        };
        let lent: u64 = self
            .router
            .table()
            .snapshot()
            .backends
            .iter()
            .map(|b| u64::from(b.load.lent()))
            .sum();
        vec![
            gauge(n::FLEET_LEASE_SLOTS, f64::from(held)),
            gauge(n::FLEET_LENT_SLOTS, lent as f64),
            gauge(
                n::FLEET_SPILLS_SPREAD_TOTAL,
                self.router.spills_spread() as f64,
            ),
            requests.finish(),
            admissions.finish(),
            gauge(
                n::FLEET_REVISION,
                s.installed.load(Ordering::Relaxed) as f64,
            ),
            gauge(
                n::FLEET_CURRENT_REVISION,
                s.current.load(Ordering::Relaxed) as f64,
            ),
            gauge(n::FLEET_SYNC_AGE, s.sync_age(now_ms)),
            gauge(
                n::FLEET_INSTALLS_TOTAL,
                s.installs.load(Ordering::Relaxed) as f64,
            ),
            errors.finish(),
            gauge(
                n::FLEET_DIVERGED,
                f64::from(u8::from(s.diverged.load(Ordering::Relaxed))),
            ),
            gauge(
                n::FLEET_LOAD_REPORT_AGE,
                match s.load_report_age_ms.load(Ordering::Relaxed) {
                    u64::MAX => f64::NAN,
                    ms => ms as f64 / 1000.0,
                },
            ),
            gauge(
                n::FLEET_LOAD_REPORTERS,
                s.load_reporters.load(Ordering::Relaxed) as f64,
            ),
        ]
    }
}
