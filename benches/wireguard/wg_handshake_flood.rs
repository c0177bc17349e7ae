//! A WireGuard handshake flooder that answers the cookie challenge, for the
//! WireGuard bench (`benches/wireguard/run.sh`, `FLOOD=1`): initiations
//! for a random key that is no peer of the target's, with a valid cookie
//! for the address it sends from.
//!
//! ```text
//! wg_handshake_flood BIND_ADDR TARGET_ADDR TARGET_PUBLIC_KEY RATE SECONDS
//! ```
//!
//! Runs for SECONDS or until SIGTERM or SIGINT, then prints what it sent
//! and received.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use geoedge_testkit::handshake_flood;

/// Set by SIGTERM and SIGINT.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: wg_handshake_flood BIND_ADDR TARGET_ADDR TARGET_PUBLIC_KEY RATE SECONDS";
    let [bind, to, key, rate, secs] = args.as_slice() else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let bind: SocketAddr = bind.parse().expect("BIND_ADDR: an address:port");
    let to: SocketAddr = to.parse().expect("TARGET_ADDR: an address:port");
    let key: geoedge_wireguard::PublicKey = key.parse().expect("TARGET_PUBLIC_KEY: base64");
    let rate: u64 = rate.parse().expect("RATE: initiations a second");
    let secs: u64 = secs.parse().expect("SECONDS");
    let socket = UdpSocket::bind(bind).expect("bind");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            )
        };
    }
    let f = handshake_flood::flood_handshakes(
        &socket,
        to,
        &key,
        rate,
        Duration::from_secs(secs),
        &STOP,
    );
    println!(
        "sent {} ({:.0}/s) send_errors {} cookie_replies {} cookies_taken {} other_replies {}",
        f.sent,
        f.sent as f64 / f.elapsed.as_secs_f64(),
        f.send_errors,
        f.cookie_replies,
        f.cookies_taken,
        f.other_replies
    );
}
