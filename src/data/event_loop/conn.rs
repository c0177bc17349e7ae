//! The epoll worker's connections: admitted at accept, held for a PROXY
//! header ([`super::reading`]), waiting for a lease answer when their
//! decision found the better backend's lease being asked for, then a pair
//! (client and backend) connecting with failover ([`super::dial`]), then
//! relaying through its [`PairRelay`] ([`drive`]). Each is one slab entry;
//! its sockets' tokens carry the entry's index, the side and, for the
//! backend, a generation bit that a failover flips (an event of the closed
//! socket that comes in the same batch carries the old bit and is
//! ignored).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_routing::{ConnectFailure, Route};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Token};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::field::display;

use super::dial::{attempt, conn_span, connect_failed, Dialing, Refusal};
use super::reading::{Awaiting, Pending};
use super::EventLoop;
use crate::data::admission::Slot;
use crate::data::conn_stats::ConnResult;
use crate::data::dialer::TcpDialer;
use crate::data::pair::{BufPool, End, PairRelay, Readiness, Side, SpliceRule};
use crate::data::proxy::log_line::LogLine;
use crate::data::proxy::loops::Registered;
use crate::data::proxy::stages::{Admitted, Identity};
use crate::data::proxy::{classify, DataPath, Proxy, ProxyOptions, Service};
use crate::data::relay::{BULK_READ, SPLICE_AFTER};
use crate::data::splice::Pipe;
use geoedge_access_log::{AccessLog, End as AccessEnd};

mod drive;

/// When a pair's bulk directions splice (unless `splice` is off): the
/// tokio relay's rule.
const SPLICE: SpliceRule = SpliceRule {
    after: SPLICE_AFTER,
    bulk_read: BULK_READ,
};

/// A socket's token: slab index, generation bit, side.
pub(super) fn token(idx: usize, generation: u8, side: Side) -> Token {
    Token(idx << 2 | usize::from(generation & 1) << 1 | side as usize)
}

/// One slab entry.
pub(super) enum Entry {
    /// A trusted source's client whose PROXY header is being read.
    Header(Box<Pending>),
    /// A client waiting for a lease answer (no socket registered).
    Leasing(Box<Deciding>),
    /// A client and its backend.
    Pair(Box<Pair>),
}

impl Entry {
    /// Closes the entry's sockets with resets (the drain is over); its
    /// access-log line, if any, says `draining`.
    pub(super) fn abort(self, pool: &mut BufPool, log: Option<&AccessLog>) {
        match self {
            Entry::Header(h) => {
                reset(&h.client);
                if let (Some(line), Some(log)) = (h.log, log) {
                    line.finish(log, AccessEnd::Draining, 0, 0);
                }
            }
            Entry::Leasing(d) => {
                reset(&d.client);
                if let (Some(line), Some(log)) = (d.dialing.log, log) {
                    line.finish(log, AccessEnd::Draining, 0, 0);
                }
            }
            Entry::Pair(mut p) => {
                p.relay.end(End::Error);
                let _ = p.relay.poll_io(pool);
                reset(&p.client);
                reset(&p.backend);
                let (up, down) = p.relay.moved();
                let line = p.log.take().or_else(|| p.dialing.as_mut()?.log.take());
                if let (Some(line), Some(log)) = (line, log) {
                    line.finish(log, AccessEnd::Draining, up, down);
                }
            }
        }
    }
}

/// A client on its way to a backend: held to its per-client limits,
/// about to be decided for (or waiting for a lease answer to be decided
/// for again).
pub(super) struct Deciding {
    /// The client's socket.
    client: TcpStream,
    /// The socket is registered already (under an index released since).
    registered: bool,
    /// The settings snapshot taken at accept.
    options: Arc<ProxyOptions>,
    /// The connection's slot of the global limit.
    slot: Slot,
    /// Counts the connection among the open ones.
    token: TaskTrackerToken,
    /// The client's place under its per-client limits, if it is held to
    /// any.
    admitted: Admitted,
    /// What the decisions and the connects need.
    dialing: Dialing,
    /// Once it waits for a lease: until when (its patience, from its first
    /// decision); past it, the decision stands, lease or not.
    lease_until: Option<Instant>,
}

/// A client and its backend.
pub(super) struct Pair {
    /// The client's socket.
    client: TcpStream,
    /// The backend's socket (a new one after a failover).
    backend: TcpStream,
    /// The relay's state.
    relay: PairRelay,
    /// The pipes of splicing directions (by the side read from), from the
    /// worker thread's pool; allocated at a pair's first splice.
    pipes: Option<Box<[Option<Pipe>; 2]>>,
    /// The decision, holding the backend's connection slot until it drops.
    route: Route,
    /// Set while the backend is being connected.
    dialing: Option<Box<Dialing>>,
    /// Flipped with each new backend socket.
    generation: u8,
    /// The access-log line once connected, when the log is on.
    log: Option<Box<LogLine>>,
    /// The backend connection's entry among the edge's own (from the
    /// connect on).
    _registered: Option<Registered>,
    /// The client's place under its per-client limits, if it is held to
    /// any.
    _admitted: Admitted,
    /// The connection's slot of the global limit.
    _slot: Slot,
    /// Counts the connection among the open ones.
    _token: TaskTrackerToken,
}

/// Closes `socket` with a reset when it drops.
pub(super) fn reset(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

impl EventLoop {
    /// A client just accepted: refused, held for its PROXY header, or
    /// routed and dialed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn admit<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        client: TcpStream,
        peer: SocketAddr,
        listener: Option<SocketAddr>,
        service: &Service,
        now: Instant,
    ) {
        let Some(slot) = proxy.limit.try_admit() else {
            reset(&client);
            proxy.conns.record(ConnResult::OverLimit);
            return;
        };
        let log = proxy
            .access_log
            .as_ref()
            .map(|_| LogLine::new(peer, listener, service.app.as_arc()));
        if let Some(backend) = proxy.own.origin(peer, || client.local_addr().ok()) {
            reset(&client);
            proxy.refuse_loop(&backend, peer);
            refuse(proxy, log, ConnResult::Loop);
            return;
        }
        let options = proxy.options.load_full();
        let ip = peer.ip().to_canonical();
        let trusted = options.proxy_protocol_from.iter().any(|n| n.contains(&ip));
        if trusted || service.sni {
            let pending = Pending {
                client,
                peer,
                listener,
                service: service.clone(),
                deadline: now + options.proxy_header_timeout,
                options,
                buf: Vec::new(),
                slot,
                token: proxy.tasks.token(),
                log,
                awaiting: Awaiting::Header,
            };
            if trusted {
                self.await_header(proxy, pending);
            } else {
                let identity =
                    identity_of(proxy, &pending.client, peer, listener, &pending.options);
                self.await_hello(proxy, None, pending, identity, now);
            }
            return;
        }
        let identity = identity_of(proxy, &client, peer, listener, &options);
        let arrival = Arrival {
            client,
            registered: false,
            service,
            options: &options,
            slot,
            token: proxy.tasks.token(),
            log,
        };
        self.start(proxy, arrival, identity, now);
    }

    /// Holds a client to its per-client limits, then routes it and dials
    /// its backend ([`EventLoop::decide`]).
    pub(super) fn start<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        mut a: Arrival<'_>,
        identity: Identity,
        now: Instant,
    ) {
        note_identity(a.log.as_deref_mut(), &identity);
        let dialing = Dialing {
            app: a.service.app.clone(),
            identity,
            tried: Vec::new(),
            attempts_left: a.options.connect_attempts.max(1),
            timeout: a.options.connect_timeout,
            deadline: now,
            started: now,
            lease_seen: 0,
            log: a.log.take(),
        };
        // Stage 4: the per-client limits, before any decision.
        let admitted = match proxy.client_limits(a.options, &dialing.app, dialing.identity.ip) {
            Ok(admitted) => admitted,
            Err(result) => {
                reset(&a.client);
                refuse(proxy, dialing.log, result);
                return;
            }
        };
        let d = Deciding {
            client: a.client,
            registered: a.registered,
            options: Arc::clone(a.options),
            slot: a.slot,
            token: a.token,
            admitted,
            dialing,
            lease_until: None,
        };
        self.decide(proxy, d, now);
    }

    /// Routes a client and dials its backend, and makes its pair; or, when
    /// its decision found the better backend's lease being asked for and
    /// its patience is not spent, keeps it waiting for a lease answer (it
    /// is decided for again at the next one, or at its deadline:
    /// [`EventLoop::resume_leasing`]).
    fn decide<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        mut d: Deciding,
        now: Instant,
    ) {
        let may_wait = d.lease_until.is_none_or(|until| now < until);
        let (route, backend, registered) = match attempt(proxy, &mut d.dialing, may_wait) {
            Ok(dialed) => dialed,
            Err(Refusal::LeasePending) => {
                if d.registered {
                    // Nothing is read while it waits.
                    let _ = self.poll.registry().deregister(&mut d.client);
                    d.registered = false;
                }
                d.lease_until
                    .get_or_insert(now + proxy.lease_wait.patience());
                // The lease is asked for at once (unless an answer came
                // since the decision: the loop then decides again at once).
                if proxy.lease_wait.answers() == d.dialing.lease_seen {
                    proxy.lease_wait.want();
                }
                let idx = self.vacant();
                self.slab[idx] = Some(Entry::Leasing(Box::new(d)));
                self.leasing.push(idx);
                return;
            }
            Err(Refusal::Ends(result)) => {
                if result == ConnResult::LocalError {
                    reset(&d.client);
                }
                refuse(proxy, d.dialing.log, result);
                return;
            }
        };
        self.pair_up(proxy, d, route, backend, registered);
    }

    /// Clients waiting for a lease: those that saw no answer yet wait on
    /// unless their deadline passed; the others are decided for again.
    pub(super) fn resume_leasing<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        now: Instant,
    ) {
        let answers = proxy.lease_wait.answers();
        let waiting = std::mem::take(&mut self.leasing);
        for idx in waiting {
            let due = match self.slab.get(idx) {
                Some(Some(Entry::Leasing(d))) => {
                    d.dialing.lease_seen != answers || d.lease_until.is_some_and(|t| now >= t)
                }
                _ => continue,
            };
            if !due {
                self.leasing.push(idx);
                continue;
            }
            let Some(Entry::Leasing(d)) = self.slab[idx].take() else {
                continue;
            };
            self.release(idx);
            self.decide(proxy, *d, now);
        }
    }

    /// The earliest deadline of the clients waiting for a lease.
    pub(super) fn lease_deadline(&self) -> Option<Instant> {
        self.leasing
            .iter()
            .filter_map(|&idx| match self.slab.get(idx) {
                Some(Some(Entry::Leasing(d))) => d.lease_until,
                _ => None,
            })
            .min()
    }

    /// Registers a routed client and its backend's socket, a connect under
    /// way, as a new pair.
    fn pair_up<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        d: Deciding,
        route: Route,
        mut backend: TcpStream,
        registered: Option<Registered>,
    ) {
        let Deciding {
            mut client,
            registered: client_known,
            options,
            slot,
            token: open,
            admitted,
            dialing,
            lease_until: _,
        } = d;
        let idx = self.vacant();
        let both = Interest::READABLE | Interest::WRITABLE;
        let registry = self.poll.registry();
        let client_registered = if client_known {
            registry.reregister(&mut client, token(idx, 0, Side::Client), both)
        } else {
            registry.register(&mut client, token(idx, 0, Side::Client), both)
        };
        if client_registered.is_err()
            || registry
                .register(&mut backend, token(idx, 0, Side::Backend), both)
                .is_err()
        {
            self.release(idx);
            reset(&client);
            refuse(proxy, dialing.log, ConnResult::LocalError);
            return;
        }
        let mut first = Vec::new();
        if let Some(version) = options.send_proxy_protocol {
            version.encode(
                dialing.identity.source,
                dialing.identity.destination,
                &mut first,
            );
        }
        let uncounted = first.len();
        first.extend_from_slice(&dialing.identity.early);
        let relay = PairRelay::new(
            first,
            uncounted,
            options.half_close,
            options.splice.then_some(SPLICE),
            options.idle_timeout,
            dialing.started,
        );
        self.slab[idx] = Some(Entry::Pair(Box::new(Pair {
            client,
            backend,
            relay,
            pipes: None,
            route,
            dialing: Some(Box::new(dialing)),
            generation: 0,
            log: None,
            _registered: registered,
            _admitted: admitted,
            _slot: slot,
            _token: open,
        })));
    }

    /// An event of slab entry's socket.
    pub(super) fn handle_event<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        ev: &Event,
        now: Instant,
    ) {
        let t = ev.token().0;
        let (idx, generation, side) = (
            t >> 2,
            (t >> 1) & 1,
            if t & 1 == 0 {
                Side::Client
            } else {
                Side::Backend
            },
        );
        let p = match self.slab.get_mut(idx) {
            Some(Some(Entry::Pair(p))) => p,
            Some(Some(Entry::Header(_))) => {
                self.read_pending(proxy, idx, now);
                return;
            }
            _ => return,
        };
        if side == Side::Backend && usize::from(p.generation & 1) != generation {
            return;
        }
        if side == Side::Backend && p.dialing.is_some() {
            let failed = ev.is_error() || (ev.is_read_closed() && ev.is_write_closed());
            if failed {
                let error = p.backend.take_error().ok().flatten();
                let why = error.as_ref().map_or(ConnectFailure::Other, classify);
                self.fail_over(proxy, idx, why, error, now);
                return;
            }
            if !ev.is_writable() {
                return;
            }
            self.connected(proxy, idx, now);
        }
        let Some(Some(Entry::Pair(p))) = self.slab.get_mut(idx) else {
            return;
        };
        p.relay.handle_readiness(
            side,
            Readiness {
                readable: ev.is_readable(),
                writable: ev.is_writable(),
                read_closed: ev.is_read_closed(),
                error: ev.is_error(),
            },
        );
        self.drive(proxy, idx);
    }

    /// The backend of pair `idx` answered its connect.
    fn connected<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        idx: usize,
        now: Instant,
    ) {
        let Some(Some(Entry::Pair(p))) = self.slab.get_mut(idx) else {
            return;
        };
        let Some(mut dialing) = p.dialing.take() else {
            return;
        };
        let backend = p.route.backend();
        let took = now.saturating_duration_since(dialing.started);
        // A connect that came back to this edge (a loop, seen and counted
        // at its accept, its backend ejected) is no success of the
        // backend's. (Were it reported, the loop's ejection would stand
        // all the same: only a trial ends it.)
        let looped = p._registered.as_ref().is_some_and(|r| r.came_back());
        if let Some(mut line) = dialing.log.take() {
            let attempts = dialing.tried.len() + 1;
            proxy.log_decision(&mut line, &dialing.identity, &p.route, attempts, Some(took));
            p.log = Some(line);
        }
        if !looped {
            backend.load.connect_stats().observe(took);
            if let Some(change) = proxy.router.report_connect(backend, true, now) {
                crate::data::health_log::log_connect_change(backend, change, &proxy.router);
            }
        }
        p.relay.handle_connected(now);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let span = conn_span(&dialing.identity);
            span.record("backend", display(&backend.id));
            span.in_scope(|| tracing::debug!(kind = p.route.kind.as_str(), "relaying"));
        }
    }

    /// Pair `idx`'s connect failed (`why`): counted against the backend,
    /// then the next backend the routing core gives is dialed, while
    /// attempts are left; otherwise the pair ends.
    fn fail_over<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        idx: usize,
        why: ConnectFailure,
        error: Option<io::Error>,
        now: Instant,
    ) {
        let Some(Some(Entry::Pair(p))) = self.slab.get_mut(idx) else {
            return;
        };
        let Some(dialing) = p.dialing.as_deref_mut() else {
            return;
        };
        // A connect reset by this edge itself (it came back: a loop) ends
        // the client with a reset when no other backend takes it: its
        // transfer must not look complete.
        let looped = p._registered.as_ref().is_some_and(|r| r.came_back());
        let result = match connect_failed(proxy, dialing, &p.route, why, error, now) {
            Err(result) => Err(Refusal::Ends(result)),
            Ok(()) => attempt(proxy, dialing, false),
        };
        match result {
            Ok((route, mut stream, registered)) => {
                p.generation ^= 1;
                let polled = self.poll.registry().register(
                    &mut stream,
                    token(idx, p.generation, Side::Backend),
                    Interest::READABLE | Interest::WRITABLE,
                );
                if polled.is_ok() {
                    // The old socket closes here (and leaves the epoll set).
                    p.backend = stream;
                    p._registered = registered;
                    p.route = route;
                    p.relay.handle_new_backend();
                    return;
                }
                reset(&p.client);
                refuse(proxy, dialing.log.take(), ConnResult::LocalError);
            }
            Err(Refusal::Ends(result)) => {
                if result == ConnResult::LocalError || looped {
                    reset(&p.client);
                }
                refuse(proxy, dialing.log.take(), result);
            }
            // Only a first decision waits for a lease.
            Err(Refusal::LeasePending) => {
                refuse(proxy, dialing.log.take(), ConnResult::ConnectFailed);
            }
        }
        self.release(idx);
    }

    /// Slab entry `idx` at a sweep: a PROXY header or a connect past its
    /// deadline, a relay idle for its timeout.
    pub(super) fn timeout<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        idx: usize,
        now: Instant,
    ) {
        match self.slab.get_mut(idx) {
            Some(Some(Entry::Header(pe))) if now >= pe.deadline => {
                tracing::debug!(peer = %pe.peer, result = pe.timed_out().as_str(), "nothing whole within {:?}", pe.options.proxy_header_timeout);
                refuse(proxy, pe.log.take(), pe.timed_out());
                self.release(idx);
            }
            Some(Some(Entry::Pair(p))) => match p.dialing.as_deref() {
                Some(d) => {
                    if now >= d.deadline {
                        self.fail_over(proxy, idx, ConnectFailure::Timeout, None, now);
                    }
                }
                None => {
                    p.relay.handle_timeout(now);
                    if p.relay.is_over() {
                        self.drive(proxy, idx);
                    }
                }
            },
            _ => {}
        }
    }
}

/// A client ready to be routed.
pub(super) struct Arrival<'a> {
    /// The accepted socket.
    pub(super) client: TcpStream,
    /// Registered already (under its PROXY header's token).
    pub(super) registered: bool,
    /// What the listener serves.
    pub(super) service: &'a Service,
    /// The settings snapshot taken at accept.
    pub(super) options: &'a Arc<ProxyOptions>,
    /// The connection's slot of the global limit.
    pub(super) slot: Slot,
    /// Counts the connection among the open ones.
    pub(super) token: TaskTrackerToken,
    /// The access-log line, when the log is on.
    pub(super) log: Option<Box<LogLine>>,
}

/// Who a client that sent no PROXY header is: its peer, located.
fn identity_of<P: DataPath>(
    proxy: &Proxy<TcpDialer, P>,
    client: &TcpStream,
    peer: SocketAddr,
    listener: Option<SocketAddr>,
    options: &ProxyOptions,
) -> Identity {
    // The address the client reached: asked of the socket only for a
    // PROXY header to the backend, as the tokio pipeline does.
    let destination = if options.send_proxy_protocol.is_some() {
        client.local_addr().ok().or(listener)
    } else {
        listener
    }
    .unwrap_or(peer);
    let ip = peer.ip().to_canonical();
    Identity {
        source: peer,
        destination,
        early: Vec::new(),
        ip,
        lookup: proxy.geoip.lookup(ip),
    }
}

/// Puts who the client is in its access-log line, if it has one.
pub(super) fn note_identity(line: Option<&mut LogLine>, identity: &Identity) {
    if let Some(line) = line {
        line.identify(identity.source, identity.lookup.country());
    }
}

/// Counts a refused connection, and writes its access-log line.
pub(super) fn refuse<P: DataPath>(
    proxy: &Proxy<TcpDialer, P>,
    line: Option<Box<LogLine>>,
    result: ConnResult,
) {
    proxy.conns.record(result);
    if let (Some(line), Some(log)) = (line, &proxy.access_log) {
        line.refused(log, result);
    }
}
