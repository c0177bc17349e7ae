//! Hard limits across the fleet by lease (`geoedge run --nats`): the NATS
//! side of [`LeaseOwner`] and [`LeaseGate`]. The owner of a backend is the
//! edge whose `--region` is the backend's region; it answers lease
//! requests on core NATS subject `geoedge.lease.REGION` (request and
//! reply), lending what fits
//! beside its own connections. This edge asks the owners of the other
//! POPs' backends its clients want for slots every [`LEASE_TICK`] while it
//! uses them (a lease lasts [`LEASE_TERM`] from its request), and admits
//! clients there only within them; an owner that does not answer within
//! [`LEASE_REQUEST_TIMEOUT`] leaves the edge to its fallback. A client
//! that finds no lease yet has it asked for at once and waits a moment for
//! the answer ([`LeaseWait`]).
//!
//! [`LEASE_TICK`]: crate::control::config::defaults::LEASE_TICK
//! [`LEASE_TERM`]: crate::control::config::defaults::LEASE_TERM
//! [`LEASE_REQUEST_TIMEOUT`]: crate::control::config::defaults::LEASE_REQUEST_TIMEOUT

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use geoedge_routing::global::{Grant, LeaseGate, LeaseOwner};
use geoedge_routing::{BackendId, PopId, RegionId, RoutingTable};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::follow::FollowState;
use super::{store, LEASE_SUBJECT_PREFIX};
use crate::control::config::defaults::{
    FLEET_RETRY, FLEET_RETRY_MAX, LEASE_MIN_SLOTS, LEASE_REQUEST_TIMEOUT, LEASE_TERM, LEASE_TICK,
};
use crate::control::config::FleetSettings;
use crate::data::lease_wait::LeaseWait;

/// A lease request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The asking POP.
    pub from: String,
    /// The backend's id.
    pub backend: String,
    /// Slots wanted.
    pub want: u32,
}

/// The owner's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReply {
    /// Slots lent (0: none).
    pub slots: u32,
    /// For how long from the request, in ms.
    pub lasts_ms: u64,
}

/// The outcome of a lease request (the `result` label of
/// `edge_fleet_lease_requests_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// All the slots asked for.
    Granted,
    /// Some.
    Partial,
    /// None: the owner has no room.
    Refused,
    /// No answer in time (the fallback applies).
    Unanswered,
}

impl RequestResult {
    /// Every result, in label order.
    pub const ALL: [RequestResult; 4] = [
        RequestResult::Granted,
        RequestResult::Partial,
        RequestResult::Refused,
        RequestResult::Unanswered,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Granted => "granted",
            RequestResult::Partial => "partial",
            RequestResult::Refused => "refused",
            RequestResult::Unanswered => "unanswered",
        }
    }
}

/// Starts lending this POP's backends and borrowing the others'; abort
/// the task to stop.
pub fn spawn(
    fleet: FleetSettings,
    table: Arc<RoutingTable>,
    gate: Arc<LeaseGate>,
    wait: Arc<LeaseWait>,
    state: Arc<FollowState>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let name = format!("geoedge {} leases", fleet.pop);
        let mut backoff = FLEET_RETRY;
        // Until connected, every request goes unanswered at once (the
        // fallback applies), also for the clients that wait for one.
        let unanswered = || ask(None, &table, &gate, &wait, &state, Instant::now());
        let client = loop {
            let connecting = store::connect(&fleet, &name, None);
            tokio::pin!(connecting);
            let connected = loop {
                tokio::select! {
                    r = &mut connecting => break r,
                    _ = wait.wanted() => unanswered(),
                }
            };
            match connected {
                Ok((c, _)) => break c,
                Err(e) => {
                    tracing::debug!("leases: {e:#}");
                    unanswered();
                    let pause = tokio::time::sleep(backoff);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            _ = &mut pause => break,
                            _ = wait.wanted() => unanswered(),
                        }
                    }
                    backoff = (backoff * 2).min(FLEET_RETRY_MAX);
                }
            }
        };
        let owner = Arc::new(LeaseOwner::new(LEASE_TERM, gate.quiet_until()));
        loop {
            if let Err(e) = serve(&client, &table, &gate, &owner, &wait, &state).await {
                tracing::warn!("leases: {e:#}");
                tokio::time::sleep(FLEET_RETRY).await;
            }
        }
    })
}

async fn serve(
    client: &async_nats::Client,
    table: &Arc<RoutingTable>,
    gate: &Arc<LeaseGate>,
    owner: &Arc<LeaseOwner>,
    wait: &Arc<LeaseWait>,
    state: &Arc<FollowState>,
) -> anyhow::Result<()> {
    let mut requests = client
        .subscribe(format!("{LEASE_SUBJECT_PREFIX}{}", gate.region()))
        .await
        .map_err(|e| anyhow::anyhow!("subscribing to lease requests: {e}"))?;
    let mut tick = tokio::time::interval(LEASE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = requests.next() => {
                let Some(msg) = msg else { anyhow::bail!("the lease subscription ended") };
                let Some(reply) = msg.reply else { continue };
                let answer = match serde_json::from_slice::<LeaseRequest>(&msg.payload) {
                    Ok(r) => lend(table, owner, gate, &r, Instant::now()),
                    Err(e) => {
                        tracing::debug!("ignoring a lease request that does not parse: {e}");
                        continue;
                    }
                };
                let payload = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(e) = client.publish(reply, payload.into()).await {
                    tracing::debug!("answering a lease request: {e}");
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let snap = table.snapshot();
                owner.handle_timeout(snap.backends.iter().map(|b| &**b), now);
                // The fleet's POPs, for the fallback share: one per region
                // of the table's backends (stable through partitions and
                // restarts), or more if more edges report.
                let regions: std::collections::HashSet<&str> =
                    snap.backends.iter().map(|b| b.region.as_str()).collect();
                let heard = 1 + state.load_reporters.load(Ordering::Relaxed) as usize;
                gate.set_pops(regions.len().max(heard));
                ask(connected(client), table, gate, wait, state, now);
            }
            // A client waits for a lease: ask now, not at the next tick.
            _ = wait.wanted() => {
                ask(connected(client), table, gate, wait, state, Instant::now());
            }
        }
    }
}

/// The owner's answer to `r`.
fn lend(
    table: &RoutingTable,
    owner: &LeaseOwner,
    gate: &LeaseGate,
    r: &LeaseRequest,
    now: Instant,
) -> LeaseReply {
    let snap = table.snapshot();
    let lasts_ms = u64::try_from(LEASE_TERM.as_millis()).unwrap_or(u64::MAX);
    match snap.backend(&r.backend) {
        Some(b) if !gate.is_remote(b) && r.from != gate.own().as_str() => {
            let g = owner.handle_request(b, &PopId::new(&r.from), r.want, now);
            LeaseReply {
                slots: g.slots,
                lasts_ms: u64::try_from(g.lasts.as_millis()).unwrap_or(u64::MAX),
            }
        }
        // Not ours (or unknown here): nothing to lend.
        _ => LeaseReply { slots: 0, lasts_ms },
    }
}

/// The client while it is connected: while it is not, a request could
/// only time out, and the owners count as unreachable at once.
fn connected(client: &async_nats::Client) -> Option<&async_nats::Client> {
    (client.connection_state() == async_nats::connection::State::Connected).then_some(client)
}

/// Sends the lease requests due at `now` (each on a task of its own);
/// without a client, each counts as unanswered at once.
fn ask(
    client: Option<&async_nats::Client>,
    table: &RoutingTable,
    gate: &Arc<LeaseGate>,
    wait: &Arc<LeaseWait>,
    state: &Arc<FollowState>,
    now: Instant,
) {
    let snap = table.snapshot();
    let due: Vec<(BackendId, u64, u32, RegionId)> = gate.with_holder(|h| {
        let mut due = Vec::new();
        for id in h.backends() {
            if !h.wants_renewal(&id, LEASE_TERM, now) {
                continue;
            }
            let Some(b) = snap.backend(id.as_str()) else {
                continue;
            };
            let want = h.want(&id, LEASE_MIN_SLOTS);
            let req = h.handle_sent(&id, now);
            due.push((id, req, want, LeaseGate::owner_of(b).clone()));
        }
        due
    });
    for (backend, id, want, owner) in due {
        let Some(client) = client else {
            gate.with_holder(|h| h.handle_unanswered(&backend, id));
            count(state, RequestResult::Unanswered);
            wait.answered();
            continue;
        };
        let client = client.clone();
        let gate = Arc::clone(gate);
        let wait = Arc::clone(wait);
        let state = Arc::clone(state);
        let request = LeaseRequest {
            from: gate.own().to_string(),
            backend: backend.to_string(),
            want,
        };
        tokio::spawn(async move {
            let payload = serde_json::to_vec(&request).unwrap_or_default();
            let subject = format!("{LEASE_SUBJECT_PREFIX}{owner}");
            let answer = tokio::time::timeout(
                LEASE_REQUEST_TIMEOUT,
                client.request(subject, payload.into()),
            )
            .await;
            let reply = match answer {
                Ok(Ok(msg)) => serde_json::from_slice::<LeaseReply>(&msg.payload).ok(),
                _ => None,
            };
            match reply {
                Some(r) => {
                    let grant = Grant {
                        slots: r.slots,
                        lasts: Duration::from_millis(r.lasts_ms),
                    };
                    gate.with_holder(|h| h.handle_grant(&backend, id, grant));
                    count(
                        &state,
                        if r.slots == 0 {
                            RequestResult::Refused
                        } else if r.slots < want {
                            RequestResult::Partial
                        } else {
                            RequestResult::Granted
                        },
                    );
                }
                None => {
                    gate.with_holder(|h| h.handle_unanswered(&backend, id));
                    count(&state, RequestResult::Unanswered);
                }
            }
            // Clients waiting for it decide again.
            wait.answered();
        });
    }
}

fn count(state: &FollowState, r: RequestResult) {
    state.lease_requests[r as usize].fetch_add(1, Ordering::Relaxed);
}
