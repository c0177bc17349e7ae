//! Hard limits across edges by lease (`geoedge run --nats`): another POP's
//! backend takes clients from an edge only within the slots its owner
//! lent, so the fleet never holds more than its `hard_limit`; with the
//! owner gone, `--lease-fallback strict` sends no more clients there.

use tokio::io::AsyncWriteExt;

use super::load::{candidate, german, route_in_fleet, Fleet};
use super::*;

/// A German client `n` through `edge`, held open; the backend it got.
async fn hold(edge: &Edge, n: u8) -> (Option<String>, tokio::io::BufReader<tokio::net::TcpStream>) {
    let mut c = connect_as(edge.addr, german(n)).await;
    let got = greeting(&mut c).await;
    c.get_mut().write_all(b"hold\n").await.unwrap();
    (got, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_never_holds_more_than_its_hard_limit_across_the_fleet() {
    if skipped() {
        return;
    }
    let _heavy = HEAVY.lock().await;
    // x is in region eu, hard limit 3: the eu edge's; y is in us.
    let fleet = Fleet::start(&[("x", "eu", "DE", 3, 3), ("y", "us", "US", 100, 100)]).await;
    let (url, m) = (&fleet.url, &fleet.master);
    // The POPs are named apart from their regions: what makes x the
    // first edge's is its --region. (Both place Germans in eu.)
    let eu = fleet.edge("fra", &[]).await;
    let us = fleet
        .edge("iad", &["--region", "us", "--lease-fallback", "strict"])
        .await;

    // The owner's own two clients.
    let (a, _a) = hold(&eu, 10).await;
    let (b, _b) = hold(&eu, 11).await;
    assert_eq!((a.as_deref(), b.as_deref()), (Some("x"), Some("x")));
    // us has no lease yet: its first German client has it asked for at
    // once and waits for the answer; eu has one slot left, and the client
    // takes it.
    let (first, _f) = hold(&us, 20).await;
    assert_eq!(first.as_deref(), Some("x"), "{}", us.log().join("\n"));
    assert_eq!(
        metric_of(&us, "edge_fleet_lease_admissions_total{result=\"waiting\"}"),
        1.0
    );
    until(
        || format!("no lease: {}", scrape(us.metrics.unwrap())),
        Duration::from_secs(30),
        || metric_of(&us, "edge_fleet_lease_slots") == 1.0,
    )
    .await;
    assert_eq!(metric_of(&eu, "edge_fleet_lent_slots"), 1.0);
    let (second, _s) = hold(&us, 21).await;
    assert_eq!(second.as_deref(), Some("y"), "the lease is used up");
    // Nor does the owner go past the limit: 2 of its own and 1 lent.
    let (owners, _o) = hold(&eu, 12).await;
    assert_eq!(owners.as_deref(), Some("y"));
    let series = "edge_backend_connections_current{backend=\"x\",region=\"eu\"}";
    assert_eq!(metric_of(&eu, series) + metric_of(&us, series), 3.0);
    assert!(metric_of(&us, "edge_fleet_lease_requests_total{result=\"partial\"}") >= 1.0);
    // geoedge route shows each POP's side: us holds 1 of x by lease, eu
    // lent it, and both see 3 connections to x in the fleet.
    let at_us = route_in_fleet(url, "iad", m, 30);
    let x_at_us = candidate(&at_us, "x");
    assert_eq!(x_at_us["global"], 3, "{at_us:#}");
    assert_eq!(
        (x_at_us["own"].as_u64(), x_at_us["remote"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(x_at_us["lease"]["valid"], true, "{at_us:#}");
    assert_eq!(
        (
            x_at_us["lease"]["slots"].as_u64(),
            x_at_us["lease"]["used"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let at_eu = route_in_fleet(url, "fra", m, 31);
    let x_at_eu = candidate(&at_eu, "x");
    assert_eq!(
        (x_at_eu["own"].as_u64(), x_at_eu["lent"].as_u64()),
        (Some(2), Some(1)),
        "{at_eu:#}"
    );
    assert!(x_at_eu["lease"].is_null());

    // The owner goes: the lease runs out and, strict, us sends no one to x.
    drop(eu);
    until(
        || format!("lease still held: {}", scrape(us.metrics.unwrap())),
        Duration::from_secs(30),
        || metric_of(&us, "edge_fleet_lease_slots") == 0.0,
    )
    .await;
    drop(_f);
    let (after, _) = hold(&us, 23).await;
    assert_eq!(after.as_deref(), Some("y"));
    until(
        || "no unanswered request counted".into(),
        Duration::from_secs(30),
        || {
            metric_of(
                &us,
                "edge_fleet_lease_requests_total{result=\"unanswered\"}",
            ) >= 1.0
        },
    )
    .await;
}
