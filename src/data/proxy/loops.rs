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
//! The registration is made when a connect returns, so an accept that races
//! it can slip through once; the next hop of the loop is caught (a chain
//! ends within a hop or two). Active health checks close their connection
//! as soon as it is made and register nothing: a check that loops is caught
//! one hop later, on the proxied connection it causes.

use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use geoedge_routing::BackendId;
use tokio::net::TcpStream;

/// Both ends of the edge's open backend connections, kept small: an entry
/// is a 64-bit digest of the two ends (keyed by a secret of this process,
/// so no client can aim at a collision) and the backend, since every open
/// connection has one.
#[derive(Debug, Default)]
pub struct OwnConnections {
    /// Digest of (local end, backend's address) → the backend.
    open: DashMap<u64, BackendId>,
    /// Digest of a local end in `open` → how many connections use it (the
    /// cheap first question asked of every accepted peer).
    locals: DashMap<u64, u32>,
    /// The secret key of the digests.
    keys: std::collections::hash_map::RandomState,
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

impl Drop for Registered {
    fn drop(&mut self) {
        self.own.open.remove(&self.ends);
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
    /// The digest of a local end.
    fn local_key(&self, local: SocketAddr) -> u64 {
        self.keys.hash_one(canonical(local))
    }

    /// The digest of both ends.
    fn ends_key(&self, local: SocketAddr, remote: SocketAddr) -> u64 {
        self.keys.hash_one((canonical(local), canonical(remote)))
    }

    /// Records `stream`, connected to `backend` at `remote` (the address it
    /// was dialed at), until the returned guard drops. `None` when the
    /// socket has no local address to record (it failed already; the relay
    /// will see that).
    pub fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
        remote: SocketAddr,
        backend: &BackendId,
    ) -> Option<Registered> {
        let local = stream.local_addr().ok()?;
        let ends = self.ends_key(local, remote);
        let local = self.local_key(local);
        if self.open.insert(ends, backend.clone()).is_none() {
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
        if !self.locals.contains_key(&self.local_key(peer)) {
            return None;
        }
        let ends = self.ends_key(peer, local()?);
        self.open.get(&ends).map(|b| b.value().clone())
    }
}
