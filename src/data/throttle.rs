//! Logging a repeating failure once per interval instead of once per
//! occurrence: a backend that refuses every connect, or an accept loop out
//! of descriptors, must not flood the log. One [`Throttle`] per kind of
//! failure; the first occurrence is logged at once, later ones within the
//! interval are only counted, and the next line logged says how many were
//! suppressed.
//!
//! Lock-free (two atomics) and clock-free: the caller passes `now`.
//!
//! [`LineBudget`] is its counterpart for events that are each worth a line
//! while they are few (a backend going down, an ejection): up to a number
//! of lines per interval, then only a count, reported with the next line
//! let through, so that a whole large table changing at once writes a few
//! lines, not one per backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one log line per interval for one kind of failure.
#[derive(Debug)]
pub struct Throttle {
    /// Times are kept as nanoseconds since this instant.
    base: Instant,
    /// The interval, in nanoseconds.
    interval: u64,
    /// Nanoseconds after `base` before which nothing more is logged (0 at
    /// first: the first occurrence is always logged).
    next: AtomicU64,
    /// Occurrences not logged since the last line.
    suppressed: AtomicU64,
}

impl Throttle {
    /// A throttle letting one line through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            base: Instant::now(),
            interval: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
            next: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log an occurrence at `now`: `Some(n)` with the number of
    /// occurrences suppressed since the last line logged, or `None` (and
    /// the occurrence is counted as suppressed).
    pub fn check(&self, now: Instant) -> Option<u64> {
        let t =
            u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        let next = self.next.load(Ordering::Relaxed);
        if t >= next
            && self
                .next
                .compare_exchange(
                    next,
                    t.saturating_add(self.interval),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::AcqRel));
        }
        self.suppressed.fetch_add(1, Ordering::AcqRel);
        None
    }
}

/// At most `lines` log lines per interval for one kind of event.
#[derive(Debug)]
pub struct LineBudget {
    /// Lines let through per interval.
    lines: u32,
    /// The interval.
    interval: Duration,
    /// The current interval's start, the lines it let through, and the
    /// events not logged since the last line. Taken only when an event
    /// happens (never on a connection's path).
    state: Mutex<(Option<Instant>, u32, u64)>,
}

impl LineBudget {
    /// A budget of `lines` lines per `interval`.
    pub const fn new(lines: u32, interval: Duration) -> Self {
        Self {
            lines,
            interval,
            state: Mutex::new((None, 0, 0)),
        }
    }

    /// Whether to log an event at `now`: `Some(n)` with the number of
    /// events not logged since the last line, or `None` (the event is
    /// counted).
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (start, used, suppressed) = &mut *s;
        if start.is_none_or(|t| now.saturating_duration_since(t) >= self.interval) {
            *start = Some(now);
            *used = 0;
        }
        if *used < self.lines {
            *used += 1;
            return Some(std::mem::take(suppressed));
        }
        *suppressed += 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_interval_with_the_suppressed_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = t.base;
        assert_eq!(t.check(t0), Some(0), "the first one is logged");
        for i in 1..=99 {
            assert_eq!(t.check(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(t.check(t0 + Duration::from_secs(10)), Some(99));
        assert_eq!(t.check(t0 + Duration::from_secs(11)), None);
        assert_eq!(t.check(t0 + Duration::from_secs(25)), Some(1));
    }

    #[test]
    fn a_budget_lets_its_lines_through_then_counts() {
        let b = LineBudget::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(b.check(t0), Some(0));
        }
        for i in 1..=1000 {
            assert_eq!(b.check(t0 + Duration::from_millis(i)), None);
        }
        // The next interval's first line says how many were not logged.
        assert_eq!(b.check(t0 + Duration::from_secs(10)), Some(1000));
        assert_eq!(b.check(t0 + Duration::from_secs(11)), Some(0));
    }

    #[test]
    fn many_threads_at_once_log_one_line() {
        let t = Throttle::new(Duration::from_secs(3600));
        let now = Instant::now();
        let lines: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..1000).filter_map(|_| t.check(now)).collect::<Vec<u64>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(lines.len(), 1);
        // Occurrences counted by a racing thread before the one line took
        // the count are reported by that line; none is lost.
        assert_eq!(lines[0] + t.suppressed.load(Ordering::Relaxed), 3999);
    }
}
