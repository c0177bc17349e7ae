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
use crate::control::fleet::follow::{FollowError, FollowState};

const METRICS: &[Def] = &[
    n::FLEET_REVISION,
    n::FLEET_CURRENT_REVISION,
    n::FLEET_SYNC_AGE,
    n::FLEET_INSTALLS_TOTAL,
    n::FLEET_FOLLOW_ERRORS_TOTAL,
    n::FLEET_DIVERGED,
    n::FLEET_LOAD_REPORT_AGE,
    n::FLEET_LOAD_REPORTERS,
];

/// The `edge_fleet_*` metrics.
pub struct FleetCollector {
    /// What the follower reports.
    state: Arc<FollowState>,
    /// The descriptors announced.
    descs: Vec<Desc>,
}

impl FleetCollector {
    /// A collector over the follower's state.
    pub fn new(state: Arc<FollowState>) -> Self {
        Self {
            state,
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
        vec![
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
