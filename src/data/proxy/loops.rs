//! Connection loops at run time: a backend address that leads back to this
//! edge (an address added to the host after the table was loaded, a row
//! the reload-time check could not see through) would make every client
//! connection open another one through the edge, without end.
//!
//! [`OwnConnections`] knows both ends of every connection the edge has open
//! to a backend, and which backend it went to; the admission stage asks it
//! about each accepted connection. A connection whose two ends are those of
//! one of them (its peer is the local end, its local end the backend's
//! address) is that very connection arriving: this edge itself. It is
//! reset, counted `loop`, and the backend is ejected for the longest
//! backoff.
//!
//! Both ends are compared, not the peer alone: the kernel gives the same
//! local port to connections to different destinations, so a client on this
//! host can share its address and port with one of the edge's backend
//! connections. The peer is looked up first (one map read per accepted
//! connection); the accepted socket's local address is asked for only when
//! the peer matches. A NAT rule that rewrites the backend's address to the
//! listener's is not seen (the two ends differ); an address alias is.
//!
//! Only a backend connection dialed to a port this edge listens on can come
//! back as one of its clients (the accepted socket's local end is a
//! listener's address), so only those are recorded: a backend on any other
//! port costs no `getsockname` and no map write, and while nothing is
//! recorded an accepted peer costs one atomic load. The listeners mark
//! their ports when they start serving ([`OwnConnections::listening_on`]);
//! a mark is never taken back (a port no longer listened on only records
//! more than it needs).
//!
//! The registration is made when a connect returns, so an accept that races
//! it can slip through once; the next hop of the loop is caught (a chain
//! ends within a hop or two). Active health checks close their connection
//! as soon as it is made and register nothing: a check that loops is caught
//! one hop later, on the proxied connection it causes.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use geoedge_routing::BackendId;
use tokio::net::TcpStream;

/// Both ends of the edge's open backend connections, kept small: an entry
/// is a 64-bit digest of the two ends (keyed by a secret of this process,
/// so no client can aim at a collision) and the backend, since every open
/// connection has one.
#[derive(Debug)]
pub struct OwnConnections {
    /// Digest of (local end, backend's address) → the backend.
    open: DashMap<u64, BackendId>,
    /// Digest of a local end in `open` → how many connections use it (the
    /// first question asked of an accepted peer while `open` has entries).
    locals: DashMap<u64, u32>,
    /// Entries of `open` whose connection was seen coming back (found by
    /// [`OwnConnections::origin`]), until they close.
    came_back: DashMap<u64, ()>,
    /// How many entries `open` has (read before any map is).
    count: AtomicUsize,
    /// The secret key of the digests.
    keys: std::collections::hash_map::RandomState,
    /// A bit per TCP port, set for the ports the edge listens on.
    ports: Box<[AtomicU64]>,
    /// Set when a listener's port was not known: every backend connection
    /// is recorded.
    any_port: AtomicBool,
}

impl Default for OwnConnections {
    fn default() -> Self {
        OwnConnections {
            open: DashMap::default(),
            locals: DashMap::default(),
            came_back: DashMap::default(),
            count: AtomicUsize::new(0),
            keys: std::collections::hash_map::RandomState::default(),
            ports: (0..(1 << 16) / 64).map(|_| AtomicU64::new(0)).collect(),
            any_port: AtomicBool::new(false),
        }
    }
}

/// A backend connection's entry in [`OwnConnections`], removed when this
/// drops (when the relay ends).
#[derive(Debug)]
pub struct Registered {
    /// The registry the entry is in.
    own: Arc<OwnConnections>,
    /// The entry's key.
    ends: u64,
    /// The key of its local end.
    local: u64,
}

impl Registered {
    /// Whether this connection was seen coming back to the edge (a
    /// connection loop): its connect's completion is not the backend's
    /// success. (The epoll worker may accept the connection that came back
    /// before it sees its own connect complete.)
    pub fn came_back(&self) -> bool {
        self.own.came_back.contains_key(&self.ends)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.own.came_back.remove(&self.ends);
        if self.own.open.remove(&self.ends).is_some() {
            self.own.count.fetch_sub(1, Ordering::Relaxed);
        }
        self.own.locals.remove_if_mut(&self.local, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// The form both sides of a loop agree on: an IPv4-mapped address (a peer
/// seen by a dual-stack listener) as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl OwnConnections {
    /// Marks the port of a listener the edge serves (`None`: its address
    /// could not be read; every backend connection is then recorded).
    pub fn listening_on(&self, local: Option<SocketAddr>) {
        match local {
            Some(a) => {
                let port = usize::from(a.port());
                self.ports[port / 64].fetch_or(1 << (port % 64), Ordering::Relaxed);
            }
            None => self.any_port.store(true, Ordering::Relaxed),
        }
    }

    /// Whether a connection to `port` could come back to a listener.
    fn listened(&self, port: u16) -> bool {
        let port = usize::from(port);
        self.ports[port / 64].load(Ordering::Relaxed) & (1 << (port % 64)) != 0
            || self.any_port.load(Ordering::Relaxed)
    }

    /// The digest of a local end.
    fn local_key(&self, local: SocketAddr) -> u64 {
        self.keys.hash_one(canonical(local))
    }

    /// The digest of both ends.
    fn ends_key(&self, local: SocketAddr, remote: SocketAddr) -> u64 {
        self.keys.hash_one((canonical(local), canonical(remote)))
    }

    /// Records `stream`, connected to `backend` at `remote` (the address it
    /// was dialed at), until the returned guard drops. `None` when nothing
    /// was recorded: `remote`'s port is not one the edge listens on (the
    /// connection cannot come back), or the socket has no local address to
    /// record (it failed already; the relay will see that).
    pub fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
        remote: SocketAddr,
        backend: &BackendId,
    ) -> Option<Registered> {
        self.register_with(|| stream.local_addr().ok(), remote, backend)
    }

    /// [`OwnConnections::register`] for a socket whose local address
    /// `local` gives (asked only when `remote`'s port is one the edge
    /// listens on).
    pub fn register_with(
        self: &Arc<Self>,
        local: impl FnOnce() -> Option<SocketAddr>,
        remote: SocketAddr,
        backend: &BackendId,
    ) -> Option<Registered> {
        if !self.listened(remote.port()) {
            return None;
        }
        let local = local()?;
        let ends = self.ends_key(local, remote);
        let local = self.local_key(local);
        if self.open.insert(ends, backend.clone()).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
            *self.locals.entry(local).or_insert(0) += 1;
        }
        Some(Registered {
            own: Arc::clone(self),
            ends,
            local,
        })
    }

    /// The backend that a connection from `peer` came through, when it is
    /// one of this edge's own backend connections; `local` gives the
    /// accepted socket's local address, asked only when `peer` is the local
    /// end of one of them.
    pub fn origin(
        &self,
        peer: SocketAddr,
        local: impl FnOnce() -> Option<SocketAddr>,
    ) -> Option<BackendId> {
        if self.count.load(Ordering::Relaxed) == 0
            || !self.locals.contains_key(&self.local_key(peer))
        {
            return None;
        }
        let ends = self.ends_key(peer, local()?);
        let backend = self.open.get(&ends).map(|b| b.value().clone())?;
        self.came_back.insert(ends, ());
        Some(backend)
    }
}
