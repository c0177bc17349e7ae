//! The collector for the per-client limits' table, the server names read
//! on `sni_listen` listeners and the access log: read at scrape time from
//! the counters the proxy keeps (the refusals themselves are results of
//! `edge_connections_total`).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use super::family::{desc, Family};
use super::names::{self as n, Def};
use crate::data::dialer::TcpDialer;
use crate::data::proxy::Proxy;

const METRICS: &[Def] = &[
    n::CLIENT_TABLE_ENTRIES,
    n::CLIENT_TABLE_CAPACITY,
    n::CLIENT_TABLE_EVICTIONS_TOTAL,
    n::SNI_HELLOS_TOTAL,
    n::ACCESS_LOG_LINES_TOTAL,
];

/// `edge_client_table_*`, `edge_sni_hellos_total`,
/// `edge_access_log_lines_total`.
pub struct FeaturesCollector {
    /// The proxy whose counters are read.
    proxy: Arc<Proxy<TcpDialer>>,
    /// The descriptors announced.
    descs: Vec<Desc>,
}

impl FeaturesCollector {
    /// A collector over `proxy`'s counters.
    pub fn new(proxy: Arc<Proxy<TcpDialer>>) -> Self {
        Self {
            proxy,
            descs: METRICS.iter().map(desc).collect(),
        }
    }
}

impl Collector for FeaturesCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let p = &self.proxy;
        let mut entries = Family::new(n::CLIENT_TABLE_ENTRIES);
        entries.add(&[], p.clients.len() as f64);
        let mut capacity = Family::new(n::CLIENT_TABLE_CAPACITY);
        capacity.add(&[], p.clients.capacity() as f64);
        let mut evictions = Family::new(n::CLIENT_TABLE_EVICTIONS_TOTAL);
        evictions.add(&[], p.clients.evictions() as f64);
        let (routed, unmatched, missing) = p.sni.counts();
        let mut sni = Family::new(n::SNI_HELLOS_TOTAL);
        sni.add(&["routed"], routed as f64);
        sni.add(&["unmatched"], unmatched as f64);
        sni.add(&["no_sni"], missing as f64);
        let mut log = Family::new(n::ACCESS_LOG_LINES_TOTAL);
        let (written, dropped, failed) = p
            .access_log
            .as_ref()
            .map_or((0, 0, 0), |l| (l.written(), l.dropped(), l.errors()));
        log.add(&["written"], written as f64);
        log.add(&["dropped"], dropped as f64);
        log.add(&["failed"], failed as f64);
        vec![
            entries.finish(),
            capacity.finish(),
            evictions.finish(),
            sni.finish(),
            log.finish(),
        ]
    }
}
