//! Fuzzes the WireGuard datapath with what the network can send it: two
//! engines, A (10.0.0.1, knows B's endpoint) and B (10.0.0.2, learns A's
//! from the handshake), wired back to back in memory, plus C, a stranger
//! to B. The input is a script of steps: A or B handles a packet from its
//! TUN; a datagram on the wire is delivered, dropped, replayed, cut,
//! extended, bit-flipped or sent from another address; arbitrary or
//! well-shaped (right type and length, random contents) datagrams arrive;
//! timers run on injected time; queued packets are flushed; output buffers
//! of any size are offered; the peers are reconfigured.
//!
//! Checked besides "never panics": a datagram to send fits the buffer it
//! was written into; a packet an engine writes to its TUN is one some
//! engine's TUN handed in (up to its IP length: nothing is forged), and its
//! source routes back to a peer.

#![no_main]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::{Result, Unstructured};
use geoedge_wireguard::engine::{MAX_BUFFER, MIN_BUFFER};
use geoedge_wireguard::{Action, Engine, PeerConfig, PrivateKey, PublicKey};
use libfuzzer_sys::fuzz_target;

const A_KEY: &str = "0808080808080808080808080808080808080808080808080808080808080848";
const B_KEY: &str = "1010101010101010101010101010101010101010101010101010101010101050";
const C_KEY: &str = "1818181818181818181818181818181818181818181818181818181818181858";

const A_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 51820);
const B_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 51820);
const C_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)), 51820);

/// Overlay addresses: A, B, C, and one nobody owns.
const OVERLAY: [[u8; 4]; 4] = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3], [10, 9, 9, 9]];

/// Which engine.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    A,
    B,
    C,
}

struct Keys {
    a: PrivateKey,
    b: PrivateKey,
    c: PrivateKey,
    a_pub: PublicKey,
    b_pub: PublicKey,
    c_pub: PublicKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let key = |h: &str| PrivateKey::from_hex(h).expect("a valid key");
        let (a, b, c) = (key(A_KEY), key(B_KEY), key(C_KEY));
        Keys {
            a_pub: a.public_key(),
            b_pub: b.public_key(),
            c_pub: c.public_key(),
            a,
            b,
            c,
        }
    })
}

/// One base instant for the whole run: the engine takes `now` as an argument.
#[allow(clippy::disallowed_methods)]
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn peer(key: PublicKey, endpoint: Option<SocketAddr>, nets: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: key,
        endpoint,
        allowed_ips: nets.iter().map(|n| n.parse().expect("a CIDR")).collect(),
        persistent_keepalive: None,
    }
}

/// A datagram on its way to `to`.
#[derive(Clone, Debug)]
struct Wire {
    to: Who,
    from: SocketAddr,
    datagram: Vec<u8>,
}

struct World {
    a: Engine,
    b: Engine,
    /// Made on first use (every engine costs key derivations).
    c: Option<Engine>,
    now: Instant,
    /// Datagrams sent and not yet delivered.
    wire: VecDeque<Wire>,
    /// Datagrams delivered (for replays), at most a few.
    seen: Vec<Wire>,
    /// Packets any engine's TUN handed in.
    handed_in: Vec<Vec<u8>>,
}

impl World {
    fn new() -> Self {
        let k = keys();
        let now = base();
        let mut a = Engine::new(k.a.clone());
        let mut b = Engine::new(k.b.clone());
        a.peers_mut()
            .reconcile(&[peer(k.b_pub, Some(B_ADDR), &["10.0.0.2/32"])], now)
            .expect("A's peers");
        b.peers_mut()
            .reconcile(&[peer(k.a_pub, None, &["10.0.0.1/32"])], now)
            .expect("B's peers");
        Self {
            a,
            b,
            c: None,
            now,
            wire: VecDeque::new(),
            seen: Vec::new(),
            handed_in: Vec::new(),
        }
    }

    fn engine(&mut self, who: Who) -> &mut Engine {
        match who {
            Who::A => &mut self.a,
            Who::B => &mut self.b,
            Who::C => self.c.get_or_insert_with(|| {
                let k = keys();
                let mut c = Engine::new(k.c.clone());
                c.peers_mut()
                    .reconcile(&[peer(k.b_pub, Some(B_ADDR), &["10.0.0.0/24"])], base())
                    .expect("C's peers");
                c
            }),
        }
    }

    /// Where `who` sends from, and who receives at `endpoint`.
    fn addr(who: Who) -> SocketAddr {
        match who {
            Who::A => A_ADDR,
            Who::B => B_ADDR,
            Who::C => C_ADDR,
        }
    }

    fn receiver(endpoint: SocketAddr) -> Option<Who> {
        [Who::A, Who::B, Who::C]
            .into_iter()
            .find(|w| Self::addr(*w) == endpoint)
    }

    /// Puts a datagram `who` sent to `endpoint` on the wire.
    fn send(&mut self, who: Who, endpoint: SocketAddr, datagram: &[u8], out_len: usize) {
        assert!(
            datagram.len() <= out_len,
            "a datagram longer than its buffer"
        );
        if let Some(to) = Self::receiver(endpoint) {
            if self.wire.len() < 64 {
                self.wire.push_back(Wire {
                    to,
                    from: Self::addr(who),
                    datagram: datagram.to_vec(),
                });
            }
        }
    }

    /// Handles what an engine returned for a datagram `who` received.
    fn outcome(&mut self, who: Who, action: Action<'_>, out_len: usize) {
        match action {
            Action::Send(t) => {
                let (endpoint, d) = (t.endpoint, t.datagram.to_vec());
                self.send(who, endpoint, &d, out_len);
            }
            Action::WriteTun(packet) => {
                assert!(
                    self.handed_in.iter().any(|p| p.starts_with(packet)),
                    "{who:?} decrypted a packet no TUN handed in: {packet:?}"
                );
                if let Some(src) = source(packet) {
                    assert!(
                        self.engine(who).peers().route(src).is_some(),
                        "{who:?} wrote a packet from {src}, no peer's address"
                    );
                }
            }
            Action::Done | Action::Drop(_) => {}
        }
    }

    fn deliver(&mut self, w: Wire, out_len: usize, flush: bool) {
        let now = self.now;
        let mut out = vec![0u8; out_len];
        let action = self
            .engine(w.to)
            .handle_datagram(w.from, &w.datagram, &mut out, now);
        // Copy what is needed out of `out` before touching `self` again.
        let action = owned(action);
        self.outcome_owned(w.to, action, out_len);
        if self.seen.len() < 8 {
            self.seen.push(w.clone());
        }
        if flush {
            self.flush(w.to, MAX_BUFFER);
        }
    }

    fn outcome_owned(&mut self, who: Who, action: Owned, out_len: usize) {
        match action {
            Owned::Send(endpoint, d) => self.send(who, endpoint, &d, out_len),
            Owned::WriteTun(p) => self.outcome(who, Action::WriteTun(&p), out_len),
            Owned::Other => {}
        }
    }

    fn flush(&mut self, who: Who, out_len: usize) {
        let mut out = vec![0u8; out_len];
        for _ in 0..16 {
            let Some(t) = self.engine(who).flush(&mut out) else {
                break;
            };
            let (endpoint, d) = (t.endpoint, t.datagram.to_vec());
            self.send(who, endpoint, &d, out_len);
        }
    }

    fn tun(&mut self, who: Who, packet: Vec<u8>, out_len: usize) {
        let mut out = vec![0u8; out_len];
        let action = owned(self.engine(who).handle_tun_packet(&packet, &mut out));
        self.handed_in.push(packet);
        if let Owned::Send(endpoint, d) = action {
            self.send(who, endpoint, &d, out_len);
        }
    }

    fn timers(&mut self, who: Who) {
        let now = self.now;
        for t in self.engine(who).poll_timers(now) {
            self.send(who, t.endpoint, &t.datagram, MAX_BUFFER);
        }
    }
}

/// An [`Action`] copied out of the output buffer.
enum Owned {
    Send(SocketAddr, Vec<u8>),
    WriteTun(Vec<u8>),
    Other,
}

fn owned(a: Action<'_>) -> Owned {
    match a {
        Action::Send(t) => Owned::Send(t.endpoint, t.datagram.to_vec()),
        Action::WriteTun(p) => Owned::WriteTun(p.to_vec()),
        Action::Done | Action::Drop(_) => Owned::Other,
    }
}

/// The source address of an IP packet.
fn source(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).ok()?)),
        6 if p.len() >= 40 => Some(IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).ok()?)),
        _ => None,
    }
}

/// A packet as a TUN hands it in: mostly IPv4 or IPv6 with overlay
/// addresses and a consistent length, sometimes anything.
fn ip_packet(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let payload_len = u.int_in_range(0..=1500usize)?;
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect::<Vec<u8>>();
    Ok(match u.int_in_range(0u8..=5)? {
        0..=2 => {
            let total = 20 + payload.len();
            let mut p = vec![0u8; 20];
            p[0] = 0x45;
            let len = if u.ratio(1u8, 8)? {
                u.arbitrary()?
            } else {
                total as u16
            };
            p[2..4].copy_from_slice(&len.to_be_bytes());
            p[8] = 64;
            p[9] = 17;
            p[12..16].copy_from_slice(u.choose(&OVERLAY)?);
            p[16..20].copy_from_slice(u.choose(&OVERLAY)?);
            p.extend_from_slice(&payload);
            p
        }
        3 => {
            let mut p = vec![0u8; 40];
            p[0] = 0x60;
            let len = if u.ratio(1u8, 8)? {
                u.arbitrary()?
            } else {
                payload.len() as u16
            };
            p[4..6].copy_from_slice(&len.to_be_bytes());
            p[6] = 17;
            p[7] = 64;
            // 10.0.0.x mapped: no peer has IPv6 ranges, so these are dropped.
            p[8..24].copy_from_slice(&u.arbitrary::<[u8; 16]>()?);
            p[24..40].copy_from_slice(&u.arbitrary::<[u8; 16]>()?);
            p.extend_from_slice(&payload);
            p
        }
        _ => u.arbitrary()?,
    })
}

/// An output buffer size: usually ample, sometimes too small.
fn out_len(u: &mut Unstructured<'_>) -> Result<usize> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.int_in_range(0..=MIN_BUFFER + 64)?,
        1 => u.int_in_range(0..=MAX_BUFFER)?,
        _ => MAX_BUFFER,
    })
}

fn who(u: &mut Unstructured<'_>) -> Result<Who> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 | 1 => Who::A,
        2 | 3 => Who::B,
        _ => Who::C,
    })
}

/// Changes a datagram as the network (or an attacker on it) might.
fn mangle(u: &mut Unstructured<'_>, w: &mut Wire) -> Result<()> {
    match u.int_in_range(0u8..=9)? {
        0 if !w.datagram.is_empty() => {
            let i = u.choose_index(w.datagram.len())?;
            w.datagram[i] ^= u.int_in_range(1..=255)?;
        }
        1 => {
            let n = u.int_in_range(0..=w.datagram.len())?;
            w.datagram.truncate(n);
        }
        2 => {
            let extra: Vec<u8> = u.arbitrary()?;
            w.datagram.extend_from_slice(&extra);
        }
        3 => {
            // Roaming, or a spoofed source.
            w.from = SocketAddr::new(u.arbitrary::<IpAddr>()?, u.arbitrary()?);
        }
        4 => w.to = who(u)?,
        5 if w.datagram.len() >= 8 => {
            // Another receiver index.
            let idx: [u8; 4] = u.arbitrary()?;
            let at = if w.datagram[0] == 2 { 8 } else { 4 };
            if w.datagram.len() >= at + 4 {
                w.datagram[at..at + 4].copy_from_slice(&idx);
            }
        }
        _ => {}
    }
    Ok(())
}

/// A datagram of one of WireGuard's four types at its exact length (data:
/// at least the minimum), with arbitrary contents.
fn shaped(u: &mut Unstructured<'_>, world: &World) -> Result<Vec<u8>> {
    let kind = u.int_in_range(1u8..=4)?;
    let len = match kind {
        1 => 148,
        2 => 92,
        3 => 64,
        _ => 32 + 16 * u.int_in_range(0..=8usize)?,
    };
    let mut d = vec![0u8; len];
    d[0] = kind;
    let body = &mut d[4..];
    let fill: &[u8] = u.bytes(u.len().min(body.len()))?;
    body[..fill.len()].copy_from_slice(fill);
    // Often reuse a real receiver index, so the datagram reaches a peer.
    if kind > 1 && u.ratio(2u8, 3)? {
        if let Some(real) = world.seen.iter().find(|w| w.datagram.len() >= 12) {
            let at = if kind == 2 { 8 } else { 4 };
            let src = if real.datagram[0] == 2 { 8 } else { 4 };
            let idx: [u8; 4] = real.datagram[src..src + 4].try_into().expect("4 bytes");
            d[at..at + 4].copy_from_slice(&idx);
        }
    }
    Ok(d)
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut w = World::new();
    let k = keys();
    for _ in 0..64 {
        if u.is_empty() {
            break;
        }
        match u.int_in_range(0u8..=15)? {
            0..=2 => {
                let packet = ip_packet(u)?;
                let len = out_len(u)?;
                w.tun(Who::A, packet, len);
            }
            3 => {
                let packet = ip_packet(u)?;
                let len = out_len(u)?;
                w.tun(Who::B, packet, len);
            }
            4..=7 => {
                if let Some(mut wire) = w.wire.pop_front() {
                    if u.ratio(1u8, 4)? {
                        mangle(u, &mut wire)?;
                    }
                    let len = out_len(u)?;
                    let flush = u.ratio(7u8, 8)?;
                    w.deliver(wire, len, flush);
                }
            }
            8 => {
                // Lost on the way.
                w.wire.pop_front();
            }
            9 if !w.seen.is_empty() => {
                let i = u.choose_index(w.seen.len())?;
                let mut wire = w.seen[i].clone();
                if u.ratio(1u8, 2)? {
                    mangle(u, &mut wire)?;
                }
                w.deliver(wire, MAX_BUFFER, true);
            }
            10 => {
                let datagram: Vec<u8> = u.arbitrary()?;
                let to = who(u)?;
                let from = SocketAddr::new(u.arbitrary::<IpAddr>()?, u.arbitrary()?);
                let len = out_len(u)?;
                w.deliver(Wire { to, from, datagram }, len, true);
            }
            11 => {
                let datagram = shaped(u, &w)?;
                let to = who(u)?;
                let from = if u.ratio(1u8, 2)? { A_ADDR } else { C_ADDR };
                w.deliver(Wire { to, from, datagram }, MAX_BUFFER, true);
            }
            12 => {
                let step = Duration::from_millis(u.int_in_range(0..=200_000)?);
                w.now += step;
                let who = who(u)?;
                w.timers(who);
            }
            13 => {
                let who = who(u)?;
                let len = out_len(u)?;
                w.flush(who, len);
            }
            14 => {
                // C, unknown to B, starts a handshake with it.
                let packet = ip_packet(u)?;
                w.tun(Who::C, packet, MAX_BUFFER);
            }
            _ => {
                // Reconfiguration while traffic flows.
                let now = w.now;
                let _ = match u.int_in_range(0u8..=4)? {
                    0 => {
                        w.b.peers_mut()
                            .reconcile(&[peer(k.a_pub, None, &["10.0.0.1/32", "fd00::/64"])], now)
                    }
                    1 => w.b.peers_mut().reconcile(
                        &[
                            peer(k.a_pub, Some(A_ADDR), &["10.0.0.0/24"]),
                            peer(k.c_pub, None, &["10.0.0.3/32"]),
                        ],
                        now,
                    ),
                    2 => w.b.peers_mut().reconcile(&[], now),
                    3 => w.a.peers_mut().reconcile(
                        &[PeerConfig {
                            persistent_keepalive: Some(u.int_in_range(0..=30)?),
                            ..peer(k.b_pub, Some(B_ADDR), &["10.0.0.2/32"])
                        }],
                        now,
                    ),
                    _ => {
                        let after = Duration::from_secs(u.int_in_range(0..=200)?);
                        w.a.set_rekey_after(after);
                        Ok(Default::default())
                    }
                };
            }
        }
    }
    // Whatever happened, the counters stay readable.
    for who in [Who::A, Who::B] {
        let e = w.engine(who);
        let _ = e.stats().invalid_datagrams();
        for p in e.peers().iter() {
            let _ = p.stats();
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
