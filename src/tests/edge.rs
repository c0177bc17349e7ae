//! `geoedge run` and `geoedge demo` end to end over loopback: a real geoedge
//! process, in-process backends, routing.db edited by the `sqlite3` CLI
//! while traffic flows, and the sample, GeoLite2-City and DB-IP City Lite
//! databases.

use geoedge_testkit as support;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use geoedge_geoip::sample_address;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// Polls until `cond` holds (5 s at most).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn three_regions(geoip: Option<&Path>) {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (eu, us, sa) = (
        Backend::start("eu-1").await,
        Backend::start("us-1").await,
        Backend::start("sa-1").await,
    );
    add_backend(&db, "eu-1", "eu", "GB", eu.addr, 100, 200);
    add_backend(&db, "us-1", "us", "US", us.addr, 100, 200);
    add_backend(&db, "sa-1", "sa", "BR", sa.addr, 100, 200);
    let geoip_arg = geoip.map(|p| p.to_str().unwrap().to_owned());
    let mut extra = Vec::new();
    if let Some(g) = &geoip_arg {
        extra.extend(["--geoip", g.as_str()]);
    }
    let edge = Edge::start(&edge_args(&db, &extra));
    for (country, backend) in [
        ("GB", "eu-1"),
        ("US", "us-1"),
        ("BR", "sa-1"),
        ("FR", "eu-1"),
        ("DE", "eu-1"),
    ] {
        let claim = sample_address(country);
        let mut c = connect_as(edge.addr, claim).await;
        assert_eq!(
            greeting(&mut c).await.as_deref(),
            Some(backend),
            "{country} {claim} ({geoip:?})"
        );
    }
    // A client that is not trusted (no PROXY header accepted) is placed by its socket address.
    let mut plain = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    plain
        .write_all(b"PROXY TCP4 81.2.69.1 127.0.0.1 1 2\r\n")
        .await
        .unwrap();
    drop(plain);
}

#[tokio::test]
async fn geo_routing_with_the_sample_mmdb() {
    three_regions(None).await;
}

#[tokio::test]
async fn geo_routing_with_geolite2_city() {
    if let Some(p) = real_db("GeoLite2-City.mmdb") {
        three_regions(Some(&p)).await;
    }
}

#[tokio::test]
async fn geo_routing_with_dbip_city_lite() {
    if let Some(p) = real_db("dbip-city-lite-latest.mmdb") {
        three_regions(Some(&p)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_limit_holds_under_500_concurrent_connects() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let only = Backend::start("only").await;
    add_backend(&db, "only", "eu", "GB", only.addr, 50, 50);
    let edge = Edge::start(&edge_args(&db, &[]));
    let addr = edge.addr;
    let clients: Vec<_> = (0..500u32)
        .map(|i| {
            tokio::spawn(async move {
                let claim = IpAddr::from([81, 2, (i / 250) as u8, (i % 250) as u8]);
                let mut c = connect_as(addr, claim).await;
                let got = greeting(&mut c).await;
                if got.is_some() {
                    c.get_mut().write_all(b"hold\n").await.unwrap();
                }
                (got, c)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut served = 0;
    for c in clients {
        let (got, conn) = c.await.unwrap();
        served += got.is_some() as usize;
        held.push(conn);
    }
    assert_eq!(
        served, 50,
        "exactly the hard limit is served while all are held"
    );
    assert!(only.seen.max_open.load(Ordering::SeqCst) <= 50);
    assert_eq!(only.seen.accepted.load(Ordering::SeqCst), 50);
    // Releasing them frees the slots.
    drop(held);
    eventually("slots released", || {
        only.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
    let mut again = connect_as(addr, "81.2.69.1".parse().unwrap()).await;
    assert_eq!(greeting(&mut again).await.as_deref(), Some("only"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stickiness_holds_and_moves_on_drain_without_dropping_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, b) = (Backend::start("gb-a").await, Backend::start("gb-b").await);
    add_backend(&db, "gb-a", "eu", "GB", a.addr, 100, 200);
    add_backend(&db, "gb-b", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let x: IpAddr = "81.2.69.10".parse().unwrap();

    // X lands on gb-a (ties break by id) and holds the connection.
    let mut first = connect_as(edge.addr, x).await;
    assert_eq!(greeting(&mut first).await.as_deref(), Some("gb-a"));
    first.get_mut().write_all(b"echo\n").await.unwrap();
    // gb-a is now the busier one, yet X's reconnects return to it.
    for _ in 0..5 {
        let mut c = connect_as(edge.addr, x).await;
        assert_eq!(greeting(&mut c).await.as_deref(), Some("gb-a"), "sticky");
    }
    // Another client goes to the less loaded gb-b.
    let mut other = connect_as(edge.addr, "81.2.69.20".parse().unwrap()).await;
    assert_eq!(greeting(&mut other).await.as_deref(), Some("gb-b"));

    // Long-lived streams on both backends keep flowing through 20 edits.
    let mut streams = Vec::new();
    for i in 0..8u8 {
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, 100 + i])).await;
        assert!(greeting(&mut c).await.is_some());
        c.get_mut().write_all(b"echo\n").await.unwrap();
        streams.push(c);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pumps: Vec<_> = streams
        .into_iter()
        .map(|mut c| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut sent = 0u64;
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let chunk: Vec<u8> = (sent..sent + 1024).map(pattern).collect();
                    c.get_mut().write_all(&chunk).await.expect("stream dropped");
                    let mut got = 0;
                    while got < chunk.len() {
                        let n = c
                            .read(&mut buf[..chunk.len() - got])
                            .await
                            .expect("stream dropped");
                        assert!(n > 0, "stream closed by the edge");
                        assert_eq!(&buf[..n], &chunk[got..got + n], "stream corrupted");
                        got += n;
                    }
                    sent += 1024;
                }
                sent
            })
        })
        .collect();
    for i in 0..20 {
        let healthy = i % 2;
        sqlite3(
            &db,
            &format!("UPDATE backends SET healthy = {healthy} WHERE id = 'gb-a';"),
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Drained (the last edit set healthy = 1; drain it for good now).
    sqlite3(&db, "UPDATE backends SET healthy = 0 WHERE id = 'gb-a';");
    let mut moved = None;
    for _ in 0..100 {
        let mut c = connect_as(edge.addr, x).await;
        moved = greeting(&mut c).await;
        if moved.as_deref() == Some("gb-b") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        moved.as_deref(),
        Some("gb-b"),
        "X moves when its backend is drained"
    );
    // And stays on gb-b when gb-a comes back: the new binding is sticky.
    sqlite3(&db, "UPDATE backends SET healthy = 1 WHERE id = 'gb-a';");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = connect_as(edge.addr, x).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("gb-b"));

    stop.store(true, Ordering::SeqCst);
    for p in pumps {
        assert!(p.await.expect("no stream dropped during the edits") > 0);
    }
    // The first connection is still open and echoing.
    first.get_mut().write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

#[tokio::test]
async fn a_refusing_backend_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // A port with nothing listening: connections are refused.
    let refusing = Refusing::new();
    let dead = refusing.addr;
    let alive = Backend::start("alive").await;
    add_backend(&db, "dead", "eu", "GB", dead, 100, 200);
    add_backend(&db, "alive", "eu", "DE", alive.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    for i in 0..5u8 {
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, i])).await;
        assert_eq!(greeting(&mut c).await.as_deref(), Some("alive"));
    }
    // With one attempt only, the refusing backend is not bypassed.
    let edge1 = Edge::start(&edge_args(&db, &["--connect-attempts", "1"]));
    let mut c = connect_as(edge1.addr, "81.2.69.77".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await, None);
}

/// Reliability item 6: half-close in each direction with 10 MiB payloads,
/// every byte arrives (docs/reliability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_both_ways_with_mebibytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let n: u64 = 10 << 20;

    // Client -> backend, then the client half-closes; the answer still comes back.
    let started = std::time::Instant::now();
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut()
        .write_all(format!("sink {n}\n").as_bytes())
        .await
        .unwrap();
    write_pattern(c.get_mut(), n).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let mut answer = String::new();
    c.read_line(&mut answer).await.unwrap();
    assert_eq!(
        answer, "ok\n",
        "all {n} bytes arrived intact after the client's half-close"
    );
    eprintln!(
        "client half-close: {n} bytes up, answer after {:?}",
        started.elapsed()
    );

    // Backend -> client, then the backend half-closes; the client still sends.
    let started = std::time::Instant::now();
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut()
        .write_all(format!("source {n}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_pattern(&mut c).await.unwrap(),
        Some(n),
        "backend's bytes, then its EOF"
    );
    write_pattern(c.get_mut(), n).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).await.unwrap();
    eventually("backend got the client's bytes", || {
        !be.received.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(be.received.lock().unwrap()[0], n);
    eprintln!(
        "backend half-close: {n} bytes down, then {n} up, in {:?}",
        started.elapsed()
    );
}

/// Reliability item 7: with `--idle-timeout 2s` the connection closes
/// between 2.0 and 2.5 s after its last byte, and its slot is released.
#[tokio::test]
async fn idle_connections_are_closed_and_release_their_slot() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 1, 1);
    let edge = Edge::start(&edge_args(&db, &["--idle-timeout", "2s"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    // The last byte (the clock is read first: the relay sees the byte later).
    let last_byte = std::time::Instant::now();
    c.get_mut().write_all(b"echo\n").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
    let closed = last_byte.elapsed();
    assert!(r.is_ok(), "closed after the idle timeout");
    assert!(buf.is_empty(), "{buf:?}");
    eprintln!("idle timeout 2 s: closed {closed:?} after the last byte");
    assert!(
        closed >= Duration::from_secs(2) && closed <= Duration::from_millis(2500),
        "closed {closed:?} after the last byte, not within 2.0..=2.5 s"
    );
    // Its only slot (hard limit 1) is free again.
    eventually("backend side closed", || {
        be.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
    let mut again = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut again).await.as_deref(), Some("be"));
}

#[tokio::test]
async fn malformed_proxy_headers_never_reach_a_backend() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let bad: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PROXY TCP4 81.2.69.1\r\n",
        b"PROXY TCP4 300.2.69.1 127.0.0.1 1 2\r\n",
        b"PROXY TCP6 81.2.69.1 127.0.0.1 1 2\r\n",
        b"PROXY TCP4 81.2.69.1 127.0.0.1 1 99999\r\n",
        b"\r\n\r\n\x00\r\nQUIT\n\x13\x11\x00\x0c", // v2, bad version nibble
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04\x01\x02\x03\x04", // v2, address block too short
    ];
    for header in bad {
        let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(header).await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "closed promptly: {header:?}");
        assert!(buf.is_empty(), "{header:?}");
    }
    // Truncated headers, then the client gives up.
    for header in [&b"PROXY TCP4 81.2.69"[..], &b"\r\n\r\n\x00\r\nQU"[..]] {
        let mut s = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(header).await.unwrap();
        s.shutdown().await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(buf.is_empty());
    }
    // A good one afterwards works, and it is the only backend connection.
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    assert_eq!(be.seen.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn demo_routes_three_countries_and_stops_on_sigint() {
    let mut demo = Edge::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let addr = demo.addr.to_string();
    // The demo serves metrics and health checks, as `run` does.
    let metrics = demo.metrics.expect("the demo prints its metrics address");
    tokio::runtime::Runtime::new().unwrap().block_on(until(
        || "the demo never turned ready".into(),
        Duration::from_secs(20),
        || http_get(metrics, "/readyz").0 == 200,
    ));
    assert_eq!(http_get(metrics, "/healthz").0, 200);
    let mut backends = Vec::new();
    for ip in ["81.2.69.1", "207.237.0.1", "200.160.0.1"] {
        let out = geoedge()
            .args(["probe", &addr, "--as", ip])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        assert!(line.contains(&format!("client={ip}")), "{line}");
        backends.push(line.split_whitespace().next().unwrap().to_owned());
    }
    assert_eq!(
        backends,
        ["backend=eu-demo", "backend=us-demo", "backend=sa-demo"]
    );
    // And the admin endpoints: the London client's binding, live.
    let (status, body) = http_get(metrics, "/bindings?client=81.2.69.1");
    assert_eq!(status, 200, "{body}");
    let binding: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(binding["backend"], "eu-demo", "{binding}");
    let text = scrape(metrics);
    assert_eq!(
        metric(&text, r#"edge_backend_eligible{backend="eu-demo"}"#),
        Some(1.0),
        "{text}"
    );
    let status = demo.signal_and_wait("INT", Duration::from_secs(10));
    assert!(status.success(), "{status:?}: {:#?}", demo.log());
}

#[test]
fn probe_names_both_reasons_an_edge_closes_without_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // A backend whose connects are refused: the edge has one for the
    // client, yet closes the connection as when it has none.
    let refusing = Refusing::new();
    add_backend(&db, "gone", "eu", "GB", refusing.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let out = geoedge()
        .args(["probe", &edge.addr.to_string(), "--as", "81.2.69.1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no backend for 81.2.69.1")
            && stderr.contains("every connect to one failed"),
        "{stderr}"
    );
}
