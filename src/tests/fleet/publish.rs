//! `geoedge db publish`, `db log`, `db status` and `db nats-user` against a
//! real nats-server: revisions with history, dry runs, rollback,
//! compare-and-swap, invalid tables, and credentials.

use std::process::Stdio;

use super::*;

fn sample_master(dir: &Path, name: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).unwrap();
    let path = sub.join("routing.db");
    let out = geoedge().args(["db", "init"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    path
}

#[test]
fn revisions_are_published_logged_compared_and_rolled_back() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path(), "");
    let url = nats.url();
    let m = sample_master(dir.path(), "master");

    // An invalid table publishes nothing and exits 1.
    let bad = sample_master(dir.path(), "bad");
    // sqlite3 refuses it; a tool that bypasses the triggers does not.
    assert!(sqlite3_refused(&bad, "UPDATE backends SET port = 0;").contains("backends.port"));
    drop_triggers(&bad);
    sqlite3(&bad, "UPDATE backends SET port = 0;");
    let out = db(&url, None, &["publish", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    assert!(stderr(&out).contains("port") && stderr(&out).contains("nothing published"));

    // Before the first publish: a dry run diffs against an empty table,
    // the log is empty, and neither makes the fleet's buckets.
    let dry = db(&url, None, &["publish", "--dry-run", m.to_str().unwrap()]);
    assert!(dry.status.success(), "{}", describe_output(&dry));
    let text = stdout(&dry);
    for want in [
        "nothing published yet; against an empty table",
        "+ eu-lhr-1",
        "it would be revision 1",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert!(log(&url).is_empty());
    let status = db(&url, None, &["status"]);
    assert!(status.status.success(), "{}", describe_output(&status));
    assert!(stderr(&status).contains("nothing published yet"));

    assert_eq!(publish(&url, None, &m, "first"), 1);
    // The same content again is no new revision.
    let again = db(&url, None, &["publish", m.to_str().unwrap()]);
    assert!(again.status.success());
    assert!(stdout(&again).contains("unchanged"), "{}", stdout(&again));
    assert_eq!(last_revision(&again), 1);

    // A dry run names the rows added, removed and changed, by table and id.
    sqlite3(
        &m,
        "UPDATE backends SET weight = 7 WHERE id = 'eu-lhr-1';
         DELETE FROM backends WHERE id = 'eu-fra-1';
         INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) VALUES ('eu-ams-1', 'eu', 'NL', '127.0.0.1', 9999, 10, 20);",
    );
    let dry = db(&url, None, &["publish", "--dry-run", m.to_str().unwrap()]);
    assert!(dry.status.success(), "{}", describe_output(&dry));
    let text = stdout(&dry);
    for want in [
        "against the current revision 1",
        "backends: 1 added, 1 removed, 1 changed",
        "+ eu-ams-1",
        "- eu-fra-1",
        "~ eu-lhr-1",
        "nothing published",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert_eq!(log(&url).len(), 1, "a dry run publishes nothing");

    assert_eq!(publish(&url, None, &m, "drain fra"), 2);
    let entries = log(&url);
    assert_eq!(entries.len(), 2);
    let (first, second) = (&entries[0], &entries[1]);
    assert_eq!(second["revision"], 2);
    assert_eq!(second["author"], "alice");
    assert_eq!(second["message"], "drain fra");
    assert_eq!(second["rows"]["backends"], first["rows"]["backends"]);
    assert_ne!(second["sha256"], first["sha256"]);
    assert!(second["time"].as_u64().unwrap() > 1_700_000_000);
    assert!(second["host"].as_str().is_some_and(|h| !h.is_empty()));

    // Rollback: a new revision with revision 1's file.
    let out = db(&url, None, &["publish", "--revision", "1"]);
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(last_revision(&out), 3);
    let entries = log(&url);
    assert_eq!(entries[2]["restores"], 1);
    assert_eq!(entries[2]["sha256"], entries[0]["sha256"]);
    let text = stdout(&db(&url, None, &["log"]));
    assert!(
        text.lines().next().unwrap().starts_with("*     3"),
        "{text}"
    );

    // Publishing from a base that moved is refused, naming who moved it.
    let out = db(
        &url,
        None,
        &["publish", "--expect-revision", "2", m.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", describe_output(&out));
    assert!(
        stderr(&out).contains("revision 3 (alice@"),
        "{}",
        stderr(&out)
    );
    assert_eq!(log(&url).len(), 3);

    // An invalid table after all that still changes nothing.
    let out = db(&url, None, &["publish", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(log(&url).len(), 3);

    // Without NATS settings the commands say what is missing.
    let out = geoedge().args(["db", "log"]).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--nats"), "{}", stderr(&out));
}

#[test]
fn racing_publishers_one_wins_the_other_is_told_who_and_nothing_is_lost() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path(), "");
    let url = nats.url();
    let base = sample_master(dir.path(), "base");
    assert_eq!(publish(&url, None, &base, "base"), 1);

    // Two operators, both having reviewed revision 1.
    let spawn = |name: &str, weight: u32, expect: Option<&str>| {
        let m = sample_master(dir.path(), name);
        sqlite3(&m, &format!("UPDATE backends SET weight = {weight};"));
        let mut c = geoedge();
        c.args(["db", "publish", m.to_str().unwrap(), "-m", name])
            .env("GEOEDGE_NATS", &url)
            .env("USER", name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(e) = expect {
            c.args(["--expect-revision", e]);
        }
        c.spawn().unwrap()
    };
    let a = spawn("ann", 3, Some("1"));
    let b = spawn("bob", 4, Some("1"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = [a.status.code(), b.status.code()];
    assert!(
        codes == [Some(0), Some(3)] || codes == [Some(3), Some(0)],
        "{}\n{}",
        describe_output(&a),
        describe_output(&b)
    );
    let (won, lost, winner) = if codes[0] == Some(0) {
        (&a, &b, "ann")
    } else {
        (&b, &a, "bob")
    };
    assert_eq!(last_revision(won), 2);
    assert!(
        stderr(lost).contains(&format!("revision 2 ({winner}@")),
        "{}",
        stderr(lost)
    );
    let entries = log(&url);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["author"], winner);

    // Four at once, each from whatever is current: every one either
    // publishes or is refused; what was published is all in the log, in
    // one line of revisions.
    let children: Vec<_> = [("c1", 11), ("c2", 12), ("c3", 13), ("c4", 14)]
        .iter()
        .map(|(n, w)| spawn(n, *w, None))
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut published = Vec::new();
    for o in &outs {
        match o.status.code() {
            Some(0) => published.push(last_revision(o)),
            Some(3) => assert!(stderr(o).contains("refused"), "{}", stderr(o)),
            _ => panic!("{}", describe_output(o)),
        }
    }
    assert!(!published.is_empty());
    published.sort_unstable();
    let entries = log(&url);
    let revisions: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(
        revisions,
        (1..=2 + published.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(
        published,
        (3..=2 + published.len() as u64).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pops_credentials_follow_and_report_but_cannot_publish() {
    if skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let user = |file: &str, pop: Option<&str>| {
        let path = dir.path().join(file);
        let mut c = geoedge();
        c.args(["db", "nats-user"]).arg(&path);
        if let Some(p) = pop {
            c.args(["--for-pop", p]);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", describe_output(&out));
        (path, stdout(&out))
    };
    let (publisher, p_entry) = user("publisher.nk", None);
    let (eu, eu_entry) = user("eu.nk", Some("eu"));
    let nats = NatsServer::start(dir.path(), &authorization(&[p_entry, eu_entry]));
    let url = nats.url();
    let m = sample_master(dir.path(), "master");

    // No credentials: refused.
    let out = db(&url, None, &["log"]);
    assert!(!out.status.success());
    assert_eq!(publish(&url, Some(&publisher), &m, "by the operator"), 1);

    // The POP's credentials publish nothing and move nothing.
    sqlite3(&m, "UPDATE backends SET weight = 9;");
    let out = db(&url, Some(&eu), &["publish", m.to_str().unwrap()]);
    assert!(!out.status.success() && out.status.code() != Some(3));
    assert!(
        stderr(&out).contains("Permissions Violation"),
        "{}",
        stderr(&out)
    );
    assert_eq!(publish(&url, Some(&publisher), &m, "weight 9"), 2);
    let out = db(&url, Some(&eu), &["publish", "--revision", "1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permissions Violation"),
        "{}",
        stderr(&out)
    );
    let out = db(&url, Some(&eu), &["log", "--json"]);
    assert!(
        out.status.success(),
        "a POP may read the log: {}",
        describe_output(&out)
    );
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entries.len(), 2);

    // The POP's user follows and writes its own status key, and no other
    // POP's.
    let eu_creds = eu.to_str().unwrap();
    let (edge, _) = follower(dir.path(), "eu", &url, &m, &["--nats-creds", eu_creds]);
    installed(&edge, 2).await;
    let (other, _) = follower(dir.path(), "us", &url, &m, &["--nats-creds", eu_creds]);
    installed(&other, 2).await;
    until(
        || "no status from POP eu".into(),
        Duration::from_secs(30),
        || {
            status(&url, Some(&publisher))
                .iter()
                .any(|r| r["pop"] == "eu")
        },
    )
    .await;
    until(
        || {
            format!(
                "status.us written with eu's user: {}",
                other.log().join("\n")
            )
        },
        Duration::from_secs(30),
        || metric_of(&other, "edge_fleet_follow_errors_total{reason=\"status\"}") >= 1.0,
    )
    .await;
    assert!(status(&url, Some(&publisher))
        .iter()
        .all(|r| r["pop"] != "us"));

    // A credentials file others can read is refused before anything else.
    let open = dir.path().join("open.nk");
    std::fs::copy(&eu, &open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = db(&url, Some(&open), &["status"]);
    assert!(stderr(&out).contains("group or others"), "{}", stderr(&out));
    let out = geoedge()
        .args([
            "run",
            "--routing-db",
            m.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "off", "--nats", &url, "--nats-creds"])
        .arg(&open)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("group or others"), "{}", stderr(&out));
}
