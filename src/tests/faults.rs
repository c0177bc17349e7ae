//! Faults end to end against a real `geoedge run` process: a PROXY header
//! trickled a byte a second, a routing.db replaced with garbage, broken in
//! its schema or held in an exclusive `sqlite3` transaction, a routing.db
//! reload every 100 ms under load, a client that reads slowly from a backend
//! that never stops sending, a corrupt or truncated mmdb, routing.db or the
//! mmdb swapped for a FIFO ([`fifo`]), transfers aborted by a backend's
//! reset or the drain timeout ([`aborts`]), a backend row at the edge's own
//! listener ([`own_listener`]), and descriptors running out while dialing
//! ([`descriptors`]). Each test
//! asserts the pass criteria of docs/reliability.md and prints what it
//! measured (`cargo test --test e2e -- --nocapture faults::`).

#[path = "faults/descriptors.rs"]
mod descriptors;
#[path = "faults/fifo.rs"]
mod fifo;
use geoedge_testkit as support;

#[path = "faults/aborts.rs"]
mod aborts;
#[path = "faults/own_listener.rs"]
mod own_listener;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use geoedge_geoip::{sample_address, SAMPLE_MMDB};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The value of `series` on the edge's /metrics, 0 when absent.
fn value(edge: &Edge, series: &str) -> f64 {
    metric(&scrape(edge.metrics.unwrap()), series).unwrap_or(0.0)
}

fn reloads(edge: &Edge, result: &str) -> f64 {
    value(
        edge,
        &format!("edge_routing_reloads_total{{result=\"{result}\"}}"),
    )
}

fn generation(edge: &Edge) -> f64 {
    value(edge, "edge_routing_generation")
}

/// The routing generation once it has not moved for a second (longer than
/// the watcher's 500 ms fallback poll; 5 s at most): no reload is on its
/// way, so the next one is the next edit's.
fn settled_generation(edge: &Edge) -> f64 {
    let start = Instant::now();
    let (mut last, mut since) = (generation(edge), Instant::now());
    while since.elapsed() < Duration::from_secs(1) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the routing generation kept moving for 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
        let now = generation(edge);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

/// Polls `cond` every 10 ms from `since` until it holds; panics when it
/// does not within `limit`. Returns how long it took from `since`.
fn within(what: &str, since: Instant, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    loop {
        if cond() {
            let took = since.elapsed();
            eprintln!("{what}: {took:?}");
            assert!(took <= limit, "{what}: took {took:?}, more than {limit:?}");
            return took;
        }
        assert!(since.elapsed() <= limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A new client address for each call (so no sticky binding carries over
/// from one check to the next).
fn fresh_client() -> IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    IpAddr::from([81, 2, (n >> 8) as u8, n as u8])
}

/// The backend a fresh client is routed to (`None`: the edge closed).
async fn route(edge: &Edge) -> Option<String> {
    let mut c = connect_as(edge.addr, fresh_client()).await;
    greeting(&mut c).await
}

/// A child process killed when dropped (also when the test fails).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// --- Item 8: a PROXY header trickled at one byte per second ---------------

/// Sends `header` one byte a second until the edge closes; returns how long
/// after connecting it closed and what the edge sent.
async fn trickle(edge: SocketAddr, header: Vec<u8>) -> (Duration, Vec<u8>) {
    // Taken before connecting: the edge's deadline starts later, at accept.
    let started = Instant::now();
    let stream = TcpStream::connect(edge).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let writer = tokio::spawn(async move {
        for b in header {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got)).await;
    let closed = started.elapsed();
    writer.abort();
    (closed, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_trickled_a_byte_a_second_is_cut_off_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);
    // The default --proxy-header-timeout (3 s).
    let edge = Edge::start(&edge_args(&db, &[]));
    let port = edge.addr.port();
    let v1 = format!("PROXY TCP4 81.2.69.160 127.0.0.1 40000 {port}\r\n").into_bytes();
    let mut v2 = b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[81, 2, 69, 160, 127, 0, 0, 1]);
    v2.extend_from_slice(&40000u16.to_be_bytes());
    v2.extend_from_slice(&port.to_be_bytes());
    let (one, two) = tokio::join!(trickle(edge.addr, v1), trickle(edge.addr, v2));
    for (version, (closed, got)) in [("v1", one), ("v2", two)] {
        eprintln!("trickled {version} header: closed after {closed:?}");
        assert!(got.is_empty(), "{version}: the edge sent {got:?}");
        assert!(
            closed >= Duration::from_secs(3) && closed <= Duration::from_millis(3500),
            "{version}: closed after {closed:?}, not within 3.0..=3.5 s"
        );
    }
    assert_eq!(
        be.seen.accepted.load(Ordering::SeqCst),
        0,
        "a backend connection was opened"
    );
    let timeouts = value(
        &edge,
        r#"edge_connections_total{result="proxy_header_timeout"}"#,
    );
    assert_eq!(timeouts, 2.0);
}

// --- Item 11: a bad routing.db -------------------------------------------

/// Serves only backend `a` (or only `b`).
const ONLY_A: &str = "UPDATE backends SET healthy = (id = 'a');";
const ONLY_B: &str = "UPDATE backends SET healthy = (id = 'b');";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_routing_db_keeps_the_last_good_table_and_its_fix_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    add_backend(&db, "a", "eu", "GB", a.addr, 100, 200);
    add_backend(&db, "b", "eu", "GB", b.addr, 100, 200);
    sqlite3(&db, ONLY_A);
    let edge = Edge::start(&edge_args(&db, &[]));
    assert_eq!(route(&edge).await.as_deref(), Some("a"));

    // 1. Garbage renamed over the file.
    let good = dir.path().join("good.db");
    std::fs::copy(&db, &good).unwrap();
    sqlite3(&good, ONLY_B);
    let garbage = dir.path().join("garbage");
    let bytes: Vec<u8> = (0..16384u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let (failed, gen) = (reloads(&edge, "unreadable"), generation(&edge));
    let t = Instant::now();
    std::fs::rename(&garbage, &db).unwrap();
    within(
        "garbage: failure counted",
        t,
        Duration::from_secs(2),
        || reloads(&edge, "unreadable") > failed,
    );
    assert_eq!(route(&edge).await.as_deref(), Some("a"), "last good table");
    assert_eq!(generation(&edge), gen);
    // Fixed by renaming a good database into place.
    let t = Instant::now();
    std::fs::rename(&good, &db).unwrap();
    within("garbage: fix applied", t, Duration::from_secs(1), || {
        generation(&edge) > gen
    });
    assert_eq!(route(&edge).await.as_deref(), Some("b"));

    // 2. A schema violation: a required column renamed away.
    let (failed, gen) = (reloads(&edge, "invalid"), generation(&edge));
    let t = Instant::now();
    sqlite3(
        &db,
        "ALTER TABLE backends RENAME COLUMN port TO backend_port;",
    );
    within("schema: failure counted", t, Duration::from_secs(2), || {
        reloads(&edge, "invalid") > failed
    });
    assert_eq!(route(&edge).await.as_deref(), Some("b"), "last good table");
    assert_eq!(generation(&edge), gen);
    let t = Instant::now();
    sqlite3(
        &db,
        &format!(
            "BEGIN; ALTER TABLE backends RENAME COLUMN backend_port TO port; {ONLY_A} COMMIT;"
        ),
    );
    within("schema: fix applied", t, Duration::from_secs(1), || {
        generation(&edge) > gen
    });
    assert_eq!(route(&edge).await.as_deref(), Some("a"));

    // 3. An exclusive transaction held for 10 s, its edit committed at the end.
    let (failed, gen) = (reloads(&edge, "locked"), generation(&edge));
    let mut holder = Reaped(
        Command::new("sqlite3")
            .arg(&db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the sqlite3 CLI is installed"),
    );
    let mut stdin = holder.0.stdin.take().unwrap();
    let t = Instant::now();
    writeln!(stdin, ".bail on\nBEGIN EXCLUSIVE;\n{ONLY_B}\n.print locked").unwrap();
    let mut line = String::new();
    BufReader::new(holder.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "locked\n", "sqlite3 did not take the lock");
    let mut counted = None;
    let (mut served, mut slowest) = (0, Duration::ZERO);
    while t.elapsed() < Duration::from_secs(10) {
        let asked = Instant::now();
        assert_eq!(
            route(&edge).await.as_deref(),
            Some("a"),
            "routing goes on with the last good table while routing.db is locked"
        );
        slowest = slowest.max(asked.elapsed());
        served += 1;
        if counted.is_none() && reloads(&edge, "locked") > failed {
            counted = Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counted = counted.expect("the lock was never counted");
    eprintln!(
        "lock: failure counted after {counted:?}; {served} clients routed during the lock, slowest {slowest:?}"
    );
    assert!(
        counted <= Duration::from_secs(2),
        "lock counted after {counted:?}"
    );
    assert_eq!(generation(&edge), gen);
    let t = Instant::now();
    writeln!(stdin, "COMMIT;").unwrap();
    drop(stdin);
    let status = holder.0.wait().unwrap();
    assert!(status.success(), "sqlite3 failed to commit");
    within(
        "lock: committed edit applied",
        t,
        Duration::from_secs(1),
        || generation(&edge) > gen,
    );
    assert_eq!(route(&edge).await.as_deref(), Some("b"));
}

// --- Item 12: a reload every 100 ms for 60 s under load ------------------

/// Echoes 1 KiB every 20 ms through `c` until `stop`; the bytes echoed, or
/// what went wrong.
async fn pump(mut c: TcpStream, stop: Arc<AtomicBool>) -> Result<u64, String> {
    let mut sent = 0u64;
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::SeqCst) {
        let chunk: Vec<u8> = (sent..sent + 1024).map(pattern).collect();
        c.write_all(&chunk)
            .await
            .map_err(|e| format!("write: {e}"))?;
        let read = tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf)).await;
        match read {
            Ok(Ok(_)) if buf[..] == chunk[..] => {}
            Ok(Ok(_)) => return Err(format!("corrupted after {sent} bytes")),
            Ok(Err(e)) => return Err(format!("read after {sent} bytes: {e}")),
            Err(_) => return Err(format!("no echo within 5 s after {sent} bytes")),
        }
        sent += 1024;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(sent)
}

/// One short connection: greeting, a 32-byte echo, close (5 s at most).
async fn short_connection(edge: SocketAddr) -> Result<(), String> {
    let once = async {
        let mut c = connect_as(edge, fresh_client()).await;
        greeting(&mut c).await.ok_or("no greeting")?;
        c.get_mut()
            .write_all(b"echo\n0123456789abcdef0123456789abcdef")
            .await
            .map_err(|_| "write failed")?;
        let mut back = [0u8; 32];
        c.read_exact(&mut back).await.map_err(|_| "read failed")?;
        (&back == b"0123456789abcdef0123456789abcdef")
            .then_some(())
            .ok_or("echo differs")
    };
    match tokio::time::timeout(Duration::from_secs(5), once).await {
        Ok(r) => r.map_err(str::to_owned),
        Err(_) => Err("no answer within 5 s".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_every_100ms_for_60s_under_load_drops_nothing() {
    const EDITS: u32 = 600;
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    add_backend(&db, "a", "eu", "GB", a.addr, 1000, 2000);
    add_backend(&db, "b", "eu", "GB", b.addr, 1000, 2000);
    let edge = Edge::start(&edge_args(&db, &[]));
    let applied_before = reloads(&edge, "applied");
    let stop = Arc::new(AtomicBool::new(false));

    // Connections kept open through the storm, echoing all along.
    let mut pumps = Vec::new();
    for _ in 0..16 {
        let mut c = connect_as(edge.addr, fresh_client()).await;
        assert!(greeting(&mut c).await.is_some());
        c.get_mut().write_all(b"echo\n").await.unwrap();
        pumps.push(tokio::spawn(pump(c.into_inner(), Arc::clone(&stop))));
    }
    // New connections all along, two at a time.
    let failures = Arc::new(Mutex::new(Vec::new()));
    let made = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let makers: Vec<_> = (0..2)
        .map(|_| {
            let (stop, failures, made, slowest) = (
                Arc::clone(&stop),
                Arc::clone(&failures),
                Arc::clone(&made),
                Arc::clone(&slowest),
            );
            let addr = edge.addr;
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    match short_connection(addr).await {
                        Ok(()) => {
                            made.fetch_add(1, Ordering::Relaxed);
                            let took = started.elapsed();
                            let mut s = slowest.lock().unwrap();
                            *s = (*s).max(took);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    // The metrics listener answers all along.
    let metrics = edge.metrics.unwrap();
    let scraper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            while !stop.load(Ordering::SeqCst) {
                let t = Instant::now();
                scrape(metrics);
                slowest = slowest.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(500));
            }
            slowest
        })
    };
    // The storm: one committed UPDATE every 100 ms, each a real change.
    let path = db.clone();
    let storm = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut late = Duration::ZERO;
        for k in 0..EDITS {
            let due = start + Duration::from_millis(100) * k;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            late = late.max(due.elapsed());
            sqlite3(
                &path,
                &format!(
                    "UPDATE backends SET weight = {} WHERE id = 'a'; UPDATE backends SET soft_limit = {} WHERE id = 'b';",
                    1 + k % 3,
                    900 + k % 2
                ),
            );
        }
        (start.elapsed(), late)
    });
    let (took, late) = storm.await.unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut echoed = 0;
    for p in pumps {
        echoed += p.await.unwrap().expect("a long-lived connection failed");
    }
    for m in makers {
        m.await.unwrap();
    }
    let scrape_slowest = scraper.join().unwrap();
    let applied = reloads(&edge, "applied") - applied_before;
    let made = made.load(Ordering::Relaxed);
    eprintln!(
        "storm: {EDITS} edits in {took:?} (latest {late:?} behind schedule), {applied} reloads applied; \
         16 open connections echoed {echoed} bytes; {made} new connections, slowest {:?}; slowest scrape {scrape_slowest:?}",
        slowest.lock().unwrap()
    );
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(failures.is_empty(), "failed connections: {failures:?}");
    assert!(made > 100, "only {made} new connections were made");
    assert!(applied >= 100.0, "only {applied} reloads applied");
    assert_eq!(
        value(&edge, r#"edge_connections_total{result="no_backend"}"#)
            + value(&edge, r#"edge_connections_total{result="connect_failed"}"#),
        0.0
    );
    // The reloader is still alive: one more edit applies at once. The
    // storm's last edit may still be on its way in (under load the watcher
    // can see it after the storm returns), and its reload would move the
    // generation as well: wait until the generation has settled first.
    let gen = settled_generation(&edge);
    let t = Instant::now();
    sqlite3(&db, "UPDATE backends SET healthy = 0 WHERE id = 'a';");
    within(
        "after the storm: an edit applied",
        t,
        Duration::from_secs(1),
        || generation(&edge) > gen,
    );
    assert_eq!(route(&edge).await.as_deref(), Some("b"));
}

// --- Item 13: a client that reads slowly ---------------------------------

/// The most the relay holds per direction: 32 KiB copied (`relay::BUFFER`)
/// or 64 KiB in a splice pipe (`splice::PIPE_SIZE`).
const RELAY_BUFFER: i64 = 64 * 1024;

/// A backend that reads geoedge's PROXY header and then sends pattern
/// bytes until the connection fails, counting what its writes accepted.
struct Firehose {
    addr: SocketAddr,
    /// Bytes the kernel accepted from its writes.
    written: Arc<AtomicU64>,
    /// The proxy's end of the backend connection.
    proxy_side: Arc<Mutex<Option<SocketAddr>>>,
}

impl Firehose {
    async fn start() -> Firehose {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let written = Arc::new(AtomicU64::new(0));
        let proxy_side = Arc::new(Mutex::new(None));
        let (w, p) = (Arc::clone(&written), Arc::clone(&proxy_side));
        tokio::spawn(async move {
            let (mut s, peer) = listener.accept().await.unwrap();
            *p.lock().unwrap() = Some(peer);
            let mut byte = [0u8; 1];
            while s.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {}
            let table: Vec<u8> = (0..65536 + 251).map(pattern).collect();
            let mut at = 0u64;
            loop {
                let from = (at % 251) as usize;
                match s.write(&table[from..from + 65536]).await {
                    Ok(n) if n > 0 => {
                        at += n as u64;
                        w.store(at, Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        });
        Firehose {
            addr,
            written,
            proxy_side,
        }
    }
}

/// (send queue, receive queue) in bytes of the TCP socket `local`→`remote`,
/// from /proc/net/tcp.
fn queues(local: SocketAddr, remote: SocketAddr) -> (u64, u64) {
    let addr = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
        Some(SocketAddr::from((ip, u16::from_str_radix(port, 16).ok()?)))
    };
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    text.lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if addr(f[1])? != local || addr(f[2])? != remote {
                return None;
            }
            let (tx, rx) = f[4].split_once(':')?;
            Some((
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} in /proc/net/tcp"))
}

/// Where the backend's bytes are at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flow {
    /// Accepted by the backend's writes.
    written: u64,
    /// Still in the backend's send queue.
    backend_sendq: u64,
    /// In the proxy's backend socket, not yet read by geoedge.
    proxy_recvq: u64,
    /// Written by geoedge to the client socket, not yet acknowledged.
    proxy_sendq: u64,
    /// Arrived at the client, not yet read.
    client_recvq: u64,
}

impl Flow {
    /// Bytes geoedge has read from the backend and not yet written to the
    /// client, given what the client has read.
    fn held_by_geoedge(&self, client_read: u64) -> i64 {
        let read_from_backend =
            self.written as i64 - self.backend_sendq as i64 - self.proxy_recvq as i64;
        let written_to_client = (client_read + self.client_recvq + self.proxy_sendq) as i64;
        read_from_backend - written_to_client
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_no_more_than_the_relay_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let hose = Firehose::start().await;
    add_backend(&db, "hose", "eu", "GB", hose.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let rss_before = rss_kib(edge.pid());
    let mut client = connect_as(edge.addr, sample_address("GB"))
        .await
        .into_inner();
    let client_side = client.local_addr().unwrap();
    let mut read = 0u64;
    let mut buf = vec![0u8; 16384];
    let (mut most_held, mut most_in_flight, mut rss_most) = (i64::MIN, 0, rss_before);
    // Reads 16 KiB every 50 ms (at most 320 KiB/s) for 5 s; once a second
    // it stops reading until the flow settles and takes stock.
    for step in 1..=100 {
        let n = client.read(&mut buf).await.unwrap();
        assert!(n > 0, "the edge closed the connection");
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(
                b,
                pattern(read + i as u64),
                "corrupted at {}",
                read + i as u64
            );
        }
        read += n as u64;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if step % 20 != 0 {
            continue;
        }
        let proxy_side = hose.proxy_side.lock().unwrap().expect("backend dialed");
        let take = || Flow {
            written: hose.written.load(Ordering::SeqCst),
            backend_sendq: queues(hose.addr, proxy_side).0,
            proxy_recvq: queues(proxy_side, hose.addr).1,
            proxy_sendq: queues(edge.addr, client_side).0,
            client_recvq: queues(client_side, edge.addr).1,
        };
        let mut flow = take();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let again = take();
            if again == flow {
                break;
            }
            flow = again;
        }
        let held = flow.held_by_geoedge(read);
        let in_flight = flow.written - read;
        let rss = rss_kib(edge.pid());
        eprintln!("slow reader: read {read}, {flow:?}, geoedge holds {held} bytes; RSS {rss} KiB");
        assert!(
            (0..=RELAY_BUFFER).contains(&held),
            "geoedge holds {held} bytes read from the backend and not written to the client"
        );
        most_held = most_held.max(held);
        most_in_flight = most_in_flight.max(in_flight);
        rss_most = rss_most.max(rss);
    }
    let grew = rss_most.saturating_sub(rss_before);
    eprintln!(
        "slow reader: client read {read} bytes in 5 s; most held by geoedge {most_held} bytes; \
         most sent and not yet read {most_in_flight} bytes; RSS {rss_before} KiB before, grew {grew} KiB at most"
    );
    assert!(
        most_in_flight > 4 * RELAY_BUFFER as u64,
        "the backend was never ahead of the reader: the test proves nothing"
    );
    assert!(grew < 16 * 1024, "geoedge's RSS grew by {grew} KiB");
}

// --- A corrupt or truncated mmdb -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_truncated_mmdb_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (eu, us) = (Backend::start("eu-1").await, Backend::start("us-1").await);
    add_backend(&db, "eu-1", "eu", "GB", eu.addr, 100, 200);
    add_backend(&db, "us-1", "us", "US", us.addr, 100, 200);
    let mmdb = dir.path().join("geo.mmdb");
    std::fs::write(&mmdb, SAMPLE_MMDB).unwrap();
    let edge = Edge::start(&edge_args(&db, &["--geoip", mmdb.to_str().unwrap()]));
    let addr = edge.addr;
    let us_client = move || async move {
        let mut c = connect_as(addr, sample_address("US")).await;
        greeting(&mut c).await
    };
    assert_eq!(us_client().await.as_deref(), Some("us-1"));
    let replace = |bytes: &[u8]| {
        let tmp = dir.path().join("geo.mmdb.new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &mmdb).unwrap();
    };
    let failed = |edge: &Edge| value(edge, r#"edge_geoip_reloads_total{result="failed"}"#);
    let truncated = &SAMPLE_MMDB[..SAMPLE_MMDB.len() / 2];
    let mut corrupt = SAMPLE_MMDB.to_vec();
    let marker = b"\xab\xcd\xefMaxMind.com";
    let at = corrupt
        .windows(marker.len())
        .rposition(|w| w == marker)
        .unwrap();
    corrupt[at + 3] = b'X';
    for (what, bytes) in [("truncated", truncated), ("corrupt", &corrupt[..])] {
        let before = failed(&edge);
        let t = Instant::now();
        replace(bytes);
        within(
            &format!("{what} mmdb: failure counted"),
            t,
            Duration::from_secs(5),
            || failed(&edge) > before,
        );
        assert_eq!(
            us_client().await.as_deref(),
            Some("us-1"),
            "{what}: the last good database keeps locating clients"
        );
    }
    let ok = value(&edge, r#"edge_geoip_reloads_total{result="ok"}"#);
    replace(SAMPLE_MMDB);
    within(
        "good mmdb: applied",
        Instant::now(),
        Duration::from_secs(5),
        || value(&edge, r#"edge_geoip_reloads_total{result="ok"}"#) > ok,
    );
    assert_eq!(us_client().await.as_deref(), Some("us-1"));
}
