//! The WireGuard device (feature `io`): a TUN interface, a UDP socket and
//! the `wg` configuration socket, driven by tokio around the sans-IO
//! [`Engine`].
//!
//! Three tasks move packets: TUN → engine → UDP, UDP → engine → TUN (up to
//! 32 datagrams per `recvmmsg`, with the flush of packets queued behind a
//! handshake), and a 100 ms timer tick;
//! a fourth serves `/var/run/wireguard/<name>.sock`. They share the engine
//! behind one `std::sync::Mutex` held only for the synchronous engine call,
//! never across an `.await` (the guard is not `Send`, so the compiler holds
//! us to it). The UDP socket has 4 MiB send and receive buffers and is
//! dual-stack when the host has IPv6 (IPv4 peers are shown and kept as IPv4
//! addresses).
//!
//! Dropping the [`Device`] aborts its tasks (which closes the TUN: a TUN the
//! device created disappears with it) and removes its configuration socket;
//! [`Device::shutdown`] does the same and waits for the tasks to end.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::batch::RecvBatch;
use crate::engine::{Action, Engine, EngineStats, MAX_BUFFER};
use crate::peer::{InterfaceConfig, PeerConfig};
use crate::peers::{ConfigError, Peers, Reconciled};
use crate::uapi;
use crate::uapi_socket::UapiSocket;

/// Where `wg` looks for configuration sockets.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// The UDP socket's send and receive buffer size.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// How often peers' timers run.
pub const TICK: Duration = Duration::from_millis(100);

/// How the device gets its TUN interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunSetup {
    /// Create it (named `name`, given `addresses` and `mtu`, brought up);
    /// it disappears with the device.
    Create {
        /// The interface's addresses (one IPv4 and any number of IPv6).
        addresses: Vec<IpNet>,
        /// The MTU (1420 suits WireGuard over a 1500-byte path).
        mtu: u16,
    },
    /// Attach to an existing (persistent) TUN interface named `name`,
    /// configured by someone else.
    Attach,
}

/// What a device is made of.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The interface name (at most 15 bytes; unique on the host, since the
    /// configuration socket directory is shared by all network namespaces).
    pub name: String,
    /// Our private key and listen port.
    pub interface: InterfaceConfig,
    /// The peers to start with.
    pub peers: Vec<PeerConfig>,
    /// How to get the TUN.
    pub tun: TunSetup,
    /// Where to create the configuration socket (`None`: no socket); usually
    /// [`UAPI_DIR`].
    pub uapi_dir: Option<PathBuf>,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The TUN could not be created or opened.
    #[error("TUN {name}: {source}")]
    Tun {
        /// The interface name.
        name: String,
        /// The error.
        source: io::Error,
    },
    /// The UDP socket could not be set up.
    #[error("UDP socket on port {port}: {source}")]
    Udp {
        /// The port asked for.
        port: u16,
        /// The error.
        source: io::Error,
    },
    /// The configuration socket could not be created.
    #[error("configuration socket {path}: {source}")]
    Uapi {
        /// Its path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The peers were refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the tasks share.
pub(crate) struct Shared {
    pub(crate) engine: Mutex<Engine>,
    pub(crate) udp: UdpSocket,
    /// The bound port.
    pub(crate) port: u16,
    /// Whether the socket is IPv6 (dual-stack): IPv4 peers are addressed as
    /// IPv4-mapped IPv6 addresses on the wire.
    pub(crate) v6: bool,
}

impl Shared {
    /// The engine; a task that panicked while holding it does not stop the
    /// others (the engine's state stays consistent between calls).
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) {
        // IPv4 peers as IPv4-mapped IPv6 addresses on a dual-stack socket.
        let to = match (self.v6, to) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => to,
        };
        if let Err(e) = self.udp.send_to(datagram, to).await {
            tracing::debug!(%to, error = %e, "wireguard: UDP send failed");
        }
    }

    /// The answer to `get=1`.
    #[allow(clippy::disallowed_methods)] // adapter: stamps the report with both clocks
    pub(crate) fn render_get(&self) -> String {
        let engine = self.engine();
        uapi::render_get(engine.peers(), self.port, Instant::now(), SystemTime::now())
    }

    /// Applies a `set=1`; returns the errno to answer.
    #[allow(clippy::disallowed_methods)] // adapter: the reconcile time
    pub(crate) fn apply_set(&self, set: &uapi::SetRequest) -> i32 {
        if set.listen_port.is_some_and(|p| p != self.port) {
            tracing::warn!(
                "wireguard: changing the listen port of a running device is not supported"
            );
            return uapi::EINVAL;
        }
        if let Some(mark) = set.fwmark {
            if let Err(e) = socket2::SockRef::from(&self.udp).set_mark(mark) {
                tracing::warn!(error = %e, "wireguard: setting fwmark failed");
                return uapi::EINVAL;
            }
        }
        let result = set.apply(self.engine().peers_mut(), Instant::now());
        match result {
            Ok(done) => {
                tracing::info!(?done, "wireguard: configuration changed");
                0
            }
            Err(e) => {
                tracing::warn!(error = %e, "wireguard: configuration refused");
                e.errno()
            }
        }
    }
}

/// A running WireGuard device.
pub struct Device {
    name: String,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    uapi: Option<UapiSocket>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name)
            .field("port", &self.shared.port)
            .finish_non_exhaustive()
    }
}

fn open_tun(name: &str, setup: &TunSetup) -> io::Result<AsyncDevice> {
    let mut builder = DeviceBuilder::new().name(name);
    if let TunSetup::Create { addresses, mtu } = setup {
        builder = builder.mtu(*mtu);
        let mut v4_done = false;
        for net in addresses {
            match net {
                IpNet::V4(n) if !v4_done => {
                    builder = builder.ipv4(n.addr(), n.prefix_len(), None);
                    v4_done = true;
                }
                IpNet::V4(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "one IPv4 address per TUN",
                    ))
                }
                IpNet::V6(n) => builder = builder.ipv6(n.addr(), n.prefix_len()),
            }
        }
    }
    builder.build_async()
}

/// A UDP socket on `port` with 4 MiB buffers: dual-stack `[::]` when the
/// host has IPv6, else `0.0.0.0`. Returns whether it is IPv6.
fn open_udp(port: u16) -> io::Result<(UdpSocket, bool)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (socket, v6) = match Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)) {
        Ok(s) => {
            s.set_only_v6(false)?;
            (s, true)
        }
        Err(_) => (
            Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?,
            false,
        ),
    };
    set_buffers(&socket);
    socket.set_nonblocking(true)?;
    let addr = if v6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)
    };
    socket.bind(&addr.into())?;
    Ok((UdpSocket::from_std(socket.into())?, v6))
}

/// 4 MiB buffers: past `net.core.rmem_max` with `SO_RCVBUFFORCE` when we
/// may (root), else as much as `SO_RCVBUF` allows.
fn set_buffers(socket: &socket2::Socket) {
    let size = SOCKET_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: setsockopt on a socket we own, with a c_int of the size given.
        let forced = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                force,
                std::ptr::addr_of!(size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        } == 0;
        if !forced {
            let _ = if plain == libc::SO_RCVBUF {
                socket.set_recv_buffer_size(SOCKET_BUFFER)
            } else {
                socket.set_send_buffer_size(SOCKET_BUFFER)
            };
        }
    }
}

/// An IPv4-mapped IPv6 sender is an IPv4 peer.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Device {
    /// Starts a device on the current tokio runtime: opens the TUN, binds
    /// the UDP socket, adds the peers, creates the configuration socket and
    /// spawns the tasks.
    pub async fn start(config: DeviceConfig) -> Result<Self, DeviceError> {
        let mut peers = Peers::new(config.interface.private_key.clone());
        #[allow(clippy::disallowed_methods)] // adapter: the reconcile time
        let now = Instant::now();
        peers.reconcile(&config.peers, now)?;
        let engine = Engine::with_peers(peers);

        let tun = open_tun(&config.name, &config.tun).map_err(|source| DeviceError::Tun {
            name: config.name.clone(),
            source,
        })?;
        let port = config.interface.listen_port;
        let (udp, v6) = open_udp(port).map_err(|source| DeviceError::Udp { port, source })?;
        let bound = udp
            .local_addr()
            .map_err(|source| DeviceError::Udp { port, source })?
            .port();
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            udp,
            port: bound,
            v6,
        });

        let uapi = match &config.uapi_dir {
            Some(dir) => {
                let path = dir.join(format!("{}.sock", config.name));
                let socket = UapiSocket::bind(&path, Arc::clone(&shared))
                    .map_err(|source| DeviceError::Uapi { path, source })?;
                Some(socket)
            }
            None => None,
        };

        let tun = Arc::new(tun);
        let tasks = vec![
            tokio::spawn(tun_to_udp(Arc::clone(&tun), Arc::clone(&shared))),
            tokio::spawn(udp_to_tun(tun, Arc::clone(&shared))),
            tokio::spawn(timers(Arc::clone(&shared))),
        ];
        tracing::info!(name = %config.name, port = bound, "wireguard: device up");
        Ok(Self {
            name: config.name,
            shared,
            tasks,
            uapi,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The UDP port the device listens on.
    pub fn listen_port(&self) -> u16 {
        self.shared.port
    }

    /// The configuration socket's path, if it has one.
    pub fn uapi_path(&self) -> Option<&Path> {
        self.uapi.as_ref().map(UapiSocket::path)
    }

    /// Moves the peers to `desired` (see [`Peers::reconcile`]).
    #[allow(clippy::disallowed_methods)] // adapter: the reconcile time
    pub fn reconcile(&self, desired: &[PeerConfig]) -> Result<Reconciled, ConfigError> {
        self.shared
            .engine()
            .peers_mut()
            .reconcile(desired, Instant::now())
    }

    /// The interface's counters.
    pub fn stats(&self) -> EngineStats {
        *self.shared.engine().stats()
    }

    /// Runs `f` on the peer table (briefly: packets wait meanwhile).
    pub fn with_peers<T>(&self, f: impl FnOnce(&Peers) -> T) -> T {
        f(self.shared.engine().peers())
    }

    /// What `wg show` would read: the answer to `get=1`.
    pub fn uapi_get(&self) -> String {
        self.shared.render_get()
    }

    /// Stops the tasks, waits for them to end (the TUN is closed when this
    /// returns) and removes the configuration socket.
    pub async fn shutdown(mut self) {
        self.uapi = None;
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads packets from the TUN one at a time and sends each datagram at
/// once. (Batching TUN reads with one `sendmmsg` per batch was measured
/// slower against wireguard-go: 80 instead of 350 Mbit/s each way.)
async fn tun_to_udp(tun: Arc<AsyncDevice>, shared: Arc<Shared>) {
    let mut packet = vec![0u8; MAX_BUFFER];
    let mut out = vec![0u8; MAX_BUFFER];
    loop {
        let n = match tun.recv(&mut packet).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "wireguard: TUN read failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let action = shared.engine().handle_tun_packet(&packet[..n], &mut out);
        if let Action::Send(t) = action {
            shared.send_to(t.datagram, t.endpoint).await;
        }
    }
}

/// Receives datagrams a batch at a time (`recvmmsg`) and hands each to the
/// engine; decrypted packets go to the TUN, handshake replies and what
/// queued behind them to the network.
#[allow(clippy::disallowed_methods)] // adapter: stamps each batch with the monotonic clock
async fn udp_to_tun(tun: Arc<AsyncDevice>, shared: Arc<Shared>) {
    let mut batch = RecvBatch::new();
    let mut out = vec![0u8; MAX_BUFFER];
    let fd = shared.udp.as_raw_fd();
    loop {
        let count = match shared
            .udp
            .async_io(Interest::READABLE, || batch.recv(fd))
            .await
        {
            Ok(n) => n,
            Err(e) => {
                // ICMP errors surface here (ECONNREFUSED); nothing is wrong
                // with the socket.
                tracing::debug!(error = %e, "wireguard: UDP receive failed");
                continue;
            }
        };
        let now = Instant::now();
        for i in 0..count {
            let (Some(from), datagram) = batch.get(i) else {
                continue;
            };
            let from = canonical(from);
            let action = shared
                .engine()
                .handle_datagram(from, datagram, &mut out, now);
            match action {
                Action::WriteTun(packet) => {
                    if let Err(e) = tun.send(packet).await {
                        tracing::debug!(error = %e, "wireguard: TUN write failed");
                    }
                }
                Action::Send(t) => {
                    let flush = t.peer.is_some();
                    shared.send_to(t.datagram, t.endpoint).await;
                    if flush {
                        flush_queued(&shared, &mut out).await;
                    }
                }
                Action::Done | Action::Drop(_) => {}
            }
        }
    }
}

/// Sends what queued behind a handshake (at most the 256 packets a `Tunn`
/// queues per peer, times a few peers).
async fn flush_queued(shared: &Shared, out: &mut [u8]) {
    for _ in 0..1024 {
        let next = shared.engine().flush(out);
        match next {
            Some(t) => shared.send_to(t.datagram, t.endpoint).await,
            None => break,
        }
    }
}

#[allow(clippy::disallowed_methods)] // adapter: the timer tick reads the monotonic clock
async fn timers(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sends = shared.engine().poll_timers(Instant::now());
        for t in sends {
            shared.send_to(&t.datagram, t.endpoint).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_udp_socket_gets_large_buffers_and_speaks_both_families() {
        let (udp, v6) = open_udp(0).unwrap();
        let sock = socket2::SockRef::from(&udp);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // Linux reports twice the size set.
            assert!(sock.recv_buffer_size().unwrap() >= SOCKET_BUFFER);
            assert!(sock.send_buffer_size().unwrap() >= SOCKET_BUFFER);
        }
        assert_eq!(udp.local_addr().unwrap().ip().is_ipv6(), v6);
        assert_eq!(
            canonical("[::ffff:192.0.2.1]:5".parse().unwrap()),
            "192.0.2.1:5".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            canonical("[fd00::1]:5".parse().unwrap()),
            "[fd00::1]:5".parse::<SocketAddr>().unwrap()
        );
    }
}
