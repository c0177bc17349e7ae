//! `geoedge check-host` end to end: the real binary reading the real
//! `/proc/sys` and its own RLIMIT_NOFILE. Values are made to look low or
//! right without touching the host: per-namespace `net.*` keys are written
//! inside a fresh network namespace, global `fs.*` keys are covered by bind
//! mounts in a private mount namespace, and the open-file limit is set on
//! the child with `prlimit`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use support::{describe_output, geoedge};

use geoedge_testkit as support;

/// The shipped recommendations, as the binary has them.
const SYSCTL_CONF: &str = include_str!("../../sysctl/90-geoedge.conf");
const NOFILE_ROW: &str = "RLIMIT_NOFILE (soft)";

/// `key = value` lines of the shipped file.
fn shipped() -> Vec<(String, String)> {
    SYSCTL_CONF
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The soft nofile value of the shipped limits file.
fn shipped_nofile() -> u64 {
    include_str!("../../sysctl/90-geoedge-nofile.conf")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "soft", "nofile", n] => n.parse().ok(),
            _ => None,
        })
        .unwrap()
}

/// The report's rows: key → (live, status).
fn rows(stdout: &str) -> BTreeMap<String, (String, String)> {
    let mut lines = stdout.lines();
    assert!(lines.next().unwrap().starts_with("key "), "{stdout}");
    lines
        .take_while(|l| !l.contains(" short, "))
        .map(|l| {
            // The key may hold spaces (the nofile row); the columns are
            // separated by two or more.
            let cols: Vec<&str> = l
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(cols.len(), 4, "row {l:?}");
            (
                cols[0].to_string(),
                (cols[1].to_string(), cols[3].to_string()),
            )
        })
        .collect()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn lists_every_shipped_key_with_the_live_value() {
    let out = geoedge().arg("check-host").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let rows = rows(&stdout(&out));
    for (key, _) in shipped() {
        let (live, status) = &rows[&key];
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        match std::fs::read_to_string(&path) {
            Ok(v) => {
                let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
                assert_eq!(live, &v, "{key}");
                assert!(status == "ok" || status == "SHORT", "{key}: {status}");
            }
            Err(_) => assert_eq!((live.as_str(), status.as_str()), ("-", "unavailable")),
        }
    }
    assert!(rows.contains_key(NOFILE_ROW));
    // --strict fails exactly when some row is short.
    let any_short = rows.values().any(|(_, s)| s == "SHORT");
    let strict = geoedge().args(["check-host", "--strict"]).output().unwrap();
    assert_eq!(
        strict.status.code(),
        Some(if any_short { 1 } else { 0 }),
        "{}",
        describe_output(&strict)
    );
    assert_eq!(strict.stdout, out.stdout);
}

#[test]
fn a_low_open_file_limit_is_short() {
    if !support::tool_or_skip("prlimit") {
        return;
    }
    let out = Command::new("prlimit")
        .args(["--nofile=1024:1024", env!("CARGO_BIN_EXE_geoedge")])
        .args(["check-host", "--strict"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let rows = rows(&stdout(&out));
    assert_eq!(rows[NOFILE_ROW], ("1024".to_string(), "SHORT".to_string()));
}

/// A network namespace, deleted when dropped.
struct Netns(support::Netns);

impl Netns {
    fn new(tag: &str) -> Netns {
        Netns(support::Netns::new(format!(
            "gech{tag}{}",
            std::process::id()
        )))
    }

    /// Reads a sysctl as the namespace sees it; `None` when it has none.
    fn get(&self, key: &str) -> Option<String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let out = self.0.exec("cat").arg(&path).output().unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Writes a `net.*` sysctl inside the namespace; the kernel refuses
    /// (read-only there) the net.* keys that are not per namespace. Never
    /// for `fs.*` keys, which are global. Returns whether it was taken.
    fn try_set(&self, key: &str, value: &str) -> bool {
        assert!(key.starts_with("net."), "{key} is not per namespace");
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.0
            .exec("sh")
            .arg("-c")
            .arg(format!("echo '{value}' > {path}"))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

fn namespaces_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        support::skip("not root (network and mount namespaces)");
        return false;
    }
    ["ip", "unshare", "prlimit"]
        .iter()
        .all(|t| support::tool_or_skip(t))
}

#[test]
fn a_low_value_in_a_network_namespace_is_short_and_strict_fails() {
    if !namespaces_or_skip() {
        return;
    }
    let ns = Netns::new("low");
    assert!(ns.try_set("net.core.somaxconn", "128"));
    let check = |strict: bool| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns.0.name(), env!("CARGO_BIN_EXE_geoedge")])
            .arg("check-host");
        if strict {
            c.arg("--strict");
        }
        c.output().unwrap()
    };
    let out = check(false);
    assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    let rows = rows(&stdout(&out));
    assert_eq!(
        rows["net.core.somaxconn"],
        ("128".to_string(), "SHORT".to_string())
    );
    // Keys this namespace does not have (netdev_max_backlog lives only in
    // the host's) are unavailable, which is not a failure.
    for (key, _) in shipped() {
        if ns.get(&key).is_none() {
            assert_eq!(rows[&key], ("-".to_string(), "unavailable".to_string()));
        }
    }
    let strict = check(true);
    assert_eq!(
        strict.status.code(),
        Some(1),
        "{}",
        describe_output(&strict)
    );
    // The host's own value is untouched.
    let host = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap();
    assert_ne!(host.trim(), "128");
}

#[test]
fn strict_passes_when_every_value_meets_the_recommendation() {
    if !namespaces_or_skip() {
        return;
    }
    let ns = Netns::new("ok");
    let dir = tempfile::tempdir().unwrap();
    // net.* keys the namespace may write are its own: set them there (the
    // kernel makes the namespace's copy of a global net.* key read-only).
    // Every other key (fs.* are global: never written) is covered by a bind
    // mount inside a private mount namespace. Keys the namespace does not
    // have stay unavailable.
    let host_before = global_values();
    let mut mounts = String::new();
    for (key, value) in shipped() {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        if ns.get(&key).is_none() || (key.starts_with("net.") && ns.try_set(&key, &value)) {
            continue;
        }
        let file = dir.path().join(&key);
        std::fs::write(&file, format!("{value}\n")).unwrap();
        mounts.push_str(&format!("mount --bind '{}' {path} && ", file.display()));
    }
    // Raising the hard limit to the recommendation needs CAP_SYS_RESOURCE;
    // without it, the nofile row must be the only short one.
    let nofile = shipped_nofile();
    let can_raise = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("true")
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    let limit = if can_raise {
        format!("prlimit --nofile={nofile}:{nofile} ")
    } else {
        eprintln!("cannot raise RLIMIT_NOFILE to {nofile} here (no CAP_SYS_RESOURCE): expecting only that row short");
        String::new()
    };
    let script = format!(
        "{mounts}exec {limit}'{}' check-host --strict",
        env!("CARGO_BIN_EXE_geoedge")
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns.0.name()])
        .args(["unshare", "--mount", "--propagation", "private"])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    let rows = rows(&stdout(&out));
    let short: Vec<&str> = rows
        .iter()
        .filter(|(_, (_, s))| s == "SHORT")
        .map(|(k, _)| k.as_str())
        .collect();
    if can_raise {
        assert!(short.is_empty(), "{}", describe_output(&out));
        assert_eq!(out.status.code(), Some(0), "{}", describe_output(&out));
    } else {
        assert_eq!(short, [NOFILE_ROW], "{}", describe_output(&out));
        assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    }
    // Every key is either met or missing in this namespace, never short.
    for (key, _) in shipped() {
        let status = &rows[&key].1;
        assert!(status == "ok" || status == "unavailable", "{key}: {status}");
    }
    // The host's values are untouched: the writes went to the network
    // namespace, the bind mounts lived only in that mount namespace.
    assert_eq!(global_values(), host_before);
}

/// The host's values of every shipped key (this process is in the host's
/// namespaces).
fn global_values() -> Vec<String> {
    shipped()
        .iter()
        .map(|(k, _)| {
            std::fs::read_to_string(format!("/proc/sys/{}", k.replace('.', "/")))
                .unwrap_or_default()
        })
        .collect()
}
