//! geoedge's WireGuard backhaul end to end: a network namespace standing for
//! a backend POP runs Debian's `wireguard-go` and a backend server; geoedge
//! (`geoedge run`, in the root namespace) reads its peer from routing.db's
//! `wg_peers`, and proxies a client to the POP's backend through its own
//! userspace WireGuard interface. 64 MiB go each way with matching sha256,
//! and `wg show` on both sides shows the handshake.
//!
//! Needs root, /dev/net/tun, `ip`, `wireguard-go` and `wg`: it skips with a
//! printed reason where they are missing (and fails under CI when the tools
//! are missing). Everything it creates is removed, also on failure.

use geoedge_testkit as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};
use support::*;

fn skip_reason() -> Option<String> {
    privileged_skip_reason(&["ip", "wireguard-go", "wg"])
}

/// Stops the processes the test started and removes their sockets, also
/// when it panics (before the namespace and veth pair, declared earlier,
/// are deleted).
struct Cleanup {
    children: Vec<Child>,
    sockets: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// A backend inside the namespace: greets, then echoes until end-of-file.
fn backend_in_netns(ns: &Netns, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let h = ns.spawn(move || {
        let listener = TcpListener::bind(addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        // geoedge sends a PROXY v1 header first.
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut header = String::new();
        reader.read_line(&mut header).unwrap();
        assert!(header.starts_with("PROXY TCP4 207.237.0.1 "), "{header:?}");
        s.write_all(b"backend=pop-us\n").unwrap();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                s.shutdown(Shutdown::Write).unwrap();
                return;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("backend listening");
    h
}

#[test]
fn a_client_reaches_a_backend_in_another_pop_through_geoedges_wireguard() {
    if skipped(skip_reason()) {
        return;
    }
    // 64 MiB each way through two WireGuard implementations: not beside the
    // other heavy tests.
    let _heavy = HEAVY.blocking_lock();
    let pid = std::process::id();
    let n = 100 + pid % 100;
    let (ns, ve0, ve1) = (
        format!("gepop{pid}"),
        format!("gew0{pid}"),
        format!("gew1{pid}"),
    );
    let (pop_if, edge_if) = (format!("wgpop{pid}"), format!("ge{pid}"));
    let dir = tempfile::tempdir().unwrap();
    let (pop_key, pop_pub) = keypair(dir.path(), "pop.key");
    let (edge_key, edge_pub) = keypair(dir.path(), "edge.key");

    // The POP namespace, joined by a veth pair, running wireguard-go.
    sweep_stale_namespaces();
    let netns = Netns::new(ns.clone());
    let _veth = Veth::new(
        &ns,
        &ve0,
        &ve1,
        &format!("172.31.{n}.1/24"),
        &format!("172.31.{n}.2/24"),
    );
    let mut cleanup = Cleanup {
        children: Vec::new(),
        sockets: vec![
            format!("/var/run/wireguard/{pop_if}.sock"),
            format!("/var/run/wireguard/{edge_if}.sock"),
        ],
    };
    let wggo = Command::new("ip")
        .args(["netns", "exec", &ns, "wireguard-go", "-f", &pop_if])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cleanup.children.push(wggo);
    let sock = format!("/var/run/wireguard/{pop_if}.sock");
    for _ in 0..100 {
        if Path::new(&sock).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    run(&[
        "ip",
        "netns",
        "exec",
        &ns,
        "wg",
        "set",
        &pop_if,
        "listen-port",
        "51820",
        "private-key",
        pop_key.to_str().unwrap(),
        "peer",
        &edge_pub,
        "allowed-ips",
        &format!("10.78.{n}.1/32"),
    ]);
    run(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("10.78.{n}.2/24"),
        "dev",
        &pop_if,
    ]);
    run(&["ip", "-n", &ns, "link", "set", &pop_if, "mtu", "1420", "up"]);
    let backend_addr: SocketAddr = format!("10.78.{n}.2:9000").parse().unwrap();
    let backend = backend_in_netns(&netns, backend_addr);

    // routing.db: the POP's backend and the POP as a WireGuard peer.
    let db = routing_db(dir.path());
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit)
               VALUES ('pop-us', 'us', 'US', '{}', 9000, 100, 200);
             INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
               VALUES ('{pop_pub}', '172.31.{n}.2:51820', '10.78.{n}.0/24, 10.178.{n}.0/24', 25, 'us');",
            backend_addr.ip()
        ),
    );

    let mut edge = Edge::start(&edge_args(
        &db,
        &[
            "--connect-timeout",
            "10s",
            "--wg-interface",
            &edge_if,
            "--wg-listen-port",
            "0",
            "--wg-private-key-file",
            edge_key.to_str().unwrap(),
            "--wg-address",
            &format!("10.78.{n}.1/24"),
        ],
    ));

    // Allowed IPs beyond the interface's own subnet are routed into it.
    let routes = run(&["ip", "route", "show", "dev", &edge_if]);
    assert!(routes.contains(&format!("10.178.{n}.0/24")), "{routes}");

    // A client in New York, through the tunnel, 64 MiB each way.
    let mut client = TcpStream::connect(edge.addr).unwrap();
    client
        .write_all(
            format!(
                "PROXY TCP4 207.237.0.1 127.0.0.1 40000 {}\r\n",
                edge.addr.port()
            )
            .as_bytes(),
        )
        .unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).unwrap();
    assert_eq!(greeting, "backend=pop-us\n", "log: {:#?}", edge.log());
    const TOTAL: usize = 64 << 20;
    let mut writer = client.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let mut hash = Sha256::new();
        let mut chunk = vec![0u8; 65536];
        let mut state = 0x9e37_79b9_u32;
        for _ in 0..TOTAL / chunk.len() {
            for b in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            hash.update(&chunk);
            writer.write_all(&chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
        hash.finalize()
    });
    let mut received = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 65536];
    loop {
        let k = reader.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        received.update(&buf[..k]);
        total += k;
    }
    let sent = sending.join().unwrap();
    assert_eq!(total, TOTAL);
    assert_eq!(
        received.finalize(),
        sent,
        "64 MiB each way with the same sha256"
    );
    backend.join().unwrap();

    // wg show on both sides: the POP's wireguard-go and geoedge's own socket.
    let pop_show = run(&["ip", "netns", "exec", &ns, "wg", "show", &pop_if]);
    assert!(pop_show.contains("latest handshake"), "{pop_show}");
    let edge_show = run(&["wg", "show", &edge_if]);
    assert!(
        edge_show.contains(&pop_pub) && edge_show.contains("latest handshake"),
        "{edge_show}"
    );
    assert!(edge_show.contains("transfer:"), "{edge_show}");

    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    assert!(!Path::new(&format!("/var/run/wireguard/{edge_if}.sock")).exists());
    drop(cleanup);
}

/// Test namespaces name their creator's pid after `ge` and letters; any
/// other shape is never taken for a test's.
#[test]
fn test_namespace_names_yield_their_pid() {
    assert_eq!(namespace_pid("gepop1234"), Some(1234));
    assert_eq!(namespace_pid("gepnca98765"), Some(98765));
    for other in [
        "ge1234", "gepop", "gepop12a", "gepnc1a2", "xgepop12", "gepop1", "gePop12",
    ] {
        assert_eq!(namespace_pid(other), None, "{other}");
    }
}

/// The sweep removes a test namespace whose process is gone and keeps one
/// whose process is alive.
#[test]
fn stale_test_namespaces_are_swept_and_live_ones_kept() {
    if skipped(privileged_skip_reason(&["ip"])) {
        return;
    }
    // A pid that existed and is gone: a child that has exited and been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let (stale, live) = (
        format!("gesws{dead}"),
        format!("geswl{}", std::process::id()),
    );
    let live_ns = Netns::new(live.clone());
    run(&["ip", "netns", "add", &stale]);
    let reused = Path::new(&format!("/proc/{dead}")).exists();
    sweep_stale_namespaces();
    let exists = |ns: &str| Path::new(&format!("/var/run/netns/{ns}")).exists();
    assert!(exists(&live), "a live test's namespace was removed");
    if reused {
        // The pid was taken again meanwhile: the namespace must be kept.
        assert!(exists(&stale));
        let _ = Command::new("ip").args(["netns", "del", &stale]).status();
    } else {
        assert!(!exists(&stale), "a stale namespace was kept");
    }
    drop(live_ns);
}
