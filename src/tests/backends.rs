//! Backend failures end to end, through a real `geoedge run`:
//! - a backend that refuses connections is ejected after `--eject-after`
//!   failed connects, 1,000 of 1,000 clients get through meanwhile, and it
//!   is re-admitted by a trial connect once it listens again;
//! - active checks take a refusing backend down before any client pays for
//!   it, bring it back up, and follow routing.db edits;
//! - a blackholed backend (SYNs dropped inside a network namespace) costs a
//!   client exactly the connect timeout before the next backend serves it,
//!   and only `--eject-after` clients pay it (needs root and `ip`);
//! - a backend process killed mid-stream: the client sees end-of-file or a
//!   reset within 200 ms, and its next connection gets through, on another
//!   backend, at its first try.
//!
//! Each test prints what it measured (`measured: ...`).

use geoedge_testkit as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A private client address: placed at the POP's region (`eu`), so every
/// `eu` backend is equally near and ties go by load, then id.
fn client(i: u32) -> IpAddr {
    IpAddr::from([10, 77, (i >> 8) as u8, i as u8])
}

/// A fresh scrape of the edge's metrics.
fn scrape_edge(edge: &Edge) -> String {
    let m = edge.metrics.expect("metrics listener");
    tokio::task::block_in_place(|| scrape(m))
}

/// One series' value in a fresh scrape (0 when absent).
fn value(edge: &Edge, series: &str) -> f64 {
    metric(&scrape_edge(edge), series).unwrap_or(0.0)
}

fn state(edge: &Edge, backend: &str, state: &str) -> f64 {
    value(
        edge,
        &format!(r#"edge_backend_health_state{{backend="{backend}",state="{state}"}}"#),
    )
}

/// Waits (up to `within`) for `cond`; how long it took.
async fn until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// A client through the edge: the backend that greeted it, if any.
async fn greet(edge: SocketAddr, ip: IpAddr) -> Option<String> {
    let mut c = connect_as(edge, ip).await;
    greeting(&mut c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_ejected_1000_clients_get_through_and_it_is_readmitted() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let refusing = Refusing::new();
    let dead = refusing.addr;
    let (b, c) = (Backend::start("b").await, Backend::start("c").await);
    // `a` is everyone's first choice (same proximity, lowest id).
    add_backend(&db, "a", "eu", "DE", dead, 1000, 2000);
    add_backend(&db, "b", "eu", "DE", b.addr, 1000, 2000);
    add_backend(&db, "c", "eu", "DE", c.addr, 1000, 2000);
    let edge = Edge::start(&edge_args(
        &db,
        &[
            "--health-check-interval",
            "off",
            "--eject-after",
            "3",
            "--eject-backoff",
            "500ms",
            "--eject-backoff-max",
            "2s",
        ],
    ));
    let refused = r#"edge_connect_failures_total{backend="a",reason="refused"}"#;
    let ejections = r#"edge_backend_ejections_total{backend="a"}"#;

    // One client at a time: each fails over to b or c; the third failure ejects a.
    for i in 1..=3u32 {
        let got = greet(edge.addr, client(i)).await;
        assert!(matches!(got.as_deref(), Some("b" | "c")), "{got:?}");
        let text = scrape_edge(&edge);
        assert_eq!(metric(&text, refused), Some(f64::from(i)));
        assert_eq!(metric(&text, ejections), Some(f64::from(u8::from(i == 3))));
    }
    assert_eq!(state(&edge, "a", "ejected"), 1.0);
    assert_eq!(value(&edge, r#"edge_backend_up{backend="a"}"#), 0.0);
    assert_eq!(value(&edge, r#"edge_backend_eligible{backend="a"}"#), 0.0);

    // 1,000 clients in all, 50 at a time, while a still refuses: every one
    // gets through; a sees only its trial connects, one per backoff.
    let started = Instant::now();
    let mut through = 3;
    for batch in (4..=1000u32).collect::<Vec<_>>().chunks(50) {
        let runs: Vec<_> = batch
            .iter()
            .map(|&i| tokio::spawn(greet(edge.addr, client(i))))
            .collect();
        for r in runs {
            let got = r.await.unwrap();
            assert!(matches!(got.as_deref(), Some("b" | "c")), "{got:?}");
            through += 1;
        }
    }
    let took = started.elapsed();
    assert_eq!(through, 1000);
    let failures = value(&edge, refused);
    // Trials come at most once per backoff (500 ms, then 1 s, then 2 s).
    let trials = failures - 3.0;
    assert!(
        trials <= took.as_secs_f64() / 0.5 + 1.0,
        "{trials} trials in {took:?}"
    );
    assert_eq!(value(&edge, ejections), 1.0 + trials);
    assert_eq!(
        value(&edge, r#"edge_connections_total{result="ok"}"#),
        1000.0
    );
    eprintln!(
        "measured: a refusing backend was ejected after 3 failed connects; 1000/1000 clients got through in {took:?} with {trials} failed trial connects"
    );

    // a listens again: the next trial (at most 2 s away) re-admits it.
    drop(refusing);
    let recovered = Backend::start_on("a", dead).await;
    let t0 = Instant::now();
    let mut i = 2000;
    loop {
        i += 1;
        if greet(edge.addr, client(i)).await.as_deref() == Some("a") {
            break;
        }
        // Generous: the next trial is at most the 2 s cap away.
        assert!(t0.elapsed() < Duration::from_secs(10), "a not re-admitted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let readmitted = t0.elapsed();
    // Re-admitted by a trial, not by a fresh ejection cycle: no more
    // ejections than the trials counted above.
    assert_eq!(value(&edge, ejections), 1.0 + trials, "{readmitted:?}");
    assert_eq!(state(&edge, "a", "up"), 1.0);
    assert_eq!(value(&edge, r#"edge_backend_up{backend="a"}"#), 1.0);
    assert_eq!(value(&edge, r#"edge_backend_eligible{backend="a"}"#), 1.0);
    // Back in service for everyone.
    assert_eq!(greet(edge.addr, client(3000)).await.as_deref(), Some("a"));
    assert!(
        recovered
            .seen
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 2
    );
    eprintln!(
        "measured: re-admitted {readmitted:?} after the backend listened again (backoff max 2 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_refusing_backend_down_bring_it_back_and_follow_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let refusing = Refusing::new();
    let dead = refusing.addr;
    let b = Backend::start("b").await;
    let c = Backend::start("c").await;
    add_backend(&db, "a", "eu", "DE", dead, 1000, 2000);
    add_backend(&db, "b", "eu", "DE", b.addr, 1000, 2000);
    add_backend(&db, "c", "eu", "DE", c.addr, 1000, 2000);
    let edge = Edge::start(&edge_args(
        &db,
        &[
            "--health-check-interval",
            "100ms",
            "--health-check-timeout",
            "100ms",
            "--health-check-rise",
            "2",
            "--health-check-fall",
            "3",
            "--eject-after",
            "0",
        ],
    ));
    let down = until("a down", Duration::from_secs(5), || {
        state(&edge, "a", "down") == 1.0
    })
    .await;
    // No client ever tried a.
    for i in 1..=20 {
        let got = greet(edge.addr, client(i)).await;
        assert!(matches!(got.as_deref(), Some("b" | "c")), "{got:?}");
    }
    let text = scrape_edge(&edge);
    assert_eq!(
        metric(
            &text,
            r#"edge_connect_failures_total{backend="a",reason="refused"}"#
        ),
        Some(0.0)
    );
    assert!(metric(&text, r#"edge_health_checks_total{result="refused"}"#).unwrap() >= 3.0);
    assert!(metric(&text, r#"edge_health_checks_total{result="ok"}"#).unwrap() >= 2.0);
    // Down by the checks: it takes no new client, and says so.
    assert_eq!(
        metric(&text, r#"edge_backend_eligible{backend="a"}"#),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, r#"edge_backend_eligible{backend="b"}"#),
        Some(1.0)
    );

    drop(refusing);
    let _a = Backend::start_on("a", dead).await;
    let up = until("a up", Duration::from_secs(5), || {
        state(&edge, "a", "up") == 1.0
    })
    .await;
    assert_eq!(value(&edge, r#"edge_backend_eligible{backend="a"}"#), 1.0);
    assert_eq!(greet(edge.addr, client(100)).await.as_deref(), Some("a"));
    eprintln!(
        "measured: active checks every 100 ms (fall 3, rise 2): down {down:?} after start, up {up:?} after the backend listened again"
    );

    // A backend added to routing.db is checked (and found down); one
    // removed is no longer checked.
    let d = Refusing::new();
    add_backend(&db, "d", "eu", "DE", d.addr, 1000, 2000);
    until("d checked and down", Duration::from_secs(5), || {
        state(&edge, "d", "down") == 1.0
    })
    .await;
    sqlite3(&db, "DELETE FROM backends WHERE id = 'c';");
    until("c gone", Duration::from_secs(5), || {
        !scrape_edge(&edge).contains(r#"backend="c""#)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let seen = c.seen.accepted.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.seen.accepted.load(std::sync::atomic::Ordering::SeqCst),
        seen,
        "a removed backend is still checked"
    );
}

/// A network namespace whose address drops every SYN: the address is
/// routed through a veth pair into a namespace that neither owns nor
/// forwards it (and blackholes it besides). Removed on drop.
struct Blackhole {
    /// Deleting the namespace deletes the veth pair and the route through it.
    _ns: Netns,
    _veth: Veth,
    /// The address that never answers.
    addr: SocketAddr,
}

impl Blackhole {
    fn new() -> Blackhole {
        let pid = std::process::id();
        let n = pid % 250;
        let (ns, outer, inner) = (
            format!("gebk{pid}"),
            format!("gebk0{pid}"),
            format!("gebk1{pid}"),
        );
        let netns = Netns::new(ns.clone());
        let veth = Veth::new(
            &ns,
            &outer,
            &inner,
            &format!("198.18.{n}.1/30"),
            &format!("198.18.{n}.2/30"),
        );
        run(&[
            "ip",
            "route",
            "add",
            &format!("198.19.{n}.7/32"),
            "via",
            &format!("198.18.{n}.2"),
        ]);
        netns.ip(&["route", "add", "blackhole", &format!("198.19.{n}.7/32")]);
        Blackhole {
            _ns: netns,
            _veth: veth,
            addr: format!("198.19.{n}.7:8080").parse().unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_backend_costs_the_connect_timeout_and_only_until_it_is_ejected() {
    if skipped(privileged_skip_reason(&["ip"])) {
        return;
    }
    let hole = Blackhole::new();
    // The namespace really drops SYNs: a connect neither succeeds nor is refused.
    let probe = tokio::time::timeout(
        Duration::from_millis(300),
        tokio::net::TcpStream::connect(hole.addr),
    )
    .await;
    assert!(probe.is_err(), "{probe:?}");

    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b").await;
    add_backend(&db, "a-hole", "eu", "DE", hole.addr, 1000, 2000);
    add_backend(&db, "b", "eu", "DE", b.addr, 1000, 2000);
    let edge = Edge::start(&edge_args(
        &db,
        &[
            "--connect-timeout",
            "1s",
            "--health-check-interval",
            "off",
            "--eject-after",
            "3",
            "--eject-backoff",
            "30s",
        ],
    ));
    let timeout = Duration::from_secs(1);
    let mut waits = Vec::new();
    for i in 1..=6u32 {
        let t = Instant::now();
        let got = greet(edge.addr, client(i)).await;
        let waited = t.elapsed();
        assert_eq!(got.as_deref(), Some("b"), "client {i}");
        if i <= 3 {
            // The attempt is abandoned at the connect timeout ±10%, then b serves.
            assert!(
                waited >= timeout * 9 / 10 && waited <= timeout * 11 / 10,
                "client {i} waited {waited:?}"
            );
        } else {
            // Ejected: no client waits for it any more.
            assert!(
                waited < Duration::from_millis(200),
                "client {i} waited {waited:?}"
            );
        }
        waits.push(waited);
    }
    let text = scrape_edge(&edge);
    assert_eq!(
        metric(
            &text,
            r#"edge_connect_failures_total{backend="a-hole",reason="timeout"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(&text, r#"edge_backend_ejections_total{backend="a-hole"}"#),
        Some(1.0)
    );
    eprintln!("measured: blackholed backend, connect timeout 1 s, eject after 3: clients waited {waits:?}");

    // With active checks, the blackholed backend goes down before any client pays.
    let edge = Edge::start(&edge_args(
        &db,
        &[
            "--connect-timeout",
            "1s",
            "--health-check-interval",
            "100ms",
            "--health-check-timeout",
            "200ms",
            "--health-check-fall",
            "2",
        ],
    ));
    let down = until("a-hole down", Duration::from_secs(5), || {
        state(&edge, "a-hole", "down") == 1.0
    })
    .await;
    let timeouts = r#"edge_connect_failures_total{backend="a-hole",reason="timeout"}"#;
    let before = value(&edge, timeouts);
    let t = Instant::now();
    assert_eq!(greet(edge.addr, client(100)).await.as_deref(), Some("b"));
    let waited = t.elapsed();
    // The down backend is not dialed at all (so the client does not wait
    // out its 1 s connect timeout).
    assert_eq!(value(&edge, timeouts), before, "a-hole was dialed");
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    assert!(value(&edge, r#"edge_health_checks_total{result="timeout"}"#) >= 2.0);
    eprintln!("measured: active checks (every 100 ms, timeout 200 ms, fall 2) took the blackholed backend down {down:?} after start; the next client waited {waited:?}");
}

/// Environment variable that turns [`backend_process`] into a backend.
const CHILD: &str = "GEOEDGE_TEST_BACKEND_PROCESS";

/// Not a test of its own: run as a child process (by
/// [`BackendProcess::start`]) with [`CHILD`] set, it is a backend that
/// greets (`backend=ID`) and then echoes, until it is killed. Without the
/// variable it returns at once.
#[test]
fn backend_process() {
    let Ok(id) = std::env::var(CHILD) else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    println!("ready {}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let id = id.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut header = String::new();
            if reader.read_line(&mut header).is_err() {
                return;
            }
            let _ = stream.write_all(format!("backend={id}\n").as_bytes());
            let mut buf = [0u8; 16384];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        });
    }
}

/// A backend in a process of its own (this test binary, running
/// [`backend_process`]); killed on drop.
struct BackendProcess {
    child: Child,
    addr: SocketAddr,
}

impl BackendProcess {
    fn start(id: &str) -> BackendProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["backends::backend_process", "--exact", "--nocapture"])
            .env(CHILD, id)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("the backend process says ready")
                .unwrap();
            if let Some(addr) = line.strip_prefix("ready ") {
                break addr.parse().unwrap();
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        BackendProcess { child, addr }
    }

    /// SIGKILL, and reaps it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_stream_ends_the_client_at_once_and_the_next_connection_goes_elsewhere(
) {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let mut proc_backend = BackendProcess::start("a-proc");
    let b = Backend::start("b").await;
    add_backend(&db, "a-proc", "eu", "DE", proc_backend.addr, 1000, 2000);
    add_backend(&db, "b", "eu", "DE", b.addr, 1000, 2000);
    let edge = Edge::start(&edge_args(&db, &["--health-check-interval", "off"]));

    let ip = client(1);
    let mut c = connect_as(edge.addr, ip).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("a-proc"));
    // Mid-stream: bytes go through and come back.
    let mut buf = vec![0u8; 64 * 1024];
    for round in 0..8u8 {
        let chunk = vec![round; 8192];
        c.get_mut().write_all(&chunk).await.unwrap();
        let mut got = 0;
        while got < chunk.len() {
            let n = c.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed mid-stream");
            assert!(buf[..n].iter().all(|&x| x == round));
            got += n;
        }
    }
    proc_backend.kill();
    let killed = Instant::now();
    // A stream keeps flowing from the client; the edge passes on the end.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) => return "end-of-file",
                Ok(_) => continue,
                Err(_) => return "reset",
            }
        }
    })
    .await
    .expect("the client saw the backend go");
    let seen_after = killed.elapsed();
    assert!(
        seen_after <= Duration::from_millis(200),
        "{ended} after {seen_after:?}"
    );

    // The same client's next connection (its binding points at the dead
    // backend) gets through at its first try, on b.
    let t = Instant::now();
    assert_eq!(greet(edge.addr, ip).await.as_deref(), Some("b"));
    let next = t.elapsed();
    let text = scrape_edge(&edge);
    let refused = metric(
        &text,
        r#"edge_connect_failures_total{backend="a-proc",reason="refused"}"#,
    )
    .unwrap();
    eprintln!(
        "measured: backend killed mid-stream: the client saw {ended} {seen_after:?} after the kill; its next connection reached b in {next:?} ({refused} refused connect to the dead backend on the way)"
    );
    assert!(refused <= 1.0);
    assert_eq!(
        metric(&text, r#"edge_connections_total{result="ok"}"#),
        Some(2.0)
    );
}

/// Active checks stay within `--health-check-max-rate` however large the
/// table, and leave alone the backends of apps no listener serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_keep_to_their_rate_and_to_the_apps_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // 40 refusing backends of the app served; checking each every 100 ms
    // would be 400 checks a second.
    let mut rows = String::new();
    let refusing: Vec<Refusing> = (0..40).map(|_| Refusing::new()).collect();
    for (i, r) in refusing.iter().enumerate() {
        let addr = r.addr;
        rows.push_str(&format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) \
             VALUES ('r{i}', 'eu', 'GB', '{}', {}, 10, 20);",
            addr.ip(),
            addr.port()
        ));
    }
    // And one of another app, listening, which must never be checked.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let o = other.local_addr().unwrap();
    rows.push_str(&format!(
        "INSERT INTO backends (id, app, region, country, wg_ip, port, soft_limit, hard_limit) \
         VALUES ('other', 'elsewhere', 'eu', 'GB', '{}', {}, 10, 20);",
        o.ip(),
        o.port()
    ));
    sqlite3(&db, &rows);
    let args = edge_args(
        &db,
        &[
            "--health-check-interval",
            "100ms",
            "--health-check-max-rate",
            "10",
            "--eject-after",
            "0",
        ],
    );
    let edge = Edge::start(&args);
    let checks = |edge: &Edge| -> f64 {
        scrape_edge(edge)
            .lines()
            .filter(|l| l.starts_with("edge_health_checks_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let start = Instant::now();
    let first = checks(&edge);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let made = checks(&edge) - first;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "measured: {made} checks in {secs:.1} s ({:.1}/s) at a rate of 10/s",
        made / secs
    );
    // At 10 a second (and 400 a second without the cap), with slack for
    // the scrape timing and one period's start-up spread.
    assert!(made <= 10.0 * secs + 15.0, "{made} checks in {secs:.1} s");
    assert!(made >= 5.0, "checks still run: {made}");
    let mut accepted = 0;
    while other.accept().is_ok() {
        accepted += 1;
    }
    assert_eq!(
        accepted, 0,
        "a backend of an app no listener serves was checked"
    );
}
