//! The NATS adapter: connecting with the fleet settings, the two buckets
//! (key-value and object store, [`FLEET_BUCKET`]), and the operations on
//! them: the current revision, a file by revision, publishing with
//! compare-and-swap on `current`, the revision log, the status keys.
//!
//! [`FLEET_BUCKET`]: crate::control::config::defaults::FLEET_BUCKET

use std::sync::{Arc, Mutex};

use anyhow::{anyhow, Context};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

use super::revision::{Revision, RevisionInfo, Sha256Digest};
use super::status::PopStatus;
use super::{creds, CURRENT_KEY, REVISION_KEY_PREFIX, STATUS_KEY_PREFIX};
use crate::control::config::defaults::{
    BUCKET_CREATE_TIMEOUT, FLEET_BUCKET, NATS_PING_INTERVAL, NATS_TIMEOUT,
};
use crate::control::config::FleetSettings;

/// The fleet's buckets do not exist: nothing has been published yet.
/// [`Store::open`] without `create` returns it (inside its error), so
/// callers that can go on without a store (a dry run, the log) tell it
/// from a server that cannot be reached.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the fleet's {what} {FLEET_BUCKET} does not exist: nothing has been published yet")]
pub struct NothingPublished {
    /// "bucket" or "object store".
    pub what: &'static str,
}

/// The last error a server sent this client (a permissions violation
/// above all: the request it refused only times out), for error messages.
#[derive(Debug, Clone, Default)]
pub struct ServerErrors(Arc<Mutex<Option<String>>>);

impl ServerErrors {
    fn set(&self, e: String) {
        if let Ok(mut last) = self.0.lock() {
            *last = Some(e);
        }
    }

    /// Takes the last error, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut l| l.take())
    }

    /// `error`, with what the server last said appended.
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        match self.take() {
            Some(said) => error.context(format!("the NATS server said: {said}")),
            None => error,
        }
    }
}

/// Connects to the fleet's servers as `name`; `events` is told of every
/// (re)connection. Fails at once when no server answers.
pub async fn connect(
    fleet: &FleetSettings,
    name: &str,
    events: Option<tokio::sync::mpsc::UnboundedSender<async_nats::Event>>,
) -> anyhow::Result<(async_nats::Client, ServerErrors)> {
    let errors = ServerErrors::default();
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(NATS_TIMEOUT)
        .request_timeout(Some(NATS_TIMEOUT))
        .ping_interval(NATS_PING_INTERVAL);
    if let Some(path) = &fleet.creds {
        options = creds::apply(options, &creds::load(path)?)?;
    }
    let seen = errors.clone();
    options = options.event_callback(move |event| {
        let seen = seen.clone();
        let events = events.clone();
        async move {
            match &event {
                async_nats::Event::ServerError(e) => {
                    tracing::warn!(target: "geoedge::control::fleet", "NATS server error: {e}");
                    seen.set(e.to_string());
                }
                async_nats::Event::Disconnected => {
                    tracing::warn!(target: "geoedge::control::fleet", "disconnected from NATS")
                }
                async_nats::Event::Connected => {
                    tracing::info!(target: "geoedge::control::fleet", "connected to NATS")
                }
                _ => {}
            }
            if let Some(events) = events {
                let _ = events.send(event);
            }
        }
    });
    let addrs: Vec<async_nats::ServerAddr> = fleet
        .servers
        .iter()
        .map(|s| s.parse().with_context(|| format!("NATS server {s:?}")))
        .collect::<anyhow::Result<_>>()?;
    let client = options
        .connect(addrs)
        .await
        .map_err(|e| errors.explain(anyhow!(e)))
        .with_context(|| format!("connecting to NATS {}", fleet.servers.join(",")))?;
    Ok((client, errors))
}

/// The fleet's buckets.
#[derive(Clone)]
pub struct Store {
    /// The key-value bucket: `current`, `rev.N`, `status.POP`.
    kv: kv::Store,
    /// The object store: the files.
    objects: object_store::ObjectStore,
    /// What the server last refused.
    pub errors: ServerErrors,
}

/// The outcome of [`Store::make_current`].
#[derive(Debug)]
pub enum Published {
    /// The revision is current.
    Current,
    /// Someone else moved `current` since the publish started: this is
    /// theirs; nothing was changed.
    Lost(Option<RevisionInfo>),
}

impl Store {
    /// Opens the buckets; with `create`, makes them when missing (one
    /// replica on a single server, three in a cluster).
    pub async fn open(
        client: &async_nats::Client,
        errors: ServerErrors,
        create: bool,
    ) -> anyhow::Result<Store> {
        let js = jetstream::new(client.clone());
        // Making a replicated bucket waits for its stream's leader to be
        // elected across the cluster.
        let mut slow = js.clone();
        slow.set_timeout(BUCKET_CREATE_TIMEOUT);
        // Made only when the server says they do not exist: an unreachable
        // quorum is an error, not a reason to make them.
        let missing = |stream: String| {
            let js = js.clone();
            let errors = errors.clone();
            async move {
                match js.get_stream(&stream).await {
                    Ok(_) => Ok(false),
                    Err(e) => match e.kind() {
                        GetStreamErrorKind::JetStream(j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
                        {
                            Ok(true)
                        }
                        _ => Err(errors
                            .explain(anyhow!(e))
                            .context(format!("opening the fleet's stream {stream}"))),
                    },
                }
            }
        };
        if missing(format!("KV_{FLEET_BUCKET}")).await? {
            if !create {
                return Err(NothingPublished { what: "bucket" }.into());
            }
            slow.create_key_value(kv::Config {
                bucket: FLEET_BUCKET.to_owned(),
                description:
                    "geoedge: the current routing.db revision, the revision log, each POP's status"
                        .into(),
                history: 5,
                num_replicas: replicas(client),
                ..Default::default()
            })
            .await
            .map_err(|e| errors.explain(anyhow!(e)))
            .context("creating the fleet's key-value bucket")?;
        }
        if missing(format!("OBJ_{FLEET_BUCKET}")).await? {
            if !create {
                return Err(NothingPublished {
                    what: "object store",
                }
                .into());
            }
            slow.create_object_store(object_store::Config {
                bucket: FLEET_BUCKET.to_owned(),
                description: Some("geoedge: routing.db files by sha256".into()),
                num_replicas: replicas(client),
                ..Default::default()
            })
            .await
            .map_err(|e| errors.explain(anyhow!(e)))
            .context("creating the fleet's object store")?;
        }
        let kv = js
            .get_key_value(FLEET_BUCKET)
            .await
            .map_err(|e| errors.explain(anyhow!(e)))
            .context("opening the fleet's key-value bucket")?;
        let objects = js
            .get_object_store(FLEET_BUCKET)
            .await
            .map_err(|e| errors.explain(anyhow!(e)))
            .context("opening the fleet's object store")?;
        Ok(Store {
            kv,
            objects,
            errors,
        })
    }

    /// The current revision's record and the key's sequence number (what
    /// a compare-and-swap is based on); `None` before the first publish.
    pub async fn current(&self) -> anyhow::Result<Option<(RevisionInfo, u64)>> {
        let entry = self
            .kv
            .entry(CURRENT_KEY)
            .await
            .map_err(|e| self.errors.explain(anyhow!(e)))
            .context("reading the current revision")?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let info =
                    RevisionInfo::from_json(&e.value).map_err(|m| anyhow!("{CURRENT_KEY}: {m}"))?;
                Ok(Some((info, e.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Watches `current`: the value now, then every change.
    pub async fn watch_current(&self) -> anyhow::Result<kv::Watch> {
        self.kv
            .watch_with_history(CURRENT_KEY)
            .await
            .map_err(|e| self.errors.explain(anyhow!(e)))
            .context("watching the current revision")
    }

    /// Stores the file unless an object of that content is there already;
    /// returns whether it stored it.
    pub async fn put_file(&self, name: &str, bytes: &[u8]) -> anyhow::Result<bool> {
        if self.objects.info(name).await.is_ok() {
            return Ok(false);
        }
        let mut reader = bytes;
        self.objects
            .put(name, &mut reader)
            .await
            .map_err(|e| self.errors.explain(anyhow!(e)))
            .with_context(|| format!("storing {name}"))?;
        Ok(true)
    }

    /// Deletes a file this publisher stored and did not make current.
    pub async fn delete_file(&self, name: &str) {
        if let Err(e) = self.objects.delete(name).await {
            tracing::warn!("removing {name}: {e}");
        }
    }

    /// The file of `info`, checked against its sha256 (a corrupt object is
    /// an error, never returned).
    pub async fn fetch(&self, info: &RevisionInfo) -> anyhow::Result<Vec<u8>> {
        let mut object = tokio::time::timeout(NATS_TIMEOUT, self.objects.get(&info.object))
            .await
            .map_err(|_| anyhow!("no answer in {NATS_TIMEOUT:?}"))
            .and_then(|got| got.map_err(|e| self.errors.explain(anyhow!(e))))
            .with_context(|| format!("fetching {}", info.object))?;
        // The object's chunks come from a consumer; one whose messages
        // stop (its server cut off from the stream's leader mid-read)
        // would otherwise leave the read, and the follow task, waiting
        // forever. A read that makes no progress for NATS_TIMEOUT fails
        // and is tried again.
        let mut bytes = Vec::with_capacity(usize::try_from(info.size).unwrap_or(0).min(1 << 30));
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = tokio::time::timeout(NATS_TIMEOUT, object.read(&mut chunk))
                .await
                .map_err(|_| {
                    anyhow!(
                        "stalled after {} of {} bytes: nothing for {NATS_TIMEOUT:?}",
                        bytes.len(),
                        info.size
                    )
                })
                .and_then(|r| r.map_err(|e| anyhow!(e)))
                .with_context(|| format!("reading {}", info.object))?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
        }
        let got = Sha256Digest::of(&bytes);
        if got != info.sha256 {
            anyhow::bail!(DigestMismatch {
                revision: info.revision,
                expected: info.sha256.clone(),
                got,
            });
        }
        Ok(bytes)
    }

    /// Makes `info` current if `current` is still at sequence `base`
    /// (`None`: nothing published yet), then records it in the log.
    pub async fn make_current(
        &self,
        info: &RevisionInfo,
        base: Option<u64>,
    ) -> anyhow::Result<Published> {
        let value = info.to_json().into();
        let moved = match base {
            None => self
                .kv
                .create(CURRENT_KEY, value)
                .await
                .map(|_| ())
                .map_err(|e| {
                    matches!(e.kind(), kv::CreateErrorKind::AlreadyExists)
                        .then_some(())
                        .ok_or_else(|| anyhow!(e))
                }),
            Some(seq) => self
                .kv
                .update(CURRENT_KEY, value, seq)
                .await
                .map(|_| ())
                .map_err(|e| {
                    matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision)
                        .then_some(())
                        .ok_or_else(|| anyhow!(e))
                }),
        };
        match moved {
            Ok(()) => {}
            Err(Ok(())) => return Ok(Published::Lost(self.current().await?.map(|(i, _)| i))),
            Err(Err(e)) => {
                return Err(self
                    .errors
                    .explain(e)
                    .context("moving the current revision"))
            }
        }
        let key = format!("{REVISION_KEY_PREFIX}{}", info.revision);
        if let Err(e) = self.kv.put(&key, info.to_json().into()).await {
            tracing::warn!(
                "revision {} is current, but recording it in the log failed: {e}",
                info.revision
            );
        }
        Ok(Published::Current)
    }

    /// Every revision's record, oldest first (the current one included
    /// even if its log record is missing).
    pub async fn log(&self) -> anyhow::Result<Vec<RevisionInfo>> {
        let mut revisions = Vec::new();
        for key in self.keys(REVISION_KEY_PREFIX).await? {
            if let Some(value) = self.get(&key).await? {
                match RevisionInfo::from_json(&value) {
                    Ok(info) => revisions.push(info),
                    Err(e) => tracing::warn!("{key}: {e}"),
                }
            }
        }
        if let Some((current, _)) = self.current().await? {
            if !revisions.iter().any(|r| r.revision == current.revision) {
                revisions.push(current);
            }
        }
        revisions.sort_by_key(|r| r.revision);
        Ok(revisions)
    }

    /// Revision `n`'s record.
    pub async fn revision(&self, n: Revision) -> anyhow::Result<Option<RevisionInfo>> {
        let key = format!("{REVISION_KEY_PREFIX}{n}");
        Ok(match self.get(&key).await? {
            Some(v) => Some(RevisionInfo::from_json(&v).map_err(|m| anyhow!("{key}: {m}"))?),
            None => None,
        })
    }

    /// Every POP's last report.
    pub async fn statuses(&self) -> anyhow::Result<Vec<PopStatus>> {
        let mut out = Vec::new();
        for key in self.keys(STATUS_KEY_PREFIX).await? {
            if let Some(value) = self.get(&key).await? {
                match serde_json::from_slice::<PopStatus>(&value) {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::warn!("{key}: not a POP status: {e}"),
                }
            }
        }
        Ok(out)
    }

    /// Writes this POP's report.
    pub async fn put_status(&self, status: &PopStatus) -> anyhow::Result<()> {
        let key = format!("{STATUS_KEY_PREFIX}{}", status.pop);
        self.kv
            .put(&key, serde_json::to_vec(status).unwrap_or_default().into())
            .await
            .map_err(|e| self.errors.explain(anyhow!(e)))
            .with_context(|| format!("writing {key}"))?;
        Ok(())
    }

    async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| self.errors.explain(anyhow!(e)))
            .context("listing the fleet's keys")?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.context("listing the fleet's keys")?;
            if key.starts_with(prefix) {
                out.push(key);
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &str) -> anyhow::Result<Option<bytes::Bytes>> {
        self.kv
            .get(key)
            .await
            .map_err(|e| self.errors.explain(anyhow!(e)))
            .with_context(|| format!("reading {key}"))
    }
}

/// A fetched file whose sha256 is not its revision's.
#[derive(Debug, thiserror::Error)]
#[error("the file of revision {revision} is corrupt: sha256 {got}, expected {expected}")]
pub struct DigestMismatch {
    /// The revision.
    pub revision: Revision,
    /// Its record's sha256.
    pub expected: Sha256Digest,
    /// The fetched file's.
    pub got: Sha256Digest,
}

/// Replicas of a new bucket: three in a cluster, one on a single server.
fn replicas(client: &async_nats::Client) -> usize {
    if client.server_info().cluster.is_some() {
        3
    } else {
        1
    }
}
