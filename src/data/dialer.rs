//! Dialing backends: the seam where the WireGuard path plugs in. The proxy
//! asks a [`Dialer`] for a connected stream to a backend's address; the
//! plain [`TcpDialer`] connects directly (overlay addresses are routed into
//! geoedge's TUN interface by the kernel).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

/// Opens connections to backends.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr` (no timeout: the caller applies one).
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// Direct TCP connections with TCP_NODELAY.
#[derive(Debug, Clone, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // One system call: a backend connection needs no keepalive of its
        // own, since the idle timeout closes a relay that stops moving and
        // the client side's keepalive notices a vanished client.
        SockRef::from(&socket).set_tcp_nodelay(true)?;
        socket.connect(addr).await
    }
}

/// TCP_NODELAY and keepalive (60 s, then every 10 s) for client sockets:
/// set on the listeners, whose accepted sockets inherit them (so accepting
/// costs no extra system calls).
pub fn tune(socket: SockRef<'_>) -> io::Result<()> {
    socket.set_tcp_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10));
    socket.set_tcp_keepalive(&keepalive)
}
