//! The admin endpoints end to end (docs/admin.md): a real `geoedge run`,
//! clients claiming their addresses in PROXY headers, routing.db edited
//! with the `sqlite3` CLI while the edge runs, and `geoedge route --live`
//! and `geoedge admin` asking the same endpoints.

use geoedge_testkit as support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::io::AsyncWriteExt;

/// Generous: a guard against a hang, not a timing target.
const GIVE_UP: Duration = Duration::from_secs(30);

/// A plain HTTP/1.0 request with any method: the status, the
/// `Content-Type` and the body as JSON.
fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        })
        .unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, content_type, json)
}

fn get(metrics: SocketAddr, path: &str) -> (u16, Value) {
    let (status, content_type, body) = http(metrics, "GET", path);
    assert_eq!(content_type, "application/json", "{path}");
    (status, body)
}

/// A connection of `claim` served by the edge, held open; the backend
/// that greeted it.
async fn held(
    edge: SocketAddr,
    claim: IpAddr,
) -> (tokio::io::BufReader<tokio::net::TcpStream>, String) {
    let mut c = connect_as(edge, claim).await;
    let backend = greeting(&mut c).await.expect("served");
    c.get_mut().write_all(b"hold\n").await.unwrap();
    (c, backend)
}

/// The backend a new connection of `claim` is served by (closed at once).
async fn served_by(edge: SocketAddr, claim: IpAddr) -> String {
    let mut c = connect_as(edge, claim).await;
    greeting(&mut c).await.expect("served")
}

fn candidate<'a>(explain: &'a Value, id: &str) -> &'a Value {
    explain["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no candidate {id} in {explain}"))
}

fn backend<'a>(backends: &'a Value, id: &str) -> &'a Value {
    backends["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("no backend {id} in {backends}"))
}

/// `geoedge <args>`: its exit code, stdout and stderr.
fn cli(args: &[&str]) -> (i32, String, String) {
    let out = geoedge().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn explain_and_bindings_show_a_held_client_and_writes_are_refused_when_off() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let metrics = edge.metrics.unwrap();
    let client: IpAddr = "81.2.69.142".parse().unwrap();

    // Nothing bound yet.
    let (status, explain) = get(metrics, "/explain?client=81.2.69.142");
    assert_eq!(status, 200, "{explain}");
    assert_eq!(explain["binding"], Value::Null);
    assert_eq!(explain["backend"], "b1");
    assert_eq!(candidate(&explain, "b1")["active"], 0);
    assert_eq!(candidate(&explain, "b1")["health"], "up");
    assert_eq!(get(metrics, "/bindings?client=81.2.69.142").0, 404);

    let (conn, by) = held(edge.addr, client).await;
    assert_eq!(by, "b1");
    let (_, explain) = get(metrics, "/explain?client=81.2.69.142");
    assert_eq!(explain["binding"]["backend"], "b1", "{explain}");
    assert_eq!(explain["binding"]["network"], "81.2.69.142/32");
    assert_eq!(candidate(&explain, "b1")["active"], 1, "{explain}");
    let (status, binding) = get(metrics, "/bindings?client=81.2.69.142");
    assert_eq!(status, 200);
    assert_eq!(binding["backend"], "b1");
    assert_eq!(binding["app"], "default");
    let (_, all) = get(metrics, "/bindings");
    assert_eq!(
        (all["count"].clone(), all["capacity"].clone()),
        (1.into(), 1_000_000.into())
    );
    // Another app has no binding for the client.
    assert_eq!(
        get(metrics, "/bindings?client=81.2.69.142&app=other").0,
        404
    );
    // Bad queries.
    for bad in [
        "/explain",
        "/explain?client=81.2.69",
        "/explain?client=1.2.3.4&ip=1.2.3.4",
        "/bindings?client=::ffff:zz",
    ] {
        let (status, body) = get(metrics, bad);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }

    // Writes are off by default: refused, the binding stays.
    for path in ["/bindings?client=81.2.69.142", "/bindings"] {
        let (status, _, body) = http(metrics, "DELETE", path);
        assert_eq!(status, 403, "{path}: {body}");
    }
    let (code, _, stderr) = cli(&[
        "admin",
        &metrics.to_string(),
        "clear-bindings",
        "--client",
        "81.2.69.142",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--admin-write on"), "{stderr}");
    assert_eq!(get(metrics, "/bindings?client=81.2.69.142").0, 200);

    // The CLI prints the same: its JSON is the endpoint's.
    let (code, out, stderr) = cli(&[
        "admin",
        &metrics.to_string(),
        "bindings",
        "--client",
        "81.2.69.142",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.starts_with("81.2.69.142 app default: b1 (network 81.2.69.142/32"),
        "{out}"
    );
    let (code, out, _) = cli(&[
        "admin",
        &metrics.to_string(),
        "bindings",
        "--client",
        "81.2.69.9",
    ]);
    assert_eq!((code, out.as_str()), (1, ""));
    let (_, live, stderr) = cli(&["route", "--live", &metrics.to_string(), "81.2.69.142"]);
    let mut live: Value = serde_json::from_str(&live).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let (_, mut explain) = get(metrics, "/explain?client=81.2.69.142");
    // The binding's idle time moves on between two asks.
    for v in [&mut live, &mut explain] {
        v["binding"]["idle_ms"] = Value::Null;
        v["binding"]["expires_in_ms"] = Value::Null;
    }
    assert_eq!(live, explain);
    // What `geoedge route` prints from the files is the same object, less
    // the live fields.
    let offline: Value = serde_json::from_str(&run(&[
        geoedge_path().to_str().unwrap(),
        "route",
        "--routing-db",
        db.to_str().unwrap(),
        "--region",
        "eu",
        "81.2.69.142",
    ]))
    .unwrap();
    for key in offline.as_object().unwrap().keys() {
        assert!(
            live.get(key).is_some(),
            "{key} missing from the live explain"
        );
    }
    assert_eq!(offline["client"], live["client"]);
    assert_eq!(offline["backend"], live["backend"]);
    drop(conn);
    until(
        || "the connection's close counted".into(),
        GIVE_UP,
        || candidate(&get(metrics, "/explain?client=81.2.69.142").1, "b1")["active"] == 0,
    )
    .await;
}

#[tokio::test]
async fn with_writes_on_a_cleared_client_is_decided_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b1 = Backend::start("b1").await;
    let b2 = Backend::start("b2").await;
    // b1 is in the client's region but another country.
    add_backend(&db, "b1", "eu", "DE", b1.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &["--admin-write", "on"]));
    let metrics = edge.metrics.unwrap();
    let client: IpAddr = "81.2.69.142".parse().unwrap();
    let other: IpAddr = "81.2.69.7".parse().unwrap();
    assert_eq!(served_by(edge.addr, client).await, "b1");
    assert_eq!(served_by(edge.addr, other).await, "b1");
    let (_, revision) = get(metrics, "/revision");
    let generation = revision["routing_generation"].as_u64().unwrap();
    assert_eq!(revision["last_reload"], "applied");
    assert_eq!(revision["routing_db"], db.to_str().unwrap());

    // A backend in the client's own country: fresh clients go there, the
    // bound ones stay.
    add_backend(&db, "b2", "eu", "GB", b2.addr, 100, 200);
    until(
        || "the edit applied".into(),
        GIVE_UP,
        || get(metrics, "/revision").1["routing_generation"].as_u64() > Some(generation),
    )
    .await;
    let (_, explain) = get(metrics, "/explain?client=81.2.69.142");
    assert_eq!(explain["backend"], "b2", "a fresh client: {explain}");
    assert_eq!(explain["binding"]["backend"], "b1", "{explain}");
    assert_eq!(served_by(edge.addr, client).await, "b1");

    // One client cleared: decided afresh; the other keeps its binding.
    let (status, _, body) = http(metrics, "DELETE", "/bindings?client=81.2.69.142");
    assert_eq!((status, body["cleared"].clone()), (200, 1.into()), "{body}");
    assert_eq!(get(metrics, "/bindings?client=81.2.69.142").0, 404);
    assert_eq!(served_by(edge.addr, client).await, "b2");
    assert_eq!(served_by(edge.addr, other).await, "b1");
    // Every binding, through the CLI.
    let (code, out, stderr) = cli(&["admin", &metrics.to_string(), "clear-bindings"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "cleared 2 bindings\n"),
        "{stderr}"
    );
    assert_eq!(get(metrics, "/bindings").1["count"], 0);
    assert_eq!(served_by(edge.addr, other).await, "b2");

    // The operator takes b2 down: its state and eligibility follow.
    let (_, backends) = get(metrics, "/backends");
    assert_eq!(backend(&backends, "b2")["state"], "up");
    assert_eq!(backend(&backends, "b2")["eligible"], true);
    assert_eq!(backend(&backends, "b2")["addr"], b2.addr.to_string());
    sqlite3(&db, "UPDATE backends SET healthy = 0 WHERE id = 'b2';");
    until(
        || "b2 shown down".into(),
        GIVE_UP,
        || backend(&get(metrics, "/backends").1, "b2")["state"] == "operator_down",
    )
    .await;
    let (_, backends) = get(metrics, "/backends");
    assert_eq!(backend(&backends, "b2")["eligible"], false);
    assert_eq!(backend(&backends, "b1")["state"], "up");
    let (code, out, _) = cli(&["admin", &metrics.to_string(), "backends"]);
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.starts_with("b2 "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("operator_down") && row.ends_with("no"),
        "{row}"
    );
    let (_, json, _) = cli(&["admin", &metrics.to_string(), "backends", "--json"]);
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), backends);

    // A refused edit (written as a tool that bypasses the schema's
    // triggers would): the revision says so, and keeps its generation.
    let (_, before) = get(metrics, "/revision");
    drop_triggers(&db);
    sqlite3(&db, "UPDATE backends SET hard_limit = 1 WHERE id = 'b1';");
    until(
        || format!("the refusal shown: {}", get(metrics, "/revision").1),
        GIVE_UP,
        || get(metrics, "/revision").1["last_reload"] == "rejected",
    )
    .await;
    let (_, after) = get(metrics, "/revision");
    assert_eq!(after["routing_generation"], before["routing_generation"]);
    assert!(after["last_error"].is_string(), "{after}");
    let (code, out, _) = cli(&["admin", &metrics.to_string(), "revision"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("last reload rejected") && out.contains("not in service: "),
        "{out}"
    );
}
