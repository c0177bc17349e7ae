//! One client connection's life as named stages over a [`Conn`]:
//!
//! 1. [`Proxy::identify`]: who the client is — a trusted source's PROXY
//!    header, or the TCP peer — and where it is (GeoIP);
//! 2. [`Proxy::admit_client`]: whether this client may go on (today: it
//!    is not this edge itself, looping through a backend; see [`super::loops`]);
//! 3. [`Proxy::classify`]: which app it came for (today: the listener's);
//! 4. [`Proxy::route_and_dial`]: the routing core's decision and the
//!    connect, failing over to the next backend;
//! 5. [`Proxy::relay_conn`]: the PROXY header for the backend, then the
//!    bytes, through the [`DataPath`] seam.
//!
//! Every stage reads the one settings snapshot the connection took when it
//! was accepted ([`Conn::options`]), so a reload in the middle of a
//! connection never gives it a mix of old and new settings. A stage that
//! ends the connection says how, as the [`ConnResult`] it is counted under.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_geoip::Lookup;
use geoedge_routing::{AppId, BackendId, ConnectFailure, Request, Route};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::field::display;

use super::data_path::DataPath;
use super::loops::Registered;
use super::{classify, Proxy, ProxyOptions};
use crate::data::admission::Slot;
use crate::data::conn_stats::ConnResult;
use crate::data::dialer::Dialer;
use crate::data::proxy_protocol::{self, Header, Parse, ProxyHeaderError};
use crate::data::relay::{Ended, Meter, Policy};

/// An accepted client connection, carried through the stages.
#[derive(Debug)]
pub struct Conn {
    /// The accepted socket; the relay takes it.
    pub client: TcpStream,
    /// The TCP peer: the client itself, or a trusted proxy in front of it.
    pub peer: SocketAddr,
    /// The address the listener is bound to (a wildcard for `0.0.0.0` or
    /// `[::]`), when known.
    pub listener: Option<SocketAddr>,
    /// The app the listener serves.
    pub app: AppId,
    /// The settings snapshot taken when the connection was accepted: every
    /// stage reads this one, the relay included.
    pub options: Arc<ProxyOptions>,
}

/// Who the client is and where, as [`Proxy::identify`] found out.
#[derive(Debug)]
pub struct Identity {
    /// The client's address: a trusted PROXY header's source, or the peer.
    pub source: SocketAddr,
    /// The address the client connected to: a trusted PROXY header's
    /// destination, or this socket's local address.
    pub destination: SocketAddr,
    /// Bytes the client sent right behind its PROXY header, owed to the
    /// backend before anything else.
    pub early: Vec<u8>,
    /// The client's IP in canonical form (an IPv4-mapped address as IPv4),
    /// the one routing and bindings use.
    pub ip: IpAddr,
    /// The client's location.
    pub lookup: Lookup,
}

/// A backend connected for a client.
#[derive(Debug)]
pub struct Dialed {
    /// The connected backend socket.
    pub stream: TcpStream,
    /// The decision, holding the backend's connection slot until it drops.
    pub route: Route,
    /// The connection's entry among the edge's own, until it drops.
    pub registered: Option<Registered>,
}

impl<D: Dialer, P: DataPath> Proxy<D, P> {
    /// The whole pipeline for one accepted connection, holding its slot of
    /// the global limit until it ends; its outcome is counted once, by the
    /// stage that ended it (the relay counts its own).
    ///
    /// An idle relayed connection costs what this future holds while it
    /// waits, so the stages before the relay run in a future of their own
    /// ([`Self::prepare`]) and the relay's future takes only what it moves
    /// bytes with ([`Self::relay_conn`]).
    pub(crate) async fn handle(self: Arc<Self>, slot: Slot, mut conn: Conn) {
        // The relay's future is made in a statement of its own, so that
        // nothing of the stages before it (the result they returned, moved
        // from or not) stays in this future while the relay runs.
        let prepared = self.prepare(&mut conn).await;
        match prepared {
            Ok((identity, dialed)) => self.relay_conn(conn, identity, dialed).await,
            Err(result) => self.conns.record(result),
        }
        drop(slot);
    }

    /// The stages up to the relay: identify, admit, classify, route and
    /// dial.
    async fn prepare(&self, conn: &mut Conn) -> Result<(Identity, Dialed), ConnResult> {
        let identity = self.identify(conn).await?;
        self.admit_client(conn, &identity)?;
        let app = self.classify(conn, &identity);
        let dialed = self.route_and_dial(conn, &identity, &app).await?;
        Ok((identity, dialed))
    }

    /// Whether the connection's peer is a source whose PROXY headers are
    /// believed.
    fn trusted(options: &ProxyOptions, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        options.proxy_protocol_from.iter().any(|n| n.contains(&ip))
    }

    /// Stage 1: the client's address (a trusted source's PROXY header,
    /// read within `proxy_header_timeout`, or the peer) and its location.
    /// A trusted source that sends no valid header in time is refused.
    pub(crate) async fn identify(&self, conn: &mut Conn) -> Result<Identity, ConnResult> {
        let options = &conn.options;
        let peer = conn.peer;
        // The address the client reached: only a PROXY header for the
        // backend carries it, so it is asked of the socket only then.
        let local = if options.send_proxy_protocol.is_some() {
            conn.client.local_addr().ok().or(conn.listener)
        } else {
            conn.listener
        }
        .unwrap_or(peer);
        let (source, destination, early) = if Self::trusted(options, peer) {
            let header =
                tokio::time::timeout(options.proxy_header_timeout, read_header(&mut conn.client))
                    .await;
            match header {
                Ok(Ok((
                    Header::Proxied {
                        source,
                        destination,
                    },
                    early,
                ))) => (source, destination, early),
                Ok(Ok((Header::Local, early))) => (peer, local, early),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, reason = e.reason(), "PROXY header rejected: {e}");
                    return Err(ConnResult::BadProxyHeader);
                }
                Err(_) => {
                    tracing::debug!(%peer, "no PROXY header within {:?}", options.proxy_header_timeout);
                    return Err(ConnResult::ProxyHeaderTimeout);
                }
            }
        } else {
            (peer, local, Vec::new())
        };
        let span = tracing::Span::current();
        let ip = source.ip().to_canonical();
        span.record("client", display(ip));
        let lookup = self.geoip.lookup(ip);
        if let Some(country) = lookup.country() {
            span.record("country", display(country));
        }
        Ok(Identity {
            source,
            destination,
            early,
            ip,
            lookup,
        })
    }

    /// Stage 2: whether the client may go on. A connection whose two ends
    /// are those of one of this edge's own backend connections is the edge
    /// itself, come back through a backend: the connection is
    /// reset, counted `loop`, and that backend ejected for the longest
    /// backoff so that the next clients go elsewhere.
    pub(crate) fn admit_client(&self, conn: &Conn, _identity: &Identity) -> Result<(), ConnResult> {
        let Some(backend_id) = self.own.origin(conn.peer, || conn.client.local_addr().ok()) else {
            return Ok(());
        };
        let _ = socket2::SockRef::from(&conn.client).set_linger(Some(Duration::ZERO));
        let snapshot = self.router.table().snapshot();
        let backoff = snapshot.backend(backend_id.as_str()).map(|backend| {
            match self.router.report_loop(backend, Instant::now()) {
                geoedge_routing::HealthChange::Ejected { backoff, .. } => backoff,
                _ => Duration::ZERO,
            }
        });
        if let Some(suppressed) = self.failures.looped.check(Instant::now()) {
            tracing::warn!(
                backend = %backend_id,
                suppressed,
                "connection loop: a connection to this backend came back to this edge ({}); the backend is ejected for {:?}",
                conn.peer,
                backoff.unwrap_or_default()
            );
        }
        Err(ConnResult::Loop)
    }

    /// Stage 3: the app the client came for. Today every listener serves
    /// one app, so it is the listener's.
    pub(crate) fn classify(&self, conn: &Conn, _identity: &Identity) -> AppId {
        conn.app.clone()
    }

    /// Stage 4: asks the routing core for a backend and connects to it, up
    /// to `connect_attempts` backends, each within `connect_timeout`. A
    /// failed connect counts against the backend's health and the next
    /// decision excludes it; an error of this host (out of descriptors and
    /// the like) refuses the client at once, with a reset, and leaves the
    /// backend's health alone.
    pub(crate) async fn route_and_dial(
        &self,
        conn: &Conn,
        identity: &Identity,
        app: &AppId,
    ) -> Result<Dialed, ConnResult> {
        let options = &conn.options;
        let mut tried: Vec<BackendId> = Vec::new();
        let mut result = ConnResult::NoBackend;
        // Once per client, a better backend whose lease is being asked for
        // is waited for a moment (each answer, decided again) instead of
        // given up at once.
        let mut may_wait = true;
        for _ in 0..options.connect_attempts {
            let decide = |at: Instant| {
                self.router.decide(
                    &Request {
                        app,
                        ip: identity.ip,
                        location: identity.lookup.location(),
                        exclude: &tried,
                    },
                    at,
                )
            };
            // The decision's clock also starts the connect's.
            let mut started = Instant::now();
            let mut seen = self.lease_wait.answers();
            let mut decided = decide(started);
            let pending = |d: &Result<Route, _>| d.as_ref().is_ok_and(|r| r.lease_pending);
            if may_wait && pending(&decided) {
                // Only a client that found its lease missing waits, holding
                // no slot: signed up for the next answer (unless one came
                // since it decided), it asks for the lease at once, waits,
                // and decides again; so at each answer, up to a deadline.
                drop(decided);
                let deadline = tokio::time::Instant::now() + self.lease_wait.patience();
                decided = loop {
                    let mut answer = std::pin::pin!(self.lease_wait.next_answer());
                    answer.as_mut().enable();
                    if self.lease_wait.answers() == seen {
                        self.lease_wait.want();
                        self.lease_wait.granted(answer.as_mut(), deadline).await;
                    }
                    seen = self.lease_wait.answers();
                    started = Instant::now();
                    let again = decide(started);
                    if !pending(&again) || tokio::time::Instant::now() >= deadline {
                        break again;
                    }
                    drop(again);
                };
            }
            may_wait = false;
            let route = match decided {
                Ok(route) => route,
                Err(e) => {
                    if result == ConnResult::NoBackend {
                        if let Some(suppressed) = self.failures.no_backend.check(Instant::now()) {
                            tracing::warn!(suppressed, "no backend for a client: {e}");
                        }
                    }
                    break;
                }
            };
            let backend = Arc::clone(route.backend());
            // The deadline comes from the decision's clock read too, so
            // timing the connect for the metrics reads the clock no more
            // often than a plain `timeout` would.
            let connected = tokio::time::timeout_at(
                tokio::time::Instant::from_std(started + options.connect_timeout),
                self.dialer.connect(backend.addr),
            )
            .await;
            let outcomes = backend.load.connect_stats();
            let (why, error) = match connected {
                Ok(Ok(stream)) => {
                    let took = started.elapsed();
                    outcomes.observe(took);
                    // Passive health; no lock unless the backend was failing.
                    if let Some(change) = self.router.report_connect(&backend, true, started + took)
                    {
                        crate::data::health_log::log_connect_change(&backend, change, &self.router);
                    }
                    // Counted as `ok` by the connect just observed.
                    tracing::Span::current().record("backend", display(&backend.id));
                    let registered = self.own.register(&stream, backend.addr, &backend.id);
                    return Ok(Dialed {
                        stream,
                        route,
                        registered,
                    });
                }
                Ok(Err(e)) => (classify(&e), Some(e)),
                Err(_) => (ConnectFailure::Timeout, None),
            };
            outcomes.fail(why);
            if why == ConnectFailure::Local {
                // Not the backend's fault: its health is left alone, and
                // another backend would need a socket just the same.
                if let Some(suppressed) = self.failures.local.check(Instant::now()) {
                    tracing::warn!(
                        backend = %backend.id,
                        suppressed,
                        "no socket for a backend connect, the client is refused: {}",
                        error.map_or_else(String::new, |e| e.to_string())
                    );
                }
                // A reset: the client's descriptor goes at once.
                let _ = socket2::SockRef::from(&conn.client).set_linger(Some(Duration::ZERO));
                result = ConnResult::LocalError;
                break;
            }
            if let Some(change) = self.router.report_connect(&backend, false, Instant::now()) {
                crate::data::health_log::log_connect_change(&backend, change, &self.router);
            }
            // Formatted only when logged: a storm of failures costs no text.
            if let Some(suppressed) = self.failures.connect.check(Instant::now()) {
                let timeout = options.connect_timeout;
                tracing::warn!(
                    backend = %backend.id,
                    reason = why.as_str(),
                    suppressed,
                    "connecting to a backend failed: {}",
                    error.map_or_else(|| format!("no answer within {timeout:?}"), |e| e.to_string())
                );
            }
            tried.push(backend.id.clone());
            result = ConnResult::ConnectFailed;
            // `route` drops here: the slot is released.
        }
        tracing::debug!(
            attempts = tried.len(),
            result = result.as_str(),
            "no backend reachable"
        );
        Err(result)
    }

    /// Stage 5: sends the backend its PROXY header (when the connection's
    /// settings ask for one) and the client's early bytes, then relays
    /// through the data path with the connection's policy. The route, and
    /// with it the backend's slot, is released exactly once, when the
    /// returned future completes.
    pub(crate) fn relay_conn(
        &self,
        conn: Conn,
        identity: Identity,
        dialed: Dialed,
    ) -> impl Future<Output = ()> + Send + '_ {
        // Everything but the sockets, the bytes owed to the backend, the
        // policy and the guards is dropped here, before the relay's
        // future is made: an idle connection holds no more than that.
        let options = &conn.options;
        let policy = Policy {
            idle: options.idle_timeout,
            half_close: options.half_close,
            splice: options.splice,
        };
        let mut first = Vec::new();
        if let Some(version) = options.send_proxy_protocol {
            version.encode(identity.source, identity.destination, &mut first);
        }
        first.extend_from_slice(&identity.early);
        self.conns.up().add(identity.early.len() as u64);
        let client = conn.client;
        let Dialed {
            stream,
            route,
            registered,
        } = dialed;
        tracing::debug!(kind = route.kind.as_str(), "relaying");
        async move {
            let meter = Meter {
                up: self.conns.up(),
                down: self.conns.down(),
            };
            match self
                .data_path
                .relay(client, stream, &first, policy, meter)
                .await
            {
                Ended::Closed(moved) => {
                    tracing::debug!(up = moved.up, down = moved.down, "closed")
                }
                Ended::Idle => tracing::debug!("idle timeout"),
                Ended::Error(e) => tracing::debug!("relay ended: {e}"),
            }
            drop(registered);
            drop(route);
        }
    }
}

/// Why a trusted source's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The socket failed or closed inside the header.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The bytes are not a valid header.
    #[error(transparent)]
    Malformed(#[from] ProxyHeaderError),
}

impl HeaderError {
    /// A short label for logs and metrics.
    fn reason(&self) -> &'static str {
        match self {
            HeaderError::Io(_) => "io",
            HeaderError::Malformed(e) => e.reason(),
        }
    }
}

/// Reads a PROXY header; returns it and any bytes read past it.
pub(crate) async fn read_header(client: &mut TcpStream) -> Result<(Header, Vec<u8>), HeaderError> {
    let mut buf = vec![0u8; proxy_protocol::MAX_HEADER_LEN];
    let mut filled = 0;
    loop {
        let n = client.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside the PROXY header",
            )
            .into());
        }
        filled += n;
        match proxy_protocol::parse(&buf[..filled])? {
            Parse::Complete { header, consumed } => {
                return Ok((header, buf[consumed..filled].to_vec()))
            }
            // `parse` fails before a header could outgrow the buffer.
            Parse::Incomplete if filled < buf.len() => continue,
            Parse::Incomplete => {
                return Err(
                    io::Error::new(io::ErrorKind::InvalidData, "PROXY header too long").into(),
                )
            }
        }
    }
}
