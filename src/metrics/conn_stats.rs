//! The proxy's own counters: client connections by outcome and payload
//! bytes by direction. Relaxed atomics written on the data path and read at
//! scrape time; no lock, no allocation.
//!
//! Self-contained (std only), so the decision benchmark can include this
//! file and pay exactly what the proxy pays.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl ConnResult {
    /// Every result, for pre-registering metric series.
    pub const ALL: [ConnResult; 5] = [
        ConnResult::Ok,
        ConnResult::NoBackend,
        ConnResult::ConnectFailed,
        ConnResult::BadProxyHeader,
        ConnResult::ProxyHeaderTimeout,
    ];

    /// Lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnResult::Ok => "ok",
            ConnResult::NoBackend => "no_backend",
            ConnResult::ConnectFailed => "connect_failed",
            ConnResult::BadProxyHeader => "bad_proxy_header",
            ConnResult::ProxyHeaderTimeout => "proxy_header_timeout",
        }
    }
}

/// Connections by [`ConnResult`] and relayed bytes.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Indexed by [`ConnResult`] in the order of [`ConnResult::ALL`].
    results: [AtomicU64; 5],
    /// Client-to-backend payload bytes.
    pub bytes_up: AtomicU64,
    /// Backend-to-client payload bytes.
    pub bytes_down: AtomicU64,
}

impl ConnStats {
    /// Counts one connection's outcome.
    pub fn record(&self, result: ConnResult) {
        self.results[result as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Connections with this outcome so far.
    pub fn count(&self, result: ConnResult) -> u64 {
        self.results[result as usize].load(Ordering::Relaxed)
    }
}
