//! What the accept loops let in: the global connection limit shared by
//! every worker (one atomic counter, no lock), the descriptor limit its
//! default is derived from, and the pause after a failed `accept`.
//!
//! A connection holds a [`Slot`] from accept to close; past the limit the
//! accepted socket is closed at once and counted `over_limit`. The limit
//! can change while running (SIGHUP); connections already admitted keep
//! their slot.
//!
//! Accept errors ([`AcceptError::classify`], [`AcceptError::pause`]) are
//! sans-IO: out of descriptors (`EMFILE`, `ENFILE`) pauses the loop for
//! 100 ms each time, so a full descriptor table is not retried in a spin
//! (ten tries a second cost nothing measurable) and accepting resumes
//! within 100 ms of descriptors coming free; a connection aborted before it
//! was accepted is skipped at once.

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pending connections a listener queues (capped by `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// Descriptors kept out of the default connection limit for everything
/// that is not a connection: listeners, runtimes, the metrics listener and
/// its clients, routing.db, the WireGuard device, logs.
pub const RESERVED_FDS: u64 = 64;

/// Descriptors each worker may keep in its splice pipe pool (two per pipe).
pub const PIPE_FDS_PER_WORKER: u64 = 2 * crate::data::splice::POOL_CAP as u64;

/// The pause after running out of descriptors. Not longer: the kernel
/// keeps queueing clients meanwhile, and each pause delays them; a pause
/// doubling up to 500 ms took 2.05 s instead of 0.85 s to serve a new
/// client after 3,000 abandoned ones (the lifecycle tests' flood).
pub const OUT_OF_FDS_PAUSE: Duration = Duration::from_millis(100);

/// The pause after the kernel ran out of memory for a socket.
pub const NO_MEMORY_PAUSE: Duration = Duration::from_millis(100);

/// The pause after any other accept error.
pub const OTHER_PAUSE: Duration = Duration::from_millis(10);

/// The descriptor limit after [`raise_nofile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
    /// The soft limit before it was raised.
    pub was: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (or to
/// `fs.nr_open` when the hard limit is unlimited), where allowed.
pub fn raise_nofile() -> io::Result<NofileLimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = rl.rlim_cur;
    if rl.rlim_cur < rl.rlim_max {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<libc::rlim_t>().ok())
            .unwrap_or(1 << 20);
        let target = if rl.rlim_max == libc::RLIM_INFINITY {
            nr_open
        } else {
            rl.rlim_max
        };
        let raised = libc::rlimit {
            rlim_cur: target.max(rl.rlim_cur),
            rlim_max: rl.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl.rlim_cur = raised.rlim_cur;
        }
    }
    Ok(NofileLimit {
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
        was,
    })
}

/// The default connection limit for a soft descriptor limit: every client
/// costs a backend socket too, so half of what is left once the reserve
/// (fixed part and the workers' pipe pools) is set aside; at least 1.
pub fn default_max_connections(soft_nofile: u64, workers: usize) -> usize {
    let reserve = RESERVED_FDS + PIPE_FDS_PER_WORKER * workers as u64;
    let n = soft_nofile.saturating_sub(reserve) / 2;
    usize::try_from(n).unwrap_or(usize::MAX).clamp(1, 1 << 30)
}

/// The connection limit in force: the one asked for (`None`: the
/// default), but never above `allowed`, what the descriptor limit holds
/// ([`default_max_connections`]). Above it, clients would be accepted that
/// no backend socket could be opened for. Returns the limit and whether the
/// one asked for was lowered, for the caller to warn.
pub fn effective_max_connections(asked: Option<usize>, allowed: usize) -> (usize, bool) {
    match asked {
        Some(n) if n > allowed => (allowed, true),
        Some(n) => (n, false),
        None => (allowed, false),
    }
}

/// The global connection limit and accept error counts, shared by every
/// worker.
#[derive(Debug)]
pub struct ConnLimit {
    /// Connections admitted and not yet closed.
    open: AtomicUsize,
    /// The limit in force.
    max: AtomicUsize,
    /// Accept errors by [`AcceptError`], in the order of
    /// [`AcceptError::ALL`].
    accept_errors: [AtomicU64; 4],
}

impl ConnLimit {
    /// A limit of `max` connections at once.
    pub fn new(max: usize) -> Self {
        Self {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max.max(1)),
            accept_errors: Default::default(),
        }
    }

    /// The limit in force.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Changes the limit (connections already admitted stay).
    pub fn set_max(&self, max: usize) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// Connections admitted and still open.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for one more connection, or `None` at the limit.
    pub fn try_admit(self: &Arc<Self>) -> Option<Slot> {
        let max = self.max();
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= max {
                return None;
            }
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Slot(Arc::clone(self))),
                Err(now) => open = now,
            }
        }
    }

    /// Counts one accept error.
    pub fn count_accept_error(&self, e: AcceptError) {
        self.accept_errors[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Accept errors of this kind so far.
    pub fn accept_errors(&self, e: AcceptError) -> u64 {
        self.accept_errors[e as usize].load(Ordering::Relaxed)
    }
}

/// One admitted connection; gives its place back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<ConnLimit>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What went wrong in an `accept`: a small fixed set, usable as a metric
/// label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptError {
    /// Out of descriptors: `EMFILE` (this process) or `ENFILE` (system).
    OutOfFds,
    /// The connection went away before it was accepted (`ECONNABORTED`,
    /// `EPROTO`, `EPERM` from a firewall, `ECONNRESET`): skipped at once.
    Aborted,
    /// The kernel had no memory for the socket (`ENOBUFS`, `ENOMEM`).
    NoMemory,
    /// Anything else.
    Other,
}

impl AcceptError {
    /// Every kind, for metric series.
    pub const ALL: [AcceptError; 4] = [
        AcceptError::OutOfFds,
        AcceptError::Aborted,
        AcceptError::NoMemory,
        AcceptError::Other,
    ];

    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            AcceptError::OutOfFds => "out_of_fds",
            AcceptError::Aborted => "aborted",
            AcceptError::NoMemory => "no_memory",
            AcceptError::Other => "other",
        }
    }

    /// The kind of an `accept` error.
    pub fn classify(e: &io::Error) -> AcceptError {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => AcceptError::OutOfFds,
            Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM | libc::ECONNRESET) => {
                AcceptError::Aborted
            }
            Some(libc::ENOBUFS | libc::ENOMEM) => AcceptError::NoMemory,
            _ => match e.kind() {
                io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset => {
                    AcceptError::Aborted
                }
                _ => AcceptError::Other,
            },
        }
    }
}

impl AcceptError {
    /// How long an accept loop pauses after an error of this kind
    /// (`None`: it goes on at once).
    pub fn pause(self) -> Option<Duration> {
        match self {
            AcceptError::OutOfFds => Some(OUT_OF_FDS_PAUSE),
            AcceptError::Aborted => None,
            AcceptError::NoMemory => Some(NO_MEMORY_PAUSE),
            AcceptError::Other => Some(OTHER_PAUSE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_above_what_the_descriptors_hold_is_lowered_to_it() {
        let allowed = default_max_connections(1024, 2);
        assert_eq!(allowed, 352);
        assert_eq!(effective_max_connections(None, allowed), (352, false));
        assert_eq!(effective_max_connections(Some(100), allowed), (100, false));
        assert_eq!(effective_max_connections(Some(352), allowed), (352, false));
        assert_eq!(effective_max_connections(Some(5000), allowed), (352, true));
    }

    #[test]
    fn the_limit_holds_and_slots_come_back() {
        let limit = Arc::new(ConnLimit::new(2));
        let a = limit.try_admit().unwrap();
        let b = limit.try_admit().unwrap();
        assert!(limit.try_admit().is_none());
        assert_eq!(limit.open(), 2);
        drop(a);
        let c = limit.try_admit().unwrap();
        // Lowering the limit keeps who is in, and admits no one more.
        limit.set_max(1);
        assert!(limit.try_admit().is_none());
        drop((b, c));
        assert_eq!(limit.open(), 0);
        let _d = limit.try_admit().unwrap();
        assert!(limit.try_admit().is_none());
        limit.set_max(0);
        assert_eq!(limit.max(), 1, "never below 1");
    }

    #[test]
    fn the_limit_holds_across_threads() {
        let limit = Arc::new(ConnLimit::new(1000));
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut held = Vec::new();
                    for _ in 0..1000 {
                        if let Some(slot) = limit.try_admit() {
                            held.push(slot);
                        }
                    }
                    admitted.fetch_add(held.len(), Ordering::Relaxed);
                    // Held until every thread has tried.
                    std::mem::forget(held);
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 1000);
        assert_eq!(limit.open(), 1000);
    }

    #[test]
    fn default_limit_leaves_room_for_backends_and_the_reserve() {
        // 1,024 descriptors, 2 workers: (1024 - 64 - 2*128) / 2.
        assert_eq!(default_max_connections(1024, 2), 352);
        assert_eq!(default_max_connections(1_048_576, 4), 524_000);
        assert_eq!(default_max_connections(100, 8), 1, "at least one");
        assert_eq!(default_max_connections(u64::MAX, 1), 1 << 30);
    }

    #[test]
    fn accept_errors_pause_by_kind() {
        let e = |n| AcceptError::classify(&io::Error::from_raw_os_error(n));
        assert_eq!(e(libc::EMFILE), AcceptError::OutOfFds);
        assert_eq!(e(libc::ENFILE), AcceptError::OutOfFds);
        assert_eq!(e(libc::ECONNABORTED), AcceptError::Aborted);
        assert_eq!(e(libc::ENOBUFS), AcceptError::NoMemory);
        assert_eq!(e(libc::EINVAL), AcceptError::Other);

        assert_eq!(AcceptError::Aborted.pause(), None, "skipped at once");
        let out = AcceptError::OutOfFds.pause().unwrap();
        assert!((100..=500).contains(&out.as_millis()), "{out:?}");
        assert_eq!(AcceptError::Other.pause(), Some(Duration::from_millis(10)));
    }
}
