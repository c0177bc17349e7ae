//! Tests of the peer table on injected time.

// Tests take one real `now` as the base of their injected times.
#![allow(clippy::disallowed_methods)]

use super::*;
use boringtun::noise::TunnResult;
use std::time::Duration;

fn key() -> PrivateKey {
    PrivateKey::generate().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn peer(k: &PublicKey, ep: &str, ips: &[&str]) -> PeerConfig {
    PeerConfig {
        public_key: *k,
        endpoint: Some(ep.parse().unwrap()),
        allowed_ips: ips.iter().map(|s| net(s)).collect(),
        persistent_keepalive: None,
    }
}

/// Runs a handshake between `a`'s peer `ia` (initiator) and `b`'s peer
/// `ib` by calling their Tunns directly.
fn handshake(a: &mut Peers, ia: PeerId, b: &mut Peers, ib: PeerId) {
    let mut buf = vec![0u8; 2048];
    let mut buf2 = vec![0u8; 2048];
    let init = match a
        .get_mut(ia)
        .unwrap()
        .tunn
        .format_handshake_initiation(&mut buf, false)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    let resp = match b
        .get_mut(ib)
        .unwrap()
        .tunn
        .decapsulate(None, &init, &mut buf2)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    let keepalive = match a
        .get_mut(ia)
        .unwrap()
        .tunn
        .decapsulate(None, &resp, &mut buf)
    {
        TunnResult::WriteToNetwork(d) => d.to_vec(),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        b.get_mut(ib)
            .unwrap()
            .tunn
            .decapsulate(None, &keepalive, &mut buf2),
        TunnResult::Done
    ));
}

/// Whether `id` has a session: encapsulating gives a data message (type
/// 4), not a handshake initiation.
fn has_session(p: &mut Peers, id: PeerId) -> bool {
    let mut buf = vec![0u8; 2048];
    let ping = [0x45u8; 20];
    match p.get_mut(id).unwrap().tunn.encapsulate(&ping, &mut buf) {
        TunnResult::WriteToNetwork(d) => d[0] == 4,
        _ => false,
    }
}

#[test]
fn reconcile_adds_and_looks_up_by_key_index_and_allowed_ip() {
    let now = Instant::now();
    let mut t = Peers::with_first_index(key(), 7);
    let (a, b) = (key().public_key(), key().public_key());
    let done = t
        .reconcile(
            &[
                peer(&a, "192.0.2.1:51820", &["10.0.0.0/24", "fd00::/64"]),
                peer(&b, "192.0.2.2:51820", &["10.0.1.0/24", "0.0.0.0/0"]),
            ],
            now,
        )
        .unwrap();
    assert_eq!(done.added, vec![a, b]);
    assert_eq!(t.len(), 2);
    let ia = t.id_of(&a).unwrap();
    let ib = t.id_of(&b).unwrap();
    assert_eq!((ia.index(), ib.index()), (7, 8));
    assert_eq!(t.by_receiver_index((7 << 8) | 3), Some(ia));
    assert_eq!(t.by_receiver_index(8 << 8), Some(ib));
    assert_eq!(t.by_receiver_index(9 << 8), None);
    assert_eq!(t.route("10.0.0.9".parse().unwrap()), Some(ia));
    assert_eq!(t.route("fd00::1".parse().unwrap()), Some(ia));
    assert_eq!(t.route("10.0.1.9".parse().unwrap()), Some(ib));
    assert_eq!(t.route("198.51.100.1".parse().unwrap()), Some(ib));
    assert_eq!(t.route("fd01::1".parse().unwrap()), None);
    assert_eq!(
        t.by_key(&a).unwrap().endpoint(),
        Some("192.0.2.1:51820".parse().unwrap())
    );
    // The same config again changes nothing.
    let again = t.reconcile(&t.configs(), now).unwrap();
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn unchanged_and_endpoint_changed_peers_keep_their_session() {
    let now = Instant::now();
    let (ka, kb) = (key(), key());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let mut a = Peers::new(ka);
    let mut b = Peers::new(kb);
    let other = key().public_key();
    a.reconcile(
        &[
            peer(&pb, "192.0.2.2:1", &["10.0.0.2/32"]),
            peer(&other, "192.0.2.9:1", &[]),
        ],
        now,
    )
    .unwrap();
    b.reconcile(&[peer(&pa, "192.0.2.1:1", &["10.0.0.1/32"])], now)
        .unwrap();
    let ia = a.id_of(&pb).unwrap();
    let ib = b.id_of(&pa).unwrap();
    handshake(&mut a, ia, &mut b, ib);
    assert!(has_session(&mut a, ia));

    // Endpoint, allowed IPs and keepalive change; another peer goes away.
    let mut changed = peer(&pb, "192.0.2.3:2", &["10.0.0.0/24"]);
    changed.persistent_keepalive = Some(25);
    let done = a.reconcile(&[changed], now).unwrap();
    assert_eq!(done.removed, vec![other]);
    assert_eq!(done.endpoint_changed, vec![pb]);
    assert_eq!(done.allowed_ips_changed, vec![pb]);
    assert_eq!(done.keepalive_changed, vec![pb]);
    assert!(done.added.is_empty());
    assert_eq!(a.id_of(&pb), Some(ia), "same peer, same index");
    assert!(has_session(&mut a, ia), "the session survived");
    let p = a.get(ia).unwrap();
    assert_eq!(p.endpoint(), Some("192.0.2.3:2".parse().unwrap()));
    assert_eq!(p.persistent_keepalive(), Some(25));
    assert_eq!(a.route("10.0.0.77".parse().unwrap()), Some(ia));
    assert_eq!(a.id_of(&other), None);
}

#[test]
fn a_changed_key_is_a_new_peer_and_roamed_endpoints_stay() {
    let now = Instant::now();
    let mut t = Peers::new(key());
    let (a, b) = (key().public_key(), key().public_key());
    t.reconcile(&[peer(&a, "192.0.2.1:1", &["10.0.0.0/24"])], now)
        .unwrap();
    let ia = t.id_of(&a).unwrap();
    // The peer roams; reconciling the same config keeps the roamed address.
    let roamed: SocketAddr = "198.51.100.7:4000".parse().unwrap();
    t.get_mut(ia).unwrap().endpoint = Some(roamed);
    assert!(t
        .reconcile(&[peer(&a, "192.0.2.1:1", &["10.0.0.0/24"])], now)
        .unwrap()
        .is_empty());
    assert_eq!(t.get(ia).unwrap().endpoint(), Some(roamed));

    let done = t
        .reconcile(&[peer(&b, "192.0.2.1:1", &["10.0.0.0/24"])], now)
        .unwrap();
    assert_eq!(
        (done.added.clone(), done.removed.clone()),
        (vec![b], vec![a])
    );
    let ib = t.id_of(&b).unwrap();
    assert_ne!(ia, ib);
    assert_eq!(t.route("10.0.0.1".parse().unwrap()), Some(ib));
    assert_eq!(t.by_receiver_index(ia.index() << 8), None);
}

#[test]
fn duplicates_and_our_own_key_are_refused_without_change() {
    let now = Instant::now();
    let own = key();
    let own_pub = own.public_key();
    let mut t = Peers::new(own);
    let a = key().public_key();
    t.reconcile(&[peer(&a, "192.0.2.1:1", &["10.0.0.0/24"])], now)
        .unwrap();
    assert_eq!(
        t.reconcile(&[peer(&own_pub, "192.0.2.1:1", &[])], now),
        Err(ConfigError::OwnKey(own_pub))
    );
    let b = key().public_key();
    assert_eq!(
        t.reconcile(
            &[peer(&b, "192.0.2.1:1", &[]), peer(&b, "192.0.2.2:1", &[])],
            now
        ),
        Err(ConfigError::DuplicatePeer(b))
    );
    assert_eq!(t.len(), 1);
    assert!(t.id_of(&a).is_some());
}

#[test]
fn a_network_listed_twice_goes_to_the_later_peer() {
    let now = Instant::now();
    let mut t = Peers::new(key());
    let (a, b) = (key().public_key(), key().public_key());
    t.reconcile(
        &[
            peer(&a, "192.0.2.1:1", &["10.0.0.0/24"]),
            peer(&b, "192.0.2.2:1", &["10.0.0.0/24"]),
        ],
        now,
    )
    .unwrap();
    assert_eq!(t.route("10.0.0.1".parse().unwrap()), t.id_of(&b));
    // Removing b gives the network back to a.
    t.reconcile(&[peer(&a, "192.0.2.1:1", &["10.0.0.0/24"])], now)
        .unwrap();
    assert_eq!(t.route("10.0.0.1".parse().unwrap()), t.id_of(&a));
}

#[test]
fn indices_are_unique_24_bit_and_wrap() {
    let now = Instant::now();
    let mut t = Peers::with_first_index(key(), MAX_INDEX - 1);
    let keys: Vec<PublicKey> = (0..4).map(|_| key().public_key()).collect();
    let configs: Vec<PeerConfig> = keys.iter().map(|k| PeerConfig::new(*k)).collect();
    t.reconcile(&configs, now).unwrap();
    let mut ids: Vec<u32> = keys.iter().map(|k| t.id_of(k).unwrap().index()).collect();
    assert_eq!(ids, vec![MAX_INDEX - 1, MAX_INDEX, 1, 2]);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);
    // A removed peer's index is not reused at once.
    t.reconcile(&configs[1..], now).unwrap();
    let fresh = key().public_key();
    let mut more = configs[1..].to_vec();
    more.push(PeerConfig::new(fresh));
    t.reconcile(&more, now).unwrap();
    assert_eq!(t.id_of(&fresh).unwrap().index(), 3);
}

#[test]
fn keepalive_is_due_on_the_callers_clock() {
    let t0 = Instant::now();
    let mut t = Peers::new(key());
    let a = key().public_key();
    let mut c = PeerConfig::new(a);
    c.persistent_keepalive = Some(25);
    t.reconcile(&[c], t0).unwrap();
    let id = t.id_of(&a).unwrap();
    let p = t.get_mut(id).unwrap();
    assert!(p.take_keepalive_due(t0), "the first goes out at once");
    assert!(!p.take_keepalive_due(t0 + Duration::from_secs(24)));
    assert!(p.take_keepalive_due(t0 + Duration::from_secs(25)));
    assert!(!p.take_keepalive_due(t0 + Duration::from_secs(26)));
    p.persistent_keepalive = None;
    assert!(!p.take_keepalive_due(t0 + Duration::from_secs(100)));
}

#[test]
fn last_handshake_converts_to_wall_time() {
    let t0 = Instant::now();
    let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut s = PeerStats::default();
    assert_eq!(s.last_handshake_wall(t0, wall), None);
    s.last_handshake = Some(t0);
    assert_eq!(
        s.last_handshake_wall(t0 + Duration::from_millis(1500), wall),
        Some(wall - Duration::from_millis(1500))
    );
}

#[test]
fn a_new_private_key_drops_sessions() {
    let now = Instant::now();
    let (ka, kb) = (key(), key());
    let (pa, pb) = (ka.public_key(), kb.public_key());
    let mut a = Peers::new(ka.clone());
    let mut b = Peers::new(kb);
    a.reconcile(&[peer(&pb, "192.0.2.2:1", &[])], now).unwrap();
    b.reconcile(&[peer(&pa, "192.0.2.1:1", &[])], now).unwrap();
    let (ia, ib) = (a.id_of(&pb).unwrap(), b.id_of(&pa).unwrap());
    handshake(&mut a, ia, &mut b, ib);
    assert!(!a.set_private_key(ka), "same key: nothing to do");
    assert!(has_session(&mut a, ia));
    let k2 = key();
    let p2 = k2.public_key();
    assert!(a.set_private_key(k2));
    assert_eq!(*a.public_key(), p2);
    assert!(!has_session(&mut a, ia));
}
