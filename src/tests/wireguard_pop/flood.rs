//! The abuse side of the geoedge-to-geoedge tests: capturing real
//! WireGuard datagrams on a veth, and flooding a WireGuard port with
//! garbage, WireGuard-shaped, truncated, replayed and mutated datagrams.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::support::*;

/// A captured UDP datagram.
#[derive(Clone)]
pub(crate) struct Captured {
    pub(crate) src: SocketAddrV4,
    pub(crate) dst: SocketAddrV4,
    pub(crate) payload: Vec<u8>,
}

/// Captures the IPv4 UDP datagrams crossing `ifname` (both directions) with
/// a packet socket, until stopped. geoedge sends bursts as UDP GSO
/// messages, which cross a veth unsegmented: the socket asks for each
/// frame's virtio header and splits such a message into its datagrams by
/// the segment size the header carries.
pub(crate) struct Capture {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<Vec<Captured>>>,
}

impl Capture {
    pub(crate) fn start(ifname: &str) -> Capture {
        // Every protocol: outgoing frames only reach ETH_P_ALL sockets.
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as libc::c_int) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: bind with a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        // `PACKET_VNET_HDR` (linux/if_packet.h, raw packet sockets only): a
        // virtio_net_hdr before each frame; the frame is Ethernet (a veth).
        const PACKET_VNET_HDR: libc::c_int = 15;
        const VNET_HDR_LEN: usize = 10;
        const ETHERNET_LEN: usize = 14;
        const GSO_UDP_L4: u8 = 5;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_VNET_HDR,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "PACKET_VNET_HDR: {}",
            std::io::Error::last_os_error()
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setsockopt with a timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; VNET_HDR_LEN + 65536];
            while !s.load(Ordering::SeqCst) {
                // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: recvfrom into a buffer and an address of the sizes given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        std::ptr::addr_of_mut!(from).cast(),
                        &mut from_len,
                    )
                };
                if n <= (VNET_HDR_LEN + ETHERNET_LEN) as isize
                    || from.sll_protocol != (libc::ETH_P_IP as u16).to_be()
                {
                    continue;
                }
                // virtio_net_hdr: flags, gso_type, hdr_len, gso_size, ...
                let gso_type = buf[1] & 0x7f;
                let gso_size = usize::from(u16::from_ne_bytes([buf[4], buf[5]]));
                let p = &buf[VNET_HDR_LEN + ETHERNET_LEN..n as usize];
                if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 17 {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() < ihl + 8 {
                    continue;
                }
                let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
                let port = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
                let udp_len = usize::from(port(ihl + 4));
                if udp_len < 8 || p.len() < ihl + udp_len {
                    continue;
                }
                let payload = &p[ihl + 8..ihl + udp_len];
                let segment = if gso_type == GSO_UDP_L4 && gso_size > 0 {
                    gso_size
                } else {
                    payload.len().max(1)
                };
                for datagram in payload.chunks(segment) {
                    got.push(Captured {
                        src: SocketAddrV4::new(ip(12), port(ihl)),
                        dst: SocketAddrV4::new(ip(16), port(ihl + 2)),
                        payload: datagram.to_vec(),
                    });
                }
            }
            got
        });
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn finish(mut self) -> Vec<Captured> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift64*.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// What a flood sent, by kind.
#[derive(Debug, Default)]
pub(crate) struct Flood {
    pub(crate) random: usize,
    pub(crate) wg_shaped: usize,
    pub(crate) truncated: usize,
    pub(crate) replayed: usize,
    pub(crate) replayed_handshakes: usize,
    pub(crate) mutated: usize,
    pub(crate) send_errors: usize,
    pub(crate) replies: usize,
    pub(crate) elapsed: Duration,
}

/// The length a well-formed message of type `t` has (data: 32 + 16k).
pub(crate) fn wg_len(rng: &mut Rng, t: u8) -> usize {
    match t {
        1 => 148,
        2 => 92,
        3 => 64,
        _ => 32 + 16 * rng.below(90),
    }
}

/// Sends `count` garbage datagrams from `socket` to `to`: random bytes;
/// WireGuard-shaped messages (type 1..4, reserved zero, the right length,
/// random content); truncated ones; and, from `captured` (real datagrams of
/// the peer to `to`), exact replays and copies with bytes flipped.
/// Replays of handshake messages (valid MACs) are capped at 10 each: past
/// the handshake rate limit (100 per second) a valid-MAC1 initiation
/// rightly earns a cookie reply. Counts any datagram that comes back.
pub(crate) fn flood(
    socket: &UdpSocket,
    to: SocketAddr,
    count: usize,
    captured: &[Vec<u8>],
    seed: u64,
) -> Flood {
    let mut rng = Rng(seed | 1);
    let mut f = Flood::default();
    let mut buf = vec![0u8; 1500];
    let mut back = vec![0u8; 65536];
    let (data, handshakes): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) =
        captured.iter().partition(|d| d.first() == Some(&4));
    socket.set_nonblocking(true).unwrap();
    let start = Instant::now();
    for i in 0..count {
        let kind = rng.below(100);
        let len = if kind < 45 || (data.is_empty() && kind >= 75) {
            f.random += 1;
            let len = 1 + rng.below(1500);
            rng.fill(&mut buf[..len]);
            len
        } else if kind < 65 {
            f.wg_shaped += 1;
            let t = 1 + rng.below(4) as u8;
            let len = wg_len(&mut rng, t);
            rng.fill(&mut buf[..len]);
            buf[0] = t;
            buf[1..4].fill(0);
            len
        } else if kind < 75 {
            f.truncated += 1;
            let t = 1 + rng.below(4) as u8;
            let full = wg_len(&mut rng, t);
            let len = 1 + rng.below(full - 1);
            rng.fill(&mut buf[..len]);
            buf[0] = t;
            len
        } else if kind < 87
            && !handshakes.is_empty()
            && f.replayed_handshakes < 10 * handshakes.len()
        {
            // An exact replay of a handshake message, a few times over the flood.
            f.replayed_handshakes += 1;
            let d = handshakes[f.replayed_handshakes % handshakes.len()];
            buf[..d.len()].copy_from_slice(d);
            d.len()
        } else if kind < 87 {
            f.replayed += 1;
            let d = data[rng.below(data.len())];
            buf[..d.len()].copy_from_slice(d);
            d.len()
        } else {
            f.mutated += 1;
            let pool = if handshakes.is_empty() || rng.below(4) > 0 {
                &data
            } else {
                &handshakes
            };
            let d = pool[rng.below(pool.len())];
            buf[..d.len()].copy_from_slice(d);
            // Flip 1..4 bytes after the type and reserved bytes (for a
            // handshake message, inside what MAC1 covers), or truncate.
            let end = if d[0] == 4 { d.len() } else { d.len() - 32 };
            for _ in 0..1 + rng.below(4) {
                let at = 4 + rng.below(end - 4);
                buf[at] ^= 1 << rng.below(8);
            }
            if rng.below(5) == 0 {
                1 + rng.below(d.len() - 1)
            } else {
                d.len()
            }
        };
        if socket.send_to(&buf[..len], to).is_err() {
            f.send_errors += 1;
        }
        if i % 256 == 255 {
            while let Ok((n, from)) = socket.recv_from(&mut back) {
                eprintln!(
                    "reply of {n} bytes from {from}: {:02x?}",
                    &back[..n.min(16)]
                );
                f.replies += 1;
            }
            // Let the receiver keep up a little (its socket holds ~4 MiB).
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    f.elapsed = start.elapsed();
    // Anything still on its way back.
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Ok((n, from)) = socket.recv_from(&mut back) {
        eprintln!(
            "late reply of {n} bytes from {from}: {:02x?}",
            &back[..n.min(16)]
        );
        f.replies += 1;
    }
    f
}

/// `Udp:` counters (InDatagrams, RcvbufErrors, InErrors) of a network
/// namespace (`None`: ours).
pub(crate) fn udp_counters(ns: Option<&str>) -> [u64; 3] {
    let text = match ns {
        None => std::fs::read_to_string("/proc/net/snmp").unwrap(),
        Some(ns) => run(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]),
    };
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let get = |k: &str| {
        names
            .iter()
            .position(|n| *n == k)
            .and_then(|i| values[i].parse().ok())
            .unwrap_or(0)
    };
    [get("InDatagrams"), get("RcvbufErrors"), get("InErrors")]
}
