//! Load shared across edges (`geoedge run --nats`): a backend held by one
//! edge counts against its soft limit at the others.

use geoedge_geoip::sample::sample_address;
use tokio::io::AsyncWriteExt;

use super::*;

/// The `n`th address of the sample's German network (a /24): a new
/// client for each `n`, with no binding yet.
pub(super) fn german(n: u8) -> IpAddr {
    match sample_address("DE") {
        IpAddr::V4(a) => {
            let [o1, o2, o3, _] = a.octets();
            IpAddr::from([o1, o2, o3, n])
        }
        v6 => panic!("{v6}"),
    }
}

/// The backend a new German client (`n`) gets through `edge`.
async fn chosen(edge: &Edge, n: u8) -> Option<String> {
    let mut c = connect_as(edge.addr, german(n)).await;
    greeting(&mut c).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backend_full_by_the_fleets_count_spills_at_every_edge() {
    if skipped() {
        return;
    }
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path(), "");
    let url = nats.url();
    let (x, y) = (Backend::start("x").await, Backend::start("y").await);
    let m = master(dir.path(), "master", &[]);
    // x is in Germany (soft limit 2), y elsewhere in the region.
    add_backend(&m, "x", "eu", "DE", x.addr, 2, 100);
    add_backend(&m, "y", "eu", "FR", y.addr, 100, 200);
    assert_eq!(publish(&url, None, &m, "x and y"), 1);
    let (a, _) = follower(dir.path(), "a", &url, &m, &[]);
    let (b, _) = follower(dir.path(), "b", &url, &m, &[]);
    installed(&a, 1).await;
    installed(&b, 1).await;
    assert_eq!(chosen(&b, 1).await.as_deref(), Some("x"));

    // Two clients held on x through edge a.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect_as(a.addr, german(10 + held.len() as u8)).await;
        assert_eq!(greeting(&mut c).await.as_deref(), Some("x"));
        c.get_mut().write_all(b"hold\n").await.unwrap();
        held.push(c);
    }
    until(
        || format!("b does not see a's load: {}", scrape(b.metrics.unwrap())),
        Duration::from_secs(30),
        || metric_of(&b, "edge_backend_global_connections{backend=\"x\"}") == 2.0,
    )
    .await;
    assert_eq!(
        metric_of(
            &b,
            "edge_backend_connections_current{backend=\"x\",region=\"eu\"}"
        ),
        0.0
    );
    assert_eq!(metric_of(&b, "edge_fleet_load_reporters"), 1.0);
    assert!(metric_of(&b, "edge_fleet_load_report_age_seconds") < 1.5);
    // At b, x is at its soft limit by the fleet's count: the client spills.
    assert_eq!(chosen(&b, 2).await.as_deref(), Some("y"));

    // a's clients leave: b sends Germans to x again.
    drop(held);
    until(
        || "a's released load still counted at b".into(),
        Duration::from_secs(30),
        || metric_of(&b, "edge_backend_global_connections{backend=\"x\"}") == 0.0,
    )
    .await;
    assert_eq!(chosen(&b, 3).await.as_deref(), Some("x"));

    // a stops: its last report fades within a second or so.
    drop(a);
    until(
        || "a's reports still count".into(),
        Duration::from_secs(30),
        || metric_of(&b, "edge_fleet_load_reporters") == 0.0,
    )
    .await;
}
