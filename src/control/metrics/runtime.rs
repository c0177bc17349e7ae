//! The collector for the accept loops and the process's life: the global
//! connection limit in force, accept errors by kind, config reloads by
//! result. Read at scrape time from the atomics the accept loops and the
//! SIGHUP handler keep.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::{desc, Family};
use super::names::{self as n, Def};
use crate::control::lifecycle::ConfigReloads;
use crate::data::admission::{AcceptError, ConnLimit};

const METRICS: &[Def] = &[
    n::CONNECTIONS_LIMIT,
    n::ACCEPT_ERRORS_TOTAL,
    n::CONFIG_RELOADS_TOTAL,
];

/// `edge_connections_limit`, `edge_accept_errors_total`,
/// `edge_config_reloads_total`.
pub struct RuntimeCollector {
    /// The connection limit and accept error counts.
    limit: Arc<ConnLimit>,
    /// Config reloads by result.
    reloads: Arc<ConfigReloads>,
    /// The descriptors announced.
    descs: Vec<Desc>,
}

impl RuntimeCollector {
    /// A collector over the limit and the reload counts.
    pub fn new(limit: Arc<ConnLimit>, reloads: Arc<ConfigReloads>) -> Self {
        Self {
            limit,
            reloads,
            descs: METRICS.iter().map(desc).collect(),
        }
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut limit = Family::new(n::CONNECTIONS_LIMIT);
        limit.add(&[], self.limit.max() as f64);
        let mut errors = Family::new(n::ACCEPT_ERRORS_TOTAL);
        for e in AcceptError::ALL {
            errors.add(&[e.as_str()], self.limit.accept_errors(e) as f64);
        }
        let mut reloads = Family::new(n::CONFIG_RELOADS_TOTAL);
        reloads.add(
            &["applied"],
            self.reloads.applied.load(Ordering::Relaxed) as f64,
        );
        reloads.add(
            &["failed"],
            self.reloads.failed.load(Ordering::Relaxed) as f64,
        );
        vec![limit.finish(), errors.finish(), reloads.finish()]
    }
}
