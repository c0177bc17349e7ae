//! The observability listener (`--metrics-listen`): `/metrics` in the
//! Prometheus text format, `/healthz` and `/readyz`, over HTTP/1.1 (hyper).
//!
//! Kept apart from the client listeners and small on purpose, and built so
//! that a health probe is answered while the port is under attack: one
//! request per connection; a request's headers within [`HEADER_TIMEOUT`]
//! of the accept (hyper's `header_read_timeout`, so trickled bytes do not
//! extend it); a connection's whole life within [`CONNECTION_TIMEOUT`]; at
//! most [`MAX_CONNECTIONS`] connections at once, and one more closes the
//! oldest that has not sent its request yet (or, when every one is being
//! answered, is closed at once): the accept loop never waits, so a probe is
//! never queued behind silent connections. Health is answered inline;
//! scrapes gather on the blocking pool, at most [`MAX_SCRAPES`] at once (one
//! more is answered 503 at once), so no scrape holds up a probe. Closed
//! connections are counted by reason ([`Closed`]). The admin endpoints
//! ([`crate::control::admin`]: `/explain`, `/bindings`, `/backends`,
//! `/revision`, JSON) are answered inline too.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::family::{desc, Family};
use super::names as n;
use crate::control::admin::Admin;
use crate::control::readiness::{Health, Phase};
use crate::data::throttle::Throttle;

/// Connections open at once at most; one more closes the oldest that has
/// not sent its request yet.
pub const MAX_CONNECTIONS: usize = 512;
/// The accept queue of the listener: as many as the connections it holds
/// at once, and more.
pub const BACKLOG: u32 = 1024;
/// Scrapes gathering at once.
pub const MAX_SCRAPES: usize = 2;
/// A client must send its request headers within this long of the
/// accept. A probe sends them at once; 2 s leaves room for a slow network
/// and still closes a silent connection before a probe timeout of a few
/// seconds runs out.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection's whole life, request and answer: a client that stops
/// reading its answer cannot hold a connection for longer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the listener closed a connection itself: a small, fixed set, usable
/// as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No complete request headers within [`HEADER_TIMEOUT`].
    HeaderTimeout,
    /// The oldest connection without a request, closed to make room for a
    /// new one at [`MAX_CONNECTIONS`].
    Evicted,
    /// A new connection closed at once: [`MAX_CONNECTIONS`] were open and
    /// every one had sent its request.
    OverLimit,
    /// Still open after [`CONNECTION_TIMEOUT`].
    Timeout,
}

impl Closed {
    /// Every reason, for pre-registering metric series.
    pub const ALL: [Closed; 4] = [
        Closed::HeaderTimeout,
        Closed::Evicted,
        Closed::OverLimit,
        Closed::Timeout,
    ];

    /// Lower-case label.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::Evicted => "evicted",
            Closed::OverLimit => "over_limit",
            Closed::Timeout => "timeout",
        }
    }
}

/// The listener's connections: how many are open, those still waiting for
/// their request (oldest first, each with the token that closes it), and
/// the closes by [`Closed`].
#[derive(Debug, Default)]
pub struct Conns {
    /// Connections open now.
    open: AtomicUsize,
    /// Numbers the connections in accept order.
    next: AtomicU64,
    /// Connections that have not sent their request yet, by number; taken
    /// briefly, never across an await.
    waiting: Mutex<BTreeMap<u64, CancellationToken>>,
    /// Closes by reason, in the order of [`Closed::ALL`].
    closed: [AtomicU64; Closed::ALL.len()],
}

impl Conns {
    /// The waiting connections (a poisoned lock is taken all the same:
    /// nothing held under it can be left half-done).
    fn waiting(&self) -> MutexGuard<'_, BTreeMap<u64, CancellationToken>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one close.
    fn count(&self, why: Closed) {
        self.closed[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Closes so far for one reason.
    pub fn closed(&self, why: Closed) -> u64 {
        self.closed[why as usize].load(Ordering::Relaxed)
    }

    /// Registers a new connection, waiting for its request; returns its
    /// number and the token that closes it.
    fn admit(&self) -> (u64, CancellationToken) {
        self.open.fetch_add(1, Ordering::Relaxed);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        self.waiting().insert(id, token.clone());
        (id, token)
    }

    /// Its request arrived: the connection can no longer be evicted.
    fn started(&self, id: u64) {
        self.waiting().remove(&id);
    }

    /// The connection ended.
    fn ended(&self, id: u64) {
        self.waiting().remove(&id);
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Makes room for a new connection: true when there is (fewer than
    /// [`MAX_CONNECTIONS`] open, or the oldest one without a request was
    /// closed for it).
    fn make_room(&self) -> bool {
        if self.open.load(Ordering::Relaxed) < MAX_CONNECTIONS {
            return true;
        }
        let Some((_, token)) = self.waiting().pop_first() else {
            return false;
        };
        token.cancel();
        self.count(Closed::Evicted);
        true
    }
}

/// `edge_metrics_connections_closed_total`.
pub struct ListenerCollector {
    conns: Arc<Conns>,
    descs: Vec<Desc>,
}

impl ListenerCollector {
    /// A collector over the listener's counts.
    pub fn new(conns: Arc<Conns>) -> Self {
        Self {
            conns,
            descs: vec![desc(&n::METRICS_CONNECTIONS_CLOSED_TOTAL)],
        }
    }
}

impl Collector for ListenerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut f = Family::new(n::METRICS_CONNECTIONS_CLOSED_TOTAL);
        for why in Closed::ALL {
            f.add(&[why.as_str()], self.conns.closed(why) as f64);
        }
        vec![f.finish()]
    }
}

/// What the endpoints answer from.
pub struct Endpoints {
    /// Everything `/metrics` shows.
    pub registry: Registry,
    /// What `/readyz` reports.
    pub health: Arc<Health>,
    /// Caps concurrent scrapes.
    scrapes: Semaphore,
    /// The listener's connections.
    pub conns: Arc<Conns>,
    /// The admin endpoints ([`crate::control::admin`]).
    pub admin: Arc<Admin>,
}

impl Endpoints {
    /// Endpoints over `registry`, `health` and `admin`.
    pub fn new(registry: Registry, health: Arc<Health>, admin: Arc<Admin>) -> Self {
        Self {
            registry,
            health,
            scrapes: Semaphore::new(MAX_SCRAPES),
            conns: Arc::default(),
            admin,
        }
    }

    /// The answer to one request.
    pub async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        // Answered inline: each takes locks only briefly and never waits.
        if let Some((status, body)) =
            self.admin
                .handle(req.method(), req.uri().path(), req.uri().query())
        {
            return json(status, &body);
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
        }
        match req.uri().path() {
            "/metrics" => self.scrape().await,
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                let phase = self.health.phase();
                let status = if phase == Phase::Ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                text(status, &format!("{}\n", phase.as_str()))
            }
            "/" => text(
                StatusCode::OK,
                "geoedge: /metrics (Prometheus), /healthz (alive), /readyz (ready for clients); admin (JSON): /explain?client=IP, /bindings, /backends, /revision\n",
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn scrape(self: Arc<Self>) -> Response<Full<Bytes>> {
        let Ok(_permit) = self.scrapes.try_acquire() else {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many scrapes at once\n",
            );
        };
        let this = Arc::clone(&self);
        let encoded = tokio::task::spawn_blocking(move || encode(&this.registry)).await;
        match encoded {
            Ok(Ok(body)) => {
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            Ok(Err(e)) => {
                tracing::warn!("encoding metrics failed: {e:#}");
                text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n")
            }
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "scrape failed\n"),
        }
    }
}

/// Gathers every collector and encodes the text format.
pub fn encode(registry: &Registry) -> anyhow::Result<Vec<u8>> {
    let families = registry.gather();
    let mut body = Vec::with_capacity(16 * 1024);
    TextEncoder::new()
        .encode(&families, &mut body)
        .context("text encoding")?;
    Ok(body)
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Binds the listener. Prints `metrics ADDR` on stdout.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = listen(addr).with_context(|| format!("binding the metrics listener {addr}"))?;
    let local = listener.local_addr()?;
    println!("metrics {local}");
    tracing::info!(addr = %local, "metrics and health endpoints listening");
    Ok(listener)
}

/// A listener on `addr` whose accept queue holds [`BACKLOG`] connections:
/// a burst of connections does not fill it before the accept loop (which
/// never waits) takes them, so a probe's handshake is not dropped.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    // A geoedge taking over (`--takeover`) binds it beside this one; a
    // second geoedge without it is refused before it binds anything
    // ([`crate::control::takeover`]).
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves the endpoints on `listener` until the task is aborted (or the
/// runtime stops).
pub fn spawn(listener: TcpListener, endpoints: Arc<Endpoints>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let accept_failed = Throttle::new(Duration::from_secs(10));
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if let Some(suppressed) = accept_failed.check(std::time::Instant::now()) {
                        tracing::warn!(suppressed, "metrics listener: accept failed: {e}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let conns = &endpoints.conns;
            if !conns.make_room() {
                // Every connection is being answered: this one goes at once.
                conns.count(Closed::OverLimit);
                continue;
            }
            let (id, token) = conns.admit();
            tokio::spawn(serve_one(stream, id, token, Arc::clone(&endpoints)));
        }
    })
}

/// One connection, from accept to close.
async fn serve_one(
    stream: tokio::net::TcpStream,
    id: u64,
    token: CancellationToken,
    endpoints: Arc<Endpoints>,
) {
    let conns = Arc::clone(&endpoints.conns);
    let started = Arc::clone(&conns);
    let service = hyper::service::service_fn(move |req| {
        started.started(id);
        let endpoints = Arc::clone(&endpoints);
        async move { Ok::<_, Infallible>(endpoints.respond(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let closed = tokio::select! {
        r = tokio::time::timeout(CONNECTION_TIMEOUT, conn) => match r {
            Ok(Err(e)) if e.is_timeout() => Some(Closed::HeaderTimeout),
            Ok(_) => None,
            Err(_) => Some(Closed::Timeout),
        },
        // Counted by the eviction.
        () = token.cancelled() => None,
    };
    if let Some(why) = closed {
        conns.count(why);
    }
    conns.ended(id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_connection_without_a_request_makes_room() {
        let conns = Conns::default();
        let admitted: Vec<_> = (0..MAX_CONNECTIONS).map(|_| conns.admit()).collect();
        // The two oldest have sent their request: they stay.
        conns.started(admitted[0].0);
        conns.started(admitted[1].0);
        assert!(conns.make_room());
        assert!(!admitted[0].1.is_cancelled() && !admitted[1].1.is_cancelled());
        assert!(admitted[2].1.is_cancelled());
        assert_eq!(conns.closed(Closed::Evicted), 1);
        // When every one is answering, nothing makes room.
        for (id, _) in &admitted {
            conns.started(*id);
        }
        assert!(!conns.make_room());
        // A connection that ends frees its place.
        conns.ended(admitted[5].0);
        assert!(conns.make_room());
        assert_eq!(conns.closed(Closed::Evicted), 1);
    }

    #[tokio::test]
    async fn scrapes_beyond_the_cap_are_answered_503_at_once() {
        let health = Arc::new(Health::default());
        let registry = Registry::new();
        registry
            .register(Box::new(super::super::collectors::ReadyCollector::new(
                Arc::clone(&health),
            )))
            .unwrap();
        let endpoints = Arc::new(Endpoints::new(registry, health, Arc::default()));
        let held: Vec<_> = (0..MAX_SCRAPES)
            .map(|_| endpoints.scrapes.try_acquire().unwrap())
            .collect();
        let busy = Arc::clone(&endpoints).scrape().await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(held);
        let ok = Arc::clone(&endpoints).scrape().await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(
            ok.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let body = http_body_util::BodyExt::collect(ok.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("edge_ready 0"));
    }
}
