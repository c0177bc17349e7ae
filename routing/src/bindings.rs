//! Sticky bindings: a client (its address masked to a prefix) keeps its
//! backend until the binding has been idle for the TTL.
//!
//! Sans-IO: every call takes `now`; nothing here reads a clock. The table is
//! bounded and compact: it is split into shards, each behind its own mutex,
//! holding 28-byte entries (app and backend as interned 4-byte ids, the
//! masked address, the last use in whole seconds since the table's first
//! call) found through a hash index of 4-byte slots ([`shard`]).
//!
//! A key's first binding is *probationary*; it is promoted to the
//! *protected* segment the first time the client is found again. A full
//! shard evicts probationary entries only, so a flood of new keys (each
//! seen once) cannot push out clients that keep coming back. Expiry
//! ([`Bindings::sweep`]) walks one shard at a time and gives memory back
//! once a shard is less than a quarter full.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::model::{AppId, BackendId};

mod names;
mod shard;

use names::Names;
use shard::{Found, Inserted, Shard};
/// Settings of the binding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingConfig {
    /// A binding idle this long is gone (default 600 s).
    pub ttl: Duration,
    /// At most this many bindings are kept (default 1,000,000); when full,
    /// bindings of clients seen only once go first.
    pub max_entries: usize,
    /// IPv4 clients are keyed by their address masked to this prefix (default 32).
    pub ipv4_prefix: u8,
    /// IPv6 clients are keyed by their address masked to this prefix
    /// (default 64: one subscriber's network).
    pub ipv6_prefix: u8,
}

impl Default for BindingConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            max_entries: 1_000_000,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

/// What a client is bound by: the app and the client's masked address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingKey {
    /// The app, interned.
    app: u32,
    /// The masked address as IPv6, big-endian words; IPv4 clients as
    /// IPv4-mapped (`::ffff:a.b.c.d`), which no masked IPv6 client can be
    /// (those are keyed as IPv4).
    addr: [u32; 4],
}

impl BindingKey {
    /// The masked client network with the prefix length it was masked to.
    fn network_masked(&self, config: &BindingConfig) -> (IpAddr, u8) {
        match self.network() {
            (ip @ IpAddr::V4(_), _) => (ip, config.ipv4_prefix.min(32)),
            (ip, _) => (ip, config.ipv6_prefix.min(128)),
        }
    }

    /// The masked client network, for display.
    pub fn network(&self) -> (IpAddr, u8) {
        let mut bytes = [0u8; 16];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(self.addr) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        let v6 = Ipv6Addr::from(bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => (IpAddr::V4(v4), 32),
            None => (IpAddr::V6(v6), 128),
        }
    }
}

/// One binding as one table hands it to another (an old process's to the
/// new one on a restart): see [`Bindings::export`] and [`Bindings::import`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedBinding {
    /// The app.
    pub app: AppId,
    /// The client's masked address.
    pub client: IpAddr,
    /// The backend the client is bound to.
    pub backend: BackendId,
    /// How long the binding had been idle when exported (whole seconds).
    pub idle: Duration,
    /// Whether the client had come back at least once (the protected
    /// segment).
    pub protected: bool,
}

/// One client's binding as [`Bindings::peek`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    /// The backend the client is bound to.
    pub backend: BackendId,
    /// How long since the binding was last used (whole seconds).
    pub idle: Duration,
    /// How long until it expires unless used again (whole seconds).
    pub expires_in: Duration,
    /// Whether the client was found again since it was bound (protected
    /// from eviction by new clients).
    pub protected: bool,
    /// The client network the binding is keyed by (the address masked to
    /// the binding prefix) and its prefix length.
    pub network: (IpAddr, u8),
}

/// Counters of the binding table, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct BindingStats {
    /// Bindings currently held.
    pub current: AtomicI64,
    /// Probationary bindings (clients seen once) evicted because their
    /// shard was full.
    pub evictions: AtomicU64,
    /// Bindings dropped because they were idle for the TTL.
    pub expirations: AtomicU64,
}

/// The sharded, bounded binding table.
pub struct Bindings {
    /// Settings.
    config: BindingConfig,
    /// The TTL in whole seconds (rounded up).
    ttl_secs: u32,
    /// Shards, chosen by key hash.
    shards: Box<[Mutex<Shard>]>,
    /// Hashes keys, for the shard and within it.
    hasher: foldhash::fast::RandomState,
    /// Interned app names.
    apps: Names<AppId>,
    /// Interned backend ids.
    backends: Names<BackendId>,
    /// The `now` of the first call that needed one: times are kept as
    /// seconds since then.
    epoch: OnceLock<Instant>,
    /// Counters.
    stats: BindingStats,
}

impl std::fmt::Debug for Bindings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bindings")
            .field("config", &self.config)
            .field("shards", &self.shards.len())
            .field("stats", &self.stats)
            .finish()
    }
}

fn mask(bits: u128, width: u32, prefix: u8) -> u128 {
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return 0;
    }
    let keep = width - prefix;
    (bits >> keep) << keep
}

impl Bindings {
    /// An empty table; nothing is allocated per binding until it is bound.
    /// The shard count grows with `max_entries` (up to 64) so that small
    /// tables still evict in close to table-wide order.
    pub fn new(config: BindingConfig) -> Self {
        let max = config.max_entries.max(1);
        let shards = (max / 1024).clamp(1, 64).next_power_of_two().min(64);
        // The shards' capacities add up to `max` exactly.
        let (per_shard, rest) = (max / shards, max % shards);
        let ttl = config.ttl;
        let ttl_secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        Self {
            config,
            ttl_secs: u32::try_from(ttl_secs).unwrap_or(u32::MAX),
            shards: (0..shards)
                .map(|i| Mutex::new(Shard::new(per_shard + usize::from(i < rest))))
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            apps: Names::new(),
            backends: Names::new(),
            epoch: OnceLock::new(),
            stats: BindingStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &BindingConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &BindingStats {
        &self.stats
    }

    /// Bindings currently held.
    pub fn len(&self) -> usize {
        self.stats.current.load(Ordering::Relaxed).max(0) as usize
    }

    /// True when no binding is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes the shards hold (entries and index, allocated capacity;
    /// the interned names are not counted). Locks each shard in turn.
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().heap_bytes()).sum()
    }

    /// The key a client from `ip` is bound by for `app`. IPv4-mapped IPv6
    /// addresses are keyed as IPv4. The app's name is interned on first
    /// use (apps come from routing.db).
    pub fn key(&self, app: &AppId, ip: IpAddr) -> BindingKey {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let addr = match ip {
            IpAddr::V4(v4) => {
                let masked = mask(u128::from(u32::from(v4)), 32, self.config.ipv4_prefix);
                (0xffff_u128 << 32) | masked
            }
            IpAddr::V6(v6) => mask(u128::from(v6), 128, self.config.ipv6_prefix),
        };
        BindingKey {
            app: self.apps.id(app),
            addr: [
                (addr >> 96) as u32,
                (addr >> 64) as u32,
                (addr >> 32) as u32,
                addr as u32,
            ],
        }
    }

    fn hash(&self, key: &BindingKey) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Mutex<Shard> {
        // The index inside the shard uses the low and the top bits.
        &self.shards[((hash >> 32) as usize) & (self.shards.len() - 1)]
    }

    /// `now` as whole seconds since the table's epoch.
    fn secs(&self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_init(|| now);
        u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// The backend a client is bound to, if the binding is live; refreshes
    /// its idle timer, and promotes a probationary binding (the client's
    /// second connection) to protected. An expired binding is dropped.
    pub fn lookup(&self, key: &BindingKey, now: Instant) -> Option<BackendId> {
        let now = self.secs(now);
        let hash = self.hash(key);
        let hash_of = |k: &BindingKey| self.hash(k);
        let found = self
            .shard(hash)
            .lock()
            .lookup(hash, key, now, self.ttl_secs, &hash_of);
        match found {
            Found::Live(id) => self.backends.name(id),
            Found::Expired => {
                self.stats.current.fetch_sub(1, Ordering::Relaxed);
                self.stats.expirations.fetch_add(1, Ordering::Relaxed);
                None
            }
            Found::Missing => None,
        }
    }

    /// Binds a client to a backend (replacing any binding it had; a new
    /// binding is probationary).
    pub fn bind(&self, key: BindingKey, backend: BackendId, now: Instant) {
        let now = self.secs(now);
        let backend = self.backends.id(&backend);
        let hash = self.hash(&key);
        let hash_of = |k: &BindingKey| self.hash(k);
        let inserted = self
            .shard(hash)
            .lock()
            .insert(hash, key, backend, now, &hash_of);
        match inserted {
            Inserted::Replaced => {}
            Inserted::Evicted => {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
            Inserted::Added => {
                self.stats.current.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes a client's binding.
    pub fn unbind(&self, key: &BindingKey) -> Option<BackendId> {
        let hash = self.hash(key);
        let hash_of = |k: &BindingKey| self.hash(k);
        let removed = self.shard(hash).lock().remove(hash, key, &hash_of)?;
        self.stats.current.fetch_sub(1, Ordering::Relaxed);
        self.backends.name(removed)
    }

    /// The live bindings at `now`, one shard at a time: each item is one
    /// shard's, copied out under its lock (held only for the copy), so a
    /// caller can send a large table without holding the others.
    pub fn export(&self, now: Instant) -> impl Iterator<Item = Vec<ExportedBinding>> + '_ {
        let now = self.secs(now);
        self.shards.iter().map(move |shard| {
            let raw = shard.lock().export(now, self.ttl_secs);
            raw.into_iter()
                .filter_map(|(key, backend, idle, protected)| {
                    Some(ExportedBinding {
                        app: self.apps.name(key.app)?,
                        client: key.network().0,
                        backend: self.backends.name(backend)?,
                        idle: Duration::from_secs(u64::from(idle)),
                        protected,
                    })
                })
                .collect()
        })
    }

    /// Adds a binding exported by another table at `now`, keeping how long
    /// it had been idle (so it expires when it would have there). The
    /// client's address is masked again by this table's prefixes. Nothing
    /// is replaced and nothing evicted: a client bound here already keeps
    /// its binding, a full shard takes no more, and a binding idle for
    /// this table's TTL is dropped. Returns whether it was added.
    pub fn import(&self, binding: &ExportedBinding, now: Instant) -> bool {
        if binding.idle >= self.config.ttl {
            return false;
        }
        // A fresh table's epoch goes back a TTL, so the idle time of an
        // import fits in its seconds.
        self.epoch
            .get_or_init(|| now.checked_sub(self.config.ttl).unwrap_or(now));
        let now = self.secs(now);
        let idle = u32::try_from(binding.idle.as_secs()).unwrap_or(u32::MAX);
        let key = self.key(&binding.app, binding.client);
        let backend = self.backends.id(&binding.backend);
        let hash = self.hash(&key);
        let hash_of = |k: &BindingKey| self.hash(k);
        let added = self.shard(hash).lock().restore(
            hash,
            key,
            backend,
            now.saturating_sub(idle),
            binding.protected,
            &hash_of,
        );
        if added {
            self.stats.current.fetch_add(1, Ordering::Relaxed);
        }
        added
    }

    /// The most bindings kept ([`BindingConfig::max_entries`]).
    pub fn capacity(&self) -> usize {
        self.config.max_entries
    }

    /// A client's binding as it stands, for an operator: unlike
    /// [`Bindings::lookup`] it refreshes nothing, promotes nothing and
    /// interns nothing (an app the table never bound is simply not found);
    /// an expired binding still held is reported as not found. Allocates
    /// only the backend's name.
    pub fn peek(&self, app: &AppId, ip: IpAddr, now: Instant) -> Option<BindingInfo> {
        self.apps.get(app)?;
        let key = self.key(app, ip);
        let hash = self.hash(&key);
        let (backend, last_used, protected) = self.shard(hash).lock().peek(hash, &key)?;
        let idle = self.secs(now).saturating_sub(last_used);
        if idle >= self.ttl_secs {
            return None;
        }
        Some(BindingInfo {
            backend: self.backends.name(backend)?,
            idle: Duration::from_secs(u64::from(idle)),
            expires_in: Duration::from_secs(u64::from(self.ttl_secs - idle)),
            protected,
            network: key.network_masked(&self.config),
        })
    }

    /// Removes a client's binding (for `app`), if it has one; interns
    /// nothing.
    pub fn unbind_client(&self, app: &AppId, ip: IpAddr) -> Option<BackendId> {
        self.apps.get(app)?;
        self.unbind(&self.key(app, ip))
    }

    /// Removes every binding, one shard at a time (each shard's lock held
    /// only while it is emptied); how many were removed.
    pub fn clear(&self) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter() {
            removed += shard.lock().clear();
        }
        self.stats
            .current
            .fetch_sub(removed as i64, Ordering::Relaxed);
        removed
    }

    /// Drops expired bindings, at most `budget` in all, one shard at a time,
    /// and gives back the memory of shards left less than a quarter full.
    /// Returns how many it dropped.
    pub fn sweep(&self, now: Instant, budget: usize) -> usize {
        let now = self.secs(now);
        let hash_of = |k: &BindingKey| self.hash(k);
        let mut dropped = 0;
        for shard in self.shards.iter() {
            if dropped >= budget {
                break;
            }
            dropped += shard
                .lock()
                .sweep(now, self.ttl_secs, budget - dropped, &hash_of);
        }
        if dropped > 0 {
            self.stats
                .current
                .fetch_sub(dropped as i64, Ordering::Relaxed);
            self.stats
                .expirations
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        dropped
    }
}

#[cfg(test)]
mod tests;
