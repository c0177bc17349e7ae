//! The fleet's routing table on NATS JetStream, against real `nats-server`
//! processes on loopback (a single server, or a three-node cluster): `geoedge
//! db publish|log|status` and edges following with `geoedge run --nats`.
//! The three-POP runs over geoedge's WireGuard, in namespaces, are in
//! `lab`.
//!
//! - [`publish`]: revisions, the log, dry runs, rollback, compare-and-swap
//!   races, invalid tables, and what a POP's credentials may do.
//! - [`follow`]: edges installing revisions, refusing corrupt and invalid
//!   ones, serving through NATS outages and their own restarts, a node of
//!   three lost, a hand edit reported as diverged.
//! - [`load`]: backend load shared between edges, counted against soft
//!   limits.
//! - [`lease`]: hard limits held across edges by lease.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use geoedge_testkit as support;
use support::*;

mod follow;
mod lease;
mod load;
mod publish;

/// Whether the tools are missing (the test then skips; under CI it fails).
fn skipped() -> bool {
    !(tool_or_skip("nats-server") && tool_or_skip("sqlite3"))
}

/// `geoedge db ARGS` against `nats` as user alice, with `creds` if given.
fn db(nats: &str, creds: Option<&Path>, args: &[&str]) -> Output {
    let mut c = geoedge();
    c.arg("db")
        .args(args)
        .env("GEOEDGE_NATS", nats)
        .env("USER", "alice")
        .env("RUST_LOG", "warn");
    if let Some(creds) = creds {
        c.arg("--nats-creds").arg(creds);
    }
    c.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Publishes `master` with `message`; the revision its last line names.
fn publish(nats: &str, creds: Option<&Path>, master: &Path, message: &str) -> u64 {
    let out = db(
        nats,
        creds,
        &["publish", master.to_str().unwrap(), "-m", message],
    );
    assert!(out.status.success(), "{}", describe_output(&out));
    last_revision(&out)
}

fn last_revision(out: &Output) -> u64 {
    stdout(out)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no revision on the last line: {}", describe_output(out)))
}

/// The log as JSON.
fn log(nats: &str) -> Vec<serde_json::Value> {
    let out = db(nats, None, &["log", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `db status --json`.
fn status(nats: &str, creds: Option<&Path>) -> Vec<serde_json::Value> {
    let out = db(nats, creds, &["status", "--json"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A master routing.db in `dir` with one backend per `(id, addr)`, in
/// region eu.
fn master(dir: &Path, name: &str, backends: &[(&str, std::net::SocketAddr)]) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let db = routing_db(&sub);
    for (id, addr) in backends {
        add_backend(&db, id, "eu", "DE", *addr, 100, 200);
    }
    db
}

/// An edge following `nats` as POP `pop`, on a copy of `start_from` in
/// `dir/pop`.
fn follower(
    dir: &Path,
    pop: &str,
    nats: &str,
    start_from: &Path,
    extra: &[&str],
) -> (Edge, PathBuf) {
    let pop_dir = dir.join(pop);
    std::fs::create_dir_all(&pop_dir).unwrap();
    let db = pop_dir.join("routing.db");
    if !db.exists() {
        std::fs::copy(start_from, &db).unwrap();
    }
    (start_follower(&db, pop, nats, extra), db)
}

fn start_follower(db: &Path, pop: &str, nats: &str, extra: &[&str]) -> Edge {
    let mut args = vec!["--nats", nats, "--pop", pop];
    args.extend_from_slice(extra);
    Edge::launch(
        &edge_args(db, &args),
        &[("RUST_LOG", "geoedge=info,async_nats=warn")],
        "listening ",
    )
}

/// A metric of the edge's scrape (0 when absent).
fn metric_of(edge: &Edge, series: &str) -> f64 {
    metric(&scrape(edge.metrics.unwrap()), series).unwrap_or(0.0)
}

/// Waits until the edge has installed `revision`.
async fn installed(edge: &Edge, revision: u64) {
    until(
        || {
            format!(
                "revision {revision} not installed: {}",
                edge.log().join("\n")
            )
        },
        Duration::from_secs(60),
        || metric_of(edge, "edge_fleet_revision") == revision as f64,
    )
    .await;
}

/// The backend a new client from a German address gets.
async fn served_by(edge: &Edge, n: u8) -> Option<String> {
    let claim = IpAddr::from([81, 2, 69, n]);
    let mut c = connect_as(edge.addr, claim).await;
    greeting(&mut c).await
}
