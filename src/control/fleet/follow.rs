//! The task `geoedge run` runs with `--nats`: follows the current revision
//! of the fleet's routing table and installs it beside routing.db (the
//! routing.db watcher then applies it like any edit). It watches the
//! `current` key, rebuilds the watch after every reconnection, compares
//! the installed file with the current revision every
//! [`FLEET_CHECK_INTERVAL`] whatever the watch says, and writes this POP's
//! status key every [`FLEET_STATUS_INTERVAL`] and after each install.
//! While NATS is unreachable the edge serves the file it has, across its
//! own restarts; nothing here can stop the edge.
//!
//! [`FLEET_CHECK_INTERVAL`]: crate::control::config::defaults::FLEET_CHECK_INTERVAL
//! [`FLEET_STATUS_INTERVAL`]: crate::control::config::defaults::FLEET_STATUS_INTERVAL

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use tokio::task::JoinHandle;

use super::file;
use super::follower::{Follower, Step};
use super::revision::{RevisionInfo, Sha256Digest};
use super::status::PopStatus;
use super::store::{self, DigestMismatch, Store};
use crate::control::config::defaults::{
    FLEET_CHECK_INTERVAL, FLEET_RETRY, FLEET_RETRY_MAX, FLEET_STATUS_INTERVAL,
};
use crate::control::config::FleetSettings;

/// Why a follow step failed (the `reason` label of
/// `edge_fleet_follow_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowError {
    /// No NATS server could be reached.
    Connect,
    /// The buckets could not be opened (nothing published yet, or no
    /// permission).
    Bucket,
    /// The current revision could not be read or watched.
    Watch,
    /// The file could not be fetched.
    Fetch,
    /// The fetched file's sha256 is not its revision's.
    Digest,
    /// The fetched file is not a valid routing.db.
    Invalid,
    /// It could not be written or renamed into place.
    Install,
    /// The status key could not be written.
    Status,
}

impl FollowError {
    /// Every reason, in label order.
    pub const ALL: [FollowError; 8] = [
        FollowError::Connect,
        FollowError::Bucket,
        FollowError::Watch,
        FollowError::Fetch,
        FollowError::Digest,
        FollowError::Invalid,
        FollowError::Install,
        FollowError::Status,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FollowError::Connect => "connect",
            FollowError::Bucket => "bucket",
            FollowError::Watch => "watch",
            FollowError::Fetch => "fetch",
            FollowError::Digest => "digest",
            FollowError::Invalid => "invalid",
            FollowError::Install => "install",
            FollowError::Status => "status",
        }
    }
}

/// What the fleet's tasks (the follower, load sharing) report, read by
/// the metrics at scrape time.
#[derive(Debug)]
pub struct FollowState {
    /// The installed revision (0: none).
    pub installed: AtomicU64,
    /// The current revision last seen (0: none yet).
    pub current: AtomicU64,
    /// When a look at the current revision last succeeded (ms since the
    /// epoch; 0: never).
    pub last_sync_ms: AtomicU64,
    /// When the follower started (ms since the epoch).
    pub started_ms: AtomicU64,
    /// routing.db differs from the installed revision.
    pub diverged: AtomicBool,
    /// Revisions installed.
    pub installs: AtomicU64,
    /// Failed steps by reason ([`FollowError::ALL`] order).
    pub errors: [AtomicU64; 8],
    /// The age of the freshest load report from another edge, in ms
    /// (`u64::MAX`: none counts), set by [`super::load`].
    pub load_report_age_ms: AtomicU64,
    /// Other edges whose load reports count now.
    pub load_reporters: AtomicU64,
    /// Lease requests by result ([`super::lease::RequestResult::ALL`]
    /// order).
    pub lease_requests: [AtomicU64; 4],
}

impl Default for FollowState {
    fn default() -> Self {
        FollowState {
            installed: AtomicU64::new(0),
            current: AtomicU64::new(0),
            last_sync_ms: AtomicU64::new(0),
            started_ms: AtomicU64::new(0),
            diverged: AtomicBool::new(false),
            installs: AtomicU64::new(0),
            errors: Default::default(),
            load_report_age_ms: AtomicU64::new(u64::MAX),
            load_reporters: AtomicU64::new(0),
            lease_requests: Default::default(),
        }
    }
}

impl FollowState {
    /// Failed steps of `reason`.
    pub fn errors(&self, reason: FollowError) -> u64 {
        self.errors[reason as usize].load(Ordering::Relaxed)
    }

    /// Seconds since the last successful look at the current revision (or
    /// since the start, before the first), at `now_ms`.
    pub fn sync_age(&self, now_ms: u64) -> f64 {
        let last = match self.last_sync_ms.load(Ordering::Relaxed) {
            0 => self.started_ms.load(Ordering::Relaxed),
            t => t,
        };
        now_ms.saturating_sub(last) as f64 / 1000.0
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts following; abort the task to stop.
pub fn spawn(fleet: FleetSettings, routing_db: PathBuf, state: Arc<FollowState>) -> JoinHandle<()> {
    state.started_ms.store(now_ms(), Ordering::Relaxed);
    let installed = file::read_installed(&routing_db);
    if let Some(i) = &installed {
        state.installed.store(i.revision.0, Ordering::Relaxed);
    }
    let follower = Follower::new(installed);
    tokio::spawn(async move {
        let mut task = Task {
            fleet,
            routing_db,
            state,
            follower,
            last_error: Arc::default(),
        };
        task.run().await;
    })
}

/// The follow task's own state.
struct Task {
    /// Servers, credentials, this POP's name.
    fleet: FleetSettings,
    /// The file installed into.
    routing_db: PathBuf,
    /// What the metrics read.
    state: Arc<FollowState>,
    /// The install decisions.
    follower: Follower,
    /// The last failed step, reported in the status key until a step
    /// succeeds.
    last_error: Arc<Mutex<Option<String>>>,
}

impl Task {
    async fn run(&mut self) {
        let mut backoff = FLEET_RETRY;
        // Connected once, the client reconnects by itself (to any server
        // of the list, and those the cluster announces).
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let name = format!("geoedge {}", self.fleet.pop);
        let (client, errors) = loop {
            match store::connect(&self.fleet, &name, Some(events_tx.clone())).await {
                Ok(c) => break c,
                Err(e) => {
                    self.failed(FollowError::Connect, &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(FLEET_RETRY_MAX);
                }
            }
        };
        backoff = FLEET_RETRY;
        loop {
            match self.session(&client, &errors, &mut events).await {
                Ok(()) => backoff = FLEET_RETRY,
                Err((reason, e)) => {
                    self.failed(reason, &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(FLEET_RETRY_MAX);
                }
            }
        }
    }

    fn failed(&self, reason: FollowError, e: &anyhow::Error) {
        self.state.errors[reason as usize].fetch_add(1, Ordering::Relaxed);
        let text = format!("{}: {e:#}", reason.as_str());
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        // Logged once per change of error, not at every retry.
        if last.as_deref() != Some(text.as_str()) {
            tracing::warn!(
                reason = reason.as_str(),
                "following the fleet's routing table: {e:#}"
            );
            *last = Some(text);
        }
    }

    fn succeeded(&self) {
        self.state.last_sync_ms.store(now_ms(), Ordering::Relaxed);
        let mut last = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        if last.take().is_some() {
            tracing::info!("following the fleet's routing table again");
        }
    }

    /// One watch's life: open the buckets, watch `current`, check and
    /// report; returns when the watch must be rebuilt (after a
    /// reconnection).
    async fn session(
        &mut self,
        client: &async_nats::Client,
        errors: &store::ServerErrors,
        events: &mut tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
    ) -> Result<(), (FollowError, anyhow::Error)> {
        let store = Store::open(client, errors.clone(), false)
            .await
            .map_err(|e| (FollowError::Bucket, e))?;
        let mut watch = store
            .watch_current()
            .await
            .map_err(|e| (FollowError::Watch, e))?;
        let mut disconnected = false;
        let mut check = tokio::time::interval(FLEET_CHECK_INTERVAL);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status = tokio::time::interval(FLEET_STATUS_INTERVAL);
        status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                entry = watch.next() => match entry {
                    Some(Ok(entry)) if entry.operation == async_nats::jetstream::kv::Operation::Put => {
                        match RevisionInfo::from_json(&entry.value) {
                            Ok(info) => {
                                self.succeeded();
                                self.handle(&store, &info).await;
                            }
                            Err(m) => self.failed(FollowError::Watch, &anyhow::anyhow!("current: {m}")),
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err((FollowError::Watch, anyhow::anyhow!(e))),
                    None => return Err((FollowError::Watch, anyhow::anyhow!("the watch ended"))),
                },
                _ = check.tick() => match store.current().await {
                    Ok(Some((info, _))) => {
                        self.succeeded();
                        self.handle(&store, &info).await;
                    }
                    Ok(None) => self.succeeded(),
                    Err(e) => self.failed(FollowError::Watch, &e),
                },
                _ = status.tick() => self.report(&store).await,
                event = events.recv() => match event {
                    Some(async_nats::Event::Disconnected) => disconnected = true,
                    // After a reconnection the watch may have missed
                    // changes: rebuild it (its first entry is the value
                    // now).
                    Some(async_nats::Event::Connected) if disconnected => return Ok(()),
                    Some(_) => {}
                    None => return Ok(()),
                },
            }
        }
    }

    /// Acts on the current revision `info`.
    async fn handle(&mut self, store: &Store, info: &RevisionInfo) {
        self.state.current.store(info.revision.0, Ordering::Relaxed);
        let on_disk = match self.digest_on_disk().await {
            Ok(d) => d,
            Err(e) => {
                self.failed(FollowError::Install, &e);
                return;
            }
        };
        let was_diverged = self.follower.diverged();
        let step = self.follower.handle_current(info, on_disk.as_ref());
        self.state
            .diverged
            .store(self.follower.diverged(), Ordering::Relaxed);
        match step {
            Step::UpToDate | Step::Older => {}
            Step::Diverged => {
                if !was_diverged {
                    tracing::warn!(
                        path = %self.routing_db.display(),
                        installed = %info.revision,
                        "routing.db differs from the installed revision (edited by hand?): kept until the next publish replaces it"
                    );
                    self.report(store).await;
                }
            }
            Step::Adopt(info) => {
                self.record(&info).await;
                self.report(store).await;
            }
            Step::Install(info) => {
                let started = std::time::Instant::now();
                let bytes = match store.fetch(&info).await {
                    Ok(b) => b,
                    Err(e) => {
                        let reason = if e.downcast_ref::<DigestMismatch>().is_some() {
                            FollowError::Digest
                        } else {
                            FollowError::Fetch
                        };
                        self.failed(reason, &e);
                        return;
                    }
                };
                let path = self.routing_db.clone();
                let expected = info.sha256.clone();
                let installed =
                    tokio::task::spawn_blocking(move || file::install(&path, &bytes, &expected))
                        .await;
                match installed {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let reason = match e.reason() {
                            "digest" => FollowError::Digest,
                            "invalid" => FollowError::Invalid,
                            _ => FollowError::Install,
                        };
                        self.failed(reason, &anyhow::anyhow!("revision {}: {e}", info.revision));
                        return;
                    }
                    Err(e) => {
                        self.failed(FollowError::Install, &anyhow::anyhow!(e));
                        return;
                    }
                }
                self.state.installs.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    revision = %info.revision,
                    sha256 = %info.sha256,
                    author = %info.author,
                    took_ms = started.elapsed().as_millis() as u64,
                    "installed routing.db revision {}",
                    info.revision
                );
                self.record(&info).await;
                self.report(store).await;
            }
        }
    }

    async fn digest_on_disk(&self) -> anyhow::Result<Option<Sha256Digest>> {
        let path = self.routing_db.clone();
        Ok(tokio::task::spawn_blocking(move || file::digest_of(&path)).await??)
    }

    /// Records `info` as installed (memory, metrics, the file beside
    /// routing.db).
    async fn record(&mut self, info: &RevisionInfo) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let installed = self.follower.handle_installed(info, now);
        self.state
            .installed
            .store(info.revision.0, Ordering::Relaxed);
        self.state.diverged.store(false, Ordering::Relaxed);
        let path = self.routing_db.clone();
        match tokio::task::spawn_blocking(move || file::write_installed(&path, &installed)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.failed(FollowError::Install, &anyhow::anyhow!(e)),
            Err(e) => self.failed(FollowError::Install, &anyhow::anyhow!(e)),
        }
    }

    /// Writes this POP's status key (checking routing.db for a hand edit
    /// first).
    async fn report(&mut self, store: &Store) {
        if let Ok(on_disk) = self.digest_on_disk().await {
            let was = self.follower.diverged();
            let now = self.follower.handle_disk(on_disk.as_ref());
            self.state.diverged.store(now, Ordering::Relaxed);
            if now && !was {
                tracing::warn!(path = %self.routing_db.display(), "routing.db differs from the installed revision (edited by hand?): kept until the next publish replaces it");
            }
        }
        let installed = self.follower.installed();
        let status = PopStatus {
            pop: self.fleet.pop.clone(),
            revision: installed.map(|i| i.revision),
            sha256: installed.map(|i| i.sha256.clone()),
            installed_at: installed.map(|i| i.installed_at),
            reported_at: now_ms() / 1000,
            diverged: self.follower.diverged(),
            error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        };
        if let Err(e) = store.put_status(&status).await {
            self.failed(FollowError::Status, &e);
        }
    }
}
