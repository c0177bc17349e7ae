//! Load shared across edges (`geoedge run --nats`): a backend held by one
//! edge counts against its soft limit at the others, the spill is spread
//! over the next backends with room, and `geoedge route` shows where the
//! figures come from.

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

/// `geoedge route` for German client `n` as POP `pop` of the fleet on
/// `nats`, over the table `db`.
pub(super) fn route_in_fleet(nats: &str, pop: &str, db: &Path, n: u8) -> serde_json::Value {
    let out = geoedge()
        .args(["route", "--nats", nats, "--pop", pop, "--routing-db"])
        .arg(db)
        .arg(german(n).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The candidate `id` of a `geoedge route` answer.
pub(super) fn candidate<'a>(route: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    route["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {route:#}"))
}

/// A backend of a [`Fleet`]: id, region, country, soft and hard limits.
pub(super) type BackendSpec = (&'static str, &'static str, &'static str, u32, u32);

/// A fleet on one nats-server: its backends started and published as
/// revision 1 of the master table.
pub(super) struct Fleet {
    /// The NATS server's URL.
    pub url: String,
    /// The master routing.db.
    pub master: PathBuf,
    /// The backends, kept running.
    _backends: Vec<Backend>,
    /// The server.
    _nats: NatsServer,
    /// Everything on disk (removed last).
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub(super) async fn start(backends: &[BackendSpec]) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let nats = NatsServer::start(dir.path(), "");
        let url = nats.url();
        let master = master(dir.path(), "master", &[]);
        let mut running = Vec::new();
        for (id, region, country, soft, hard) in backends {
            let b = Backend::start(id).await;
            add_backend(&master, id, region, country, b.addr, *soft, *hard);
            running.push(b);
        }
        assert_eq!(publish(&url, None, &master, "the fleet's backends"), 1);
        Fleet {
            url,
            master,
            _backends: running,
            _nats: nats,
            dir,
        }
    }

    /// An edge of POP `pop` (with `extra` settings) that installed
    /// revision 1.
    pub(super) async fn edge(&self, pop: &str, extra: &[&str]) -> Edge {
        let (edge, _) = follower(self.dir.path(), pop, &self.url, &self.master, extra);
        installed(&edge, 1).await;
        edge
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
    // x is in Germany (soft limit 2), y and z elsewhere in the region.
    let fleet = Fleet::start(&[
        ("x", "eu", "DE", 2, 100),
        ("y", "eu", "FR", 100, 200),
        ("z", "eu", "GB", 100, 200),
    ])
    .await;
    let (url, m) = (&fleet.url, &fleet.master);
    let a = fleet.edge("a", &[]).await;
    let b = fleet.edge("b", &[]).await;
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
    // At b, x is at its soft limit by the fleet's count: the clients
    // spill, spread over y and z by their headroom.
    for n in 2..6 {
        let got = chosen(&b, n).await;
        assert!(matches!(got.as_deref(), Some("y" | "z")), "{got:?}");
    }
    assert_eq!(metric_of(&b, "edge_fleet_spills_spread_total"), 4.0);
    // geoedge route, as POP b, shows where x's figures come from.
    let route = route_in_fleet(url, "b", m, 6);
    let x = candidate(&route, "x");
    assert_eq!(
        (
            x["own"].as_u64(),
            x["remote"].as_u64(),
            x["global"].as_u64()
        ),
        (Some(0), Some(2), Some(2)),
        "{route:#}"
    );
    assert_eq!(x["active"], 2, "scored by the global count");
    let spread: Vec<&str> = route["spread"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(spread, ["y", "z"], "{route:#}");
    assert_eq!(route["fleet"]["reporting"], serde_json::json!(["a", "b"]));
    // The admin endpoint's live explain at b shows the same, from what b
    // holds in memory (no NATS round trip).
    let (status, body) = http_get(
        b.metrics.unwrap(),
        &format!("/explain?client={}", german(6)),
    );
    assert_eq!(status, 200, "{body}");
    let live: serde_json::Value = serde_json::from_str(&body).unwrap();
    let x = candidate(&live, "x");
    assert_eq!(
        (
            x["own"].as_u64(),
            x["remote"].as_u64(),
            x["global"].as_u64()
        ),
        (Some(0), Some(2), Some(2)),
        "{live:#}"
    );
    assert_eq!(x["health"], "up", "{live:#}");
    assert_eq!(live["fleet"]["pop"], "b", "{live:#}");

    // a's clients leave: b sends Germans to x again.
    drop(held);
    until(
        || "a's released load still counted at b".into(),
        Duration::from_secs(30),
        || metric_of(&b, "edge_backend_global_connections{backend=\"x\"}") == 0.0,
    )
    .await;
    assert_eq!(chosen(&b, 7).await.as_deref(), Some("x"));

    // a stops: its last report fades within a second or so.
    drop(a);
    until(
        || "a's reports still count".into(),
        Duration::from_secs(30),
        || metric_of(&b, "edge_fleet_load_reporters") == 0.0,
    )
    .await;
}

/// `n` German clients sent at once through `edge` (addresses from
/// `first`), held open; the backends they got.
async fn burst(
    edge: &Edge,
    first: u8,
    n: u8,
) -> (
    Vec<String>,
    Vec<tokio::io::BufReader<tokio::net::TcpStream>>,
) {
    let conns = futures_util::future::join_all((first..first + n).map(|i| async move {
        let mut c = connect_as(edge.addr, german(i)).await;
        let got = greeting(&mut c).await;
        c.get_mut().write_all(b"hold\n").await.unwrap();
        (got, c)
    }))
    .await;
    let got = conns
        .iter()
        .map(|(g, _)| g.clone().unwrap_or_else(|| "none".into()))
        .collect();
    (got, conns.into_iter().map(|(_, c)| c).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_edges_spilling_at_once_split_between_the_next_backends() {
    if skipped() {
        return;
    }
    let _heavy = HEAVY.lock().await;
    // For Germans: x in Germany, full (soft limit 0); then y in the
    // region (France), then z farther (in the US); each with room for 10
    // under its soft limit.
    let fleet = Fleet::start(&[
        ("x", "eu", "DE", 0, 100),
        ("y", "eu", "FR", 10, 100),
        ("z", "us", "US", 10, 100),
    ])
    .await;
    let a = fleet.edge("a", &[]).await;
    let b = fleet.edge("b", &[]).await;
    // z's owner, and a lease of z at a and b: a spilled client that
    // draws z asks for one (and meanwhile goes to y).
    let _us = fleet.edge("us", &["--region", "us"]).await;
    for (edge, from) in [(&a, 140u8), (&b, 190u8)] {
        let mut n = from;
        while metric_of(edge, "edge_fleet_lease_slots") < 1.0 {
            assert!(n < from + 50, "no lease of z: {}", edge.log().join("\n"));
            let got = chosen(edge, n).await;
            assert!(matches!(got.as_deref(), Some("y" | "z")), "{got:?}");
            n += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // Eight spilled clients at each edge at once. Alone, each edge would
    // send all of its eight to y (the nearer), 16 for a room of 10; spread
    // by headroom, y and z share them.
    let ((got_a, _held_a), (got_b, _held_b)) = tokio::join!(burst(&a, 100, 8), burst(&b, 120, 8));
    let all: Vec<&String> = got_a.iter().chain(&got_b).collect();
    let at = |id: &str| all.iter().filter(|g| g.as_str() == id).count();
    assert_eq!(at("y") + at("z"), 16, "{all:?}");
    assert!(at("y") >= 1 && at("z") >= 1, "not split: {all:?}");
    assert!(metric_of(&a, "edge_fleet_spills_spread_total") >= 8.0);
    assert!(metric_of(&b, "edge_fleet_spills_spread_total") >= 8.0);
}
