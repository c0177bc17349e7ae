//! A backend row at one of the edge's own listeners would send every client
//! (and every active health check) back into the edge, each connection
//! opening another: such a table is refused, at start and on reload.

use std::time::{Duration, Instant};

use super::support::*;
use super::{reloads, route, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_the_edges_own_listener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let backend = Backend::start("real").await;
    add_backend(&db, "real", "eu", "GB", backend.addr, 100, 200);
    let port = free_port();
    let listen = format!("0.0.0.0:{port}");
    let mut args = edge_args(&db, &["--health-check-interval", "200ms"]);
    args[2] = &listen;
    let mut edge = Edge::start(&args);
    assert_eq!(edge.addr.port(), port);

    // A row pointing at the listener (through loopback, as an operator
    // copying this POP's address would write it) is refused; the table in
    // service keeps routing to the real backend.
    let invalid = reloads(&edge, "invalid");
    let looping = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    add_backend(&db, "self", "eu", "GB", looping, 100, 200);
    within(
        "the looping row refused",
        Instant::now(),
        Duration::from_secs(10),
        || reloads(&edge, "invalid") > invalid,
    );
    for _ in 0..5 {
        assert_eq!(route(&edge).await.as_deref(), Some("real"));
    }
    let log = edge.log().join("\n");
    assert!(log.contains("own listeners"), "{log}");
    // No connection went round: the edge saw only the test's clients.
    let conns = scrape(edge.metrics.unwrap());
    let total: f64 = conns
        .lines()
        .filter(|l| l.starts_with("edge_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(total, 5.0, "{conns}");
    let status = edge.signal_and_wait("TERM", Duration::from_secs(35));
    assert!(status.success(), "{status}");

    // At start, the same table is refused with the same reason.
    let out = geoedge().args(&args).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("own listeners"), "{err}");
}
