//! A WireGuard handshake flooder that answers the cookie challenge: from
//! one UDP socket, handshake initiations for a random static key (no peer
//! of the target's), each with a valid MAC1 for the target's public key
//! and, once the target has sent a cookie reply, a valid MAC2 for the
//! socket's address. Built on boringtun's `Tunn`, which computes both MACs
//! and takes the cookie reply itself.
//!
//! The initiations come from a pool of [`POOL`] made in advance (each with
//! its own ephemeral key), sent round and round, a millisecond's worth per
//! `sendmmsg`: making one costs two key agreements, sending one a share of
//! a system call, so the flooder (which shares the machine with what it
//! floods in the tests and the bench) spends little CPU. Each initiation
//! is still its own datagram on the wire. The pool is made again whenever a
//! new cookie is taken (the target changes its cookie secret every two
//! minutes). Used by the namespace tests (`src/tests/wireguard_pop.rs`) and
//! by the WireGuard bench (`benches/wireguard/wg_handshake_flood.rs`).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::{Tunn, TunnResult};
use geoedge_wireguard::{PrivateKey, PublicKey};

/// Distinct initiations sent round and round (more than the target
/// remembers as known to be from an unknown key, so that each one it
/// admits costs it a key agreement).
pub const POOL: usize = 512;

/// What a handshake flood did.
#[derive(Debug, Default, Clone, Copy)]
pub struct HandshakeFlood {
    /// Initiations sent.
    pub sent: u64,
    /// Failed sends (a full socket buffer).
    pub send_errors: u64,
    /// Cookie replies received.
    pub cookie_replies: u64,
    /// Cookies taken (a pool made with each).
    pub cookies_taken: u64,
    /// Any other datagram received (a handshake response would be one).
    pub other_replies: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

/// The most datagrams one `sendmmsg` takes here.
const BATCH: usize = 256;

/// Sends `datagrams` to `to` with as few `sendmmsg` calls as it takes;
/// returns how many were sent (fewer on an error, such as a full buffer).
fn send_batch(socket: &UdpSocket, to: SocketAddr, datagrams: &[&[u8]]) -> usize {
    let (addr, addr_len) = sockaddr(to);
    let mut iovs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr() as *mut libc::c_void,
            iov_len: d.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all zeroes is valid.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; iovs.len()];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_name = std::ptr::addr_of!(addr) as *mut libc::c_void;
        m.msg_hdr.msg_namelen = addr_len;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0;
    while sent < msgs.len() {
        // SAFETY: every header points at a live iovec, datagram and address.
        let n = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                msgs[sent..].as_mut_ptr(),
                (msgs.len() - sent) as libc::c_uint,
                0,
            )
        };
        if n <= 0 {
            break;
        }
        sent += n as usize;
    }
    sent
}

fn sockaddr(to: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *std::ptr::addr_of_mut!(ss).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *std::ptr::addr_of_mut!(ss).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn initiation(t: &mut Tunn) -> Vec<u8> {
    let mut out = [0u8; 148];
    match t.format_handshake_initiation(&mut out, true) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("no initiation: {other:?}"),
    }
}

/// Floods `to` (a WireGuard interface with public key `target`) from
/// `socket` at about `rate` initiations a second, for `duration` or until
/// `stop` is set.
pub fn flood_handshakes(
    socket: &UdpSocket,
    to: SocketAddr,
    target: &PublicKey,
    rate: u64,
    duration: Duration,
    stop: &AtomicBool,
) -> HandshakeFlood {
    let key = PrivateKey::generate().expect("a random key");
    let mut tunn = Tunn::new(key.to_x25519(), target.to_x25519(), None, None, 1, None);
    let mut pool = vec![initiation(&mut tunn)];
    let mut f = HandshakeFlood::default();
    let mut buf = vec![0u8; 2048];
    let mut scratch = vec![0u8; 2048];
    socket.set_nonblocking(true).expect("a non-blocking socket");
    let start = Instant::now();
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
        // Catch up with the rate, a millisecond at a time.
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while f.sent < due {
            let n = ((due - f.sent) as usize).min(BATCH);
            let batch: Vec<&[u8]> = (0..n)
                .map(|i| pool[(next + i) % pool.len()].as_slice())
                .collect();
            let sent = send_batch(socket, to, &batch);
            next = next.wrapping_add(sent);
            f.sent += sent as u64;
            if sent < n {
                f.send_errors += 1;
                break;
            }
        }
        while let Ok((n, _)) = socket.recv_from(&mut buf) {
            if n == 64 && buf[0] == 3 {
                f.cookie_replies += 1;
                // Only the reply to the latest initiation is taken.
                if let TunnResult::Done = tunn.decapsulate(Some(to.ip()), &buf[..n], &mut scratch) {
                    f.cookies_taken += 1;
                    pool = (0..POOL).map(|_| initiation(&mut tunn)).collect();
                    next = 0;
                }
            } else {
                f.other_replies += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f.elapsed = start.elapsed();
    f
}
