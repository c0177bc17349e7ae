//! The live routing table: the current [`Snapshot`] behind an atomic swap,
//! the per-backend connection counters in a [`DashMap`] that outlives
//! snapshots, and the reload counters.
//!
//! Decisions load the snapshot with one atomic read and never wait on a
//! reload; a reload validates a whole new table, carries the counters of
//! backends that stay, and swaps. No lock or map guard is held across
//! anything that blocks.

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
    /// on the decision path).
    reload: Mutex<()>,
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
            reload: Mutex::new(()),
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

    /// [`Self::forget_idle`] for every backend but those in `keep`.
    fn forget_idle_except(&self, keep: &std::collections::HashSet<BackendId>) {
        self.loads.retain(|id, load| {
            let forget = !keep.contains(id) && load.active() == 0;
            if forget {
                load.retire(&self.retired);
            }
            !forget
        });
    }

    /// Drops the counters of a backend no longer in the table, if no
    /// connection holds it, keeping its successful connects in the total.
    /// Called with the reload lock held.
    fn forget_idle(&self, id: &BackendId) {
        if let Some((_, load)) = self.loads.remove_if(id, |_, l| l.active() == 0) {
            load.retire(&self.retired);
        }
    }

    /// Validates `raw` whole and, if valid, swaps it in. An invalid table, or
    /// one that would replace live backends with none, is refused and the
    /// table in service is kept. The refusal is counted; logging is the
    /// caller's (it knows whether this failure is new).
    pub fn apply(&self, raw: &RawTable, now_unix: u64) -> Result<Applied, Rejected> {
        let _serial = self.reload.lock();
        let before = self.generation();
        let result = self.apply_locked(raw, now_unix);
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
        let _serial = self.reload.lock();
        let before = self.generation();
        let result = self.apply_locked(raw, now_unix);
        if let Ok(applied) = &result {
            self.publish(before, applied);
        }
        result
    }

    fn apply_locked(&self, raw: &RawTable, now_unix: u64) -> Result<Applied, Rejected> {
        let old = self.current.load_full();
        // `build` asks for counters only once the whole table is valid.
        let new = snapshot::build(raw, |id| {
            // Clone out of the map before returning: no guard outlives this line.
            let load = self.loads.entry(id.clone()).or_default().value().clone();
            load
        })?;
        if let Some(own) = self.own_listener.load().as_deref() {
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
                for b in &new.backends {
                    if old.backend(b.id.as_str()).is_none() {
                        self.forget_idle(&b.id);
                    }
                }
                return Err(Rejected::Invalid(InvalidTable { errors }));
            }
        }
        let generation = self.stats.generation.load(Ordering::Acquire);
        if generation > 0 && old.live_len() > 0 && new.live_len() == 0 {
            for b in &new.backends {
                if old.backend(b.id.as_str()).is_none() {
                    self.forget_idle(&b.id);
                }
            }
            return Err(Rejected::Emptied {
                current: old.live_len(),
            });
        }
        let diff = SnapshotDiff::between(&old, &new);
        self.stats.applied.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_applied_unix
            .store(now_unix, Ordering::Relaxed);
        if generation > 0 && diff.is_empty() && old.schema_version == new.schema_version {
            // Nothing changed (a touched file, a no-op transaction): keep the generation.
            return Ok(Applied { generation, diff });
        }
        let new_ids: std::collections::HashSet<BackendId> =
            new.backends.iter().map(|b| b.id.clone()).collect();
        self.current.store(Arc::new(new));
        // Forget counters of backends no longer in the table once their
        // connections are gone (those removed now, and those removed earlier
        // while connections held them).
        self.forget_idle_except(&new_ids);
        let generation = generation + 1;
        self.stats.generation.store(generation, Ordering::Release);
        Ok(Applied { generation, diff })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testutil::{backend, table};

    fn rows(ids: &[&str]) -> RawTable {
        table(
            ids.iter()
                .map(|id| backend(id, "eu", Some("DE"), 10, 20))
                .collect(),
        )
    }

    fn connect(t: &RoutingTable, id: &str, n: u64) {
        let s = t.snapshot();
        let b = s.backend(id).unwrap();
        for _ in 0..n {
            b.load.connect_stats().observe(Duration::from_micros(200));
        }
    }

    #[test]
    fn a_backend_at_one_of_the_edges_own_listeners_is_refused() {
        let t = RoutingTable::from_raw(&rows(&["a"]), 0).unwrap();
        let own: SocketAddr = "10.0.0.9:8443".parse().unwrap();
        t.refuse_backends_at(OwnListener(Box::new(move |addr| addr == own)));
        let mut looping = rows(&["a", "b"]);
        looping.backends[1].wg_ip = "10.0.0.9".into();
        looping.backends[1].port = 8443.into();
        let err = t.apply(&looping, 0).unwrap_err();
        assert_eq!(err.reason(), RejectReason::Invalid);
        let [e] = err.row_errors() else {
            panic!("{err:?}")
        };
        assert_eq!((e.table, e.row.as_str()), ("backends", "b"));
        assert!(e.message.contains("own listeners"), "{e}");
        // The table in service is kept, and `b` left no counters behind.
        assert!(t.snapshot().backend("b").is_none());
        assert!(t.loads.get("b").is_none());
        assert_eq!(
            t.stats().rejected[RejectReason::Invalid as usize].load(Ordering::Relaxed),
            1
        );
        // The same backend on another port is fine.
        looping.backends[1].port = 8444.into();
        t.apply(&looping, 0).unwrap();
        assert!(t.snapshot().backend("b").is_some());
    }

    #[test]
    fn successful_connects_survive_the_removal_of_their_backend() {
        let t = RoutingTable::from_raw(&rows(&["a", "b"]), 0).unwrap();
        connect(&t, "a", 3);
        connect(&t, "b", 4);
        assert_eq!(t.successful_connects(), 7);

        // `a` is removed while idle: forgotten at once, its count kept.
        t.apply(&rows(&["b"]), 0).unwrap();
        assert!(t.loads.get("a").is_none());
        assert_eq!(t.successful_connects(), 7);

        // `b` is removed while a connection holds it: kept until a later
        // reload finds it idle, counting on meanwhile.
        let held = t.snapshot().backend("b").unwrap().load.clone();
        assert!(held.try_acquire(20));
        t.apply(&rows(&["c"]), 0).unwrap();
        held.connect_stats().observe(Duration::from_micros(200));
        assert_eq!(t.successful_connects(), 8);
        held.release();

        // Re-adding `a` starts it from zero; the total goes on; `b`, idle
        // now, is forgotten.
        t.apply(&rows(&["a", "c"]), 0).unwrap();
        assert!(t.loads.get("b").is_none());
        connect(&t, "a", 1);
        assert_eq!(t.successful_connects(), 9);
    }

    #[test]
    fn a_connect_racing_the_removal_is_counted_when_the_last_reference_drops() {
        let t = RoutingTable::from_raw(&rows(&["a", "b"]), 0).unwrap();
        connect(&t, "a", 2);
        // A decision made on the old snapshot still holds `a`'s counters
        // after the reload forgot it (it had no reservation yet).
        let racing = t.snapshot().backend("a").unwrap().load.clone();
        t.apply(&rows(&["b"]), 0).unwrap();
        assert_eq!(t.successful_connects(), 2);
        racing.connect_stats().observe(Duration::from_micros(200));
        // Not visible while the straggler holds it (never counted twice)...
        assert_eq!(t.successful_connects(), 2);
        drop(racing);
        // ...and added once the last reference is gone.
        assert_eq!(t.successful_connects(), 3);
    }

    #[test]
    fn subscribers_hear_every_change_in_order_and_nothing_else() {
        let t = RoutingTable::new();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&heard);
        t.subscribe(move |a| {
            sink.lock()
                .push((a.generation, a.diff.added.clone(), a.diff.removed.clone()));
            true
        });
        // A subscriber that wants only the first change.
        let once = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&once);
        t.subscribe(move |_| {
            count.fetch_add(1, Ordering::Relaxed);
            false
        });
        t.apply(&rows(&["a"]), 0).unwrap();
        t.apply_uncounted(&rows(&["a", "b"]), 0).unwrap();
        // Nothing changed: no event.
        t.apply(&rows(&["a", "b"]), 0).unwrap();
        // Refused: no event.
        let mut bad = rows(&["a"]);
        bad.backends[0].port = "x".into();
        t.apply(&bad, 0).unwrap_err();
        t.apply(&rows(&["b"]), 0).unwrap();
        let id = |s: &str| BackendId::new(s);
        assert_eq!(
            *heard.lock(),
            [
                (1, vec![id("a")], vec![]),
                (2, vec![id("b")], vec![]),
                (3, vec![], vec![id("a")]),
            ]
        );
        assert_eq!(once.load(Ordering::Relaxed), 1);
    }
}
