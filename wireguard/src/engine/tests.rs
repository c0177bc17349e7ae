//! Tests of the sans-IO engine: two engines wired back to back in memory.

// Tests take one real `now` as the base of their injected times.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::key::PublicKey;
use crate::peer::PeerConfig;
use proptest::prelude::*;

const A_ADDR: &str = "192.0.2.1:51820";
const B_ADDR: &str = "192.0.2.2:51820";

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IPv4/UDP packet from `src` to `dst` carrying `payload`.
fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn config(key: PublicKey, endpoint: Option<&str>, ips: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: key,
        endpoint: endpoint.map(sa),
        allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        persistent_keepalive: None,
    }
}

struct Pair {
    a: Engine,
    b: Engine,
    a_pub: PublicKey,
    b_pub: PublicKey,
    now: Instant,
}

/// A (10.0.0.1) knows B's endpoint; B (10.0.0.2) learns A's from the
/// handshake.
fn pair() -> Pair {
    let now = Instant::now();
    let (ka, kb) = (
        PrivateKey::generate().unwrap(),
        PrivateKey::generate().unwrap(),
    );
    let (a_pub, b_pub) = (ka.public_key(), kb.public_key());
    let mut a = Engine::new(ka);
    let mut b = Engine::new(kb);
    a.peers_mut()
        .reconcile(&[config(b_pub, Some(B_ADDR), &["10.0.0.2/32"])], now)
        .unwrap();
    b.peers_mut()
        .reconcile(&[config(a_pub, None, &["10.0.0.1/32"])], now)
        .unwrap();
    Pair {
        a,
        b,
        now,
        a_pub,
        b_pub,
    }
}

fn sent(action: Action<'_>) -> (SocketAddr, Vec<u8>) {
    match action {
        Action::Send(t) => (t.endpoint, t.datagram.to_vec()),
        other => panic!("expected a datagram, got {other:?}"),
    }
}

/// Establishes a session A→B; returns the first packet as B received it.
fn connect(p: &mut Pair) -> Vec<u8> {
    let mut out = vec![0u8; MAX_BUFFER];
    let mut out2 = vec![0u8; MAX_BUFFER];
    let ping = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello");
    let (to, init) = sent(p.a.handle_tun_packet(&ping, &mut out));
    assert_eq!(to, sa(B_ADDR));
    assert_eq!(init[0], 1, "a handshake initiation");
    let (to, resp) = sent(p.b.handle_datagram(sa(A_ADDR), &init, &mut out, p.now));
    assert_eq!(to, sa(A_ADDR));
    assert_eq!(resp[0], 2);
    assert!(p.b.flush(&mut out).is_none());
    let (to, keepalive) = sent(p.a.handle_datagram(sa(B_ADDR), &resp, &mut out, p.now));
    assert_eq!(to, sa(B_ADDR));
    // The queued ping follows the handshake.
    let flushed = p.a.flush(&mut out2).expect("the queued packet");
    assert_eq!(flushed.endpoint, sa(B_ADDR));
    let data = flushed.datagram.to_vec();
    assert!(p.a.flush(&mut out2).is_none());
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &keepalive, &mut out, p.now),
        Action::Done
    );
    match p.b.handle_datagram(sa(A_ADDR), &data, &mut out, p.now) {
        Action::WriteTun(pkt) => {
            assert_eq!(pkt, &ping[..]);
            pkt.to_vec()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_engines_handshake_and_carry_packets_both_ways() {
    let mut p = pair();
    connect(&mut p);
    let mut out = vec![0u8; MAX_BUFFER];
    // B learned A's endpoint from the handshake and can answer.
    let pong = ipv4([10, 0, 0, 2], [10, 0, 0, 1], &[7u8; 1200]);
    let (to, d) = sent(p.b.handle_tun_packet(&pong, &mut out));
    assert_eq!(to, sa(A_ADDR));
    assert_eq!(d[0], 4);
    let mut out2 = vec![0u8; MAX_BUFFER];
    assert_eq!(
        p.a.handle_datagram(sa(B_ADDR), &d, &mut out2, p.now),
        Action::WriteTun(&pong[..])
    );
    for i in 0..50u8 {
        let big = ipv4([10, 0, 0, 1], [10, 0, 0, 2], &vec![i; 1400]);
        let (_, d) = sent(p.a.handle_tun_packet(&big, &mut out));
        assert_eq!(
            p.b.handle_datagram(sa(A_ADDR), &d, &mut out2, p.now),
            Action::WriteTun(&big[..])
        );
    }

    let pa = p.a.peers().by_key(&p.b_pub).unwrap();
    let pb = p.b.peers().by_key(&p.a_pub).unwrap();
    assert_eq!(pa.stats().handshakes_completed, 1);
    assert_eq!(pb.stats().handshakes_completed, 1);
    assert_eq!(pa.stats().handshake_initiations_sent, 1);
    assert_eq!(pb.stats().handshake_initiations_received, 1);
    assert_eq!(pa.stats().last_handshake, Some(p.now));
    assert_eq!(pb.stats().last_handshake, Some(p.now));
    assert!(pa.stats().tx_bytes > 50 * 1400);
    assert_eq!(pa.stats().tx_bytes, pb.stats().rx_bytes);
    assert_eq!(pb.stats().tx_bytes, pa.stats().rx_bytes);
    assert_eq!(pb.endpoint(), Some(sa(A_ADDR)));
    assert_eq!(p.b.stats().invalid_datagrams(), 0);
}

#[test]
fn a_peer_roams_to_where_its_authenticated_packets_come_from() {
    let mut p = pair();
    connect(&mut p);
    let mut out = vec![0u8; MAX_BUFFER];
    let mut out2 = vec![0u8; MAX_BUFFER];
    let pkt = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"moved");
    let (_, d) = sent(p.a.handle_tun_packet(&pkt, &mut out));
    let moved = sa("198.51.100.9:4444");
    // A forged copy from elsewhere changes nothing; the real one moves it.
    let mut forged = d.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        p.b.handle_datagram(moved, &forged, &mut out2, p.now),
        Action::Drop(DropReason::Unauthenticated)
    );
    assert_eq!(
        p.b.peers().by_key(&p.a_pub).unwrap().endpoint(),
        Some(sa(A_ADDR))
    );
    assert_eq!(
        p.b.handle_datagram(moved, &d, &mut out2, p.now),
        Action::WriteTun(&pkt[..])
    );
    assert_eq!(
        p.b.peers().by_key(&p.a_pub).unwrap().endpoint(),
        Some(moved)
    );
    // A replay is dropped.
    assert_eq!(
        p.b.handle_datagram(moved, &d, &mut out2, p.now),
        Action::Drop(DropReason::Replayed)
    );
    assert_eq!(p.b.stats().replayed, 1);
}

#[test]
fn a_packet_from_a_source_outside_the_peers_allowed_ips_is_dropped() {
    let mut p = pair();
    connect(&mut p);
    let mut out = vec![0u8; MAX_BUFFER];
    let mut out2 = vec![0u8; MAX_BUFFER];
    let spoofed = ipv4([10, 0, 0, 99], [10, 0, 0, 2], b"spoof");
    let (_, d) = sent(p.a.handle_tun_packet(&spoofed, &mut out));
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &d, &mut out2, p.now),
        Action::Drop(DropReason::SourceNotAllowed)
    );
    assert_eq!(p.b.stats().source_not_allowed, 1);
    assert_eq!(
        p.b.peers()
            .by_key(&p.a_pub)
            .unwrap()
            .stats()
            .source_not_allowed,
        1
    );
}

#[test]
fn local_packets_without_a_route_endpoint_or_room_are_dropped() {
    let mut p = pair();
    let mut out = vec![0u8; MAX_BUFFER];
    assert_eq!(
        p.a.handle_tun_packet(&[], &mut out),
        Action::Drop(DropReason::NotIp)
    );
    assert_eq!(
        p.a.handle_tun_packet(&[0x60; 10], &mut out),
        Action::Drop(DropReason::NotIp)
    );
    let elsewhere = ipv4([10, 0, 0, 1], [10, 9, 9, 9], b"x");
    assert_eq!(
        p.a.handle_tun_packet(&elsewhere, &mut out),
        Action::Drop(DropReason::NoRoute)
    );
    // B has no endpoint for A until A talks first.
    let back = ipv4([10, 0, 0, 2], [10, 0, 0, 1], b"x");
    assert_eq!(
        p.b.handle_tun_packet(&back, &mut out),
        Action::Drop(DropReason::NoEndpoint)
    );
    let big = ipv4([10, 0, 0, 1], [10, 0, 0, 2], &[0u8; 1000]);
    let mut small = vec![0u8; 1000];
    assert_eq!(
        p.a.handle_tun_packet(&big, &mut small),
        Action::Drop(DropReason::BufferTooSmall)
    );
    let s = p.a.stats();
    assert_eq!((s.not_ip, s.no_route, s.buffer_too_small), (2, 1, 1));
    assert_eq!(p.b.stats().no_endpoint, 1);
}

#[test]
fn an_initiation_from_an_unknown_key_gets_no_reply() {
    let mut p = pair();
    let stranger_key = PrivateKey::generate().unwrap();
    let mut c = Engine::new(stranger_key);
    c.peers_mut()
        .reconcile(&[config(p.b_pub, Some(B_ADDR), &["10.0.0.0/24"])], p.now)
        .unwrap();
    let mut out = vec![0u8; MAX_BUFFER];
    let (_, init) = sent(c.handle_tun_packet(&ipv4([10, 0, 0, 3], [10, 0, 0, 2], b"hi"), &mut out));
    assert_eq!(
        p.b.handle_datagram(sa("192.0.2.3:1"), &init, &mut out, p.now),
        Action::Drop(DropReason::UnknownPeer)
    );
    // A replayed initiation from a known peer gets no second answer either.
    let (_, init) =
        sent(p.a.handle_tun_packet(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), &mut out));
    assert!(matches!(
        p.b.handle_datagram(sa(A_ADDR), &init, &mut out, p.now),
        Action::Send(_)
    ));
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &init, &mut out, p.now),
        Action::Drop(DropReason::Unauthenticated)
    );
}

#[test]
fn under_load_initiations_get_a_cookie_and_then_succeed_with_it() {
    let mut p = pair();
    let mut out = vec![0u8; MAX_BUFFER];
    let b_id = p.a.peers().id_of(&p.b_pub).unwrap();
    let mut cookie = None;
    // Each initiation counts twice against the shared limit of 100/s.
    for _ in 0..(crate::peers::HANDSHAKE_RATE_LIMIT as usize) {
        let init = match p
            .a
            .peers_mut()
            .get_mut(b_id)
            .unwrap()
            .tunn
            .format_handshake_initiation(&mut out, true)
        {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("{other:?}"),
        };
        let mut reply = vec![0u8; MAX_BUFFER];
        let (to, d) = sent(p.b.handle_datagram(sa(A_ADDR), &init, &mut reply, p.now));
        assert_eq!(to, sa(A_ADDR));
        if d[0] == 3 {
            cookie = Some(d);
            break;
        }
    }
    let cookie = cookie.expect("a cookie reply under load");
    assert_eq!(cookie.len(), 64);
    assert!(p.b.stats().cookie_replies >= 1);
    // A takes the cookie; its next initiation carries a valid mac2.
    assert_eq!(
        p.a.handle_datagram(sa(B_ADDR), &cookie, &mut out, p.now),
        Action::Done
    );
    let init = match p
        .a
        .peers_mut()
        .get_mut(b_id)
        .unwrap()
        .tunn
        .format_handshake_initiation(&mut out, true)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    let (_, resp) = sent(p.b.handle_datagram(sa(A_ADDR), &init, &mut out, p.now));
    assert_eq!(resp[0], 2, "a handshake response despite the load");
}

#[test]
fn timers_send_persistent_keepalives_on_the_callers_clock() {
    let mut p = pair();
    connect(&mut p);
    let mut c = p.a.peers().by_key(&p.b_pub).unwrap().config();
    c.persistent_keepalive = Some(25);
    p.a.peers_mut().reconcile(&[c], p.now).unwrap();
    let t0 = p.now;
    let first = p.a.poll_timers(t0);
    let keepalives: Vec<_> = first.iter().filter(|t| t.datagram[0] == 4).collect();
    assert_eq!(keepalives.len(), 1, "{first:?}");
    assert_eq!(keepalives[0].endpoint, sa(B_ADDR));
    assert_eq!(keepalives[0].datagram.len(), 32, "an empty data message");
    assert!(p
        .a
        .poll_timers(t0 + Duration::from_secs(10))
        .iter()
        .all(|t| t.datagram[0] != 4));
    let later = p.a.poll_timers(t0 + Duration::from_secs(25));
    assert_eq!(later.iter().filter(|t| t.datagram[0] == 4).count(), 1);
    // B accepts them as keepalives.
    let mut out = vec![0u8; MAX_BUFFER];
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &later[0].datagram, &mut out, p.now),
        Action::Done
    );
}

#[test]
fn no_keepalive_while_traffic_flows() {
    let mut p = pair();
    connect(&mut p);
    let mut c = p.a.peers().by_key(&p.b_pub).unwrap().config();
    c.persistent_keepalive = Some(25);
    p.a.peers_mut().reconcile(&[c], p.now).unwrap();
    let t0 = p.now;
    assert_eq!(
        p.a.poll_timers(t0)
            .iter()
            .filter(|t| t.datagram[0] == 4 && t.datagram.len() == 32)
            .count(),
        1
    );
    // A data packet every 10 s: no keepalive is ever due.
    let mut out = vec![0u8; MAX_BUFFER];
    for i in 1..=6u64 {
        let now = t0 + Duration::from_secs(10 * i);
        let packet = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"payload");
        assert!(matches!(
            p.a.handle_tun_packet(&packet, &mut out),
            Action::Send(_)
        ));
        let ticks = p.a.poll_timers(now);
        assert!(
            ticks.iter().all(|t| t.datagram.len() != 32),
            "keepalive at {i}: {ticks:?}"
        );
    }
    // Silence for the interval: one keepalive again.
    let quiet = p.a.poll_timers(t0 + Duration::from_secs(60 + 25));
    assert_eq!(quiet.iter().filter(|t| t.datagram.len() == 32).count(), 1);
}

#[test]
fn a_keepalive_without_a_session_starts_a_handshake() {
    let mut p = pair();
    let mut c = p.a.peers().by_key(&p.b_pub).unwrap().config();
    c.persistent_keepalive = Some(25);
    p.a.peers_mut().reconcile(&[c], p.now).unwrap();
    let sends = p.a.poll_timers(p.now);
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].datagram[0], 1);
    assert_eq!(sends[0].datagram.len(), 148);
    assert_eq!(
        p.a.peers()
            .by_key(&p.b_pub)
            .unwrap()
            .stats()
            .handshake_initiations_sent,
        1
    );
}

/// With a shortened rekey time, the side that initiated the session starts
/// a new handshake once it is that old (on the caller's clock), the
/// responder does not, and traffic flows through the new session.
#[test]
fn a_shortened_rekey_renews_the_initiators_session() {
    let mut p = pair();
    let rekey = Duration::from_secs(10);
    p.a.set_rekey_after(rekey);
    p.b.set_rekey_after(rekey);
    assert_eq!(p.a.rekey_after(), rekey);
    connect(&mut p);
    let mut out = vec![0u8; MAX_BUFFER];
    let mut out2 = vec![0u8; MAX_BUFFER];
    let data_sent = |p: &mut Pair| {
        p.a.peers()
            .by_key(&p.b_pub)
            .unwrap()
            .stats()
            .handshake_initiations_sent
    };
    assert!(p
        .a
        .poll_timers(p.now + rekey - Duration::from_millis(1))
        .is_empty());
    assert!(
        p.b.poll_timers(p.now + rekey * 3).is_empty(),
        "the responder does not rekey"
    );
    let later = p.now + rekey;
    let sends = p.a.poll_timers(later);
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].datagram[0], 1, "a handshake initiation");
    assert_eq!(data_sent(&mut p), 2);
    // Under way: no second initiation.
    assert!(p.a.poll_timers(later + Duration::from_secs(1)).is_empty());
    // The old session still carries packets meanwhile.
    let ping = ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"during");
    let (_, d) = sent(p.a.handle_tun_packet(&ping, &mut out));
    assert_eq!(d[0], 4);
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &d, &mut out2, later),
        Action::WriteTun(&ping[..])
    );
    let (_, resp) = sent(p.b.handle_datagram(sa(A_ADDR), &sends[0].datagram, &mut out, later));
    assert_eq!(resp[0], 2);
    let (_, keepalive) = sent(p.a.handle_datagram(sa(B_ADDR), &resp, &mut out, later));
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &keepalive, &mut out2, later),
        Action::Done
    );
    for (from_a, body) in [(true, &b"after a"[..]), (false, &b"after b"[..])] {
        let (src, dst) = if from_a {
            ([10, 0, 0, 1], [10, 0, 0, 2])
        } else {
            ([10, 0, 0, 2], [10, 0, 0, 1])
        };
        let packet = ipv4(src, dst, body);
        let (tx, rx, from) = if from_a {
            (&mut p.a, &mut p.b, A_ADDR)
        } else {
            (&mut p.b, &mut p.a, B_ADDR)
        };
        let (_, d) = sent(tx.handle_tun_packet(&packet, &mut out));
        assert_eq!(
            rx.handle_datagram(sa(from), &d, &mut out2, later),
            Action::WriteTun(&packet[..])
        );
    }
    for (engine, key) in [(&p.a, &p.b_pub), (&p.b, &p.a_pub)] {
        let stats = engine.peers().by_key(key).unwrap().stats();
        assert_eq!(stats.handshakes_completed, 2);
        assert_eq!(stats.last_handshake, Some(later));
    }
    // The next rekey is due a rekey time after the new handshake.
    assert!(p
        .a
        .poll_timers(later + rekey - Duration::from_millis(1))
        .is_empty());
    assert_eq!(p.a.poll_timers(later + rekey).len(), 1);
    // Longer than WireGuard's own rekey time is boringtun's business.
    p.a.set_rekey_after(Duration::from_secs(600));
    assert_eq!(p.a.rekey_after(), REKEY_AFTER_TIME);
}

#[test]
fn short_output_buffers_are_refused_not_panicked_on() {
    let mut p = pair();
    let mut out = vec![0u8; MAX_BUFFER];
    let (_, init) =
        sent(p.a.handle_tun_packet(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), &mut out));
    let mut tiny = [0u8; 100];
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &init, &mut tiny, p.now),
        Action::Drop(DropReason::BufferTooSmall)
    );
    assert!(p.a.flush(&mut tiny).is_none());
}

/// Captured messages of a real exchange, to mutate.
fn captured() -> (Pair, Vec<Vec<u8>>) {
    let mut p = pair();
    let mut out = vec![0u8; MAX_BUFFER];
    let mut msgs = Vec::new();
    let (_, init) =
        sent(p.a.handle_tun_packet(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), &mut out));
    msgs.push(init.clone());
    let (_, resp) = sent(p.b.handle_datagram(sa(A_ADDR), &init, &mut out, p.now));
    msgs.push(resp.clone());
    let (_, ka) = sent(p.a.handle_datagram(sa(B_ADDR), &resp, &mut out, p.now));
    msgs.push(ka);
    let data = p.a.flush(&mut out).unwrap().datagram.to_vec();
    msgs.push(data);
    (p, msgs)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn garbage_datagrams_get_no_reply(
        datagrams in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                // Right type and size, random contents.
                (1u8..=4, proptest::collection::vec(any::<u8>(), 147..=147)).prop_map(|(t, mut v)| {
                    v.insert(0, t);
                    v.truncate(match t { 1 => 148, 2 => 92, 3 => 64, _ => 148 });
                    v[1..4].fill(0);
                    v
                }),
            ],
            1..20,
        ),
    ) {
        let mut p = pair();
        let mut out = vec![0u8; MAX_BUFFER];
        for d in &datagrams {
            let a = p.b.handle_datagram(sa(A_ADDR), d, &mut out, p.now);
            prop_assert!(!matches!(a, Action::Send(_) | Action::WriteTun(_)), "{:?}", a);
            prop_assert!(p.b.flush(&mut out).is_none());
        }
        prop_assert!(p.b.poll_timers(p.now).is_empty());
    }

    #[test]
    fn mutated_or_truncated_real_messages_get_no_reply(
        which in 0usize..4,
        cut in any::<prop::sample::Index>(),
        flip in proptest::option::of((any::<prop::sample::Index>(), 1u8..=255)),
    ) {
        let (mut p, msgs) = captured();
        let mut m = msgs[which].clone();
        match flip {
            Some((i, x)) => {
                let i = i.index(m.len());
                m[i] ^= x;
            }
            None => m.truncate(cut.index(m.len())),
        }
        let mut out = vec![0u8; MAX_BUFFER];
        // Sent to the side that would accept the original.
        let target = if which == 1 { &mut p.a } else { &mut p.b };
        let a = target.handle_datagram(sa("203.0.113.5:9"), &m, &mut out, p.now);
        prop_assert!(!matches!(a, Action::Send(_) | Action::WriteTun(_)), "{:?}", a);
    }
}

#[test]
fn data_for_an_unknown_index_is_counted() {
    let mut p = pair();
    let mut out = vec![0u8; MAX_BUFFER];
    let mut data = vec![4u8, 0, 0, 0];
    data.extend_from_slice(&0x00ff_ff00u32.to_le_bytes());
    data.extend_from_slice(&[0u8; 40]);
    assert_eq!(
        p.b.handle_datagram(sa(A_ADDR), &data, &mut out, p.now),
        Action::Drop(DropReason::UnknownIndex)
    );
    assert_eq!(p.b.stats().unknown_index, 1);
    assert_eq!(p.b.stats().invalid_datagrams(), 1);
}

/// A stranger's `Tunn`: a random static key that is no peer of `to`.
fn stranger(to: PublicKey) -> Tunn {
    stranger_with(&PrivateKey::generate().unwrap(), to)
}

fn stranger_with(key: &PrivateKey, to: PublicKey) -> Tunn {
    Tunn::new(key.to_x25519(), to.to_x25519(), None, None, 7, None)
}

fn initiation(t: &mut Tunn) -> Vec<u8> {
    let mut out = vec![0u8; MIN_BUFFER];
    match t.format_handshake_initiation(&mut out, true) {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    }
}

/// Puts `b` under load with initiations of `t` from `from` until one earns
/// a cookie reply, which `t` takes: its initiations carry a valid cookie
/// for `from` from then on.
fn load_and_take_cookie(b: &mut Engine, t: &mut Tunn, from: SocketAddr, now: Instant) {
    let init = initiation(t);
    let mut out = vec![0u8; MAX_BUFFER];
    for _ in 0..=2 * HANDSHAKE_RATE_LIMIT {
        if let Action::Send(reply) = b.handle_datagram(from, &init, &mut out, now) {
            assert_eq!((reply.endpoint, reply.datagram[0]), (from, MSG_COOKIE));
            let cookie = reply.datagram.to_vec();
            let mut scratch = vec![0u8; MAX_BUFFER];
            assert!(matches!(
                t.decapsulate(Some(sa(B_ADDR).ip()), &cookie, &mut scratch),
                TunnResult::Done
            ));
            return;
        }
    }
    panic!("no cookie reply under load");
}

/// The legitimate peer A handshakes with B under load: a cookie reply
/// first, then a response to the initiation that carries the cookie.
fn handshake_under_load(p: &mut Pair, now: Instant) {
    let mut out = vec![0u8; MAX_BUFFER];
    let b_id = p.a.peers().id_of(&p.b_pub).unwrap();
    let init = |a: &mut Engine| match a
        .peers_mut()
        .get_mut(b_id)
        .unwrap()
        .tunn
        .format_handshake_initiation(&mut [0u8; MIN_BUFFER], true)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    let first = init(&mut p.a);
    let (_, cookie) = sent(p.b.handle_datagram(sa(A_ADDR), &first, &mut out, now));
    assert_eq!(cookie[0], MSG_COOKIE, "under load: a cookie first");
    assert_eq!(
        p.a.handle_datagram(sa(B_ADDR), &cookie, &mut out, now),
        Action::Done
    );
    let second = init(&mut p.a);
    let (to, resp) = sent(p.b.handle_datagram(sa(A_ADDR), &second, &mut out, now));
    assert_eq!((to, resp[0]), (sa(A_ADDR), MSG_RESPONSE));
}

#[test]
fn a_valid_cookie_flood_from_one_source_gets_only_its_share_of_key_agreements() {
    use crate::ratelimit::{PER_SOURCE_BURST, PER_SOURCE_RATE};
    let mut p = pair();
    let attacker = sa("198.51.100.7:40000");
    let mut t = stranger(p.b_pub);
    load_and_take_cookie(&mut p.b, &mut t, attacker, p.now);
    // Fresh initiations (a new ephemeral key each, so none is a replay),
    // all with a valid cookie for the attacker's address.
    let pool: Vec<Vec<u8>> = (0..64).map(|_| initiation(&mut t)).collect();
    let before = *p.b.stats();
    let mut out = vec![0u8; MAX_BUFFER];
    let n = 2_000u64;
    for i in 0..n {
        // Spread over one second.
        let now = p.now + Duration::from_micros(i * 500);
        let d = &pool[i as usize % pool.len()];
        match p.b.handle_datagram(attacker, d, &mut out, now) {
            Action::Drop(DropReason::UnknownPeer | DropReason::RateLimited) => {}
            other => panic!("{other:?}"),
        }
    }
    let after = *p.b.stats();
    let key_agreements = (after.unknown_peer - after.unknown_peer_replays)
        - (before.unknown_peer - before.unknown_peer_replays);
    let limited = after.rate_limited - before.rate_limited;
    assert!(
        key_agreements <= PER_SOURCE_BURST + PER_SOURCE_RATE,
        "{key_agreements} key agreements for one source in a second"
    );
    assert!(
        limited >= n - PER_SOURCE_BURST - PER_SOURCE_RATE,
        "{limited} dropped by the limiter: {after:?}"
    );
    assert_eq!(after.cookie_replies, before.cookie_replies);
    // Another source is still served, through its own cookie.
    let later = p.now + Duration::from_millis(999);
    handshake_under_load(&mut p, later);
}

#[test]
fn a_spoofed_flood_does_not_use_up_another_addresss_share() {
    let mut p = pair();
    let attacker = sa("198.51.100.7:40000");
    let mut t = stranger(p.b_pub);
    load_and_take_cookie(&mut p.b, &mut t, attacker, p.now);
    let before = *p.b.stats();
    let mut out = vec![0u8; MAX_BUFFER];
    // The attacker's cookie is for its own address: sent as if from A's,
    // every initiation only earns a cookie reply (to A), no token of A's.
    for _ in 0..200 {
        let d = initiation(&mut t);
        let (to, reply) = sent(p.b.handle_datagram(sa(A_ADDR), &d, &mut out, p.now));
        assert_eq!((to, reply[0]), (sa(A_ADDR), MSG_COOKIE));
    }
    assert_eq!(p.b.stats().rate_limited, before.rate_limited);
    assert_eq!(p.b.stats().unknown_peer, before.unknown_peer);
    let now = p.now;
    handshake_under_load(&mut p, now);
}

#[test]
fn a_replayed_unknown_initiation_costs_no_second_key_agreement() {
    let mut p = pair();
    let from = sa("198.51.100.7:40000");
    let key = PrivateKey::generate().unwrap();
    let mut t = stranger_with(&key, p.b_pub);
    let init = initiation(&mut t);
    let mut out = vec![0u8; MAX_BUFFER];
    for _ in 0..3 {
        assert_eq!(
            p.b.handle_datagram(from, &init, &mut out, p.now),
            Action::Drop(DropReason::UnknownPeer)
        );
    }
    assert_eq!(p.b.stats().unknown_peer, 3);
    assert_eq!(p.b.stats().unknown_peer_replays, 2);
    // A change of peers forgets: the key might be a peer now.
    let stranger_pub = key.public_key();
    p.b.peers_mut()
        .reconcile(
            &[
                config(p.a_pub, None, &["10.0.0.1/32"]),
                config(stranger_pub, None, &["10.0.0.7/32"]),
            ],
            p.now,
        )
        .unwrap();
    let fresh = initiation(&mut t);
    assert!(matches!(
        p.b.handle_datagram(from, &fresh, &mut out, p.now),
        Action::Send(_)
    ));
}

#[test]
fn initiations_with_a_bad_mac1_do_not_count_towards_the_load() {
    let mut p = pair();
    let mut out = vec![0u8; MAX_BUFFER];
    // Initiation-shaped garbage: no key needed to send it.
    let mut garbage = [0x5au8; 148];
    garbage[..4].copy_from_slice(&[1, 0, 0, 0]);
    for _ in 0..3 * HANDSHAKE_RATE_LIMIT {
        assert_eq!(
            p.b.handle_datagram(sa("198.51.100.9:1"), &garbage, &mut out, p.now),
            Action::Drop(DropReason::Unauthenticated)
        );
    }
    // A few initiations with a valid MAC1 (no cookie) claiming A's address:
    // below boringtun's limit they pass without a cookie check, so they
    // must not be charged to A's address.
    let mut t = stranger(p.b_pub);
    for _ in 0..10 {
        let d = initiation(&mut t);
        assert_eq!(
            p.b.handle_datagram(sa(A_ADDR), &d, &mut out, p.now),
            Action::Drop(DropReason::UnknownPeer)
        );
    }
    assert_eq!(p.b.stats().rate_limited, 0);
    // A's own handshake goes through at once, without a cookie.
    let b_id = p.a.peers().id_of(&p.b_pub).unwrap();
    let init = match p
        .a
        .peers_mut()
        .get_mut(b_id)
        .unwrap()
        .tunn
        .format_handshake_initiation(&mut out, true)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    let (_, resp) = sent(p.b.handle_datagram(sa(A_ADDR), &init, &mut out, p.now));
    assert_eq!(resp[0], MSG_RESPONSE);
}
