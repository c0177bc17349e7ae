//! The edge: accepting clients, taking each one's decision from the routing
//! core, dialing with failover, and relaying.
//!
//! The listener and the shutdown signal are passed in ([`Proxy::serve`]), so
//! tests bind `127.0.0.1:0`. Accept errors never end the loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use geoedge_geoip::GeoIp;
use geoedge_routing::{AppId, BackendId, Request, Router};
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::dialer::{self, Dialer};
use crate::proxy_protocol::{self, Header, Parse, ProxyHeaderError, Version};
use crate::relay::{self, Ended};

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
    /// Connection handling options.
    pub options: ProxyOptions,
    /// Opens backend connections.
    pub dialer: D,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
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
                    let this = Arc::clone(&self);
                    let app = app.clone();
                    let local = stream.local_addr().ok().or(local);
                    self.tasks.spawn(async move {
                        this.handle(stream, peer, local, app).await;
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of
                    // spinning; nothing here ends the loop.
                    // EMFILE (24) and ENFILE (23): out of descriptors.
                    let pause = match e.raw_os_error() {
                        Some(23 | 24) => Duration::from_millis(200),
                        _ => Duration::from_millis(10),
                    };
                    tracing::warn!("accept failed: {e}; pausing {pause:?}");
                    tokio::time::sleep(pause).await;
                }
            }
        }
        tracing::info!(listener = ?local, "stopped accepting");
    }

    fn trusted(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        self.options
            .proxy_protocol_from
            .iter()
            .any(|n| n.contains(&ip))
    }

    /// One client connection, start to end.
    async fn handle(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        app: AppId,
    ) {
        let _ = dialer::tune(&client);
        let local = local.unwrap_or(peer);
        let (source, destination, early) = if self.trusted(peer) {
            match tokio::time::timeout(self.options.proxy_header_timeout, read_header(&mut client))
                .await
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
                    tracing::debug!(%peer, reason = e.reason(), "PROXY header rejected: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no PROXY header within {:?}", self.options.proxy_header_timeout);
                    return;
                }
            }
        } else {
            (peer, local, Vec::new())
        };
        let ip = source.ip().to_canonical();
        let lookup = self.geoip.lookup(ip);
        let mut tried: Vec<BackendId> = Vec::new();
        for _ in 0..self.options.connect_attempts {
            let route = match self.router.decide(
                &Request {
                    app: &app,
                    ip,
                    location: lookup.location(),
                    exclude: &tried,
                },
                std::time::Instant::now(),
            ) {
                Ok(route) => route,
                Err(e) => {
                    tracing::debug!(client = %source, "{e}");
                    return;
                }
            };
            let backend = Arc::clone(route.backend());
            let connected = tokio::time::timeout(
                self.options.connect_timeout,
                self.dialer.connect(backend.addr),
            )
            .await;
            let stream = match connected {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(backend = %backend.id, "connect failed: {e}");
                    tried.push(backend.id.clone());
                    continue; // `route` drops here: the slot is released.
                }
                Err(_) => {
                    tracing::debug!(backend = %backend.id, "connect timed out");
                    tried.push(backend.id.clone());
                    continue;
                }
            };
            let mut first = Vec::new();
            if let Some(version) = self.options.send_proxy_protocol {
                version.encode(source, destination, &mut first);
            }
            first.extend_from_slice(&early);
            tracing::debug!(client = %source, backend = %backend.id, kind = route.kind.as_str(), "relaying");
            match relay::relay(client, stream, &first, self.options.idle_timeout).await {
                Ended::Closed(moved) => {
                    tracing::debug!(backend = %backend.id, up = moved.up, down = moved.down, "closed")
                }
                Ended::Idle => tracing::debug!(backend = %backend.id, "idle timeout"),
                Ended::Error(e) => tracing::debug!(backend = %backend.id, "relay ended: {e}"),
            }
            // `route` (and with it the reservation) is released exactly once, here.
            drop(route);
            return;
        }
        tracing::debug!(client = %source, attempts = tried.len(), "no backend reachable");
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
