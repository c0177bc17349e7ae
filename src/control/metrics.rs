//! Observability: the Prometheus registry behind `/metrics`, and the
//! listener that also answers `/healthz` and `/readyz`.
//!
//! Every series is produced at scrape time by a custom collector reading
//! counters the cores already keep as relaxed atomics (see
//! [`collectors`]); the proxy adds only [`ConnStats`] and the per-backend
//! connect outcomes it records through its route. WireGuard counters are
//! sampled once a second ([`wireguard`]). Metric names and label sets are
//! defined in [`names`] and nowhere else.

pub mod collectors;
pub mod family;
pub mod features;
pub mod fleet;
pub mod names;
pub mod runtime;
pub mod server;
pub mod wireguard;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use geoedge_wireguard::Device;
use prometheus::Registry;
use tokio::task::JoinHandle;

pub use crate::data::conn_stats::{ConnResult, ConnStats};
pub use collectors::EdgeSources;

use crate::control::readiness::Health;

/// The registry and what feeds it.
pub struct Metrics {
    registry: Registry,
    health: Arc<Health>,
    wireguard: Arc<wireguard::WgMetrics>,
    admin: Arc<crate::control::admin::Admin>,
}

impl Metrics {
    /// A registry with the process collector (CPU, memory, descriptors),
    /// `edge_ready`, and the (so far empty) WireGuard collector.
    pub fn new(health: Arc<Health>) -> anyhow::Result<Self> {
        let registry = Registry::new();
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .context("registering the process collector")?;
        registry
            .register(Box::new(collectors::ReadyCollector::new(Arc::clone(
                &health,
            ))))
            .context("registering edge_ready")?;
        let wireguard = Arc::new(wireguard::WgMetrics::default());
        registry
            .register(Box::new(wireguard::WgCollector::new(Arc::clone(
                &wireguard,
            ))))
            .context("registering the WireGuard collector")?;
        Ok(Self {
            registry,
            health,
            wireguard,
            admin: Arc::default(),
        })
    }

    /// Adds the edge's collector (once routing and GeoIP are loaded).
    pub fn register_edge(&self, sources: EdgeSources) -> anyhow::Result<()> {
        self.registry
            .register(Box::new(collectors::EdgeCollector::new(sources)))
            .context("registering the edge collector")
    }

    /// Adds the connection limit, accept errors and config reloads.
    pub fn register_lifecycle(
        &self,
        limit: Arc<crate::data::admission::ConnLimit>,
        reloads: Arc<crate::control::lifecycle::ConfigReloads>,
    ) -> anyhow::Result<()> {
        self.registry
            .register(Box::new(runtime::RuntimeCollector::new(limit, reloads)))
            .context("registering the lifecycle collector")
    }

    /// Adds the per-client limits', SNI and access-log counters.
    pub fn register_features(
        &self,
        proxy: Arc<crate::data::proxy::Proxy<crate::data::dialer::TcpDialer>>,
    ) -> anyhow::Result<()> {
        self.registry
            .register(Box::new(features::FeaturesCollector::new(proxy)))
            .context("registering the features collector")
    }

    /// Registers the fleet follower's metrics (`edge_fleet_*`).
    pub fn register_fleet(
        &self,
        state: Arc<crate::control::fleet::follow::FollowState>,
        router: Arc<geoedge_routing::Router>,
    ) -> anyhow::Result<()> {
        self.registry
            .register(Box::new(fleet::FleetCollector::new(state, router)))
            .context("registering the fleet collector")
    }

    /// The admin endpoints served beside the metrics: give them the edge
    /// once it is loaded.
    pub fn admin(&self) -> &Arc<crate::control::admin::Admin> {
        &self.admin
    }

    /// Starts sampling the WireGuard device; abort the task before shutting
    /// the device down.
    pub fn follow_wireguard(&self, device: &Arc<Device>) -> JoinHandle<()> {
        self.wireguard.follow(device)
    }

    /// The text `/metrics` would answer now.
    #[cfg(test)]
    pub fn encode(&self) -> anyhow::Result<Vec<u8>> {
        server::encode(&self.registry)
    }

    /// Binds `addr` (printing `metrics ADDR`) and serves the endpoints.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<JoinHandle<()>> {
        let listener = server::bind(addr).await?;
        let endpoints = server::Endpoints::new(
            self.registry.clone(),
            Arc::clone(&self.health),
            Arc::clone(&self.admin),
        );
        self.registry
            .register(Box::new(server::ListenerCollector::new(Arc::clone(
                &endpoints.conns,
            ))))
            .context("registering the metrics listener collector")?;
        Ok(server::spawn(listener, Arc::new(endpoints)))
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use geoedge_geoip::{GeoDb, GeoIp};
    use geoedge_routing::{
        AppId, BindingConfig, ConnectFailure, RegionId, Request, Router, RoutingTable,
    };
    use tokio_util::task::TaskTracker;

    use super::*;

    #[test]
    fn every_result_and_direction_has_a_counter_of_its_own() {
        let s = ConnStats::default();
        for (i, r) in ConnResult::ALL.iter().enumerate().skip(1) {
            for _ in 0..i {
                s.record(*r);
            }
        }
        s.up().add(100);
        s.down().add(1000);
        for (i, r) in ConnResult::ALL.iter().enumerate() {
            assert_eq!(s.count(*r), i as u64, "{}", r.as_str());
        }
        assert_eq!((s.bytes_up(), s.bytes_down()), (100, 1000));
    }

    /// A started edge's sources over the sample routing.db and mmdb.
    fn sources() -> (EdgeSources, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("routing.db");
        geoedge_routing::loader::init(&db, true).unwrap();
        let table = Arc::new(RoutingTable::new());
        geoedge_routing::watcher::load_into(&table, &db).unwrap();
        let router = Arc::new(Router::new(
            table,
            RegionId::new("eu"),
            BindingConfig {
                max_entries: 500,
                ..BindingConfig::default()
            },
        ));
        let src = EdgeSources {
            router,
            geoip: Arc::new(GeoIp::with_db(GeoDb::sample())),
            conns: Arc::default(),
            tasks: TaskTracker::new(),
            backend_series: crate::control::config::defaults::METRICS_BACKEND_SERIES,
        };
        (src, dir)
    }

    /// Above `backend_series` backends, the per-backend series are left
    /// out and the per-region ones still say what the backends hold.
    #[test]
    fn large_tables_are_summed_by_region() {
        let scrape = |backend_series: usize| {
            let (mut src, dir) = sources();
            src.backend_series = backend_series;
            let snap = src.router.table().snapshot();
            let (n, first) = (snap.backends.len(), snap.backends[0].clone());
            first.load.connect_stats().fail(ConnectFailure::Timeout);
            first.load.connect_stats().fail(ConnectFailure::Timeout);
            let metrics = Metrics::new(Arc::new(Health::default())).unwrap();
            metrics.register_edge(src).unwrap();
            let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
            drop(dir);
            (text, n, first)
        };
        let (all, n, first) = scrape(usize::MAX);
        assert!(n > 2, "the sample table has {n} backends");
        let (summed, _, _) = scrape(n - 1);
        let lines = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
        assert!(lines(&summed) < lines(&all));
        assert!(all.contains("edge_backend_up{"));
        assert!(!summed.contains("edge_backend_up{"), "{summed}");
        assert!(!summed.contains("edge_connect_failures_total{"));
        assert_eq!(value(&summed, "edge_metrics_backends_omitted"), n as f64);
        assert_eq!(value(&all, "edge_metrics_backends_omitted"), 0.0);
        let region = first.region.as_str();
        for text in [&all, &summed] {
            assert_eq!(
                value(
                    text,
                    &format!(
                        r#"edge_region_connect_failures_total{{region="{region}",reason="timeout"}}"#
                    )
                ),
                2.0
            );
            let backends: f64 = text
                .lines()
                .filter(|l| l.starts_with("edge_region_backends{"))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum();
            assert_eq!(backends, n as f64);
        }
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
    }

    #[test]
    fn scrape_shows_what_the_cores_counted_and_no_client_address() {
        let (src, _dir) = sources();
        let router = Arc::clone(&src.router);
        let geoip = Arc::clone(&src.geoip);
        let conns = Arc::clone(&src.conns);
        let metrics = Metrics::new(Arc::new(Health::default())).unwrap();
        metrics.register_edge(src).unwrap();
        let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
        let before = series(&String::from_utf8(metrics.encode().unwrap()).unwrap());

        // 2,000 distinct clients, half of them bound beyond the table's size.
        let app = AppId::default_app();
        let now = Instant::now();
        let mut routes = Vec::new();
        for i in 0..2000u32 {
            let ip = IpAddr::from([81, 2, (i / 250) as u8, (i % 250) as u8]);
            let lookup = geoip.lookup(ip);
            let req = Request {
                app: &app,
                ip,
                location: lookup.location(),
                exclude: &[],
            };
            let route = router.decide(&req, now).unwrap();
            route
                .backend()
                .load
                .connect_stats()
                .observe(Duration::from_micros(300));
            if i < 3 {
                routes.push(route);
            }
        }
        let held = routes[0].backend().clone();
        held.load.connect_stats().fail(ConnectFailure::Refused);
        conns.record(ConnResult::ConnectFailed);

        let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
        assert_eq!(series(&text), before, "client addresses add no series");
        assert!(!text.contains("81.2."), "no client address in the scrape");
        assert_eq!(
            value(&text, r#"edge_connections_total{result="ok"}"#),
            2000.0
        );
        assert_eq!(
            value(&text, r#"edge_connections_total{result="connect_failed"}"#),
            1.0
        );
        let decisions: f64 = ["sticky", "country", "region", "distance", "none"]
            .iter()
            .map(|t| {
                value(
                    &text,
                    &format!(r#"edge_routing_decisions_total{{tier="{t}"}}"#),
                )
            })
            .sum();
        assert_eq!(decisions, 2000.0);
        assert_eq!(value(&text, "edge_bindings_current"), 500.0);
        assert_eq!(value(&text, "edge_binding_evictions_total"), 1500.0);
        assert_eq!(
            value(&text, r#"edge_geoip_lookups_total{result="found"}"#)
                + value(&text, r#"edge_geoip_lookups_total{result="not_found"}"#),
            2000.0
        );
        let id = held.id.as_str();
        let region = held.region.as_str();
        let mine = routes.iter().filter(|r| r.backend().id == held.id).count();
        assert_eq!(
            value(
                &text,
                &format!(r#"edge_backend_connections_current{{backend="{id}",region="{region}"}}"#)
            ),
            mine as f64
        );
        assert_eq!(
            value(
                &text,
                &format!(r#"edge_connect_failures_total{{backend="{id}",reason="refused"}}"#)
            ),
            1.0
        );
        // Every connect took 0.3 ms: all in the 0.0005 bucket, none below.
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("edge_backend_connect_duration_seconds_count"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(total, 2000.0);
        assert!(text.contains(&format!(
            r#"edge_backend_connect_duration_seconds_bucket{{backend="{id}",le="0.0005"}}"#
        )));
        // The region sums carry the same counts.
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"edge_region_connect_failures_total{{region="{region}",reason="refused"}}"#
                )
            ),
            1.0
        );
        let total: f64 = text
            .lines()
            .filter(|l| l.starts_with("edge_region_connect_duration_seconds_count"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(total, 2000.0);
        assert_eq!(value(&text, "edge_metrics_backends_omitted"), 0.0);
        assert_eq!(value(&text, "edge_routing_generation"), 1.0);
        assert_eq!(value(&text, "edge_ready"), 0.0);
        assert!(text.contains("process_open_fds"), "the process collector");
        drop(routes);
    }
}
