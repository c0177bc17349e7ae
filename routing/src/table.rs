//! The live routing table: the current [`Snapshot`] behind an atomic swap,
//! the per-backend connection counters in a [`DashMap`] that outlives
//! snapshots, and the reload counters.
//!
//! Decisions load the snapshot with one atomic read and never wait on a
//! reload; a reload validates a whole new table, carries the counters of
//! backends that stay, and swaps. No lock or map guard is held across
//! anything that blocks.
//!
//! A reload keeps the unchanged backends of the snapshot in service
//! ([`snapshot::rebuild`]), takes counters from the map only for backends
//! it adds, and looks only at the backends it removes (and those removed
//! earlier that connections still held) to forget their counters: past
//! validation, its work follows what changed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use parking_lot::Mutex;

use crate::diff::SnapshotDiff;
use crate::model::{Backend, BackendId, BackendLoad};
use crate::raw::RawTable;
use crate::snapshot::{self, InvalidTable, RowError, Snapshot};

/// Why a reload did not apply: a small, fixed set, usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The file could not be opened or read (missing, not a database, corrupt).
    Unreadable,
    /// The database stayed locked by a writer past the busy timeout.
    Locked,
    /// Rows failed validation.
    Invalid,
    /// The new table has no live backend while the current one has some.
    Emptied,
}

impl RejectReason {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [RejectReason; 4] = [
        RejectReason::Unreadable,
        RejectReason::Locked,
        RejectReason::Invalid,
        RejectReason::Emptied,
    ];

    /// Lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectReason::Unreadable => "unreadable",
            RejectReason::Locked => "locked",
            RejectReason::Invalid => "invalid",
            RejectReason::Emptied => "emptied",
        }
    }
}

/// A reload that was refused; the table in service is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Rows failed validation.
    #[error(transparent)]
    Invalid(#[from] InvalidTable),
    /// The new table would empty a table that has live backends.
    #[error("the new table has no live backend while {current} are in service; refusing to empty the table")]
    Emptied {
        /// Live backends in the table in service.
        current: usize,
    },
}

impl Rejected {
    /// The metric label of this rejection.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejected::Invalid(_) => RejectReason::Invalid,
            Rejected::Emptied { .. } => RejectReason::Emptied,
        }
    }

    /// The row-level errors, when rows were at fault.
    pub fn row_errors(&self) -> &[RowError] {
        match self {
            Rejected::Invalid(e) => &e.errors,
            Rejected::Emptied { .. } => &[],
        }
    }
}

/// Reload counters, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Generation of the table in service: 0 before the first load, +1 per
    /// applied reload that changed something.
    pub generation: AtomicU64,
    /// Reloads applied (including ones that changed nothing).
    pub applied: AtomicU64,
    /// Reloads refused, by [`RejectReason`] (index = position in [`RejectReason::ALL`]).
    pub rejected: [AtomicU64; 4],
    /// Unix time in seconds of the last applied reload (0 before the first).
    pub last_applied_unix: AtomicU64,
    /// Why the file as it stands is not in service: set by the watcher when
    /// it refuses a reload, cleared when one applies (`None`: the last
    /// reload applied). Taken briefly, never across an await.
    pub last_error: parking_lot::Mutex<Option<String>>,
}

impl ReloadStats {
    /// Reloads refused for one reason.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    /// Counts a refused reload.
    pub fn count_rejected(&self, reason: RejectReason) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads refused for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// What an applied reload changed.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The new generation.
    pub generation: u64,
    /// The difference from the previous table.
    pub diff: SnapshotDiff,
}

/// A held connection slot on one backend, taken when the backend is chosen.
/// Dropping it releases the slot exactly once.
#[derive(Debug)]
pub struct Reservation {
    /// The backend as it was when chosen.
    backend: Arc<Backend>,
}

impl Reservation {
    /// Takes a slot on `backend` if it is below its hard limit.
    pub fn try_new(backend: &Arc<Backend>) -> Option<Self> {
        backend.load.try_acquire(backend.hard_limit).then(|| Self {
            backend: Arc::clone(backend),
        })
    }

    /// The backend the slot is on.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.backend.load.release();
    }
}

/// The live routing table shared by every connection.
#[derive(Debug)]
pub struct RoutingTable {
    /// The snapshot in service.
    current: ArcSwap<Snapshot>,
    /// Connection counters by backend id; an entry lives while its backend is
    /// in the table or still has connections, so counts survive reloads.
    loads: DashMap<BackendId, Arc<BackendLoad>, foldhash::fast::RandomState>,
    /// Successful connects on backends forgotten since (see
    /// [`RoutingTable::successful_connects`]).
    retired: Arc<AtomicU64>,
    /// Serialises reloads and the sum of successful connects (never taken
    /// on the decision path), and holds the ids of backends removed from
    /// the table while connections held them: their counters are forgotten
    /// once they are idle.
    reload: Mutex<Vec<BackendId>>,
    /// Reload counters.
    stats: ReloadStats,
    /// Says whether a backend address is one of this edge's own listeners
    /// (see [`RoutingTable::refuse_backends_at`]).
    own_listener: ArcSwapOption<OwnListener>,
    /// Told of every applied change, in order (see
    /// [`RoutingTable::subscribe`]).
    subscribers: Subscribers,
}

/// The subscribers of a table.
#[derive(Default)]
struct Subscribers(Mutex<Vec<Subscriber>>);

impl std::fmt::Debug for Subscribers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscribers({})", self.0.lock().len())
    }
}

/// A subscriber to a table's changes: called with each change applied,
/// under the reload lock (so in order); it says whether it wants the next
/// ones. It must not block: hand the change to a channel and return.
pub type Subscriber = Box<dyn Fn(&Applied) -> bool + Send + Sync>;

/// A predicate that says whether an address reaches one of this edge's own
/// listeners; the adapter that knows the listeners (and which addresses
/// are this host's) supplies it.
pub struct OwnListener(pub Box<dyn Fn(SocketAddr) -> bool + Send + Sync>);

impl std::fmt::Debug for OwnListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnListener(..)")
    }
}

impl Default for RoutingTable {
    fn default() -> Self {
        Self::new()
    }
}

impl RoutingTable {
    /// Refuses, from the next reload on, a table with a backend at an
    /// address for which `own` is true: this edge's own listeners, where a
    /// backend would send every client (and every health check) back into
    /// the edge in a loop. Such a table is refused like any other invalid
    /// one (the table in service is kept), with one row error per backend.
    pub fn refuse_backends_at(&self, own: OwnListener) {
        self.own_listener.store(Some(Arc::new(own)));
    }

    /// A table with no backends (generation 0).
    pub fn new() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            loads: DashMap::default(),
            retired: Arc::default(),
            reload: Mutex::new(Vec::new()),
            stats: ReloadStats::default(),
            own_listener: ArcSwapOption::empty(),
            subscribers: Subscribers::default(),
        }
    }

    /// Calls `on_change` with the generation and diff of every change this
    /// table applies from now on, in order, until it returns false. A
    /// reload that changed nothing, or that was refused, is not a change.
    /// The callback runs on the reloading thread with the reload lock held:
    /// it must only hand the change on (to a channel), never block.
    pub fn subscribe(&self, on_change: impl Fn(&Applied) -> bool + Send + Sync + 'static) {
        self.subscribers.0.lock().push(Box::new(on_change));
    }

    /// Tells the subscribers of `applied` when it moved the generation.
    /// Called with the reload lock held.
    fn publish(&self, before: u64, applied: &Applied) {
        if applied.generation != before {
            self.subscribers.0.lock().retain(|s| s(applied));
        }
    }

    /// A table loaded from rows, or why they are invalid.
    pub fn from_raw(raw: &RawTable, now_unix: u64) -> Result<Self, Rejected> {
        let t = Self::new();
        t.apply(raw, now_unix)?;
        Ok(t)
    }

    /// The snapshot in service (one atomic load; never waits on a reload).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The snapshot in service without touching its reference count, for
    /// short reads on the hot path. Do not hold it across an await.
    pub fn snapshot_guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The reload counters.
    pub fn stats(&self) -> &ReloadStats {
        &self.stats
    }

    /// Generation of the table in service.
    pub fn generation(&self) -> u64 {
        self.stats.generation.load(Ordering::Acquire)
    }

    /// Connections held on a backend, by id (also for backends just removed
    /// from the table whose connections are still open).
    pub fn active(&self, id: &str) -> u32 {
        self.loads.get(id).map_or(0, |l| l.active())
    }

    /// Successful connects to this table's backends so far, those since
    /// removed included: what the proxy reports as connections that reached
    /// a backend (each records one successful connect, and nothing else
    /// does). Never decreases. Takes the reload lock (not the decision
    /// path's) so that no backend is counted twice or missed while a reload
    /// forgets it.
    pub fn successful_connects(&self) -> u64 {
        let _serial = self.reload.lock();
        let live: u64 = self
            .loads
            .iter()
            .map(|l| l.value().connect_stats().successes())
            .sum();
        self.retired.load(Ordering::Relaxed) + live
    }

    /// Drops the counters of a backend no longer in the table, if no
    /// connection holds it, keeping its successful connects in the total.
    /// Called with the reload lock held. False when the counters are still
    /// there (held).
    fn forget_idle(&self, id: &BackendId) -> bool {
        if let Some((_, load)) = self.loads.remove_if(id, |_, l| l.reserved() == 0) {
            load.retire(&self.retired);
        }
        !self.loads.contains_key(id)
    }

    /// Validates `raw` whole and, if valid, swaps it in. An invalid table, or
    /// one that would replace live backends with none, is refused and the
    /// table in service is kept. The refusal is counted; logging is the
    /// caller's (it knows whether this failure is new).
    ///
    /// The backends the new table does not change are kept as they are
    /// ([`snapshot::rebuild`]): the result is the table [`Self::apply_full`]
    /// makes, at a cost that follows the change.
    pub fn apply(&self, raw: &RawTable, now_unix: u64) -> Result<Applied, Rejected> {
        self.apply_counted(raw, now_unix, false)
    }

    /// [`RoutingTable::apply`], rebuilding every backend as a first load
    /// does ([`snapshot::build`]) instead of keeping the unchanged ones: the
    /// reference that `apply` is tested and measured against.
    pub fn apply_full(&self, raw: &RawTable, now_unix: u64) -> Result<Applied, Rejected> {
        self.apply_counted(raw, now_unix, true)
    }

    fn apply_counted(
        &self,
        raw: &RawTable,
        now_unix: u64,
        full: bool,
    ) -> Result<Applied, Rejected> {
        let mut draining = self.reload.lock();
        let before = self.generation();
        let result = self.apply_locked(&mut draining, raw, now_unix, full);
        match &result {
            Ok(applied) => self.publish(before, applied),
            Err(e) => self.stats.count_rejected(e.reason()),
        }
        result
    }

    /// [`RoutingTable::apply`] without counting a refusal, for a caller that
    /// counts each distinct failure once (the reloader: one bad edit seen
    /// twice is still one bad edit).
    pub fn apply_uncounted(&self, raw: &RawTable, now_unix: u64) -> Result<Applied, Rejected> {
        let mut draining = self.reload.lock();
        let before = self.generation();
        let result = self.apply_locked(&mut draining, raw, now_unix, false);
        if let Ok(applied) = &result {
            self.publish(before, applied);
        }
        result
    }

    /// Why `new` may not replace `old`, if it may not.
    fn refusal(&self, old: &Snapshot, new: &Snapshot, generation: u64) -> Option<Rejected> {
        if let Some(own) = self.own_listener.load().as_deref() {
            // Every backend, not only the changed ones: the addresses of
            // this host can change between two reloads.
            let errors: Vec<RowError> = new
                .backends
                .iter()
                .filter(|b| (own.0)(b.addr))
                .map(|b| RowError {
                    table: "backends",
                    row: b.id.to_string(),
                    column: None,
                    message: format!(
                        "{} is one of this edge's own listeners: connecting to it would loop",
                        b.addr
                    ),
                })
                .collect();
            if !errors.is_empty() {
                return Some(Rejected::Invalid(InvalidTable { errors }));
            }
        }
        if generation > 0 && old.live_len() > 0 && new.live_len() == 0 {
            return Some(Rejected::Emptied {
                current: old.live_len(),
            });
        }
        None
    }

    fn apply_locked(
        &self,
        draining: &mut Vec<BackendId>,
        raw: &RawTable,
        now_unix: u64,
        full: bool,
    ) -> Result<Applied, Rejected> {
        let old = self.current.load_full();
        // Asked only once the whole table is valid, and (but for a full
        // rebuild) only for the backends `old` lacks.
        let load_for = |id: &BackendId| {
            // Clone out of the map before returning: no guard outlives this line.
            let load = self.loads.entry(id.clone()).or_default().value().clone();
            load
        };
        let new = if full {
            snapshot::build(raw, load_for)?
        } else {
            snapshot::rebuild(raw, &old, load_for)?
        };
        let diff = SnapshotDiff::between(&old, &new);
        let generation = self.stats.generation.load(Ordering::Acquire);
        if let Some(refused) = self.refusal(&old, &new, generation) {
            // The counters made for backends that never went into service.
            for id in &diff.added {
                self.forget_idle(id);
            }
            return Err(refused);
        }
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_applied_unix
            .store(now_unix, Ordering::Relaxed);
        if generation > 0 && diff.is_empty() && old.schema_version == new.schema_version {
            // Nothing changed (a touched file, a no-op transaction): keep the generation.
            return Ok(Applied { generation, diff });
        }
        let new = Arc::new(new);
        self.current.store(Arc::clone(&new));
        // Forget counters of backends no longer in the table once their
        // connections are gone (those removed now, and those removed earlier
        // while connections held them).
        let earlier = std::mem::take(draining);
        for id in earlier.into_iter().chain(diff.removed.iter().cloned()) {
            if new.backend(id.as_str()).is_none() && !self.forget_idle(&id) {
                draining.push(id);
            }
        }
        let generation = generation + 1;
        self.stats.generation.store(generation, Ordering::Release);
        Ok(Applied { generation, diff })
    }
}

#[cfg(test)]
mod tests;
