//! Handshake admission, without IO: how much Diffie-Hellman work one source
//! address may cause, and which initiations are already known to come from
//! a key that is no peer's.
//!
//! - [`SourceLimiter`] is a token bucket per source address (an IPv4
//!   address, or the /64 of an IPv6 one), as in the Linux kernel's
//!   `ratelimiter.c`: [`PER_SOURCE_RATE`] handshake messages a second with a
//!   burst of [`PER_SOURCE_BURST`]. Its table holds at most
//!   [`MAX_SOURCES`] sources; entries idle for a second are collected once a
//!   second (a bucket idle that long is full again, so forgetting it changes
//!   nothing), and while the table is full a new source is refused until
//!   collection makes room: memory stays bounded under a flood from many
//!   addresses, and sources already in the table keep their share.
//! - [`UnknownInitiations`] remembers the last [`UNKNOWN_CACHE`] initiations
//!   whose static key turned out to be no peer's, by their ephemeral key and
//!   encrypted static key. Those two fields alone decide which static key
//!   the initiation decrypts to, so a replay of one of them is known to be
//!   from an unknown key without a second Diffie-Hellman.
//!
//! The engine ([`crate::engine`]) consults the limiter only for initiations
//! that arrived while the interface is under load and carried a valid
//! cookie (MAC2): a cookie proves the sender receives at its source
//! address, so a spoofed flood cannot use up another address's tokens.
//! Everything here takes `now` from the caller and reads no clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages a second that one source may have answered under load.
pub const PER_SOURCE_RATE: u64 = 20;

/// How many handshake messages one source may send at once under load.
pub const PER_SOURCE_BURST: u64 = 5;

/// The most sources the limiter tracks at a time.
pub const MAX_SOURCES: usize = 8192;

/// How many unknown-key initiations [`UnknownInitiations`] remembers.
pub const UNKNOWN_CACHE: usize = 256;

const NANOS_PER_SEC: u64 = 1_000_000_000;
/// One message's cost, in nanoseconds of refill.
const PACKET_COST: u64 = NANOS_PER_SEC / PER_SOURCE_RATE;
/// A full bucket.
const TOKEN_MAX: u64 = PACKET_COST * PER_SOURCE_BURST;
/// How often idle entries are collected, and how idle they must be.
const GC_INTERVAL: Duration = Duration::from_secs(1);

/// The key a source is limited by: an IPv4 address, or an IPv6 /64 (one
/// host usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SourceKey {
    V4(u32),
    V6(u64),
}

impl SourceKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => Self::V4(u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6((u128::from(a) >> 64) as u64),
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens, in nanoseconds of refill ([`PACKET_COST`] per message).
    tokens: u64,
    last: Instant,
}

/// What [`SourceLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (a token was taken).
    Allowed,
    /// The source has no token left.
    Limited,
    /// The source is new and the table is full.
    TableFull,
}

/// What the limiter counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Messages refused because their source had no token left.
    pub limited: u64,
    /// Messages refused because the table was full of other sources.
    pub table_full: u64,
}

/// A token bucket per source address (see the module documentation).
#[derive(Debug)]
pub struct SourceLimiter {
    table: HashMap<SourceKey, Bucket>,
    capacity: usize,
    last_gc: Option<Instant>,
    stats: LimiterStats,
}

impl Default for SourceLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_SOURCES)
    }
}

impl SourceLimiter {
    /// A limiter tracking at most `capacity` sources (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            table: HashMap::new(),
            capacity: capacity.max(1),
            last_gc: None,
            stats: LimiterStats::default(),
        }
    }

    /// Whether a handshake message from `ip` at `now` may be processed.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.check(ip, now) == Admission::Allowed
    }

    /// Whether a handshake message from `ip` at `now` may be processed, and
    /// if not why; takes one token if so. A time before a source's last
    /// message counts as no time passed.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Admission {
        self.collect(now);
        let key = SourceKey::of(ip);
        if let Some(b) = self.table.get_mut(&key) {
            let elapsed = now.checked_duration_since(b.last).unwrap_or(Duration::ZERO);
            let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            b.tokens = b.tokens.saturating_add(elapsed).min(TOKEN_MAX);
            b.last = b.last.max(now);
            if b.tokens >= PACKET_COST {
                b.tokens -= PACKET_COST;
                return Admission::Allowed;
            }
            self.stats.limited += 1;
            return Admission::Limited;
        }
        if self.table.len() >= self.capacity {
            self.stats.table_full += 1;
            return Admission::TableFull;
        }
        self.table.insert(
            key,
            Bucket {
                tokens: TOKEN_MAX - PACKET_COST,
                last: now,
            },
        );
        Admission::Allowed
    }

    /// Whether a message from `ip` at `now` would be refused for want of a
    /// token (a source the table holds whose bucket is empty); changes
    /// nothing. Lets the engine drop a flood before checking its MACs: the
    /// bucket only ever holds tokens taken by messages whose cookie was
    /// valid, so a spoofed flood cannot make it empty for another address.
    pub fn exhausted(&self, ip: IpAddr, now: Instant) -> bool {
        self.table.get(&SourceKey::of(ip)).is_some_and(|b| {
            let elapsed = now.checked_duration_since(b.last).unwrap_or(Duration::ZERO);
            let elapsed = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            b.tokens.saturating_add(elapsed).min(TOKEN_MAX) < PACKET_COST
        })
    }

    /// Forgets sources idle for a second, at most once a second (also done
    /// by [`SourceLimiter::allow`]).
    pub fn collect(&mut self, now: Instant) {
        let due = self.last_gc.is_none_or(|last| {
            now.checked_duration_since(last).unwrap_or(Duration::ZERO) >= GC_INTERVAL
        });
        if !due {
            return;
        }
        self.last_gc = Some(now);
        self.table.retain(|_, b| {
            now.checked_duration_since(b.last).unwrap_or(Duration::ZERO) < GC_INTERVAL
        });
    }

    /// Counts a message refused after [`SourceLimiter::exhausted`].
    pub fn note_limited(&mut self) {
        self.stats.limited += 1;
    }

    /// How many sources are tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// What was refused so far.
    pub fn stats(&self) -> LimiterStats {
        self.stats
    }
}

/// The part of an initiation that decides its static key: the ephemeral
/// key (32 bytes) and the encrypted static key (48 bytes).
type Fingerprint = [u8; 80];

/// Recently seen initiations from keys that are no peer's (see the module
/// documentation), oldest forgotten first.
#[derive(Debug, Default)]
pub struct UnknownInitiations {
    set: HashSet<Fingerprint>,
    order: VecDeque<Fingerprint>,
}

/// Bytes 8..88 of a handshake initiation: ephemeral and encrypted static.
fn fingerprint(initiation: &[u8]) -> Option<Fingerprint> {
    initiation.get(8..88)?.try_into().ok()
}

impl UnknownInitiations {
    /// Whether this initiation was already found to be from an unknown key.
    pub fn contains(&self, initiation: &[u8]) -> bool {
        fingerprint(initiation).is_some_and(|f| self.set.contains(&f))
    }

    /// Remembers an initiation found to be from an unknown key.
    pub fn insert(&mut self, initiation: &[u8]) {
        let Some(f) = fingerprint(initiation) else {
            return;
        };
        if !self.set.insert(f) {
            return;
        }
        self.order.push_back(f);
        while self.order.len() > UNKNOWN_CACHE {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Forgets everything (the peers changed: a key unknown before may be a
    /// peer now).
    pub fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }

    /// How many initiations are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests;
