//! A FIFO put where a data file belongs: routing.db, then the mmdb,
//! replaced by a symlink to a FIFO that nobody writes to. The reloader
//! must refuse it at once (logged, counted), keep the last good data, and
//! apply a good file renamed in afterwards.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use geoedge_geoip::{sample_address, SAMPLE_MMDB};

use super::support::*;
use super::{generation, reloads, route, value, within, ONLY_A, ONLY_B};

/// Makes a FIFO at `dir/name.fifo` and a symlink to it at `dir/name.link`,
/// and returns the symlink.
fn fifo_link(dir: &Path, name: &str) -> std::path::PathBuf {
    let fifo = dir.join(format!("{name}.fifo"));
    let ok = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(ok.success(), "mkfifo");
    let link = dir.join(format!("{name}.link"));
    std::os::unix::fs::symlink(&fifo, &link).unwrap();
    link
}

/// Whether the edge logged a line containing every one of `words`.
fn logged(edge: &Edge, words: &[&str]) -> bool {
    edge.log()
        .iter()
        .any(|l| words.iter().all(|w| l.contains(w)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_db_swapped_for_a_fifo_is_refused_and_a_good_file_applies_after() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    add_backend(&db, "a", "eu", "GB", a.addr, 100, 200);
    add_backend(&db, "b", "eu", "GB", b.addr, 100, 200);
    sqlite3(&db, ONLY_A);
    let edge = Edge::start(&edge_args(&db, &[]));
    assert_eq!(route(&edge).await.as_deref(), Some("a"));
    let good = dir.path().join("good.db");
    std::fs::copy(&db, &good).unwrap();
    sqlite3(&good, ONLY_B);

    let link = fifo_link(dir.path(), "routing");
    let (failed, gen) = (reloads(&edge, "unreadable"), generation(&edge));
    let t = Instant::now();
    std::fs::rename(&link, &db).unwrap();
    within(
        "FIFO routing.db: failure counted",
        t,
        Duration::from_secs(30),
        || reloads(&edge, "unreadable") > failed,
    );
    assert!(
        logged(
            &edge,
            &["routing.db not reloaded", "not a regular file (a FIFO)"]
        ),
        "{:#?}",
        edge.log()
    );
    assert_eq!(route(&edge).await.as_deref(), Some("a"), "last good table");
    assert_eq!(generation(&edge), gen);
    let (status, _) = http_get(edge.metrics.unwrap(), "/readyz");
    assert_eq!(status, 200, "the last good table still serves");

    let t = Instant::now();
    std::fs::rename(&good, &db).unwrap();
    within(
        "FIFO routing.db: good file applied",
        t,
        Duration::from_secs(30),
        || generation(&edge) > gen,
    );
    assert_eq!(route(&edge).await.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mmdb_swapped_for_a_fifo_is_refused_and_a_good_file_applies_after() {
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
    let series = |result: &str| format!(r#"edge_geoip_reloads_total{{result="{result}"}}"#);

    let link = fifo_link(dir.path(), "geo");
    let (failed, ok) = (value(&edge, &series("failed")), value(&edge, &series("ok")));
    let t = Instant::now();
    std::fs::rename(&link, &mmdb).unwrap();
    within(
        "FIFO mmdb: failure counted",
        t,
        Duration::from_secs(30),
        || value(&edge, &series("failed")) > failed,
    );
    assert!(
        logged(
            &edge,
            &["GeoIP database rejected", "not a regular file (a FIFO)"]
        ),
        "{:#?}",
        edge.log()
    );
    assert_eq!(
        us_client().await.as_deref(),
        Some("us-1"),
        "the last good database keeps locating clients"
    );

    let tmp = dir.path().join("geo.mmdb.new");
    std::fs::write(&tmp, SAMPLE_MMDB).unwrap();
    let t = Instant::now();
    std::fs::rename(&tmp, &mmdb).unwrap();
    within(
        "FIFO mmdb: good file applied",
        t,
        Duration::from_secs(30),
        || value(&edge, &series("ok")) > ok,
    );
    assert_eq!(us_client().await.as_deref(), Some("us-1"));
}
