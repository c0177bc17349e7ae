//! Edges following the fleet's routing table (`geoedge run --nats`)
//! against real nats-servers: installs, a corrupt or invalid revision
//! refused, NATS outages and restarts, a node of three lost, a hand edit.

use geoedge::control::config::FleetSettings;
use geoedge::control::fleet::revision::{
    object_name, Revision, RevisionInfo, RowCounts, Sha256Digest,
};
use geoedge::control::fleet::store::{self, Published, Store};

use super::*;

/// Puts `bytes` in the object store under the name of `claimed` and moves
/// `current` to a record saying revision `n` is that file: what a broken
/// or hostile publisher could leave behind.
async fn force_current(url: &str, n: u64, claimed: &Sha256Digest, bytes: &[u8]) {
    let fleet = FleetSettings {
        servers: vec![url.to_owned()],
        creds: None,
        pop: "test".into(),
        lease_fallback: Default::default(),
    };
    let (client, errors) = store::connect(&fleet, "test", None).await.unwrap();
    let store = Store::open(&client, errors, false).await.unwrap();
    let (_, seq) = store.current().await.unwrap().unwrap();
    let info = RevisionInfo {
        revision: Revision(n),
        sha256: claimed.clone(),
        size: bytes.len() as u64,
        object: object_name(claimed),
        author: "mallory".into(),
        host: "nowhere".into(),
        time: 1_800_000_000,
        message: String::new(),
        rows: RowCounts::default(),
        restores: None,
    };
    store.put_file(&info.object, bytes).await.unwrap();
    assert!(matches!(
        store.make_current(&info, Some(seq)).await.unwrap(),
        Published::Current
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_invalid_revision_is_never_installed() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path(), "");
    let url = nats.url();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let m = master(dir.path(), "master", &[("a", a.addr)]);
    assert_eq!(publish(&url, None, &m, "a"), 1);
    let (edge, pop_db) = follower(dir.path(), "eu", &url, &m, &[]);
    installed(&edge, 1).await;
    assert_eq!(served_by(&edge, 1).await.as_deref(), Some("a"));
    let good = std::fs::read(&pop_db).unwrap();

    // Revision 2 claims the digest of a valid file but its object holds
    // other bytes.
    let other = master(dir.path(), "other", &[("b", b.addr)]);
    let other_bytes = std::fs::read(&other).unwrap();
    let mut corrupt = other_bytes.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    force_current(&url, 2, &Sha256Digest::of(&other_bytes), &corrupt).await;
    until(
        || format!("no digest error: {}", edge.log().join("\n")),
        Duration::from_secs(60),
        || metric_of(&edge, "edge_fleet_follow_errors_total{reason=\"digest\"}") >= 1.0,
    )
    .await;
    // Revision 3 is bytes whose digest is right but that are no routing.db.
    let garbage = b"not a routing table".repeat(64);
    force_current(&url, 3, &Sha256Digest::of(&garbage), &garbage).await;
    until(
        || format!("no invalid error: {}", edge.log().join("\n")),
        Duration::from_secs(60),
        || metric_of(&edge, "edge_fleet_follow_errors_total{reason=\"invalid\"}") >= 1.0,
    )
    .await;
    assert_eq!(metric_of(&edge, "edge_fleet_revision"), 1.0);
    assert_eq!(metric_of(&edge, "edge_fleet_current_revision"), 3.0);
    assert_eq!(std::fs::read(&pop_db).unwrap(), good);
    assert_eq!(served_by(&edge, 2).await.as_deref(), Some("a"));

    // The next real publish is installed.
    sqlite3(&m, "DELETE FROM backends;");
    add_backend(&m, "b", "eu", "DE", b.addr, 100, 200);
    assert_eq!(publish(&url, None, &m, "b"), 4);
    installed(&edge, 4).await;
    until(
        || "b not serving".into(),
        Duration::from_secs(30),
        || std::fs::read(&pop_db).unwrap() != good,
    )
    .await;
    // The reload follows the install: new clients go to b.
    let mut to_b = false;
    for n in 10..250 {
        if served_by(&edge, n).await.as_deref() == Some("b") {
            to_b = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(to_b, "clients not sent to b: {}", edge.log().join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn edges_serve_through_nats_outages_and_restarts_and_catch_up() {
    if skipped() {
        return;
    }
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(dir.path(), "");
    let url = nats.url();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let m = master(dir.path(), "master", &[("a", a.addr)]);
    assert_eq!(publish(&url, None, &m, "a"), 1);
    let (stays, _) = follower(dir.path(), "stays", &url, &m, &[]);
    let (mut restarts, restarts_db) = follower(dir.path(), "restarts", &url, &m, &[]);
    installed(&stays, 1).await;
    installed(&restarts, 1).await;

    // Every NATS server down: publishing fails clearly, the edges serve.
    nats.kill();
    sqlite3(&m, "DELETE FROM backends;");
    add_backend(&m, "b", "eu", "DE", b.addr, 100, 200);
    let out = db(&url, None, &["publish", m.to_str().unwrap()]);
    assert!(!out.status.success() && out.status.code() != Some(3));
    assert!(
        stderr(&out).contains("connecting to NATS"),
        "{}",
        stderr(&out)
    );
    assert_eq!(served_by(&stays, 1).await.as_deref(), Some("a"));

    // An edge restarted while NATS is down serves its last installed
    // table.
    assert!(restarts
        .signal_and_wait("TERM", Duration::from_secs(30))
        .success());
    drop(restarts);
    restarts = start_follower(&restarts_db, "restarts", &url, &[]);
    assert_eq!(served_by(&restarts, 2).await.as_deref(), Some("a"));
    until(
        || "no connect error counted".into(),
        Duration::from_secs(30),
        || {
            metric_of(
                &restarts,
                "edge_fleet_follow_errors_total{reason=\"connect\"}",
            ) >= 1.0
        },
    )
    .await;
    assert_eq!(
        metric_of(&restarts, "edge_fleet_revision"),
        1.0,
        "its record survived the restart"
    );

    // NATS back: the next publish reaches both (one reconnected by its
    // client, one connecting for the first time).
    nats.resume();
    assert_eq!(publish(&url, None, &m, "b"), 2);
    installed(&stays, 2).await;
    installed(&restarts, 2).await;
    until(
        || format!("status: {:?}", status(&url, None)),
        Duration::from_secs(30),
        || {
            let rows = status(&url, None);
            rows.len() == 2
                && rows
                    .iter()
                    .all(|r| r["revision"] == 2 && r["state"] == "current")
                && rows.iter().all(|r| r["age_seconds"].as_u64().is_some())
        },
    )
    .await;
    let out = db(&url, None, &["status"]);
    let text = stdout(&out);
    assert!(
        text.lines()
            .any(|l| l.starts_with("restarts") && l.split_whitespace().nth(1) == Some("2")),
        "{text}"
    );
}

/// Publishes `master` again and again until a publish succeeds (a
/// cluster electing leaders refuses them for a while); its revision.
async fn publish_until_it_succeeds(urls: &str, master: &Path, message: &str) -> u64 {
    let mut published = None;
    until(
        || format!("no publish of {message:?} went through"),
        Duration::from_secs(90),
        || {
            let out = db(
                urls,
                None,
                &["publish", master.to_str().unwrap(), "-m", message],
            );
            if out.status.success() {
                published = Some(last_revision(&out));
            }
            published.is_some()
        },
    )
    .await;
    published.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_node_of_three_down_publish_and_follow_still_work() {
    if skipped() {
        return;
    }
    let _heavy = HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(dir.path(), 3, "");
    let urls = cluster.urls();
    let m = master(
        dir.path(),
        "master",
        &[("x", "127.0.0.1:9".parse().unwrap())],
    );
    // A cluster just formed may still time out the first JetStream
    // requests (the bucket's streams are placed and elect their leaders
    // after the meta leader /healthz waits for): publish until it is
    // taken, as an operator would.
    assert_eq!(publish_until_it_succeeds(&urls, &m, "one").await, 1);
    let (edge, _) = follower(dir.path(), "eu", &urls, &m, &[]);
    installed(&edge, 1).await;
    // The first server of the edge's list goes. If it led the streams,
    // a publish fails until the other two elect a leader (seconds): the
    // operator publishes again.
    cluster.nodes[0].kill();
    sqlite3(&m, "UPDATE backends SET weight = 5;");
    assert_eq!(publish_until_it_succeeds(&urls, &m, "two").await, 2);
    installed(&edge, 2).await;
    cluster.nodes[1].kill();
    // Two of three down: no quorum, publishing fails, the edge serves on.
    sqlite3(&m, "UPDATE backends SET weight = 6;");
    let out = db(&urls, None, &["publish", m.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", describe_output(&out));
    assert_eq!(metric_of(&edge, "edge_fleet_revision"), 2.0);
    cluster.nodes[0].resume();
    cluster.nodes[1].resume();
    let published = publish_until_it_succeeds(&urls, &m, "three").await;
    installed(&edge, published).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hand_edit_is_reported_diverged_until_the_next_publish_replaces_it() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path(), "");
    let url = nats.url();
    let a = Backend::start("a").await;
    let m = master(dir.path(), "master", &[("a", a.addr)]);
    assert_eq!(publish(&url, None, &m, "a"), 1);
    let (edge, pop_db) = follower(dir.path(), "eu", &url, &m, &[]);
    installed(&edge, 1).await;
    // An emergency drain on this POP only.
    sqlite3(&pop_db, "UPDATE backends SET weight = 0 WHERE id = 'a';");
    until(
        || format!("not diverged: {}", edge.log().join("\n")),
        Duration::from_secs(40),
        || metric_of(&edge, "edge_fleet_diverged") == 1.0,
    )
    .await;
    until(
        || "status does not say diverged".into(),
        Duration::from_secs(30),
        || {
            status(&url, None)
                .iter()
                .any(|r| r["pop"] == "eu" && r["state"] == "diverged")
        },
    )
    .await;
    assert!(edge
        .log()
        .iter()
        .any(|l| l.contains("differs from the installed revision")));
    // Not replaced by the periodic check: kept until a publish.
    assert_eq!(
        sqlite3_out(&pop_db, "SELECT weight FROM backends WHERE id = 'a';").trim(),
        "0"
    );
    sqlite3(&m, "UPDATE backends SET soft_limit = 50;");
    assert_eq!(publish(&url, None, &m, "next"), 2);
    installed(&edge, 2).await;
    assert_eq!(metric_of(&edge, "edge_fleet_diverged"), 0.0);
    assert_ne!(
        sqlite3_out(&pop_db, "SELECT weight FROM backends WHERE id = 'a';").trim(),
        "0"
    );
}
