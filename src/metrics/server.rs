//! The observability listener (`--metrics-listen`): `/metrics` in the
//! Prometheus text format, `/healthz` and `/readyz`, over HTTP/1.1 (hyper).
//!
//! Kept apart from the client listeners and small on purpose: one request
//! per connection, at most [`MAX_CONNECTIONS`] connections at once (further
//! ones wait in the accept queue), a request's headers within
//! [`HEADER_TIMEOUT`], and at most [`MAX_SCRAPES`] scrapes gathering at
//! once (one more is answered 503 at once). Gathering runs on the blocking
//! pool, so a scrape never holds a worker the connections need.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::health::{Health, Phase};
use crate::throttle::Throttle;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// Scrapes gathering at once.
pub const MAX_SCRAPES: usize = 2;
/// A client must send its request headers within this long.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the endpoints answer from.
pub struct Endpoints {
    /// Everything `/metrics` shows.
    pub registry: Registry,
    /// What `/readyz` reports.
    pub health: Arc<Health>,
    /// Caps concurrent scrapes.
    scrapes: Semaphore,
}

impl Endpoints {
    /// Endpoints over `registry` and `health`.
    pub fn new(registry: Registry, health: Arc<Health>) -> Self {
        Self {
            registry,
            health,
            scrapes: Semaphore::new(MAX_SCRAPES),
        }
    }

    /// The answer to one request.
    pub async fn respond(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
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
                "geoedge: /metrics (Prometheus), /healthz (alive), /readyz (ready for clients)\n",
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

/// Binds the listener. Prints `metrics ADDR` on stdout.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics listener {addr}"))?;
    let local = listener.local_addr()?;
    println!("metrics {local}");
    tracing::info!(addr = %local, "metrics and health endpoints listening");
    Ok(listener)
}

/// Serves the endpoints on `listener` until the task is aborted (or the
/// runtime stops).
pub fn spawn(listener: TcpListener, endpoints: Arc<Endpoints>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let accept_failed = Throttle::new(Duration::from_secs(10));
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
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
            let endpoints = Arc::clone(&endpoints);
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let endpoints = Arc::clone(&endpoints);
                    async move { Ok::<_, Infallible>(endpoints.respond(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                // A client that stops reading cannot hold a slot for long.
                let _ = tokio::time::timeout(HEADER_TIMEOUT * 3, conn).await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scrapes_beyond_the_cap_are_answered_503_at_once() {
        let health = Arc::new(Health::default());
        let registry = Registry::new();
        registry
            .register(Box::new(super::super::collectors::ReadyCollector::new(
                Arc::clone(&health),
            )))
            .unwrap();
        let endpoints = Arc::new(Endpoints::new(registry, health));
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
