//! Counters that the data path adds to without a locked instruction.
//!
//! A thread's first add gives it a process-wide index. Each [`Sharded`]
//! counter set keeps [`OWNED`] shards that threads with those indices own
//! alone: they add with a plain load and store, which is exact because no
//! other thread ever writes that shard. Threads that came later share one
//! more shard and add atomically. Readers (a scrape) sum all shards.
//!
//! With one worker thread per core serving connections (`--workers`),
//! every connection's counting lands on an owned shard. Sans-IO: no clock,
//! no allocation after construction.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards owned by one thread each.
pub const OWNED: usize = 8;

static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// This thread's index, given on first use.
fn thread_index() -> usize {
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            v = NEXT_INDEX.fetch_add(1, Ordering::Relaxed);
            i.set(v);
        }
        v
    })
}

/// `K` counters on a cache line (or more) of their own.
#[derive(Debug)]
#[repr(align(64))]
pub struct Shard<const K: usize>([AtomicU64; K]);

impl<const K: usize> Default for Shard<K> {
    fn default() -> Self {
        Shard(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// `K` counters, sharded by thread.
#[derive(Debug)]
pub struct Sharded<const K: usize> {
    owned: [Shard<K>; OWNED],
    shared: Shard<K>,
}

impl<const K: usize> Default for Sharded<K> {
    fn default() -> Self {
        Self {
            owned: std::array::from_fn(|_| Shard::default()),
            shared: Shard::default(),
        }
    }
}

impl<const K: usize> Sharded<K> {
    /// Adds `v` to counter `k` (`k < K`).
    #[inline]
    pub fn add(&self, k: usize, v: u64) {
        self.local().add(k, v);
    }

    /// This thread's shard, for several adds at the cost of one look-up of
    /// the thread's index.
    #[inline]
    pub fn local(&self) -> Local<'_, K> {
        match self.owned.get(thread_index()) {
            Some(shard) => Local::Owned(shard),
            None => Local::Shared(&self.shared),
        }
    }

    /// Counter `k`, summed over the shards.
    pub fn get(&self, k: usize) -> u64 {
        self.owned
            .iter()
            .chain(std::iter::once(&self.shared))
            .map(|s| s.0[k].load(Ordering::Relaxed))
            .fold(0u64, u64::wrapping_add)
    }
}

/// The shard the current thread adds to (see [`Sharded::local`]).
#[derive(Debug, Clone, Copy)]
pub enum Local<'a, const K: usize> {
    /// A shard only this thread writes.
    Owned(&'a Shard<K>),
    /// The shard threads beyond the owned ones share.
    Shared(&'a Shard<K>),
}

impl<const K: usize> Local<'_, K> {
    /// Adds `v` to counter `k` (`k < K`).
    #[inline]
    pub fn add(self, k: usize, v: u64) {
        match self {
            Local::Owned(shard) => {
                // This thread alone writes this shard: no locked add needed.
                let c = &shard.0[k];
                c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
            }
            Local::Shared(shard) => {
                shard.0[k].fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Many threads (more than there are owned shards) adding at once lose
    /// nothing.
    #[test]
    fn concurrent_adds_from_more_threads_than_shards_are_exact() {
        let c = Arc::new(Sharded::<3>::default());
        let threads: Vec<_> = (0..(OWNED + 6))
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        c.add(t % 3, 1);
                        c.add(2, 2);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = (OWNED + 6) as u64;
        let per_k: Vec<u64> = (0..n).map(|t| t % 3).collect();
        let ones = |k: u64| per_k.iter().filter(|&&x| x == k).count() as u64 * 20_000;
        assert_eq!(c.get(0), ones(0));
        assert_eq!(c.get(1), ones(1));
        assert_eq!(c.get(2), ones(2) + n * 40_000);
    }
}
