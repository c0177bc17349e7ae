//! Per-client connection limits for an L4 proxy: a cap on the connections a
//! client holds open at once and a limit on the rate at which it opens new
//! ones. The crate does no IO and reads no clock: [`ClientTable::admit`]
//! takes `now`, and the caller decides what a client is (usually its
//! address masked to a prefix with [`mask`]).
//!
//! # The table
//!
//! A [`ClientTable`] is shared by every worker thread (behind an [`Arc`]). It
//! is split into shards (64 by default, a power of two), each a
//! [`parking_lot::Mutex`] around an LRU map (`hashlink::LinkedHashMap`); a
//! key's shard is chosen from its hash. There is no lock every worker
//! shares: two workers meet only when their clients hash to the same shard,
//! and a shard's lock is held only inside [`ClientTable::admit`] and a
//! [`ClientGuard`]'s drop, for one map lookup and a few arithmetic
//! operations, never across anything else. The key is hashed once per
//! admission and once per drop.
//!
//! The table is bounded: each shard holds at most `ceil(capacity / shards)`
//! clients ([`ClientTable::capacity`] is that times the shard count). When a
//! new client arrives at a full shard, one entry is evicted (and counted in
//! [`ClientTable::evictions`]): the least recently used one that has no open
//! connection among the [`EVICTION_SCAN`] least recently used, or the least
//! recently used one outright when all of those have open connections.
//! "Used" means an admission attempt, refused or not (a client that keeps
//! being refused stays in the table, so it cannot reset its state by
//! hammering); a connection closing is not a use.
//!
//! An evicted client is forgotten: if it had open connections, they still
//! close cleanly (each entry carries a generation number its guards
//! remember, and a guard whose entry is gone does nothing, so it can never
//! lower the count of a later entry for the same key), but they no longer
//! count, so the client may open up to its cap again. That happens only
//! when the table is too small for the clients connected at once: size
//! `capacity` above that number. An evicted client's rate history is
//! forgotten too (it starts again from nothing).
//!
//! An entry exists while it matters: it is created by a client's first
//! admitted connection (a refused attempt by an unknown client leaves
//! nothing behind), and removed by the drop of its last open connection's
//! guard when it carries no rate state (that is, its last admission was
//! under limits without a rate). An entry with rate state stays until it
//! is evicted, since its history decides the client's next admissions.
//! Memory per entry, for an [`IpAddr`] key: an 88-byte allocation (the key
//! and entry, 72 bytes, and two list pointers) plus an 8-byte pointer and a
//! control byte per bucket of the shard's hash table; `tests/memory.rs`
//! measures 100 bytes per entry in a full table of 100,032 clients (without
//! the allocator's own overhead), and 112 once millions of distinct clients
//! have passed through (the churn makes each shard's hash table double
//! once, after which it rehashes in place and grows no more).
//!
//! `examples/timing.rs` (`cargo run --release --example timing`) measures the cost of an admission
//! and its guard's drop.
//!
//! # The limits
//!
//! [`Limits`] come with every call (they come from a hot-reloaded table),
//! so a client's limits may differ between calls; the entry's state stays
//! consistent whatever they are:
//!
//! - **Concurrency** (`max_connections`): the entry counts its client's
//!   open connections (admitted and whose [`ClientGuard`] is not dropped
//!   yet), whatever the limits; an admission is refused with
//!   [`Refused::Connections`] when that count is at least
//!   `max_connections`. It is checked before the rate, and a refusal counts
//!   toward nothing.
//! - **Rate** ([`Rate`]: `count` connections per `period`): a
//!   sliding-window counter, the approximation Cloudflare and nginx-style
//!   limiters describe. Time is cut into fixed windows of length `period`,
//!   starting at the client's first admission under a rate; the entry
//!   counts the admissions of the current window (`c`) and of the previous
//!   one (`p`). At an instant `e` into the current window, the client's
//!   sliding count is `p * (period - e) / period + c` (the previous window
//!   weighted by the part of it still inside a window of length `period`
//!   ending now), and the admission is refused with [`Refused::Rate`] when
//!   that is at least `count`. The comparison is exact (integer arithmetic
//!   in nanoseconds, no floating point). Only admitted connections count.
//!
//!   What that means, for a client whose rate does not change:
//!
//!   - From no history, a burst of `count` connections is admitted at one
//!     instant; the next one is refused.
//!   - After that the allowance refills gradually: once the burst's window
//!     is the previous one, each admission needs the weighted count to have
//!     decayed by one, about one connection per `period / count`. For
//!     example with `10/60s` and a burst of 10 at `t0` (the window's first
//!     instant): refused until `t0 + 60s` inclusive, admitted at
//!     `t0 + 60s + 1ns`, then the next at `t0 + 66s + 1ns`, and so on.
//!   - **A client refused at `t` is admitted at every instant after
//!     `t + period`** (if it was not admitted in between), often earlier. At
//!     `t + period` itself it is admitted too, except when `t` was the first
//!     instant of its window and `count` connections had been admitted in
//!     that window by then (as at `t0` above). The proof: at any `t' >
//!     t + period` the window that held `t` is either the previous one, with
//!     `p ≤ count` (a window never admits more than `count`), `c = 0`
//!     (nothing admitted since `t`) and `e' > e ≥ 0`, so the sliding count
//!     `p * (period - e') / period` is below `count`; or older, so the
//!     count is 0.
//!
//!   When a client's limits have no rate, its rate state is dropped (if a
//!   rate comes back later, the client starts from nothing). When the
//!   rate's `count` changes, the counts stay and are compared with the new
//!   `count`. When its `period` changes, the windows restart at that call:
//!   the new current window starts at `now`, the previous window's count
//!   becomes the client's sliding count under the old period (rounded up),
//!   and the current count is 0. So a client keeps its recent use, which
//!   then decays over the new period, and does not get a fresh burst from a
//!   reload. A rate whose `period` is zero (which [`Rate::from_str`] never
//!   gives) is no rate limit.
//! - **No limits** ([`Limits::is_none`]): the caller is expected not to call
//!   [`ClientTable::admit`] at all then; if it does, the admission succeeds
//!   at once without hashing, locking or touching the table, and the guard
//!   is inert (the connection is not counted, so it does not count against
//!   a cap that a later reload adds).
//!
//! A `now` earlier than the start of an entry's current window (workers
//! read their clocks at slightly different moments) counts as that start.

#![forbid(unsafe_code)]

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use hashlink::linked_hash_map::RawEntryMut;
use hashlink::LinkedHashMap;
use parking_lot::Mutex;

/// The number of shards [`ClientTable::new`] makes.
pub const DEFAULT_SHARDS: usize = 64;

/// The most shards [`ClientTable::with_shards`] makes.
pub const MAX_SHARDS: usize = 1024;

/// How many of a full shard's least recently used entries are looked at for
/// one without open connections before the least recently used one is
/// evicted anyway.
pub const EVICTION_SCAN: usize = 4;

/// The limits that apply to one client; `None` is no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// The most connections the client may hold open at once.
    pub max_connections: Option<u32>,
    /// The most new connections the client may open per period.
    pub rate: Option<Rate>,
}

impl Limits {
    /// No limit of either kind.
    pub const NONE: Limits = Limits {
        max_connections: None,
        rate: None,
    };

    /// Whether neither kind of limit is set (then there is no need to call
    /// [`ClientTable::admit`]).
    pub fn is_none(&self) -> bool {
        self.max_connections.is_none() && self.rate.is_none()
    }

    /// The rate to enforce, as `(count, period in nanoseconds)`: none for a
    /// zero period, a period beyond `u64::MAX` nanoseconds saturated.
    fn effective_rate(&self) -> Option<(u32, u64)> {
        let rate = self.rate?;
        let period = u64::try_from(rate.period.as_nanos()).unwrap_or(u64::MAX);
        (period > 0).then_some((rate.count, period))
    }
}

/// A connection rate: `count` new connections per `period`. Written
/// `COUNT/PERIOD`, e.g. `10/60s`, `100/1m`, `5/1s`, `20/500ms` (the period
/// is a [`humantime`] duration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// The new connections allowed per `period` (at least 1 when parsed).
    pub count: u32,
    /// The length of a window (longer than zero when parsed).
    pub period: Duration,
}

impl Rate {
    /// `count` per `period`, or `None` when either is zero.
    pub fn new(count: u32, period: Duration) -> Option<Self> {
        (count > 0 && !period.is_zero()).then_some(Self { count, period })
    }
}

/// Why a [`Rate`] did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseRateError {
    /// No `/` between the count and the period.
    #[error("rate {0:?} is not COUNT/PERIOD (for example 10/60s or 20/500ms)")]
    Format(String),
    /// The count is not a whole number that fits in 32 bits.
    #[error("rate {input:?}: count {count:?} is not a whole number from 1 to 4294967295")]
    Count {
        /// The whole rate as given.
        input: String,
        /// The part before the `/`.
        count: String,
    },
    /// The count is zero.
    #[error("rate {0:?}: the count must be at least 1")]
    ZeroCount(String),
    /// The period is not a duration.
    #[error(
        "rate {input:?}: period {period:?} is not a duration such as 60s, 1m or 500ms ({reason})"
    )]
    Period {
        /// The whole rate as given.
        input: String,
        /// The part after the `/`.
        period: String,
        /// What the duration parser said.
        reason: String,
    },
    /// The period is zero.
    #[error("rate {0:?}: the period must be longer than zero")]
    ZeroPeriod(String),
}

impl FromStr for Rate {
    type Err = ParseRateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, period) = s
            .split_once('/')
            .ok_or_else(|| ParseRateError::Format(s.to_owned()))?;
        let (count, period) = (count.trim(), period.trim());
        let count_value = if count.bytes().all(|b| b.is_ascii_digit()) {
            count.parse::<u32>().ok()
        } else {
            None
        };
        let count = count_value.ok_or_else(|| ParseRateError::Count {
            input: s.to_owned(),
            count: count.to_owned(),
        })?;
        if count == 0 {
            return Err(ParseRateError::ZeroCount(s.to_owned()));
        }
        let period = humantime::parse_duration(period).map_err(|e| ParseRateError::Period {
            input: s.to_owned(),
            period: period.to_owned(),
            reason: e.to_string(),
        })?;
        if period.is_zero() {
            return Err(ParseRateError::ZeroPeriod(s.to_owned()));
        }
        Ok(Self { count, period })
    }
}

/// `COUNT/PERIOD` with the period in the largest of seconds, milliseconds,
/// microseconds or nanoseconds that writes it whole (`10/60s`, `20/500ms`),
/// which [`Rate::from_str`] reads back to the same rate.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = self.period;
        let nanos = p.subsec_nanos();
        if nanos == 0 {
            write!(f, "{}/{}s", self.count, p.as_secs())
        } else if nanos.is_multiple_of(1_000_000) {
            write!(f, "{}/{}ms", self.count, p.as_millis())
        } else if nanos.is_multiple_of(1_000) {
            write!(f, "{}/{}us", self.count, p.as_micros())
        } else {
            write!(f, "{}/{}ns", self.count, p.as_nanos())
        }
    }
}

/// Which limit refused an admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The client already holds `max_connections` open connections.
    #[error("the client already has its maximum number of open connections")]
    Connections,
    /// The client has opened its `rate` of connections.
    #[error("the client has opened new connections at its maximum rate")]
    Rate,
}

impl Refused {
    /// A label for metrics and logs: `client_limit` or `client_rate`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refused::Connections => "client_limit",
            Refused::Rate => "client_rate",
        }
    }
}

/// Masks an address to its first `v4_prefix` bits (IPv4) or `v6_prefix`
/// bits (IPv6), so that one key stands for a whole network. An
/// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as IPv4 and comes
/// back as an IPv4 address, so both forms of one client give one key.
/// Prefixes beyond an address's length keep it whole.
pub fn mask(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> IpAddr {
    let v4 = match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    };
    if let Some(a) = v4 {
        let keep = u32::MAX
            .checked_shl(32 - u32::from(v4_prefix.min(32)))
            .unwrap_or(0);
        return IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep));
    }
    let IpAddr::V6(a) = ip else {
        unreachable!("an IPv4 address was handled above")
    };
    let keep = u128::MAX
        .checked_shl(128 - u32::from(v6_prefix.min(128)))
        .unwrap_or(0);
    IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
}

/// A client's rate state: the counts of two fixed windows.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// The first instant of the current window.
    start: Instant,
    /// The window length, in nanoseconds (never 0).
    period: u64,
    /// Admissions in the previous window.
    prev: u32,
    /// Admissions in the current window.
    cur: u32,
}

impl Window {
    fn new(now: Instant, period: u64) -> Self {
        Self {
            start: now,
            period,
            prev: 0,
            cur: 0,
        }
    }

    /// Moves the current window to the one holding `now` and says how far
    /// into it `now` is, in nanoseconds (less than `period`). A `now`
    /// before the window's start counts as its start.
    fn roll(&mut self, now: Instant) -> u64 {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX);
        if elapsed < self.period {
            return elapsed;
        }
        let windows = elapsed / self.period;
        self.prev = if windows == 1 { self.cur } else { 0 };
        self.cur = 0;
        let advance = windows * self.period;
        self.start = self
            .start
            .checked_add(Duration::from_nanos(advance))
            .unwrap_or(now);
        elapsed - advance
    }

    /// The sliding count at `e` nanoseconds into the current window, times
    /// `period`.
    fn scaled(&self, e: u64) -> u128 {
        u128::from(self.prev) * u128::from(self.period - e)
            + u128::from(self.cur) * u128::from(self.period)
    }

    /// Restarts the windows at `now` with a new period, carrying the sliding
    /// count under the old one (rounded up) as the previous window's count.
    fn repoint(&mut self, now: Instant, period: u64) {
        let e = self.roll(now);
        let carried = self.scaled(e).div_ceil(u128::from(self.period));
        *self = Window {
            start: now,
            period,
            prev: u32::try_from(carried).unwrap_or(u32::MAX),
            cur: 0,
        };
    }
}

/// One client's state.
#[derive(Debug, Clone)]
struct Entry {
    /// Unique within the shard; the guards of this entry carry it.
    generation: u64,
    /// Admitted connections whose guard is not dropped yet.
    open: u32,
    /// Present while the client's limits have a rate.
    window: Option<Window>,
}

impl Entry {
    /// Counts one admission under `limits` at `now`, or says which limit
    /// refuses it (then counting nothing).
    fn admit(&mut self, limits: &Limits, now: Instant) -> Result<(), Refused> {
        if limits.max_connections.is_some_and(|max| self.open >= max) {
            return Err(Refused::Connections);
        }
        match limits.effective_rate() {
            None => self.window = None,
            Some((count, period)) => {
                let window = self.window.get_or_insert_with(|| Window::new(now, period));
                if window.period != period {
                    window.repoint(now, period);
                }
                let e = window.roll(now);
                if window.scaled(e) >= u128::from(count) * u128::from(period) {
                    return Err(Refused::Rate);
                }
                window.cur = window.cur.saturating_add(1);
            }
        }
        self.open = self.open.saturating_add(1);
        Ok(())
    }
}

/// One shard's clients, least recently used first.
struct Shard<K> {
    map: LinkedHashMap<K, Entry, RandomState>,
    /// The last generation given to an entry.
    generation: u64,
    evictions: u64,
}

impl<K: Hash + Eq + Clone> Shard<K> {
    /// Admits one connection of `key` (whose hash is `hash`), giving the
    /// generation of its entry.
    fn admit(
        &mut self,
        hash: u64,
        key: &K,
        limits: &Limits,
        now: Instant,
        capacity: usize,
    ) -> Result<u64, Refused> {
        let full = self.map.len() >= capacity;
        let vacant = match self.map.raw_entry_mut().from_key_hashed_nocheck(hash, key) {
            RawEntryMut::Occupied(mut found) => {
                found.to_back();
                let entry = found.get_mut();
                entry.admit(limits, now)?;
                return Ok(entry.generation);
            }
            RawEntryMut::Vacant(vacant) => vacant,
        };
        let mut entry = Entry {
            generation: self.generation + 1,
            open: 0,
            window: None,
        };
        entry.admit(limits, now)?;
        self.generation = entry.generation;
        if !full {
            vacant.insert_hashed_nocheck(hash, key.clone(), entry);
            return Ok(self.generation);
        }
        self.evict();
        if let RawEntryMut::Vacant(vacant) =
            self.map.raw_entry_mut().from_key_hashed_nocheck(hash, key)
        {
            vacant.insert_hashed_nocheck(hash, key.clone(), entry);
        }
        Ok(self.generation)
    }

    /// Removes one entry to make room (see the crate docs for which).
    fn evict(&mut self) {
        let idle = self
            .map
            .iter()
            .take(EVICTION_SCAN)
            .position(|(_, entry)| entry.open == 0);
        match idle {
            Some(0) | None => {
                self.map.pop_front();
            }
            Some(i) => {
                if let Some(key) = self.map.keys().nth(i).cloned() {
                    self.map.remove(&key);
                }
            }
        }
        self.evictions += 1;
    }
}

impl<K: Hash + Eq> Shard<K> {
    /// Ends one connection of the entry of `key` if it is still the one of
    /// `generation`.
    fn release(&mut self, hash: u64, key: &K, generation: u64) {
        if let RawEntryMut::Occupied(mut found) =
            self.map.raw_entry_mut().from_key_hashed_nocheck(hash, key)
        {
            let entry = found.get_mut();
            if entry.generation != generation {
                return;
            }
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && entry.window.is_none() {
                found.remove();
            }
        }
    }
}

/// A shard with the hasher its keys are hashed with, on cache lines of its
/// own.
#[repr(align(128))]
struct ShardCell<K> {
    hasher: RandomState,
    shard: Mutex<Shard<K>>,
}

/// Per-client connection state for every worker: see the crate docs.
pub struct ClientTable<K> {
    shards: Box<[Arc<ShardCell<K>>]>,
    hasher: RandomState,
    per_shard: usize,
}

impl<K: Hash + Eq + Clone + Send + Sync> ClientTable<K> {
    /// A table of at most `capacity` clients (at least 1; rounded up to a
    /// multiple of the shard count) in [`DEFAULT_SHARDS`] shards.
    pub fn new(capacity: usize) -> Self {
        Self::with_shards(capacity, DEFAULT_SHARDS)
    }

    /// A table of at most `capacity` clients (at least 1; rounded up to a
    /// multiple of the shard count) in `shards` shards (rounded up to a
    /// power of two, at most [`MAX_SHARDS`]).
    pub fn with_shards(capacity: usize, shards: usize) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        let per_shard = capacity.max(1).div_ceil(shards);
        let hasher = RandomState::default();
        let shards = (0..shards)
            .map(|_| {
                Arc::new(ShardCell {
                    hasher: hasher.clone(),
                    shard: Mutex::new(Shard {
                        map: LinkedHashMap::with_hasher(hasher.clone()),
                        generation: 0,
                        evictions: 0,
                    }),
                })
            })
            .collect();
        Self {
            shards,
            hasher,
            per_shard,
        }
    }

    /// The shard of a key whose hash is `hash`: bits the shard's hash table
    /// does not use itself (it takes the low bits for the bucket and the top
    /// seven for the control byte).
    fn shard_of(&self, hash: u64) -> &Arc<ShardCell<K>> {
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    /// Admits one new connection of `key` under `limits` at `now`, or says
    /// which limit refuses it. A refused attempt counts toward nothing.
    /// The connection counts as open until the guard is dropped.
    ///
    /// With [`Limits::is_none`] this succeeds at once without touching the
    /// table and gives an inert guard.
    ///
    /// It takes the table's [`Arc`] so that a guard may reach the table
    /// when it is dropped; a guard keeps only its own shard alive.
    pub fn admit(
        self: &Arc<Self>,
        key: K,
        limits: Limits,
        now: Instant,
    ) -> Result<ClientGuard<K>, Refused> {
        if limits.is_none() {
            return Ok(ClientGuard {
                shard: None,
                generation: 0,
                key,
            });
        }
        let hash = self.hasher.hash_one(&key);
        let cell = self.shard_of(hash);
        let generation = cell
            .shard
            .lock()
            .admit(hash, &key, &limits, now, self.per_shard)?;
        Ok(ClientGuard {
            shard: Some(Arc::clone(cell)),
            generation,
            key,
        })
    }

    /// The open connections the table counts for `key` (0 for a client it
    /// does not hold). Does not count as a use of the entry.
    pub fn open_connections(&self, key: &K) -> u32 {
        let hash = self.hasher.hash_one(key);
        let shard = self.shard_of(hash).shard.lock();
        shard
            .map
            .raw_entry()
            .from_key_hashed_nocheck(hash, key)
            .map_or(0, |(_, entry)| entry.open)
    }

    /// The clients held now (locks every shard in turn: for metrics, not
    /// for the connection path).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|c| c.shard.lock().map.len()).sum()
    }

    /// Whether the table holds no client (locks every shard in turn).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most clients the table holds at once: the capacity asked for,
    /// rounded up to a multiple of the shard count.
    pub fn capacity(&self) -> usize {
        self.per_shard * self.shards.len()
    }

    /// The number of shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The entries evicted to make room so far (locks every shard in turn).
    pub fn evictions(&self) -> u64 {
        self.shards.iter().map(|c| c.shard.lock().evictions).sum()
    }
}

impl<K> fmt::Debug for ClientTable<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTable")
            .field("shards", &self.shards.len())
            .field("per_shard", &self.per_shard)
            .finish_non_exhaustive()
    }
}

/// An admitted connection: dropping it ends the connection for its
/// client's count of open connections (taking its shard's lock once).
///
/// It holds its shard (not the whole table, whose other shards may go when
/// the table is dropped), its entry's generation and the key: for an
/// [`IpAddr`] key it is 40 bytes (a test asserts at most 40).
pub struct ClientGuard<K: Hash + Eq> {
    /// `None` for the inert guard of an admission without limits.
    shard: Option<Arc<ShardCell<K>>>,
    generation: u64,
    key: K,
}

impl<K: Hash + Eq> ClientGuard<K> {
    /// The client this connection belongs to.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Whether the connection is counted (false for an admission without
    /// limits).
    pub fn is_counted(&self) -> bool {
        self.shard.is_some()
    }
}

impl<K: Hash + Eq> Drop for ClientGuard<K> {
    fn drop(&mut self) {
        if let Some(cell) = &self.shard {
            let hash = cell.hasher.hash_one(&self.key);
            cell.shard.lock().release(hash, &self.key, self.generation);
        }
    }
}

impl<K: Hash + Eq + fmt::Debug> fmt::Debug for ClientGuard<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientGuard")
            .field("key", &self.key)
            .field("counted", &self.is_counted())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
