//! routing.db files for the fleet: the consistent copy of the master that
//! is published, its validation (the same as `geoedge db check`), the
//! install of a fetched revision beside routing.db by rename, and the
//! record of which revision is installed (`routing.db.installed`, JSON).
//! Blocking file IO: the follow task calls these on the blocking pool.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use geoedge_routing::raw::RawTable;
use geoedge_routing::{loader, snapshot};
use rusqlite::{Connection, OpenFlags};

use super::follower::Installed;
use super::revision::{RowCounts, Sha256Digest};

/// Why a file is not a routing.db that may be published or installed. Each
/// message holds its cause's text, so the cause is not also its `source()`.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be read, copied or written.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        error: std::io::Error,
    },
    /// SQLite could not copy or check it.
    #[error("{what}: {error}")]
    Sqlite {
        /// What was being done.
        what: String,
        /// The error.
        error: rusqlite::Error,
    },
    /// `PRAGMA integrity_check` found damage.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// It could not be loaded as a routing.db.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// It loaded, but rows are invalid (every error listed).
    #[error("invalid routing table: {} errors:\n  {}", .0.len(), .0.join("\n  "))]
    Invalid(Vec<String>),
    /// Its sha256 is not the one its revision names.
    #[error("sha256 mismatch: expected {expected}, got {got}")]
    Digest {
        /// The revision's.
        expected: Sha256Digest,
        /// The file's.
        got: Sha256Digest,
    },
}

impl FileError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> FileError {
        let what = what.into();
        move |error| FileError::Io { what, error }
    }

    fn sqlite(what: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> FileError {
        let what = what.into();
        move |error| FileError::Sqlite { what, error }
    }

    /// A short reason, for metrics labels and status keys.
    pub fn reason(&self) -> &'static str {
        match self {
            FileError::Io { .. } | FileError::Sqlite { .. } => "install",
            FileError::Integrity(_) | FileError::Load(_) | FileError::Invalid(_) => "invalid",
            FileError::Digest { .. } => "digest",
        }
    }
}

/// A routing.db ready to publish: the bytes of a consistent copy, checked.
#[derive(Debug)]
pub struct Prepared {
    /// The file.
    pub bytes: Vec<u8>,
    /// Its sha256.
    pub sha256: Sha256Digest,
    /// Its rows.
    pub rows: RowCounts,
    /// The rows as loaded (for a dry run's comparison).
    pub raw: RawTable,
}

/// A consistent copy of `master` (as sqlite3's `.backup` makes, whatever
/// is writing to it: `VACUUM INTO` reads one transaction), in rollback
/// journal mode so that the one file is the whole table, checked with
/// `PRAGMA integrity_check` and validated.
pub fn prepare(master: &Path) -> Result<Prepared, FileError> {
    let scratch = tempfile::tempdir().map_err(FileError::io("creating a scratch directory"))?;
    let copy = scratch.path().join("routing.db");
    {
        let conn = Connection::open_with_flags(
            master,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(FileError::sqlite(format!("opening {}", master.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(FileError::sqlite("setting the busy timeout"))?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .map_err(FileError::sqlite(format!("copying {}", master.display())))?;
    }
    {
        let conn = Connection::open(&copy).map_err(FileError::sqlite("opening the copy"))?;
        let _: String = conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
            .map_err(FileError::sqlite("setting the copy's journal mode"))?;
    }
    let raw = check(&copy)?;
    let bytes = std::fs::read(&copy).map_err(FileError::io("reading the copy"))?;
    Ok(Prepared {
        sha256: Sha256Digest::of(&bytes),
        rows: RowCounts::of(&raw),
        raw,
        bytes,
    })
}

/// `PRAGMA integrity_check`, then the load and the full validation of
/// `geoedge db check`.
pub fn check(path: &Path) -> Result<RawTable, FileError> {
    {
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(FileError::sqlite(format!("opening {}", path.display())))?;
        let verdict: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(|e| FileError::Integrity(e.to_string()))?;
        if verdict != "ok" {
            return Err(FileError::Integrity(verdict));
        }
    }
    let raw = loader::load(path)?;
    snapshot::build(&raw, |_| Default::default()).map_err(|invalid| {
        FileError::Invalid(invalid.errors.iter().map(ToString::to_string).collect())
    })?;
    Ok(raw)
}

/// The rows of a file held in memory (a fetched revision), checked as
/// [`check`] does.
pub fn check_bytes(bytes: &[u8]) -> Result<RawTable, FileError> {
    let scratch = tempfile::tempdir().map_err(FileError::io("creating a scratch directory"))?;
    let path = scratch.path().join("routing.db");
    std::fs::write(&path, bytes).map_err(FileError::io("writing a scratch copy"))?;
    check(&path)
}

/// The sha256 of the file at `path`; `None` when there is none.
pub fn digest_of(path: &Path) -> Result<Option<Sha256Digest>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(Sha256Digest::of(&bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::io(format!("reading {}", path.display()))(e)),
    }
}

/// Installs `bytes` as `routing_db`: refused unless their sha256 is
/// `expected` and they pass [`check`]; written to a temporary file in the
/// same directory, synced, renamed over routing.db, and the directory
/// synced. The running edge's watcher applies it like any edit; a crash
/// at any point leaves either the old file or the new one.
pub fn install(routing_db: &Path, bytes: &[u8], expected: &Sha256Digest) -> Result<(), FileError> {
    let got = Sha256Digest::of(bytes);
    if &got != expected {
        return Err(FileError::Digest {
            expected: expected.clone(),
            got,
        });
    }
    replace(routing_db, ".routing.db.fleet.", bytes, check)
}

/// Where the installed revision is recorded: `routing.db.installed`.
pub fn record_path(routing_db: &Path) -> PathBuf {
    let mut name = routing_db
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "routing.db".into());
    name.push(".installed");
    routing_db.with_file_name(name)
}

/// The installed revision recorded beside `routing_db`; `None` when there
/// is no record or it cannot be read (then the next revision seen is
/// installed, or adopted when the file already is it).
pub fn read_installed(routing_db: &Path) -> Option<Installed> {
    let path = record_path(routing_db);
    let text = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&text) {
        Ok(i) => Some(i),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable record of the installed revision: {e}");
            None
        }
    }
}

/// Records the installed revision beside `routing_db` (written whole and
/// renamed into place).
pub fn write_installed(routing_db: &Path, installed: &Installed) -> Result<(), FileError> {
    let json = serde_json::to_vec_pretty(installed).unwrap_or_default();
    replace(
        &record_path(routing_db),
        ".routing.db.installed.",
        &json,
        |_| Ok(()),
    )
}

/// Replaces `target` with `bytes`: written to a temporary file (`prefix`)
/// in the same directory, synced, passed to `accept`, renamed over
/// `target`, and the directory synced. A crash leaves the old file or the
/// new one, never a part.
fn replace<T>(
    target: &Path,
    prefix: &str,
    bytes: &[u8],
    accept: impl FnOnce(&Path) -> Result<T, FileError>,
) -> Result<(), FileError> {
    let dir = parent(target);
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .tempfile_in(&dir)
        .map_err(FileError::io(format!(
            "creating a file in {}",
            dir.display()
        )))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(FileError::io(format!("writing {}", target.display())))?;
    accept(tmp.path())?;
    tmp.persist(target)
        .map_err(|e| FileError::io(format!("renaming over {}", target.display()))(e.error))?;
    sync_dir(&dir)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    OpenOptions::new()
        .read(true)
        .open(dir)
        .and_then(|d: File| d.sync_all())
        .map_err(FileError::io(format!("syncing {}", dir.display())))
}

#[cfg(test)]
mod tests;
