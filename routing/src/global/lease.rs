//! Hard limits across POPs by lease: a backend's owning POP lends the
//! other edges slots of its `hard_limit` for a short term, and each edge
//! admits clients to a remote backend only within the slots it holds.
//!
//! - [`Ledger`], at the owner: what it has lent, to whom, until when. It
//!   never lends more than `hard_limit` minus its own connections minus
//!   what is lent to others, and admits its own clients only below
//!   `hard_limit` minus what is lent; so its own connections plus the
//!   slots under unexpired leases never exceed the limit. A holder's
//!   previous lease counts until it expires even when a renewal replaces
//!   it (the holder may not have the renewal yet).
//! - [`Holder`], at a borrowing edge: the slots it holds and uses. A lease
//!   is counted from when its request was *sent*, by the holder's clock,
//!   so the holder stops using it no later than the owner stops counting
//!   it, whatever the network delay (clocks need not agree, only run at
//!   the same rate). Without a valid lease (none yet, or its owner
//!   silent) it admits only its [`Fallback`]: none, or an equal share of
//!   the limit.
//!
//! Neither touches a socket or reads a clock: every input carries `now`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{BackendId, PopId};

/// What an owner answers a lease request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Slots lent (0: none; the request is refused).
    pub slots: u32,
    /// For how long, from when the holder sent its request.
    pub lasts: Duration,
}

/// The owner's record of what it lent.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// The term of every lease.
    lease_for: Duration,
    /// By backend, by holder: its leases (slots, until), the newest last;
    /// an older one is kept until it expires.
    lent: HashMap<BackendId, HashMap<PopId, Vec<(u32, Instant)>>>,
    /// After a restart, until when this owner lends nothing and admits
    /// none of its own: what its previous run lent is unknown until then.
    quiet_until: Option<Instant>,
}

impl Ledger {
    /// An empty ledger lending for `lease_for` at a time.
    pub fn new(lease_for: Duration) -> Self {
        Ledger {
            lease_for,
            lent: HashMap::new(),
            quiet_until: None,
        }
    }

    /// The ledger of an owner that may have lent in a previous run (a
    /// restart at `now`): the leases that run granted are not known, but
    /// none outlives one term from `now`. Until then this ledger lends
    /// nothing and admits none of the owner's own clients.
    pub fn restarted(lease_for: Duration, now: Instant) -> Self {
        Ledger {
            quiet_until: Some(now + lease_for),
            ..Ledger::new(lease_for)
        }
    }

    /// The same ledger, quiet until `until` (see [`Ledger::restarted`]).
    pub fn with_quiet_until(mut self, until: Option<Instant>) -> Self {
        self.quiet_until = until;
        self
    }

    /// Whether it is still quiet after a restart at `now`.
    pub fn quiet(&self, now: Instant) -> bool {
        self.quiet_until.is_some_and(|until| now < until)
    }

    fn holder_slots(leases: &[(u32, Instant)], now: Instant) -> u32 {
        leases
            .iter()
            .filter(|(_, until)| *until > now)
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(0)
    }

    fn lent_except(&self, backend: &BackendId, except: Option<&PopId>, now: Instant) -> u32 {
        self.lent.get(backend).map_or(0, |holders| {
            holders
                .iter()
                .filter(|(pop, _)| Some(*pop) != except)
                .fold(0u32, |sum, (_, l)| {
                    sum.saturating_add(Self::holder_slots(l, now))
                })
        })
    }

    /// Slots of `backend` under unexpired leases at `now`.
    pub fn lent(&self, backend: &BackendId, now: Instant) -> u32 {
        self.lent_except(backend, None, now)
    }

    /// Slots of `backend` lent to `holder` at `now`.
    pub fn lent_to(&self, backend: &BackendId, holder: &PopId, now: Instant) -> u32 {
        self.lent
            .get(backend)
            .and_then(|h| h.get(holder))
            .map_or(0, |l| Self::holder_slots(l, now))
    }

    /// `from` asks for `want` slots of `backend` (limit `hard`) while this
    /// POP holds `own` connections to it: lends what fits, for the term,
    /// as `from`'s new lease.
    pub fn handle_request(
        &mut self,
        backend: &BackendId,
        from: &PopId,
        want: u32,
        own: u32,
        hard: u32,
        now: Instant,
    ) -> Grant {
        let others = self.lent_except(backend, Some(from), now);
        let room = if self.quiet(now) {
            0
        } else {
            hard.saturating_sub(own).saturating_sub(others)
        };
        let slots = want.min(room);
        let leases = self
            .lent
            .entry(backend.clone())
            .or_default()
            .entry(from.clone())
            .or_default();
        leases.retain(|(_, until)| *until > now);
        if slots > 0 {
            leases.push((slots, now + self.lease_for));
        }
        Grant {
            slots,
            lasts: self.lease_for,
        }
    }

    /// Takes back the lease just recorded for `from` by
    /// [`Ledger::handle_request`], before it was sent (its slots could not
    /// be reserved after all).
    pub fn undo_last(&mut self, backend: &BackendId, from: &PopId) {
        if let Some(leases) = self.lent.get_mut(backend).and_then(|h| h.get_mut(from)) {
            leases.pop();
        }
    }

    /// The backends with anything lent.
    pub fn backends(&self) -> impl Iterator<Item = &BackendId> {
        self.lent.keys()
    }

    /// `from` gave its lease of `backend` back (it stopped using it before
    /// it said so).
    pub fn handle_release(&mut self, backend: &BackendId, from: &PopId) {
        if let Some(holders) = self.lent.get_mut(backend) {
            holders.remove(from);
        }
    }

    /// Whether this POP may admit one more client of its own to `backend`
    /// (limit `hard`) while it holds `own`.
    pub fn may_admit_own(&self, backend: &BackendId, own: u32, hard: u32, now: Instant) -> bool {
        !self.quiet(now)
            && u64::from(own) + 1 + u64::from(self.lent(backend, now)) <= u64::from(hard)
    }

    /// Forgets expired leases.
    pub fn handle_timeout(&mut self, now: Instant) {
        for holders in self.lent.values_mut() {
            for leases in holders.values_mut() {
                leases.retain(|(_, until)| *until > now);
            }
            holders.retain(|_, l| !l.is_empty());
        }
        self.lent.retain(|_, h| !h.is_empty());
    }

    /// When the next lease expires (`None`: nothing lent).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.lent
            .values()
            .flat_map(|h| h.values())
            .flat_map(|l| l.iter().map(|(_, until)| *until))
            .min()
    }
}

/// What a holder does without a valid lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Admits no client to the backend.
    #[default]
    Strict,
    /// Admits up to `hard_limit / number of POPs` clients.
    Share,
}

/// The outcome of [`Holder::try_admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Admitted within the lease.
    Lease,
    /// Admitted within the fallback share (no valid lease).
    Fallback,
    /// Refused: the lease (or the fallback) is used up.
    Full,
    /// Refused for now: no valid lease, and the owner, not known to be
    /// unreachable, is being asked for one.
    Waiting,
}

/// What a borrowing edge holds of one backend, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseView {
    /// `true` while a lease is valid; `false`: none (the fallback applies
    /// once the owner is silent).
    pub valid: bool,
    /// Slots of the lease; without one, of the fallback share when the
    /// owner is silent, else 0 (a lease is being asked for).
    pub slots: u32,
    /// Clients admitted and not yet released.
    pub used: u32,
    /// Milliseconds until the lease runs out (0 without one).
    pub expires_in_ms: u64,
}

/// Unanswered requests kept per backend (the oldest goes first).
const MAX_PENDING: usize = 8;

/// A lease held for one backend.
#[derive(Debug, Clone, Default)]
struct Held {
    /// Slots of the current lease.
    slots: u32,
    /// When it stops counting, by this edge's clock.
    until: Option<Instant>,
    /// The request the current lease answered.
    answered: u64,
    /// Clients admitted and not yet released.
    used: u32,
    /// Requests sent and not answered: id and when sent.
    pending: Vec<(u64, Instant)>,
    /// A client wanted a slot the lease did not have (ask for one).
    wanted: bool,
    /// The owner left the last request unanswered (or none could be
    /// sent): it is unreachable, and without a lease the fallback applies.
    /// Until then a client without a lease waits for the owner's answer.
    silent: bool,
}

/// A borrowing edge's leases.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    /// Without a valid lease.
    fallback: Fallback,
    /// By backend.
    held: HashMap<BackendId, Held>,
    /// The last request id.
    next_id: u64,
}

impl Holder {
    /// No lease yet; `fallback` without one.
    pub fn new(fallback: Fallback) -> Self {
        Holder {
            fallback,
            ..Default::default()
        }
    }

    /// Notes a lease request for `backend` sent at `now`; returns its id,
    /// which the grant must carry back.
    pub fn handle_sent(&mut self, backend: &BackendId, now: Instant) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let h = self.held.entry(backend.clone()).or_default();
        h.wanted = false;
        // Requests never answered are not kept for ever.
        if h.pending.len() >= MAX_PENDING {
            h.pending.remove(0);
        }
        h.pending.push((id, now));
        id
    }

    /// Takes the grant answering request `id`. A grant for a request older
    /// than the lease held, or for no request sent, is ignored.
    pub fn handle_grant(&mut self, backend: &BackendId, id: u64, grant: Grant) -> bool {
        let Some(h) = self.held.get_mut(backend) else {
            return false;
        };
        let Some(pos) = h.pending.iter().position(|(p, _)| *p == id) else {
            return false;
        };
        let (_, sent) = h.pending[pos];
        // Requests before this one can no longer matter.
        h.pending.retain(|(p, _)| *p > id);
        if id <= h.answered {
            return false;
        }
        h.answered = id;
        h.silent = false;
        h.slots = grant.slots;
        h.until = Some(sent + grant.lasts);
        true
    }

    /// The owner did not answer request `id` (unreachable, or too slow):
    /// it is no longer waited for, and the next tick may ask again.
    pub fn handle_unanswered(&mut self, backend: &BackendId, id: u64) {
        if let Some(h) = self.held.get_mut(backend) {
            h.pending.retain(|(p, _)| *p != id);
            h.wanted = true;
            h.silent = true;
        }
    }

    /// Slots of valid leases at `now`, over every backend.
    pub fn total_slots(&self, now: Instant) -> u32 {
        self.held.keys().map(|b| self.slots(b, now)).sum()
    }

    /// The backends a lease is held, used or wanted for.
    pub fn backends(&self) -> Vec<BackendId> {
        self.held.keys().cloned().collect()
    }

    /// Slots of a valid lease of `backend` at `now` (0: none).
    pub fn slots(&self, backend: &BackendId, now: Instant) -> u32 {
        self.held.get(backend).map_or(0, |h| match h.until {
            Some(until) if now < until => h.slots,
            _ => 0,
        })
    }

    /// What is held of `backend` at `now` (limit `hard`, `pops` POPs),
    /// `None` when nothing was ever asked or admitted there.
    pub fn view(
        &self,
        backend: &BackendId,
        hard: u32,
        pops: usize,
        now: Instant,
    ) -> Option<LeaseView> {
        let h = self.held.get(backend)?;
        Some(match h.until {
            Some(until) if now < until => LeaseView {
                valid: true,
                slots: h.slots,
                used: h.used,
                expires_in_ms: u64::try_from((until - now).as_millis()).unwrap_or(u64::MAX),
            },
            _ => LeaseView {
                valid: false,
                slots: if h.silent {
                    self.fallback_share(hard, pops)
                } else {
                    0
                },
                used: h.used,
                expires_in_ms: 0,
            },
        })
    }

    fn fallback_share(&self, hard: u32, pops: usize) -> u32 {
        match self.fallback {
            Fallback::Strict => 0,
            Fallback::Share => hard / u32::try_from(pops.max(1)).unwrap_or(u32::MAX),
        }
    }

    /// Clients admitted to `backend` and not released.
    pub fn used(&self, backend: &BackendId) -> u32 {
        self.held.get(backend).map_or(0, |h| h.used)
    }

    /// Admits one client to `backend` (limit `hard`, `pops` POPs in the
    /// fleet) at `now` if the lease has room, or, without a valid lease and
    /// the owner silent, the fallback. Without a lease from an owner not
    /// known to be silent, the client waits ([`Admit::Waiting`]: a lease
    /// is wanted) unless it is a `last_resort` (no other backend would
    /// take it): then the fallback applies as well.
    pub fn try_admit(
        &mut self,
        backend: &BackendId,
        hard: u32,
        pops: usize,
        now: Instant,
        last_resort: bool,
    ) -> Admit {
        let share = self.fallback_share(hard, pops);
        let h = self.held.entry(backend.clone()).or_default();
        match h.until {
            Some(until) if now < until => {
                if h.used < h.slots {
                    h.used += 1;
                    Admit::Lease
                } else {
                    h.wanted = true;
                    Admit::Full
                }
            }
            _ => {
                h.wanted = true;
                if (h.silent || last_resort) && h.used < share {
                    h.used += 1;
                    Admit::Fallback
                } else if h.silent || last_resort {
                    Admit::Full
                } else {
                    Admit::Waiting
                }
            }
        }
    }

    /// A client admitted to `backend` is gone.
    pub fn release(&mut self, backend: &BackendId) {
        if let Some(h) = self.held.get_mut(backend) {
            h.used = h.used.saturating_sub(1);
        }
    }

    /// Stops using the lease of `backend` (to give it back: tell the owner
    /// after this).
    pub fn give_back(&mut self, backend: &BackendId) {
        if let Some(h) = self.held.get_mut(backend) {
            h.until = None;
            h.slots = 0;
        }
    }

    /// Whether to ask for a lease of `backend` at `now`: a client wanted a
    /// slot the lease did not have, or the lease is in use and past half
    /// its term. An idle lease is left to expire.
    pub fn wants_renewal(&self, backend: &BackendId, lasts: Duration, now: Instant) -> bool {
        let Some(h) = self.held.get(backend) else {
            return false;
        };
        // A request still within a term of being sent may yet be
        // answered; an older one is taken as lost.
        if h.pending.iter().any(|(_, sent)| now < *sent + lasts) {
            return false;
        }
        h.wanted || (h.used > 0 && h.until.is_none_or(|until| now + lasts / 2 >= until))
    }

    /// How many slots to ask for: what is in use and half as much again
    /// (at least `min`).
    pub fn want(&self, backend: &BackendId, min: u32) -> u32 {
        let used = self.used(backend);
        (used.saturating_add(used / 2 + 1)).max(min)
    }
}

#[cfg(test)]
mod tests;
