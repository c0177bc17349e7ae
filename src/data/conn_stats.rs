//! The proxy's own counters: client connections by outcome and payload
//! bytes by direction, in per-thread shards (`geoedge_routing::shard`):
//! written on the data path without a lock or a locked instruction, summed
//! at scrape time; no allocation.
//!
//! Self-contained (std and the routing crate only), so the decision
//! benchmark can include this file and pay exactly what the proxy pays.

use std::sync::atomic::{AtomicU64, Ordering};

use geoedge_routing::shard::Sharded;

/// How a client connection ended up: a small, fixed set, usable as a
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnResult {
    /// A backend accepted it and the relay started.
    Ok,
    /// No backend could take it (none configured, eligible or under its
    /// hard limit).
    NoBackend,
    /// Every backend tried failed to connect.
    ConnectFailed,
    /// A trusted source sent a malformed PROXY header (or closed inside it).
    BadProxyHeader,
    /// A trusted source sent no complete PROXY header in time.
    ProxyHeaderTimeout,
    /// Closed at once: the global connection limit was reached.
    OverLimit,
    /// Refused at once: this host could not open a socket to the backend
    /// (out of descriptors, memory, buffers or source ports). Not counted
    /// against the backend.
    LocalError,
    /// Reset at once: the client was this edge itself, come back through a
    /// backend (a connection loop); the backend is ejected.
    Loop,
}

impl ConnResult {
    /// Every result, for pre-registering metric series.
    pub const ALL: [ConnResult; 8] = [
        ConnResult::Ok,
        ConnResult::NoBackend,
        ConnResult::ConnectFailed,
        ConnResult::BadProxyHeader,
        ConnResult::ProxyHeaderTimeout,
        ConnResult::OverLimit,
        ConnResult::LocalError,
        ConnResult::Loop,
    ];

    /// Lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnResult::Ok => "ok",
            ConnResult::NoBackend => "no_backend",
            ConnResult::ConnectFailed => "connect_failed",
            ConnResult::BadProxyHeader => "bad_proxy_header",
            ConnResult::ProxyHeaderTimeout => "proxy_header_timeout",
            ConnResult::OverLimit => "over_limit",
            ConnResult::LocalError => "local_error",
            ConnResult::Loop => "loop",
        }
    }
}

/// Connections by [`ConnResult`], except [`ConnResult::Ok`], and relayed
/// bytes.
///
/// A connection that reached a backend is counted once already, as a
/// successful connect in that backend's histogram, and the routing table
/// keeps their total (`RoutingTable::successful_connects`, removed backends
/// included); counting it here too would cost every connection a second
/// add, so the `ok` series is read from there.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// The results other than `Ok`, in the order of [`ConnResult::ALL`]
    /// ([`slot`]), then bytes up ([`BYTES_UP`]) and down ([`BYTES_DOWN`]):
    /// eight counters, one cache line per shard.
    counters: Sharded<SLOTS>,
    /// [`ConnResult::Loop`]: rare enough (a configuration error, and the
    /// backend is ejected at once) to keep off the sharded line.
    loops: AtomicU64,
}

/// Where the client-to-backend payload bytes are counted: after the
/// results other than `Ok` and `Loop`.
const BYTES_UP: usize = ConnResult::ALL.len() - 2;
/// Where the backend-to-client payload bytes are counted.
const BYTES_DOWN: usize = BYTES_UP + 1;
/// Counters in all: one per result, then the two byte counts.
const SLOTS: usize = BYTES_DOWN + 1;

/// Where a result is counted in [`ConnStats`]'s shards; `Ok` is not
/// counted (see there), `Loop` is counted apart.
#[inline]
fn slot(result: ConnResult) -> Option<usize> {
    if result == ConnResult::Loop {
        return None;
    }
    (result as usize).checked_sub(1)
}

const _: () = assert!(SLOTS == 8, "one cache line of counters per shard");

/// Adds payload bytes of one direction to a [`ConnStats`].
#[derive(Debug, Clone, Copy)]
pub struct ByteCounter<'a> {
    stats: &'a ConnStats,
    at: usize,
}

impl ByteCounter<'_> {
    /// Counts `n` bytes passed on.
    #[inline]
    pub fn add(&self, n: u64) {
        self.stats.counters.add(self.at, n);
    }
}

impl ConnStats {
    /// Counts one connection's outcome, other than [`ConnResult::Ok`] (see
    /// [`ConnStats`]).
    #[inline]
    pub fn record(&self, result: ConnResult) {
        debug_assert_ne!(result, ConnResult::Ok, "counted as a successful connect");
        if let Some(at) = slot(result) {
            self.counters.add(at, 1);
        } else if result == ConnResult::Loop {
            self.loops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections with this outcome so far (0 for [`ConnResult::Ok`]).
    pub fn count(&self, result: ConnResult) -> u64 {
        match result {
            ConnResult::Loop => self.loops.load(Ordering::Relaxed),
            _ => slot(result).map_or(0, |at| self.counters.get(at)),
        }
    }

    /// Where client-to-backend bytes are counted.
    pub fn up(&self) -> ByteCounter<'_> {
        ByteCounter {
            stats: self,
            at: BYTES_UP,
        }
    }

    /// Where backend-to-client bytes are counted.
    pub fn down(&self) -> ByteCounter<'_> {
        ByteCounter {
            stats: self,
            at: BYTES_DOWN,
        }
    }

    /// Client-to-backend payload bytes so far.
    pub fn bytes_up(&self) -> u64 {
        self.counters.get(BYTES_UP)
    }

    /// Backend-to-client payload bytes so far.
    pub fn bytes_down(&self) -> u64 {
        self.counters.get(BYTES_DOWN)
    }
}
