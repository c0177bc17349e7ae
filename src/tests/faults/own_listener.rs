//! A backend row at one of the edge's own listeners would send every client
//! (and every active health check) back into the edge, each connection
//! opening another: such a table is refused, at start and on reload. An
//! address that becomes the edge's own after the table was loaded (here: an
//! address added to the host) is caught at run time: the connection that
//! comes back is reset, counted `loop`, and the backend ejected.

use std::time::{Duration, Instant};

use super::support::*;
use super::{reloads, route, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_the_edges_own_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let backend = Backend::start("real").await;
    add_backend(&db, "real", "eu", "GB", backend.addr, 100, 200);
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut args = edge_args(&db, &["--health-check-interval", "200ms"]);
    args[2] = &listen;
    let mut edge = Edge::start(&args);
    assert_eq!(edge.addr.port(), port);

    // A row pointing at the listener (through loopback, as an operator
    // copying this POP's address would write it) is refused; the table in
    // service keeps routing to the real backend.
    let invalid = reloads(&edge, "invalid");
    let looping = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    add_backend(&db, "self", "eu", "GB", looping, 100, 200);
    within(
        "the looping row refused",
        Instant::now(),
        Duration::from_secs(10),
        || reloads(&edge, "invalid") > invalid,
    );
    for _ in 0..5 {
        assert_eq!(route(&edge).await.as_deref(), Some("real"));
    }
    let log = edge.log().join("\n");
    assert!(log.contains("own listeners"), "{log}");
    // No connection went round: the edge saw only the test's clients.
    let conns = scrape(edge.metrics.unwrap());
    let total: f64 = conns
        .lines()
        .filter(|l| l.starts_with("edge_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 5.0, "{conns}");
    let status = edge.signal_and_wait("TERM", Duration::from_secs(35));
    assert!(status.success(), "{status}");

    // At start, the same table is refused with the same reason.
    let out = geoedge().args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("own listeners"), "{err}");
}

/// Runs `f` on a thread inside network namespace `ns`: the sockets it
/// opens are the namespace's.
fn in_namespace<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    use std::os::fd::AsRawFd;
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: a namespace file just opened; setns changes only this
        // thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// A network namespace, deleted when dropped (also when the test fails).
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

/// What a client sees of one connection through the edge at `addr` that
/// sends `hello`: `Ok(bytes)` when the stream ended cleanly, `Err` when it
/// was reset.
fn exchange(addr: std::net::SocketAddr) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"hello")?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got)
}

#[test]
fn a_backend_address_that_becomes_the_edges_own_is_caught_at_run_time() {
    if let Some(reason) = privileged_skip_reason(&["ip", "sqlite3"]) {
        skip(&reason);
        return;
    }
    sweep_stale_namespaces();
    let ns = Namespace(format!("geloop{}", std::process::id()));
    run(&["ip", "netns", "add", &ns.0]);
    run(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Not an address of the namespace when the table loads: the row passes
    // the reload-time check.
    let looping: std::net::SocketAddr = "10.77.0.1:18080".parse().unwrap();
    add_backend(&db, "self", "eu", "GB", looping, 100, 200);
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns.0])
        .arg(env!("CARGO_BIN_EXE_geoedge"))
        .args(["run", "--listen", "0.0.0.0:18080", "--routing-db"])
        .arg(&db)
        .args(["--region", "eu", "--metrics-listen", "127.0.0.1:19090"])
        .env("RUST_LOG", "geoedge=debug,info");
    let edge = Edge::spawn(cmd, "listening ");
    // Now it is: connections to the backend come back to the listener.
    run(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        "10.77.0.1/32",
        "dev",
        "lo",
    ]);

    let listener: std::net::SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let metrics: std::net::SocketAddr = "127.0.0.1:19090".parse().unwrap();
    let first = in_namespace(&ns.0, move || exchange(listener));
    // The client's transfer looks aborted, never complete.
    assert!(
        first.is_err(),
        "a looped connection ended cleanly: {first:?}"
    );
    let text = in_namespace(&ns.0, move || scrape(metrics));
    let loops = metric(&text, r#"edge_connections_total{result="loop"}"#).unwrap_or(0.0);
    assert!(loops >= 1.0, "{text}");
    // The loop went round a hop or two, not on and on.
    let total: f64 = text
        .lines()
        .filter(|l| l.starts_with("edge_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(total <= 4.0, "{text}");
    // The backend is ejected: the next client is refused at once, without
    // another loop.
    let second = in_namespace(&ns.0, move || exchange(listener));
    let text = in_namespace(&ns.0, move || scrape(metrics));
    assert_eq!(
        metric(&text, r#"edge_connections_total{result="loop"}"#),
        Some(loops),
        "{second:?}\n{text}"
    );
    assert!(
        metric(&text, r#"edge_connections_total{result="no_backend"}"#) >= Some(1.0),
        "{second:?}\n{text}"
    );
    assert!(
        metric(&text, r#"edge_backend_ejections_total{backend="self"}"#) >= Some(1.0),
        "{text}"
    );
    let log = edge.log().join("\n");
    assert!(log.contains("connection loop"), "{log}");
    drop(edge);
}
