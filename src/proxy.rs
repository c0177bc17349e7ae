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
//! reads them once, when it starts.
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
use geoedge_routing::{AppId, BackendId, ConnectFailure, Request, Router};
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;
use tracing::field::{display, Empty};
use tracing::Instrument;

use crate::admission::{AcceptError, ConnLimit, Slot};
use crate::dialer::Dialer;
use crate::metrics::{ConnResult, ConnStats};
use crate::proxy_protocol::{self, Header, Parse, ProxyHeaderError, Version};
use crate::relay::{self, Ended, Meter};
use crate::throttle::Throttle;

/// A failure that keeps happening is logged at most once per this long.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The failures that can repeat once per connection, each logged at most
/// once per [`FAILURE_LOG_INTERVAL`].
#[derive(Debug)]
pub struct FailureLog {
    /// Accepting a client failed (out of descriptors and the like).
    accept: Throttle,
    /// Connecting to a backend failed.
    connect: Throttle,
    /// No backend could take a client.
    no_backend: Throttle,
    /// This host could not open a socket to a backend.
    local: Throttle,
}

impl Default for FailureLog {
    fn default() -> Self {
        Self {
            accept: Throttle::new(FAILURE_LOG_INTERVAL),
            connect: Throttle::new(FAILURE_LOG_INTERVAL),
            no_backend: Throttle::new(FAILURE_LOG_INTERVAL),
            local: Throttle::new(FAILURE_LOG_INTERVAL),
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

/// How the proxy treats connections.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Sources whose PROXY headers are believed.
    pub proxy_protocol_from: Vec<IpNet>,
    /// Header sent to backends, if any.
    pub send_proxy_protocol: Option<Version>,
    /// Per-attempt connect timeout.
    pub connect_timeout: Duration,
    /// Backends tried per client.
    pub connect_attempts: u32,
    /// Idle timeout of a relayed connection.
    pub idle_timeout: Duration,
    /// Whether a backend's end-of-file half-closes the client connection
    /// (true) or closes it (false) (see [`relay::relay`]).
    pub half_close: bool,
    /// Whether bulk transfers are spliced (true) or copied (false) (see
    /// [`relay::Policy::splice`]).
    pub splice: bool,
    /// Deadline for a trusted source's PROXY header.
    pub proxy_header_timeout: Duration,
}

/// The shared state of every connection.
#[derive(Debug)]
pub struct Proxy<D> {
    /// Decisions.
    pub router: Arc<Router>,
    /// Client locations.
    pub geoip: Arc<GeoIp>,
    /// Connection handling options, swapped whole on a config reload.
    pub options: ArcSwap<ProxyOptions>,
    /// Opens backend connections.
    pub dialer: D,
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
}

impl<D: Dialer> Proxy<D> {
    /// Accepts clients for `app` on `listener` until `shutdown` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        app: AppId,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let local = listener.local_addr().ok();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer, local, &app);
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
        let taken = self.take_queued(listener, local, &app);
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
        app: &AppId,
    ) -> usize {
        let Ok(listener) = listener.into_std() else {
            return 0;
        };
        let mut taken = 0;
        // At most a full backlog: the loop ends even under a flood.
        for _ in 0..crate::workers::BACKLOG {
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
        app: &AppId,
    ) {
        let Some(slot) = self.limit.try_admit() else {
            // A reset, not a FIN: the descriptor and the kernel's state for
            // the connection go at once, none of it waits in TIME_WAIT.
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            drop(stream);
            self.conns.record(ConnResult::OverLimit);
            return;
        };
        let this = Arc::clone(self);
        let span = tracing::debug_span!("conn", client = Empty, country = Empty, backend = Empty);
        self.tasks
            .spawn(Self::admitted(this, slot, stream, peer, local, app.clone()).instrument(span));
    }

    /// An admitted connection: its slot is held until it ends.
    async fn admitted(
        self: Arc<Self>,
        slot: Slot,
        stream: TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        app: AppId,
    ) {
        self.handle(stream, peer, local, app).await;
        drop(slot);
    }

    fn trusted(options: &ProxyOptions, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        options.proxy_protocol_from.iter().any(|n| n.contains(&ip))
    }

    /// One client connection, start to end.
    async fn handle(
        self: Arc<Self>,
        mut client: TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        app: AppId,
    ) {
        // One snapshot of the options for the whole connection.
        let options = self.options.load_full();
        // The address the client reached: only a PROXY header for the
        // backend carries it, so it is asked of the socket only then.
        let local = if options.send_proxy_protocol.is_some() {
            client.local_addr().ok().or(local).unwrap_or(peer)
        } else {
            local.unwrap_or(peer)
        };
        let (source, destination, early) = if Self::trusted(&options, peer) {
            match tokio::time::timeout(options.proxy_header_timeout, read_header(&mut client)).await
            {
                Ok(Ok((
                    Header::Proxied {
                        source,
                        destination,
                    },
                    early,
                ))) => (source, destination, early),
                Ok(Ok((Header::Local, early))) => (peer, local, early),
                Ok(Err(e)) => {
                    self.conns.record(ConnResult::BadProxyHeader);
                    tracing::debug!(%peer, reason = e.reason(), "PROXY header rejected: {e}");
                    return;
                }
                Err(_) => {
                    self.conns.record(ConnResult::ProxyHeaderTimeout);
                    tracing::debug!(%peer, "no PROXY header within {:?}", options.proxy_header_timeout);
                    return;
                }
            }
        } else {
            (peer, local, Vec::new())
        };
        let span = tracing::Span::current();
        let ip = source.ip().to_canonical();
        span.record("client", display(ip));
        let lookup = self.geoip.lookup(ip);
        if let Some(country) = lookup.country() {
            span.record("country", display(country));
        }
        let mut tried: Vec<BackendId> = Vec::new();
        let mut result = ConnResult::NoBackend;
        for _ in 0..options.connect_attempts {
            // The decision's clock also starts the connect's.
            let started = Instant::now();
            let route = match self.router.decide(
                &Request {
                    app: &app,
                    ip,
                    location: lookup.location(),
                    exclude: &tried,
                },
                started,
            ) {
                Ok(route) => route,
                Err(e) => {
                    if result == ConnResult::NoBackend {
                        if let Some(suppressed) = self.failures.no_backend.check(Instant::now()) {
                            tracing::warn!(suppressed, "no backend for a client: {e}");
                        }
                    }
                    break;
                }
            };
            let backend = Arc::clone(route.backend());
            // The deadline comes from the decision's clock read too, so
            // timing the connect for the metrics reads the clock no more
            // often than a plain `timeout` would.
            let connected = tokio::time::timeout_at(
                tokio::time::Instant::from_std(started + options.connect_timeout),
                self.dialer.connect(backend.addr),
            )
            .await;
            let outcomes = backend.load.connect_stats();
            let (why, error) = match connected {
                Ok(Ok(stream)) => {
                    let took = started.elapsed();
                    outcomes.observe(took);
                    // Passive health; no lock unless the backend was failing.
                    if let Some(change) = self.router.report_connect(&backend, true, started + took)
                    {
                        crate::health_check::log_connect_change(&backend, change, &self.router);
                    }
                    // Counted as `ok` by the connect just observed.
                    span.record("backend", display(&backend.id));
                    self.relay(client, stream, source, destination, &early, route)
                        .await;
                    return;
                }
                Ok(Err(e)) => (classify(&e), Some(e)),
                Err(_) => (ConnectFailure::Timeout, None),
            };
            outcomes.fail(why);
            if why == ConnectFailure::Local {
                // Not the backend's fault: its health is left alone, and
                // another backend would need a socket just the same.
                if let Some(suppressed) = self.failures.local.check(Instant::now()) {
                    tracing::warn!(
                        backend = %backend.id,
                        suppressed,
                        "no socket for a backend connect, the client is refused: {}",
                        error.map_or_else(String::new, |e| e.to_string())
                    );
                }
                result = ConnResult::LocalError;
                // A reset: the client's descriptor goes at once.
                let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
                break;
            }
            if let Some(change) = self.router.report_connect(&backend, false, Instant::now()) {
                crate::health_check::log_connect_change(&backend, change, &self.router);
            }
            // Formatted only when logged: a storm of failures costs no text.
            if let Some(suppressed) = self.failures.connect.check(Instant::now()) {
                let timeout = options.connect_timeout;
                tracing::warn!(
                    backend = %backend.id,
                    reason = why.as_str(),
                    suppressed,
                    "connecting to a backend failed: {}",
                    error.map_or_else(|| format!("no answer within {timeout:?}"), |e| e.to_string())
                );
            }
            tried.push(backend.id.clone());
            result = ConnResult::ConnectFailed;
            // `route` drops here: the slot is released.
        }
        self.conns.record(result);
        tracing::debug!(
            attempts = tried.len(),
            result = result.as_str(),
            "no backend reachable"
        );
    }

    /// Relays a connected client; `route` (and with it the backend's slot)
    /// is released exactly once, when this returns.
    async fn relay(
        &self,
        client: TcpStream,
        stream: TcpStream,
        source: SocketAddr,
        destination: SocketAddr,
        early: &[u8],
        route: geoedge_routing::Route,
    ) {
        let (send_proxy_protocol, policy) = {
            let options = self.options.load();
            (
                options.send_proxy_protocol,
                relay::Policy {
                    idle: options.idle_timeout,
                    half_close: options.half_close,
                    splice: options.splice,
                },
            )
        };
        let mut first = Vec::new();
        if let Some(version) = send_proxy_protocol {
            version.encode(source, destination, &mut first);
        }
        first.extend_from_slice(early);
        self.conns.up().add(early.len() as u64);
        tracing::debug!(kind = route.kind.as_str(), "relaying");
        let meter = Meter {
            up: self.conns.up(),
            down: self.conns.down(),
        };
        match relay::relay(client, stream, &first, policy, meter).await {
            Ended::Closed(moved) => {
                tracing::debug!(up = moved.up, down = moved.down, "closed")
            }
            Ended::Idle => tracing::debug!("idle timeout"),
            Ended::Error(e) => tracing::debug!("relay ended: {e}"),
        }
        drop(route);
    }
}

/// Why a trusted source's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
enum HeaderError {
    /// The socket failed or closed inside the header.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid header.
    #[error(transparent)]
    Malformed(#[from] ProxyHeaderError),
}

impl HeaderError {
    /// A short label for logs and metrics.
    fn reason(&self) -> &'static str {
        match self {
            HeaderError::Io(_) => "io",
            HeaderError::Malformed(e) => e.reason(),
        }
    }
}

/// Reads a PROXY header; returns it and any bytes read past it.
async fn read_header(client: &mut TcpStream) -> Result<(Header, Vec<u8>), HeaderError> {
    let mut buf = vec![0u8; proxy_protocol::MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        let n = client.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside the PROXY header",
            )
            .into());
        }
        filled += n;
        match proxy_protocol::parse(&buf[..filled])? {
            Parse::Complete { header, consumed } => {
                return Ok((header, buf[consumed..filled].to_vec()))
            }
            // `parse` fails before a header could outgrow the buffer.
            Parse::Incomplete if filled < buf.len() => continue,
            Parse::Incomplete => {
                return Err(
                    io::Error::new(io::ErrorKind::InvalidData, "PROXY header too long").into(),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_of_this_host_are_local_and_the_backends_are_not() {
        let os = io::Error::from_raw_os_error;
        for local in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            assert_eq!(classify(&os(local)), ConnectFailure::Local, "errno {local}");
        }
        for (errno, why) in [
            (libc::ECONNREFUSED, ConnectFailure::Refused),
            (libc::ETIMEDOUT, ConnectFailure::Timeout),
            (libc::EHOSTUNREACH, ConnectFailure::Unreachable),
            (libc::ENETUNREACH, ConnectFailure::Unreachable),
            (libc::ECONNRESET, ConnectFailure::Other),
            (libc::EACCES, ConnectFailure::Other),
        ] {
            assert_eq!(classify(&os(errno)), why, "errno {errno}");
        }
        // Errors without an errno are never taken for local ones.
        let synthetic = io::Error::new(io::ErrorKind::OutOfMemory, "no errno");
        assert_eq!(classify(&synthetic), ConnectFailure::Other);
    }
}
