//! The files under `deploy/` and `sysctl/`: the systemd units pass
//! `systemd-analyze verify` (and an offline `security` exposure bound), say
//! what the binary and the other shipped files expect, and the example
//! settings and routing SQL work with the real binary.
//!
//! `systemd-analyze verify` checks that each command a unit runs exists and
//! is executable, and `/usr/bin/geoedge` exists only once the package is
//! installed; the units are verified as copies whose `/usr/bin/geoedge` is
//! the binary under test, every other line unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{describe_output, geoedge, skipped, sqlite3_out};

use geoedge_testkit as support;

const UNITS: &[&str] = &["geoedge.service", "geoedge-wg.service"];
const TMPFILES: &str = include_str!("../../deploy/tmpfiles/geoedge.conf");
const SYSUSERS: &str = include_str!("../../deploy/sysusers/geoedge.conf");
const LIMITS: &str = include_str!("../../sysctl/90-geoedge-nofile.conf");

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit_text(name: &str) -> String {
    std::fs::read_to_string(repo().join("deploy/systemd").join(name)).unwrap()
}

/// The values of `key=` lines in a unit (several lines add up).
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

fn one(unit: &str, key: &str) -> String {
    let v = values(unit, key);
    assert_eq!(v.len(), 1, "{key}: {v:?}");
    v[0].clone()
}

/// Copies of the units with the binary under test as `/usr/bin/geoedge`.
fn unit_copies(dir: &Path) -> Vec<PathBuf> {
    UNITS
        .iter()
        .map(|name| {
            let text = unit_text(name).replace("/usr/bin/geoedge", env!("CARGO_BIN_EXE_geoedge"));
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect()
}

/// `systemd-analyze verify` on unit files. It exits 0 on unknown keys and
/// bad values too, only printing them, so anything printed is a failure.
fn verify(paths: &[PathBuf]) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(paths)
        .output()
        .unwrap()
}

fn clean(out: &Output) -> bool {
    out.status.success() && out.stdout.is_empty() && out.stderr.is_empty()
}

/// Why `systemd-analyze verify` cannot run here, if it cannot: missing
/// (a failure under CI, whose `.ci/run` installs it), or unable to check
/// even a trivial unit.
fn verify_skip_reason(dir: &Path) -> Option<String> {
    if !support::tool_or_skip("systemd-analyze") {
        return Some("systemd-analyze is not installed".into());
    }
    let probe = dir.join("geoedge-probe.service");
    std::fs::write(&probe, "[Service]\nExecStart=/bin/true\n").unwrap();
    let out = verify(std::slice::from_ref(&probe));
    std::fs::remove_file(&probe).unwrap();
    (!clean(&out)).then(|| {
        format!(
            "systemd-analyze verify fails on a trivial unit here: {}",
            describe_output(&out)
        )
    })
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    if skipped(verify_skip_reason(dir.path())) {
        return;
    }
    let units = unit_copies(dir.path());
    let out = verify(&units);
    assert!(clean(&out), "{}", describe_output(&out));
    // The check is real: a misspelt key and a bad value are reported.
    let broken = dir.path().join("geoedge-broken.service");
    let text_ok = std::fs::read_to_string(&units[0]).unwrap();
    std::fs::write(
        &broken,
        text_ok
            .replace("WatchdogSec=", "WatchdogSecs=")
            .replace("ProtectSystem=strict", "ProtectSystem=stricter"),
    )
    .unwrap();
    let out = verify(&[broken]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WatchdogSecs") && err.contains("stricter"),
        "{}",
        describe_output(&out)
    );
    // The sandbox stays tight: overall exposure at most 2.0 of 10.
    for unit in &units {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
            .arg(unit)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            unit.display(),
            describe_output(&out)
        );
    }
}

#[test]
fn units_say_what_the_binary_and_the_shipped_files_expect() {
    let nofile = LIMITS
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["geoedge", "hard", "nofile", n] => Some(n.to_string()),
            _ => None,
        })
        .unwrap();
    assert!(SYSUSERS
        .lines()
        .any(|l| l.starts_with("u geoedge ") && l.ends_with(" /var/lib/geoedge")));
    // The configuration socket directory, as the unit names it (/var/run
    // is a link to /run).
    let uapi_dir = geoedge_wireguard::device::UAPI_DIR.replace("/var/run/", "/run/");
    for name in UNITS {
        let u = unit_text(name);
        assert_eq!(one(&u, "Type"), "notify", "{name}");
        assert_eq!(one(&u, "NotifyAccess"), "main", "{name}");
        assert!(!one(&u, "WatchdogSec").is_empty(), "{name}");
        assert_eq!(one(&u, "ExecReload"), "/bin/kill -HUP $MAINPID", "{name}");
        assert_eq!(one(&u, "User"), "geoedge", "{name}");
        assert_eq!(one(&u, "LimitNOFILE"), nofile, "{name}");
        assert_eq!(one(&u, "NoNewPrivileges"), "yes", "{name}");
        assert_eq!(one(&u, "ProtectSystem"), "strict", "{name}");
        // Writable: routing.db's directory and the socket directory, both
        // made (owned by the user) by the tmpfiles snippet.
        let rw = one(&u, "ReadWritePaths");
        let rw: Vec<&str> = rw.split_whitespace().collect();
        assert_eq!(rw, ["/var/lib/geoedge", uapi_dir.as_str()], "{name}");
        for dir in &rw {
            assert!(
                TMPFILES
                    .lines()
                    .any(|l| l.starts_with(&format!("d {dir} ")) && l.contains(" geoedge geoedge")),
                "{dir} not in the tmpfiles snippet"
            );
        }
        // The private key arrives as a credential, and the settings point
        // at it.
        assert_eq!(one(&u, "LoadCredential"), "wg.key:/etc/geoedge/wg.key");
        assert!(values(&u, "Environment").contains(&"GEOEDGE_WG_PRIVATE_KEY_FILE=%d/wg.key".into()));
        assert_eq!(one(&u, "DeviceAllow"), "/dev/net/tun rw", "{name}");
        // Capabilities: ambient and bounding sets agree.
        let caps = one(&u, "CapabilityBoundingSet");
        assert_eq!(one(&u, "AmbientCapabilities"), caps, "{name}");
        let want = if *name == "geoedge.service" {
            "CAP_NET_BIND_SERVICE CAP_NET_ADMIN"
        } else {
            "CAP_NET_ADMIN"
        };
        assert_eq!(caps, want, "{name}");
        let config = if *name == "geoedge.service" {
            "run --config /etc/geoedge/edge.toml"
        } else {
            "wg up --config /etc/geoedge/backend.toml"
        };
        assert_eq!(one(&u, "ExecStart"), format!("/usr/bin/geoedge {config}"));
        assert_eq!(one(&u, "ExecStartPre"), "/usr/bin/geoedge check-host");
    }
}

/// The embedded sample mmdb, as a file.
fn sample_mmdb(dir: &Path) -> PathBuf {
    let path = dir.join("sample.mmdb");
    std::fs::write(&path, geoedge_geoip::SAMPLE_MMDB).unwrap();
    path
}

fn route(config: &str, db: &Path, mmdb: &Path, country: &str) -> serde_json::Value {
    let ip = geoedge_geoip::sample_address(country).to_string();
    let config = repo().join("deploy/examples").join(config);
    let out = geoedge()
        .arg("--config")
        .arg(&config)
        .arg("--routing-db")
        .arg(db)
        .arg("--geoip")
        .arg(mmdb)
        .args(["route", &ip])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn example_settings_and_three_region_sql_work_together() {
    if !support::tool_or_skip("sqlite3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("routing.db");
    let out = geoedge()
        .args(["db", "init", "--empty"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    // As the file's own comment says: `sqlite3 routing.db < three-regions.sql`.
    let sql = std::fs::File::open(repo().join("deploy/examples/three-regions.sql")).unwrap();
    let out = Command::new("sqlite3")
        .arg(&db)
        .stdin(sql)
        .output()
        .unwrap();
    assert!(clean(&out), "{}", describe_output(&out));
    let out = geoedge().args(["db", "check"]).arg(&db).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("5 backends (5 live) in 1 apps, 3 regions,"),
        "{}",
        describe_output(&out)
    );
    let peers = sqlite3_out(&db, "SELECT count(*) FROM wg_peers;");
    assert_eq!(peers.trim(), "2");
    let mmdb = sample_mmdb(dir.path());
    for (country, region) in [("DE", "eu"), ("US", "us"), ("SG", "ap")] {
        let decision = route("edge.toml", &db, &mmdb, country);
        let chosen = decision["backend"].as_str().unwrap_or_default().to_string();
        assert!(
            chosen.starts_with(&format!("{region}-")),
            "{country}: {decision:#}"
        );
    }
    // The backend POP's settings resolve too (wg_* complete).
    let decision = route("backend.toml", &db, &mmdb, "US");
    assert!(decision["backend"].is_string(), "{decision:#}");
}

/// Where `nats-server` is on the PATH.
fn nats_server() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !path.is_empty()).then(|| path.into())
}

#[test]
fn nats_unit_and_example_settings_hold_together() {
    let unit = unit_text("geoedge-nats.service");
    // Its own user, made at each start; JetStream's files in its state
    // directory, which the example settings name; the settings file as a
    // credential; the usual sandbox.
    assert_eq!(one(&unit, "DynamicUser"), "yes");
    assert_eq!(one(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(one(&unit, "ProtectSystem"), "strict");
    assert_eq!(one(&unit, "CapabilityBoundingSet"), "");
    let state = one(&unit, "StateDirectory");
    assert_eq!(
        one(&unit, "LoadCredential"),
        "nats-server.conf:/etc/geoedge/nats-server.conf"
    );
    assert_eq!(
        one(&unit, "ExecStart"),
        "/usr/local/bin/nats-server --config ${CREDENTIALS_DIRECTORY}/nats-server.conf"
    );
    let example = std::fs::read_to_string(repo().join("deploy/examples/nats-server.conf")).unwrap();
    assert!(
        example.contains(&format!("store_dir: \"/var/lib/{state}\"")),
        "{example}"
    );
    // Clients, monitoring and routes listen on the overlay address only.
    for key in ["listen: ", "http: "] {
        let lines: Vec<&str> = example
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with(key))
            .collect();
        assert!(!lines.is_empty(), "{key}");
        for l in lines {
            assert!(l.contains("\"10.99.0.1:"), "{l}");
        }
    }

    let Some(nats) = nats_server() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run: nats-server is not installed"
        );
        support::skip("the rest: nats-server is not installed");
        return;
    };
    // The example settings are valid as shipped.
    let out = Command::new(&nats)
        .args(["-t", "-c"])
        .arg(repo().join("deploy/examples/nats-server.conf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
    // The unit passes `systemd-analyze verify` with nats-server where it
    // is here, and its exposure stays low.
    let dir = tempfile::tempdir().unwrap();
    if skipped(verify_skip_reason(dir.path())) {
        return;
    }
    let copy = dir.path().join("geoedge-nats.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/nats-server", &nats.display().to_string()),
    )
    .unwrap();
    let out = verify(std::slice::from_ref(&copy));
    assert!(clean(&out), "{}", describe_output(&out));
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20", "--no-pager"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe_output(&out));
}
