//! `geoedge run`: the edge proxy. Opens the metrics and health listener
//! first (so `/readyz` can say "starting"), loads routing.db and the GeoIP
//! database (refusing to start on either being invalid, and waiting out a
//! writer's lock on routing.db), follows both live, binds the listeners and
//! turns ready, and serves until SIGTERM or SIGINT; then it turns unready,
//! stops accepting and lets open connections finish for up to the drain
//! timeout.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use geoedge_geoip::{spawn_reloader, GeoDb, GeoIp, ReloadOptions, ReloaderHandle};
use geoedge_routing::loader::LoadError;
use geoedge_routing::watcher::{self, ReloadError, Reloader, WatchOptions};
use geoedge_routing::{Applied, Router, RoutingTable};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::dialer::TcpDialer;
use crate::health::Health;
use crate::health_check::CheckOptions;
use crate::metrics::{EdgeSources, Metrics};
use crate::proxy::{FailureLog, Proxy, ProxyOptions};
use crate::wg::Backhaul;
use crate::workers::Listeners;

/// How long `run` waits at start for a writer to release routing.db.
pub const STARTUP_LOCK_WAIT: Duration = Duration::from_secs(30);

/// Everything a running edge holds; dropping it stops the reloaders.
pub struct Edge {
    /// The proxy shared by every listener.
    pub proxy: Arc<Proxy<TcpDialer>>,
    /// Follows routing.db.
    _routing: Reloader,
    /// Follows the mmdb, when one is configured.
    _geoip: Option<ReloaderHandle>,
    /// Active health checks, started by [`serve`] (`None`: off).
    health_checks: Option<CheckOptions>,
}

/// Loads the routing table and GeoIP database named by the settings and
/// starts following them.
pub fn start(settings: &Settings, routing_db: &Path) -> anyhow::Result<Edge> {
    let table = Arc::new(RoutingTable::new());
    let applied = load_waiting(&table, routing_db)
        .with_context(|| format!("loading routing table {}", routing_db.display()))?;
    tracing::info!(path = %routing_db.display(), generation = applied.generation, backends = table.snapshot().len(), "routing table loaded");
    if table
        .snapshot()
        .region_index(settings.region.as_str())
        .is_none()
    {
        anyhow::bail!(
            "this POP's region {:?} is not in the routing table's regions",
            settings.region.as_str()
        );
    }
    let routing = Reloader::spawn(
        routing_db.to_path_buf(),
        Arc::clone(&table),
        WatchOptions::default(),
    )
    .context("starting the routing.db reloader")?;
    let (geoip, geoip_reloader) = match &settings.geoip {
        Some(path) => {
            let db = GeoDb::open(path)
                .with_context(|| format!("loading GeoIP database {}", path.display()))?;
            tracing::info!(path = %path.display(), database_type = %db.info().database_type, "GeoIP database loaded");
            let geoip = Arc::new(GeoIp::with_db(db));
            let handle = spawn_reloader(path.clone(), Arc::clone(&geoip), ReloadOptions::default());
            (geoip, Some(handle))
        }
        None => {
            tracing::info!("no --geoip: using the embedded sample database");
            (Arc::new(GeoIp::with_db(GeoDb::sample())), None)
        }
    };
    let router = Arc::new(
        Router::new(table, settings.region.clone(), settings.bindings).with_health(settings.health),
    );
    let proxy = Arc::new(Proxy {
        router,
        geoip,
        options: ProxyOptions {
            proxy_protocol_from: settings.proxy_protocol_from.clone(),
            send_proxy_protocol: settings.send_proxy_protocol,
            connect_timeout: settings.connect_timeout,
            connect_attempts: settings.connect_attempts,
            idle_timeout: settings.idle_timeout,
            proxy_header_timeout: settings.proxy_header_timeout,
        },
        dialer: TcpDialer,
        tasks: TaskTracker::new(),
        conns: Default::default(),
        failures: FailureLog::default(),
    });
    Ok(Edge {
        proxy,
        _routing: routing,
        _geoip: geoip_reloader,
        health_checks: settings.health_checks,
    })
}

/// The first load of routing.db; a writer's lock is waited out (for up to
/// [`STARTUP_LOCK_WAIT`]) rather than failing the start.
fn load_waiting(table: &RoutingTable, path: &Path) -> Result<Applied, ReloadError> {
    let deadline = std::time::Instant::now() + STARTUP_LOCK_WAIT;
    let mut warned = false;
    loop {
        match watcher::load_into(table, path) {
            Err(ReloadError::Load(LoadError::Locked(_)))
                if std::time::Instant::now() < deadline =>
            {
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(path = %path.display(), "routing.db is locked by a writer; waiting up to {STARTUP_LOCK_WAIT:?}");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

/// What the metrics read from a started edge.
pub fn metric_sources(edge: &Edge) -> EdgeSources {
    EdgeSources {
        router: Arc::clone(&edge.proxy.router),
        geoip: Arc::clone(&edge.proxy.geoip),
        conns: Arc::clone(&edge.proxy.conns),
        tasks: edge.proxy.tasks.clone(),
    }
}

/// Binds every client listener, once per worker (see
/// [`crate::workers::bind`]).
pub fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    crate::workers::bind(settings)
}

/// Serves on bound listeners until a stop signal, then turns unready, stops
/// accepting and lets open connections finish for up to `drain`.
pub async fn serve(
    edge: &Edge,
    listeners: Listeners,
    drain: Duration,
    health: &Health,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers = crate::workers::spawn(&edge.proxy, listeners, &stop_rx)?;
    // Forget idle bindings in the background, a bounded batch at a time.
    let router = Arc::clone(&edge.proxy.router);
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            router.bindings().sweep(std::time::Instant::now(), 50_000);
        }
    });
    let checks = edge
        .health_checks
        .map(|o| crate::health_check::spawn(Arc::clone(&edge.proxy.router), o));
    health.set_ready();
    stop_signal().await;
    if let Some(checks) = checks {
        checks.abort();
    }
    health.set_draining();
    tracing::info!("stopping: no new connections; draining for up to {drain:?}");
    let _ = stop_tx.send(true);
    workers.stopped().await;
    sweeper.abort();
    edge.proxy.tasks.close();
    if tokio::time::timeout(drain, edge.proxy.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = edge.proxy.tasks.len(),
            "drain timeout: closing open connections"
        );
    }
    workers.finish().await;
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// The `run` command.
pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    let routing_db = settings
        .routing_db
        .clone()
        .unwrap_or_else(|| PathBuf::from("routing.db"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // The health endpoints answer from the start: "starting" until the
    // tables are loaded and the listeners bound.
    let health = Arc::new(Health::default());
    let metrics = Metrics::new(Arc::clone(&health))?;
    let _endpoints = match settings.metrics_listen {
        Some(addr) => Some(runtime.block_on(metrics.serve(addr))?),
        None => None,
    };
    let edge = start(settings, &routing_db)?;
    metrics.register_edge(metric_sources(&edge))?;
    runtime.block_on(async {
        // The backhaul comes up first: backends in other POPs are dialed through it.
        let backhaul = match &settings.wireguard {
            Some(wg) => {
                Some(Backhaul::start(wg, Some(Arc::clone(edge.proxy.router.table()))).await?)
            }
            None => None,
        };
        let sampler = backhaul
            .as_ref()
            .map(|b| metrics.follow_wireguard(b.device()));
        let listeners = bind(settings)?;
        let served = serve(&edge, listeners, settings.drain_timeout, &health).await;
        if let Some(s) = sampler {
            s.abort();
            let _ = s.await;
        }
        if let Some(b) = backhaul {
            b.shutdown().await;
        }
        served
    })?;
    Ok(ExitCode::SUCCESS)
}
