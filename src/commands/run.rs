//! `geoedge run`: the edge proxy. Opens the metrics and health listener
//! first (so `/readyz` can say "starting"), loads routing.db and the GeoIP
//! database (refusing to start on either being invalid, and waiting out a
//! writer's lock on routing.db; an invalid file is reported before a
//! metrics address that could not be bound, so that a second edge on a
//! busy port still says what is wrong with its files), follows both live,
//! binds the listeners and
//! turns ready, and serves until SIGTERM or SIGINT; then it turns unready,
//! stops accepting and lets open connections finish for up to the drain
//! timeout. SIGHUP re-reads the config ([`crate::control::lifecycle`]); systemd is
//! told when it is ready, reloading and stopping, and its watchdog is fed
//! while every worker runs ([`crate::control::sd_notify`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use geoedge_geoip::{spawn_reloader, GeoDb, GeoIp, ReloadOptions, ReloaderHandle};
use geoedge_routing::global::LeaseGate;
use geoedge_routing::loader::LoadError;
use geoedge_routing::table::OwnListener;
use geoedge_routing::watcher::{self, ReloadError, Reloader, WatchOptions};
use geoedge_routing::{Applied, PopId, Router, RoutingTable};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::commands::wg::Backhaul;
use crate::control::config::CheckOptions;
use crate::control::config::Settings;
use crate::control::lifecycle::{self, Asked, ConfigReloads, Live, Resolve, Signals};
use crate::control::metrics::{EdgeSources, Metrics};
use crate::control::readiness::Health;
use crate::control::sd_notify::{self, Heartbeats, Notifier};
use crate::control::workers::Listeners;
use crate::data::admission::{self, ConnLimit};
use crate::data::dialer::TcpDialer;
use crate::data::proxy::{FailureLog, Proxy, Relay};

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
    /// The connection limit when the settings name none (derived from the
    /// descriptor limit at start).
    pub default_max_connections: usize,
    /// Config reloads by result.
    pub reloads: Arc<ConfigReloads>,
    /// Per-backend metric series up to this many backends.
    pub backend_series: usize,
    /// The apps the client listeners serve (the backends worth checking);
    /// `None`: every app (a listener reads the ClientHello, whose server
    /// name may route to any app).
    pub apps: Option<Vec<geoedge_routing::AppId>>,
}

/// Loads the routing table and GeoIP database named by the settings and
/// starts following them.
pub fn start(settings: &Settings, routing_db: &Path) -> anyhow::Result<Edge> {
    let default_max_connections = descriptor_limit(settings);
    let max_connections = lifecycle::max_connections(settings, default_max_connections);
    tracing::info!(
        max_connections,
        "client connections open at once at most (--max-connections)"
    );
    let table = Arc::new(RoutingTable::new());
    table.refuse_backends_at(own_listener(
        settings.listen.iter().map(|l| l.addr).collect(),
    ));
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
    let mut router =
        Router::new(table, settings.region.clone(), settings.bindings).with_health(settings.health);
    // In a fleet, other POPs' backends take clients only within this
    // edge's leases of them (control::fleet::lease).
    if let Some(fleet) = &settings.fleet {
        let mut gate = LeaseGate::new(
            PopId::new(&fleet.pop),
            settings.region.clone(),
            fleet.lease_fallback,
        );
        // An edge that followed the fleet before this start may have lent
        // its backends' slots in its previous run: they stay quiet until
        // those leases have run out (one term).
        if crate::control::fleet::file::record_path(routing_db).exists() {
            tracing::info!(
                "restarted in a fleet: for {:?}, until the leases of the previous run have run out, this region's backends take only the lease fallback's share of clients",
                crate::control::config::defaults::LEASE_TERM
            );
            gate = gate.with_quiet_until(
                std::time::Instant::now() + crate::control::config::defaults::LEASE_TERM,
            );
        }
        router = router
            .with_leases(Arc::new(gate))
            .with_spill_spread(spill_seed());
    }
    let router = Arc::new(router);
    let access_log = match &settings.access_log {
        None => None,
        Some(a) => Some(
            geoedge_access_log::AccessLog::start(
                a.sink.clone(),
                a.format,
                crate::control::config::defaults::ACCESS_LOG_QUEUE,
            )
            .with_context(|| format!("starting the access log ({:?})", a.sink))?,
        ),
    };
    let proxy = Arc::new(Proxy {
        router,
        geoip,
        options: ArcSwap::from_pointee(lifecycle::proxy_options(settings)),
        dialer: TcpDialer,
        data_path: Relay,
        own: Default::default(),
        tasks: TaskTracker::new(),
        conns: Default::default(),
        failures: FailureLog::default(),
        limit: Arc::new(ConnLimit::new(max_connections)),
        lease_wait: Arc::new(crate::data::lease_wait::LeaseWait::new(
            crate::control::config::defaults::LEASE_WAIT,
        )),
        clients: crate::data::per_client::PerClient::new(settings.client_table_size),
        sni: Default::default(),
        access_log,
    });
    Ok(Edge {
        proxy,
        _routing: routing,
        _geoip: geoip_reloader,
        health_checks: settings.health_checks,
        default_max_connections,
        reloads: Arc::default(),
        backend_series: settings.metrics_backend_series,
        apps: if settings.listen.iter().any(|l| l.sni) {
            None
        } else {
            let mut apps: Vec<_> = settings.listen.iter().map(|l| l.app.clone()).collect();
            apps.sort();
            apps.dedup();
            Some(apps)
        },
    })
}

/// Whether a backend address would send a client back into one of this
/// edge's `listen` addresses (a connection loop): the same port, and the
/// same address, or a wildcard listener and an address of this host
/// (loopback, or one a socket can be bound to). Asked by the routing table
/// for every backend on each reload; only a backend on a listener's port
/// costs a bind.
fn own_listener(listen: Vec<SocketAddr>) -> OwnListener {
    let listen: Vec<SocketAddr> = listen.into_iter().filter(|l| l.port() != 0).collect();
    OwnListener(Box::new(move |backend: SocketAddr| {
        let ip = backend.ip().to_canonical();
        listen.iter().any(|l| {
            l.port() == backend.port()
                && (l.ip().to_canonical() == ip
                    || (l.ip().is_unspecified()
                        && (ip.is_loopback()
                            || ip.is_unspecified()
                            || std::net::UdpSocket::bind((ip, 0)).is_ok())))
        })
    }))
}

/// Raises the soft descriptor limit to the hard one, logs both, and
/// returns the connection limit they allow.
fn descriptor_limit(settings: &Settings) -> usize {
    match admission::raise_nofile() {
        Ok(l) => {
            tracing::info!(
                soft = l.soft,
                hard = l.hard,
                raised_from = l.was,
                "descriptor limit (RLIMIT_NOFILE)"
            );
            admission::default_max_connections(l.soft, settings.workers)
        }
        Err(e) => {
            tracing::warn!("reading the descriptor limit: {e}; assuming 1024");
            admission::default_max_connections(1024, settings.workers)
        }
    }
}

/// Whether a listener's queued connections move to another listener of
/// its `SO_REUSEPORT` group when it closes (a handover that refuses
/// nothing); logs how to turn it on when it is off.
fn check_migrate_req() {
    let path = "/proc/sys/net/ipv4/tcp_migrate_req";
    match std::fs::read_to_string(path).map(|s| s.trim() == "1") {
        Ok(true) => {}
        Ok(false) => tracing::info!(
            "net.ipv4.tcp_migrate_req is 0: when this process hands over to a new one, a connection that completes its handshake just as it closes its listeners is reset (sysctl -w net.ipv4.tcp_migrate_req=1 to hand it over instead)"
        ),
        Err(_) => tracing::info!(
            "{path} is missing (Linux before 5.14): a handover to a new process can reset a connection that completes its handshake just as the old one closes its listeners"
        ),
    }
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
        backend_series: edge.backend_series,
    }
}

/// Binds every client listener, once per worker (see
/// [`crate::control::workers::bind`]).
pub fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    crate::control::workers::bind(settings)
}

/// Serves on bound listeners until a stop signal, re-reading the config
/// with `resolve` on SIGHUP; then turns unready, stops accepting and lets
/// open connections finish for up to the drain timeout in force.
pub async fn serve(
    edge: &Edge,
    listeners: Listeners,
    settings: &Settings,
    mut signals: Signals,
    resolve: Option<Resolve>,
    health: &Health,
) -> anyhow::Result<()> {
    let notifier = Arc::new(Notifier::from_env());
    let beats = Arc::new(Heartbeats::new(listeners.workers(), notifier.tick()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut workers =
        crate::control::workers::spawn(&edge.proxy, listeners, settings.engine, &stop_rx, &beats)?;
    // A geoedge taking over from this one reads its bindings here.
    let handover = crate::control::handover::serve(Arc::clone(&edge.proxy.router));
    // Forget idle bindings in the background, a bounded batch at a time.
    let router = Arc::clone(&edge.proxy.router);
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            router.bindings().sweep(std::time::Instant::now(), 50_000);
        }
    });
    let checks = edge.health_checks.map(|o| {
        crate::control::active_checks::spawn(Arc::clone(&edge.proxy.router), o, edge.apps.clone())
    });
    let watchdog = tokio::spawn(sd_notify::feed_watchdog(
        Arc::clone(&notifier),
        Arc::clone(&beats),
    ));
    check_migrate_req();
    health.set_ready();
    notifier.ready();
    let mut current = settings.clone();
    let live = Live {
        options: &edge.proxy.options,
        limit: &edge.proxy.limit,
        default_max: edge.default_max_connections,
        stats: &edge.reloads,
    };
    // The config is read on a thread of its own: a stop signal is handled
    // while a read is pending. SIGHUPs during a read ask for one more read
    // once it ends.
    let mut pending: Option<lifecycle::PendingRead> = None;
    let mut again = false;
    loop {
        tokio::select! {
            asked = signals.next() => match (asked, &resolve) {
                (Asked::Stop, _) => break,
                (Asked::Reopen, _) => reopen_access_log(edge, "SIGUSR1"),
                (Asked::Reload, None) => {
                    reopen_access_log(edge, "SIGHUP");
                    notifier.reloading();
                    tracing::info!("SIGHUP: no config to re-read here");
                    notifier.reloaded("serving");
                }
                (Asked::Reload, Some(_)) if pending.is_some() => {
                    tracing::debug!("SIGHUP while the config is being read: reading it again after");
                    again = true;
                }
                (Asked::Reload, Some(r)) => {
                    reopen_access_log(edge, "SIGHUP");
                    notifier.reloading();
                    pending = Some(lifecycle::read_in_background(r));
                }
            },
            read = async { pending.as_mut().expect("polled only when pending").await }, if pending.is_some() => {
                pending = None;
                let status = lifecycle::reload(&live, &mut current, lifecycle::read_result(read));
                notifier.reloaded(&status);
                if let (true, Some(r)) = (std::mem::take(&mut again), &resolve) {
                    notifier.reloading();
                    pending = Some(lifecycle::read_in_background(r));
                }
            }
        }
    }
    if let Some(checks) = checks {
        checks.abort();
    }
    let drain = current.live.drain_timeout;
    health.set_draining();
    notifier.stopping();
    let _ = stop_tx.send(true);
    tracing::info!(
        open = edge.proxy.limit.open(),
        "stopping: no new connections; draining for up to {drain:?}"
    );
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
    if let Some(log) = edge.proxy.access_log.clone() {
        // The lines of the connections just ended (drained or cut).
        let flush = crate::control::config::defaults::ACCESS_LOG_FLUSH;
        let _ = tokio::task::spawn_blocking(move || log.close(flush)).await;
    }
    watchdog.abort();
    if let Some(h) = handover {
        h.abort();
    }
    Ok(())
}

/// Asks the access log's writer to reopen its file (logrotate's rename,
/// then signal); the writer does it before its next line, never a worker.
fn reopen_access_log(edge: &Edge, signal: &str) {
    if let Some(log) = &edge.proxy.access_log {
        tracing::info!("{signal}: reopening the access log");
        log.reopen();
    }
}

/// The geoedges serving one of `addrs` that this start takes over from
/// (`takeover`); without it, one found refuses the start (exit 2), naming
/// its pid ([`crate::control::takeover`]).
pub fn others(addrs: &[SocketAddr], takeover: bool) -> anyhow::Result<Vec<u32>> {
    Ok(crate::control::takeover::check(addrs, takeover)?)
}

/// Takes the sticky bindings of the geoedges this one takes over from
/// (before its listeners are bound: no client is routed without them).
pub fn take_bindings(edge: &Edge, others: &[u32]) {
    for &pid in others {
        crate::control::handover::receive(pid, &edge.proxy.router);
    }
}

/// Gives the metrics listener the edge: its collectors and the admin
/// endpoints' view of it (`run` and `demo` alike).
pub fn register(
    metrics: &Metrics,
    edge: &Edge,
    settings: &Settings,
    routing_db: &Path,
) -> anyhow::Result<()> {
    metrics.register_edge(metric_sources(edge))?;
    metrics.register_lifecycle(Arc::clone(&edge.proxy.limit), Arc::clone(&edge.reloads))?;
    metrics.register_features(Arc::clone(&edge.proxy))?;
    metrics.admin().set_write(settings.admin_write);
    metrics.admin().set_edge(crate::control::admin::AdminEdge {
        router: Arc::clone(&edge.proxy.router),
        geoip: Arc::clone(&edge.proxy.geoip),
        app: settings
            .listen
            .first()
            .map_or_else(geoedge_routing::AppId::default_app, |l| l.app.clone()),
        region: settings.region.clone(),
        routing_db: routing_db.to_path_buf(),
    });
    Ok(())
}

/// The `run` command; `resolve` reads the settings again on SIGHUP;
/// `takeover`: start beside another geoedge on the same addresses.
pub fn run(settings: &Settings, resolve: Resolve, takeover: bool) -> anyhow::Result<ExitCode> {
    let mut addrs: Vec<SocketAddr> = settings.listen.iter().map(|l| l.addr).collect();
    addrs.extend(settings.metrics_listen);
    // Checked before anything binds; a refusal is reported after the
    // files are loaded, with their error first if they have one.
    let others = others(&addrs, takeover);
    let routing_db = settings
        .routing_db
        .clone()
        .unwrap_or_else(|| PathBuf::from("routing.db"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // From here on SIGHUP no longer terminates the process, even while it
    // loads.
    let signals = {
        let _entered = runtime.enter();
        Signals::install()?
    };
    // A bad key or credentials file fails the start before anything else.
    if let Some(wg) = &settings.wireguard {
        crate::commands::wg_key::load_private_key(&wg.private_key_file)?;
    }
    if let Some(creds) = settings.fleet.as_ref().and_then(|f| f.creds.as_ref()) {
        crate::control::fleet::creds::load(creds)?;
    }
    // The health endpoints answer from the start: "starting" until the
    // tables are loaded and the listeners bound.
    let health = Arc::new(Health::default());
    let metrics = Metrics::new(Arc::clone(&health))?;
    let endpoints = match &others {
        Ok(_) => settings
            .metrics_listen
            .map(|addr| runtime.block_on(metrics.serve(addr))),
        Err(_) => None,
    };
    // The files are loaded whether or not the addresses are free: their
    // error is the one to fix first.
    let edge = match (start(settings, &routing_db), others, endpoints) {
        (Err(e), Err(other), _) => anyhow::bail!("{e:#}; also, {other:#}"),
        (Err(e), _, Some(Err(bind))) => anyhow::bail!("{e:#}; also, {bind:#}"),
        (Err(e), _, _) => return Err(e),
        (Ok(_), Err(other), _) => return Err(other),
        (Ok(_), _, Some(Err(bind))) => return Err(bind),
        (Ok(edge), Ok(others), _) => {
            // A takeover brings the running geoedge's bindings; a plain
            // start, those the last run left beside routing.db.
            let saved = crate::control::bindings_file::path_for(&routing_db);
            if others.is_empty() {
                crate::control::bindings_file::restore_logged(&edge.proxy.router, &saved);
            }
            take_bindings(&edge, &others);
            edge
        }
    };
    register(&metrics, &edge, settings, &routing_db)?;
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
        // The fleet's routing table is followed once the backhaul (which
        // may carry the NATS traffic) is up; the edge serves the file it
        // has whatever NATS does.
        let follower = settings.fleet.clone().map(|fleet| {
            let state = Arc::new(crate::control::fleet::follow::FollowState::default());
            let gate = edge.proxy.router.leases().cloned();
            metrics
                .admin()
                .set_fleet(crate::control::admin::AdminFleet {
                    pop: fleet.pop.clone(),
                    state: Arc::clone(&state),
                });
            if let Err(e) = metrics.register_fleet(Arc::clone(&state), Arc::clone(&edge.proxy.router))
            {
                tracing::warn!("{e:#}");
            }
            let leases = gate.clone().map(|gate| {
                crate::control::fleet::lease::spawn(
                    fleet.clone(),
                    Arc::clone(edge.proxy.router.table()),
                    gate,
                    Arc::clone(&edge.proxy.lease_wait),
                    Arc::clone(&state),
                )
            });
            tracing::info!(pop = %fleet.pop, servers = %fleet.servers.join(","), "following the fleet's routing table on NATS");
            let load = crate::control::fleet::load::spawn(
                fleet.clone(),
                Arc::clone(edge.proxy.router.table()),
                gate.clone(),
                Arc::clone(&state),
            );
            (
                crate::control::fleet::follow::spawn(fleet, routing_db.clone(), state),
                load,
                leases,
            )
        });
        let listeners = bind(settings)?;
        let served = serve(&edge, listeners, settings, signals, Some(resolve), &health).await;
        // Drained: the bindings go beside routing.db for the next start.
        let saved = crate::control::bindings_file::path_for(&routing_db);
        let router = Arc::clone(&edge.proxy.router);
        let _ = tokio::task::spawn_blocking(move || {
            crate::control::bindings_file::save_logged(&router, &saved)
        })
        .await;
        if let Some((follow, load, leases)) = follower {
            follow.abort();
            load.abort();
            if let Some(l) = leases {
                l.abort();
            }
        }
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

/// A seed of its own for each edge, so that edges spreading the same
/// spill draw different sequences (the standard library's per-process
/// random hash keys).
fn spill_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}
