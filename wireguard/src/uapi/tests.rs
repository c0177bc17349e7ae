//! Tests of the configuration protocol text, with the exact lines `wg`
//! sends and expects.

// Tests take one real `now` as the base of their injected times.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;
use std::time::Duration;

const PRIV_HEX: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
const PEER_HEX: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
const PEER2_HEX: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";

fn table() -> Peers {
    Peers::with_first_index(PrivateKey::from_hex(PRIV_HEX).unwrap(), 1)
}

fn pk(hex: &str) -> PublicKey {
    PublicKey::from_hex(hex).unwrap()
}

#[test]
fn get_renders_what_wg_show_reads() {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::new(1_700_000_000, 250_000_000);
    let mut peers = table();
    peers
        .reconcile(
            &[
                PeerConfig {
                    public_key: pk(PEER_HEX),
                    endpoint: Some("192.0.2.7:51820".parse().unwrap()),
                    allowed_ips: vec![
                        "10.77.0.0/24".parse().unwrap(),
                        "fd00::/64".parse().unwrap(),
                    ],
                    persistent_keepalive: Some(25),
                },
                PeerConfig {
                    public_key: pk(PEER2_HEX),
                    endpoint: Some("[fd00::2]:51821".parse().unwrap()),
                    allowed_ips: vec![],
                    persistent_keepalive: None,
                },
            ],
            now,
        )
        .unwrap();
    let id = peers.id_of(&pk(PEER_HEX)).unwrap();
    let p = peers.get_mut(id).unwrap();
    p.stats.rx_bytes = 1234;
    p.stats.tx_bytes = 5678;
    p.stats.last_handshake = Some(now - Duration::from_secs(10));

    let text = render_get(&peers, 51820, now, wall);
    let expected = format!(
        "private_key={PRIV_HEX}\n\
         listen_port=51820\n\
         public_key={PEER2_HEX}\n\
         endpoint=[fd00::2]:51821\n\
         last_handshake_time_sec=0\n\
         last_handshake_time_nsec=0\n\
         rx_bytes=0\n\
         tx_bytes=0\n\
         persistent_keepalive_interval=0\n\
         protocol_version=1\n\
         public_key={PEER_HEX}\n\
         endpoint=192.0.2.7:51820\n\
         allowed_ip=10.77.0.0/24\n\
         allowed_ip=fd00::/64\n\
         last_handshake_time_sec=1699999990\n\
         last_handshake_time_nsec=250000000\n\
         rx_bytes=1234\n\
         tx_bytes=5678\n\
         persistent_keepalive_interval=25\n\
         protocol_version=1\n\
         errno=0\n\n"
    );
    assert_eq!(text, expected);
}

#[test]
fn get_is_get_and_anything_else_is_refused() {
    assert_eq!(parse_request("get=1\n\n"), Ok(Request::Get));
    assert_eq!(parse_request("get=1\n"), Ok(Request::Get));
    assert_eq!(
        parse_request("hello\n\n"),
        Err(UapiError::UnknownOperation("hello".into()))
    );
    assert_eq!(parse_request("").unwrap_err().errno(), EPROTO);
    assert_eq!(render_errno(0), "errno=0\n\n");
}

#[test]
fn parses_what_wg_set_sends() {
    // `wg set wgX peer <key> endpoint 192.0.2.7:51820 persistent-keepalive 25
    //  allowed-ips 10.77.0.0/24,fd00::/64`
    let text = format!(
        "set=1\n\
         public_key={PEER_HEX}\n\
         endpoint=192.0.2.7:51820\n\
         persistent_keepalive_interval=25\n\
         replace_allowed_ips=true\n\
         allowed_ip=10.77.0.0/24\n\
         allowed_ip=fd00::/64\n\n"
    );
    let Request::Set(set) = parse_request(&text).unwrap() else {
        panic!("not a set");
    };
    assert_eq!(
        set,
        SetRequest {
            peers: vec![PeerSet {
                public_key: pk(PEER_HEX),
                remove: false,
                update_only: false,
                endpoint: Some("192.0.2.7:51820".parse().unwrap()),
                persistent_keepalive: Some(25),
                replace_allowed_ips: true,
                allowed_ips: vec![
                    "10.77.0.0/24".parse().unwrap(),
                    "fd00::/64".parse().unwrap()
                ],
            }],
            ..SetRequest::default()
        }
    );
}

#[test]
fn parses_what_wg_setconf_sends() {
    let text = format!(
        "set=1\n\
         private_key={PRIV_HEX}\n\
         listen_port=51820\n\
         fwmark=0\n\
         replace_peers=true\n\
         public_key={PEER_HEX}\n\
         preshared_key={zero}\n\
         endpoint=[fd00::7]:51820\n\
         replace_allowed_ips=true\n\
         allowed_ip=10.0.0.0/8\n\
         public_key={PEER2_HEX}\n\
         remove=true\n\n",
        zero = "0".repeat(64)
    );
    let Request::Set(set) = parse_request(&text).unwrap() else {
        panic!("not a set");
    };
    assert_eq!(
        set.private_key,
        Some(PrivateKey::from_hex(PRIV_HEX).unwrap())
    );
    assert_eq!(set.listen_port, Some(51820));
    assert_eq!(set.fwmark, Some(0));
    assert!(set.replace_peers);
    assert_eq!(set.peers.len(), 2);
    assert_eq!(
        set.peers[0].endpoint,
        Some("[fd00::7]:51820".parse().unwrap())
    );
    assert!(set.peers[1].remove);
}

#[test]
fn malformed_set_lines_are_refused_with_their_errno() {
    let cases: &[(&str, i32)] = &[
        ("set=1\nnonsense\n\n", EPROTO),
        ("set=1\nbogus=1\n\n", EINVAL),
        ("set=1\nlisten_port=70000\n\n", EINVAL),
        ("set=1\nlisten_port=-1\n\n", EINVAL),
        ("set=1\nreplace_peers=yes\n\n", EINVAL),
        ("set=1\nprivate_key=zz\n\n", EINVAL),
        ("set=1\npublic_key=00\n\n", EINVAL),
    ];
    for (text, errno) in cases {
        assert_eq!(parse_request(text).unwrap_err().errno(), *errno, "{text:?}");
    }
    let peer = format!("set=1\npublic_key={PEER_HEX}\n");
    for (line, errno) in [
        ("endpoint=nowhere", EINVAL),
        ("allowed_ip=10.0.0.0/33", EINVAL),
        ("persistent_keepalive_interval=65536", EINVAL),
        ("protocol_version=2", EINVAL),
        ("remove=false", EINVAL),
        ("listen_port=1", EINVAL),
    ] {
        let text = format!("{peer}{line}\n\n");
        assert_eq!(parse_request(&text).unwrap_err().errno(), errno, "{line}");
    }
    let psk = format!("{peer}preshared_key={}\n\n", "ab".repeat(32));
    assert_eq!(parse_request(&psk), Err(UapiError::PresharedKey));
}

#[test]
fn replace_allowed_ips_replaces_earlier_lines_too() {
    let text = format!(
        "set=1\npublic_key={PEER_HEX}\nallowed_ip=10.0.0.0/8\nreplace_allowed_ips=true\nallowed_ip=10.1.0.0/16\n\n"
    );
    let Request::Set(set) = parse_request(&text).unwrap() else {
        panic!("not a set");
    };
    assert_eq!(
        set.peers[0].allowed_ips,
        vec!["10.1.0.0/16".parse::<IpNet>().unwrap()]
    );
}

fn apply(peers: &mut Peers, text: &str, now: Instant) -> Result<Reconciled, UapiError> {
    match parse_request(text)? {
        Request::Set(set) => set.apply(peers, now),
        Request::Get => panic!("not a set"),
    }
}

#[test]
fn applying_sets_adds_updates_and_removes_peers() {
    let now = Instant::now();
    let mut peers = table();
    let done = apply(
        &mut peers,
        &format!(
            "set=1\npublic_key={PEER_HEX}\nendpoint=192.0.2.7:51820\nallowed_ip=10.77.0.0/24\n\n"
        ),
        now,
    )
    .unwrap();
    assert_eq!(done.added, vec![pk(PEER_HEX)]);
    let id = peers.id_of(&pk(PEER_HEX)).unwrap();

    // The peer roams; setting its endpoint explicitly moves it back, and
    // adding an allowed IP keeps the old ones (no replace) and the peer.
    let roamed: SocketAddr = "198.51.100.1:9".parse().unwrap();
    peers.get_mut(id).unwrap().endpoint = Some(roamed);
    let done = apply(
        &mut peers,
        &format!(
            "set=1\npublic_key={PEER_HEX}\nendpoint=192.0.2.7:51820\nallowed_ip=10.78.0.0/24\n\n"
        ),
        now,
    )
    .unwrap();
    assert!(done.added.is_empty() && done.removed.is_empty());
    assert_eq!(done.allowed_ips_changed, vec![pk(PEER_HEX)]);
    assert_eq!(peers.id_of(&pk(PEER_HEX)), Some(id));
    assert_eq!(
        peers.get(id).unwrap().endpoint(),
        Some("192.0.2.7:51820".parse().unwrap())
    );
    assert_eq!(peers.route("10.77.0.1".parse().unwrap()), Some(id));
    assert_eq!(peers.route("10.78.0.1".parse().unwrap()), Some(id));

    // update_only never creates; our own key is ignored.
    let own = peers.public_key().to_hex();
    apply(
        &mut peers,
        &format!("set=1\npublic_key={PEER2_HEX}\nupdate_only=true\nallowed_ip=10.9.0.0/16\npublic_key={own}\nallowed_ip=10.8.0.0/16\n\n"),
        now,
    )
    .unwrap();
    assert_eq!(peers.len(), 1);

    // replace_peers keeps a listed peer (and its index), drops the others.
    apply(
        &mut peers,
        &format!("set=1\npublic_key={PEER2_HEX}\nallowed_ip=10.9.0.0/16\n\n"),
        now,
    )
    .unwrap();
    assert_eq!(peers.len(), 2);
    let done = apply(
        &mut peers,
        &format!("set=1\nreplace_peers=true\npublic_key={PEER_HEX}\nreplace_allowed_ips=true\nallowed_ip=10.77.0.0/24\n\n"),
        now,
    )
    .unwrap();
    assert_eq!(done.removed, vec![pk(PEER2_HEX)]);
    assert_eq!(peers.id_of(&pk(PEER_HEX)), Some(id));
    assert_eq!(peers.route("10.78.0.1".parse().unwrap()), None);

    // remove=true removes.
    apply(
        &mut peers,
        &format!("set=1\npublic_key={PEER_HEX}\nremove=true\n\n"),
        now,
    )
    .unwrap();
    assert!(peers.is_empty());
}

#[test]
fn keepalive_zero_turns_it_off() {
    let now = Instant::now();
    let mut peers = table();
    apply(
        &mut peers,
        &format!("set=1\npublic_key={PEER_HEX}\npersistent_keepalive_interval=25\n\n"),
        now,
    )
    .unwrap();
    assert_eq!(
        peers.by_key(&pk(PEER_HEX)).unwrap().persistent_keepalive(),
        Some(25)
    );
    apply(
        &mut peers,
        &format!("set=1\npublic_key={PEER_HEX}\npersistent_keepalive_interval=0\n\n"),
        now,
    )
    .unwrap();
    assert_eq!(
        peers.by_key(&pk(PEER_HEX)).unwrap().persistent_keepalive(),
        None
    );
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "(get=1|set=1)?\n?([a-z_]{0,12}=?[0-9a-f:./\\[\\]]{0,70}\n){0,6}\n?") {
        let _ = parse_request(&text);
    }

    #[test]
    fn parsing_arbitrary_bytes_never_panics(text in ".{0,200}") {
        let _ = parse_request(&text);
    }
}
