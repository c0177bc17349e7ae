//! Sharing backend load across the fleet (`geoedge run --nats`): every
//! [`LOAD_INTERVAL`] (and at once when a count moves a lot) this edge
//! publishes, on core NATS subject `geoedge.load.POP`, the live connection
//! count and accept rate of each backend it holds connections to; it keeps
//! the other edges' last reports in a [`LoadBoard`] (a report counts for
//! [`LOAD_MAX_AGE`]) and sets each backend's remote count from it, which
//! scoring adds to this edge's own against the soft limit. Without NATS,
//! or with every other edge silent, the remote counts are 0: per-edge
//! behaviour.
//!
//! [`LOAD_INTERVAL`]: crate::control::config::defaults::LOAD_INTERVAL
//! [`LOAD_MAX_AGE`]: crate::control::config::defaults::LOAD_MAX_AGE

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use geoedge_routing::global::{LeaseGate, LeaseView, LoadBoard, RemoteLoad};
use geoedge_routing::{BackendId, PopId, RoutingTable};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use super::follow::FollowState;
use super::{store, LOAD_SUBJECT_PREFIX};
use crate::control::config::defaults::{
    FLEET_RETRY, FLEET_RETRY_MAX, LOAD_BIG_CHANGE, LOAD_INTERVAL, LOAD_MAX_AGE,
};
use crate::control::config::FleetSettings;

/// One edge's report, as published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The reporting POP.
    pub pop: String,
    /// Its report number (increasing).
    pub seq: u64,
    /// By backend id: live connections and accepts per second.
    pub backends: HashMap<String, (u32, f32)>,
    /// By backend id: what this POP holds of other POPs' backends (a
    /// lease, or the fallback without one). For display (`geoedge route`).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub leases: HashMap<String, LeaseView>,
    /// By backend id: slots of this POP's backends lent to the others.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub lent: HashMap<String, u32>,
}

/// Starts sharing load; abort the task to stop.
pub fn spawn(
    fleet: FleetSettings,
    table: Arc<RoutingTable>,
    leases: Option<Arc<LeaseGate>>,
    state: Arc<FollowState>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = FLEET_RETRY;
        let name = format!("geoedge {} load", fleet.pop);
        let client = loop {
            match store::connect(&fleet, &name, None).await {
                Ok((c, _)) => break c,
                Err(e) => {
                    tracing::debug!("load sharing: {e:#}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(FLEET_RETRY_MAX);
                }
            }
        };
        let mut sharing = Sharing {
            own: PopId::new(&fleet.pop),
            board: LoadBoard::new(PopId::new(&fleet.pop), LOAD_MAX_AGE),
            table,
            leases,
            state,
            seq: 0,
            sent: HashMap::new(),
            successes: HashMap::new(),
            last_sent: None,
        };
        loop {
            if let Err(e) = sharing.run(&client).await {
                tracing::warn!("load sharing: {e:#}");
                tokio::time::sleep(FLEET_RETRY_MAX).await;
            }
        }
    })
}

/// The load-sharing task's state.
struct Sharing {
    /// This POP.
    own: PopId,
    /// The other edges' reports.
    board: LoadBoard,
    /// The backends.
    table: Arc<RoutingTable>,
    /// This edge's leases, reported beside the load.
    leases: Option<Arc<LeaseGate>>,
    /// What the metrics read.
    state: Arc<FollowState>,
    /// The last report number sent.
    seq: u64,
    /// The live counts last sent, by backend.
    sent: HashMap<BackendId, u32>,
    /// Successful connects at the last report, by backend (for the rate).
    successes: HashMap<BackendId, u64>,
    /// When the last report went out.
    last_sent: Option<Instant>,
}

impl Sharing {
    async fn run(&mut self, client: &async_nats::Client) -> anyhow::Result<()> {
        let mut reports = client
            .subscribe(format!("{LOAD_SUBJECT_PREFIX}*"))
            .await
            .map_err(|e| anyhow::anyhow!("subscribing to load reports: {e}"))?;
        // Looked at often, sent every interval or on a large change.
        let mut tick = tokio::time::interval(LOAD_INTERVAL / 5);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                msg = reports.next() => {
                    let Some(msg) = msg else { anyhow::bail!("the load subscription ended") };
                    match serde_json::from_slice::<LoadReport>(&msg.payload) {
                        Ok(r) => self.handle_report(r, Instant::now()),
                        Err(e) => tracing::debug!("ignoring a load report that does not parse: {e}"),
                    }
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if let Some(report) = self.poll_report(now) {
                        let subject = format!("{LOAD_SUBJECT_PREFIX}{}", self.own);
                        let payload = serde_json::to_vec(&report).unwrap_or_default();
                        if let Err(e) = client.publish(subject, payload.into()).await {
                            tracing::debug!("publishing a load report: {e}");
                        }
                    }
                    self.board.handle_timeout(now);
                    self.apply(now);
                }
            }
        }
    }

    fn handle_report(&mut self, r: LoadReport, now: Instant) {
        let backends = r
            .backends
            .into_iter()
            .map(|(id, (live, accept_rate))| {
                (BackendId::new(&id), RemoteLoad { live, accept_rate })
            })
            .collect();
        if self
            .board
            .handle_report(PopId::new(&r.pop), r.seq, backends, now)
        {
            self.apply(now);
        }
    }

    /// Sets every backend's remote count from the board.
    fn apply(&self, now: Instant) {
        let snap = self.table.snapshot();
        for b in &snap.backends {
            b.load.set_remote(self.board.remote(&b.id, now));
        }
        let age = self.board.freshest_age(now).map_or(u64::MAX, |a| {
            u64::try_from(a.as_millis()).unwrap_or(u64::MAX)
        });
        self.state.load_report_age_ms.store(age, Ordering::Relaxed);
        self.state
            .load_reporters
            .store(self.board.reporting(now) as u64, Ordering::Relaxed);
    }

    /// The report to send now, if it is time (an interval since the last)
    /// or a count moved by [`LOAD_BIG_CHANGE`] or more.
    fn poll_report(&mut self, now: Instant) -> Option<LoadReport> {
        let snap = self.table.snapshot();
        let due = self
            .last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= LOAD_INTERVAL);
        let big = snap.backends.iter().any(|b| {
            let before = self.sent.get(&b.id).copied().unwrap_or(0);
            b.active().abs_diff(before) >= LOAD_BIG_CHANGE
        });
        if !due && !big {
            return None;
        }
        let elapsed = self
            .last_sent
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f32());
        let mut backends = HashMap::new();
        let mut sent = HashMap::new();
        let mut successes = HashMap::new();
        let mut leases = HashMap::new();
        let mut lent = HashMap::new();
        for b in &snap.backends {
            match &self.leases {
                Some(gate) if gate.is_remote(b) => {
                    if let Some(v) = gate.view(b, now) {
                        leases.insert(b.id.to_string(), v);
                    }
                }
                _ if b.load.lent() > 0 => {
                    lent.insert(b.id.to_string(), b.load.lent());
                }
                _ => {}
            }
            let live = b.active();
            let ok = b.load.connect_stats().successes();
            let rate = match (self.successes.get(&b.id), elapsed > 0.0) {
                (Some(before), true) => ok.saturating_sub(*before) as f32 / elapsed,
                _ => 0.0,
            };
            successes.insert(b.id.clone(), ok);
            // A backend is reported while it has connections, and once more
            // at 0 so the others drop it.
            if live > 0 || self.sent.get(&b.id).is_some_and(|n| *n > 0) {
                backends.insert(b.id.to_string(), (live, rate));
            }
            if live > 0 {
                sent.insert(b.id.clone(), live);
            }
        }
        self.sent = sent;
        self.successes = successes;
        self.last_sent = Some(now);
        self.seq += 1;
        Some(LoadReport {
            pop: self.own.to_string(),
            seq: self.seq,
            backends,
            leases,
            lent,
        })
    }
}

/// The fleet's load reports heard within `wait` (at least one report
/// interval): the last one of each POP, by POP. For `geoedge route`.
pub async fn listen(
    fleet: &FleetSettings,
    wait: std::time::Duration,
) -> anyhow::Result<HashMap<String, LoadReport>> {
    let (client, errors) = store::connect(fleet, "geoedge route", None).await?;
    let mut reports = client
        .subscribe(format!("{LOAD_SUBJECT_PREFIX}*"))
        .await
        .map_err(|e| errors.explain(anyhow::anyhow!("subscribing to load reports: {e}")))?;
    let mut heard: HashMap<String, LoadReport> = HashMap::new();
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            msg = reports.next() => {
                let Some(msg) = msg else { break };
                if let Ok(r) = serde_json::from_slice::<LoadReport>(&msg.payload) {
                    if heard.get(&r.pop).is_none_or(|held| held.seq < r.seq) {
                        heard.insert(r.pop.clone(), r);
                    }
                }
            }
        }
    }
    if let Some(said) = errors.take() {
        anyhow::bail!("listening for load reports: the NATS server said: {said}");
    }
    Ok(heard)
}
