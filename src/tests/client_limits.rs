//! Per-client limits end to end: a real `geoedge run`, clients claiming
//! their addresses in PROXY headers (the limits key on the real client,
//! not the socket), limits from the settings and from routing.db's `apps`
//! table edited with the `sqlite3` CLI while the edge runs.

use geoedge_testkit as support;

use std::net::IpAddr;
use std::time::Duration;

use support::*;
use tokio::io::AsyncWriteExt;

/// A connection of `claim` that the edge served (its backend greeted it),
/// held open.
async fn held(
    edge: std::net::SocketAddr,
    claim: IpAddr,
) -> tokio::io::BufReader<tokio::net::TcpStream> {
    let mut c = connect_as(edge, claim).await;
    assert_eq!(
        greeting(&mut c).await.as_deref(),
        Some("b1"),
        "{claim} served"
    );
    c.get_mut().write_all(b"hold\n").await.unwrap();
    c
}

/// Whether a connection of `claim` is served (greeted) or closed.
async fn served(edge: std::net::SocketAddr, claim: IpAddr) -> bool {
    let mut c = connect_as(edge, claim).await;
    greeting(&mut c).await.is_some()
}

fn count(edge: &Edge, result: &str) -> f64 {
    let text = scrape(edge.metrics.unwrap());
    metric(
        &text,
        &format!("edge_connections_total{{result=\"{result}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_client_over_its_concurrent_cap_is_closed_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&edge_args(
        &db,
        &[
            "--client-max-connections",
            "2",
            "--client-limit-exempt",
            "192.0.2.0/24",
        ],
    ));
    let greedy: IpAddr = "81.2.69.142".parse().unwrap();
    // The same /32 (the default prefix) and another port: the same client.
    let first = held(edge.addr, greedy).await;
    let _second = held(edge.addr, greedy).await;
    assert!(!served(edge.addr, greedy).await, "the third is refused");
    assert_eq!(count(&edge, "client_limit"), 1.0);
    // Others are served meanwhile, and an exempt network is never held.
    for other in [
        "81.2.69.143",
        "2001:db8::1",
        "192.0.2.9",
        "192.0.2.9",
        "192.0.2.9",
    ] {
        let _c = held(edge.addr, other.parse().unwrap()).await;
    }
    // The backend saw only the admitted ones: the refused was never dialed.
    assert_eq!(b.seen.accepted.load(std::sync::atomic::Ordering::SeqCst), 7);
    // A connection that ends frees its place (once the edge has seen the
    // close).
    drop(first);
    assert!(
        poll_until(|| served(edge.addr, greedy)).await,
        "served again once one of its connections closed"
    );
}

/// Tries `attempt` every 20 ms until it holds (20 s at most, a guard
/// against a hang); whether it ever did.
async fn poll_until<F: std::future::Future<Output = bool>>(mut attempt: impl FnMut() -> F) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if attempt().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_burst_past_the_rate_is_refused_and_admitted_again_after_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &["--client-rate", "3/2s"]));
    let burst: IpAddr = "81.2.69.142".parse().unwrap();
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert!(served(edge.addr, burst).await);
    }
    let refused_at = std::time::Instant::now();
    assert!(
        !served(edge.addr, burst).await,
        "the fourth within the period"
    );
    assert_eq!(count(&edge, "client_rate"), 1.0);
    // A /24 neighbour is another client (/32 by default).
    assert!(served(edge.addr, "81.2.69.1".parse().unwrap()).await);
    // Admitted again once the burst has left the sliding window.
    let mut admitted = None;
    while admitted.is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never admitted again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        if served(edge.addr, burst).await {
            admitted = Some(refused_at.elapsed());
        }
    }
    eprintln!("admitted again {:?} after the refusal", admitted.unwrap());
}

#[tokio::test]
async fn limits_edited_in_routing_db_apply_to_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &["--client-ipv4-prefix", "24"]));
    let client: IpAddr = "81.2.69.142".parse().unwrap();
    let neighbour: IpAddr = "81.2.69.7".parse().unwrap();
    // No limit at first.
    let _one = held(edge.addr, client).await;
    let _two = held(edge.addr, client).await;
    drop((_one, _two));
    // One connection per client (a /24 here) for the app. Connections
    // admitted before are not counted (nothing held them to a limit): once
    // the row applies, a client holding one is refused a second.
    sqlite3(
        &db,
        "INSERT INTO apps (app, client_max_connections) VALUES ('default', 1);",
    );
    assert!(
        poll_until(|| async {
            // Refused already (a connection of the last try still
            // counted), or refused a second one.
            let mut first = connect_as(edge.addr, client).await;
            greeting(&mut first).await.is_none() || !served(edge.addr, neighbour).await
        })
        .await,
        "the apps row applied"
    );
    assert!(count(&edge, "client_limit") >= 1.0);
    // Held by a connection of the /24, a second one is refused.
    let held_one = loop {
        let mut c = connect_as(edge.addr, client).await;
        if greeting(&mut c).await.is_some() {
            c.get_mut().write_all(b"hold\n").await.unwrap();
            break c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!served(edge.addr, neighbour).await);
    // Another /24 is another client.
    let _other = held(edge.addr, "81.2.70.1".parse().unwrap()).await;
    // The open ones stayed.
    drop(held_one);
    // The row's 0: no limit for the app, whatever the settings say.
    sqlite3(&db, "UPDATE apps SET client_max_connections = 0;");
    assert!(
        poll_until(|| async {
            served(edge.addr, neighbour).await && served(edge.addr, neighbour).await
        })
        .await,
        "the edit lifting the limit applied"
    );
}
