//! Commands the tests drive as an operator would: any program through
//! [`run`] (its failure is the test's), and SQL through the real `sqlite3`
//! shell ([`sqlite3`], [`sqlite3_out`]; [`sqlite3_refused`] for an edit
//! the schema's triggers refuse, [`drop_triggers`] to write a file as a
//! tool that bypasses them would).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(args: &[&str]) -> String {
    run_with_input(args, None)
}

/// [`run`] with `input` written to the command's stdin (or stdin closed).
pub fn run_with_input(args: &[&str], input: Option<&str>) -> String {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL through the `sqlite3` shell, as an operator would: stops at the
/// first error (`-bail`), waits up to 5 s for a lock, and panics with
/// sqlite3's stderr when it fails.
pub fn sqlite3(db: &Path, sql: &str) {
    sqlite3_out(db, sql);
}

/// [`sqlite3`], returning what it printed.
pub fn sqlite3_out(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI is installed (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs SQL as [`sqlite3`] does and asserts that `sqlite3` fails it (a
/// trigger of the schema, or a constraint, refuses it); returns what it
/// printed on stderr.
pub fn sqlite3_refused(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI is installed (apt-get install sqlite3)");
    assert!(
        !out.status.success(),
        "sqlite3 {sql:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Drops the schema's `geoedge_*` triggers from `db`, so that the edits
/// after it are written as a tool that bypasses them (or a file of schema
/// version 2) would write them: geoedge's own validation is then all that
/// refuses a bad row.
pub fn drop_triggers(db: &Path) {
    let names = sqlite3_out(
        db,
        r"SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'geoedge\_%' ESCAPE '\';",
    );
    let drops: String = names
        .lines()
        .filter(|n| !n.is_empty())
        .map(|n| format!("DROP TRIGGER \"{n}\";"))
        .collect();
    if !drops.is_empty() {
        sqlite3(db, &format!("BEGIN; {drops} COMMIT;"));
    }
}

/// A finished command's exit status and output, for assertion messages.
pub fn describe_output(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
