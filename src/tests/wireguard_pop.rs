//! geoedge to geoedge over its own WireGuard: the edge (`geoedge run
//! --wg-…`, in the root namespace) reaches backend POPs that each run
//! `geoedge wg up` (inside a network namespace, joined by a veth pair) and a
//! greet-and-echo backend on the POP's overlay address.
//!
//! - `geoedge_to_geoedge_and_peer_churn`: two POPs; a stream to POP A keeps
//!   echoing intact data while POP B's `wg_peers` row is deleted from the
//!   edge's routing.db (B's clients fail over to A) and re-added (B serves
//!   again), and while A's row is rewritten (same endpoint in another
//!   spelling, an IPv4-mapped spelling, another persistent keepalive)
//!   without a new handshake.
//! - `a_vanished_pop_fails_over_within_the_connect_timeout`: POP A is killed
//!   and its namespace deleted; a US client is then served by a loopback
//!   backend after one connect timeout.
//! - `garbage_datagrams_get_no_reply_and_the_tunnel_keeps_working`: 100,000
//!   garbage, WireGuard-looking, truncated, mutated and replayed datagrams
//!   to each geoedge's WireGuard port get no reply, and the tunnel keeps
//!   carrying old and new connections.
//! - `rekey_keeps_connections`: with the edge's rekey time shortened to
//!   3 s, a stream keeps flowing intact across three rekeys.
//! - `a_valid_cookie_handshake_flood_from_one_source_leaves_the_tunnel_working`:
//!   one source that answers the cookie challenge floods the edge with
//!   initiations for an unknown key; the backend behind the tunnel stays
//!   healthy and serves new and old connections.
//!
//! Needs root, /dev/net/tun, `ip`, `wg` and `sqlite3`: skips with a printed
//! reason where they are missing (under CI missing tools fail the test).
//! The tests run one at a time (they share the CPU with three geoedge
//! processes each). Everything a test creates (namespaces, veths, processes,
//! `/var/run/wireguard/*.sock`) is removed, also on failure.

#[path = "wireguard_pop/flood.rs"]
mod flood;
#[path = "wireguard_pop/lab.rs"]
mod lab;
use geoedge_testkit as support;
#[path = "wireguard_pop/traffic.rs"]
mod traffic;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use flood::*;
use lab::*;
use support::handshake_flood::*;
use support::*;
use traffic::*;

#[test]
fn geoedge_to_geoedge_and_peer_churn() {
    if skipped(skip_reason()) {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut lab = Lab::new();
    let ov = lab.subnet(0);
    let (edge_if, pop_a_if, pop_b_if) = (
        lab.name("gec", ""),
        lab.name("gpca", ""),
        lab.name("gpcb", ""),
    );
    let (edge_key, edge_pub) = lab.keypair("edge.key");
    let (a_key, a_pub) = lab.keypair("a.key");
    let (b_key, b_pub) = lab.keypair("b.key");
    let site_a = lab.site(0, "ca");
    let site_b = lab.site(1, "cb");

    // Each POP: geoedge wg up with the edge as its only peer (the edge
    // connects to it: no endpoint), and a backend on its overlay address.
    let mut pops = Vec::new();
    let mut backends = Vec::new();
    for (site, iface, key, host, id) in [
        (&site_a, &pop_a_if, &a_key, 2, "pop-a"),
        (&site_b, &pop_b_if, &b_key, 3, "pop-b"),
    ] {
        let db = lab.db(iface);
        sqlite3(
            &db,
            &format!(
                "INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
                   VALUES ('{edge_pub}', NULL, '10.79.{ov}.1/32', NULL, NULL);"
            ),
        );
        lab.socket(iface);
        pops.push(Pop::start(
            &site.ns,
            iface,
            key,
            &format!("10.79.{ov}.{host}/24"),
            &db,
        ));
        backends.push(NsBackend::start(
            Some(&site.ns),
            format!("10.79.{ov}.{host}:9000").parse().unwrap(),
            id,
        ));
    }

    // The edge: both POPs as peers, a backend in each.
    let db = lab.db("edge");
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) VALUES
               ('pop-a', 'us', 'US', '10.79.{ov}.2', 9000, 100, 200),
               ('pop-b', 'sa', 'BR', '10.79.{ov}.3', 9000, 100, 200);
             INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region) VALUES
               ('{a_pub}', '{}:{}', '10.79.{ov}.2/32', 25, 'us'),
               ('{b_pub}', '{}:{}', '10.79.{ov}.3/32', 25, 'sa');",
            site_a.ns_ip, pops[0].port, site_b.ns_ip, pops[1].port
        ),
    );
    let edge = lab.edge(
        &edge_if,
        &edge_key,
        &format!("10.79.{ov}.1/24"),
        &db,
        &["--connect-timeout", "2s"],
    );
    let log = |what: &str| {
        format!(
            "{what}\nedge: {:#?}\npop A: {:#?}\npop B: {:#?}",
            edge.log(),
            pops[0].log(),
            pops[1].log()
        )
    };

    // A Brazilian client reaches POP B.
    let mut c = Client::connect(edge.addr, "200.160.0.1");
    let g = c.greeting(Duration::from_secs(15));
    assert_eq!(
        g,
        Some(("pop-b".into(), "200.160.0.1".into())),
        "{}",
        log("first Brazilian client")
    );
    c.echo(256 << 10).unwrap();
    c.finish();

    // A New York client streams through POP A from now on.
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    let g = c.greeting(Duration::from_secs(15));
    assert_eq!(
        g,
        Some(("pop-a".into(), "207.237.0.1".into())),
        "{}",
        log("the streaming client")
    );
    let stream = Stream::start(c);
    stream.progresses("start", 256 << 10);
    let a_hex = hex_key(&a_pub);
    let hs_a = handshake_ns(&edge_if, &a_hex);
    assert!(hs_a > 0, "{}", log("no handshake with A"));
    let edge_hex = hex_key(&edge_pub);
    let hs_at_a = handshake_ns(&pop_a_if, &edge_hex);
    let updates = |words: &[&str]| count_lines(&edge.log(), words);

    // POP B's row goes: the edge drops the peer, and Brazilian clients fail
    // over to POP A.
    sqlite3(
        &db,
        &format!("DELETE FROM wg_peers WHERE public_key = '{b_pub}';"),
    );
    eventually("the edge drops POP B", Duration::from_secs(10), || {
        dump_peer(&edge_if, &b_pub).is_none()
    });
    eventually(
        "the edge logs POP B's removal",
        Duration::from_secs(10),
        || updates(&["WireGuard peers updated", "removed=1"]) >= 1,
    );
    stream.progresses("POP B removed", 128 << 10);
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "200.160.0.2");
    let g = c.greeting(Duration::from_secs(20));
    let failover = t.elapsed();
    assert_eq!(
        g,
        Some(("pop-a".into(), "200.160.0.2".into())),
        "{}",
        log("a Brazilian client while POP B is no peer")
    );
    c.echo(64 << 10).unwrap();
    c.finish();
    eprintln!("POP B removed: a Brazilian client failed over to POP A in {failover:?}");

    // POP B's row comes back: a new Brazilian client reaches POP B again.
    sqlite3(
        &db,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
               VALUES ('{b_pub}', '{}:{}', '10.79.{ov}.3/32', 25, 'sa');",
            site_b.ns_ip, pops[1].port
        ),
    );
    eventually("the edge adds POP B back", Duration::from_secs(10), || {
        dump_peer(&edge_if, &b_pub).is_some()
    });
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "200.160.0.3");
    let g = c.greeting(Duration::from_secs(20));
    let back = t.elapsed();
    assert_eq!(
        g,
        Some(("pop-b".into(), "200.160.0.3".into())),
        "{}",
        log("a Brazilian client after POP B is back")
    );
    c.echo(256 << 10).unwrap();
    c.finish();
    eprintln!("POP B re-added: a new Brazilian client greeted by POP B in {back:?}");
    stream.progresses("POP B re-added", 128 << 10);

    // POP A's row is rewritten three ways; its session stays.
    let changed = |words: &[&str]| updates(&[&["WireGuard peers updated"], words].concat());
    // 1. The same endpoint, spelled with spaces around it: nothing changes.
    let before = updates(&["WireGuard peers updated"]);
    let reloads = updates(&["routing.db reloaded"]);
    sqlite3(
        &db,
        &format!(
            "UPDATE wg_peers SET endpoint = '  {}:{}  ' WHERE public_key = '{a_pub}';",
            site_a.ns_ip, pops[0].port
        ),
    );
    eventually(
        "the edge reloads routing.db",
        Duration::from_secs(10),
        || updates(&["routing.db reloaded"]) > reloads,
    );
    stream.progresses("A's endpoint respelled", 128 << 10);
    // The peer follower looks every 200 ms.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        updates(&["WireGuard peers updated"]),
        before,
        "{}",
        log("an equal endpoint changed a peer")
    );
    // 2. The same address as an IPv4-mapped IPv6 endpoint.
    let before = changed(&["endpoint_changed=1"]);
    sqlite3(
        &db,
        &format!(
            "UPDATE wg_peers SET endpoint = '[::ffff:{}]:{}' WHERE public_key = '{a_pub}';",
            site_a.ns_ip, pops[0].port
        ),
    );
    eventually(
        "the edge applies A's mapped endpoint",
        Duration::from_secs(10),
        || changed(&["endpoint_changed=1"]) > before,
    );
    stream.progresses("A's endpoint IPv4-mapped", 256 << 10);
    // 3. Another persistent keepalive.
    sqlite3(
        &db,
        &format!("UPDATE wg_peers SET persistent_keepalive = 5 WHERE public_key = '{a_pub}';"),
    );
    eventually(
        "the edge applies A's keepalive",
        Duration::from_secs(10),
        || dump_peer(&edge_if, &a_pub).is_some_and(|p| p.keepalive == "5"),
    );
    stream.progresses("A's keepalive changed", 256 << 10);
    let hs_a_after = handshake_ns(&edge_if, &a_hex);
    let dump_a = dump_peer(&edge_if, &a_pub).unwrap();
    let drift = hs_a_after.abs_diff(hs_a);
    assert!(
        drift < 200_000_000,
        "a new handshake with A ({drift} ns later): {dump_a:?}\n{}",
        log("")
    );
    let drift_at_a = handshake_ns(&pop_a_if, &edge_hex).abs_diff(hs_at_a);
    assert!(
        drift_at_a < 200_000_000,
        "POP A saw a new handshake ({drift_at_a} ns later)\n{}",
        log("")
    );

    // `wg show` agrees (to the second) with the configuration socket.
    let hs_a_secs = (hs_a / 1_000_000_000) as u64;
    assert!(
        dump_a.latest_handshake.abs_diff(hs_a_secs) <= 1,
        "wg show says {}, the socket {hs_a_secs}",
        dump_a.latest_handshake
    );

    let (total, max_gap) = stream.stop();
    eprintln!(
        "stream to POP A: {} KiB echoed intact, longest wait for an echo {max_gap:?}; \
         A's handshake unchanged (drift {drift} ns), A now {dump_a:?}; test took {:?}",
        total >> 10,
        started.elapsed()
    );

    let mut edge = edge;
    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    assert!(!Path::new(&format!("/var/run/wireguard/{edge_if}.sock")).exists());
    for pop in &mut pops {
        let status = pop.stop();
        assert!(status.success(), "{:#?}", pop.log());
        assert!(!Path::new(&format!("/var/run/wireguard/{}.sock", pop.iface)).exists());
    }
    drop(backends);
}

#[test]
fn a_vanished_pop_fails_over_within_the_connect_timeout() {
    if skipped(skip_reason()) {
        return;
    }
    let _serial = serial();
    let mut lab = Lab::new();
    let ov = lab.subnet(2);
    let (edge_if, pop_if) = (lab.name("gef", ""), lab.name("gpfa", ""));
    let (edge_key, edge_pub) = lab.keypair("edge.key");
    let (a_key, a_pub) = lab.keypair("a.key");
    let site = lab.site(2, "fa");

    let pop_db = lab.db("pop");
    sqlite3(
        &pop_db,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips) VALUES ('{edge_pub}', NULL, '10.79.{ov}.1/32');"
        ),
    );
    lab.socket(&pop_if);
    let mut pop = Some(Pop::start(
        &site.ns,
        &pop_if,
        &a_key,
        &format!("10.79.{ov}.2/24"),
        &pop_db,
    ));
    let mut pop_backend = Some(NsBackend::start(
        Some(&site.ns),
        format!("10.79.{ov}.2:9000").parse().unwrap(),
        "pop-a",
    ));
    let local = NsBackend::start(None, "127.0.0.1:0".parse().unwrap(), "ca-lo");

    let db = lab.db("edge");
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) VALUES
               ('pop-a', 'us', 'US', '10.79.{ov}.2', 9000, 100, 200),
               ('ca-lo', 'us', 'CA', '127.0.0.1', {}, 100, 200);
             INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region) VALUES
               ('{a_pub}', '{}:{}', '10.79.{ov}.2/32', 25, 'us');",
            local.addr.port(),
            site.ns_ip,
            pop.as_ref().unwrap().port
        ),
    );
    let mut edge = lab.edge(
        &edge_if,
        &edge_key,
        &format!("10.79.{ov}.1/24"),
        &db,
        &["--connect-timeout", "2s"],
    );

    // While POP A is up, US clients go there (the same country).
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    let g = c.greeting(Duration::from_secs(15));
    assert_eq!(
        g,
        Some(("pop-a".into(), "207.237.0.1".into())),
        "edge: {:#?}",
        edge.log()
    );
    c.echo(64 << 10).unwrap();
    c.finish();

    // POP A vanishes: its geoedge killed, its backend gone, its namespace
    // and link deleted. routing.db still lists it.
    let pop_pid = pop.as_ref().unwrap().pid();
    drop(pop.take());
    drop(pop_backend.take());
    lab.remove_site(&site);
    assert!(!alive(pop_pid));

    // The next US client (bound to POP A) waits one connect timeout, then
    // is served by the loopback backend.
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    let g = c.greeting(Duration::from_secs(30));
    let first = t.elapsed();
    assert_eq!(
        g,
        Some(("ca-lo".into(), "207.237.0.1".into())),
        "after {first:?}; edge: {:#?}",
        edge.log()
    );
    assert!(first < Duration::from_secs(10), "failover took {first:?}");
    c.echo(64 << 10).unwrap();
    c.finish();

    // The same client again (now bound to ca-lo), and a new US client
    // (whose best backend is still POP A).
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        c.greeting(Duration::from_secs(30)).map(|g| g.0).as_deref(),
        Some("ca-lo")
    );
    let rebound = t.elapsed();
    c.finish();
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "207.237.0.2");
    assert_eq!(
        c.greeting(Duration::from_secs(30)).map(|g| g.0).as_deref(),
        Some("ca-lo")
    );
    let fresh = t.elapsed();
    c.finish();
    eprintln!(
        "POP A vanished: the bound client was served by ca-lo after {first:?}; \
         again (re-bound) after {rebound:?}; a new US client after {fresh:?}"
    );
    assert!(alive(edge.pid()));
    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    assert!(local.accepted.load(Ordering::SeqCst) >= 3);
}

#[test]
fn garbage_datagrams_get_no_reply_and_the_tunnel_keeps_working() {
    if skipped(skip_reason()) {
        return;
    }
    let _serial = serial();
    let mut one = one_pop(3, "geg", "gpga", "ga");

    // Record the real datagrams of the handshake and of some traffic.
    let capture = Capture::start(&one.site.veth);
    let mut edge = one.edge(&["--connect-timeout", "5s"]);
    let OnePop {
        pop,
        site,
        backend,
        edge_if,
        pop_if,
        edge_pub,
        a_pub,
        ..
    } = &mut one;
    let edge_port: u16 = run(&["wg", "show", edge_if, "listen-port"])
        .trim()
        .parse()
        .unwrap();
    let mut old = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        old.greeting(Duration::from_secs(15))
            .map(|g| g.0)
            .as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    old.echo(512 << 10).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let captured = capture.finish();
    let pop_addr = SocketAddrV4::new(site.ns_ip, pop.port);
    let to_edge: Vec<Vec<u8>> = captured
        .iter()
        .filter(|c| c.src == pop_addr && c.dst.port() == edge_port)
        .map(|c| c.payload.clone())
        .collect();
    let to_pop: Vec<Vec<u8>> = captured
        .iter()
        .filter(|c| c.dst == pop_addr && c.src.port() == edge_port)
        .map(|c| c.payload.clone())
        .collect();
    let kinds = |v: &[Vec<u8>]| {
        let mut k = [0usize; 5];
        for d in v {
            k[usize::from(d[0]).min(4)] += 1;
        }
        k
    };
    eprintln!(
        "captured {} datagrams to the edge (by type {:?}), {} to the POP (by type {:?})",
        to_edge.len(),
        kinds(&to_edge),
        to_pop.len(),
        kinds(&to_pop)
    );
    assert!(to_edge.iter().any(|d| d[0] == 4) && to_pop.iter().any(|d| d[0] == 4));

    // 100,000 to the edge, from a socket in the POP's namespace.
    let netns = std::fs::File::open(format!("/var/run/netns/{}", site.ns)).unwrap();
    let edge_at = SocketAddr::new(site.root_ip.into(), edge_port);
    let before_edge = udp_counters(None);
    let edge_flood = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace file we hold open; affects this thread only.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            flood(&socket, edge_at, 100_000, &to_edge, 0x9e37_79b9_7f4a_7c15)
        })
        .join()
        .unwrap()
    });
    let after_edge = udp_counters(None);
    eprintln!(
        "to the edge: {edge_flood:?}; root namespace UDP InDatagrams +{}, RcvbufErrors +{}, InErrors +{}",
        after_edge[0] - before_edge[0],
        after_edge[1] - before_edge[1],
        after_edge[2] - before_edge[2]
    );
    assert_eq!(edge_flood.replies, 0, "the edge answered garbage");
    assert!(alive(edge.pid()), "{:#?}", edge.log());

    // 100,000 to the POP, from a socket in the root namespace.
    let before_pop = udp_counters(Some(&site.ns));
    let socket = UdpSocket::bind(SocketAddr::new(site.root_ip.into(), 0)).unwrap();
    let pop_flood = flood(
        &socket,
        SocketAddr::V4(pop_addr),
        100_000,
        &to_pop,
        0x2545_f491_4f6c_dd1d,
    );
    let after_pop = udp_counters(Some(&site.ns));
    eprintln!(
        "to the POP: {pop_flood:?}; POP namespace UDP InDatagrams +{}, RcvbufErrors +{}, InErrors +{}",
        after_pop[0] - before_pop[0],
        after_pop[1] - before_pop[1],
        after_pop[2] - before_pop[2]
    );
    assert_eq!(pop_flood.replies, 0, "the POP answered garbage");
    assert!(alive(pop.pid()), "{:#?}", pop.log());

    // The tunnel still works: the old connection, and a new one.
    old.echo(512 << 10).unwrap();
    old.finish();
    let mut c = Client::connect(edge.addr, "207.237.0.2");
    assert_eq!(
        c.greeting(Duration::from_secs(15)).map(|g| g.0).as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    c.echo(1 << 20).unwrap();
    c.finish();
    // Neither side roamed to the flooding sockets.
    let a = dump_peer(edge_if, a_pub).unwrap();
    assert_eq!(a.endpoint, pop_addr.to_string());
    let e = dump_peer(pop_if, edge_pub).unwrap();
    assert_eq!(
        e.endpoint,
        SocketAddrV4::new(site.root_ip, edge_port).to_string()
    );
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);

    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    let status = pop.stop();
    assert!(status.success(), "{:#?}", pop.log());
}

/// The edge runs with `--wg-rekey-after 3s`: the session it initiated is
/// renewed every 3 s (instead of WireGuard's 120 s) while a stream flows,
/// three times over, and the stream never stalls or loses a byte.
#[test]
fn rekey_keeps_connections() {
    if skipped(skip_reason()) {
        return;
    }
    let _serial = serial();
    let mut one = one_pop(4, "ger", "gpra", "ra");
    let mut edge = one.edge(&["--connect-timeout", "5s", "--wg-rekey-after", "3s"]);
    let OnePop {
        pop,
        edge_if,
        pop_if,
        edge_pub,
        a_pub,
        ..
    } = &mut one;
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        c.greeting(Duration::from_secs(15)).map(|g| g.0).as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    let stream = Stream::start(c);
    stream.progresses("start", 256 << 10);
    let (a_hex, edge_hex) = (hex_key(a_pub), hex_key(edge_pub));
    let first = handshake_ns(edge_if, &a_hex);
    let first_at_pop = handshake_ns(pop_if, &edge_hex);
    assert!(first > 0 && first_at_pop > 0);

    // Wait for the edge (the session's initiator) to rekey three times.
    let start = Instant::now();
    let mut seen = vec![first];
    while seen.len() < 4 {
        // The socket derives the wall-clock time from a monotonic one, so
        // it jitters by microseconds between reads: a new handshake moves
        // it by seconds.
        let now = handshake_ns(edge_if, &a_hex);
        if now > *seen.last().unwrap() + 1_000_000_000 {
            seen.push(now);
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} rekeys within 60 s at a 3 s rekey time; edge: {:#?}",
            seen.len() - 1,
            edge.log()
        );
        stream.progresses("waiting for the rekeys", 16 << 10);
        std::thread::sleep(Duration::from_millis(200));
    }
    let rekeyed = *seen.last().unwrap();
    let gaps: Vec<String> = seen
        .windows(2)
        .map(|w| format!("{:.1} s", (w[1] - w[0]) as f64 / 1e9))
        .collect();
    for w in seen.windows(2) {
        assert!(
            w[1] - w[0] >= 2_800_000_000,
            "rekeyed sooner than 3 s: {gaps:?}"
        );
    }
    let at_pop = handshake_ns(pop_if, &edge_hex);
    stream.progresses("after the rekey", 1 << 20);
    let (total, max_gap) = stream.stop();
    // A new connection after the rekey.
    let mut c = Client::connect(edge.addr, "207.237.0.2");
    assert_eq!(
        c.greeting(Duration::from_secs(15)).map(|g| g.0).as_deref(),
        Some("pop-a")
    );
    c.echo(1 << 20).unwrap();
    c.finish();
    eprintln!(
        "3 rekeys {gaps:?} apart, the last {:.1} s after the first handshake (the POP's view moved by {:.1} s); \
         stream: {} KiB echoed intact, longest wait for an echo {max_gap:?}",
        (rekeyed - first) as f64 / 1e9,
        at_pop.saturating_sub(first_at_pop) as f64 / 1e9,
        total >> 10
    );
    assert!(
        at_pop > first_at_pop + 1_000_000_000,
        "the POP saw no new handshake"
    );
    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    let status = pop.stop();
    assert!(status.success(), "{:#?}", pop.log());
}

/// One source that answers the cookie challenge floods the edge's
/// WireGuard port with handshake initiations for a key that is no peer's
/// (30,000 a second, from a second address in the POP's namespace, for as
/// long as the checks take: about 10 s). The edge gives that source only its share of key
/// agreements, so the tunnel keeps carrying traffic: the POP's backend
/// stays healthy, new clients reach it, an old connection keeps echoing,
/// and the limiter counts what it dropped.
#[test]
fn a_valid_cookie_handshake_flood_from_one_source_leaves_the_tunnel_working() {
    if skipped(skip_reason()) {
        return;
    }
    let _serial = serial();
    let mut one = one_pop(5, "geh", "gpha", "ha");
    let mut edge = one.edge(&[
        "--connect-timeout",
        "5s",
        "--health-check-interval",
        "250ms",
        "--health-check-timeout",
        "1s",
        "--health-check-fall",
        "3",
        "--health-check-rise",
        "1",
    ]);
    let OnePop {
        pop,
        site,
        ov,
        edge_if,
        edge_pub,
        lab,
        ..
    } = &mut one;
    let edge_port: u16 = run(&["wg", "show", edge_if, "listen-port"])
        .trim()
        .parse()
        .unwrap();
    let metrics = edge.metrics.expect("metrics listener");
    let value = |series: &str| metric(&scrape(metrics), series).unwrap_or(0.0);
    let down = r#"edge_backend_health_state{backend="pop-a",state="down"}"#;
    let up = r#"edge_backend_health_state{backend="pop-a",state="up"}"#;
    eventually("pop-a healthy", Duration::from_secs(20), || {
        value(up) == 1.0
    });
    let mut old = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        old.greeting(Duration::from_secs(15))
            .map(|g| g.0)
            .as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    old.echo(256 << 10).unwrap();

    // The attacker: a second address on the POP namespace's side of the veth.
    let attacker_ip = std::net::Ipv4Addr::new(172, 30, *ov as u8, 3);
    run(&[
        "ip",
        "-n",
        &site.ns,
        "addr",
        "add",
        &format!("{attacker_ip}/24"),
        "dev",
        &lab.name("gn", "ha"),
    ]);
    let target: geoedge_wireguard::PublicKey = edge_pub.parse().unwrap();
    let netns = std::fs::File::open(format!("/var/run/netns/{}", site.ns)).unwrap();
    let edge_at = SocketAddr::new(site.root_ip.into(), edge_port);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut checks = Vec::new();
    let mut sources = Vec::new();
    let flood = std::thread::scope(|s| {
        let flooder = s.spawn(|| {
            // SAFETY: setns on a namespace file we hold open; affects this thread only.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let socket = UdpSocket::bind(SocketAddr::new(attacker_ip.into(), 0)).unwrap();
            flood_handshakes(
                &socket,
                edge_at,
                &target,
                30_000,
                Duration::from_secs(60),
                &stop,
            )
        });
        // Every 2 s while it floods: the backend's health, a new client
        // through the tunnel, and the old connection.
        let started = Instant::now();
        for i in 0..5 {
            std::thread::sleep(Duration::from_secs(2));
            let healthy = value(down) == 0.0 && value(up) == 1.0;
            let mut c = Client::connect(edge.addr, &format!("207.237.0.{}", 10 + i));
            let greeted = c.greeting(Duration::from_secs(5)).map(|g| g.0);
            let echoed = greeted.is_some() && c.echo(64 << 10).is_ok();
            let old_echoed = old.echo(64 << 10).is_ok();
            checks.push((started.elapsed(), healthy, greeted, echoed, old_echoed));
            sources.push(value("edge_wireguard_rate_limiter_sources"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flooder.join().unwrap()
    });
    let text = scrape(metrics);
    let series = |s: &str| metric(&text, s).unwrap_or(0.0);
    eprintln!(
        "flood: {flood:?}; edge: rate_limited {}, unknown_peer {}, unknown_peer_replays {}, cookie_replies {}, health timeouts {}",
        series(r#"edge_wireguard_drops_total{reason="rate_limited"}"#),
        series(r#"edge_wireguard_drops_total{reason="unknown_peer"}"#),
        series("edge_wireguard_unknown_peer_replays_total"),
        series("edge_wireguard_cookie_replies_total"),
        series(r#"edge_health_checks_total{result="timeout"}"#),
    );
    eprintln!("checks while flooding (at, healthy, greeted by, echoed, old echoed): {checks:#?}");
    eprintln!("sources the handshake limiter tracked while flooding: {sources:?}");
    for (at, healthy, greeted, echoed, old_echoed) in &checks {
        assert!(*healthy, "pop-a marked down {at:?} into the flood");
        assert_eq!(greeted.as_deref(), Some("pop-a"), "{at:?} into the flood");
        assert!(*echoed && *old_echoed, "no echo {at:?} into the flood");
    }
    // The flood did answer the cookie challenge, got no handshake, and
    // went on through every check.
    assert!(flood.cookies_taken >= 1, "{flood:?}");
    assert!(flood.sent >= 100_000, "{flood:?}");
    // (It stops at 60 s by itself: it was stopped, after the checks.)
    assert!(flood.elapsed < Duration::from_secs(60), "{flood:?}");
    assert_eq!(flood.other_replies, 0, "{flood:?}");
    assert!(series(r#"edge_wireguard_drops_total{reason="rate_limited"}"#) > 0.0);
    // The one flooding source is tracked while it floods.
    assert!(sources.iter().any(|&n| n >= 1.0), "{sources:?}");
    assert_eq!(
        series(r#"edge_connections_total{result="no_backend"}"#),
        0.0
    );
    old.echo(256 << 10).unwrap();
    old.finish();
    assert!(alive(edge.pid()), "{:#?}", edge.log());

    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    let status = pop.stop();
    assert!(status.success(), "{:#?}", pop.log());
}
