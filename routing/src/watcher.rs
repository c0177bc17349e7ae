//! The reloader: follows a routing.db on disk and swaps each valid committed
//! change into a [`RoutingTable`], within a second of the commit.
//!
//! Runs on its own thread (SQLite is never read on an async worker). It wakes
//! on `notify` events for the database, its `-wal` and `-journal` (the parent
//! directory is watched, so a file replaced by rename is seen), and at least
//! every `poll` interval. A change is confirmed before any read: the file's
//! identity (device, inode, size, mtime) or `PRAGMA data_version` on a kept
//! read-only connection must differ from the last attempt, so an event storm
//! costs one read. An invalid table is refused by [`RoutingTable::apply`];
//! its reason is logged once per distinct failure and counted once per
//! attempt, while the last good table keeps serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use geoedge_geoip::watch::{FileIdentity, FileWatch, WatchWaker};
use rusqlite::Connection;

use crate::loader::{self, LoadError};
use crate::table::{Applied, RejectReason, Rejected, RoutingTable};

/// How the reloader watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// Check at least this often even without a filesystem event (default 500 ms).
    pub poll: Duration,
    /// After an event, wait this long for the burst of events of one commit to end (default 30 ms).
    pub debounce: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            debounce: Duration::from_millis(30),
        }
    }
}

/// Why a load did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file could not be read.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The table was refused.
    #[error(transparent)]
    Rejected(#[from] Rejected),
}

impl ReloadError {
    /// Why, as counted in [`crate::ReloadStats`].
    pub fn reason(&self) -> RejectReason {
        match self {
            ReloadError::Load(e) => e.reason(),
            ReloadError::Rejected(e) => e.reason(),
        }
    }
}

#[allow(clippy::disallowed_methods)] // the adapter reads the wall clock for the reload timestamp
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Row errors of a refused edit logged one per line; the rest are counted
/// in one line (`geoedge db check` lists them all).
const ROW_ERRORS_LOGGED: usize = 20;

/// Loads a routing.db into a table once (at start, or from a CLI command).
/// A load failure is counted like a refused reload.
pub fn load_into(table: &RoutingTable, path: &Path) -> Result<Applied, ReloadError> {
    let raw = loader::load(path).inspect_err(|e| table.stats().count_rejected(e.reason()))?;
    Ok(table.apply(&raw, unix_now())?)
}

/// A running reloader; stops and joins its thread when dropped.
#[derive(Debug)]
pub struct Reloader {
    /// Set to ask the thread to stop.
    stop: Arc<AtomicBool>,
    /// Wakes the thread out of its wait, so stopping is immediate.
    waker: WatchWaker,
    /// The thread.
    thread: Option<JoinHandle<()>>,
}

impl Reloader {
    /// Starts following `path`, applying changes to `table`. The table should
    /// already hold the initial load ([`load_into`]).
    pub fn spawn(
        path: PathBuf,
        table: Arc<RoutingTable>,
        opts: WatchOptions,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let watch = FileWatch::new(&path, &["-wal", "-journal"]).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), "no filesystem events ({e}); polling every {:?}", opts.poll);
            FileWatch::polling(&path)
        });
        let waker = watch.waker();
        let thread = std::thread::Builder::new()
            .name("routing-reload".into())
            .spawn(move || run(&path, &watch, &table, opts, &flag))?;
        Ok(Self {
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (at most one read in progress).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the file looked like at the last attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    identity: Option<FileIdentity>,
    data_version: Option<i64>,
}

/// A kept read-only connection and the inode it was opened on.
struct Reader {
    conn: Connection,
    identity: FileIdentity,
}

fn run(
    path: &Path,
    watch: &FileWatch,
    table: &RoutingTable,
    opts: WatchOptions,
    stop: &AtomicBool,
) {
    let mut reader: Option<Reader> = None;
    // The first pass re-reads whatever is there, so an edit made between the
    // caller's initial load and this thread's start is not missed (an
    // unchanged table applies as a no-op).
    let mut last: Option<Seen> = None;
    let mut last_error: Option<String> = None;
    let mut first = true;
    while !stop.load(Ordering::Acquire) {
        if !std::mem::take(&mut first) {
            watch.wait(opts.poll, opts.debounce);
            if stop.load(Ordering::Acquire) {
                break;
            }
        }
        let identity = FileIdentity::of(path).ok().flatten();
        let same_file = |r: &Reader| {
            identity.is_some_and(|i| (i.device, i.inode) == (r.identity.device, r.identity.inode))
        };
        // (Re)open when the file was replaced, and remember why opening failed.
        let mut open_error = None;
        if !reader.as_ref().is_some_and(same_file) {
            reader = None;
            match identity {
                None => open_error = Some(LoadError::Missing(path.to_owned())),
                Some(identity) => match loader::open(path) {
                    Ok(conn) => reader = Some(Reader { conn, identity }),
                    Err(e) => open_error = Some(e),
                },
            }
        }
        let data_version = reader
            .as_ref()
            .and_then(|r| loader::data_version(&r.conn, path).ok());
        let seen = Seen {
            identity,
            data_version,
        };
        if last == Some(seen) {
            continue;
        }
        let result = match (&reader, open_error) {
            (Some(r), _) => loader::read(&r.conn, path).map_err(ReloadError::from),
            (None, e) => Err(ReloadError::Load(
                e.unwrap_or_else(|| LoadError::Missing(path.to_owned())),
            )),
        }
        .and_then(|raw| {
            table
                .apply_uncounted(&raw, unix_now())
                .map_err(ReloadError::from)
        });
        match result {
            Ok(applied) => {
                last = Some(seen);
                if applied.diff.is_empty() {
                    tracing::debug!(
                        generation = applied.generation,
                        "routing.db reloaded, nothing changed"
                    );
                } else {
                    tracing::info!(
                        generation = applied.generation,
                        changes = %applied.diff,
                        "routing.db reloaded"
                    );
                }
                *table.stats().last_error.lock() = None;
                if last_error.take().is_some() {
                    tracing::info!(path = %path.display(), "routing.db is valid again");
                }
            }
            Err(e) => {
                let locked = matches!(&e, ReloadError::Load(LoadError::Locked(_)));
                if let ReloadError::Load(_) = &e {
                    // A connection that failed a read may hold stale state.
                    reader = None;
                }
                let msg = e.to_string();
                // Counted and logged once per distinct failure: the same bad
                // edit seen again (another event, a touched file) is not a
                // new one.
                if last_error.as_deref() != Some(&msg) {
                    table.stats().count_rejected(e.reason());
                    match &e {
                        ReloadError::Rejected(r) if !r.row_errors().is_empty() => {
                            // A few rows, not one line per row: a table of
                            // 100k bad rows would write 100k lines.
                            for row in r.row_errors().iter().take(ROW_ERRORS_LOGGED) {
                                tracing::warn!(path = %path.display(), "routing.db row rejected: {row}");
                            }
                            if r.row_errors().len() > ROW_ERRORS_LOGGED {
                                tracing::warn!(
                                    path = %path.display(),
                                    "{} more row errors not logged (geoedge db check lists them all)",
                                    r.row_errors().len() - ROW_ERRORS_LOGGED
                                );
                            }
                            tracing::warn!(
                                path = %path.display(),
                                "routing.db edit rejected ({} row errors); keeping generation {}",
                                r.row_errors().len(),
                                table.generation()
                            );
                        }
                        _ => tracing::warn!(
                            path = %path.display(),
                            "routing.db not reloaded: {msg}; keeping generation {}",
                            table.generation()
                        ),
                    }
                    *table.stats().last_error.lock() = Some(msg.clone());
                    last_error = Some(msg);
                }
                // A lock is transient: try again next time without a new change.
                last = if locked { None } else { Some(seen) };
            }
        }
    }
}
