//! The lease bookkeeping of [`super::lease`] shared by an edge's
//! connections and its lease task, with the lent slots mirrored into each
//! backend's connection counter so that the owner's own admissions and
//! what it lends never exceed the hard limit together.
//!
//! - [`LeaseOwner`]: the owning POP's side: answers requests, forgets
//!   expired leases, keeps [`BackendLoad::lent`] equal to what the ledger
//!   counts.
//! - [`LeaseGate`]: a borrowing edge's side: which backends are another
//!   POP's (the owner of a backend is the POP named after its region), and
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
use crate::model::{Backend, BackendId, PopId};

/// The owning POP's leases.
#[derive(Debug)]
pub struct LeaseOwner {
    /// What is lent.
    ledger: Mutex<Ledger>,
    /// The term of a lease.
    lease_for: Duration,
}

impl LeaseOwner {
    /// Lends for `lease_for` at a time.
    pub fn new(lease_for: Duration) -> Self {
        LeaseOwner {
            ledger: Mutex::new(Ledger::new(lease_for)),
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
    /// This POP.
    own: PopId,
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
}

impl LeaseGate {
    /// The gate of POP `own`, with `fallback` without a valid lease.
    pub fn new(own: PopId, fallback: Fallback) -> Self {
        LeaseGate {
            own,
            holder: Mutex::new(Holder::new(fallback)),
            pops: AtomicUsize::new(1),
            by_lease: AtomicU64::new(0),
            by_fallback: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// This POP.
    pub fn own(&self) -> &PopId {
        &self.own
    }

    /// The POP that owns `backend`: the one named after its region.
    pub fn owner_of(backend: &Backend) -> PopId {
        PopId::new(backend.region.as_str())
    }

    /// Whether `backend` is another POP's.
    pub fn is_remote(&self, backend: &Backend) -> bool {
        Self::owner_of(backend) != self.own
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
    /// fallback; the slot goes back with [`LeaseGate::release`].
    pub fn try_admit(&self, backend: &Backend, now: Instant) -> Admit {
        let admit = self
            .holder
            .lock()
            .try_admit(&backend.id, backend.hard_limit, self.pops(), now);
        match admit {
            Admit::Lease => &self.by_lease,
            Admit::Fallback => &self.by_fallback,
            Admit::Full => &self.refused,
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
    /// Admits a client to the remote `backend` through `gate`; `None` when
    /// the lease (or the fallback) is full.
    pub fn try_new(gate: &Arc<LeaseGate>, backend: &Backend, now: Instant) -> Option<Self> {
        match gate.try_admit(backend, now) {
            Admit::Full => None,
            Admit::Lease | Admit::Fallback => Some(LeaseSlot {
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
