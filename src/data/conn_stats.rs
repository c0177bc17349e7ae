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
    /// Closed before any backend was dialed: the client (its address,
    /// masked to the client prefix) had as many connections open as the
    /// per-client cap allows.
    ClientLimit,
    /// Closed before any backend was dialed: the client opened connections
    /// faster than the per-client rate allows.
    ClientRate,
    /// Closed without a backend: a listener that reads the TLS ClientHello
    /// (`sni_listen`) got something else (or nothing complete in time).
    NotTls,
}

impl ConnResult {
    /// Every result, for pre-registering metric series.
    pub const ALL: [ConnResult; 11] = [
        ConnResult::Ok,
        ConnResult::NoBackend,
        ConnResult::ConnectFailed,
        ConnResult::BadProxyHeader,
        ConnResult::ProxyHeaderTimeout,
        ConnResult::OverLimit,
        ConnResult::LocalError,
        ConnResult::Loop,
        ConnResult::ClientLimit,
        ConnResult::ClientRate,
        ConnResult::NotTls,
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
            ConnResult::ClientLimit => "client_limit",
            ConnResult::ClientRate => "client_rate",
            ConnResult::NotTls => "not_tls",
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
    /// [`ConnResult::Loop`] and the results after it, in that order:
    /// refusals that cost the connection nothing else (a configuration
    /// error, a client over its limit, not TLS), kept off the sharded line.
    rare: [AtomicU64; RARE],
}

/// The results counted apart, in [`ConnStats::rare`]: `Loop` and after.
const RARE: usize = ConnResult::ALL.len() - ConnResult::Loop as usize;

/// Where the client-to-backend payload bytes are counted: after the
/// results other than `Ok` and the rare ones.
const BYTES_UP: usize = ConnResult::Loop as usize - 1;
/// Where the backend-to-client payload bytes are counted.
const BYTES_DOWN: usize = BYTES_UP + 1;
/// Counters in all: one per result, then the two byte counts.
const SLOTS: usize = BYTES_DOWN + 1;

/// Where a result is counted in [`ConnStats`]'s shards; `Ok` is not
/// counted (see there), `Loop` and after are counted apart.
#[inline]
fn slot(result: ConnResult) -> Option<usize> {
    if result as usize >= ConnResult::Loop as usize {
        return None;
    }
    (result as usize).checked_sub(1)
}

/// Where a result is counted in [`ConnStats::rare`], if it is one of those.
#[inline]
fn rare(result: ConnResult) -> Option<usize> {
    (result as usize).checked_sub(ConnResult::Loop as usize)
}

const _: () = assert!(SLOTS == 8, "one cache line of counters per shard");

/// Adds payload bytes of one direction to a [`ConnStats`] (and, when the
/// connection keeps its own tally for its access-log line, to that too).
#[derive(Debug, Clone, Copy)]
pub struct ByteCounter<'a> {
    stats: &'a ConnStats,
    at: usize,
    /// The connection's own count of this direction, when kept.
    tally: Option<&'a AtomicU64>,
}

impl<'a> ByteCounter<'a> {
    /// Counts `n` bytes passed on.
    #[inline]
    pub fn add(&self, n: u64) {
        self.stats.counters.add(self.at, n);
        if let Some(tally) = self.tally {
            // One writer (this direction): no locked instruction needed.
            tally.store(tally.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        }
    }

    /// This counter, also adding to the connection's own `tally`.
    pub fn with_tally(self, tally: &'a AtomicU64) -> ByteCounter<'a> {
        ByteCounter {
            tally: Some(tally),
            ..self
        }
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
        } else if let Some(at) = rare(result) {
            self.rare[at].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connections with this outcome so far (0 for [`ConnResult::Ok`]).
    pub fn count(&self, result: ConnResult) -> u64 {
        match (slot(result), rare(result)) {
            (Some(at), _) => self.counters.get(at),
            (None, Some(at)) => self.rare[at].load(Ordering::Relaxed),
            (None, None) => 0,
        }
    }

    /// Where client-to-backend bytes are counted.
    pub fn up(&self) -> ByteCounter<'_> {
        ByteCounter {
            stats: self,
            at: BYTES_UP,
            tally: None,
        }
    }

    /// Where backend-to-client bytes are counted.
    pub fn down(&self) -> ByteCounter<'_> {
        ByteCounter {
            stats: self,
            at: BYTES_DOWN,
            tally: None,
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
