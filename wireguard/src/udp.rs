//! The device's UDP socket (feature `io`, Linux): large buffers, batched
//! receive with UDP GRO, batched send with UDP GSO.
//!
//! - [`open`] binds a dual-stack socket with 4 MiB buffers and turns on
//!   UDP GRO where the kernel has it, so that a burst of datagrams from one
//!   sender arrives as one coalesced buffer.
//! - [`RecvBatch`] takes up to [`RECV_BATCH`] buffers per `recvmmsg` and
//!   hands them back one datagram at a time, splitting coalesced buffers by
//!   their segment size.
//! - [`SendBatch`] collects datagrams back to back in one buffer and sends
//!   them with one `sendmmsg`: runs of equal-sized datagrams to the same
//!   endpoint go out as one UDP GSO message each (the kernel segments them
//!   late, or not at all when the receiver takes GRO). Where the kernel or
//!   the route refuses GSO, it falls back to one message per datagram for
//!   good.
//!
//! Every call is non-blocking and meant to run inside tokio's `async_io`,
//! which waits for readiness and clears it on `WouldBlock`. Nothing here
//! allocates after construction.
//!
//! With the feature `quinn-udp`, the system calls (`recvmmsg`, the sends
//! with their GSO control message, the GSO and GRO socket options) are
//! quinn-udp's instead ([`quinn`]): the crate alternative measured against
//! this code (docs/benchmarks.md). The batches, their grouping into GSO
//! messages and the socket's buffers are the same in both.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

/// The UDP socket's send and receive buffer size.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Buffers per `recvmmsg`.
pub(crate) const RECV_BATCH: usize = 32;

/// A receive buffer: the largest UDP payload (a GRO-coalesced buffer can
/// fill it).
pub(crate) const MAX_DATAGRAM: usize = 65_536;

/// Messages per `sendmmsg`.
const SEND_MESSAGES: usize = 64;

/// Datagrams in one GSO message (the kernel's `UDP_MAX_SEGMENTS`).
const GSO_MAX_SEGMENTS: usize = 64;

/// Bytes in one GSO message (a UDP payload must fit in 64 KiB with its
/// headers).
const GSO_MAX_BYTES: usize = 65_000;

/// Room for one `cmsghdr` carrying an `int`, 8-byte aligned.
const CMSG_ROOM: usize = 4;

/// The UDP socket and what the kernel lets it do.
#[derive(Debug)]
pub(crate) struct Udp {
    /// quinn-udp's view of the socket (what the kernel offers, its GSO
    /// fallback).
    #[cfg(feature = "quinn-udp")]
    pub(crate) state: quinn_udp::UdpSocketState,
    /// The socket, non-blocking.
    pub(crate) socket: tokio::net::UdpSocket,
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
    #[cfg(feature = "quinn-udp")]
    {
        quinn::open(socket, v6)
    }
    #[cfg(not(feature = "quinn-udp"))]
    {
        let fd = socket.as_raw_fd();
        // UDP GSO is there when the kernel knows the option (4.18+).
        let gso = getsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
        let gro = setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        Ok(Udp {
            socket: tokio::net::UdpSocket::from_std(socket.into())?,
            v6,
            gso: AtomicBool::new(gso),
            gro,
        })
    }
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

#[cfg_attr(feature = "quinn-udp", allow(dead_code))]
fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a live descriptor into a c_int of the size given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            std::ptr::addr_of_mut!(value).cast(),
            std::ptr::addr_of_mut!(len),
        )
    };
    if rc == 0 {
        Ok(value)
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
    lens: [usize; RECV_BATCH],
    /// The GRO segment size of each buffer (its length when not coalesced).
    segments: [usize; RECV_BATCH],
    addrs: [Option<SocketAddr>; RECV_BATCH],
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
            lens: [0; RECV_BATCH],
            segments: [0; RECV_BATCH],
            addrs: [None; RECV_BATCH],
            count: 0,
        }
    }

    /// Receives up to [`RECV_BATCH`] buffers from `udp` without blocking;
    /// returns how many (`WouldBlock` when none is waiting).
    pub(crate) fn recv(&mut self, udp: &Udp) -> io::Result<usize> {
        #[cfg(feature = "quinn-udp")]
        {
            quinn::recv(self, udp)
        }
        #[cfg(not(feature = "quinn-udp"))]
        {
            self.recvmmsg(udp.socket.as_raw_fd())
        }
    }

    /// [`RecvBatch::recv`] with one `recvmmsg` on `fd`.
    #[cfg_attr(feature = "quinn-udp", allow(dead_code))]
    fn recvmmsg(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut names: [libc::sockaddr_storage; RECV_BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; RECV_BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; RECV_BATCH] = unsafe { zeroed() };
        let mut controls = [[0u64; CMSG_ROOM]; RECV_BATCH];
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            iovs[i].iov_base = buf.as_mut_ptr().cast();
            iovs[i].iov_len = buf.len();
            let hdr = &mut hdrs[i].msg_hdr;
            hdr.msg_name = std::ptr::addr_of_mut!(names[i]).cast();
            hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_iov = std::ptr::addr_of_mut!(iovs[i]);
            hdr.msg_iovlen = 1;
            hdr.msg_control = controls[i].as_mut_ptr().cast();
            hdr.msg_controllen = size_of::<[u64; CMSG_ROOM]>() as _;
        }
        // SAFETY: every header points at a live buffer, iovec, address slot
        // and control buffer of the sizes given, all outliving the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let len = (hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            self.lens[i] = len;
            self.segments[i] = gro_segment(&hdrs[i].msg_hdr).unwrap_or(len).max(1);
            let mut storage = SockAddrStorage::zeroed();
            // SAFETY: the storage is a sockaddr_storage, and the kernel filled
            // `names[i]` with `msg_namelen` bytes of an address.
            let addr = unsafe {
                *storage.view_as::<libc::sockaddr_storage>() = names[i];
                SockAddr::new(storage, hdrs[i].msg_hdr.msg_namelen)
            };
            self.addrs[i] = addr.as_socket();
        }
        self.count = n;
        Ok(n)
    }

    /// The next datagram of the last [`RecvBatch::recv`] after `cursor`,
    /// with its sender (`None` for a sender that is not an IP address);
    /// coalesced buffers come apart into their datagrams.
    pub(crate) fn next(&self, cursor: &mut Cursor) -> Option<(Option<SocketAddr>, &[u8])> {
        while cursor.buf < self.count {
            let i = cursor.buf;
            let len = self.lens[i];
            if cursor.at < len {
                let end = (cursor.at + self.segments[i]).min(len);
                let datagram = &self.bufs[i][cursor.at..end];
                cursor.at = end;
                return Some((self.addrs[i], datagram));
            }
            cursor.buf += 1;
            cursor.at = 0;
        }
        None
    }
}

/// The segment size of a GRO-coalesced receive, from its control message.
#[cfg_attr(feature = "quinn-udp", allow(dead_code))]
fn gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    // SAFETY: the header's control buffer was filled by the kernel, and
    // the CMSG macros stay within `msg_controllen`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == libc::UDP_GRO {
                let value: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return usize::try_from(value).ok().filter(|v| *v > 0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
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

    /// Sends what is left of the batch on `udp` without blocking: `Ok` when
    /// all of it went (or was given up on: a datagram the kernel refuses
    /// for its destination is skipped and counted in `failed`),
    /// `WouldBlock` when the socket is full.
    pub(crate) fn send(&mut self, udp: &Udp, failed: &mut u64) -> io::Result<()> {
        if self.groups.is_empty() && !self.items.is_empty() {
            self.group(udp.gso.load(Ordering::Relaxed));
        }
        #[cfg(feature = "quinn-udp")]
        {
            quinn::send(self, udp, failed)
        }
        #[cfg(not(feature = "quinn-udp"))]
        {
            self.sendmmsg(udp, failed)
        }
    }

    /// [`SendBatch::send`] with `sendmmsg`, a GSO control message on each
    /// message of more than one datagram.
    #[cfg_attr(feature = "quinn-udp", allow(dead_code))]
    fn sendmmsg(&mut self, udp: &Udp, failed: &mut u64) -> io::Result<()> {
        let fd = udp.socket.as_raw_fd();
        while self.sent < self.groups.len() {
            let count = (self.groups.len() - self.sent).min(SEND_MESSAGES);
            // SAFETY: all-zero is a valid value for these plain C structs.
            let mut names: [libc::sockaddr_storage; SEND_MESSAGES] = unsafe { zeroed() };
            // SAFETY: as above.
            let mut iovs: [libc::iovec; SEND_MESSAGES] = unsafe { zeroed() };
            // SAFETY: as above.
            let mut hdrs: [libc::mmsghdr; SEND_MESSAGES] = unsafe { zeroed() };
            let mut controls = [[0u64; CMSG_ROOM]; SEND_MESSAGES];
            for k in 0..count {
                let g = self.groups[self.sent + k];
                let first = self.items[g.first];
                let to = SockAddr::from(on_wire(first.to, udp.v6));
                // SAFETY: a SockAddr's storage holds `len` valid bytes, and
                // sockaddr_storage is large enough for any address.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        to.as_ptr().cast::<u8>(),
                        std::ptr::addr_of_mut!(names[k]).cast::<u8>(),
                        to.len() as usize,
                    );
                }
                iovs[k].iov_base = self.buf[first.start..].as_mut_ptr().cast();
                iovs[k].iov_len = g.bytes;
                let hdr = &mut hdrs[k].msg_hdr;
                hdr.msg_name = std::ptr::addr_of_mut!(names[k]).cast();
                hdr.msg_namelen = to.len();
                hdr.msg_iov = std::ptr::addr_of_mut!(iovs[k]);
                hdr.msg_iovlen = 1;
                if g.count > 1 {
                    hdr.msg_control = controls[k].as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE is a size computation.
                    hdr.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as _;
                    // SAFETY: the control buffer holds CMSG_SPACE(2) bytes,
                    // 8-byte aligned, and is owned by this frame.
                    unsafe {
                        let cmsg = libc::CMSG_FIRSTHDR(hdr);
                        (*cmsg).cmsg_level = libc::SOL_UDP;
                        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
                        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as _;
                        std::ptr::write_unaligned(
                            libc::CMSG_DATA(cmsg).cast::<u16>(),
                            g.segment as u16,
                        );
                    }
                }
            }
            // SAFETY: every header points at a live address, iovec, control
            // buffer and datagram bytes of the sizes given, all outliving
            // the call.
            let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), count as libc::c_uint, 0) };
            if n > 0 {
                self.sent += n as usize;
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Err(err),
                Some(libc::EINTR) => continue,
                Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE)
                    if self.groups[self.sent].count > 1 =>
                {
                    // The kernel or the route will not segment for us:
                    // one datagram per message from now on.
                    if udp.gso.swap(false, Ordering::Relaxed) {
                        tracing::info!(error = %err, "wireguard: UDP GSO refused; sending datagrams one by one");
                    }
                    let rest = self.groups[self.sent].first;
                    self.regroup_from(rest);
                }
                _ => {
                    // This message's destination is refused (unreachable,
                    // an ICMP error surfacing); the others still go.
                    tracing::debug!(error = %err, "wireguard: UDP send failed");
                    *failed += self.groups[self.sent].count as u64;
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

#[cfg(feature = "quinn-udp")]
mod quinn;
#[cfg(test)]
mod tests;
