//! Identifiers and the validated shapes of routing.db rows: [`Backend`] and
//! [`Region`], plus the per-backend connection counter [`BackendLoad`] that
//! outlives table reloads.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use geoedge_geoip::{CountryCode, GeoPoint};

use crate::connect::ConnectStats;
use crate::health::BackendHealth;

macro_rules! string_id {
    ($(#[$doc:meta])* $ty:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Wraps a string as this id.
            pub fn new(s: &str) -> Self {
                Self(Arc::from(s))
            }

            /// The id as a shared string (no copy).
            pub fn as_arc(&self) -> Arc<str> {
                Arc::clone(&self.0)
            }

            /// The id as a `&str`.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }

        impl From<&str> for $ty {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A backend's `id` in routing.db.
    BackendId
);
string_id!(
    /// An application name (`backends.app`); every decision is for one app.
    AppId
);
string_id!(
    /// A POP's name in the fleet (`--pop`), unique across it.
    PopId
);
string_id!(
    /// A POP region id (`regions.id`, `backends.region`), e.g. `eu`.
    RegionId
);

impl AppId {
    /// The app used when none is named: `default`.
    pub fn default_app() -> Self {
        Self::new("default")
    }
}

/// The number of connections currently held on one backend, counted from the
/// moment the backend is chosen (a reservation) until the connection ends.
///
/// One counter exists per backend id for as long as the backend is in the
/// table or has connections open, so counts survive reloads. The backend's
/// health ([`BackendHealth`]: active checks and passive ejection) and its
/// connect outcomes ([`ConnectStats`], for the metrics endpoint) ride along,
/// so they survive reloads too. The two that every decision reads (the
/// count and the health word) come first, on one cache line.
#[derive(Debug, Default)]
#[repr(C)]
pub struct BackendLoad {
    /// Reservations currently held.
    active: AtomicU32,
    /// Connections the other edges of the fleet hold, as they last
    /// reported ([`crate::global::LoadBoard`]); 0 without a fleet.
    remote: AtomicU32,
    /// Of `active`, the slots this edge (the backend's owning POP) has
    /// lent to other edges ([`crate::global::LeaseOwner`]): reserved
    /// against the hard limit, not connections of this edge's.
    lent: AtomicU32,
    /// Active-check and passive-ejection state, read by every decision.
    health: BackendHealth,
    /// Connect durations and failures.
    connect: ConnectStats,
    /// Set once the table has forgotten this backend: where the successful
    /// connects it records from then on are added when it drops.
    retired: OnceLock<Retired>,
}

/// A forgotten backend's hand-over of its successful connects to its
/// table's running total ([`BackendLoad::retire`]).
#[derive(Debug)]
struct Retired {
    /// The table's total of successful connects on forgotten backends.
    to: Arc<AtomicU64>,
    /// How many of this backend's connects were added to `to` already.
    counted: u64,
}

impl BackendLoad {
    /// Connections this edge holds (its reservations, less the slots it
    /// lent to other edges).
    pub fn active(&self) -> u32 {
        self.reserved().saturating_sub(self.lent())
    }

    /// Slots reserved against the hard limit: this edge's connections and
    /// the slots it lent.
    pub fn reserved(&self) -> u32 {
        self.active.load(Ordering::Acquire)
    }

    /// Slots lent to other edges.
    pub fn lent(&self) -> u32 {
        self.lent.load(Ordering::Acquire)
    }

    /// Reserves `n` more slots to lend, if they fit under `hard_limit`
    /// with everything reserved already. Atomic with [`Self::try_acquire`]:
    /// lent slots and this edge's connections never exceed the limit
    /// together.
    pub fn lend(&self, n: u32, hard_limit: u32) -> bool {
        let ok = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (u64::from(a) + u64::from(n) <= u64::from(hard_limit)).then_some(a + n)
            })
            .is_ok();
        if ok {
            self.lent.fetch_add(n, Ordering::AcqRel);
        }
        ok
    }

    /// Frees `n` lent slots (a lease expired or was given back).
    pub fn unlend(&self, n: u32) {
        let n = self
            .lent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| {
                Some(l.saturating_sub(n))
            })
            .map_or(0, |before| before.min(n));
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                Some(a.saturating_sub(n))
            });
    }

    /// Connections the other edges of the fleet hold (last reports).
    pub fn remote(&self) -> u32 {
        self.remote.load(Ordering::Relaxed)
    }

    /// Sets the other edges' connections from their reports.
    pub fn set_remote(&self, n: u32) {
        self.remote.store(n, Ordering::Relaxed);
    }

    /// The fleet's connections: `own` (this edge's, as read) plus the
    /// other edges' reported ones. Scoring compares this with the soft
    /// limit; the hard limit holds this edge's own reservations.
    pub fn global(&self, own: u32) -> u32 {
        own.saturating_add(self.remote())
    }

    /// The backend's health.
    pub fn health(&self) -> &BackendHealth {
        &self.health
    }

    /// The backend's connect outcomes.
    pub fn connect_stats(&self) -> &ConnectStats {
        &self.connect
    }

    /// The other edges' reported connections beyond the slots this edge
    /// lent them (0 without a fleet): connections no lease of this edge's
    /// accounts for, such as those a cut-off edge admitted within its
    /// fallback, or, at a borrowing edge, the owner's own and the other
    /// borrowers'.
    pub fn unlent_remote(&self) -> u32 {
        self.remote().saturating_sub(self.lent())
    }

    /// What counts against the hard limit here: this edge's reservations
    /// (its connections and the slots it lent) and the other edges'
    /// connections beyond those slots ([`Self::unlent_remote`]).
    pub fn held(&self) -> u32 {
        self.reserved().saturating_add(self.unlent_remote())
    }

    /// Takes one slot if fewer than `hard_limit` are held, the other
    /// edges' unlent connections counted ([`Self::held`]). Atomic on this
    /// edge's count, so a burst of concurrent callers never exceeds the
    /// limit.
    pub fn try_acquire(&self, hard_limit: u32) -> bool {
        let others = u64::from(self.unlent_remote());
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| {
                (u64::from(a) + others < u64::from(hard_limit)).then_some(a + 1)
            })
            .is_ok()
    }

    /// Hands this backend's successful connects to `total` as its table
    /// forgets it: those counted so far now, any recorded later (by a
    /// connection that raced the removal) when the last reference drops.
    /// So `total` plus the connects of the backends still known never
    /// decreases. Later calls do nothing.
    pub(crate) fn retire(&self, total: &Arc<AtomicU64>) {
        if self.retired.get().is_some() {
            return;
        }
        let counted = self.connect.successes();
        total.fetch_add(counted, Ordering::Relaxed);
        let _ = self.retired.set(Retired {
            to: Arc::clone(total),
            counted,
        });
    }

    /// Returns one slot. Saturates at zero rather than wrapping.
    pub fn release(&self) {
        let _ = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| a.checked_sub(1));
    }
}

impl Drop for BackendLoad {
    fn drop(&mut self) {
        if let Some(r) = self.retired.get() {
            let late = self.connect.successes().saturating_sub(r.counted);
            r.to.fetch_add(late, Ordering::Relaxed);
        }
    }
}

/// A region: a POP location that backends and countries map to.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// `regions.id`.
    pub id: RegionId,
    /// Display name (`regions.name`), when set.
    pub name: Option<String>,
    /// Location of the region's POP.
    pub point: GeoPoint,
}

/// One validated backend row, with its live connection counter attached.
#[derive(Debug)]
pub struct Backend {
    /// `backends.id`.
    pub id: BackendId,
    /// `backends.app`.
    pub app: AppId,
    /// `backends.region`, known to be in the regions table.
    pub region: RegionId,
    /// Index of `region` in the snapshot's region list (for fast comparison).
    pub(crate) region_idx: u16,
    /// Country of the backend's site, when set.
    pub country: Option<CountryCode>,
    /// Site coordinates: the row's own, or its region's when NULL.
    pub site: GeoPoint,
    /// `site` as a unit vector, for distance ordering without trigonometry.
    pub(crate) site_vec: [f64; 3],
    /// Address dialed: `wg_ip`:`port`.
    pub addr: SocketAddr,
    /// `backends.healthy` (the operator's word; 0 always wins).
    pub healthy: bool,
    /// `backends.weight`: capacity multiplier; 0 takes no new clients.
    pub weight: u32,
    /// Above this many connections the backend yields to any peer of the same proximity.
    pub soft_limit: u32,
    /// Never more than this many connections at once.
    pub hard_limit: u32,
    /// `backends.deleted` (soft delete).
    pub deleted: bool,
    /// Live connection count, shared across reloads.
    pub load: Arc<BackendLoad>,
}

impl Backend {
    /// Eligible regardless of load: healthy, not deleted, weight above zero.
    pub fn statically_eligible(&self) -> bool {
        self.healthy && !self.deleted && self.weight > 0
    }

    /// Connections currently held.
    pub fn active(&self) -> u32 {
        self.load.active()
    }

    /// Same configuration as `other` (everything but the live counter).
    pub fn same_config(&self, other: &Backend) -> bool {
        self.id == other.id
            && self.app == other.app
            && self.region == other.region
            && self.country == other.country
            && self.site == other.site
            && self.addr == other.addr
            && self.healthy == other.healthy
            && self.weight == other.weight
            && self.soft_limit == other.soft_limit
            && self.hard_limit == other.hard_limit
            && self.deleted == other.deleted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_never_exceeds_hard_limit_and_saturates_at_zero() {
        let l = BackendLoad::default();
        assert!(l.try_acquire(2));
        assert!(l.try_acquire(2));
        assert!(!l.try_acquire(2));
        assert_eq!(l.active(), 2);
        l.release();
        l.release();
        l.release();
        assert_eq!(l.active(), 0);
        assert!(!l.try_acquire(0));
    }

    #[test]
    fn concurrent_acquire_respects_hard_limit() {
        let l = Arc::new(BackendLoad::default());
        let got: u32 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let l = &l;
                    s.spawn(move || (0..1000).filter(|_| l.try_acquire(50)).count() as u32)
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(got, 50);
        assert_eq!(l.active(), 50);
    }
}
