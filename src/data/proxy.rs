//! The edge: accepting clients, taking each one's decision from the routing
//! core, dialing with failover, and relaying.
//!
//! The listener and the shutdown signal are passed in ([`Proxy::serve`]), so
//! tests bind `127.0.0.1:0`. Accept errors never end the loop: running out
//! of descriptors pauses it (100 ms), an aborted connection is
//! skipped. Each connection takes a slot of the global limit
//! ([`ConnLimit`]) from accept to close; past it the socket is closed at
//! once and counted `over_limit`. On shutdown the loop takes what the
//! kernel has already queued, then closes the listener.
//!
//! [`ProxyOptions`] are swapped whole on a config reload; a connection
//! takes one snapshot of them when it is accepted, and every stage of its
//! pipeline ([`stages`]) reads that one.
//!
//! Each connection runs in a `conn` span (`client`, `country`, `backend`)
//! with its events at debug; failures that repeat are logged at warn once
//! per [`FAILURE_LOG_INTERVAL`]. The outcome of every connection and every
//! connect attempt is counted for the metrics: [`ConnStats`] here, connect
//! durations and failures on the backend's own counters (through the route
//! already held: no lookup, no lock).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use geoedge_geoip::GeoIp;
use geoedge_routing::{AppId, ConnectFailure, Router};
use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::field::Empty;
use tracing::Instrument;

use crate::data::admission::{AcceptError, ConnLimit};
use crate::data::conn_stats::{ConnResult, ConnStats};
use crate::data::dialer::Dialer;
use crate::data::proxy_protocol::Version;
use crate::data::throttle::Throttle;

pub mod data_path;
pub mod log_line;
pub mod loops;
pub mod stages;

pub use data_path::{DataPath, Relay};
pub use loops::OwnConnections;
pub use stages::Conn;

/// A failure that keeps happening is logged at most once per this long.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The failures that can repeat once per connection, each logged at most
/// once per [`FAILURE_LOG_INTERVAL`].
#[derive(Debug)]
pub struct FailureLog {
    /// Accepting a client failed (out of descriptors and the like).
    pub(crate) accept: Throttle,
    /// Connecting to a backend failed.
    pub(crate) connect: Throttle,
    /// No backend could take a client.
    pub(crate) no_backend: Throttle,
    /// This host could not open a socket to a backend.
    pub(crate) local: Throttle,
    /// A connection came back to this edge from one of its own.
    pub(crate) looped: Throttle,
}

impl Default for FailureLog {
    fn default() -> Self {
        Self {
            accept: Throttle::new(FAILURE_LOG_INTERVAL),
            connect: Throttle::new(FAILURE_LOG_INTERVAL),
            no_backend: Throttle::new(FAILURE_LOG_INTERVAL),
            local: Throttle::new(FAILURE_LOG_INTERVAL),
            looped: Throttle::new(FAILURE_LOG_INTERVAL),
        }
    }
}

/// The metric label of a failed connect. Errors of this host come first:
/// out of descriptors (`EMFILE`, `ENFILE`), of memory or buffers
/// (`ENOMEM`, `ENOBUFS`) or of source ports (`EADDRNOTAVAIL`) say nothing
/// about the backend, so they are [`ConnectFailure::Local`] and never count
/// towards its health.
pub(crate) fn classify(e: &io::Error) -> ConnectFailure {
    if let Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EADDRNOTAVAIL) =
        e.raw_os_error()
    {
        return ConnectFailure::Local;
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        io::ErrorKind::TimedOut => ConnectFailure::Timeout,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            ConnectFailure::Unreachable
        }
        _ => ConnectFailure::Other,
    }
}

/// How the proxy treats connections. Serialized (by key) only to tell two
/// sets apart.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProxyOptions {
    /// Sources whose PROXY headers are believed.
    #[serde(serialize_with = "as_debug")]
    pub proxy_protocol_from: Vec<IpNet>,
    /// Header sent to backends, if any.
    #[serde(serialize_with = "as_debug")]
    pub send_proxy_protocol: Option<Version>,
    /// Per-attempt connect timeout.
    pub connect_timeout: Duration,
    /// Backends tried per client.
    pub connect_attempts: u32,
    /// Idle timeout of a relayed connection.
    pub idle_timeout: Duration,
    /// Whether a backend's end-of-file half-closes the client connection
    /// (true) or closes it (false) (see [`crate::data::relay::relay`]).
    pub half_close: bool,
    /// Whether bulk transfers are spliced (true) or copied (false) (see
    /// [`crate::data::relay::Policy::splice`]).
    pub splice: bool,
    /// Deadline for a trusted source's PROXY header, and for the
    /// ClientHello on a listener that reads it.
    pub proxy_header_timeout: Duration,
    /// Connections one client may have open at once, per app (`None`: no
    /// cap), unless routing.db's `apps` says otherwise.
    pub client_max_connections: Option<u32>,
    /// New connections one client may open per period, per app (`None`:
    /// no limit), unless routing.db's `apps` says otherwise.
    #[serde(serialize_with = "as_debug")]
    pub client_rate: Option<geoedge_client_limits::Rate>,
    /// Clients never held to the per-client limits.
    #[serde(serialize_with = "as_debug")]
    pub client_limit_exempt: Vec<IpNet>,
    /// IPv4 clients share their limits per network of this prefix.
    pub client_ipv4_prefix: u8,
    /// IPv6 clients share their limits per network of this prefix.
    pub client_ipv6_prefix: u8,
}

impl ProxyOptions {
    /// The per-client limit settings, as the limit stage reads them.
    pub fn client_policy(&self) -> crate::data::per_client::Policy<'_> {
        crate::data::per_client::Policy {
            max_connections: self.client_max_connections,
            rate: self.client_rate,
            exempt: &self.client_limit_exempt,
            ipv4_prefix: self.client_ipv4_prefix,
            ipv6_prefix: self.client_ipv6_prefix,
        }
    }
}

/// Serializes a value as its `Debug` text (enough to compare two of them;
/// the settings' diff uses it for types without a serialized form).
pub(crate) fn as_debug<T: std::fmt::Debug, S: serde::Serializer>(
    v: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{v:?}"))
}

/// The shared state of every connection.
#[derive(Debug)]
pub struct Proxy<D, P = Relay> {
    /// Decisions.
    pub router: Arc<Router>,
    /// Client locations.
    pub geoip: Arc<GeoIp>,
    /// Connection handling options, swapped whole on a config reload.
    pub options: ArcSwap<ProxyOptions>,
    /// Opens backend connections.
    pub dialer: D,
    /// Moves the bytes of a connected pair.
    pub data_path: P,
    /// The edge's own backend connections, to recognise one coming back
    /// (a connection loop).
    pub own: Arc<OwnConnections>,
    /// Every connection task, so shutdown can wait for them (and the
    /// metrics count the open connections).
    pub tasks: TaskTracker,
    /// Connections by outcome, bytes relayed.
    pub conns: Arc<ConnStats>,
    /// Repeating failures, logged once per interval.
    pub failures: FailureLog,
    /// The global connection limit (shared by every worker) and the
    /// accept error counts.
    pub limit: Arc<ConnLimit>,
    /// A client's short wait for a lease of another POP's backend (a
    /// fleet); unused without one.
    pub lease_wait: Arc<crate::data::lease_wait::LeaseWait>,
    /// Open connections and recent connects per client, for the
    /// per-client limits.
    pub clients: crate::data::per_client::PerClient,
    /// Server names read on listeners that read the ClientHello.
    pub sni: SniStats,
    /// Where each connection's line goes when it ends (`None`: the access
    /// log is off).
    pub access_log: Option<geoedge_access_log::AccessLog>,
}

/// What the ClientHellos read on `sni_listen` listeners named, for the
/// metrics.
#[derive(Debug, Default)]
pub struct SniStats {
    /// A server name that `sni_routes` routes.
    routed: std::sync::atomic::AtomicU64,
    /// A server name that no route matches: the listener's app.
    unmatched: std::sync::atomic::AtomicU64,
    /// No server name: the listener's app.
    missing: std::sync::atomic::AtomicU64,
}

impl SniStats {
    /// Counts one hello: whether it named a server, and whether a route
    /// matched the name.
    pub fn count(&self, named: bool, routed: bool) {
        let counter = match (named, routed) {
            (_, true) => &self.routed,
            (true, false) => &self.unmatched,
            (false, false) => &self.missing,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hellos so far: routed by their name, named but unmatched, without a
    /// name.
    pub fn counts(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.routed.load(Relaxed),
            self.unmatched.load(Relaxed),
            self.missing.load(Relaxed),
        )
    }
}

/// What a listener serves: one app, or, reading the TLS ClientHello, the
/// app its server name routes to.
#[derive(Debug, Clone)]
pub struct Service {
    /// The app served (for a listener that reads the ClientHello, the app
    /// of names no route matches and of hellos without one).
    pub app: AppId,
    /// The listener reads the ClientHello.
    pub sni: bool,
}

impl Service {
    /// A listener of one app.
    pub fn app(app: AppId) -> Self {
        Service { app, sni: false }
    }
}

impl<D: Dialer, P: DataPath> Proxy<D, P> {
    /// Accepts clients for `service` on `listener` until `shutdown` turns
    /// true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        service: Service,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let app = &service;
        let local = listener.local_addr().ok();
        self.own.listening_on(local);
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer, local, app);
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of
                    // spinning; nothing here ends the loop.
                    let kind = AcceptError::classify(&e);
                    self.limit.count_accept_error(kind);
                    let pause = kind.pause();
                    if let Some(suppressed) = self.failures.accept.check(Instant::now()) {
                        tracing::warn!(
                            suppressed,
                            reason = kind.as_str(),
                            "accept failed: {e}; pausing {:?}",
                            pause.unwrap_or_default()
                        );
                    }
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
        let taken = self.take_queued(listener, local, app);
        tracing::info!(listener = ?local, taken, "stopped accepting");
    }

    /// At shutdown: accepts what the kernel has already queued on
    /// `listener` (connections whose handshake completed), then closes it.
    /// A connection the kernel queues after the last accept is reset by
    /// the close, unless `net.ipv4.tcp_migrate_req` hands it to another
    /// listener of the same `SO_REUSEPORT` group (a new process's).
    fn take_queued(
        self: &Arc<Self>,
        listener: TcpListener,
        local: Option<SocketAddr>,
        app: &Service,
    ) -> usize {
        let Ok(listener) = listener.into_std() else {
            return 0;
        };
        let mut taken = 0;
        // At most a full backlog: the loop ends even under a flood.
        for _ in 0..crate::data::admission::BACKLOG {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let stream = stream
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(stream));
                    if let Ok(stream) = stream {
                        self.admit(stream, peer, local, app);
                        taken += 1;
                    }
                }
                Err(e) if AcceptError::classify(&e) == AcceptError::Aborted => continue,
                Err(_) => break,
            }
        }
        taken
    }

    /// Starts serving an accepted client, or closes it at once (counted
    /// `over_limit`) when the global connection limit is reached.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        service: &Service,
    ) {
        let Some(slot) = self.limit.try_admit() else {
            // A reset, not a FIN: the descriptor and the kernel's state for
            // the connection go at once, none of it waits in TIME_WAIT.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
            self.conns.record(ConnResult::OverLimit);
            return;
        };
        // The settings snapshot of the connection, taken at accept: every
        // stage reads this one, however long the connection lives.
        let conn = Conn {
            client: stream,
            peer,
            listener: local,
            app: service.app.clone(),
            options: self.options.load_full(),
            sni: service.sni,
            log: self
                .access_log
                .as_ref()
                .map(|_| log_line::LogLine::new(peer, local, service.app.as_arc())),
        };
        let this = Arc::clone(self);
        let span = tracing::debug_span!("conn", client = Empty, country = Empty, backend = Empty);
        self.tasks
            .spawn(Self::handle(this, slot, conn).instrument(span));
    }
}

#[cfg(test)]
mod tests;
