//! The WireGuard device (feature `io`): a TUN interface, a UDP socket and
//! the `wg` configuration socket, driven by tokio around the sans-IO
//! [`Engine`].
//!
//! Three tasks move packets, a batch at a time:
//! - TUN → UDP: with TUN offload (`IFF_VNET_HDR`, TSO), one read brings a
//!   TCP super-packet of up to 64 KiB that tun-rs splits into MTU-sized
//!   segments; more reads are drained while the TUN has packets, up to
//!   [`TUN_BATCH`] segments. All are encrypted under one lock of the engine
//!   into one [`SendBatch`], which goes out as UDP GSO messages (one
//!   `sendmsg` each, through quinn-udp).
//! - UDP → TUN: one `recvmmsg` of up to 32 buffers (UDP GRO coalesces a
//!   sender's burst into one buffer); the datagrams are decrypted under one
//!   lock into [`TUN_BATCH`] packet buffers, which [`Coalescer`](crate::gro::Coalescer) merges
//!   back into TCP super-packets (GRO) before they are written; handshake
//!   replies and what queued behind a handshake go out as one batch.
//! - a 100 ms timer tick.
//!
//! A fourth serves `/var/run/wireguard/<name>.sock`. The tasks share the
//! engine behind one `std::sync::Mutex`, taken once per batch and never
//! held across an `.await` (the guard is not `Send`, so the compiler holds
//! us to it). Packet buffers are allocated once per task; the hot path
//! allocates nothing. Where the kernel refuses TUN offload the device runs
//! without it (one packet per read and write), and where it refuses UDP GSO
//! it sends one datagram per message.
//!
//! Dropping the [`Device`] aborts its tasks (which closes the TUN: a TUN the
//! device created disappears with it) and removes its configuration socket;
//! [`Device::shutdown`] does the same and waits for the tasks to end.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tokio::io::Interest;
use tokio::task::JoinHandle;
use tun_rs::{AsyncDevice, DeviceBuilder, VIRTIO_NET_HDR_LEN};

use crate::engine::{Action, Engine, EngineStats, MAX_BUFFER, MIN_BUFFER, OVERHEAD};
#[cfg(not(feature = "tun-rs-gro"))]
use crate::gro::Coalescer;
use crate::peer::{InterfaceConfig, PeerConfig};
use crate::peers::{ConfigError, Peers, Reconciled};
use crate::uapi;
use uapi_socket::UapiSocket;

#[allow(unsafe_code)] // umask(2) around the socket's bind
mod uapi_socket;
use crate::udp::{self, Cursor, RecvBatch, SendBatch, Udp};

pub use crate::udp::SOCKET_BUFFER;

/// Where `wg` looks for configuration sockets.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// How often peers' timers run.
pub const TICK: Duration = Duration::from_millis(100);

/// Packets (or TSO segments) handled per batch in each direction.
pub const TUN_BATCH: usize = 128;

/// The most segments one offloaded TUN read can split into (64 KiB over
/// an MTU of 1,280 is 53): a read is only drained into a batch with this
/// much room left.
const MAX_SEGMENTS_PER_READ: usize = 64;

/// Bytes of encrypted datagrams one batch holds: a full batch of
/// 1,500-byte packets, or one packet of the largest size.
const SEND_BATCH_BYTES: usize = TUN_BATCH * (1_500 + OVERHEAD) + MAX_BUFFER;

/// Headroom before each packet written to the TUN, for the virtio header
/// when offload is on.
const TUN_HEADROOM: usize = crate::gro::VNET_HDR_LEN;

const _: () = assert!(TUN_HEADROOM == VIRTIO_NET_HDR_LEN);

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

/// Why a device could not start. Each message holds its cause's text, so
/// the cause is not also its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The TUN could not be created or opened.
    #[error("TUN {name}: {error}")]
    Tun {
        /// The interface name.
        name: String,
        /// The error.
        error: io::Error,
    },
    /// The UDP socket could not be set up.
    #[error("UDP socket on port {port}: {error}")]
    Udp {
        /// The port asked for.
        port: u16,
        /// The error.
        error: io::Error,
    },
    /// The configuration socket could not be created.
    #[error("configuration socket {path}: {error}")]
    Uapi {
        /// Its path.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The peers were refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// What the tasks share.
pub(crate) struct Shared {
    pub(crate) engine: Mutex<Engine>,
    pub(crate) udp: Udp,
    /// The bound port.
    pub(crate) port: u16,
    /// Datagrams the kernel refused to send (destination unreachable).
    pub(crate) send_failures: AtomicU64,
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
        let to = udp::on_wire(to, self.udp.v6);
        if let Err(e) = self.udp.socket.send_to(datagram, to).await {
            self.send_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%to, error = %e, "wireguard: UDP send failed");
        }
    }

    /// Sends a batch (waiting while the socket is full) and empties it.
    async fn send_batch(&self, batch: &mut SendBatch) {
        if batch.is_empty() {
            return;
        }
        let mut failed = 0;
        let result = self
            .udp
            .socket
            .async_io(Interest::WRITABLE, || batch.send(&self.udp, &mut failed))
            .await;
        if let Err(e) = result {
            tracing::debug!(error = %e, "wireguard: UDP send failed");
        }
        if failed > 0 {
            self.send_failures.fetch_add(failed, Ordering::Relaxed);
        }
        batch.clear();
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
            if let Err(e) = socket2::SockRef::from(&self.udp.socket).set_mark(mark) {
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

/// Opens the TUN with offload (TSO in, GRO out) or, where the kernel
/// refuses it, without.
fn open_tun(name: &str, setup: &TunSetup) -> io::Result<AsyncDevice> {
    match open_tun_with(name, setup, true) {
        Ok(tun) => Ok(tun),
        Err(e) => {
            tracing::info!(error = %e, "wireguard: TUN offload refused; one packet per read and write");
            open_tun_with(name, setup, false)
        }
    }
}

fn open_tun_with(name: &str, setup: &TunSetup, offload: bool) -> io::Result<AsyncDevice> {
    let mut builder = DeviceBuilder::new().name(name).offload(offload);
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

        let tun = open_tun(&config.name, &config.tun).map_err(|error| DeviceError::Tun {
            name: config.name.clone(),
            error,
        })?;
        let port = config.interface.listen_port;
        let udp = udp::open(port).map_err(|error| DeviceError::Udp { port, error })?;
        let bound = udp
            .socket
            .local_addr()
            .map_err(|error| DeviceError::Udp { port, error })?
            .port();
        let shared = Arc::new(Shared {
            engine: Mutex::new(engine),
            udp,
            port: bound,
            send_failures: AtomicU64::new(0),
        });

        let uapi = match &config.uapi_dir {
            Some(dir) => {
                let path = dir.join(format!("{}.sock", config.name));
                let socket = UapiSocket::bind(&path, Arc::clone(&shared))
                    .map_err(|error| DeviceError::Uapi { path, error })?;
                Some(socket)
            }
            None => None,
        };

        let tun = Arc::new(tun);
        let offload = tun.tcp_gso();
        let tasks = vec![
            tokio::spawn(tun_to_udp(Arc::clone(&tun), Arc::clone(&shared))),
            tokio::spawn(udp_to_tun(tun, Arc::clone(&shared))),
            tokio::spawn(timers(Arc::clone(&shared))),
        ];
        tracing::info!(
            name = %config.name,
            port = bound,
            tun_offload = offload,
            udp_gso = shared.udp.gso.load(Ordering::Relaxed),
            udp_gro = shared.udp.gro,
            "wireguard: device up"
        );
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

    /// Rekeys sessions this device initiated once they are `after` old (see
    /// [`Engine::set_rekey_after`]).
    pub fn set_rekey_after(&self, after: Duration) {
        self.shared.engine().set_rekey_after(after);
    }

    /// The interface's counters.
    pub fn stats(&self) -> EngineStats {
        let engine = self.shared.engine();
        EngineStats {
            rate_limiter_sources: engine.rate_limited_sources() as u64,
            ..*engine.stats()
        }
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

/// Reads the TUN a batch at a time (one super-packet split into segments
/// with offload, else one packet per read, draining what is waiting),
/// encrypts the batch under one engine lock and sends it as one
/// `sendmmsg`.
async fn tun_to_udp(tun: Arc<AsyncDevice>, shared: Arc<Shared>) {
    let offload = tun.tcp_gso();
    // A read needs room for a whole super-packet's segments with offload,
    // one packet without.
    let room_per_read = if offload { MAX_SEGMENTS_PER_READ } else { 1 };
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + MAX_BUFFER];
    let mut bufs: Vec<Vec<u8>> = (0..TUN_BATCH).map(|_| vec![0u8; MAX_BUFFER]).collect();
    let mut sizes = vec![0usize; TUN_BATCH];
    let mut batch = SendBatch::new(SEND_BATCH_BYTES, TUN_BATCH);
    loop {
        let mut count = match tun
            .recv_multiple(&mut original, &mut bufs, &mut sizes, 0)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "wireguard: TUN read failed");
                if e.kind() != io::ErrorKind::Other {
                    // Not a malformed super-packet: do not spin on a
                    // failing descriptor.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        while TUN_BATCH - count >= room_per_read {
            match tun.try_recv_multiple(&mut original, &mut bufs[count..], &mut sizes[count..], 0) {
                Ok(n) => count += n,
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        tracing::debug!(error = %e, "wireguard: TUN read failed");
                    }
                    break;
                }
            }
        }
        let mut next = 0;
        while next < count {
            {
                let mut engine = shared.engine();
                while next < count {
                    let packet = &bufs[next][..sizes[next]];
                    if !batch.fits((packet.len() + OVERHEAD).max(MIN_BUFFER)) {
                        break;
                    }
                    next += 1;
                    let out = batch.tail();
                    let start = out.as_ptr();
                    if let Action::Send(t) = engine.handle_tun_packet(packet, out) {
                        // boringtun writes the datagram at the start of `out`.
                        debug_assert_eq!(t.datagram.as_ptr(), start);
                        let (to, len) = (t.endpoint, t.datagram.len());
                        batch.commit(to, len);
                    }
                }
            }
            shared.send_batch(&mut batch).await;
        }
    }
}

/// Receives datagrams a `recvmmsg` at a time (GRO-coalesced buffers come
/// apart into their datagrams), decrypts up to [`TUN_BATCH`] of them under
/// one engine lock, writes the packets to the TUN (TCP segments merged into
/// super-packets when offload is on), then sends handshake replies and what
/// queued behind a handshake.
#[allow(clippy::disallowed_methods)] // adapter: stamps each batch with the monotonic clock
async fn udp_to_tun(tun: Arc<AsyncDevice>, shared: Arc<Shared>) {
    let mut rx = RecvBatch::new();
    let mut packets: Vec<Vec<u8>> = (0..TUN_BATCH)
        .map(|_| Vec::with_capacity(TUN_HEADROOM + MAX_BUFFER))
        .collect();
    #[cfg(not(feature = "tun-rs-gro"))]
    let (offload, mut gro, mut write) = (
        tun.tcp_gso(),
        Coalescer::new(),
        Vec::with_capacity(TUN_BATCH),
    );
    let mut replies = SendBatch::new(SEND_BATCH_BYTES, TUN_BATCH);
    #[cfg(feature = "tun-rs-gro")]
    let mut gro_table = tun_rs::GROTable::new();
    loop {
        if let Err(e) = shared
            .udp
            .socket
            .async_io(Interest::READABLE, || rx.recv(&shared.udp))
            .await
        {
            // ICMP errors surface here (ECONNREFUSED); nothing is wrong
            // with the socket.
            tracing::debug!(error = %e, "wireguard: UDP receive failed");
            continue;
        }
        let now = Instant::now();
        let mut cursor = Cursor::default();
        let mut more = true;
        while more {
            let mut written = 0;
            {
                let mut engine = shared.engine();
                more = false;
                while written < TUN_BATCH && replies.fits(MAX_BUFFER) {
                    let Some((from, datagram)) = rx.next(&mut cursor) else {
                        break;
                    };
                    more = true;
                    let from = udp::canonical(from);
                    let buf = &mut packets[written];
                    buf.clear();
                    buf.resize(TUN_HEADROOM + datagram.len().max(MIN_BUFFER), 0);
                    match engine.handle_datagram(from, datagram, &mut buf[TUN_HEADROOM..], now) {
                        Action::WriteTun(packet) => {
                            let len = packet.len();
                            buf.truncate(TUN_HEADROOM + len);
                            written += 1;
                        }
                        Action::Send(t) => {
                            let flush = t.peer.is_some();
                            replies.push(t.endpoint, t.datagram);
                            if flush {
                                flush_into(&mut engine, &mut replies);
                            }
                        }
                        Action::Done | Action::Drop(_) => {}
                    }
                }
                if !more && engine.has_pending_flush() {
                    flush_into(&mut engine, &mut replies);
                    more = engine.has_pending_flush();
                }
            }
            #[cfg(feature = "tun-rs-gro")]
            if written > 0 {
                // tun-rs's GRO table merges and writes (the crate
                // alternative to `Coalescer`, docs/benchmarks.md).
                if let Err(e) = tun
                    .send_multiple(&mut gro_table, &mut packets[..written], TUN_HEADROOM)
                    .await
                {
                    tracing::debug!(error = %e, "wireguard: TUN write failed");
                }
            }
            #[cfg(not(feature = "tun-rs-gro"))]
            if written > 0 {
                if offload {
                    gro.coalesce(&mut packets[..written], &mut write);
                } else {
                    write.clear();
                    write.extend(0..written);
                }
                write_tun(&tun, offload, &packets, &write).await;
            }
            shared.send_batch(&mut replies).await;
        }
    }
}

/// Moves packets that queued behind a handshake into `batch`, while it has
/// room for the largest.
fn flush_into(engine: &mut Engine, batch: &mut SendBatch) {
    while batch.fits(MAX_BUFFER) {
        let Some(t) = engine.flush(batch.tail()) else {
            break;
        };
        let (to, len) = (t.endpoint, t.datagram.len());
        batch.commit(to, len);
    }
}

/// Writes the packets at indices `write` to the TUN: with offload each
/// buffer starts with its virtio header (a super-packet's, or an empty
/// one), without it the packet after the headroom goes alone.
#[cfg_attr(feature = "tun-rs-gro", allow(dead_code))]
async fn write_tun(tun: &AsyncDevice, offload: bool, packets: &[Vec<u8>], write: &[usize]) {
    let from = if offload { 0 } else { TUN_HEADROOM };
    for &i in write {
        if let Err(e) = tun.send(&packets[i][from..]).await {
            tracing::debug!(error = %e, "wireguard: TUN write failed");
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
