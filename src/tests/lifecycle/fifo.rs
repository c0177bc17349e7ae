//! A FIFO put where the config file or the private key file belongs, and a
//! SIGHUP that changes nothing: the SIGHUP re-read refuses the FIFO at once
//! (counted, logged) and SIGTERM still stops the process promptly; a FIFO
//! config or key at start fails the start at once with a clear error; a
//! reload that changed nothing logs nothing at info.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::support::*;
use super::{edge_cmd, one_backend, value};

/// A FIFO at `path`, mode 0600 (so that a key file check on its mode
/// passes and only its kind can refuse it).
fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo");
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_swapped_for_a_fifo_is_refused_on_sighup_and_sigterm_still_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _be) = one_backend(dir.path()).await;
    let config = dir.path().join("edge.toml");
    std::fs::write(&config, "max_connections = 5\n").unwrap();
    let cfg = config.to_str().unwrap();
    let args = edge_args(&db, &["--config", cfg, "--drain-timeout", "1s"]);
    let mut edge = Edge::spawn(edge_cmd(&args), "listening ");
    let metrics = edge.metrics.unwrap();
    let reloads = |result: &str| {
        value(
            metrics,
            &format!(r#"edge_config_reloads_total{{result="{result}"}}"#),
        )
    };

    // A SIGHUP with nothing changed: applied, and no info line for it.
    edge.signal("HUP");
    until(
        || "SIGHUP not applied".into(),
        Duration::from_secs(30),
        || reloads("applied") >= 1.0,
    )
    .await;
    let noisy: Vec<String> = edge
        .log()
        .into_iter()
        .filter(|l| l.contains("config reloaded"))
        .collect();
    assert!(
        noisy.is_empty(),
        "an unchanged reload logged at info: {noisy:#?}"
    );

    // The config replaced by a FIFO nobody writes to, then SIGHUP.
    let fifo = dir.path().join("edge.toml.fifo");
    mkfifo(&fifo);
    std::fs::rename(&fifo, &config).unwrap();
    let t = Instant::now();
    edge.signal("HUP");
    until(
        || format!("the FIFO reload was not counted: {:#?}", edge.log()),
        Duration::from_secs(30),
        || reloads("failed") >= 1.0,
    )
    .await;
    eprintln!("FIFO config: failure counted after {:?}", t.elapsed());
    assert!(
        edge.log()
            .iter()
            .any(|l| l.contains("config reload refused") && l.contains("not a regular file")),
        "{:#?}",
        edge.log()
    );
    assert_eq!(
        value(metrics, "edge_connections_limit"),
        5.0,
        "settings in force stay"
    );
    let (status, _) = http_get(metrics, "/readyz");
    assert_eq!(status, 200);

    // SIGTERM stops it (the drain timeout is 1 s; before, it waited on the
    // FIFO for as long as nobody wrote to it).
    let t = Instant::now();
    let status =
        tokio::task::block_in_place(|| edge.signal_and_wait("TERM", Duration::from_secs(20)));
    eprintln!("FIFO config: exited {:?} after SIGTERM", t.elapsed());
    assert!(status.success(), "{status}");
}

/// Runs `geoedge <args>`, which must exit with status 2 (a hang is given
/// up on after 30 s);
/// returns its stderr.
fn fails_at_once(args: &[&str]) -> String {
    let mut child = geoedge()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("{args:?}: exited after {:?}", start.elapsed());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    err
}

#[test]
fn a_fifo_key_or_config_fails_the_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wg.key");
    mkfifo(&key);
    let key = key.to_str().unwrap();
    let err = fails_at_once(&[
        "wg",
        "up",
        "--wg-interface",
        "gelf0",
        "--wg-address",
        "10.99.0.1/24",
        "--wg-private-key-file",
        key,
    ]);
    assert!(
        err.contains("private key file") && err.contains("not a regular file (a FIFO)"),
        "{err}"
    );

    let config = dir.path().join("edge.toml");
    mkfifo(&config);
    let db = routing_db(dir.path());
    let err = fails_at_once(&edge_args(&db, &["--config", config.to_str().unwrap()]));
    assert!(
        err.contains("reading config file") && err.contains("not a regular file (a FIFO)"),
        "{err}"
    );
}
