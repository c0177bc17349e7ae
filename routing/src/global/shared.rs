//! The lease bookkeeping of [`super::lease`] shared by an edge's
//! connections and its lease task, with the lent slots mirrored into each
//! backend's connection counter so that the owner's own admissions and
//! what it lends never exceed the hard limit together.
//!
//! - [`LeaseOwner`]: the owning POP's side: answers requests, forgets
//!   expired leases, keeps [`BackendLoad::lent`] equal to what the ledger
//!   counts.
//! - [`LeaseGate`]: a borrowing edge's side: which backends are another
//!   POP's (the owner of a backend is the edge whose region is the
//!   backend's), and
//!   the admission of a client to one of them within the lease (or the
//!   fallback), released when the connection ends.
//!
//! No IO and no clock: every call takes `now`. The locks are held for a
//! few map operations and never across anything else.
//!
//! [`BackendLoad::lent`]: crate::model::BackendLoad::lent

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::lease::{Admit, Fallback, Grant, Holder, LeaseView, Ledger};
use crate::model::{Backend, BackendId, PopId, RegionId};

/// The owning POP's leases.
#[derive(Debug)]
pub struct LeaseOwner {
    /// What is lent.
    ledger: Mutex<Ledger>,
    /// The term of a lease.
    lease_for: Duration,
}

impl LeaseOwner {
    /// Lends for `lease_for` at a time; after a restart, nothing until
    /// `quiet_until` ([`Ledger::restarted`]).
    pub fn new(lease_for: Duration, quiet_until: Option<Instant>) -> Self {
        LeaseOwner {
            ledger: Mutex::new(Ledger::new(lease_for).with_quiet_until(quiet_until)),
            lease_for,
        }
    }

    /// `from` asks for `want` slots of `backend`: lends what fits beside
    /// this edge's connections and the other leases, and reserves it.
    pub fn handle_request(
        &self,
        backend: &Backend,
        from: &PopId,
        want: u32,
        now: Instant,
    ) -> Grant {
        let mut ledger = self.ledger.lock();
        // A connection admitted meanwhile can take the room computed; then
        // the grant is computed again (a few times at most).
        for _ in 0..4 {
            let own = backend.load.active();
            let grant =
                ledger.handle_request(&backend.id, from, want, own, backend.hard_limit, now);
            let target = ledger.lent(&backend.id, now);
            let held = backend.load.lent();
            if target <= held {
                backend.load.unlend(held - target);
                return grant;
            }
            if backend.load.lend(target - held, backend.hard_limit) {
                return grant;
            }
            ledger.undo_last(&backend.id, from);
        }
        Grant {
            slots: 0,
            lasts: self.lease_for,
        }
    }

    /// `from` gave its lease of `backend` back.
    pub fn handle_release(&self, backend: &Backend, from: &PopId, now: Instant) {
        let mut ledger = self.ledger.lock();
        ledger.handle_release(&backend.id, from);
        let target = ledger.lent(&backend.id, now);
        backend
            .load
            .unlend(backend.load.lent().saturating_sub(target));
    }

    /// Forgets expired leases and frees their slots; `backends` are the
    /// table's (a backend removed from the table keeps nothing lent).
    pub fn handle_timeout<'a>(&self, backends: impl Iterator<Item = &'a Backend>, now: Instant) {
        let mut ledger = self.ledger.lock();
        ledger.handle_timeout(now);
        for b in backends {
            let target = ledger.lent(&b.id, now);
            let held = b.load.lent();
            if held > target {
                b.load.unlend(held - target);
            }
        }
    }

    /// Slots of `backend` lent now.
    pub fn lent(&self, backend: &BackendId, now: Instant) -> u32 {
        self.ledger.lock().lent(backend, now)
    }
}

/// A borrowing edge's leases and the admissions they allow.
#[derive(Debug)]
pub struct LeaseGate {
    /// This POP (what its lease requests are signed with).
    own: PopId,
    /// This edge's region: it owns the backends of this region.
    region: RegionId,
    /// After a restart, until when this edge admits clients to its own
    /// backends only within the fallback (what it lent before is unknown
    /// until every such lease has run out).
    quiet_until: Option<Instant>,
    /// Without a valid lease (or, quiet, to its own backends).
    fallback: Fallback,
    /// The leases held.
    holder: Mutex<Holder>,
    /// POPs in the fleet (for the fallback share).
    pops: AtomicUsize,
    /// Clients admitted within a lease.
    pub by_lease: AtomicU64,
    /// Clients admitted within the fallback (no valid lease).
    pub by_fallback: AtomicU64,
    /// Clients refused for want of a slot.
    pub refused: AtomicU64,
    /// Clients that found no lease yet, its owner being asked.
    pub waiting: AtomicU64,
}

impl LeaseGate {
    /// The gate of POP `own` in `region`, with `fallback` without a valid
    /// lease.
    pub fn new(own: PopId, region: RegionId, fallback: Fallback) -> Self {
        LeaseGate {
            own,
            region,
            quiet_until: None,
            fallback,
            holder: Mutex::new(Holder::new(fallback)),
            pops: AtomicUsize::new(1),
            by_lease: AtomicU64::new(0),
            by_fallback: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        }
    }

    /// This POP.
    pub fn own(&self) -> &PopId {
        &self.own
    }

    /// The same gate for an edge that may have lent in a previous run:
    /// until `until` (one lease term after its start) it admits clients to
    /// its own backends as if it held no lease of them (`strict`: none;
    /// `share`: `hard_limit / POPs`).
    pub fn with_quiet_until(mut self, until: Instant) -> Self {
        self.quiet_until = Some(until);
        self
    }

    /// Until when it is quiet after a restart, if it is.
    pub fn quiet_until(&self) -> Option<Instant> {
        self.quiet_until
    }

    /// Whether this edge's own backends are limited to the fallback at
    /// `now` (quiet after a restart).
    pub fn quiet(&self, now: Instant) -> bool {
        self.quiet_until.is_some_and(|until| now < until)
    }

    /// While quiet, whether one of this edge's own backends may take one
    /// more client, `own` counted with it: within the fallback share.
    pub fn admits_own_while_quiet(&self, backend: &Backend, own: u32) -> bool {
        let share = match self.fallback {
            Fallback::Strict => 0,
            Fallback::Share => {
                backend.hard_limit / u32::try_from(self.pops().max(1)).unwrap_or(u32::MAX)
            }
        };
        own <= share
    }

    /// This edge's region.
    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// Whom `backend` belongs to: the edge whose region is the backend's
    /// (lease requests for it go to that region's subject).
    pub fn owner_of(backend: &Backend) -> &RegionId {
        &backend.region
    }

    /// Whether `backend` is another POP's (of another region than this
    /// edge's).
    pub fn is_remote(&self, backend: &Backend) -> bool {
        *Self::owner_of(backend) != self.region
    }

    /// Sets how many POPs the fleet has now (this one included).
    pub fn set_pops(&self, n: usize) {
        self.pops.store(n.max(1), Ordering::Relaxed);
    }

    /// POPs in the fleet, as last set.
    pub fn pops(&self) -> usize {
        self.pops.load(Ordering::Relaxed)
    }

    /// Admits one client to the remote `backend` within the lease or the
    /// fallback ([`Holder::try_admit`]); the slot goes back with
    /// [`LeaseGate::release`].
    pub fn try_admit(&self, backend: &Backend, now: Instant, last_resort: bool) -> Admit {
        let admit = self.holder.lock().try_admit(
            &backend.id,
            backend.hard_limit,
            self.pops(),
            now,
            last_resort,
        );
        match admit {
            Admit::Lease => &self.by_lease,
            Admit::Fallback => &self.by_fallback,
            Admit::Full => &self.refused,
            Admit::Waiting => &self.waiting,
        }
        .fetch_add(1, Ordering::Relaxed);
        admit
    }

    /// A client admitted to `backend` is gone.
    pub fn release(&self, backend: &BackendId) {
        self.holder.lock().release(backend);
    }

    /// What this edge holds of the remote `backend` at `now` (`None`:
    /// never asked for).
    pub fn view(&self, backend: &Backend, now: Instant) -> Option<LeaseView> {
        self.holder
            .lock()
            .view(&backend.id, backend.hard_limit, self.pops(), now)
    }

    /// Runs `f` on the holder (for the lease task: requests, grants,
    /// renewals).
    pub fn with_holder<T>(&self, f: impl FnOnce(&mut Holder) -> T) -> T {
        f(&mut self.holder.lock())
    }
}

/// A client's slot within a lease: given back when dropped.
#[derive(Debug)]
pub struct LeaseSlot {
    /// The gate it came from.
    gate: Arc<LeaseGate>,
    /// The backend.
    backend: BackendId,
}

impl LeaseSlot {
    /// Admits a client to the remote `backend` through `gate`
    /// ([`LeaseGate::try_admit`]); the refusal when the lease (or the
    /// fallback) has no room or a lease is being waited for.
    pub fn try_new(
        gate: &Arc<LeaseGate>,
        backend: &Backend,
        now: Instant,
        last_resort: bool,
    ) -> Result<Self, Admit> {
        match gate.try_admit(backend, now, last_resort) {
            refused @ (Admit::Full | Admit::Waiting) => Err(refused),
            Admit::Lease | Admit::Fallback => Ok(LeaseSlot {
                gate: Arc::clone(gate),
                backend: backend.id.clone(),
            }),
        }
    }
}

impl Drop for LeaseSlot {
    fn drop(&mut self) {
        self.gate.release(&self.backend);
    }
}

#[cfg(test)]
mod tests;
