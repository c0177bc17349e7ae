//! The decision: sticky binding first, then the best backend by proximity and
//! load, with an atomic reservation so hard limits hold under bursts.
//!
//! Sans-IO: the caller passes the client's GeoIP [`Location`] and `now`;
//! nothing here touches a socket, a file or a clock. The edge proxy calls
//! [`Router::decide`] once per connection (and again with `exclude` when a
//! connect fails) and reports each connect's result
//! ([`Router::report_connect`]); the active checker reports its checks
//! ([`Router::report_check`]); `geoedge route` calls [`Router::explain`].
//! Backends that their health does not admit (down, or ejected without a
//! trial due) are skipped, and a sticky binding to one moves.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use geoedge_geoip::Location;

use crate::bindings::{BindingConfig, BindingKey, Bindings};
use crate::connect::ConnectFailure;
use crate::global::{spill, Admit, LeaseGate, LeaseSlot};
use crate::health::{CheckStats, HealthChange, HealthConfig, HealthState};
use crate::model::{AppId, Backend, BackendId, RegionId};
use crate::score::{self, Placement, Ranked, Tier, WhyNot};
use crate::table::{Reservation, RoutingTable};

/// How a decision was reached: a small, fixed set usable as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// The client's binding was honoured.
    Sticky,
    /// A backend in the client's country.
    Country,
    /// A backend in the client's region.
    Region,
    /// The nearest backend by distance.
    Distance,
    /// No backend could take the client.
    None,
}

impl DecisionKind {
    /// Every kind, for pre-registering metric series.
    pub const ALL: [DecisionKind; 5] = [
        DecisionKind::Sticky,
        DecisionKind::Country,
        DecisionKind::Region,
        DecisionKind::Distance,
        DecisionKind::None,
    ];

    /// Lower-case label.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecisionKind::Sticky => "sticky",
            DecisionKind::Country => "country",
            DecisionKind::Region => "region",
            DecisionKind::Distance => "distance",
            DecisionKind::None => "none",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Tier> for DecisionKind {
    fn from(t: Tier) -> Self {
        match t {
            Tier::Country => DecisionKind::Country,
            Tier::Region => DecisionKind::Region,
            Tier::Distance => DecisionKind::Distance,
        }
    }
}

/// Decisions by kind, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct DecisionStats {
    /// Indexed by [`DecisionKind`] in the order of [`DecisionKind::ALL`].
    counts: [AtomicU64; 5],
}

impl DecisionStats {
    /// Decisions of one kind so far.
    pub fn count(&self, kind: DecisionKind) -> u64 {
        self.counts[kind.index()].load(Ordering::Relaxed)
    }

    fn record(&self, kind: DecisionKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// One client asking for a backend.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The app the client connected for.
    pub app: &'a AppId,
    /// The client's address (from the socket or a trusted PROXY header).
    pub ip: IpAddr,
    /// What GeoIP found, or `None` (private, not found, no database).
    pub location: Option<&'a Location>,
    /// Backends already tried for this connection (failover); empty at first.
    pub exclude: &'a [BackendId],
}

/// A chosen backend with its slot held.
#[derive(Debug)]
pub struct Route {
    /// The held slot; dropping it releases the backend's connection count.
    pub reservation: Reservation,
    /// How the backend was chosen.
    pub kind: DecisionKind,
    /// For another POP's backend in a fleet with leases: the slot of this
    /// edge's lease (or fallback) the client holds; given back when
    /// dropped.
    pub lease: Option<LeaseSlot>,
    /// A better backend was left out because this edge is still asking
    /// its owner for a lease of it: the caller may give the route back,
    /// wait a moment for the lease, and decide again.
    pub lease_pending: bool,
}

impl Route {
    /// The chosen backend.
    pub fn backend(&self) -> &Arc<Backend> {
        self.reservation.backend()
    }
}

/// Why no backend was chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// The table has no backend for the app.
    #[error("no backend is configured for app {0:?}")]
    UnknownApp(AppId),
    /// Every backend of the app is unhealthy, deleted, drained, at its hard limit or already tried.
    #[error("no eligible backend for app {0:?}")]
    NoneEligible(AppId),
}

/// One backend in an explanation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Candidate {
    /// Backend id.
    pub id: BackendId,
    /// Load figure compared within a proximity level: `active ÷ (soft_limit × weight)`; lower wins.
    pub score: f64,
    /// Proximity tier for this client.
    pub tier: Tier,
    /// Great-circle distance from the client to the backend's site.
    pub distance_km: Option<f64>,
    /// Connections held now.
    pub active: u32,
    /// Soft limit.
    pub soft_limit: u32,
    /// Hard limit.
    pub hard_limit: u32,
    /// Weight.
    pub weight: u32,
    /// Region.
    pub region: RegionId,
    /// Health: `up`, `down` (active checks), `ejected` (connect failures)
    /// or `operator_down` (`healthy = 0`).
    pub health: HealthState,
    /// Whether it could take the client now.
    pub eligible: bool,
    /// Why not, when ineligible.
    pub why_not: Option<WhyNot>,
}

/// Why a fresh client from an address would get the backend it would get.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Where the client was placed.
    pub placement: Placement,
    /// The region the client was placed in.
    pub region: Option<RegionId>,
    /// The backend it would get, if any.
    pub backend: Option<BackendId>,
    /// How.
    pub kind: DecisionKind,
    /// A sentence saying why.
    pub reason: String,
    /// Every backend of the app, best first, ineligible ones last.
    pub candidates: Vec<Candidate>,
    /// In a fleet, when the choice is a spill: the backends it is spread
    /// over and each one's share; empty otherwise.
    pub spread: Vec<SpreadShare>,
}

/// One backend a spill is spread over.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpreadShare {
    /// Backend id.
    pub id: BackendId,
    /// Room left under its soft limit, by the fleet's load.
    pub headroom: u32,
    /// The fraction of spilled clients it gets.
    pub share: f64,
}

/// Chooses backends for clients: the routing table, the binding table and
/// this POP's region.
#[derive(Debug)]
pub struct Router {
    /// The live routing table.
    table: Arc<RoutingTable>,
    /// Sticky bindings.
    bindings: Bindings,
    /// This POP's region: where clients without a location are placed.
    local_region: RegionId,
    /// Decisions by kind.
    stats: DecisionStats,
    /// Rise, fall and ejection settings for every backend's health.
    health: HealthConfig,
    /// Active check results by outcome.
    checks: CheckStats,
    /// Leases of other POPs' backends (a fleet with `--nats`); `None`:
    /// each backend's hard limit is held by this edge's count alone.
    leases: Option<Arc<LeaseGate>>,
    /// In a fleet, spills are spread over the next backends with room
    /// ([`score::spill_window`]); the draws come from this sequence.
    spread: Option<Draws>,
}

/// A sequence of draws in `[0, 1)` for spreading spills: a counter
/// through SplitMix64, seeded by the caller. Deterministic for a seed (so
/// tests can count shares), shared by every worker without a lock.
#[derive(Debug)]
struct Draws {
    /// The seed.
    seed: u64,
    /// Draws taken.
    next: AtomicU64,
    /// Decisions spread.
    spread: AtomicU64,
}

impl Draws {
    fn draw(&self) -> f64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut z = self
            .seed
            .wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // The top 53 bits as a fraction.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Router {
    /// A router over a live table, for a POP in `local_region`, with the
    /// default health settings.
    pub fn new(table: Arc<RoutingTable>, local_region: RegionId, bindings: BindingConfig) -> Self {
        Self {
            table,
            bindings: Bindings::new(bindings),
            local_region,
            stats: DecisionStats::default(),
            health: HealthConfig::default(),
            checks: CheckStats::default(),
            leases: None,
            spread: None,
        }
    }

    /// Spreads spills over the next backends with room, in proportion to
    /// their headroom (a fleet: several edges act on the same figures);
    /// `seed` starts the sequence of draws.
    pub fn with_spill_spread(mut self, seed: u64) -> Self {
        self.spread = Some(Draws {
            seed,
            next: AtomicU64::new(0),
            spread: AtomicU64::new(0),
        });
        self
    }

    /// Decisions that spread a spill (0 without spreading).
    pub fn spills_spread(&self) -> u64 {
        self.spread
            .as_ref()
            .map_or(0, |d| d.spread.load(Ordering::Relaxed))
    }

    /// In a fleet, a spill's choice among the next backends with room.
    fn spread_spill(
        &self,
        snap: &crate::snapshot::Snapshot,
        view: &crate::snapshot::AppView,
        placement: &Placement,
        exclude: &[BackendId],
        best: score::Score,
        now: Instant,
    ) -> score::Score {
        let Some(draws) = &self.spread else {
            return best;
        };
        if best.over_soft
            || best.tier == Tier::Country
            || (best.tier == Tier::Region && !score::country_is_full(view, placement, now))
        {
            return best;
        }
        let Some(window) = score::spill_window(snap, view, placement, exclude, now) else {
            return best;
        };
        match spill::choose(&window.headroom[..window.len], window.len, draws.draw()) {
            Some(i) => {
                draws.spread.fetch_add(1, Ordering::Relaxed);
                window.scores[i]
            }
            None => best,
        }
    }

    /// Admits clients to other POPs' backends only within this edge's
    /// leases of them ([`LeaseGate`]).
    pub fn with_leases(mut self, gate: Arc<LeaseGate>) -> Self {
        self.leases = Some(gate);
        self
    }

    /// The lease gate, when leases are on.
    pub fn leases(&self) -> Option<&Arc<LeaseGate>> {
        self.leases.as_ref()
    }

    /// The same router with these health settings.
    pub fn with_health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// The health settings.
    pub fn health_config(&self) -> &HealthConfig {
        &self.health
    }

    /// Active check results by outcome.
    pub fn check_stats(&self) -> &CheckStats {
        &self.checks
    }

    /// Records the result of a connect to `backend` made at the proxy's
    /// request (passive health). Returns the change it caused, if any, for
    /// the caller to log. A connect this host failed to make
    /// ([`ConnectFailure::Local`]) must not be reported: it says nothing
    /// about the backend.
    pub fn report_connect(
        &self,
        backend: &Backend,
        ok: bool,
        now: Instant,
    ) -> Option<HealthChange> {
        backend.load.health().on_connect(ok, now, &self.health)
    }

    /// Records that a connect to `backend` came back to this edge (a
    /// connection loop): the backend is ejected for the longest backoff.
    pub fn report_loop(&self, backend: &Backend, now: Instant) -> HealthChange {
        backend.load.health().on_loop(now, &self.health)
    }

    /// Records the result of an active check of `backend`. Returns the
    /// change it caused, if any, for the caller to log. A check this host
    /// failed to make ([`ConnectFailure::Local`]) is counted but says
    /// nothing about the backend: it moves neither the rise nor the fall
    /// counter.
    pub fn report_check(
        &self,
        backend: &Backend,
        result: Result<(), ConnectFailure>,
        now: Instant,
    ) -> Option<HealthChange> {
        self.checks.record(result);
        if result == Err(ConnectFailure::Local) {
            return None;
        }
        backend
            .load
            .health()
            .on_check(result.is_ok(), now, &self.health)
    }

    /// The live table.
    pub fn table(&self) -> &Arc<RoutingTable> {
        &self.table
    }

    /// The binding table.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Decisions by kind.
    pub fn stats(&self) -> &DecisionStats {
        &self.stats
    }

    /// This POP's region.
    pub fn local_region(&self) -> &RegionId {
        &self.local_region
    }

    /// Chooses a backend for a client and holds a slot on it. A live binding
    /// to an eligible, admitted backend wins; otherwise the best backend is
    /// chosen and the client is (re)bound to it. An ejected backend whose
    /// trial is due is chosen by one decision only (the trial).
    pub fn decide(&self, req: &Request<'_>, now: Instant) -> Result<Route, NoRoute> {
        let snap = self.table.snapshot_guard();
        let Some(view) = snap.app(req.app.as_str()) else {
            self.stats.record(DecisionKind::None);
            return Err(NoRoute::UnknownApp(req.app.clone()));
        };
        let key = self.bindings.key(req.app, req.ip);
        if req.exclude.is_empty() {
            if let Some(route) = self.sticky(&snap, &key, req, now) {
                self.stats.record(DecisionKind::Sticky);
                return Ok(route);
            }
        }
        let local = snap.region_index(self.local_region.as_str());
        let placement = Placement::new(&snap, req.location, local);
        // A first pass leaves out other POPs' backends this edge is still
        // asking a lease of; when nothing else takes the client, a second
        // admits it there within the fallback.
        let mut waiting = false;
        for last_resort in [false, true] {
            if last_resort && !waiting {
                break;
            }
            // Backends whose lease is used up, after those already tried;
            // allocated only when one is.
            let mut skipped: Vec<BackendId> = Vec::new();
            // A lost race for a backend's last slot just moves on to the
            // next best.
            for _ in 0..=view.candidates.len() {
                let exclude = if skipped.is_empty() {
                    req.exclude
                } else {
                    &skipped
                };
                let Some(best) = score::best(&snap, view, &placement, exclude, now) else {
                    break;
                };
                let best = self.spread_spill(&snap, view, &placement, exclude, best, now);
                let backend = &snap.backends[best.index as usize];
                let Some(reservation) = Reservation::try_new(backend) else {
                    continue;
                };
                let lease = match self.lease_for(backend, now, last_resort) {
                    Ok(lease) => lease,
                    Err(why) => {
                        // No slot of it for this edge now: the next best.
                        waiting |= why == Admit::Waiting;
                        drop(reservation);
                        if skipped.is_empty() {
                            skipped.extend_from_slice(req.exclude);
                        }
                        skipped.push(backend.id.clone());
                        continue;
                    }
                };
                if !backend.load.health().claim_trial(now) {
                    // Another decision took the trial: the next best, then.
                    drop(reservation);
                    continue;
                }
                // A client that had to leave out a better backend for want
                // of its lease is not bound to this one: once the lease is
                // there, it goes to the better one.
                if !waiting {
                    self.bindings.bind(key, backend.id.clone(), now);
                }
                let kind = DecisionKind::from(best.tier);
                self.stats.record(kind);
                return Ok(Route {
                    reservation,
                    kind,
                    lease,
                    lease_pending: waiting,
                });
            }
        }
        self.stats.record(DecisionKind::None);
        Err(NoRoute::NoneEligible(req.app.clone()))
    }

    fn sticky(
        &self,
        snap: &crate::snapshot::Snapshot,
        key: &BindingKey,
        req: &Request<'_>,
        now: Instant,
    ) -> Option<Route> {
        let id = self.bindings.lookup(key, now)?;
        let backend = snap.backend(id.as_str())?;
        if backend.app != *req.app
            || !backend.statically_eligible()
            || !backend.load.health().is_admitted()
        {
            return None;
        }
        let reservation = Reservation::try_new(backend)?;
        let lease = self.lease_for(backend, now, false).ok()?;
        Some(Route {
            reservation,
            kind: DecisionKind::Sticky,
            lease,
            lease_pending: false,
        })
    }

    /// The lease slot a client of `backend` needs: `Ok(None)` for this
    /// POP's own backends (or without leases); for another POP's, a slot
    /// of the lease, or of the fallback when its owner is silent (or, as a
    /// `last_resort`, while it is asked); refused when there is no room
    /// or a lease is being asked for ([`Admit::Waiting`]), and for its own
    /// beyond the fallback share while it is quiet after a restart.
    fn lease_for(
        &self,
        backend: &Backend,
        now: Instant,
        last_resort: bool,
    ) -> Result<Option<LeaseSlot>, Admit> {
        match &self.leases {
            Some(gate) if gate.is_remote(backend) => {
                LeaseSlot::try_new(gate, backend, now, last_resort).map(Some)
            }
            // Just restarted: what this edge lent before may still be in
            // use; until those leases have run out its own backends take
            // what the fallback would give a borrower.
            Some(gate) if gate.quiet(now) => {
                if gate.admits_own_while_quiet(backend, backend.load.active()) {
                    Ok(None)
                } else {
                    Err(Admit::Full)
                }
            }
            _ => Ok(None),
        }
    }

    /// What a fresh client (no binding) from `req.ip` would get now, with
    /// every candidate scored. Reserves nothing and binds nothing.
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let snap = self.table.snapshot();
        let local = snap.region_index(self.local_region.as_str());
        let placement = Placement::new(&snap, req.location, local);
        let region = placement
            .region
            .and_then(|r| snap.region(r))
            .map(|r| r.id.clone());
        let Some(view) = snap.app(req.app.as_str()) else {
            return Explanation {
                placement,
                region,
                backend: None,
                kind: DecisionKind::None,
                reason: format!("no backend is configured for app {:?}", req.app.as_str()),
                candidates: Vec::new(),
                spread: Vec::new(),
            };
        };
        let ranked = score::rank(&snap, view, &placement, req.exclude);
        let candidates: Vec<Candidate> = ranked
            .iter()
            .map(|r| {
                let b = &snap.backends[r.score.index as usize];
                Candidate {
                    id: b.id.clone(),
                    score: r.score.load(),
                    tier: r.score.tier,
                    distance_km: placement.distance_km(b).map(|d| (d * 10.0).round() / 10.0),
                    active: r.score.active,
                    soft_limit: b.soft_limit,
                    hard_limit: b.hard_limit,
                    weight: b.weight,
                    region: b.region.clone(),
                    health: b.load.health().state(b.healthy),
                    eligible: r.why_not.is_none(),
                    why_not: r.why_not,
                }
            })
            .collect();
        let chosen = ranked.first().filter(|r| r.why_not.is_none());
        let mut reason = reason(
            &snap,
            &placement,
            &self.local_region,
            &ranked,
            chosen,
            req.app,
        );
        let spread = match chosen {
            Some(c) if self.spread.is_some() => spread_of(&snap, &ranked, c),
            _ => Vec::new(),
        };
        if !spread.is_empty() {
            let names: Vec<String> = spread
                .iter()
                .map(|s| format!("{} ({:.0}%)", s.id, s.share * 100.0))
                .collect();
            reason.push_str(&format!(
                "; in the fleet, spilled clients are spread by headroom over {}",
                names.join(", ")
            ));
        }
        Explanation {
            placement,
            region,
            backend: chosen.map(|r| snap.backends[r.score.index as usize].id.clone()),
            kind: chosen.map_or(DecisionKind::None, |r| r.score.tier.into()),
            reason,
            candidates,
            spread,
        }
    }
}

/// The spread of a spill, as [`Router::decide`] makes it: the first
/// [`score::SPILL_WIDTH`] eligible backends under their soft limit, when
/// an eligible backend nearer than the first is at or over its own.
fn spread_of(
    snap: &crate::snapshot::Snapshot,
    ranked: &[Ranked],
    chosen: &Ranked,
) -> Vec<SpreadShare> {
    if chosen.score.over_soft || chosen.score.tier == Tier::Country {
        return Vec::new();
    }
    let spilled = ranked.iter().any(|r| {
        r.why_not.is_none() && r.score.over_soft && r.score.proximity(&chosen.score).is_lt()
    });
    if !spilled {
        return Vec::new();
    }
    let window: Vec<(BackendId, u32)> = ranked
        .iter()
        .filter(|r| r.why_not.is_none() && !r.score.over_soft)
        .take(score::SPILL_WIDTH)
        .map(|r| {
            let b = &snap.backends[r.score.index as usize];
            (b.id.clone(), b.soft_limit.saturating_sub(r.score.active))
        })
        .collect();
    let total: u64 = window.iter().map(|(_, h)| u64::from(*h)).sum();
    if window.len() < 2 || total == 0 {
        return Vec::new();
    }
    window
        .into_iter()
        .map(|(id, headroom)| SpreadShare {
            id,
            headroom,
            share: f64::from(headroom) / total as f64,
        })
        .collect()
}

fn reason(
    snap: &crate::snapshot::Snapshot,
    p: &Placement,
    local_region: &RegionId,
    ranked: &[Ranked],
    chosen: Option<&Ranked>,
    app: &AppId,
) -> String {
    let mut s = String::new();
    let Some(c) = chosen else {
        let count = |w: WhyNot| ranked.iter().filter(|r| r.why_not == Some(w)).count();
        let mut s = format!(
            "no eligible backend for app {:?}: {} backends, {} unhealthy, {} deleted, {} weight 0, {} at hard limit",
            app.as_str(),
            ranked.len(),
            count(WhyNot::Unhealthy),
            count(WhyNot::Deleted),
            count(WhyNot::ZeroWeight),
            count(WhyNot::AtHardLimit),
        );
        for (w, what) in [(WhyNot::Down, "down"), (WhyNot::Ejected, "ejected")] {
            if count(w) > 0 {
                s.push_str(&format!(", {} {what}", count(w)));
            }
        }
        return s;
    };
    let b = &snap.backends[c.score.index as usize];
    match c.score.tier {
        Tier::Country => s.push_str(&format!(
            "in the client's country ({})",
            p.country.map(|c| c.to_string()).unwrap_or_default()
        )),
        Tier::Region => s.push_str(&format!("in the client's region ({})", b.region)),
        Tier::Distance => match p.distance_km(b) {
            Some(d) => s.push_str(&format!("nearest by great-circle distance ({d:.0} km)")),
            None => s.push_str("no proximity information: least loaded"),
        },
    }
    if c.score.over_soft {
        s.push_str("; every eligible backend is at or over its soft limit, so the nearest least loaded one");
    } else {
        let spilled = ranked.iter().any(|r| {
            r.why_not.is_none() && r.score.over_soft && r.score.proximity(&c.score).is_lt()
        });
        if spilled {
            s.push_str("; nearer backends are at or over their soft limit");
        } else {
            s.push_str(", under its soft limit");
        }
    }
    if !p.located {
        s.push_str(&format!(
            "; client not located by GeoIP, placed at this POP's region ({local_region})"
        ));
    }
    s
}

#[cfg(test)]
mod tests;
