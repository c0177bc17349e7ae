//! The epoll worker (`engine = "epoll"`): one edge-triggered epoll loop
//! (mio) per worker thread accepts its clients, routes them, dials their
//! backends and relays their bytes, with no async runtime and no task per
//! connection. Each connection is an entry of the worker's slab, its two
//! sockets registered once (closing a socket takes it out of the epoll
//! set: no `epoll_ctl(DEL)`), its relay a
//! [`PairRelay`](crate::data::pair::PairRelay) that says what IO to do.
//! Connect and idle timeouts, the PROXY header's deadline and paused
//! listeners are swept every [`SWEEP`] (no timer per connection), which is
//! also when the worker's heartbeat is called.
//!
//! The stages are the tokio pipeline's ([`crate::data::proxy::stages`]),
//! the same shared state ([`Proxy`]) and the same counters, logs and
//! metrics: the global limit's slot, the loop check, a trusted source's
//! PROXY header, the GeoIP lookup, the ClientHello's server name on an
//! `sni_listen` listener, the per-client limits (the same table: a
//! client's connections count the same on either engine), the routing
//! core's decision, the connect with failover, passive health, the
//! backend's PROXY header, the relay with its half-close and idle rules,
//! the access log's line (its parts filled in as the tokio stages fill
//! them, its byte counts the relay's), the open-connection count and the
//! drain, and the wait for another POP's lease: a client whose decision
//! found the better backend's lease being asked for waits in the slab, no
//! socket registered, until a lease answer (every answer wakes the loop:
//! [`LeaseWait::on_answer`](crate::data::lease_wait::LeaseWait::on_answer))
//! or its patience runs out, and is decided for again, as the tokio
//! pipeline does. Bulk transfers splice through pipes from the worker
//! thread's pool, by the tokio relay's rule (unless `--splice off`; see
//! [`crate::data::pair`]).
//!
//! The loop dials backends itself, as [`TcpDialer`] does (the dialer seam
//! of [`Proxy`] is the tokio pipeline's), so it runs a
//! `Proxy<TcpDialer, _>` only.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::sync::watch;

use crate::data::admission::{AcceptError, BACKLOG};
use crate::data::dialer::TcpDialer;
use crate::data::pair::BufPool;
use crate::data::proxy::{DataPath, Proxy, Service};

mod conn;
mod dial;
mod reading;

use conn::Entry;

/// How often the loop sweeps its connections for timeouts (and beats).
pub const SWEEP: Duration = Duration::from_millis(100);

/// Relay buffer per direction while bytes wait, as the tokio relay's.
const BUFFER: usize = 32 * 1024;

/// Spare relay buffers a worker keeps.
const POOL_CAP: usize = 64;

/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// The waker's token.
const WAKER: Token = Token(usize::MAX);

/// Listener `i`'s token is `LISTENERS - i`.
const LISTENERS: usize = usize::MAX - 1;

/// What the loop answers to besides its sockets.
pub struct Control {
    /// Turns true when the edge stops accepting.
    pub stop: watch::Receiver<bool>,
    /// Turns true when the drain is over: what is still open is reset.
    pub done: watch::Receiver<bool>,
    /// Called once the worker has stopped accepting.
    pub stopped: Box<dyn FnMut() + Send>,
    /// Called at every sweep: the worker's heartbeat.
    pub beat: Box<dyn FnMut(Instant) + Send>,
}

/// A listener and what it serves.
struct Listener {
    /// The socket.
    socket: TcpListener,
    /// Its address, when known.
    local: Option<SocketAddr>,
    /// What it serves.
    service: Service,
    /// After an accept error, no accept before this.
    paused_until: Option<Instant>,
}

/// One worker's loop, built before its thread runs it (so that its
/// [`Waker`] can be handed to whoever stops it).
pub struct EventLoop {
    /// The epoll instance.
    poll: Poll,
    /// The client listeners (emptied when the worker stops accepting).
    listeners: Vec<Listener>,
    /// Connections by slab index (see [`conn::token`]).
    slab: Vec<Option<Entry>>,
    /// Free slab indexes.
    free: Vec<usize>,
    /// Indexes freed while a batch of events is handled, free after it
    /// (a stale event of the batch must not reach a new connection).
    released: Vec<usize>,
    /// Relay buffers.
    pool: BufPool,
    /// Slab indexes of the clients waiting for a lease.
    leasing: Vec<usize>,
    /// Still accepting.
    accepting: bool,
}

impl EventLoop {
    /// A loop over `listeners` (non-blocking, listening), and the waker
    /// that makes it look at its [`Control`] at once.
    pub fn new(listeners: Vec<(Service, std::net::TcpListener)>) -> io::Result<(Self, Arc<Waker>)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut ls = Vec::with_capacity(listeners.len());
        for (i, (service, l)) in listeners.into_iter().enumerate() {
            let local = l.local_addr().ok();
            let mut socket = TcpListener::from_std(l);
            poll.registry()
                .register(&mut socket, Token(LISTENERS - i), Interest::READABLE)?;
            ls.push(Listener {
                socket,
                local,
                service,
                paused_until: None,
            });
        }
        Ok((
            EventLoop {
                poll,
                listeners: ls,
                slab: Vec::new(),
                free: Vec::new(),
                released: Vec::new(),
                pool: BufPool::new(BUFFER, POOL_CAP),
                leasing: Vec::new(),
                accepting: true,
            },
            waker,
        ))
    }

    /// Runs until the drain is over: accepting until `control.stop` (then
    /// what the kernel has queued), serving until `control.done` or until
    /// nothing is left, then resetting whatever is still open.
    pub fn run<P: DataPath>(
        mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        mut control: Control,
    ) -> io::Result<()> {
        for l in &self.listeners {
            proxy.own.listening_on(l.local);
        }
        let mut events = Events::with_capacity(EVENTS);
        let mut ready: Vec<usize> = Vec::with_capacity(self.listeners.len());
        let mut next_sweep = Instant::now() + SWEEP;
        loop {
            if self.accepting && *control.stop.borrow() {
                self.stop_accepting(proxy);
                (control.stopped)();
            }
            if !self.accepting && (*control.done.borrow() || self.slab.iter().all(Option::is_none))
            {
                break;
            }
            // A client waiting for a lease is decided for again at its
            // deadline at the latest.
            let wait = match self.lease_deadline() {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(SWEEP),
                None => SWEEP,
            };
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + SWEEP;
                (control.beat)(now);
                self.sweep(proxy, now);
            }
            if !self.leasing.is_empty() {
                self.resume_leasing(proxy, now);
            }
            // The batch's connections first, then its listeners: a
            // connection of this edge's own that comes back through a
            // backend is accepted after its connect's completion is seen
            // (the kernel completes that connect before it queues the
            // connection that came back), so the loop's ejection of that
            // backend is not undone by the connect's success.
            ready.clear();
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    continue;
                }
                if t.0 > LISTENERS - self.listeners.len() && t.0 <= LISTENERS {
                    ready.push(LISTENERS - t.0);
                    continue;
                }
                self.handle_event(proxy, ev, now);
            }
            for &i in &ready {
                self.accept(proxy, i, usize::MAX, now);
            }
            self.free.append(&mut self.released);
        }
        // The drain is over: what is left is cut, with resets.
        for idx in 0..self.slab.len() {
            if let Some(entry) = self.slab[idx].take() {
                entry.abort(&mut self.pool, proxy.access_log.as_ref());
            }
        }
        Ok(())
    }

    /// Accepts what listener `i` has queued, until it would block (its
    /// readiness is edge-triggered: stopping earlier would leave the rest
    /// waiting for the next client's edge) or `most` are taken. An error other than an aborted
    /// connection pauses the listener (see [`AcceptError::pause`]); the
    /// sweep resumes it.
    fn accept<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        i: usize,
        most: usize,
        now: Instant,
    ) -> usize {
        let mut taken = 0;
        while taken < most {
            let Some(l) = self.listeners.get_mut(i) else {
                return taken;
            };
            if l.paused_until.is_some_and(|t| now < t) {
                return taken;
            }
            l.paused_until = None;
            let (client, peer) = match l.socket.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return taken,
                Err(e) => {
                    let kind = AcceptError::classify(&e);
                    proxy.limit.count_accept_error(kind);
                    let pause = kind.pause();
                    if let Some(suppressed) = proxy.failures.accept.check(now) {
                        tracing::warn!(
                            suppressed,
                            reason = kind.as_str(),
                            "accept failed: {e}; pausing {:?}",
                            pause.unwrap_or_default()
                        );
                    }
                    match pause {
                        None => continue,
                        Some(pause) => {
                            l.paused_until = Some(now + pause);
                            return taken;
                        }
                    }
                }
            };
            taken += 1;
            let (local, service) = (l.local, l.service.clone());
            self.admit(proxy, client, peer, local, &service, now);
        }
        taken
    }

    /// Takes what the kernel has queued on every listener (at most a full
    /// backlog each: this ends even under a flood), then closes them.
    fn stop_accepting<P: DataPath>(&mut self, proxy: &Arc<Proxy<TcpDialer, P>>) {
        let now = Instant::now();
        for i in 0..self.listeners.len() {
            self.listeners[i].paused_until = None;
            let taken = self.accept(proxy, i, BACKLOG as usize, now);
            tracing::info!(listener = ?self.listeners[i].local, taken, "stopped accepting");
        }
        self.listeners.clear();
        self.accepting = false;
    }

    /// Ends what timed out (a connect fails over), resumes paused
    /// listeners.
    fn sweep<P: DataPath>(&mut self, proxy: &Arc<Proxy<TcpDialer, P>>, now: Instant) {
        for idx in 0..self.slab.len() {
            self.timeout(proxy, idx, now);
        }
        for i in 0..self.listeners.len() {
            if self.listeners[i].paused_until.is_some_and(|t| now >= t) {
                self.accept(proxy, i, usize::MAX, now);
            }
        }
        self.free.append(&mut self.released);
    }

    /// A free slab index.
    fn vacant(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slab.push(None);
            self.slab.len() - 1
        })
    }

    /// Frees slab index `idx` (after the current batch).
    fn release(&mut self, idx: usize) {
        self.slab[idx] = None;
        self.released.push(idx);
    }
}
