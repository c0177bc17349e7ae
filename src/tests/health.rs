//! `/healthz`, `/readyz` and the logs of a real `geoedge run`: unready while
//! it waits for routing.db (held locked by a writer), ready once loaded and
//! listening, unready again while draining; JSON log lines carrying the
//! connection's span; a backend that refuses every connect logged once per
//! interval, not once per client.

use geoedge_testkit as support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::io::AsyncWriteExt;

/// Polls `cond` every 20 ms until it holds (10 s at most).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not within 10 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_unready_before_the_load_and_while_draining() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);

    // A writer holds routing.db locked: the edge waits for it, unready.
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();
    let mut edge = Edge::launch(
        &edge_args(&db, &["--drain-timeout", "30s"]),
        &[("RUST_LOG", "geoedge=debug,info")],
        "metrics ",
    );
    let metrics = edge.metrics.expect("the metrics line comes first");
    assert_eq!(http_get(metrics, "/readyz"), (503, "starting\n".into()));
    assert_eq!(http_get(metrics, "/healthz"), (200, "ok\n".into()));
    let text = scrape(metrics);
    assert_eq!(metric(&text, "edge_ready"), Some(0.0));
    assert!(
        !text.contains("edge_connections_total"),
        "nothing loaded yet"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        http_get(metrics, "/readyz").0,
        503,
        "still waiting for the writer"
    );

    // The writer commits: the edge loads, binds, and turns ready.
    writer.execute_batch("COMMIT;").unwrap();
    tokio::task::block_in_place(|| edge.wait_for("listening "));
    tokio::task::block_in_place(|| {
        eventually("ready", || {
            http_get(metrics, "/readyz") == (200, "ready\n".into())
        })
    });
    assert_eq!(metric(&scrape(metrics), "edge_ready"), Some(1.0));
    assert!(edge
        .log()
        .iter()
        .any(|l| l.contains("routing.db is locked by a writer")));

    // A client holds a connection; SIGTERM starts the drain.
    let mut held = connect_as(edge.addr, "81.2.69.1".parse().unwrap()).await;
    assert_eq!(greeting(&mut held).await.as_deref(), Some("be"));
    held.get_mut().write_all(b"hold\n").await.unwrap();
    edge.signal("TERM");
    tokio::task::block_in_place(|| {
        eventually("draining", || {
            http_get(metrics, "/readyz") == (503, "draining\n".into())
        })
    });
    assert_eq!(http_get(metrics, "/healthz").0, 200, "alive while draining");
    let text = scrape(metrics);
    assert_eq!(metric(&text, "edge_ready"), Some(0.0));
    assert_eq!(metric(&text, "edge_connections_current"), Some(1.0));
    // /readyz turns first, then the workers close their listeners (each
    // takes what its backlog holds before it does): soon after, no new
    // client gets in.
    tokio::task::block_in_place(|| {
        eventually("no new clients while draining", || {
            std::net::TcpStream::connect(edge.addr).is_err()
        })
    });

    // The last connection closes: the edge exits.
    drop(held);
    let status = tokio::task::block_in_place(|| edge.wait(Duration::from_secs(10)));
    assert!(status.success(), "{status:?}: {:#?}", edge.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_span_and_a_repeating_failure_is_logged_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let us = Backend::start("us").await;
    let refusing = Refusing::new();
    let dead = refusing.addr;
    add_backend(&db, "us", "us", "US", us.addr, 100, 200);
    add_backend(&db, "dead", "eu", "GB", dead, 100, 200);
    let edge = Edge::launch(
        &edge_args(&db, &["--log-format", "json", "--connect-attempts", "1"]),
        &[("RUST_LOG", "geoedge=debug,info")],
        "listening ",
    );
    let started = Instant::now();

    // A client in New York reaches its backend.
    let mut c = connect_as(edge.addr, "207.237.0.1".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("us"));
    drop(c);
    // 40 clients in Great Britain hit a backend that refuses.
    for i in 1..=40u8 {
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, i])).await;
        assert_eq!(greeting(&mut c).await, None);
    }
    let elapsed = started.elapsed();
    let text = scrape(edge.metrics.unwrap());
    assert_eq!(
        metric(
            &text,
            r#"edge_connect_failures_total{backend="dead",reason="refused"}"#
        ),
        Some(40.0)
    );
    assert_eq!(
        metric(&text, r#"edge_connections_total{result="connect_failed"}"#),
        Some(40.0)
    );

    let mut log = Vec::new();
    tokio::task::block_in_place(|| {
        eventually("the relay's debug line", || {
            log = edge.log();
            log.iter().any(|l| l.contains("\"relaying\""))
        })
    });
    let lines: Vec<Value> = log
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let relaying = lines
        .iter()
        .find(|v| v["fields"]["message"] == "relaying")
        .unwrap();
    assert_eq!(relaying["level"], "DEBUG");
    assert_eq!(relaying["span"]["name"], "conn");
    assert_eq!(relaying["span"]["client"], "207.237.0.1");
    assert_eq!(relaying["span"]["country"], "US");
    assert_eq!(relaying["span"]["backend"], "us");

    // One warning for the 40 failures (one more per 10 s interval, should
    // the machine be that slow).
    let warnings: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            v["level"] == "WARN"
                && v["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("connecting to a backend failed")
        })
        .collect();
    let allowed = 1 + elapsed.as_secs() as usize / 10;
    assert!(
        !warnings.is_empty() && warnings.len() <= allowed,
        "{} warnings in {elapsed:?}: {warnings:#?}",
        warnings.len()
    );
    assert_eq!(warnings[0]["fields"]["backend"], "dead");
    assert_eq!(warnings[0]["fields"]["reason"], "refused");
    assert_eq!(warnings[0]["span"]["country"], "GB");
}
