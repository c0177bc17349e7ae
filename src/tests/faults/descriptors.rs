//! Out of descriptors while dialing: errors of this host are not blamed on
//! the backend (docs/reliability.md, "Out of descriptors while dialing").
//!
//! geoedge starts under `RLIMIT_NOFILE` 1,024 with `--max-connections`
//! far above what that holds (it is lowered to what the descriptors hold).
//! The soft limit is then lowered under the running process (`prlimit`),
//! standing in for descriptors taken by something else, and clients that
//! hold their connections use up the rest: some backend sockets cannot be
//! opened (`EMFILE`), and silent clients then take every descriptor left,
//! so the active checks cannot open theirs either. A healthy backend must
//! come out of it never ejected and never down, the failures counted as
//! local, and a new client must be served at once when the clients leave.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::support::*;

/// A client address for connection `i`.
fn claim(i: usize) -> IpAddr {
    IpAddr::from([81, 3, (i / 250) as u8, (i % 250) as u8])
}

/// A client that asks the backend to hold the connection: the connection
/// once the backend greeted it, or how the edge refused it.
async fn hold(
    edge: SocketAddr,
    claim: IpAddr,
    within: Duration,
) -> Result<BufReader<TcpStream>, &'static str> {
    let mut s = TcpStream::connect(edge).await.map_err(|_| "reset")?;
    let header = format!(
        "PROXY TCP4 {claim} 127.0.0.1 40000 {}\r\nhold\n",
        edge.port()
    );
    s.write_all(header.as_bytes()).await.map_err(|_| "reset")?;
    let mut c = BufReader::new(s);
    let mut line = String::new();
    match tokio::time::timeout(within, c.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 && line.starts_with("backend=") => Ok(c),
        Ok(Ok(_)) | Ok(Err(_)) => Err("refused"),
        Err(_) => Err("no answer"),
    }
}

fn value(metrics: SocketAddr, series: &str) -> f64 {
    metric(&scrape(metrics), series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_backend_is_not_blamed_and_clients_are_served_once_they_free() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 10_000, 10_000);
    let args = edge_args(
        &db,
        &[
            "--workers",
            "1",
            "--max-connections",
            "100000",
            "--proxy-header-timeout",
            "60s",
            "--connect-attempts",
            "1",
        ],
    );
    let mut cmd = geoedge();
    cmd.args(&args)
        .env("RUST_LOG", "info")
        // Not a multiple of the 100 ms accept pause: in step with it, each
        // check would take the descriptor accept is waiting for.
        .env("GEOEDGE_HEALTH_CHECK_INTERVAL", "130ms")
        .env("GEOEDGE_HEALTH_CHECK_FALL", "3")
        .env("GEOEDGE_EJECT_AFTER", "3");
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let rl = libc::rlimit {
                rlim_cur: 1024,
                rlim_max: 1024,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut edge = Edge::spawn(cmd, "listening ");
    let (pid, addr, metrics) = (edge.pid(), edge.addr, edge.metrics.unwrap());

    // `--max-connections 100000` is lowered to what 1,024 descriptors hold:
    // (1,024 − 64 − 128) / 2.
    assert_eq!(value(metrics, "edge_connections_limit"), 416.0);
    assert!(
        edge.log()
            .iter()
            .any(|l| l.contains("above what the descriptor limit holds")),
        "a warning says the limit was lowered"
    );
    drop(
        hold(addr, claim(0), Duration::from_secs(5))
            .await
            .expect("a first client"),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = fds(pid);

    // Room for 100 clients (two descriptors each) and one descriptor more
    // under the new soft limit: enough to accept a client, not to open its
    // backend socket.
    let mut soft = (baseline + 201) as u64;
    set_nofile(pid, soft, 1024);

    // Clients one after the other: the first 100 are served, then each new
    // one is accepted and refused at once, until 20 have been.
    let (mut held, mut refused, mut queued) = (Vec::new(), 0, 0);
    for i in 1..=300 {
        match hold(addr, claim(i), Duration::from_secs(2)).await {
            Ok(c) => held.push(c),
            Err("no answer") => {
                // The baseline was off by one: every descriptor is taken
                // and the client waits in the accept queue. One more.
                queued += 1;
                assert!(queued < 5, "clients stay queued: {queued}");
                soft += 1;
                set_nofile(pid, soft, 1024);
            }
            Err(_) => refused += 1,
        }
        if refused == 20 {
            break;
        }
    }
    // Then silent clients (no PROXY header yet: one descriptor each) take
    // the last descriptor, so the active checks cannot open a socket
    // either, for 1.5 s: 11 checks at 130 ms, over 3 times the fall of 3.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let full = Instant::now();
    while fds(pid) < soft as usize {
        assert!(full.elapsed() < Duration::from_secs(10), "never full");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let peak = fds(pid);
    assert!(edge.try_wait().is_none(), "geoedge stays up");

    // The clients leave; descriptors come back.
    let proxied = held.len();
    let left = Instant::now();
    drop(held);
    drop(silent);
    while fds(pid) > baseline + 10 {
        assert!(
            left.elapsed() < Duration::from_secs(10),
            "descriptors not back: {} (baseline {baseline})",
            fds(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new client is served at its first attempt.
    let served = hold(addr, claim(1000), Duration::from_secs(5)).await;
    let text = scrape(metrics);
    let count = |s: &str| metric(&text, s).unwrap_or(0.0) as u64;
    let local_connects = count(r#"edge_connect_failures_total{backend="be",reason="local"}"#);
    let other_connects = count(r#"edge_connect_failures_total{backend="be",reason="other"}"#);
    let local_clients = count(r#"edge_connections_total{result="local_error"}"#);
    let local_checks = count(r#"edge_health_checks_total{result="local"}"#);
    let other_checks = count(r#"edge_health_checks_total{result="other"}"#);
    let ok_checks = count(r#"edge_health_checks_total{result="ok"}"#);
    let ejections = count(r#"edge_backend_ejections_total{backend="be"}"#);
    let up = count(r#"edge_backend_up{backend="be"}"#);
    let accept_paused = count(r#"edge_accept_errors_total{reason="out_of_fds"}"#);
    eprintln!(
        "soft limit {soft} (baseline {baseline} descriptors, {peak} at the peak): \
         {proxied} proxied, {refused} refused, {queued} queued; \
         connect failures local {local_connects}, other {other_connects}; \
         clients refused local_error {local_clients}; health checks ok {ok_checks}, \
         local {local_checks}, other {other_checks}; accept pauses {accept_paused}; \
         ejections {ejections}, backend up {up}; a new client after the others left: {:?}",
        served.as_ref().map(|_| "served")
    );
    assert_eq!(ejections, 0, "the backend was ejected");
    assert_eq!(up, 1, "the backend is down");
    assert_eq!(other_connects, 0, "local errors counted as the backend's");
    assert_eq!(
        other_checks, 0,
        "local check errors counted as the backend's"
    );
    assert!(local_connects > 0, "no connect failed locally");
    assert_eq!(
        local_clients, local_connects,
        "one refused client per local failure"
    );
    assert!(local_checks > 0, "no health check failed locally");
    assert!(proxied >= 90, "{proxied} proxied");
    assert_eq!(refused, 20);
    served.expect("a new client is served at once once descriptors are free");
}
