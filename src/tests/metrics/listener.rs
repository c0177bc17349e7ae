//! The metrics and health listener under attack from its own port
//! (docs/reliability.md, "A flooded metrics port"): silent and trickling
//! connections must not delay `/readyz` past a probe's timeout, and are
//! closed at the header timeout; past the connection cap the oldest silent
//! one makes room for a probe.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::support::*;

/// An edge with its metrics listener, ready.
fn ready_edge(dir: &std::path::Path) -> Edge {
    let db = routing_db(dir);
    let edge = Edge::start(&edge_args(&db, &[]));
    let metrics = edge.metrics.unwrap();
    let t = Instant::now();
    while http_get(metrics, "/readyz").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(10), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    edge
}

/// `/readyz` as a probe asks it: how long the answer took and its status
/// (0: no answer within 10 s).
fn probe(metrics: SocketAddr) -> (Duration, u16) {
    let t = Instant::now();
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&metrics, Duration::from_secs(10)) else {
        return (t.elapsed(), 0);
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET /readyz HTTP/1.1\r\nHost: {metrics}\r\n\r\n");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (t.elapsed(), status)
}

/// How long after `opened` the edge closed `s` (reading nothing), at most
/// 20 s.
fn closed_after(mut s: std::net::TcpStream, opened: Instant) -> Duration {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return opened.elapsed(),
            Ok(_) => continue,
        }
    }
}

/// A connection that sends a request a byte every 100 ms (it would take
/// about 6 s); returns how long after it opened the edge closed it, and
/// whether that cut the request short (a write failed before its last
/// byte).
fn trickle(metrics: SocketAddr) -> std::thread::JoinHandle<(Duration, bool)> {
    let mut s = std::net::TcpStream::connect(metrics).unwrap();
    let opened = Instant::now();
    std::thread::spawn(move || {
        let request = format!("GET /readyz HTTP/1.1\r\nHost: {metrics}\r\nX: trickle\r\n\r\n");
        for b in request.bytes() {
            if s.write_all(&[b]).is_err() {
                return (opened.elapsed(), true);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (closed_after(s, opened), false)
    })
}

/// How many of `conns` the edge has not closed: a non-blocking peek finds
/// no end-of-stream on them.
fn still_open(conns: &[std::net::TcpStream]) -> usize {
    conns
        .iter()
        .filter(|s| {
            s.set_nonblocking(true).unwrap();
            let open = matches!(
                s.peek(&mut [0u8; 1]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            s.set_nonblocking(false).unwrap();
            open
        })
        .count()
}

fn count(metrics: SocketAddr, reason: &str) -> f64 {
    metric(
        &scrape(metrics),
        &format!("edge_metrics_connections_closed_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

/// 64 silent connections and 4 trickling ones: `/readyz` is answered
/// while all of them are still held (it does not wait for them to go), and
/// every one of them is closed by the header timeout (2 s): the trickling
/// ones before their request is complete.
#[test]
fn readyz_is_answered_while_silent_and_trickling_connections_hold_the_metrics_port() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let edge = ready_edge(dir.path());
    let metrics = edge.metrics.unwrap();
    let opened = Instant::now();
    let silent: Vec<_> = (0..64)
        .map(|_| std::net::TcpStream::connect(metrics).unwrap())
        .collect();
    let trickling: Vec<_> = (0..4).map(|_| trickle(metrics)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let probes: Vec<_> = (0..5)
        .map(|_| {
            let p = probe(metrics);
            std::thread::sleep(Duration::from_millis(100));
            p
        })
        .collect();
    let held = still_open(&silent);
    let closes: Vec<_> = silent
        .into_iter()
        .map(|s| std::thread::spawn(move || closed_after(s, opened)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let trickled: Vec<_> = trickling.into_iter().map(|t| t.join().unwrap()).collect();
    let slowest = probes.iter().map(|p| p.0).max().unwrap();
    let (first, last) = (closes.iter().min().unwrap(), closes.iter().max().unwrap());
    let timeouts = count(metrics, "header_timeout");
    eprintln!(
        "64 silent + 4 trickling: /readyz answered in {:?} (slowest {slowest:?}); silent closed \
         {first:?}..{last:?} after opening; trickling closed after {trickled:?}; \
         {timeouts} header timeouts counted",
        probes.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    for (took, status) in &probes {
        assert_eq!(*status, 200, "/readyz after {took:?}");
    }
    // Answered ahead of the attack, not once its connections were gone.
    assert_eq!(held, 64, "silent connections still open after the probes");
    // Closed by the header timeout (2 s), not at once; the count of header
    // timeouts says it was that timeout and not the connection's 10 s.
    assert!(
        *first >= Duration::from_millis(1500),
        "closed after {first:?}"
    );
    for (t, cut) in &trickled {
        assert!(cut, "a trickled request was completed ({t:?})");
    }
    assert!(timeouts >= 68.0, "{timeouts} header timeouts counted");
}

/// More silent connections than the listener holds (512): each new one
/// closes the oldest silent one, and `/readyz` is still answered at once.
#[test]
fn past_the_connection_cap_the_oldest_silent_connection_makes_room_for_a_probe() {
    raise_own_nofile();
    let dir = tempfile::tempdir().unwrap();
    let edge = ready_edge(dir.path());
    let metrics = edge.metrics.unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let base = fds(edge.pid());
    let mut silent = Vec::new();
    for _ in 0..600 {
        silent.push(std::net::TcpStream::connect(metrics).unwrap());
    }
    // Until the edge has taken them (it holds 512 of them; the baseline
    // may count a descriptor or two on their way out).
    let t = Instant::now();
    while fds(edge.pid()) < base + 500 && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let (took, status) = probe(metrics);
    let evicted = count(metrics, "evicted");
    eprintln!("600 silent: /readyz {status} in {took:?}; {evicted} evicted");
    assert_eq!(status, 200, "/readyz not answered within the probe's 10 s");
    // 88 made room for the others, one each for the probe and the scrape.
    assert!(evicted >= 88.0, "{evicted} evicted");
    drop(silent);
}
