//! The access log end to end: a real `geoedge run` writing JSON lines to a
//! file, one connection ending each way there is (every termination
//! reason), the lines parsed back; the text format; the file reopened on
//! SIGUSR1 after a logrotate-style rename.

use geoedge_testkit as support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The access log's lines so far, as JSON objects.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Reads until end-of-file or a reset; what was read.
async fn drain(c: &mut BufReader<TcpStream>) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
    got
}

/// A served connection of `claim`, greeted by the backend.
async fn open(edge: SocketAddr, claim: &str) -> BufReader<TcpStream> {
    let mut c = connect_as(edge, claim.parse::<IpAddr>().unwrap()).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("b1"), "{claim}");
    c
}

// Two threads: the busy connection keeps moving bytes while the test
// waits for the edge to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_termination_reason_writes_one_json_line() {
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let log = dir.path().join("access.log");
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    // An app whose only backend refuses, one with none.
    let refusing = Refusing::new();
    let dead = refusing.addr;
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, app, region, country, wg_ip, port, soft_limit, hard_limit)
             VALUES ('dead-1', 'dead', 'eu', 'GB', '127.0.0.1', {}, 10, 10);",
            dead.port()
        ),
    );
    let mut edge = Edge::start(&[
        "run",
        "--routing-db",
        db.to_str().unwrap(),
        "--region",
        "eu",
        "--listen",
        "127.0.0.1:0,dead=127.0.0.1:0,nothing=127.0.0.1:0",
        "--sni-listen",
        "127.0.0.1:0",
        "--proxy-protocol-from",
        "127.0.0.0/8",
        "--send-proxy-protocol",
        "v1",
        "--metrics-listen",
        "127.0.0.1:0",
        "--idle-timeout",
        "1s",
        "--drain-timeout",
        "1s",
        "--client-max-connections",
        "1",
        "--client-rate",
        "2/60s",
        "--access-log",
        log.to_str().unwrap(),
        "--access-log-format",
        "json",
    ]);
    let main = edge.listener("default");
    let mut expected: HashMap<&str, &str> = HashMap::new();

    // client_closed: the client ends first.
    let mut c = open(main, "81.2.69.1").await;
    c.get_mut().write_all(b"echo\nhello").await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    assert!(drain(&mut c).await.ends_with(b"hello"));
    expected.insert("81.2.69.1", "client_closed");

    // A client GeoIP cannot place (a documentation address) is placed in
    // this POP's region: its line's tier says so.
    let mut c = open(main, "192.0.2.10").await;
    c.get_mut().write_all(b"echo\nhello").await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    assert!(drain(&mut c).await.ends_with(b"hello"));
    expected.insert("192.0.2.10", "client_closed");

    // backend_closed: the backend sends 100 bytes and ends first.
    let mut c = open(main, "81.2.69.2").await;
    c.get_mut().write_all(b"source 100\n").await.unwrap();
    assert_eq!(drain(&mut c).await.len(), 100);
    c.get_mut().shutdown().await.unwrap();
    expected.insert("81.2.69.2", "backend_closed");

    // idle_timeout: nothing moves for a second.
    let mut c = open(main, "81.2.69.3").await;
    c.get_mut().write_all(b"hold\n").await.unwrap();
    drain(&mut c).await;
    expected.insert("81.2.69.3", "idle_timeout");

    // client_limit: a second connection while the first is open.
    let mut first = open(main, "81.2.69.4").await;
    first.get_mut().write_all(b"hold\n").await.unwrap();
    let mut second = connect_as(main, "81.2.69.4".parse().unwrap()).await;
    assert_eq!(greeting(&mut second).await, None);
    expected.insert("81.2.69.4", "client_limit");

    // client_rate: a third connection within the minute. (Each waits for
    // the edge to have seen the last one close, refused meanwhile by the
    // cap of one: refusals count toward no rate.)
    for _ in 0..2 {
        let mut c = loop {
            let mut c = connect_as(main, "81.2.69.5".parse().unwrap()).await;
            if greeting(&mut c).await.is_some() {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        c.get_mut().shutdown().await.unwrap();
        drain(&mut c).await;
    }
    // A line is queued just before the connection's place under the cap is
    // given back, so a third connection made right after the second's line
    // is in the file can still meet the cap (on a loaded machine the worker
    // may not have run on yet): it is refused for the cap, which counts
    // toward no rate, and tried again until one is refused for the rate.
    let refusals = |log: &Path| {
        json_lines(log)
            .iter()
            .filter(|l| l["client"] == "81.2.69.5:40000" && l["end"] != "client_closed")
            .map(|l| l["end"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let started = std::time::Instant::now();
    loop {
        let before = refusals(&log).len();
        let mut third = connect_as(main, "81.2.69.5".parse().unwrap()).await;
        assert_eq!(greeting(&mut third).await, None);
        until(
            || format!("a line for the refused 81.2.69.5: {:?}", refusals(&log)),
            Duration::from_secs(20),
            || refusals(&log).len() > before,
        )
        .await;
        let ends = refusals(&log);
        if ends.iter().any(|e| e == "client_rate") {
            break;
        }
        assert!(
            ends.iter().all(|e| e == "client_limit"),
            "81.2.69.5 refused for {ends:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "81.2.69.5 still held to its cap after 20 s: {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expected.insert("81.2.69.5", "client_rate");

    // no_backend and connect_failed.
    let mut c = connect_as(edge.listener("nothing"), "81.2.69.6".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await, None);
    expected.insert("81.2.69.6", "no_backend");
    let mut c = connect_as(edge.listener("dead"), "81.2.69.7".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await, None);
    expected.insert("81.2.69.7", "connect_failed");

    // bad_header: a trusted source's garbage instead of a PROXY header.
    let mut c = TcpStream::connect(main).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut sink)).await;
    expected.insert("127.0.0.1", "bad_header");

    // not_tls: plain text on the listener that reads the ClientHello.
    let sni = edge.listeners().into_iter().find(|l| l.2).unwrap().1;
    let mut c = connect_as(sni, "81.2.69.8".parse().unwrap()).await;
    c.get_mut()
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    drain(&mut c).await;
    expected.insert("81.2.69.8", "not_tls");

    // error: the client resets in the middle of the relay.
    let mut c = open(main, "81.2.69.9").await;
    c.get_mut().write_all(b"hold\n").await.unwrap();
    let s = c.into_inner();
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    expected.insert("81.2.69.9", "error");

    // draining: still open (and busy: the idle timeout is a second) when
    // shutdown's drain timeout cuts it.
    let mut busy = open(main, "81.2.69.10").await;
    busy.get_mut().write_all(b"echo\n").await.unwrap();
    let keep_busy = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            if busy.get_mut().write_all(b"x").await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_millis(200), busy.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                _ => {}
            }
        }
    });
    expected.insert("81.2.69.10", "draining");
    let written = |lines: &[serde_json::Value], client: &str, end: &str| {
        lines.iter().any(|l| {
            l["client"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{client}:")))
                && l["end"] == end
        })
    };
    until(
        || format!("{:#?}", json_lines(&log)),
        Duration::from_secs(20),
        || {
            let lines = json_lines(&log);
            expected
                .iter()
                .filter(|(_, end)| **end != "draining")
                .all(|(client, end)| written(&lines, client, end))
        },
    )
    .await;
    edge.signal("TERM");
    assert!(edge.wait(Duration::from_secs(20)).success());
    keep_busy.abort();
    drop(first);

    let lines = json_lines(&log);
    let mut by_client: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    for l in &lines {
        for key in [
            "start",
            "duration_ms",
            "client",
            "country",
            "region",
            "app",
            "sni",
            "listener",
            "backend",
            "reason",
            "tier",
            "attempts",
            "connect_ms",
            "bytes_up",
            "bytes_down",
            "end",
        ] {
            assert!(l.get(key).is_some(), "{key} missing: {l}");
        }
        let client: SocketAddr = l["client"].as_str().unwrap().parse().unwrap();
        by_client
            .entry(client.ip().to_string())
            .or_default()
            .push(l);
    }
    for (client, end) in &expected {
        let ends: Vec<&str> = by_client
            .get(*client)
            .map(|ls| ls.iter().map(|l| l["end"].as_str().unwrap()).collect())
            .unwrap_or_default();
        assert!(
            ends.contains(end),
            "{client}: {end} not among {ends:?}: {lines:#?}"
        );
    }
    // What the lines say beside the reason.
    let closed = by_client["81.2.69.1"][0];
    assert_eq!(closed["app"], "default");
    assert_eq!(closed["backend"], "b1");
    assert_eq!(closed["country"], "GB");
    assert_eq!(closed["region"], "eu");
    assert_eq!(closed["reason"], "country");
    assert_eq!(closed["attempts"], 1);
    assert_eq!(closed["bytes_up"], 10); // "echo\n" + "hello"
    assert!(closed["connect_ms"].as_f64().is_some());
    assert_eq!(closed["listener"], main.to_string());
    let placed = by_client["192.0.2.10"][0];
    assert_eq!(placed["country"], serde_json::Value::Null);
    assert_eq!(placed["reason"], "region");
    assert_eq!(placed["tier"], "region");
    let source = by_client["81.2.69.2"][0];
    assert_eq!(source["bytes_up"], 11); // "source 100\n"
    assert!(source["bytes_down"].as_u64().unwrap() >= 100);
    let failed = by_client["81.2.69.7"][0];
    assert_eq!(failed["app"], "dead");
    assert_eq!(failed["backend"], "dead-1");
    assert_eq!(failed["connect_ms"], serde_json::Value::Null);
    let refused = by_client["81.2.69.6"][0];
    assert_eq!(refused["backend"], serde_json::Value::Null);
    // The address is never a metric label; the lines were all written.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\0'));
}

#[tokio::test]
async fn text_lines_and_a_reopen_after_logrotate_moves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let log = dir.path().join("access.log");
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &["--access-log", log.to_str().unwrap()]));
    let one = |claim: &'static str| async move {
        let mut c = open(edge.addr, claim).await;
        c.get_mut().shutdown().await.unwrap();
        drain(&mut c).await;
    };
    one("81.2.69.1").await;
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    until(
        || format!("no line in {}", read(&log)),
        Duration::from_secs(10),
        || read(&log).contains("81.2.69.1"),
    )
    .await;
    let line = read(&log);
    let line = line.lines().next().unwrap();
    eprintln!("{line}");
    assert!(line.starts_with("81.2.69.1:40000 ["), "{line}");
    assert!(line.contains(" default/b1 "), "{line}");
    assert!(line.contains(" client_closed "), "{line}");
    // logrotate: rename, then signal; the next lines go to a new file.
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    edge.signal("USR1");
    until(
        || "the edge logged the reopen".into(),
        Duration::from_secs(10),
        || {
            edge.log()
                .iter()
                .any(|l| l.contains("reopening the access log"))
        },
    )
    .await;
    one("81.2.69.2").await;
    until(
        || format!("no line in the new file: {}", read(&log)),
        Duration::from_secs(10),
        || read(&log).contains("81.2.69.2"),
    )
    .await;
    assert!(!read(&rotated).contains("81.2.69.2"));
    assert!(read(&rotated).contains("81.2.69.1"));
}

/// The real systemd-journald, started in a mount namespace of its own
/// (a tmpfs over /run: the host's journal is left alone), geoedge logging
/// into it with `--access-log journald`, the entries read back with
/// `journalctl`.
#[tokio::test]
async fn journald_receives_each_line_with_its_fields() {
    const JOURNALD: &str = "/lib/systemd/systemd-journald";
    let reason = if !is_root() {
        Some("not root (a mount namespace for a private journald)".to_owned())
    } else if !Path::new(JOURNALD).exists() || !have("journalctl") || !have("unshare") {
        let reason = format!("{JOURNALD}, journalctl or unshare missing");
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run: {reason}"
        );
        Some(reason)
    } else {
        None
    };
    if skipped(reason) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let pidfile = dir.path().join("journald.pid");
    // journald makes its sockets itself when not socket-activated.
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal && \
         {JOURNALD} & echo $! > {pid}; \
         for i in $(seq 100); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done; \
         exec \"$0\" \"$@\"",
        pid = pidfile.display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script])
        .arg(geoedge_path())
        .args(edge_args(
            &db,
            &["--access-log", "journald", "--access-log-format", "json"],
        ));
    without_geoedge_env(&mut cmd);
    cmd.env("RUST_LOG", "geoedge=debug,info");
    /// Kills the private journald however the test ends.
    struct Journald(std::path::PathBuf);
    impl Drop for Journald {
        fn drop(&mut self) {
            if let Ok(pid) = std::fs::read_to_string(&self.0) {
                let _ = std::process::Command::new("kill").arg(pid.trim()).status();
            }
        }
    }
    let _journald = Journald(pidfile.clone());
    let edge = Edge::spawn(cmd, "listening ");
    let mut c = open(edge.addr, "81.2.69.1").await;
    c.get_mut().write_all(b"echo\nhi").await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    drain(&mut c).await;
    let nothing = connect_as(edge.addr, "81.2.69.2".parse().unwrap()).await;
    drop(nothing);
    let entries = || {
        let out = std::process::Command::new("nsenter")
            .args(["-t", &edge.pid().to_string(), "-m", "journalctl"])
            .args([
                "-D",
                "/run/log/journal",
                "-t",
                "geoedge",
                "-o",
                "json",
                "--no-pager",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect::<Vec<_>>()
    };
    until(
        || format!("no journal entry for 81.2.69.1: {:#?}", entries()),
        Duration::from_secs(20),
        || {
            entries()
                .iter()
                .any(|e| e["GEOEDGE_CLIENT"] == "81.2.69.1:40000")
        },
    )
    .await;
    let all = entries();
    let e = all
        .iter()
        .find(|e| e["GEOEDGE_CLIENT"] == "81.2.69.1:40000")
        .unwrap();
    assert_eq!(e["GEOEDGE_END"], "client_closed", "{e}");
    assert_eq!(e["GEOEDGE_APP"], "default", "{e}");
    assert_eq!(e["GEOEDGE_BACKEND"], "b1", "{e}");
    assert_eq!(e["PRIORITY"], "6", "{e}");
    // MESSAGE holds the line in the chosen format.
    let line: serde_json::Value = serde_json::from_str(e["MESSAGE"].as_str().unwrap()).unwrap();
    assert_eq!(line["end"], "client_closed");
    assert_eq!(line["bytes_up"], 7); // "echo\n" + "hi"
}
