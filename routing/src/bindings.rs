//! Sticky bindings: a client (its address masked to a prefix) keeps its
//! backend until the binding has been idle for the TTL.
//!
//! Sans-IO: every call takes `now`; nothing here reads a clock. The table is
//! bounded: it is split into shards, each a small LRU behind its own mutex,
//! so the least recently used binding of a full shard is evicted, a lookup
//! locks one shard for a few hundred nanoseconds, and expiry ([`Bindings::sweep`])
//! walks one shard at a time from its oldest end, stopping at the first live
//! binding: it never scans, nor holds, the whole table.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::model::{AppId, BackendId};

/// Settings of the binding table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingConfig {
    /// A binding idle this long is gone (default 600 s).
    pub ttl: Duration,
    /// At most this many bindings are kept (default 1,000,000); the least recently used go first.
    pub max_entries: usize,
    /// IPv4 clients are keyed by their address masked to this prefix (default 32).
    pub ipv4_prefix: u8,
    /// IPv6 clients are keyed by their address masked to this prefix (default 128).
    pub ipv6_prefix: u8,
}

impl Default for BindingConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            max_entries: 1_000_000,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        }
    }
}

/// What a client is bound by: the app and the client's masked address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindingKey {
    /// The app the binding is for.
    app: AppId,
    /// Masked address; IPv4 in the low 32 bits.
    addr: u128,
    /// 4 or 6.
    family: u8,
}

impl BindingKey {
    /// The masked client network, for display.
    pub fn network(&self) -> (IpAddr, u8) {
        match self.family {
            4 => (IpAddr::from((self.addr as u32).to_be_bytes()), 32),
            _ => (IpAddr::from(self.addr.to_be_bytes()), 128),
        }
    }
}

#[derive(Debug, Clone)]
struct Binding {
    backend: BackendId,
    last_used: Instant,
}

/// Counters of the binding table, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct BindingStats {
    /// Bindings currently held.
    pub current: AtomicI64,
    /// Bindings evicted because their shard was full (least recently used).
    pub evictions: AtomicU64,
    /// Bindings dropped because they were idle for the TTL.
    pub expirations: AtomicU64,
}

/// The sharded, bounded binding table.
pub struct Bindings {
    /// Settings.
    config: BindingConfig,
    /// Shards, chosen by key hash.
    shards: Box<[Mutex<LruCache<BindingKey, Binding, foldhash::fast::RandomState>>]>,
    /// Hashes keys to shards.
    hasher: foldhash::fast::RandomState,
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
    /// An empty table. The shard count grows with `max_entries` (up to 64) so
    /// that small tables still evict in close to global LRU order.
    pub fn new(config: BindingConfig) -> Self {
        let max = config.max_entries.max(1);
        let shards = (max / 1024).clamp(1, 64).next_power_of_two().min(64);
        let per_shard = NonZeroUsize::new(max.div_ceil(shards)).unwrap_or(NonZeroUsize::MIN);
        let shards = (0..shards)
            .map(|_| {
                Mutex::new(LruCache::with_hasher(
                    per_shard,
                    foldhash::fast::RandomState::default(),
                ))
            })
            .collect();
        Self {
            config,
            shards,
            hasher: foldhash::fast::RandomState::default(),
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

    /// The key a client from `ip` is bound by for `app`. IPv4-mapped IPv6
    /// addresses are keyed as IPv4.
    pub fn key(&self, app: &AppId, ip: IpAddr) -> BindingKey {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (addr, family) = match ip {
            IpAddr::V4(v4) => (mask(u32::from(v4) as u128, 32, self.config.ipv4_prefix), 4),
            IpAddr::V6(v6) => (mask(u128::from(v6), 128, self.config.ipv6_prefix), 6),
        };
        BindingKey {
            app: app.clone(),
            addr,
            family,
        }
    }

    fn shard(
        &self,
        key: &BindingKey,
    ) -> &Mutex<LruCache<BindingKey, Binding, foldhash::fast::RandomState>> {
        use std::hash::BuildHasher;
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) & (self.shards.len() - 1)]
    }

    fn expired(&self, b: &Binding, now: Instant) -> bool {
        now.saturating_duration_since(b.last_used) >= self.config.ttl
    }

    /// The backend a client is bound to, if the binding is live; refreshes
    /// its idle timer. An expired binding is dropped.
    pub fn lookup(&self, key: &BindingKey, now: Instant) -> Option<BackendId> {
        let mut shard = self.shard(key).lock();
        let b = shard.get_mut(key)?;
        if self.expired(b, now) {
            shard.pop(key);
            drop(shard);
            self.stats.current.fetch_sub(1, Ordering::Relaxed);
            self.stats.expirations.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        b.last_used = now;
        Some(b.backend.clone())
    }

    /// Binds a client to a backend (replacing any binding it had).
    pub fn bind(&self, key: BindingKey, backend: BackendId, now: Instant) {
        let mut shard = self.shard(&key).lock();
        let pushed_key = key.clone();
        let evicted = shard.push(
            key,
            Binding {
                backend,
                last_used: now,
            },
        );
        drop(shard);
        match evicted {
            // Replaced the same key's binding: the count is unchanged.
            Some((k, _)) if k == pushed_key => {}
            Some(_) => {
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.stats.current.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes a client's binding.
    pub fn unbind(&self, key: &BindingKey) -> Option<BackendId> {
        let removed = self.shard(key).lock().pop(key);
        removed.map(|b| {
            self.stats.current.fetch_sub(1, Ordering::Relaxed);
            b.backend
        })
    }

    /// Drops expired bindings, at most `budget` in all, one shard at a time
    /// from each shard's least recently used end. Returns how many it dropped.
    pub fn sweep(&self, now: Instant, budget: usize) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            if dropped >= budget {
                break;
            }
            let mut s = shard.lock();
            while dropped < budget {
                match s.peek_lru() {
                    Some((_, b)) if self.expired(b, now) => {
                        s.pop_lru();
                        dropped += 1;
                    }
                    _ => break,
                }
            }
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
