//! A WireGuard handshake flooder that answers the cookie challenge: from
//! one UDP socket, handshake initiations for a random static key (no peer
//! of the target's), each with a valid MAC1 for the target's public key
//! and, once the target has sent a cookie reply, a valid MAC2 for the
//! socket's address. Built on boringtun's `Tunn`, which computes both MACs
//! and takes the cookie reply itself.
//!
//! The initiations come from a pool of [`POOL`] made in advance (each with
//! its own ephemeral key), sent round and round: making one costs two
//! key agreements, sending one costs a `sendto`, so the flooder spends its
//! CPU on sending, not on cryptography. The pool is made again whenever a
//! new cookie is taken (the target changes its cookie secret every two
//! minutes). Used by the namespace tests and by the WireGuard bench
//! (`examples/wg_handshake_flood.rs`).

use std::net::{SocketAddr, UdpSocket};
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
            let d = &pool[next % pool.len()];
            next = next.wrapping_add(1);
            match socket.send_to(d, to) {
                Ok(_) => f.sent += 1,
                Err(_) => {
                    f.send_errors += 1;
                    break;
                }
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
