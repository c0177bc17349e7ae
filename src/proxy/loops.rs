//! Connection loops at run time: a backend address that leads back to this
//! edge (a DNAT rule or an address alias to itself, a row the reload-time
//! check could not see through) would make every client connection open
//! another one through the edge, without end.
//!
//! [`OwnConnections`] knows the local address of every connection the edge
//! has open to a backend, and which backend it went to; the admission stage
//! asks it about each accepted peer. A client whose address is one of them
//! is this edge itself: the connection is reset, counted `loop`, and the
//! backend is ejected for the longest backoff. The registration is made when
//! a connect returns, so an accept that races it can slip through once; the
//! next hop of the loop is caught (a chain ends within a hop or two).
//! Active health checks close their connection as soon as it is made and
//! register nothing: a check that loops is caught one hop later, on the
//! proxied connection it causes.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;
use geoedge_routing::BackendId;
use tokio::net::TcpStream;

/// The local addresses of the edge's open backend connections.
#[derive(Debug, Default)]
pub struct OwnConnections {
    /// Local address (canonical IP) → the backend it is connected to.
    open: DashMap<SocketAddr, BackendId>,
}

/// A backend connection's entry in [`OwnConnections`], removed when this
/// drops (when the relay ends).
#[derive(Debug)]
pub struct Registered {
    /// The registry the entry is in.
    own: Arc<OwnConnections>,
    /// The entry's key.
    addr: SocketAddr,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.own.open.remove(&self.addr);
    }
}

/// The form both sides of a loop agree on: an IPv4-mapped address (a peer
/// seen by a dual-stack listener) as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl OwnConnections {
    /// Records `stream`, connected to `backend`, until the returned guard
    /// drops. `None` when the socket has no local address to record (it
    /// failed already; the relay will see that).
    pub fn register(
        self: &Arc<Self>,
        stream: &TcpStream,
        backend: &BackendId,
    ) -> Option<Registered> {
        let addr = canonical(stream.local_addr().ok()?);
        self.open.insert(addr, backend.clone());
        Some(Registered {
            own: Arc::clone(self),
            addr,
        })
    }

    /// The backend that a connection from `peer` came through, when `peer`
    /// is one of this edge's own backend connections.
    pub fn origin(&self, peer: SocketAddr) -> Option<BackendId> {
        self.open.get(&canonical(peer)).map(|b| b.value().clone())
    }
}
