//! The device's UDP socket (feature `io`, Linux): large buffers, batched
//! receive with UDP GRO, batched send with UDP GSO, the system calls
//! through quinn-udp.
//!
//! - [`open`] binds a dual-stack socket with 4 MiB buffers and hands it to
//!   quinn-udp, which turns on UDP GRO where the kernel has it (a burst of
//!   datagrams from one sender arrives as one coalesced buffer) and finds
//!   out whether it offers UDP GSO.
//! - [`RecvBatch`] takes up to [`RECV_BATCH`] buffers per `recvmmsg` and
//!   hands them back one datagram at a time, splitting coalesced buffers by
//!   their segment size.
//! - [`SendBatch`] collects datagrams back to back in one buffer; runs of
//!   equal-sized datagrams to the same endpoint go out as one UDP GSO
//!   message each (one `sendmsg`; the kernel segments them late, or not at
//!   all when the receiver takes GRO). Where the kernel or the route
//!   refuses GSO, it falls back to one message per datagram for good.
//!
//! Every call is non-blocking and meant to run inside tokio's `async_io`,
//! which waits for readiness and clears it on `WouldBlock`. Nothing here
//! allocates after construction.
//!
//! quinn-udp replaced hand-written `recvmmsg`/`sendmmsg` and control
//! messages that were no faster (docs/benchmarks.md, "Hand-written UDP
//! batching and GRO against quinn-udp and tun-rs"). The one system call
//! left here is `setsockopt` for `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`, which
//! neither socket2 nor quinn-udp offers.

use std::io::{self, IoSliceMut};
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

/// The UDP socket's send and receive buffer size.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Buffers per `recvmmsg` (quinn-udp's batch size on Linux).
pub(crate) const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;

/// A receive buffer: the largest UDP payload (a GRO-coalesced buffer can
/// fill it).
pub(crate) const MAX_DATAGRAM: usize = 65_536;

/// Datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;

/// Bytes in one GSO message (a UDP payload must fit in 64 KiB with its
/// headers).
const GSO_MAX_BYTES: usize = 65_000;

/// The UDP socket and what the kernel lets it do.
#[derive(Debug)]
pub(crate) struct Udp {
    /// The socket, non-blocking.
    pub(crate) socket: tokio::net::UdpSocket,
    /// quinn-udp's view of the socket.
    state: UdpSocketState,
    /// Whether it is IPv6 (dual-stack): IPv4 peers are addressed as
    /// IPv4-mapped IPv6 addresses on the wire.
    pub(crate) v6: bool,
    /// Whether sends may use UDP GSO (cleared for good when the kernel
    /// refuses a GSO message).
    pub(crate) gso: AtomicBool,
    /// Whether receives may come coalesced (UDP GRO on).
    pub(crate) gro: bool,
}

/// Binds a UDP socket on `port` with [`SOCKET_BUFFER`] buffers: dual-stack
/// `[::]` when the host has IPv6, else `0.0.0.0`; UDP GSO and GRO where the
/// kernel offers them.
pub(crate) fn open(port: u16) -> io::Result<Udp> {
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
    let state = UdpSocketState::new((&socket).into())?;
    let gso = state.max_gso_segments() > 1;
    let gro = state.gro_segments() > 1;
    Ok(Udp {
        socket: tokio::net::UdpSocket::from_std(socket.into())?,
        state,
        v6,
        gso: AtomicBool::new(gso),
        gro,
    })
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: setsockopt on a live descriptor with a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [`SOCKET_BUFFER`] buffers: past `net.core.rmem_max` with
/// `SO_RCVBUFFORCE` when we may (root), else as much as `SO_RCVBUF` allows.
fn set_buffers(socket: &Socket) {
    let size = SOCKET_BUFFER as libc::c_int;
    let fd = socket.as_raw_fd();
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    }
    if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, size).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    }
}

/// An IPv4-mapped IPv6 sender is an IPv4 peer.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// `to` as the socket addresses it: IPv4 as IPv4-mapped IPv6 on a
/// dual-stack socket.
pub(crate) fn on_wire(to: SocketAddr, v6: bool) -> SocketAddr {
    match (v6, to) {
        (true, SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

/// Buffers for one `recvmmsg`.
pub(crate) struct RecvBatch {
    bufs: [Vec<u8>; RECV_BATCH],
    meta: [RecvMeta; RECV_BATCH],
    count: usize,
}

/// Where [`RecvBatch::next`] is in a batch.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cursor {
    buf: usize,
    at: usize,
}

impl RecvBatch {
    /// [`RECV_BATCH`] buffers of [`MAX_DATAGRAM`] bytes.
    pub(crate) fn new() -> Self {
        Self {
            bufs: std::array::from_fn(|_| vec![0u8; MAX_DATAGRAM]),
            meta: [RecvMeta::default(); RECV_BATCH],
            count: 0,
        }
    }

    /// Receives up to [`RECV_BATCH`] buffers from `udp` without blocking;
    /// returns how many (`WouldBlock` when none is waiting).
    pub(crate) fn recv(&mut self, udp: &Udp) -> io::Result<usize> {
        let mut slices = self.bufs.each_mut().map(|b| IoSliceMut::new(b));
        let result = udp
            .state
            .recv((&udp.socket).into(), &mut slices, &mut self.meta);
        self.count = *result.as_ref().unwrap_or(&0);
        result
    }

    /// The next datagram of the last [`RecvBatch::recv`] after `cursor`,
    /// with its sender; coalesced buffers come apart into their datagrams.
    pub(crate) fn next(&self, cursor: &mut Cursor) -> Option<(SocketAddr, &[u8])> {
        while cursor.buf < self.count {
            let i = cursor.buf;
            let meta = &self.meta[i];
            let len = meta.len.min(MAX_DATAGRAM);
            if cursor.at < len {
                let segment = if meta.stride == 0 { len } else { meta.stride };
                let end = (cursor.at + segment.max(1)).min(len);
                let datagram = &self.bufs[i][cursor.at..end];
                cursor.at = end;
                return Some((meta.addr, datagram));
            }
            cursor.buf += 1;
            cursor.at = 0;
        }
        None
    }
}
/// One datagram in a [`SendBatch`].
#[derive(Debug, Clone, Copy)]
struct Item {
    to: SocketAddr,
    start: usize,
    len: usize,
}

/// One message of a `sendmmsg`: `count` datagrams from `first`, each of
/// `segment` bytes but the last.
#[derive(Debug, Clone, Copy)]
struct Group {
    first: usize,
    count: usize,
    bytes: usize,
    segment: usize,
}

/// Datagrams back to back in one buffer, sent with one `sendmmsg`.
pub(crate) struct SendBatch {
    buf: Vec<u8>,
    used: usize,
    items: Vec<Item>,
    groups: Vec<Group>,
    /// Groups already sent.
    sent: usize,
}

impl SendBatch {
    /// A batch of at most `bytes` bytes and `items` datagrams.
    pub(crate) fn new(bytes: usize, items: usize) -> Self {
        Self {
            buf: vec![0u8; bytes],
            used: 0,
            items: Vec::with_capacity(items),
            groups: Vec::with_capacity(items),
            sent: 0,
        }
    }

    /// Whether nothing waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the batch has room for a datagram of `len` bytes.
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.items.len() < self.items.capacity() && self.buf.len() - self.used >= len
    }

    /// The free space, to write the next datagram at its start.
    pub(crate) fn tail(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..]
    }

    /// The next datagram, `len` bytes, was written at the start of
    /// [`SendBatch::tail`]; it goes to `to`.
    pub(crate) fn commit(&mut self, to: SocketAddr, len: usize) {
        debug_assert!(self.used + len <= self.buf.len());
        self.items.push(Item {
            to,
            start: self.used,
            len,
        });
        self.used += len;
    }

    /// Copies `datagram` in, for `to`; false when it does not fit.
    pub(crate) fn push(&mut self, to: SocketAddr, datagram: &[u8]) -> bool {
        if !self.fits(datagram.len()) {
            return false;
        }
        self.tail()[..datagram.len()].copy_from_slice(datagram);
        self.commit(to, datagram.len());
        true
    }

    /// Empties the batch.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.groups.clear();
        self.used = 0;
        self.sent = 0;
    }

    /// Splits the items into messages: with `gso`, runs of datagrams to the
    /// same endpoint, all of one size but a shorter last one.
    fn group(&mut self, gso: bool) {
        self.groups.clear();
        for (i, item) in self.items.iter().enumerate() {
            if gso {
                if let Some(g) = self.groups.last_mut() {
                    let last = self.items[g.first + g.count - 1];
                    if last.to == item.to
                        && last.len == g.segment
                        && item.len <= g.segment
                        && g.count < GSO_MAX_SEGMENTS
                        && g.bytes + item.len <= GSO_MAX_BYTES
                    {
                        g.count += 1;
                        g.bytes += item.len;
                        continue;
                    }
                }
            }
            self.groups.push(Group {
                first: i,
                count: 1,
                bytes: item.len,
                segment: item.len,
            });
        }
        self.sent = 0;
    }

    /// Sends what is left of the batch on `udp` without blocking, one
    /// `sendmsg` per message: `Ok` when all of it went (or was given up on:
    /// a datagram the kernel refuses for its destination is skipped and
    /// counted in `failed`), `WouldBlock` when the socket is full.
    pub(crate) fn send(&mut self, udp: &Udp, failed: &mut u64) -> io::Result<()> {
        if self.groups.is_empty() && !self.items.is_empty() {
            self.group(udp.gso.load(Ordering::Relaxed));
        }
        while self.sent < self.groups.len() {
            let g = self.groups[self.sent];
            let first = self.items[g.first];
            let transmit = Transmit {
                destination: on_wire(first.to, udp.v6),
                ecn: None,
                contents: &self.buf[first.start..first.start + g.bytes],
                segment_size: (g.count > 1).then_some(g.segment),
                src_ip: None,
            };
            // quinn-udp retries EINTR itself.
            let Err(err) = udp.state.try_send((&udp.socket).into(), &transmit) else {
                self.sent += 1;
                continue;
            };
            match err.raw_os_error() {
                _ if err.kind() == io::ErrorKind::WouldBlock => return Err(err),
                Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE) if g.count > 1 => {
                    // The kernel or the route will not segment for us:
                    // one datagram per message from now on.
                    if udp.gso.swap(false, Ordering::Relaxed) {
                        tracing::info!(error = %err, "wireguard: UDP GSO refused; sending datagrams one by one");
                    }
                    self.regroup_from(g.first);
                }
                _ => {
                    // This message's destination is refused (unreachable,
                    // an ICMP error surfacing); the others still go.
                    tracing::debug!(error = %err, "wireguard: UDP send failed");
                    *failed += g.count as u64;
                    self.sent += 1;
                }
            }
        }
        Ok(())
    }

    /// Regroups the items from `first` on without GSO.
    fn regroup_from(&mut self, first: usize) {
        self.groups.clear();
        self.sent = 0;
        for (i, item) in self.items.iter().enumerate().skip(first) {
            self.groups.push(Group {
                first: i,
                count: 1,
                bytes: item.len,
                segment: item.len,
            });
        }
    }
}

#[cfg(test)]
mod tests;
