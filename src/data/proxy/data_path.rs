//! The seam between the connection pipeline and the bytes: once a client
//! and a backend are connected, the pipeline hands the pair, the policy of
//! the connection's settings snapshot and the byte meter to a [`DataPath`],
//! and waits for it to say how the relay ended. The stages before it never
//! see how bytes move, so another data path (io_uring, a sockmap) plugs in
//! here without touching them.
//!
//! [`Relay`] is the data path geoedge runs: tokio copies, moving bulk
//! transfers by splice(2) ([`crate::data::relay`]).

use std::future::Future;

use tokio::net::TcpStream;

use crate::data::relay::{self, Ended, Meter, Policy};

/// Moves bytes between a connected client and backend until the relay ends.
pub trait DataPath: Send + Sync + 'static {
    /// Relays between `client` and `backend`: `first_up` goes to the backend
    /// before anything read from the client (a PROXY header, bytes that
    /// arrived with the client's own header), `policy` says when to stop and
    /// how to close, `meter` counts the bytes moved. Both sockets are
    /// closed when the returned future completes, reset rather than closed
    /// cleanly when the relay ended in an error (the contract of
    /// [`relay::relay`]).
    fn relay<'a>(
        &'a self,
        client: TcpStream,
        backend: TcpStream,
        first_up: &'a [u8],
        policy: Policy,
        meter: Meter<'a>,
    ) -> impl Future<Output = Ended> + Send + 'a;
}

/// The default data path: [`relay::relay`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Relay;

impl DataPath for Relay {
    fn relay<'a>(
        &'a self,
        client: TcpStream,
        backend: TcpStream,
        first_up: &'a [u8],
        policy: Policy,
        meter: Meter<'a>,
    ) -> impl Future<Output = Ended> + Send + 'a {
        relay::relay(client, backend, first_up, policy, meter)
    }
}
