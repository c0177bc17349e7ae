//! The live GeoIP holder used on the per-connection path ([`GeoIp`]) and its
//! counters ([`GeoStats`]).
//!
//! The current database sits in an [`ArcSwapOption`], so a lookup is a
//! lock-free load plus the lookup itself, and swapping in a new database
//! never makes a lookup wait. Lookup counters are relaxed atomics spread
//! over a few cache-line-sized shards (one `fetch_add` per lookup) so busy
//! cores do not fight over a single line.

use std::cell::Cell;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::db::{is_private, DbInfo, GeoDb, Lookup};
use crate::error::GeoIpError;

/// Number of counter shards; threads are spread over them round-robin.
const SHARDS: usize = 8;

/// Per-result lookup counters of one shard, on their own cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    /// Indexed by [`result_index`].
    by_result: [AtomicU64; 5],
}

fn result_index(r: &Lookup) -> usize {
    match r {
        Lookup::Found(_) => 0,
        Lookup::NotFound => 1,
        Lookup::Private => 2,
        Lookup::Error => 3,
        Lookup::NoDatabase => 4,
    }
}

fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Relaxed) % SHARDS;
            i.set(v);
        }
        v
    })
}

/// A snapshot of a [`GeoIp`]'s counters, for the metrics endpoint. All
/// counts are totals since the holder was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GeoStats {
    /// Lookups that found a record.
    pub found: u64,
    /// Lookups of routable addresses the database has no record for.
    pub not_found: u64,
    /// Lookups of non-routable addresses (answered without the database).
    pub private: u64,
    /// Lookups whose record could not be decoded.
    pub error: u64,
    /// Lookups made while no database was loaded.
    pub no_database: u64,
    /// Reloads that installed a new database ([`GeoIp::reload_from`], and so
    /// the background reloader). [`GeoIp::replace`] is not counted here.
    pub reloads_ok: u64,
    /// Reloads that were rejected (missing, unreadable, corrupt or
    /// unsuitable file); the previous database stayed in place.
    pub reloads_failed: u64,
    /// `build_epoch` of the database being served (seconds since the Unix
    /// epoch), or 0 when none is loaded.
    pub build_epoch: u64,
    /// How many databases have been installed so far (by
    /// [`GeoIp::with_db`], [`GeoIp::replace`] or a successful reload);
    /// increases by one with every swap, so tests and operators can tell
    /// that a new database is live.
    pub generation: u64,
}

impl GeoStats {
    /// Total lookups, whatever their result.
    pub fn lookups(&self) -> u64 {
        self.found + self.not_found + self.private + self.error + self.no_database
    }
}

/// What a successful [`GeoIp::reload_from`] installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// The generation number of the newly installed database.
    pub generation: u64,
    /// Metadata of the newly installed database.
    pub info: DbInfo,
    /// `build_epoch` of the database it replaced, if there was one.
    pub previous_build_epoch: Option<u64>,
    /// How long reading and checking the file took (monotonic clock).
    pub load_time: Duration,
}

/// The live, swappable GeoIP database with lookup counters. Share it as an
/// `Arc<GeoIp>`; every method takes `&self`.
pub struct GeoIp {
    db: ArcSwapOption<GeoDb>,
    shards: [Shard; SHARDS],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    generation: AtomicU64,
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp")
            .field("db", &self.current().map(|d| d.info().clone()))
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for GeoIp {
    fn default() -> Self {
        Self::empty()
    }
}

impl GeoIp {
    /// A holder with no database: lookups answer [`Lookup::NoDatabase`]
    /// (or [`Lookup::Private`]) until one is installed.
    pub fn empty() -> Self {
        GeoIp {
            db: ArcSwapOption::empty(),
            shards: Default::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// A holder serving `db` (generation 1).
    pub fn with_db(db: GeoDb) -> Self {
        let g = Self::empty();
        g.replace(db);
        g
    }

    /// Looks `ip` up in the current database and counts the result.
    /// Non-routable addresses answer [`Lookup::Private`] even when no
    /// database is loaded. Lock-free, allocation-free, never waits for a
    /// reload.
    pub fn lookup(&self, ip: IpAddr) -> Lookup {
        let result = if is_private(ip) {
            Lookup::Private
        } else {
            match &*self.db.load() {
                Some(db) => db.lookup(ip),
                None => Lookup::NoDatabase,
            }
        };
        self.shards[shard_index()].by_result[result_index(&result)].fetch_add(1, Relaxed);
        result
    }

    /// The database being served, if any. Holding the `Arc` keeps that
    /// database alive even after a reload replaces it.
    pub fn current(&self) -> Option<Arc<GeoDb>> {
        self.db.load_full()
    }

    /// Installs `db` at once and returns its generation number.
    pub fn replace(&self, db: GeoDb) -> u64 {
        self.install(db).0
    }

    /// Installs `db`; returns its generation and the previous database.
    fn install(&self, db: GeoDb) -> (u64, Option<Arc<GeoDb>>) {
        let previous = self.db.swap(Some(Arc::new(db)));
        (self.generation.fetch_add(1, Relaxed) + 1, previous)
    }

    /// Reads and checks the file at `path` (see [`GeoDb::open`]) and, if it
    /// is good, installs it. On error the current database stays in place
    /// and the failed-reload counter rises. Reading happens before any swap
    /// and without any lock held. Measures the load time with the monotonic
    /// clock (not the wall clock).
    #[allow(clippy::disallowed_methods)] // reload adapter: times the load on the monotonic clock
    pub fn reload_from(&self, path: impl AsRef<Path>) -> Result<ReloadOutcome, GeoIpError> {
        let started = Instant::now();
        match GeoDb::open(path) {
            Ok(db) => {
                let load_time = started.elapsed();
                let info = db.info().clone();
                let (generation, previous) = self.install(db);
                self.reloads_ok.fetch_add(1, Relaxed);
                Ok(ReloadOutcome {
                    generation,
                    info,
                    previous_build_epoch: previous.map(|p| p.info().build_epoch),
                    load_time,
                })
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// A snapshot of the counters. Each counter is read on its own, so a
    /// snapshot taken during heavy traffic is not a single instant.
    pub fn stats(&self) -> GeoStats {
        let mut by_result = [0u64; 5];
        for shard in &self.shards {
            for (total, c) in by_result.iter_mut().zip(&shard.by_result) {
                *total += c.load(Relaxed);
            }
        }
        GeoStats {
            found: by_result[0],
            not_found: by_result[1],
            private: by_result[2],
            error: by_result[3],
            no_database: by_result[4],
            reloads_ok: self.reloads_ok.load(Relaxed),
            reloads_failed: self.reloads_failed.load(Relaxed),
            build_epoch: self.db.load().as_ref().map_or(0, |d| d.info().build_epoch),
            generation: self.generation.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_holder_answers_no_database_and_counts() {
        let g = GeoIp::empty();
        assert_eq!(g.lookup("8.8.8.8".parse().unwrap()), Lookup::NoDatabase);
        assert_eq!(g.lookup("10.0.0.1".parse().unwrap()), Lookup::Private);
        let s = g.stats();
        assert_eq!((s.no_database, s.private, s.lookups()), (1, 1, 2));
        assert_eq!((s.generation, s.build_epoch), (0, 0));
        assert!(g.current().is_none());
    }

    #[test]
    fn replace_bumps_generation_and_counts_from_all_threads() {
        let g = Arc::new(GeoIp::with_db(GeoDb::sample()));
        assert_eq!(g.stats().generation, 1);
        assert_eq!(g.replace(GeoDb::sample()), 2);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        g.lookup("9.9.9.9".parse().unwrap());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = g.stats();
        assert_eq!(s.not_found, 4000);
        assert_eq!(s.build_epoch, g.current().unwrap().info().build_epoch);
    }

    #[test]
    fn failed_reload_keeps_database() {
        let g = GeoIp::with_db(GeoDb::sample());
        let err = g
            .reload_from("/nonexistent/geoedge/nothing.mmdb")
            .unwrap_err();
        assert!(matches!(err, GeoIpError::Io { .. }), "{err}");
        let s = g.stats();
        assert_eq!((s.reloads_failed, s.reloads_ok, s.generation), (1, 0, 1));
        assert!(g.current().is_some());
    }
}
