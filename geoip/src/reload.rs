//! The background `.mmdb` reloader: a plain `std` thread that watches the
//! database file with [`FileWatch`] and swaps a new [`GeoDb`] into a
//! [`GeoIp`] whenever the file's [`FileIdentity`] changes.
//!
//! A bad file (missing, truncated, garbage, wrong database type) never
//! replaces a good database: the old one keeps being served, the reason is
//! logged once per distinct file identity, and `reloads_failed` rises.
//!
//! [`GeoDb`]: crate::GeoDb

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::live::{GeoIp, ReloadOutcome};
use crate::watch::{FileIdentity, FileWatch, WatchWaker};

/// Timing of a reloader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadOptions {
    /// How often the file's identity is checked when no event arrives
    /// (and the longest a change can go unnoticed if events are lost).
    /// Default 500 ms.
    pub poll: Duration,
    /// How long the file must stay quiet after an event before it is read,
    /// so a file still being written is not read half-way (capped at four
    /// times this in total). Default 50 ms.
    pub debounce: Duration,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            poll: Duration::from_millis(500),
            debounce: Duration::from_millis(50),
        }
    }
}

/// How one reload attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptResult {
    /// The new database was installed.
    Applied(ReloadOutcome),
    /// The file was rejected (or missing) and the old database kept.
    Rejected {
        /// Why, as logged.
        reason: String,
    },
}

/// One reload attempt by the reloader thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadAttempt {
    /// 1 for the first attempt, then counting up.
    pub number: u64,
    /// The file's identity when the attempt started (`None`: missing).
    pub identity: Option<FileIdentity>,
    /// How it ended.
    pub result: AttemptResult,
}

#[derive(Default)]
struct AttemptLog {
    count: u64,
    last: Option<ReloadAttempt>,
}

/// What the handle and the thread share.
struct Shared {
    stop: AtomicBool,
    log: Mutex<AttemptLog>,
    changed: Condvar,
}

/// Owns a running reloader thread. Stops and joins it on
/// [`stop`](Self::stop) or when dropped (promptly: the thread is woken, not
/// waited out).
pub struct ReloaderHandle {
    shared: Arc<Shared>,
    waker: WatchWaker,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ReloaderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloaderHandle")
            .field("attempts", &self.attempts())
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl ReloaderHandle {
    /// Number of reload attempts made so far (successful or not).
    pub fn attempts(&self) -> u64 {
        self.lock().count
    }

    /// The most recent reload attempt, if any.
    pub fn last_attempt(&self) -> Option<ReloadAttempt> {
        self.lock().last.clone()
    }

    /// Waits until more than `after` attempts have been made, or `timeout`
    /// passes; returns the latest attempt if the count moved past `after`.
    /// Intended for tests: read [`attempts`](Self::attempts), change the
    /// file, then wait with a generous timeout.
    #[allow(clippy::disallowed_methods)] // a timeout for tests, outside the lookup core
    pub fn wait_for_attempt(&self, after: u64, timeout: Duration) -> Option<ReloadAttempt> {
        let deadline = Instant::now() + timeout;
        let mut log = self.lock();
        while log.count <= after {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            log = self
                .shared
                .changed
                .wait_timeout(log, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        log.last.clone()
    }

    /// Makes the thread check the file's identity now rather than at the
    /// next poll.
    pub fn check_now(&self) {
        self.waker.wake();
    }

    /// Stops the thread and waits for it to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AttemptLog> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ReloaderHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts a thread that keeps `geoip` in sync with the database file at
/// `path`.
///
/// The watch on the file's directory is set up before this returns, so any
/// change made afterwards is noticed. If `geoip` already holds a database,
/// the file as it is now is assumed to be that database and only later
/// changes are loaded; if `geoip` is empty, the file is loaded right away.
/// On every event or poll the thread compares the file's [`FileIdentity`]
/// with the one it last attempted and, when it differs, reads the whole file
/// into memory, checks it and swaps it in (see [`GeoIp::reload_from`]).
///
/// Publish new databases by writing a temporary file in the same directory
/// and renaming it over `path`. Rewrites in place are noticed too, but the
/// reader may catch the file half-written (normally rejected, since the
/// metadata sits at the end of the file, and retried when the writer
/// finishes).
pub fn spawn_reloader(
    path: impl AsRef<Path>,
    geoip: Arc<GeoIp>,
    opts: ReloadOptions,
) -> ReloaderHandle {
    let path = path.as_ref().to_owned();
    let watch = FileWatch::new(&path, &[]).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "cannot watch database file; polling only");
        FileWatch::polling(&path)
    });
    // `None`: nothing attempted yet, so the first check always loads.
    let last = if geoip.current().is_some() {
        Some(FileIdentity::of(&path).ok().flatten())
    } else {
        None
    };
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        log: Mutex::new(AttemptLog::default()),
        changed: Condvar::new(),
    });
    let waker = watch.waker();
    let thread_shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("geoip-reload".into())
        .spawn(move || run(path, geoip, opts, watch, last, &thread_shared));
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the GeoIP reloader thread; reloads disabled");
            None
        }
    };
    ReloaderHandle {
        shared,
        waker,
        thread,
    }
}

fn run(
    path: PathBuf,
    geoip: Arc<GeoIp>,
    opts: ReloadOptions,
    watch: FileWatch,
    mut last: Option<Option<FileIdentity>>,
    shared: &Shared,
) {
    tracing::debug!(path = %path.display(), degraded = watch.is_degraded(), "GeoIP reloader started");
    // With nothing loaded yet, look at the file at once; otherwise start by
    // waiting, so a write in progress is debounced like any other (the
    // watch predates the baseline identity, so no change is missed).
    let mut check_now = last.is_none();
    while !shared.stop.load(Ordering::Acquire) {
        if !std::mem::take(&mut check_now) {
            watch.wait(opts.poll, opts.debounce);
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
        }
        // An unreadable directory looks like a missing file; the load
        // attempt then reports the real error.
        let identity = FileIdentity::of(&path).ok().flatten();
        if last == Some(identity) {
            continue;
        }
        last = Some(identity);
        let result = attempt(&path, &geoip, identity);
        let mut log = shared.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.count += 1;
        log.last = Some(ReloadAttempt {
            number: log.count,
            identity,
            result,
        });
        drop(log);
        shared.changed.notify_all();
        // A change made while the file was being read raised an event that
        // is still queued, so the next wait returns promptly.
    }
    tracing::debug!(path = %path.display(), "GeoIP reloader stopped");
}

/// One load attempt. Each attempt is for a new identity, so every failure
/// is logged exactly once per distinct file identity.
fn attempt(path: &Path, geoip: &GeoIp, identity: Option<FileIdentity>) -> AttemptResult {
    match geoip.reload_from(path) {
        Ok(outcome) => {
            tracing::info!(
                path = %path.display(),
                database_type = %outcome.info.database_type,
                build_epoch = outcome.info.build_epoch,
                size_bytes = outcome.info.size_bytes,
                generation = outcome.generation,
                load_ms = outcome.load_time.as_secs_f64() * 1e3,
                "GeoIP database loaded"
            );
            AttemptResult::Applied(outcome)
        }
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(
                path = %path.display(),
                len = identity.map(|i| i.len),
                error = %reason,
                "GeoIP database rejected; keeping the previous one"
            );
            AttemptResult::Rejected { reason }
        }
    }
}
