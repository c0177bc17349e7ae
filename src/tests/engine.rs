//! The epoll engine (`--engine epoll`) end to end: a real `geoedge run`
//! whose workers run their own edge-triggered epoll loop, against
//! backends on loopback. Each test passes `--engine epoll` itself (so it
//! tests the loop whatever `GEOEDGE_ENGINE` says) and checks what a client
//! or a backend sees, and what the metrics count:
//! - each engine runs one thread per worker and logs which engine it runs;
//! - routing by country (IPv4 and IPv6 clients), a 4 MiB echo arriving
//!   whole and in order, the `ok` and byte counters;
//! - half-close: a client's end-of-file still gets the whole answer; a
//!   backend's end-of-file half-closes the client, or (`--half-close off`)
//!   closes it;
//! - failover past a refusing backend and past one that never answers
//!   (`--connect-timeout`), both counted against the backend; 200 clients
//!   failing over and echoing at once, intact;
//! - a reset mid-transfer, either way, reaches the other side as a reset;
//! - the idle timeout closes a quiet connection and spares a trickling one;
//! - PROXY headers: v1 and v2 place the client, bytes behind the header
//!   reach the backend, a header that never comes times out, an untrusted
//!   source's header is payload, the backend gets the header it is
//!   configured for;
//! - the access log's lines and the per-client limits, kept by the loop;
//! - the drain: an open connection keeps relaying after SIGTERM while new
//!   ones are refused, and the process exits 0 once it closes; what the
//!   drain timeout cuts is reset;
//! - bulk transfers splice through pooled pipes on both engines, and open
//!   no pipe with `--splice off` (`engine/splice.rs`).
//!
//! The wait for another POP's lease runs in the loop too: the fleet's
//! tests (`fleet::`) cover it when `.ci/run` runs them on this engine.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_their_countrys_backend_and_4_mib_each_way_arrives_whole_and_counted() {
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
    let edge = Edge::start(&epoll_args(&db, &[]));

    let mut down = 0u64;
    let mut served = 0.0;
    for (claim, backend) in [
        (sample_address("GB"), "eu-1"),
        (sample_address("US"), "us-1"),
        (sample_address("BR"), "sa-1"),
        (sample_address("FR"), "eu-1"),
        // A London IPv6 client (a TCP6 header over IPv4).
        ("2001:8b0::1".parse().unwrap(), "eu-1"),
    ] {
        let mut c = connect_as(edge.addr, claim).await;
        let line = greeting_line(&mut c).await;
        assert_eq!(line, format!("backend={backend} client={claim}\n"),);
        down += line.len() as u64;
        served += 1.0;
    }

    // 4 MiB up, echoed back 4 MiB down, at the same time; the client
    // half-closes after its last byte and the echo ends with the
    // backend's end-of-file.
    let n: u64 = 4 << 20;
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    let line = greeting_line(&mut c).await;
    assert!(line.starts_with("backend=eu-1 "), "{line}");
    down += line.len() as u64;
    served += 1.0;
    let (r, _w) = echo_whole(c, n, "").await;

    counted(&edge, r#"edge_connections_total{result="ok"}"#, served).await;
    counted_bytes(&edge, b"echo\n".len() as u64 + n, down + n).await;
    // Every connection is closed and none is left counted.
    drop((r, _w));
    counted(&edge, "edge_connections_current", 0.0).await;
    eventually("the backends' connections closed", || {
        [&eu, &us, &sa]
            .iter()
            .all(|b| b.seen.open.load(Ordering::SeqCst) == 0)
    })
    .await;
    assert_eq!(conns(&edge, "connect_failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_clients_half_close_the_whole_answer_comes_back_then_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Reads the request to its end-of-file, then answers with how much it
    // read and 1 MiB of the pattern, and closes.
    let answer_len: u64 = 1 << 20;
    let addr = raw_backend(move |mut s| {
        header_line(&mut s);
        let mut request = Vec::new();
        if s.read_to_end(&mut request).is_err() {
            return;
        }
        let mut answer = format!("read {}\n", request.len()).into_bytes();
        answer.extend((0..answer_len).map(pattern));
        let _ = s.write_all(&answer);
    });
    add_backend(&db, "answers", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));

    for round in 0..3 {
        let mut c = connect_as(edge.addr, sample_address("GB")).await;
        let request = vec![b'q'; 100_000];
        c.get_mut().write_all(&request).await.unwrap();
        c.get_mut().shutdown().await.unwrap();
        let (got, end) = read_until_end(&mut c).await;
        assert_eq!(end, End::Eof, "round {round}: after {} bytes", got.len());
        let head = b"read 100000\n";
        assert!(
            got.starts_with(head),
            "round {round}: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(40)])
        );
        let body = &got[head.len()..];
        assert_eq!(body.len() as u64, answer_len, "round {round}");
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i as u64)),
            "round {round}: the answer came back altered"
        );
    }
}

/// The backend sends 1,000 bytes and half-closes: with half-close on, the
/// client reads them, then end-of-file, and can still send (the backend
/// gets its bytes); with it off, the edge closes both connections once the
/// bytes are passed on: the backend sees end-of-file without the client
/// having closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_end_of_file_half_closes_the_client_or_with_half_close_off_closes_it() {
    let (_dir, db, be) = one_backend().await;
    let edge = Edge::start(&epoll_args(&db, &["--half-close", "on"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"source 1000\n").await.unwrap();
    let read = tokio::time::timeout(GIVE_UP, read_pattern(&mut c)).await;
    assert_eq!(read.expect("an end-of-file").unwrap(), Some(1000));
    write_pattern(c.get_mut(), 5000).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    eventually(
        "the backend got the client's bytes after its own end",
        || !be.received.lock().unwrap().is_empty(),
    )
    .await;
    assert_eq!(*be.received.lock().unwrap(), [5000]);
    drop((c, edge));

    be.received.lock().unwrap().clear();
    let edge = Edge::start(&epoll_args(&db, &["--half-close", "off"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"source 1000\n").await.unwrap();
    let read = tokio::time::timeout(GIVE_UP, read_pattern(&mut c)).await;
    assert_eq!(read.expect("an end-of-file").unwrap(), Some(1000));
    // The client has not closed, yet the backend's connection ends, with
    // an end-of-file (a reset would record nothing).
    eventually("the edge closed the backend's connection", || {
        !be.received.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*be.received.lock().unwrap(), [0]);
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_nearest_backend_fails_over_to_the_next_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // GB clients' nearest backend refuses; the next one is in DE.
    let refusing = Refusing::new();
    let next = Backend::start("next").await;
    add_backend(&db, "near", "eu", "GB", refusing.addr, 100, 200);
    add_backend(&db, "next", "eu", "DE", next.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));
    for i in 1..=3u8 {
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, i])).await;
        assert_eq!(
            greeting(&mut c).await.as_deref(),
            Some("next"),
            "client {i}"
        );
        c.get_mut().write_all(b"echo\nstill here").await.unwrap();
        let mut buf = [0u8; 10];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here");
        counted(
            &edge,
            r#"edge_connect_failures_total{backend="near",reason="refused"}"#,
            f64::from(i),
        )
        .await;
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 3.0).await;
    assert_eq!(conns(&edge, "connect_failed"), 0.0);
    assert_eq!(next.seen.accepted.load(Ordering::SeqCst), 3);
}

/// Many connections at once, each failing over (a new backend socket in
/// its slab entry) and then relaying: none is lost, mixed up or left
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_fail_over_and_echo_at_once_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let refusing = Refusing::new();
    let next = Backend::start("next").await;
    add_backend(&db, "near", "eu", "GB", refusing.addr, 1000, 2000);
    add_backend(&db, "next", "eu", "DE", next.addr, 1000, 2000);
    let edge = Edge::start(&epoll_args(&db, &[]));
    let addr = edge.addr;
    const CLIENTS: u32 = 200;
    const EACH: u64 = 32 * 1024;
    let runs: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(async move {
                let claim = IpAddr::from([81, 2, 69, i as u8]);
                let mut c = connect_as(addr, claim).await;
                let line = greeting_line(&mut c).await;
                assert_eq!(line, format!("backend=next client={claim}\n"));
                // Each client's bytes start at its own offset of the
                // pattern: another's bytes would not match.
                let start = u64::from(i) * 7919;
                let mine: Vec<u8> = (start..start + EACH).map(pattern).collect();
                let (mut r, mut w) = tokio::io::split(c);
                let sent = mine.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(b"echo\n").await.unwrap();
                    w.write_all(&sent).await.unwrap();
                    w.shutdown().await.unwrap();
                    w
                });
                let (got, end) = read_until_end(&mut r).await;
                let _w = writer.await.unwrap();
                assert_eq!(end, End::Eof, "client {i}");
                assert!(got == mine, "client {i}: {} bytes, altered", got.len());
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 200.0).await;
    counted(
        &edge,
        r#"edge_connect_failures_total{backend="near",reason="refused"}"#,
        200.0,
    )
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
    assert_eq!(conns(&edge, "connect_failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_fails_over_after_the_connect_timeout() {
    let hole = Unanswered::new();
    // It really never answers: a connect neither succeeds nor is refused.
    let probe =
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(hole.addr)).await;
    assert!(probe.is_err(), "{probe:?}");

    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let next = Backend::start("next").await;
    add_backend(&db, "hole", "eu", "GB", hole.addr, 100, 200);
    add_backend(&db, "next", "eu", "DE", next.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &["--connect-timeout", "300ms"]));
    for i in 1..=2u8 {
        let started = Instant::now();
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, i])).await;
        assert_eq!(
            greeting(&mut c).await.as_deref(),
            Some("next"),
            "client {i}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "served after {waited:?}: the hole was not tried first"
        );
        counted(
            &edge,
            r#"edge_connect_failures_total{backend="hole",reason="timeout"}"#,
            f64::from(i),
        )
        .await;
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 2.0).await;
    drop(edge);

    // With one attempt, the timeout ends the client's connection: closed,
    // not left hanging, and counted.
    let edge = Edge::start(&epoll_args(
        &db,
        &["--connect-timeout", "300ms", "--connect-attempts", "1"],
    ));
    let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, 50])).await;
    let (got, _) = read_until_end(&mut c).await;
    assert!(got.is_empty(), "{got:?}");
    counted(
        &edge,
        r#"edge_connections_total{result="connect_failed"}"#,
        1.0,
    )
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_mid_transfer_reaches_the_client_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Sends 4 MiB, then closes with SO_LINGER 0: a reset.
    let addr = raw_backend(|mut s| {
        header_line(&mut s);
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    });
    add_backend(&db, "resets", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));
    for round in 0..3 {
        let mut c = connect_as(edge.addr, sample_address("GB")).await;
        let (got, end) = read_until_end(&mut c).await;
        assert_ne!(
            end,
            End::Eof,
            "round {round}: the backend reset after 4 MiB and the client saw a clean end-of-file after {} bytes",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_mid_transfer_reaches_the_backend_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Reads to the end; reports how many bytes, and how it ended.
    let (tx, rx) = mpsc::channel::<(u64, End)>();
    let tx = std::sync::Mutex::new(tx);
    let (progress_tx, progress) = mpsc::channel::<()>();
    let progress_tx = std::sync::Mutex::new(progress_tx);
    let addr = raw_backend(move |mut s| {
        header_line(&mut s);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut told = false;
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => total += n as u64,
                Err(e) => break End::Reset(e.kind()),
            }
            if total >= 1 << 20 && !told {
                told = true;
                let _ = progress_tx.lock().unwrap().send(());
            }
        };
        let _ = tx.lock().unwrap().send((total, end));
    });
    add_backend(&db, "uploads", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));
    for round in 0..3 {
        let mut s = connect_as(edge.addr, sample_address("GB"))
            .await
            .into_inner();
        // Uploads until the backend has 1 MiB, then resets.
        let chunk = vec![0xa5u8; 64 * 1024];
        for _ in 0..16 {
            s.write_all(&chunk).await.unwrap();
        }
        tokio::task::block_in_place(|| progress.recv_timeout(GIVE_UP))
            .expect("the backend received 1 MiB");
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let (total, end) =
            tokio::task::block_in_place(|| rx.recv_timeout(GIVE_UP)).expect("the upload ended");
        assert_ne!(
            end,
            End::Eof,
            "round {round}: the client reset and the backend saw a clean end-of-file after {total} bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_a_quiet_connection_and_spares_a_trickling_one() {
    let (_dir, db, be) = one_backend().await;
    let edge = Edge::start(&epoll_args(&db, &["--idle-timeout", "1s"]));

    let mut quiet = connect_as(edge.addr, IpAddr::from([81, 2, 69, 1])).await;
    assert_eq!(greeting(&mut quiet).await.as_deref(), Some("be"));
    let mut busy = connect_as(edge.addr, IpAddr::from([81, 2, 69, 2])).await;
    assert_eq!(greeting(&mut busy).await.as_deref(), Some("be"));
    busy.get_mut().write_all(b"echo\n").await.unwrap();

    let quietly = async {
        // The clock is read first: the relay sees the byte later.
        let last_byte = Instant::now();
        quiet.get_mut().write_all(b"hold\n").await.unwrap();
        let (got, end) = read_until_end(&mut quiet).await;
        (last_byte.elapsed(), got, end)
    };
    // A byte every 200 ms for 3 s (three idle timeouts), each echoed.
    let trickling = async {
        for i in 0..15u8 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            busy.get_mut().write_all(&[i]).await.expect("still open");
            let mut b = [0u8; 1];
            tokio::time::timeout(GIVE_UP, busy.read_exact(&mut b))
                .await
                .expect("echoed")
                .unwrap_or_else(|e| panic!("closed after {i} bytes: {e}"));
            assert_eq!(b[0], i);
        }
    };
    let ((closed_after, got, end), ()) = tokio::join!(quietly, trickling);
    assert_eq!(end, End::Eof, "closed with a FIN");
    assert!(got.is_empty(), "{got:?}");
    assert!(
        closed_after >= Duration::from_secs(1),
        "closed {closed_after:?} after its last byte, before the idle timeout"
    );

    // The trickling one is still open, and closes once it goes quiet.
    busy.get_mut().write_all(b"alive").await.unwrap();
    let mut b = [0u8; 5];
    busy.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"alive");
    let (got, end) = read_until_end(&mut busy).await;
    assert_eq!((got.len(), end), (0, End::Eof));
    eventually("the backend's sides closed", || {
        be.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_v1_or_v2_places_the_client_and_the_bytes_behind_it_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (eu, us) = (Backend::start("eu-1").await, Backend::start("us-1").await);
    add_backend(&db, "eu-1", "eu", "GB", eu.addr, 100, 200);
    add_backend(&db, "us-1", "us", "US", us.addr, 100, 200);
    let edge = Edge::start(&bare_epoll_args(
        &db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v1",
        ],
    ));
    let port = edge.addr.port();
    let (gb, us_ip) = (sample_address("GB"), sample_address("US"));
    let mut v1 = format!("PROXY TCP4 {gb} 127.0.0.1 40000 {port}\r\n").into_bytes();
    let mut v2 = proxy_v2(
        SocketAddr::new(us_ip, 40001),
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    // The header and what follows it in one write.
    v1.extend_from_slice(b"echo\nbehind v1");
    v2.extend_from_slice(b"echo\nbehind v2");
    for (sent, claim, backend, tail) in [
        (v1, gb, "eu-1", b"behind v1"),
        (v2, us_ip, "us-1", b"behind v2"),
    ] {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(&sent).await.unwrap();
        let mut c = BufReader::new(s);
        assert_eq!(
            greeting_line(&mut c).await,
            format!("backend={backend} client={claim}\n")
        );
        let mut got = [0u8; 9];
        tokio::time::timeout(GIVE_UP, c.read_exact(&mut got))
            .await
            .expect("the bytes behind the header echoed")
            .unwrap();
        assert_eq!(&got, tail);
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 2.0).await;
    // Both clients' first bytes counted, the header not.
    counted(&edge, r#"edge_bytes_total{direction="up"}"#, 28.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_that_never_comes_is_counted_as_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);
    let edge = Edge::start(&bare_epoll_args(
        &db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v1",
            "--proxy-header-timeout",
            "500ms",
        ],
    ));
    // Nothing at all, and half a header.
    for (i, sent) in [&b""[..], &b"PROXY TCP4 81.2.69"[..]]
        .into_iter()
        .enumerate()
    {
        let started = Instant::now();
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        let (got, end) = read_until_end(&mut s).await;
        let closed = started.elapsed();
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(end, End::Eof);
        assert!(
            closed >= Duration::from_millis(500),
            "closed {closed:?} after connecting, before the header's deadline"
        );
        counted(
            &edge,
            r#"edge_connections_total{result="proxy_header_timeout"}"#,
            (i + 1) as f64,
        )
        .await;
    }
    assert_eq!(be.seen.accepted.load(Ordering::SeqCst), 0);
    counted(&edge, "edge_connections_current", 0.0).await;
    // A header in time still works.
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
}

/// What the backend reads: the PROXY header it is configured for, for the
/// client a trusted source named (v1 or v2) or, from an untrusted source,
/// for the TCP peer itself, whose own PROXY line is then payload; then the
/// client's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_receives_the_proxy_header_it_is_configured_for() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (addr, backend) = capturing_backend();
    add_backend(&db, "captures", "eu", "GB", addr, 100, 200);

    /// Sends `bytes` from `from` (127.0.0.1 when `None`), half-closes and
    /// reads to the end.
    async fn send(edge: SocketAddr, from: Option<[u8; 4]>, bytes: &[u8]) -> SocketAddr {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(ip) = from {
            socket.bind(SocketAddr::from((ip, 0))).unwrap();
        }
        let mut s = socket.connect(edge).await.unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let (got, end) = read_until_end(&mut s).await;
        assert_eq!((got.len(), end), (0, End::Eof));
        local
    }

    let edge = Edge::start(&bare_epoll_args(
        &db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v1",
        ],
    ));
    let port = edge.addr.port();
    // A trusted v1 header.
    let v1 = format!("PROXY TCP4 81.2.69.160 127.0.0.1 40000 {port}\r\n");
    send(edge.addr, None, format!("{v1}payload one").as_bytes()).await;
    assert_eq!(
        String::from_utf8_lossy(&captured(&backend)),
        format!("{v1}payload one")
    );
    // A trusted v2 header: passed on as v1.
    let mut v2 = proxy_v2(
        "81.2.69.161:40001".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    v2.extend_from_slice(b"payload two");
    send(edge.addr, None, &v2).await;
    assert_eq!(
        String::from_utf8_lossy(&captured(&backend)),
        format!("PROXY TCP4 81.2.69.161 127.0.0.1 40001 {port}\r\npayload two")
    );
    // 127.0.0.2 is not trusted: its header is the client's payload.
    let forged = format!("PROXY TCP4 81.2.69.162 127.0.0.1 40002 {port}\r\npayload three");
    let local = send(edge.addr, Some([127, 0, 0, 2]), forged.as_bytes()).await;
    assert_eq!(
        String::from_utf8_lossy(&captured(&backend)),
        format!(
            "PROXY TCP4 127.0.0.2 127.0.0.1 {} {port}\r\n{forged}",
            local.port()
        )
    );
    drop(edge);

    let edge = Edge::start(&bare_epoll_args(
        &db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v2",
        ],
    ));
    let port = edge.addr.port();
    let v1 = format!("PROXY TCP4 81.2.69.163 127.0.0.1 40003 {port}\r\n");
    send(edge.addr, None, format!("{v1}payload four").as_bytes()).await;
    let mut expected = proxy_v2(
        "81.2.69.163:40003".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    expected.extend_from_slice(b"payload four");
    assert_eq!(captured(&backend), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_access_log_on_the_loop_writes_each_connections_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let log = dir.path().join("access.log");
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let refusing = Refusing::new();
    add_backend(&db, "dead", "us", "US", refusing.addr, 100, 200);
    let edge = Edge::start(&epoll_args(
        &db,
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-format",
            "json",
            "--connect-attempts",
            "1",
        ],
    ));
    // A client whose backend refuses: its line says so.
    let mut refused = connect_as(edge.addr, "207.237.0.1".parse().unwrap()).await;
    assert_eq!(greeting(&mut refused).await, None);
    // A short exchange and 1 MiB each way.
    let mut c = connect_as(edge.addr, "81.2.69.21".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("b1"));
    c.get_mut().write_all(b"echo\nhello").await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let (got, end) = read_until_end(&mut c).await;
    assert_eq!((got.as_slice(), end), (&b"hello"[..], End::Eof));
    let n: u64 = 1 << 20;
    let mut c = connect_as(edge.addr, "81.2.69.22".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("b1"));
    c.get_mut()
        .write_all(format!("source {n}\n").as_bytes())
        .await
        .unwrap();
    let read = tokio::time::timeout(GIVE_UP, read_pattern(&mut c)).await;
    assert_eq!(read.expect("an end-of-file").unwrap(), Some(n));
    write_pattern(c.get_mut(), n).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let (rest, _) = read_until_end(&mut c).await;
    assert!(rest.is_empty());
    eventually("the backend got the upload", || {
        !b.received.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*b.received.lock().unwrap(), [n]);

    // The loop writes the access-log lines itself: one each.
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    eventually("three access-log lines", || lines().len() == 3).await;
    let lines = lines();
    let line = |client: &str| {
        lines
            .iter()
            .find(|l| l["client"] == client)
            .unwrap_or_else(|| panic!("no line for {client}: {lines:#?}"))
    };
    let short = line("81.2.69.21:40000");
    assert_eq!(short["backend"], "b1");
    assert_eq!(short["country"], "GB");
    assert_eq!(short["end"], "client_closed");
    assert_eq!(short["bytes_up"], 10); // "echo\n" + "hello"
    let bulk = line("81.2.69.22:40000");
    assert_eq!(bulk["backend"], "b1");
    assert_eq!(bulk["bytes_up"], format!("source {n}\n").len() as u64 + n);
    assert!(bulk["bytes_down"].as_u64().unwrap() >= n, "{bulk}");
    let failed = line("207.237.0.1:40000");
    assert_eq!(failed["end"], "connect_failed", "{failed}");
    assert_eq!(failed["backend"], "dead");
    assert_eq!(failed["country"], "US");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["bytes_up"], 0);
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 2.0).await;
    counted(
        &edge,
        r#"edge_connections_total{result="connect_failed"}"#,
        1.0,
    )
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_keeps_the_per_client_limits_itself_and_a_closed_connection_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &["--client-max-connections", "1"]));
    let x: IpAddr = "81.2.69.31".parse().unwrap();
    let mut first = connect_as(edge.addr, x).await;
    assert_eq!(greeting(&mut first).await.as_deref(), Some("b1"));
    first.get_mut().write_all(b"echo\n").await.unwrap();
    let mut second = connect_as(edge.addr, x).await;
    assert_eq!(
        greeting(&mut second).await,
        None,
        "a second connection of one client"
    );
    counted(
        &edge,
        r#"edge_connections_total{result="client_limit"}"#,
        1.0,
    )
    .await;
    // Another client is served; the first one still relays.
    let mut other = connect_as(edge.addr, "81.2.69.32".parse().unwrap()).await;
    assert_eq!(greeting(&mut other).await.as_deref(), Some("b1"));
    first.get_mut().write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    // The first connection closes: its place is free, and the client's
    // next connection is served (once the loop has seen the close).
    drop(first);
    eventually("the first connection's place freed", || {
        tokio::task::block_in_place(|| {
            metric(&scrape(edge.metrics.unwrap()), "edge_connections_current") == Some(1.0)
        })
    })
    .await;
    let mut again = connect_as(edge.addr, x).await;
    assert_eq!(greeting(&mut again).await.as_deref(), Some("b1"));
    counted(
        &edge,
        r#"edge_connections_total{result="client_limit"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_an_open_connection_keeps_relaying_new_ones_are_refused_and_the_exit_is_0() {
    let (_dir, db, _be) = one_backend().await;
    let mut edge = Edge::start(&epoll_args(&db, &["--drain-timeout", "60s"]));
    let addr = edge.addr;

    let mut c = connect_as(addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"echo\n").await.unwrap();
    edge.signal("TERM");
    eventually("new connections refused", || {
        tokio::task::block_in_place(|| {
            matches!(
                std::net::TcpStream::connect(addr),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused
            )
        })
    })
    .await;

    // Still relaying, both ways, 64 KiB at a time, while draining.
    let mut offset = 0u64;
    for _ in 0..8 {
        let chunk: Vec<u8> = (offset..offset + 65536).map(pattern).collect();
        c.get_mut().write_all(&chunk).await.expect("still open");
        let mut back = vec![0u8; chunk.len()];
        tokio::time::timeout(GIVE_UP, c.read_exact(&mut back))
            .await
            .expect("echoed while draining")
            .expect("still open");
        assert!(back == chunk, "altered while draining");
        offset += 65536;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        edge.try_wait().is_none(),
        "exited with a connection open: {:#?}",
        edge.log()
    );

    // The client ends it; the edge exits, well before the drain timeout.
    c.get_mut().shutdown().await.unwrap();
    let (rest, end) = read_until_end(&mut c).await;
    assert_eq!((rest.len(), end), (0, End::Eof));
    let status = tokio::task::block_in_place(|| edge.wait(GIVE_UP));
    assert!(status.success(), "{status:?}: {:#?}", edge.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_resets_what_the_loop_still_relays_and_the_exit_is_0() {
    let (_dir, db, _be) = one_backend().await;
    let mut edge = Edge::start(&epoll_args(&db, &["--drain-timeout", "1s"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"hold\n").await.unwrap();
    edge.signal("TERM");
    let status = tokio::task::block_in_place(|| edge.wait(GIVE_UP));
    assert!(status.success(), "{status:?}: {:#?}", edge.log());
    // Cut by the drain: a reset, not a clean end.
    let (got, end) = read_until_end(&mut c).await;
    assert!(got.is_empty(), "{got:?}");
    assert_ne!(
        end,
        End::Eof,
        "a connection cut by the drain looked complete"
    );
}

mod splice;
