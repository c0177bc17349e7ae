//! Generic detection of changes to one file, shared by this crate's `.mmdb`
//! reloader and the routing crate's `routing.db` reloader.
//!
//! Two pieces, meant to be used together:
//!
//! * [`FileIdentity`] — device, inode, length and modification time of a
//!   file. Callers remember the identity they last acted on and compare it
//!   with the current one; that comparison is the source of truth.
//! * [`FileWatch`] — a `notify` watch on the file's *parent directory*
//!   (non-recursive), so a file replaced by an atomic rename is seen as well
//!   as one rewritten in place. Its [`wait`](FileWatch::wait) returns early
//!   when something relevant happens, which makes reloads prompt; callers
//!   must still compare identities after every wait, including timeouts,
//!   because events can be missed (overflowing queues, a replaced parent
//!   directory, or no `notify` at all in degraded mode).
//!
//! A typical loop:
//!
//! ```no_run
//! # use std::time::Duration;
//! # use geoedge_geoip::watch::{FileIdentity, FileWatch};
//! let path = std::path::Path::new("/var/lib/geoedge/routing.db");
//! let watch = FileWatch::new(path, &["-wal", "-journal", "-shm"]).unwrap();
//! let mut last = FileIdentity::of(path).ok().flatten();
//! loop {
//!     watch.wait(Duration::from_millis(500), Duration::from_millis(50));
//!     let now = FileIdentity::of(path).ok().flatten();
//!     if now != last {
//!         last = now;
//!         // reload ...
//!     }
//! #   break;
//! }
//! ```

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

/// Everything about a file that changes when its content is replaced:
/// a rename swaps device/inode, an in-place rewrite changes the length
/// and/or the modification time.
///
/// The kernel stamps modification times from a coarse clock (one tick,
/// typically 1–4 ms), so two rewrites to the same length within one tick
/// can look identical; writers that rename a fresh file into place never
/// have this problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileIdentity {
    /// Device holding the file (0 where the platform has no such notion).
    pub device: u64,
    /// Inode number (0 where the platform has no such notion).
    pub inode: u64,
    /// Length in bytes.
    pub len: u64,
    /// Last modification time, with nanoseconds where the file system
    /// records them.
    pub mtime: SystemTime,
}

impl FileIdentity {
    /// The identity of the file at `path` (following symlinks), or `None`
    /// when it does not exist. Other failures (permissions, ...) are errors.
    pub fn of(path: impl AsRef<Path>) -> io::Result<Option<Self>> {
        match fs::metadata(path) {
            Ok(m) => Ok(Some(Self::from_metadata(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The identity described by already-fetched metadata (for example
    /// from `File::metadata` on an open handle).
    pub fn from_metadata(m: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        };
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        FileIdentity {
            device,
            inode,
            len: m.len(),
            mtime: m.modified().unwrap_or(UNIX_EPOCH),
        }
    }
}

/// Why a [`FileWatch`] could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The path has no final file-name component (`/`, `..`, ...), so there
    /// is nothing to filter the directory's events on.
    #[error("{} does not name a file", path.display())]
    NoFileName {
        /// The path that was given.
        path: PathBuf,
    },
}

/// What the watch thread (or a [`WatchWaker`]) sends to [`FileWatch::wait`].
enum Msg {
    /// A relevant file-system event (or a `notify` error, which may mean
    /// events were lost).
    Changed,
    /// [`WatchWaker::wake`] was called.
    Wake,
}

/// Watches one file (and optional sibling files such as SQLite's `-wal`)
/// through its parent directory. See the [module docs](self).
///
/// If `notify` cannot be set up (no inotify instances left, missing parent
/// directory, unsupported platform, ...), the watch runs in *degraded* mode:
/// [`wait`](Self::wait) just sleeps for its timeout (or until woken), and a
/// warning is logged once when the watch is created.
pub struct FileWatch {
    path: PathBuf,
    rx: Receiver<Msg>,
    tx: Sender<Msg>,
    /// Kept alive for as long as the watch; `None` in degraded mode.
    watcher: Option<RecommendedWatcher>,
}

impl std::fmt::Debug for FileWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileWatch")
            .field("path", &self.path)
            .field("degraded", &self.is_degraded())
            .finish()
    }
}

/// Wakes a [`FileWatch::wait`] in progress (or the next one), making it
/// return `false` at once. Cheap to clone and usable from any thread; used
/// to stop reloader threads promptly.
#[derive(Clone, Debug)]
pub struct WatchWaker(Sender<Msg>);

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Msg::Changed => "Changed",
            Msg::Wake => "Wake",
        })
    }
}

impl WatchWaker {
    /// Wakes the watch. Does nothing if the watch is gone.
    pub fn wake(&self) {
        let _ = self.0.send(Msg::Wake);
    }
}

impl FileWatch {
    /// Starts watching `path`'s parent directory for events on the file's
    /// name and on `<file name><suffix>` for each of `sibling_suffixes`
    /// (routing passes `["-wal", "-journal", "-shm"]`). The file itself need
    /// not exist yet. Falls back to degraded mode rather than failing when
    /// `notify` is unavailable.
    pub fn new(path: &Path, sibling_suffixes: &[&str]) -> Result<Self, WatchError> {
        let name = path.file_name().ok_or_else(|| WatchError::NoFileName {
            path: path.to_owned(),
        })?;
        let mut names: HashSet<OsString> = HashSet::new();
        names.insert(name.to_owned());
        for suffix in sibling_suffixes {
            let mut n = name.to_owned();
            n.push(suffix);
            names.insert(n);
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };

        let (tx, rx) = mpsc::channel();
        let event_tx = tx.clone();
        let handler = move |res: notify::Result<Event>| {
            let relevant = match res {
                Ok(event) => {
                    is_relevant_kind(&event.kind)
                        && event
                            .paths
                            .iter()
                            .any(|p| p.file_name().is_some_and(|n| names.contains(n)))
                }
                // Errors (e.g. an overflowing queue) may hide real changes.
                Err(_) => true,
            };
            if relevant {
                let _ = event_tx.send(Msg::Changed);
            }
        };
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&dir, RecursiveMode::NonRecursive)?;
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    dir = %dir.display(),
                    error = %e,
                    "cannot watch directory for changes; falling back to polling"
                );
                None
            }
        };
        Ok(FileWatch {
            path: path.to_owned(),
            rx,
            tx,
            watcher,
        })
    }

    /// A watch that never sees events: [`wait`](Self::wait) only sleeps
    /// (or returns when woken). For callers that want plain polling.
    pub fn polling(path: &Path) -> Self {
        let (tx, rx) = mpsc::channel();
        FileWatch {
            path: path.to_owned(),
            rx,
            tx,
            watcher: None,
        }
    }

    /// The watched file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the watch runs without `notify` (waits only time out).
    pub fn is_degraded(&self) -> bool {
        self.watcher.is_none()
    }

    /// A handle that can interrupt [`wait`](Self::wait) from another thread.
    pub fn waker(&self) -> WatchWaker {
        WatchWaker(self.tx.clone())
    }

    /// The current identity of the watched file (see [`FileIdentity::of`]).
    pub fn identity(&self) -> io::Result<Option<FileIdentity>> {
        FileIdentity::of(&self.path)
    }

    /// Blocks until a relevant event arrives or `timeout` elapses, and
    /// returns whether an event arrived. After the first event it keeps
    /// absorbing further events until `debounce` passes without one (but
    /// for at most 4 × `debounce` in total), so a burst of writes ends in a
    /// single wake-up. A [`WatchWaker::wake`] makes it return at once
    /// (`false` if no event had arrived yet).
    #[allow(clippy::disallowed_methods)] // the watcher adapter times its waits (monotonic clock)
    pub fn wait(&self, timeout: Duration, debounce: Duration) -> bool {
        match self.rx.recv_timeout(timeout) {
            Ok(Msg::Changed) => {}
            Ok(Msg::Wake) | Err(RecvTimeoutError::Timeout) => return false,
            // Cannot happen (we hold a sender), but never spin.
            Err(RecvTimeoutError::Disconnected) => {
                std::thread::sleep(timeout);
                return false;
            }
        }
        let cap = Instant::now() + debounce.saturating_mul(4);
        loop {
            let left = cap.saturating_duration_since(Instant::now()).min(debounce);
            if left.is_zero() {
                return true;
            }
            match self.rx.recv_timeout(left) {
                Ok(Msg::Changed) => continue,
                Ok(Msg::Wake) | Err(_) => return true,
            }
        }
    }
}

/// Whether an event kind can mean the file's content changed. Plain reads
/// (including our own reloads opening the file) are ignored; a writer
/// closing the file counts.
fn is_relevant_kind(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SHORT: Duration = Duration::from_millis(20);
    const LONG: Duration = Duration::from_secs(5);

    #[test]
    fn identity_tracks_rewrites_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(FileIdentity::of(&p).unwrap(), None);
        fs::write(&p, b"one").unwrap();
        let a = FileIdentity::of(&p).unwrap().unwrap();
        assert_eq!(a.len, 3);
        fs::write(dir.path().join("g"), b"two").unwrap();
        fs::rename(dir.path().join("g"), &p).unwrap();
        let b = FileIdentity::of(&p).unwrap().unwrap();
        assert_ne!(a, b);
        assert_ne!(a.inode, b.inode);
        fs::write(&p, b"three").unwrap();
        assert_ne!(FileIdentity::of(&p).unwrap().unwrap(), b);
    }

    #[test]
    fn sees_rename_and_in_place_write_but_not_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("watched.db");
        let w = FileWatch::new(&p, &["-wal"]).unwrap();
        assert!(!w.is_degraded());

        // Unrelated files in the same directory are ignored.
        fs::write(dir.path().join("other.db"), b"x").unwrap();
        assert!(!w.wait(Duration::from_millis(200), SHORT));

        // Creation by rename.
        fs::write(dir.path().join("tmp"), b"x").unwrap();
        fs::rename(dir.path().join("tmp"), &p).unwrap();
        assert!(w.wait(LONG, SHORT));

        // In-place write.
        let mut f = fs::OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"more").unwrap();
        drop(f);
        assert!(w.wait(LONG, SHORT));

        // Sibling suffix.
        fs::write(dir.path().join("watched.db-wal"), b"x").unwrap();
        assert!(w.wait(LONG, SHORT));

        // Reading is not a change.
        while w.wait(Duration::from_millis(100), SHORT) {}
        let _ = fs::read(&p).unwrap();
        assert!(!w.wait(Duration::from_millis(200), SHORT));

        // Removal.
        fs::remove_file(&p).unwrap();
        assert!(w.wait(LONG, SHORT));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // measures that a wake is prompt
    fn waker_interrupts_wait() {
        let dir = tempfile::tempdir().unwrap();
        let w = FileWatch::new(&dir.path().join("x"), &[]).unwrap();
        let waker = w.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake();
        });
        let started = Instant::now();
        assert!(!w.wait(Duration::from_secs(30), SHORT));
        assert!(started.elapsed() < Duration::from_secs(10));
        t.join().unwrap();
    }

    #[test]
    fn degraded_watch_just_sleeps() {
        let missing = Path::new("/nonexistent-geoedge-dir/sub/file.mmdb");
        let w = FileWatch::new(missing, &[]).unwrap();
        assert!(w.is_degraded());
        assert!(!w.wait(Duration::from_millis(30), SHORT));
        assert!(FileWatch::polling(missing).is_degraded());
    }

    #[test]
    fn rejects_paths_without_file_name() {
        assert!(matches!(
            FileWatch::new(Path::new("/"), &[]),
            Err(WatchError::NoFileName { .. })
        ));
    }
}
