//! Dialing for the epoll worker: the routing core's decision and a
//! non-blocking connect, for each backend in turn, with the tokio
//! pipeline's counting and logging of a failed connect.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use geoedge_routing::{AppId, BackendId, ConnectFailure, Request, Route};
use mio::net::TcpStream;
use tracing::field::{display, Empty};

use crate::data::conn_stats::ConnResult;
use crate::data::dialer::TcpDialer;
use crate::data::proxy::log_line::LogLine;
use crate::data::proxy::loops::Registered;
use crate::data::proxy::stages::Identity;
use crate::data::proxy::{classify, DataPath, Proxy};

/// What a pair needs while its backend is being connected: enough to ask
/// the routing core again, and to hand the client over.
pub(super) struct Dialing {
    /// The app served.
    pub(super) app: AppId,
    /// Who the client is (for the decision and the logs).
    pub(super) identity: Identity,
    /// Backends tried, excluded from the next decision.
    pub(super) tried: Vec<BackendId>,
    /// Connect attempts left, this one included.
    pub(super) attempts_left: u32,
    /// Per-attempt connect timeout.
    pub(super) timeout: Duration,
    /// This attempt's deadline.
    pub(super) deadline: Instant,
    /// This attempt's start (the decision's clock).
    pub(super) started: Instant,
    /// The lease answers seen before the last decision that may wait for
    /// a lease (a client waiting for one is decided for again once there
    /// are more).
    pub(super) lease_seen: u64,
    /// The access-log line, when the log is on (the pair's once
    /// connected).
    pub(super) log: Option<Box<LogLine>>,
}

/// A non-blocking connect to `addr` with TCP_NODELAY, as
/// [`crate::data::dialer::TcpDialer`] makes them.
pub(super) fn dial(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.nonblocking(),
        None,
    )?;
    s.set_tcp_nodelay(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// Why a decision-and-dial gave no connect under way.
pub(super) enum Refusal {
    /// The connection ends, counted so.
    Ends(ConnResult),
    /// The better backend's lease is being asked for: the client waits
    /// for an answer.
    LeasePending,
}

/// A `conn` span for a client, as the tokio pipeline's (its `backend`
/// left to fill in).
pub(super) fn conn_span(identity: &Identity) -> tracing::Span {
    let span =
        tracing::debug_span!("conn", client = %identity.ip, country = Empty, backend = Empty);
    if let Some(country) = identity.lookup.country() {
        span.record("country", display(country));
    }
    span
}

/// The routing core's decision for a client (excluding the backends
/// tried) and a non-blocking connect to it, for each backend in turn until
/// one connect is under way. A connect that fails at once counts as the
/// attempt's failure. A decision may wait for a lease only when
/// `may_wait` (a client's decisions before its patience is spent) and no
/// backend was tried yet.
pub(super) fn attempt<P: DataPath>(
    proxy: &Proxy<TcpDialer, P>,
    d: &mut Dialing,
    may_wait: bool,
) -> Result<(Route, TcpStream, Option<Registered>), Refusal> {
    loop {
        if d.attempts_left == 0 {
            return Err(Refusal::Ends(ConnResult::ConnectFailed));
        }
        if may_wait {
            d.lease_seen = proxy.lease_wait.answers();
        }
        let started = Instant::now();
        let request = Request {
            app: &d.app,
            ip: d.identity.ip,
            location: d.identity.lookup.location(),
            exclude: &d.tried,
        };
        let route = match proxy.router.decide(&request, started) {
            Ok(route) => route,
            Err(e) => {
                if d.tried.is_empty() {
                    if let Some(suppressed) = proxy.failures.no_backend.check(started) {
                        tracing::warn!(suppressed, "no backend for a client: {e}");
                    }
                    return Err(Refusal::Ends(ConnResult::NoBackend));
                }
                tracing::debug!(attempts = d.tried.len(), "no backend reachable");
                return Err(Refusal::Ends(ConnResult::ConnectFailed));
            }
        };
        if may_wait && d.tried.is_empty() && route.lease_pending {
            return Err(Refusal::LeasePending);
        }
        d.started = started;
        d.deadline = started + d.timeout;
        let addr = route.backend().addr;
        match dial(addr) {
            Ok(stream) => {
                // Recorded from the connect on (its local address is bound
                // by now): the accept of a connection that comes back may
                // be handled before this one's connect completes.
                let id = &route.backend().id;
                let registered = proxy
                    .own
                    .register_with(|| stream.local_addr().ok(), addr, id);
                return Ok((route, stream, registered));
            }
            Err(e) => {
                let why = classify(&e);
                if let Err(result) = connect_failed(proxy, d, &route, why, Some(e), started) {
                    return Err(Refusal::Ends(result));
                }
            }
        }
    }
}

/// Counts a failed connect to `backend` (`why`) the tokio pipeline's way:
/// against the backend's health, unless it is this host's error (then the
/// client is refused: `Err`); the backend is excluded from the next
/// decision, one attempt fewer is left.
pub(super) fn connect_failed<P: DataPath>(
    proxy: &Proxy<TcpDialer, P>,
    d: &mut Dialing,
    route: &Route,
    why: ConnectFailure,
    error: Option<io::Error>,
    now: Instant,
) -> Result<(), ConnResult> {
    let backend = route.backend();
    backend.load.connect_stats().fail(why);
    let span = || {
        let span = conn_span(&d.identity);
        span.record("backend", display(&backend.id));
        span
    };
    if why == ConnectFailure::Local {
        span().in_scope(|| proxy.warn_local_failure(&backend.id, error, now));
        return Err(ConnResult::LocalError);
    }
    if let Some(change) = proxy.router.report_connect(backend, false, now) {
        crate::data::health_log::log_connect_change(backend, change, &proxy.router);
    }
    span().in_scope(|| proxy.warn_connect_failed(&backend.id, why, error, d.timeout, now));
    d.tried.push(backend.id.clone());
    d.attempts_left = d.attempts_left.saturating_sub(1);
    if let Some(line) = d.log.as_deref_mut() {
        proxy.log_decision(line, &d.identity, route, d.tried.len(), None);
    }
    Ok(())
}
