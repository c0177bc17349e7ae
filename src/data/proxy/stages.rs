//! One client connection's life as named stages over a [`Conn`]:
//!
//! 1. [`Proxy::identify`]: who the client is — a trusted source's PROXY
//!    header, or the TCP peer — and where it is (GeoIP);
//! 2. [`Proxy::admit_client`]: whether this client may go on at all: it is
//!    not this edge itself, looping through a backend (see [`super::loops`]);
//! 3. [`Proxy::classify`]: which app it came for: the listener's, or, on a
//!    listener that reads the TLS ClientHello, the app routing.db's
//!    `sni_routes` gives its server name;
//! 4. [`Proxy::limit_client`]: whether the client is within its
//!    per-client limits for that app (see [`crate::data::per_client`]);
//! 5. [`Proxy::route_and_dial`]: the routing core's decision and the
//!    connect, failing over to the next backend;
//! 6. [`Proxy::relay_conn`]: the PROXY header for the backend, the bytes
//!    read so far (a ClientHello, unchanged), then the relay, through the
//!    [`DataPath`] seam.
//!
//! Every stage reads the one settings snapshot the connection took when it
//! was accepted ([`Conn::options`]), so a reload in the middle of a
//! connection never gives it a mix of old and new settings. A stage that
//! ends the connection says how, as the [`ConnResult`] it is counted under;
//! with the access log on, each stage also fills in its part of the
//! connection's line ([`LogLine`]).

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
use super::log_line::{LogLine, Relayed};
use super::loops::Registered;
use super::{classify, Proxy, ProxyOptions};
use crate::data::admission::Slot;
use crate::data::conn_stats::ConnResult;
use crate::data::dialer::Dialer;
use crate::data::per_client::ClientKey;
use crate::data::proxy_protocol::{self, Header, Parse, ProxyHeaderError};
use crate::data::relay::{Ended, Meter, Policy};
use geoedge_client_limits::{ClientGuard, Refused};

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
    /// The listener reads the TLS ClientHello and picks the app from its
    /// server name; [`Conn::app`] is then the app of names no route
    /// matches.
    pub sni: bool,
    /// The connection's access-log line, when the access log is on.
    pub log: Option<Box<LogLine>>,
}

/// A client's place under its per-client connection cap, until it drops
/// (boxed: only clients held to a limit have one; `None`: not held).
pub type Admitted = Option<Box<ClientGuard<ClientKey>>>;

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
    /// The client's place under its per-client connection cap, until it
    /// drops (boxed: only clients held to a limit have one).
    pub client: Option<Box<ClientGuard<ClientKey>>>,
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
            Err(result) => {
                self.conns.record(result);
                if let (Some(line), Some(log)) = (conn.log.take(), &self.access_log) {
                    line.refused(log, result);
                }
            }
        }
        drop(slot);
    }

    /// The stages up to the relay: identify, admit, classify, limit, route
    /// and dial.
    async fn prepare(&self, conn: &mut Conn) -> Result<(Identity, Dialed), ConnResult> {
        let mut identity = self.identify(conn).await?;
        self.admit_client(conn, &identity)?;
        let app = self.classify(conn, &mut identity).await?;
        let client = self.limit_client(conn, &identity, &app)?;
        let mut dialed = self.route_and_dial(conn, &identity, &app).await?;
        dialed.client = client;
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
        let ip = source.ip().to_canonical();
        let lookup = self.geoip.lookup(ip);
        let identity = Identity {
            source,
            destination,
            early,
            ip,
            lookup,
        };
        Self::note_identity(conn, &identity);
        Ok(identity)
    }

    /// Puts who the client is in the connection's span and access-log line.
    fn note_identity(conn: &mut Conn, identity: &Identity) {
        let span = tracing::Span::current();
        span.record("client", display(identity.ip));
        let country = identity.lookup.country();
        if let Some(country) = country {
            span.record("country", display(country));
        }
        if let Some(line) = conn.log.as_deref_mut() {
            line.identify(identity.source, country);
        }
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
        self.refuse_loop(&backend_id, conn.peer);
        Err(ConnResult::Loop)
    }

    /// Ejects the backend a connection from `peer` came back through (one
    /// of this edge's own backend connections) for the longest backoff,
    /// and says so (once per [`super::FAILURE_LOG_INTERVAL`]). The caller
    /// resets the connection and counts it `loop`.
    pub(crate) fn refuse_loop(&self, backend_id: &BackendId, peer: SocketAddr) {
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
                peer,
                backoff.unwrap_or_default()
            );
        }
    }

    /// Stage 3: the app the client came for. A plain listener serves one
    /// app. A listener that reads the ClientHello reads it (within the
    /// PROXY header timeout, at most [`geoedge_client_hello::MAX_CLIENT_HELLO`]
    /// bytes; they are owed to the backend unchanged) and looks its server
    /// name up in routing.db's `sni_routes`: a name no route matches, and
    /// a hello without one, go to the listener's app. Anything but a
    /// ClientHello is refused, never dialed.
    pub(crate) async fn classify(
        &self,
        conn: &mut Conn,
        identity: &mut Identity,
    ) -> Result<AppId, ConnResult> {
        if !conn.sni {
            return Ok(conn.app.clone());
        }
        let timeout = conn.options.proxy_header_timeout;
        let hello = tokio::time::timeout(
            timeout,
            read_client_hello(&mut conn.client, &mut identity.early),
        )
        .await;
        let name = match hello {
            Ok(Ok(hello)) => hello.server_name,
            Ok(Err(e)) => {
                tracing::debug!(reason = e.reason(), "not a TLS ClientHello: {e}");
                return Err(ConnResult::NotTls);
            }
            Err(_) => {
                tracing::debug!("no complete ClientHello within {timeout:?}");
                return Err(ConnResult::NotTls);
            }
        };
        let routed = name.as_deref().and_then(|name| {
            self.router
                .table()
                .snapshot_guard()
                .sni_route(name)
                .cloned()
        });
        self.sni.count(name.is_some(), routed.is_some());
        let app = routed.unwrap_or_else(|| conn.app.clone());
        if let Some(line) = conn.log.as_deref_mut() {
            line.record.sni = name.map(String::into_boxed_str);
            line.record.app = app.as_arc();
        }
        Ok(app)
    }

    /// Stage 4: whether the client is within its per-client limits for
    /// `app`: the settings', or the app's row in routing.db's `apps`. A
    /// client over one is closed before any backend is dialed; one within
    /// them holds its place under the connection cap until it ends.
    pub(crate) fn limit_client(
        &self,
        conn: &Conn,
        identity: &Identity,
        app: &AppId,
    ) -> Result<Admitted, ConnResult> {
        self.client_limits(&conn.options, app, identity.ip)
            .inspect_err(|_| {
                // A reset: a client over its limit costs no TIME_WAIT.
                let _ = socket2::SockRef::from(&conn.client).set_linger(Some(Duration::ZERO));
            })
    }

    /// Stage 4 without a socket: the client at `ip` admitted under its
    /// per-client limits for `app` (a place it holds until it drops), or
    /// the result it is refused under (the caller resets the connection).
    pub(crate) fn client_limits(
        &self,
        options: &ProxyOptions,
        app: &AppId,
        ip: IpAddr,
    ) -> Result<Admitted, ConnResult> {
        let policy = options.client_policy();
        let snapshot = self.router.table().snapshot_guard();
        let app_limits = snapshot.app_limits(app.as_str());
        if app_limits.is_none() && policy.is_off() {
            // No limit anywhere: not even the clock is read.
            return Ok(None);
        }
        match self
            .clients
            .admit(&policy, app, app_limits, ip, Instant::now())
        {
            Ok(guard) => Ok(guard.map(Box::new)),
            Err(Refused::Connections) => Err(ConnResult::ClientLimit),
            Err(Refused::Rate) => Err(ConnResult::ClientRate),
        }
    }

    /// Stage 5: asks the routing core for a backend and connects to it, up
    /// to `connect_attempts` backends, each within `connect_timeout`. A
    /// failed connect counts against the backend's health and the next
    /// decision excludes it; an error of this host (out of descriptors and
    /// the like) refuses the client at once, with a reset, and leaves the
    /// backend's health alone.
    pub(crate) async fn route_and_dial(
        &self,
        conn: &mut Conn,
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
                    if let Some(line) = conn.log.as_deref_mut() {
                        self.log_decision(line, identity, &route, tried.len() + 1, Some(took));
                    }
                    return Ok(Dialed {
                        stream,
                        route,
                        registered,
                        client: None,
                    });
                }
                Ok(Err(e)) => (classify(&e), Some(e)),
                Err(_) => (ConnectFailure::Timeout, None),
            };
            outcomes.fail(why);
            if why == ConnectFailure::Local {
                // Not the backend's fault: its health is left alone, and
                // another backend would need a socket just the same.
                self.warn_local_failure(&backend.id, error, Instant::now());
                // A reset: the client's descriptor goes at once.
                let _ = socket2::SockRef::from(&conn.client).set_linger(Some(Duration::ZERO));
                result = ConnResult::LocalError;
                break;
            }
            if let Some(change) = self.router.report_connect(&backend, false, Instant::now()) {
                crate::data::health_log::log_connect_change(&backend, change, &self.router);
            }
            self.warn_connect_failed(
                &backend.id,
                why,
                error,
                options.connect_timeout,
                Instant::now(),
            );
            tried.push(backend.id.clone());
            result = ConnResult::ConnectFailed;
            if let Some(line) = conn.log.as_deref_mut() {
                self.log_decision(line, identity, &route, tried.len(), None);
            }
            // `route` drops here: the slot is released.
        }
        tracing::debug!(
            attempts = tried.len(),
            result = result.as_str(),
            "no backend reachable"
        );
        Err(result)
    }

    /// Stage 6: sends the backend its PROXY header (when the connection's
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
        // With the access log on, the connection counts its own bytes too,
        // and its line is written however the relay ends.
        let mut logged = match (conn.log, &self.access_log) {
            (Some(line), Some(log)) => Some(Relayed::new(line, log, identity.early.len() as u64)),
            _ => None,
        };
        let Dialed {
            stream,
            route,
            registered,
            client: limited,
        } = dialed;
        tracing::debug!(kind = route.kind.as_str(), "relaying");
        async move {
            let (up, down) = match logged.as_ref().and_then(|l| l.tallies()) {
                Some((up, down)) => (
                    self.conns.up().with_tally(up),
                    self.conns.down().with_tally(down),
                ),
                None => (self.conns.up(), self.conns.down()),
            };
            let ended = self
                .data_path
                .relay(client, stream, &first, policy, Meter { up, down })
                .await;
            if let Some(logged) = logged.as_mut() {
                logged.ended(&ended);
            }
            match ended {
                Ended::Closed(moved) => {
                    tracing::debug!(up = moved.up, down = moved.down, "closed")
                }
                Ended::Idle => tracing::debug!("idle timeout"),
                Ended::Error(e) => tracing::debug!("relay ended: {e}"),
            }
            drop(limited);
            drop(registered);
            drop(route);
        }
    }
}

impl<D: Dialer, P: DataPath> Proxy<D, P> {
    /// Logs a failed connect to `backend` (`why`; `error`, or no answer
    /// within `timeout`) at warn, at most once per
    /// [`super::FAILURE_LOG_INTERVAL`]. Formatted only when logged: a storm
    /// of failures costs no text.
    pub(crate) fn warn_connect_failed(
        &self,
        backend: &BackendId,
        why: ConnectFailure,
        error: Option<io::Error>,
        timeout: Duration,
        now: Instant,
    ) {
        if let Some(suppressed) = self.failures.connect.check(now) {
            tracing::warn!(
                backend = %backend,
                reason = why.as_str(),
                suppressed,
                "connecting to a backend failed: {}",
                error.map_or_else(|| format!("no answer within {timeout:?}"), |e| e.to_string())
            );
        }
    }

    /// Logs a connect to `backend` that this host could not make (no
    /// socket), at most once per [`super::FAILURE_LOG_INTERVAL`].
    pub(crate) fn warn_local_failure(
        &self,
        backend: &BackendId,
        error: Option<io::Error>,
        now: Instant,
    ) {
        if let Some(suppressed) = self.failures.local.check(now) {
            tracing::warn!(
                backend = %backend,
                suppressed,
                "no socket for a backend connect, the client is refused: {}",
                error.map_or_else(String::new, |e| e.to_string())
            );
        }
    }

    /// Fills in the decision's part of a connection's access-log line:
    /// the backend, how it was chosen, the client's region, the connect
    /// attempts so far and the last connect's time.
    pub(crate) fn log_decision(
        &self,
        line: &mut LogLine,
        identity: &Identity,
        route: &Route,
        attempts: usize,
        connect_time: Option<Duration>,
    ) {
        let backend = route.backend();
        let snapshot = self.router.table().snapshot_guard();
        let location = identity.lookup.location();
        let client_region = location
            .and_then(|l| snapshot.country_map.region_of(l.country, l.continent))
            .and_then(|i| snapshot.region(i));
        // The tier as the decision saw it: a client GeoIP cannot place is
        // placed in this POP's region.
        let local = snapshot.region_index(self.router.local_region().as_str());
        let tier = geoedge_routing::Placement::new(&snapshot, location, local)
            .tier_of(backend)
            .as_str();
        let r = &mut line.record;
        r.backend = Some(backend.id.as_arc());
        r.region = client_region.map(|r| r.id.as_arc());
        r.reason = Some(route.kind.as_str());
        r.tier = Some(tier);
        r.attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        r.connect_time = connect_time;
    }
}

/// Reads until `buf` (what the client sent so far, from its first byte)
/// holds a whole TLS ClientHello, and returns it; every byte read stays in
/// `buf`, owed to the backend. Fails on anything else, on a hello past
/// [`geoedge_client_hello::MAX_CLIENT_HELLO`], and on a close inside it.
pub(crate) async fn read_client_hello(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<geoedge_client_hello::ClientHello, HelloError> {
    use geoedge_client_hello::{parse, Parse, MAX_CLIENT_HELLO};
    loop {
        if !buf.is_empty() {
            if let Parse::Complete(hello) = parse(buf)? {
                return Ok(hello);
            }
        }
        if buf.len() >= MAX_CLIENT_HELLO {
            return Err(geoedge_client_hello::ClientHelloError::TooLong.into());
        }
        // Most hellos fit in one read of this; a post-quantum key share
        // makes one about 1.8 KB.
        buf.reserve(2048.min(MAX_CLIENT_HELLO - buf.len()));
        let room = (MAX_CLIENT_HELLO - buf.len()).min(buf.capacity() - buf.len());
        let n = (&mut *client).take(room as u64).read_buf(buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed inside the ClientHello",
            )
            .into());
        }
    }
}

/// Why a listener that reads the ClientHello refused a client.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    /// The socket failed or closed inside the hello.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The bytes are not a ClientHello.
    #[error(transparent)]
    NotHello(#[from] geoedge_client_hello::ClientHelloError),
}

impl HelloError {
    /// A short label for logs.
    fn reason(&self) -> &'static str {
        match self {
            HelloError::Io(_) => "io",
            HelloError::NotHello(e) => e.reason(),
        }
    }
}

/// Why a trusted source's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The socket failed or closed inside the header.
    #[error(transparent)]
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
