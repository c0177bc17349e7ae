//! The epoll engine (`--engine epoll`, the default) end to end: a real
//! `geoedge run` whose workers run their own edge-triggered epoll loop,
//! against backends on loopback. Each test passes `--engine epoll` itself
//! (so it tests the loop whatever `GEOEDGE_ENGINE` says) and checks what a
//! client or a backend sees, and what the metrics count:
//! - each engine runs one thread per worker and logs which engine it runs
//!   (here);
//! - routing by country (IPv4 and IPv6 clients), a 4 MiB echo arriving
//!   whole and in order, the `ok` and byte counters; half-close: a client's
//!   end-of-file still gets the whole answer, a backend's end-of-file
//!   half-closes the client or (`--half-close off`) closes it; failover past
//!   a refusing backend and past one that never answers
//!   (`--connect-timeout`), both counted against the backend, 200 clients
//!   failing over and echoing at once, intact; a reset mid-transfer, either
//!   way, reaches the other side as a reset; the idle timeout closes a quiet
//!   connection and spares a trickling one (`engine/relay.rs`);
//! - PROXY headers: v1 and v2 place the client, bytes behind the header
//!   reach the backend, a header that never comes times out, an untrusted
//!   source's header is payload, the backend gets the header it is
//!   configured for (`engine/proxy_header.rs`);
//! - the access log's lines and the per-client limits, kept by the loop;
//!   the drain: an open connection keeps relaying after SIGTERM while new
//!   ones are refused, and the process exits 0 once it closes; what the
//!   drain timeout cuts is reset (`engine/features.rs`);
//! - bulk transfers splice through pooled pipes on both engines, and open
//!   no pipe with `--splice off` (`engine/splice.rs`).
//!
//! The wait for another POP's lease runs in the loop too: the fleet's
//! tests (`fleet::`) cover it, on the default engine.
//!
//! Nothing here needs root or a namespace (a backend that never answers is
//! a listener whose backlog is full, see [`Unanswered`]).

use geoedge_testkit as support;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use geoedge_geoip::sample_address;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long any wait gives up after: a guard against a hang, not a timing
/// target.
const GIVE_UP: Duration = Duration::from_secs(20);

/// `geoedge run` as [`edge_args`] makes it (trusting PROXY headers from
/// loopback, sending PROXY v1 to backends), on the epoll engine with two
/// workers (unless `extra` says how many).
fn epoll_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = edge_args(db, extra);
    args.extend_from_slice(&["--engine", "epoll"]);
    if !extra.contains(&"--workers") {
        args.extend_from_slice(&["--workers", "2"]);
    }
    args
}

/// `geoedge run` on the epoll engine with two workers and no PROXY
/// settings, then `extra`.
fn bare_epoll_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--routing-db",
        db.to_str().unwrap(),
        "--region",
        "eu",
        "--metrics-listen",
        "127.0.0.1:0",
        "--engine",
        "epoll",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// One series' value in a fresh scrape of the edge's metrics (0 when
/// absent).
fn value(edge: &Edge, series: &str) -> f64 {
    let m = edge.metrics.expect("a metrics listener");
    tokio::task::block_in_place(|| metric(&scrape(m), series).unwrap_or(0.0))
}

/// `edge_connections_total` of one result.
fn conns(edge: &Edge, result: &str) -> f64 {
    value(
        edge,
        &format!(r#"edge_connections_total{{result="{result}"}}"#),
    )
}

/// Waits until `cond` holds ([`GIVE_UP`] at most).
async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    until(|| format!("not within {GIVE_UP:?}: {what}"), GIVE_UP, cond).await;
}

/// Waits until a series of the edge's metrics has this value.
async fn counted(edge: &Edge, series: &str, expected: f64) {
    let last = std::cell::Cell::new(0.0);
    until(
        || format!("{series} is {}, not {expected}", last.get()),
        GIVE_UP,
        || {
            last.set(value(edge, series));
            last.get() == expected
        },
    )
    .await;
}

/// The backend's greeting line (`backend=ID client=IP\n`) on a client
/// connection.
async fn greeting_line(c: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    tokio::time::timeout(GIVE_UP, c.read_line(&mut line))
        .await
        .expect("a greeting")
        .expect("a greeting");
    line
}

/// How a reader's stream ended.
#[derive(Debug, PartialEq)]
enum End {
    /// A clean end-of-file.
    Eof,
    /// A reset (or another error).
    Reset(ErrorKind),
}

/// Reads `r` to its end: what was read, and how it ended.
async fn read_until_end<R: AsyncRead + Unpin>(r: &mut R) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(GIVE_UP, r.read(&mut buf)).await {
            Err(_) => panic!("no end after {} bytes", got.len()),
            Ok(Ok(0)) => return (got, End::Eof),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return (got, End::Reset(e.kind())),
        }
    }
}

/// A backend on 127.0.0.1 that does `serve` with each connection, on a
/// thread of its own (the PROXY header, if any, still unread).
fn raw_backend(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// Reads one line (a PROXY v1 header) off `s`, byte by byte.
fn header_line(s: &mut std::net::TcpStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read_exact(&mut b).is_ok() {
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

/// A backend that reads each connection to its end-of-file, closes it and
/// sends what it read (PROXY header included) on the channel.
fn capturing_backend() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let addr = raw_backend(move |mut s| {
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        drop(s);
        let _ = tx.lock().unwrap().send(got);
    });
    (addr, rx)
}

/// The next connection a [`capturing_backend`] read.
fn captured(rx: &mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    tokio::task::block_in_place(|| rx.recv_timeout(GIVE_UP)).expect("a backend connection")
}

/// A PROXY v2 header (PROXY command, TCP over IPv4, no TLVs).
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// A loopback address where a connect is neither accepted nor refused for
/// as long as this lives: a listener with a backlog of zero whose one
/// queued connection (held here) is never accepted, so the kernel drops
/// every further SYN. (A blackholed route needs root; this does not.)
struct Unanswered {
    /// The listener.
    _listener: socket2::Socket,
    /// The connection that fills its accept queue.
    _filler: std::net::TcpStream,
    /// Its address.
    addr: SocketAddr,
}

impl Unanswered {
    fn new() -> Unanswered {
        let listener = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        listener
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let filler = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("the one connection the backlog holds");
        Unanswered {
            _listener: listener,
            _filler: filler,
            addr,
        }
    }
}

/// The names (`/proc/PID/task/*/comm`) of a process's worker threads
/// (`ge-worker-N`: within the 15 bytes the kernel keeps).
fn worker_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim_end().to_owned())
        .filter(|n| n.starts_with("ge-worker-"))
        .collect();
    names.sort();
    names
}

/// Waits until the edge has counted `up` bytes to backends and `down` to
/// clients.
async fn counted_bytes(edge: &Edge, up: u64, down: u64) {
    counted(edge, r#"edge_bytes_total{direction="up"}"#, up as f64).await;
    counted(edge, r#"edge_bytes_total{direction="down"}"#, down as f64).await;
}

/// Sends `echo`, then `n` pattern bytes and a half-close on `c` while
/// reading the echo back; asserts that it came back whole and in order,
/// then end-of-file (`what` says which case failed). Returns both halves,
/// still open.
async fn echo_whole(
    c: BufReader<TcpStream>,
    n: u64,
    what: &str,
) -> (
    tokio::io::ReadHalf<BufReader<TcpStream>>,
    tokio::io::WriteHalf<BufReader<TcpStream>>,
) {
    let (mut r, mut w) = tokio::io::split(c);
    let writer = tokio::spawn(async move {
        w.write_all(b"echo\n").await.unwrap();
        write_pattern(&mut w, n).await.unwrap();
        w.shutdown().await.unwrap();
        w
    });
    let echoed = tokio::time::timeout(GIVE_UP, read_pattern(&mut r))
        .await
        .expect("the echo ends");
    assert_eq!(
        echoed.unwrap(),
        Some(n),
        "{what}: the echo came back whole and in order, then end-of-file"
    );
    (r, writer.await.unwrap())
}

/// A routing.db (in its temporary directory) with one backend, `be`, in
/// region eu for Great Britain.
async fn one_backend() -> (tempfile::TempDir, std::path::PathBuf, Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);
    (dir, db, be)
}

/// Waits until the edge says it is ready (its workers are all started).
async fn ready(edge: &Edge) {
    let m = edge.metrics.expect("a metrics listener");
    eventually("ready", || {
        tokio::task::block_in_place(|| http_get(m, "/readyz").0 == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_engine_runs_one_thread_per_worker_and_says_which_engine_it_runs() {
    let (_dir, db, _be) = one_backend().await;
    for engine in ["epoll", "tokio"] {
        let edge = Edge::start(&edge_args(&db, &["--engine", engine, "--workers", "2"]));
        ready(&edge).await;
        let mut c = connect_as(edge.addr, sample_address("GB")).await;
        assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
        let expected = ["ge-worker-0", "ge-worker-1"];
        assert_eq!(worker_threads(edge.pid()), expected, "--engine {engine}");
        let started = format!("engine=\"{engine}\"");
        assert!(
            edge.log()
                .iter()
                .any(|l| l.contains("workers started") && l.contains(&started)),
            "--engine {engine}: no `workers started` line with {started}"
        );
    }
}

mod features;
mod proxy_header;
mod relay;
mod splice;
