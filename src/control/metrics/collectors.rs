//! The collectors behind `/metrics` for the edge itself: they read the
//! counters the cores already keep (routing table, router, bindings, GeoIP,
//! the proxy's [`ConnStats`]) at scrape time. Reading is a handful of
//! relaxed atomic loads, one lock-free snapshot load and the routing
//! table's reload lock (for the `ok` connections): a scrape takes no lock
//! the data path needs, and the data path does nothing extra for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use geoedge_geoip::GeoIp;
use geoedge_routing::{ConnectFailure, DecisionKind, HealthState, RejectReason, Router};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use tokio_util::task::TaskTracker;

use super::family::{desc, Family};
use super::names::{self as n, Def};
use crate::control::readiness::Health;
use crate::data::conn_stats::{ConnResult, ConnStats};

/// What the edge collector reads.
pub struct EdgeSources {
    /// Decisions, bindings and (through it) the routing table.
    pub router: Arc<Router>,
    /// GeoIP lookups and the database in service.
    pub geoip: Arc<GeoIp>,
    /// Connections by outcome, bytes.
    pub conns: Arc<ConnStats>,
    /// The connection tasks (their number is the open connections).
    pub tasks: TaskTracker,
    /// Per-backend series are exported while routing.db holds at most this
    /// many backends (`--metrics-backend-series`); the per-region series
    /// always are.
    pub backend_series: usize,
}

/// One region's backends, summed.
#[derive(Default)]
struct RegionSum {
    /// Backends by [`HealthState::ALL`] position.
    states: [u64; HealthState::ALL.len()],
    connections: u64,
    failures: [u64; ConnectFailure::ALL.len()],
    ejections: u64,
    /// Cumulative buckets, count and sum of the connect durations.
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

/// Connections, backends, routing, bindings and GeoIP.
pub struct EdgeCollector {
    src: EdgeSources,
    descs: Vec<Desc>,
}

const EDGE_METRICS: &[Def] = &[
    n::CONNECTIONS_TOTAL,
    n::CONNECTIONS_CURRENT,
    n::BYTES_TOTAL,
    n::BACKEND_CONNECTIONS_CURRENT,
    n::BACKEND_GLOBAL_CONNECTIONS,
    n::BACKEND_SOFT_LIMIT,
    n::BACKEND_HARD_LIMIT,
    n::BACKEND_ELIGIBLE,
    n::BACKEND_CONNECT_DURATION,
    n::CONNECT_FAILURES_TOTAL,
    n::BACKEND_UP,
    n::BACKEND_HEALTH_STATE,
    n::BACKEND_EJECTIONS_TOTAL,
    n::REGION_BACKENDS,
    n::REGION_CONNECTIONS_CURRENT,
    n::REGION_CONNECT_FAILURES_TOTAL,
    n::REGION_CONNECT_DURATION,
    n::REGION_EJECTIONS_TOTAL,
    n::BACKENDS_OMITTED,
    n::HEALTH_CHECKS_TOTAL,
    n::ROUTING_DECISIONS_TOTAL,
    n::ROUTING_RELOADS_TOTAL,
    n::ROUTING_GENERATION,
    n::ROUTING_LAST_RELOAD,
    n::BINDINGS_CURRENT,
    n::BINDING_EVICTIONS_TOTAL,
    n::BINDING_EXPIRATIONS_TOTAL,
    n::GEOIP_LOOKUPS_TOTAL,
    n::GEOIP_BUILD_EPOCH,
    n::GEOIP_RELOADS_TOTAL,
];

impl EdgeCollector {
    /// A collector over `src`.
    pub fn new(src: EdgeSources) -> Self {
        Self {
            src,
            descs: EDGE_METRICS.iter().map(desc).collect(),
        }
    }
}

/// A one-series family.
fn single(def: Def, value: f64) -> MetricFamily {
    let mut f = Family::new(def);
    f.add(&[], value);
    f.finish()
}

impl Collector for EdgeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.src;
        let mut out = Vec::with_capacity(EDGE_METRICS.len());

        let mut f = Family::new(n::CONNECTIONS_TOTAL);
        for r in ConnResult::ALL {
            let v = match r {
                // Each such connection is one successful connect.
                ConnResult::Ok => s.router.table().successful_connects(),
                r => s.conns.count(r),
            };
            f.add(&[r.as_str()], v as f64);
        }
        out.push(f.finish());
        out.push(single(n::CONNECTIONS_CURRENT, s.tasks.len() as f64));
        let mut f = Family::new(n::BYTES_TOTAL);
        f.add(&["up"], s.conns.bytes_up() as f64);
        f.add(&["down"], s.conns.bytes_down() as f64);
        out.push(f.finish());

        // Per backend: one lock-free load of the snapshot in service; its
        // backends are the only label values (bounded by routing.db, and
        // left out above `backend_series`: a table of 100k backends would
        // otherwise make a scrape of millions of lines). Per region: the
        // same counters summed, always.
        let table = s.router.table();
        let snap = table.snapshot();
        let each = snap.backends.len() <= s.backend_series;
        let mut current = Family::new(n::BACKEND_CONNECTIONS_CURRENT);
        let mut global = Family::new(n::BACKEND_GLOBAL_CONNECTIONS);
        let mut soft = Family::new(n::BACKEND_SOFT_LIMIT);
        let mut hard = Family::new(n::BACKEND_HARD_LIMIT);
        let mut eligible = Family::new(n::BACKEND_ELIGIBLE);
        let mut duration = Family::new(n::BACKEND_CONNECT_DURATION);
        let mut failures = Family::new(n::CONNECT_FAILURES_TOTAL);
        let mut up = Family::new(n::BACKEND_UP);
        let mut state = Family::new(n::BACKEND_HEALTH_STATE);
        let mut ejections = Family::new(n::BACKEND_EJECTIONS_TOTAL);
        let mut regions: std::collections::BTreeMap<&str, RegionSum> = Default::default();
        for b in &snap.backends {
            let id = b.id.as_str();
            let region = regions.entry(b.region.as_str()).or_default();
            let stats = b.load.connect_stats();
            let h = stats.histogram();
            let health = b.load.health();
            let now = health.state(b.healthy);
            region.connections += u64::from(b.active());
            for (i, why) in ConnectFailure::ALL.into_iter().enumerate() {
                region.failures[i] += stats.failures(why);
            }
            if let Some(i) = HealthState::ALL.iter().position(|&s| s == now) {
                region.states[i] += 1;
            }
            region.ejections += health.ejections();
            if region.buckets.is_empty() {
                region.buckets = h.buckets.to_vec();
            } else {
                for (sum, (_, n)) in region.buckets.iter_mut().zip(h.buckets.iter()) {
                    sum.1 += n;
                }
            }
            region.count += h.count;
            region.sum += h.sum_seconds;
            if !each {
                continue;
            }
            current.add(&[id, b.region.as_str()], f64::from(b.active()));
            global.add(&[id], f64::from(b.load.global(b.active())));
            soft.add(&[id], f64::from(b.soft_limit));
            hard.add(&[id], f64::from(b.hard_limit));
            // Takes new clients: the operator's columns allow it and its
            // health is up (not down by active checks, not ejected).
            eligible.add(
                &[id],
                f64::from(u8::from(b.statically_eligible() && now == HealthState::Up)),
            );
            duration.add_histogram(&[id], &h.buckets, h.count, h.sum_seconds);
            for why in ConnectFailure::ALL {
                failures.add(&[id, why.as_str()], stats.failures(why) as f64);
            }
            up.add(&[id], f64::from(u8::from(now == HealthState::Up)));
            for s in HealthState::ALL {
                state.add(&[id, s.as_str()], f64::from(u8::from(now == s)));
            }
            ejections.add(&[id], health.ejections() as f64);
        }
        if each {
            out.extend(
                [
                    current, global, soft, hard, eligible, duration, failures, up, state, ejections,
                ]
                .map(Family::finish),
            );
        }
        let mut backends = Family::new(n::REGION_BACKENDS);
        let mut connections = Family::new(n::REGION_CONNECTIONS_CURRENT);
        let mut failures = Family::new(n::REGION_CONNECT_FAILURES_TOTAL);
        let mut duration = Family::new(n::REGION_CONNECT_DURATION);
        let mut ejections = Family::new(n::REGION_EJECTIONS_TOTAL);
        for (region, sum) in &regions {
            for (i, s) in HealthState::ALL.into_iter().enumerate() {
                backends.add(&[region, s.as_str()], sum.states[i] as f64);
            }
            connections.add(&[region], sum.connections as f64);
            for (i, why) in ConnectFailure::ALL.into_iter().enumerate() {
                failures.add(&[region, why.as_str()], sum.failures[i] as f64);
            }
            duration.add_histogram(&[region], &sum.buckets, sum.count, sum.sum);
            ejections.add(&[region], sum.ejections as f64);
        }
        out.extend([backends, connections, failures, duration, ejections].map(Family::finish));
        let omitted = if each { 0 } else { snap.backends.len() };
        out.push(single(n::BACKENDS_OMITTED, omitted as f64));
        let checks = s.router.check_stats();
        let mut f = Family::new(n::HEALTH_CHECKS_TOTAL);
        f.add(&["ok"], checks.ok() as f64);
        for why in ConnectFailure::ALL {
            f.add(&[why.as_str()], checks.failed(why) as f64);
        }
        out.push(f.finish());

        let router = &s.router;
        let mut f = Family::new(n::ROUTING_DECISIONS_TOTAL);
        for k in DecisionKind::ALL {
            f.add(&[k.as_str()], router.stats().count(k) as f64);
        }
        out.push(f.finish());
        let reloads = table.stats();
        let mut f = Family::new(n::ROUTING_RELOADS_TOTAL);
        f.add(&["applied"], reloads.applied.load(Ordering::Relaxed) as f64);
        for r in RejectReason::ALL {
            f.add(&[r.as_str()], reloads.rejected(r) as f64);
        }
        out.push(f.finish());
        out.push(single(n::ROUTING_GENERATION, table.generation() as f64));
        out.push(single(
            n::ROUTING_LAST_RELOAD,
            reloads.last_applied_unix.load(Ordering::Relaxed) as f64,
        ));
        let bindings = router.bindings();
        out.push(single(n::BINDINGS_CURRENT, bindings.len() as f64));
        out.push(single(
            n::BINDING_EVICTIONS_TOTAL,
            bindings.stats().evictions.load(Ordering::Relaxed) as f64,
        ));
        out.push(single(
            n::BINDING_EXPIRATIONS_TOTAL,
            bindings.stats().expirations.load(Ordering::Relaxed) as f64,
        ));

        let geo = s.geoip.stats();
        let mut f = Family::new(n::GEOIP_LOOKUPS_TOTAL);
        for (label, v) in [
            ("found", geo.found),
            ("not_found", geo.not_found),
            ("private", geo.private),
            ("error", geo.error),
            ("no_database", geo.no_database),
        ] {
            f.add(&[label], v as f64);
        }
        out.push(f.finish());
        out.push(single(n::GEOIP_BUILD_EPOCH, geo.build_epoch as f64));
        let mut f = Family::new(n::GEOIP_RELOADS_TOTAL);
        f.add(&["ok"], geo.reloads_ok as f64);
        f.add(&["failed"], geo.reloads_failed as f64);
        out.push(f.finish());
        out
    }
}

/// `edge_ready`, from the same state `/readyz` answers from.
pub struct ReadyCollector {
    health: Arc<Health>,
    descs: Vec<Desc>,
}

impl ReadyCollector {
    /// A collector over `health`.
    pub fn new(health: Arc<Health>) -> Self {
        Self {
            health,
            descs: vec![desc(&n::READY)],
        }
    }
}

impl Collector for ReadyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![single(
            n::READY,
            f64::from(u8::from(self.health.is_ready())),
        )]
    }
}
