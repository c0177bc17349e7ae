//! Sticky bindings across a plain restart (`systemctl restart`: the old
//! process stops, then the new one starts). A `geoedge run` that stops
//! writes its binding table beside routing.db, in `ROUTING_DB.bindings`
//! (the handover's format, [`crate::control::handover`]); the next start
//! reads it back before it binds its listeners, adding to each binding
//! the time the file lay there (a binding idle past the TTL by then is
//! dropped, as is one whose backend the table no longer has), and removes
//! it. A start that takes over from a running geoedge takes that one's
//! bindings instead, and leaves a file alone.
//!
//! The file is written to a temporary name and renamed, so a crash while
//! writing leaves the previous file or none. A file that cannot be read
//! or written costs the bindings only: it is logged, never fatal.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use geoedge_routing::Router;

use crate::control::handover::{self, Received, HANDOVER_TIMEOUT, VERSION_LINE};

/// Where a stopping edge leaves its bindings: `ROUTING_DB.bindings`.
pub fn path_for(routing_db: &Path) -> PathBuf {
    let mut name = routing_db.file_name().unwrap_or_default().to_os_string();
    name.push(".bindings");
    routing_db.with_file_name(name)
}

/// Writes `router`'s bindings to `path` (through a temporary file renamed
/// over it); how many.
pub fn save(router: &Router, path: &Path) -> std::io::Result<usize> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let file = std::fs::File::create(&tmp)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    writeln!(out, "{VERSION_LINE}")?;
    let mut count = 0;
    for chunk in router.bindings().export(Instant::now()) {
        for b in &chunk {
            if let Some(l) = handover::line(b) {
                out.write_all(l.as_bytes())?;
                count += 1;
            }
        }
    }
    writeln!(out, "end\t{count}")?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(count)
}

/// Imports the bindings a previous run left at `path`, if any, and removes
/// the file; `None` when there is none.
pub fn restore(router: &Router, path: &Path) -> anyhow::Result<Option<Received>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let age = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or(Duration::ZERO);
    let got = handover::import_aged(
        &file,
        router,
        Instant::now() + HANDOVER_TIMEOUT,
        age,
        |_| Ok(()),
    );
    // Read once: a later start must not bring back bindings made stale
    // by the run in between.
    let _ = std::fs::remove_file(path);
    got.map(Some)
}

/// Saves at a stop, logged.
pub fn save_logged(router: &Router, path: &Path) {
    match save(router, path) {
        Ok(n) => tracing::info!(
            bindings = n,
            path = %path.display(),
            "sticky bindings saved for the next start"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "saving the sticky bindings for the next start: {e}; it starts without them"
        ),
    }
}

/// Restores at a start, logged.
pub fn restore_logged(router: &Router, path: &Path) {
    match restore(router, path) {
        Ok(None) => {}
        Ok(Some(got)) => tracing::info!(
            imported = got.imported,
            read = got.read,
            unknown_backend = got.unknown_backend,
            complete = got.complete,
            path = %path.display(),
            "sticky bindings of the previous run restored"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            "restoring the previous run's sticky bindings: {e:#}; starting without them"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geoedge_routing::raw::{BackendRow, RawTable};
    use geoedge_routing::{AppId, BackendId, RegionId, RoutingTable};
    use std::net::IpAddr;
    use std::sync::Arc;

    fn router() -> Router {
        let raw = RawTable {
            schema_version: 1,
            backends: vec![
                BackendRow::new("a", "eu", "10.0.0.1", 80, 10, 20),
                BackendRow::new("b", "eu", "10.0.0.2", 80, 10, 20),
            ],
            ..Default::default()
        };
        let table = RoutingTable::from_raw(&raw, 0).expect("a valid table");
        Router::new(Arc::new(table), RegionId::new("eu"), Default::default())
    }

    #[test]
    fn bindings_saved_at_a_stop_come_back_at_the_next_start_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("routing.db"));
        assert_eq!(path, dir.path().join("routing.db.bindings"));
        let old = router();
        let app = AppId::default_app();
        let now = Instant::now();
        let clients: Vec<IpAddr> = (1..=50u8).map(|i| IpAddr::from([81, 2, 69, i])).collect();
        for ip in &clients {
            let key = old.bindings().key(&app, *ip);
            old.bindings().bind(key, BackendId::new("b"), now);
        }
        assert_eq!(save(&old, &path).unwrap(), 50);
        let new = router();
        let got = restore(&new, &path).unwrap().unwrap();
        assert_eq!((got.read, got.imported, got.complete), (50, 50, true));
        for ip in &clients {
            assert_eq!(
                new.bindings()
                    .peek(&app, *ip, Instant::now())
                    .map(|b| b.backend.as_str().to_owned()),
                Some("b".to_owned())
            );
        }
        // Read once.
        assert!(!path.exists());
        assert!(restore(&router(), &path).unwrap().is_none());
    }

    #[test]
    fn a_file_older_than_the_ttl_brings_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("routing.db"));
        let old = router();
        let app = AppId::default_app();
        let key = old.bindings().key(&app, IpAddr::from([81, 2, 69, 1]));
        old.bindings()
            .bind(key, BackendId::new("a"), Instant::now());
        save(&old, &path).unwrap();
        let ttl = old.bindings().config().ttl;
        let long_ago = SystemTime::now() - ttl - Duration::from_secs(1);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        let got = restore(&router(), &path).unwrap().unwrap();
        assert_eq!((got.read, got.imported), (1, 0));
    }
}
