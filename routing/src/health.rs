//! Backend health: what active checks and the proxy's own connects say
//! about each backend, combined with the operator's `healthy` column.
//!
//! Two state machines per backend, both sans-IO (results and `now` are
//! passed in; no socket, no clock):
//! - [`ActiveState`], fed by periodic TCP-connect checks: an up backend
//!   goes down after `fall` consecutive failed checks, a down one comes up
//!   after `rise` consecutive successful ones.
//! - [`PassiveState`], fed by the proxy's connects to the backend: after
//!   `eject_after` consecutive failures the backend is ejected for a
//!   backoff (`backoff`, doubling per failed trial up to `backoff_max`).
//!   Once the backoff has passed, one connect is let through as a trial
//!   (half-open): its success re-admits the backend, its failure ejects it
//!   again for twice as long. A trial whose result never comes (the
//!   connection was abandoned before connecting) is given up after another
//!   backoff, and a new one may be made.
//!
//! [`BackendHealth`] holds both for one backend beside its connection
//! counter ([`BackendLoad`](crate::BackendLoad)), so the state survives
//! routing.db reloads for backends that stay. The decision path reads one
//! atomic word ([`BackendHealth::admits`]); the machines sit behind a mutex
//! that only result reports take (and, once per backoff, the decision that
//! claims a trial, with `try_lock`). The operator's `healthy = 0` always
//! wins: such a backend is never a candidate whatever its checks say.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::connect::ConnectFailure;

/// Health settings, the same for every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// Consecutive successful checks that bring a down backend up (at least 1).
    pub rise: u32,
    /// Consecutive failed checks that take an up backend down (at least 1).
    pub fall: u32,
    /// Consecutive failed connects that eject a backend; 0 turns passive
    /// ejection off.
    pub eject_after: u32,
    /// Backoff of a first ejection.
    pub backoff: Duration,
    /// Longest backoff: a failed trial doubles the backoff up to this.
    pub backoff_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            rise: 2,
            fall: 3,
            eject_after: 3,
            backoff: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A backend's effective health: a small, fixed set, usable as a metric
/// label. When several apply, the first listed wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// The operator's `healthy = 0`.
    OperatorDown,
    /// Active checks failed `fall` times in a row.
    Down,
    /// Ejected after consecutive connect failures, until a trial succeeds.
    Ejected,
    /// Taking clients as far as health goes.
    Up,
}

impl HealthState {
    /// Every state, for pre-registering metric series.
    pub const ALL: [HealthState; 4] = [
        HealthState::Up,
        HealthState::Down,
        HealthState::Ejected,
        HealthState::OperatorDown,
    ];

    /// Lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthState::Up => "up",
            HealthState::Down => "down",
            HealthState::Ejected => "ejected",
            HealthState::OperatorDown => "operator_down",
        }
    }
}

/// A change of a backend's health, for the adapters to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthChange {
    /// Active checks took it down.
    Down,
    /// Active checks brought it back up.
    Up,
    /// Ejected (again, when `trial_failed`) until `backoff` has passed.
    Ejected {
        /// How long until a trial connect is let through.
        backoff: Duration,
        /// The ejection follows a failed trial rather than consecutive failures.
        trial_failed: bool,
    },
    /// A connect succeeded: back in service.
    Readmitted,
}

/// `now + d`, or `now` when that would overflow (durations are bounded by
/// the settings, so this never happens in practice).
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d).unwrap_or(now)
}

/// Active checks: rise and fall counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActiveState {
    /// Down by checks (a backend starts up).
    down: bool,
    /// Consecutive results disagreeing with the current state.
    streak: u32,
}

impl ActiveState {
    /// Whether checks have taken the backend down.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Feeds one check result.
    pub fn on_check(&mut self, ok: bool, cfg: &HealthConfig) -> Option<HealthChange> {
        if ok != self.down {
            // Agrees with the state (up and ok, or down and failed).
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.down { cfg.rise } else { cfg.fall }.max(1);
        if self.streak < needed {
            return None;
        }
        self.down = !self.down;
        self.streak = 0;
        Some(if self.down {
            HealthChange::Down
        } else {
            HealthChange::Up
        })
    }
}

/// An ejection in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ejection {
    /// The current backoff.
    backoff: Duration,
    /// When a trial may be made: the end of the backoff or, with a trial
    /// out, when that trial counts as lost.
    open_at: Instant,
    /// A trial connect is out.
    trial: bool,
    /// The ejection is for a connection loop: only a trial's success ends
    /// it (a connect that came back to the edge completes too, and may be
    /// seen doing so after the loop it made).
    looped: bool,
}

/// Passive ejection: consecutive connect failures, backoff, half-open trial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassiveState {
    /// Consecutive failed connects while admitted.
    failures: u32,
    /// Set while ejected.
    ejection: Option<Ejection>,
}

impl PassiveState {
    /// Whether the backend is ejected (a trial may or may not be due).
    pub fn is_ejected(&self) -> bool {
        self.ejection.is_some()
    }

    /// Consecutive failed connects counted towards an ejection.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The current backoff, while ejected.
    pub fn backoff(&self) -> Option<Duration> {
        self.ejection.map(|e| e.backoff)
    }

    /// When the next trial may be made, while ejected.
    pub fn open_at(&self) -> Option<Instant> {
        self.ejection.map(|e| e.open_at)
    }

    /// Whether a connect may be made at `now`: admitted, or ejected with a
    /// trial due.
    pub fn admits(&self, now: Instant) -> bool {
        self.ejection.is_none_or(|e| now >= e.open_at)
    }

    /// Takes the trial due at `now`, if any; true when the connect may go
    /// ahead (always, when admitted).
    pub fn claim_trial(&mut self, now: Instant) -> bool {
        match &mut self.ejection {
            None => true,
            Some(e) if now >= e.open_at => {
                e.trial = true;
                e.open_at = after(now, e.backoff);
                true
            }
            Some(_) => false,
        }
    }

    /// A connection loop through the backend was seen at `now` (a connect
    /// to it came back to this edge): it is ejected for the longest
    /// backoff, whatever its state, since retrying sooner would only loop
    /// again. A later trial that connects re-admits it, as after any
    /// ejection.
    pub fn on_loop(&mut self, now: Instant, cfg: &HealthConfig) -> HealthChange {
        let change = self.eject(cfg.backoff_max.max(cfg.backoff), now);
        if let Some(e) = &mut self.ejection {
            e.looped = true;
        }
        change
    }

    /// Ejects for `backoff` from `now`, forgetting the failures counted.
    fn eject(&mut self, backoff: Duration, now: Instant) -> HealthChange {
        self.failures = 0;
        self.ejection = Some(Ejection {
            backoff,
            open_at: after(now, backoff),
            trial: false,
            looped: false,
        });
        HealthChange::Ejected {
            backoff,
            trial_failed: false,
        }
    }

    /// Feeds one connect result.
    pub fn on_connect(
        &mut self,
        ok: bool,
        now: Instant,
        cfg: &HealthConfig,
    ) -> Option<HealthChange> {
        if ok {
            self.failures = 0;
            // Any success proves the backend takes connections again; after
            // a loop, only the trial's (a connect that looped completes as
            // well, and may be reported after its loop was).
            if self.ejection.is_some_and(|e| e.looped && !e.trial) {
                return None;
            }
            return self.ejection.take().map(|_| HealthChange::Readmitted);
        }
        match &mut self.ejection {
            Some(e) if e.trial => {
                let backoff = e.backoff.saturating_mul(2).min(cfg.backoff_max);
                *e = Ejection {
                    backoff,
                    open_at: after(now, backoff),
                    trial: false,
                    looped: e.looped,
                };
                Some(HealthChange::Ejected {
                    backoff,
                    trial_failed: true,
                })
            }
            // A connect begun before the ejection: already accounted for.
            Some(_) => None,
            None => {
                self.failures = self.failures.saturating_add(1);
                if cfg.eject_after == 0 || self.failures < cfg.eject_after {
                    return None;
                }
                Some(self.eject(cfg.backoff.min(cfg.backoff_max), now))
            }
        }
    }
}

/// Both machines of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Machines {
    /// Active checks.
    active: ActiveState,
    /// Passive ejection.
    passive: PassiveState,
}

/// `word` bit: active checks took the backend down.
const DOWN: u64 = 1 << 63;
/// `word` bit: ejected; the low bits say when a trial is due.
const EJECTED: u64 = 1 << 62;
/// `word` bits: nanoseconds from `epoch` at which a trial is due.
const TIME: u64 = EJECTED - 1;

/// The health of one backend, shared by every thread: result reports
/// update it, decisions read it (`word`, first, so that it sits beside the
/// connection count in [`BackendLoad`](crate::BackendLoad)).
#[derive(Debug, Default)]
#[repr(C)]
pub struct BackendHealth {
    /// What a decision reads, in one atomic word: 0 when admitted;
    /// otherwise the `DOWN` and `EJECTED` bits and, when ejected, when the
    /// next trial is due (`TIME` bits, nanoseconds from `epoch`).
    word: AtomicU64,
    /// The instant `word`'s times count from: the `now` of the first report
    /// that published a time.
    epoch: OnceLock<Instant>,
    /// Consecutive failed connects, copied out of the machines so that a
    /// success on a healthy backend takes no lock.
    failing: AtomicU32,
    /// The state machines; taken by result reports, never across an await.
    machines: Mutex<Machines>,
    /// Ejections so far (including re-ejections after a failed trial).
    ejections: AtomicU64,
}

impl BackendHealth {
    /// Nanoseconds from the epoch to `t` (0 before it or without one).
    fn ticks(&self, t: Instant) -> u64 {
        self.epoch.get().map_or(0, |e| {
            u64::try_from(t.saturating_duration_since(*e).as_nanos())
                .unwrap_or(TIME)
                .min(TIME)
        })
    }

    /// Whether a decision at `now` may choose the backend (health only: the
    /// operator's columns and the limits are checked by the caller). One
    /// atomic load; no lock.
    #[inline]
    pub fn admits(&self, now: Instant) -> bool {
        let w = self.word.load(Ordering::Acquire);
        w == 0 || (w & DOWN == 0 && self.ticks(now) >= w & TIME)
    }

    /// Admitted outright: not down, not ejected (a trial due does not count).
    #[inline]
    pub fn is_admitted(&self) -> bool {
        self.word.load(Ordering::Acquire) == 0
    }

    /// Whether active checks have taken the backend down.
    pub fn is_down(&self) -> bool {
        self.word.load(Ordering::Acquire) & DOWN != 0
    }

    /// Whether the backend is ejected.
    pub fn is_ejected(&self) -> bool {
        self.word.load(Ordering::Acquire) & EJECTED != 0
    }

    /// The effective state, given the operator's `healthy` column.
    pub fn state(&self, operator_healthy: bool) -> HealthState {
        let w = self.word.load(Ordering::Acquire);
        if !operator_healthy {
            HealthState::OperatorDown
        } else if w & DOWN != 0 {
            HealthState::Down
        } else if w & EJECTED != 0 {
            HealthState::Ejected
        } else {
            HealthState::Up
        }
    }

    /// Ejections so far.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// The state machines as they are now (for tests and diagnostics).
    pub fn passive(&self) -> PassiveState {
        self.machines.lock().passive
    }

    /// Publishes the machines' state into `word`. Called with the lock held.
    fn publish(&self, m: &Machines, now: Instant) {
        let mut w = 0;
        if m.active.is_down() {
            w |= DOWN;
        }
        if let Some(open_at) = m.passive.open_at() {
            self.epoch.get_or_init(|| now);
            w |= EJECTED | self.ticks(open_at);
        }
        self.failing.store(m.passive.failures(), Ordering::Relaxed);
        self.word.store(w, Ordering::Release);
    }

    /// Feeds an active check result at `now`.
    pub fn on_check(&self, ok: bool, now: Instant, cfg: &HealthConfig) -> Option<HealthChange> {
        let mut m = self.machines.lock();
        let change = m.active.on_check(ok, cfg);
        if change.is_some() {
            self.publish(&m, now);
        }
        change
    }

    /// Feeds the result of a proxy connect at `now`. A success on a healthy
    /// backend with no failures counted takes no lock.
    pub fn on_connect(&self, ok: bool, now: Instant, cfg: &HealthConfig) -> Option<HealthChange> {
        if ok
            && self.word.load(Ordering::Acquire) & EJECTED == 0
            && self.failing.load(Ordering::Relaxed) == 0
        {
            return None;
        }
        let mut m = self.machines.lock();
        let change = m.passive.on_connect(ok, now, cfg);
        if let Some(HealthChange::Ejected { .. }) = change {
            self.ejections.fetch_add(1, Ordering::Relaxed);
        }
        self.publish(&m, now);
        change
    }

    /// A connection loop through the backend was seen at `now`: ejected
    /// for the longest backoff ([`PassiveState::on_loop`]).
    pub fn on_loop(&self, now: Instant, cfg: &HealthConfig) -> HealthChange {
        let mut m = self.machines.lock();
        let change = m.passive.on_loop(now, cfg);
        self.ejections.fetch_add(1, Ordering::Relaxed);
        self.publish(&m, now);
        change
    }

    /// Called by a decision that chose the backend at `now`: true when the
    /// connect may go ahead. Admitted backends always may; an ejected one
    /// only when its trial is due and this caller takes it (one caller per
    /// backoff). Never waits: a contended lock means another caller is
    /// taking the trial.
    pub fn claim_trial(&self, now: Instant) -> bool {
        if self.is_admitted() {
            return true;
        }
        let Some(mut m) = self.machines.try_lock() else {
            return false;
        };
        if m.active.is_down() || !m.passive.claim_trial(now) {
            return false;
        }
        self.publish(&m, now);
        true
    }
}

/// Check results by outcome, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct CheckStats {
    /// Successful checks.
    ok: AtomicU64,
    /// Failed checks by [`ConnectFailure`], in the order of its `ALL`.
    failed: [AtomicU64; ConnectFailure::ALL.len()],
}

impl CheckStats {
    /// Counts one check result.
    pub fn record(&self, result: Result<(), ConnectFailure>) {
        match result {
            Ok(()) => &self.ok,
            Err(why) => {
                let i = ConnectFailure::ALL
                    .iter()
                    .position(|w| *w == why)
                    .unwrap_or(0);
                &self.failed[i]
            }
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Successful checks so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Failed checks for one reason so far.
    pub fn failed(&self, why: ConnectFailure) -> u64 {
        let i = ConnectFailure::ALL
            .iter()
            .position(|w| *w == why)
            .unwrap_or(0);
        self.failed[i].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;
