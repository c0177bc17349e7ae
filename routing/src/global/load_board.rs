//! What the other edges of the fleet last reported of their connections
//! to each backend: the live count and accept rate, per reporting POP.
//! A report replaces the same POP's previous one (an older one arriving
//! late is ignored by its sequence number) and stops counting once older
//! than the board's `max_age`, so a silent POP's figures fade out instead
//! of holding a backend's load up for ever.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{BackendId, PopId};

/// One POP's figures for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RemoteLoad {
    /// Connections it holds to the backend now.
    pub live: u32,
    /// New connections it sent there, per second, lately.
    pub accept_rate: f32,
}

/// One POP's last report.
#[derive(Debug, Clone)]
struct Report {
    /// Its sequence number (a POP numbers its reports).
    seq: u64,
    /// When it arrived.
    at: Instant,
    /// Its figures by backend.
    backends: HashMap<BackendId, RemoteLoad>,
}

/// The other POPs' last reports.
#[derive(Debug, Clone)]
pub struct LoadBoard {
    /// This POP (its own reports, echoed back, are not counted).
    own: PopId,
    /// Reports older than this no longer count.
    max_age: Duration,
    /// The last report of each other POP.
    reports: HashMap<PopId, Report>,
}

impl LoadBoard {
    /// An empty board for POP `own`, counting reports up to `max_age` old.
    pub fn new(own: PopId, max_age: Duration) -> Self {
        LoadBoard {
            own,
            max_age,
            reports: HashMap::new(),
        }
    }

    /// Takes POP `from`'s report number `seq`, arrived at `now`; returns
    /// whether it replaced what the board held (false: this POP's own, or
    /// not newer than the one held).
    pub fn handle_report(
        &mut self,
        from: PopId,
        seq: u64,
        backends: HashMap<BackendId, RemoteLoad>,
        now: Instant,
    ) -> bool {
        if from == self.own {
            return false;
        }
        if let Some(held) = self.reports.get(&from) {
            if held.seq >= seq {
                return false;
            }
        }
        self.reports.insert(
            from,
            Report {
                seq,
                at: now,
                backends,
            },
        );
        true
    }

    fn fresh(&self, now: Instant) -> impl Iterator<Item = (&PopId, &Report)> {
        self.reports
            .iter()
            .filter(move |(_, r)| now.saturating_duration_since(r.at) <= self.max_age)
    }

    /// The other POPs' live connections to `backend`, from fresh reports.
    pub fn remote(&self, backend: &BackendId, now: Instant) -> u32 {
        self.fresh(now)
            .filter_map(|(_, r)| r.backends.get(backend))
            .fold(0u32, |sum, l| sum.saturating_add(l.live))
    }

    /// Each fresh report's figures for `backend`, by POP.
    pub fn by_pop(&self, backend: &BackendId, now: Instant) -> Vec<(PopId, RemoteLoad)> {
        let mut out: Vec<(PopId, RemoteLoad)> = self
            .fresh(now)
            .filter_map(|(p, r)| r.backends.get(backend).map(|l| (p.clone(), *l)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The age of the freshest report (`None`: no report counts).
    pub fn freshest_age(&self, now: Instant) -> Option<Duration> {
        self.fresh(now)
            .map(|(_, r)| now.saturating_duration_since(r.at))
            .min()
    }

    /// The POPs whose reports count now.
    pub fn reporting(&self, now: Instant) -> usize {
        self.fresh(now).count()
    }

    /// Forgets reports too old to count.
    pub fn handle_timeout(&mut self, now: Instant) {
        let max_age = self.max_age;
        self.reports
            .retain(|_, r| now.saturating_duration_since(r.at) <= max_age);
    }

    /// When the next held report stops counting (`None`: none held).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reports.values().map(|r| r.at + self.max_age).min()
    }
}

#[cfg(test)]
mod tests;
