//! Per-backend connect outcomes, for the metrics endpoint: how long
//! successful connects took (a fixed-bucket histogram) and why failed ones
//! failed (a small reason enum).
//!
//! They live beside the backend's connection counter ([`BackendLoad`]), so
//! the proxy records an outcome through the [`Route`] it already holds (no
//! lookup, no lock) and a scrape reads them through the table snapshot.
//! Sans-IO: the caller measures the duration and classifies the error.
//! The counters are sharded by thread ([`crate::shard`]), so recording takes
//! no locked instruction on a worker thread.
//!
//! [`BackendLoad`]: crate::BackendLoad
//! [`Route`]: crate::Route

use std::time::Duration;

use crate::shard::Sharded;

/// Upper bounds of the connect-duration buckets, in seconds: from loopback
/// (half a millisecond) to past the longest sensible connect timeout.
pub const CONNECT_BUCKETS_SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The same bounds in nanoseconds, for comparing without floating point.
const BUCKETS_NS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Why a connect to a backend failed: a small, fixed set, usable as a
/// metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    /// The backend's host answered with a reset (nothing listening).
    Refused,
    /// No answer within the connect timeout.
    Timeout,
    /// No route to the host or network.
    Unreachable,
    /// Anything else.
    Other,
    /// This host could not open or connect the socket (out of descriptors,
    /// memory, buffers or source ports): not the backend's fault, so it
    /// never counts towards the backend's health.
    Local,
}

impl ConnectFailure {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [ConnectFailure; 5] = [
        ConnectFailure::Refused,
        ConnectFailure::Timeout,
        ConnectFailure::Unreachable,
        ConnectFailure::Other,
        ConnectFailure::Local,
    ];

    /// Lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectFailure::Refused => "refused",
            ConnectFailure::Timeout => "timeout",
            ConnectFailure::Unreachable => "unreachable",
            ConnectFailure::Other => "other",
            ConnectFailure::Local => "local",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Connect outcomes of one backend, in per-thread counter shards
/// ([`Sharded`]): written once per connect attempt without a locked
/// instruction, read (summed) at scrape time.
#[derive(Debug, Default)]
pub struct ConnectStats {
    /// Successful connects per bucket (not cumulative; the last is above
    /// every bound), their durations added up in nanoseconds, and failed
    /// connects by [`ConnectFailure`]: see the `AT_*` indices.
    counters: Sharded<COUNTERS>,
}

/// Where each counter sits in [`ConnectStats::counters`]: the sum beside
/// the lowest buckets, so that a typical connect (under a few
/// milliseconds) writes a single cache line.
const AT_SUM: usize = 0;
const AT_BUCKETS: usize = 1;
const AT_FAILURES: usize = 16;
const COUNTERS: usize = AT_FAILURES + ConnectFailure::ALL.len();

/// A read of a [`ConnectStats`] histogram, in Prometheus's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectHistogram {
    /// `(upper bound in seconds, connects at or under it)`, one per bound of
    /// [`CONNECT_BUCKETS_SECONDS`], cumulative.
    pub buckets: Vec<(f64, u64)>,
    /// Successful connects in all (the `+Inf` bucket).
    pub count: u64,
    /// Their durations added up, in seconds.
    pub sum_seconds: f64,
}

impl ConnectStats {
    /// Records a successful connect that took `took`.
    #[inline]
    pub fn observe(&self, took: Duration) {
        // (Cheaper than `as_nanos`, which widens to u128.)
        let ns = took
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(took.subsec_nanos()));
        // Most connects land in the first buckets: scan from the bottom.
        let i = BUCKETS_NS.iter().position(|&b| ns <= b).unwrap_or(14);
        let shard = self.counters.local();
        shard.add(AT_BUCKETS + i, 1);
        shard.add(AT_SUM, ns);
    }

    /// Records a failed connect.
    pub fn fail(&self, why: ConnectFailure) {
        self.counters.add(AT_FAILURES + why.index(), 1);
    }

    /// Failed connects for one reason so far.
    pub fn failures(&self, why: ConnectFailure) -> u64 {
        self.counters.get(AT_FAILURES + why.index())
    }

    /// Successful connects so far.
    pub fn successes(&self) -> u64 {
        (0..15).map(|i| self.counters.get(AT_BUCKETS + i)).sum()
    }

    /// The histogram as Prometheus shows it. Each counter is read on its
    /// own; the count is the sum of the buckets read, so the two always
    /// agree.
    pub fn histogram(&self) -> ConnectHistogram {
        let mut cumulative = 0u64;
        let buckets = CONNECT_BUCKETS_SECONDS
            .iter()
            .enumerate()
            .map(|(i, &bound)| {
                cumulative += self.counters.get(AT_BUCKETS + i);
                (bound, cumulative)
            })
            .collect();
        let count = cumulative + self.counters.get(AT_BUCKETS + 14);
        ConnectHistogram {
            buckets,
            count,
            sum_seconds: self.counters.get(AT_SUM) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree() {
        for (s, ns) in CONNECT_BUCKETS_SECONDS.iter().zip(BUCKETS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn observations_land_in_the_right_buckets() {
        let s = ConnectStats::default();
        s.observe(Duration::from_micros(100)); // ≤ 0.5 ms
        s.observe(Duration::from_micros(500)); // exactly on a bound: ≤ 0.5 ms
        s.observe(Duration::from_micros(501)); // ≤ 1 ms
        s.observe(Duration::from_secs(3)); // ≤ 5 s
        s.observe(Duration::from_secs(60)); // +Inf only
        let h = s.histogram();
        assert_eq!(h.count, 5);
        assert_eq!(s.successes(), 5);
        assert_eq!(h.buckets[0], (0.0005, 2));
        assert_eq!(h.buckets[1], (0.001, 3));
        assert_eq!(h.buckets[11], (2.5, 3));
        assert_eq!(h.buckets[12], (5.0, 4));
        assert_eq!(h.buckets[13], (10.0, 4));
        assert!(
            (h.sum_seconds - 63.001101).abs() < 1e-9,
            "{}",
            h.sum_seconds
        );
    }

    #[test]
    fn failures_count_by_reason() {
        let s = ConnectStats::default();
        s.fail(ConnectFailure::Refused);
        s.fail(ConnectFailure::Refused);
        s.fail(ConnectFailure::Timeout);
        s.fail(ConnectFailure::Local);
        assert_eq!(s.failures(ConnectFailure::Refused), 2);
        assert_eq!(s.failures(ConnectFailure::Local), 1);
        assert_eq!(s.failures(ConnectFailure::Timeout), 1);
        assert_eq!(s.failures(ConnectFailure::Unreachable), 0);
        assert_eq!(s.histogram().count, 0);
        let labels: Vec<_> = ConnectFailure::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            ["refused", "timeout", "unreachable", "other", "local"]
        );
    }
}
