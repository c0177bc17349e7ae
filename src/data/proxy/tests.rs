//! The pipeline in-process: each stage on real loopback sockets, with a
//! routing table built from rows, the embedded GeoIP sample, and test
//! dialers and data paths where a stage's behaviour depends on them.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use geoedge_geoip::{GeoDb, GeoIp};
use geoedge_routing::raw::{BackendRow, RawTable};
use geoedge_routing::{AppId, BackendId, ConnectFailure, RegionId, Router, RoutingTable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

use super::stages::{Conn, Identity};
use super::*;
use crate::data::dialer::TcpDialer;
use crate::data::relay::{Ended, Meter, Moved, Policy};

#[test]
fn errors_of_this_host_are_local_and_the_backends_are_not() {
    let os = io::Error::from_raw_os_error;
    for local in [
        libc::EMFILE,
        libc::ENFILE,
        libc::ENOMEM,
        libc::ENOBUFS,
        libc::EADDRNOTAVAIL,
    ] {
        assert_eq!(classify(&os(local)), ConnectFailure::Local, "errno {local}");
    }
    for (errno, why) in [
        (libc::ECONNREFUSED, ConnectFailure::Refused),
        (libc::ETIMEDOUT, ConnectFailure::Timeout),
        (libc::EHOSTUNREACH, ConnectFailure::Unreachable),
        (libc::ENETUNREACH, ConnectFailure::Unreachable),
        (libc::ECONNRESET, ConnectFailure::Other),
        (libc::EACCES, ConnectFailure::Other),
    ] {
        assert_eq!(classify(&os(errno)), why, "errno {errno}");
    }
    // Errors without an errno are never taken for local ones.
    let synthetic = io::Error::new(io::ErrorKind::OutOfMemory, "no errno");
    assert_eq!(classify(&synthetic), ConnectFailure::Other);
}

/// A backend row at a loopback address.
fn row(id: &str, region: &str, addr: SocketAddr) -> BackendRow {
    let mut r = BackendRow::new(
        id,
        region,
        &addr.ip().to_string(),
        i64::from(addr.port()),
        100,
        200,
    );
    r.rowid = i64::from(addr.port());
    r
}

/// The built-in regions (`eu` this POP's, `us` among them) and the given
/// backends.
fn router(backends: Vec<BackendRow>) -> Arc<Router> {
    let raw = RawTable {
        schema_version: 1,
        backends,
        ..Default::default()
    };
    let table = RoutingTable::from_raw(&raw, 0).expect("a valid table");
    Arc::new(Router::new(
        Arc::new(table),
        RegionId::new("eu"),
        Default::default(),
    ))
}

/// Settings that trust loopback's PROXY headers and send none.
fn options() -> ProxyOptions {
    ProxyOptions {
        proxy_protocol_from: vec!["127.0.0.0/8".parse().unwrap()],
        send_proxy_protocol: None,
        connect_timeout: Duration::from_secs(5),
        connect_attempts: 3,
        idle_timeout: Duration::from_secs(30),
        half_close: true,
        splice: false,
        proxy_header_timeout: Duration::from_secs(10),
        client_max_connections: None,
        client_rate: None,
        client_limit_exempt: Vec::new(),
        client_ipv4_prefix: 32,
        client_ipv6_prefix: 64,
    }
}

fn proxy<D: Dialer, P: DataPath>(router: Arc<Router>, dialer: D, data_path: P) -> Arc<Proxy<D, P>> {
    Arc::new(Proxy {
        router,
        geoip: Arc::new(GeoIp::with_db(GeoDb::sample())),
        options: ArcSwap::from_pointee(options()),
        dialer,
        data_path,
        own: Default::default(),
        tasks: TaskTracker::new(),
        conns: Default::default(),
        failures: FailureLog::default(),
        limit: Arc::new(ConnLimit::new(100)),
        lease_wait: Arc::new(crate::data::lease_wait::LeaseWait::new(
            std::time::Duration::from_millis(250),
        )),
        clients: crate::data::per_client::PerClient::new(1000),
        sni: Default::default(),
        access_log: None,
    })
}

/// A connected pair on loopback: the client's end and the accepted one,
/// wrapped as a connection with `options`.
async fn accepted(options: ProxyOptions) -> (TcpStream, Conn) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (stream, peer) = listener.accept().await.unwrap();
    let conn = Conn {
        client: stream,
        peer,
        listener: listener.local_addr().ok(),
        app: AppId::default_app(),
        options: Arc::new(options),
        sni: false,
        log: None,
    };
    (client, conn)
}

/// An address nothing listens on (a port just freed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn identify_believes_a_trusted_header_and_keeps_the_bytes_behind_it() {
    let p = proxy(router(Vec::new()), TcpDialer, Relay);
    let (mut client, mut conn) = accepted(options()).await;
    client
        .write_all(b"PROXY TCP4 81.2.69.142 10.0.0.1 40000 443\r\nhello")
        .await
        .unwrap();
    let id = p.identify(&mut conn).await.expect("a valid header");
    assert_eq!(id.source, "81.2.69.142:40000".parse().unwrap());
    assert_eq!(id.destination, "10.0.0.1:443".parse().unwrap());
    assert_eq!(id.ip, "81.2.69.142".parse::<std::net::IpAddr>().unwrap());
    // Whatever arrived in the same read is owed to the backend.
    assert!(b"hello".starts_with(&id.early), "{:?}", id.early);
    // The sample database places this address.
    assert!(id.lookup.country().is_some(), "{:?}", id.lookup);
}

#[tokio::test]
async fn identify_takes_an_untrusted_peer_as_the_client() {
    let p = proxy(router(Vec::new()), TcpDialer, Relay);
    let (mut client, mut conn) = accepted(untrusting()).await;
    // A PROXY header from an untrusted peer is just bytes for the backend:
    // identify does not read it.
    client
        .write_all(b"PROXY TCP4 81.2.69.142 10.0.0.1 40000 443\r\n")
        .await
        .unwrap();
    let id = p.identify(&mut conn).await.expect("no header needed");
    assert_eq!(id.source, conn.peer);
    assert_eq!(Some(id.destination), conn.listener);
    assert!(id.early.is_empty());
}

#[tokio::test]
async fn identify_refuses_a_bad_or_missing_header_from_a_trusted_source() {
    let p = proxy(router(Vec::new()), TcpDialer, Relay);
    let (mut client, mut conn) = accepted(options()).await;
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(
        p.identify(&mut conn).await.unwrap_err(),
        ConnResult::BadProxyHeader
    );

    let mut quick = options();
    quick.proxy_header_timeout = Duration::from_millis(50);
    let (_silent, mut conn) = accepted(quick).await;
    assert_eq!(
        p.identify(&mut conn).await.unwrap_err(),
        ConnResult::ProxyHeaderTimeout
    );
}

#[tokio::test]
async fn classify_gives_the_listeners_app() {
    let p = proxy(router(Vec::new()), TcpDialer, Relay);
    let (_client, mut conn) = accepted(options()).await;
    conn.app = AppId::new("shop");
    let mut id = identity(&conn);
    assert_eq!(p.classify(&mut conn, &mut id).await, Ok(AppId::new("shop")));
}

/// The identity of a client that sent no header.
fn identity(conn: &Conn) -> Identity {
    Identity {
        source: conn.peer,
        destination: conn.listener.unwrap(),
        early: Vec::new(),
        ip: conn.peer.ip(),
        lookup: geoedge_geoip::Lookup::Private,
    }
}

#[tokio::test]
async fn route_and_dial_fails_over_to_the_next_backend() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = closed_port().await;
    // The local region's backend is tried first; it refuses.
    let router = router(vec![
        row("down", "eu", down),
        row("up", "us", up.local_addr().unwrap()),
    ]);
    let p = proxy(Arc::clone(&router), TcpDialer, Relay);
    let (_client, mut conn) = accepted(options()).await;
    let id = identity(&conn);
    let dialed = p
        .route_and_dial(&mut conn, &id, &AppId::default_app())
        .await
        .expect("the second backend answers");
    assert_eq!(dialed.route.backend().id.as_str(), "up");
    let snapshot = router.table().snapshot();
    let down = snapshot.backend("down").unwrap();
    assert_eq!(
        down.load.connect_stats().failures(ConnectFailure::Refused),
        1
    );
}

#[tokio::test]
async fn route_and_dial_says_why_no_backend_took_the_client() {
    let (_client, mut conn) = accepted(options()).await;
    let id = identity(&conn);
    // Every backend refuses: as many tried as attempts allow.
    let all_down = router(vec![
        row("a", "eu", closed_port().await),
        row("b", "us", closed_port().await),
    ]);
    let p = proxy(all_down, TcpDialer, Relay);
    let err = p
        .route_and_dial(&mut conn, &id, &AppId::default_app())
        .await
        .unwrap_err();
    assert_eq!(err, ConnResult::ConnectFailed);
    // No backend for the app at all.
    let err = p
        .route_and_dial(&mut conn, &id, &AppId::new("nothing-here"))
        .await
        .unwrap_err();
    assert_eq!(err, ConnResult::NoBackend);
}

/// A dialer whose every connect fails as this host running out of
/// descriptors would.
struct OutOfDescriptors;

impl Dialer for OutOfDescriptors {
    async fn connect(&self, _addr: SocketAddr) -> io::Result<TcpStream> {
        Err(io::Error::from_raw_os_error(libc::EMFILE))
    }
}

#[tokio::test]
async fn route_and_dial_refuses_on_a_local_error_and_leaves_the_backend_alone() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = router(vec![row("up", "eu", up.local_addr().unwrap())]);
    let p = proxy(Arc::clone(&router), OutOfDescriptors, Relay);
    let (_client, mut conn) = accepted(options()).await;
    let id = identity(&conn);
    // Many more times than failed connects would take to eject it.
    for _ in 0..20 {
        let err = p
            .route_and_dial(&mut conn, &id, &AppId::default_app())
            .await
            .unwrap_err();
        assert_eq!(err, ConnResult::LocalError);
    }
    let snapshot = router.table().snapshot();
    let backend = snapshot.backend("up").unwrap();
    assert_eq!(
        backend.load.connect_stats().failures(ConnectFailure::Local),
        20
    );
    let health = backend.load.health();
    assert!(
        health.is_admitted() && health.ejections() == 0,
        "a local error counted against the backend"
    );
}

/// What a data path was handed.
#[derive(Debug, Clone)]
struct Handed {
    first_up: Vec<u8>,
    policy: Policy,
}

/// A data path that records what it was handed and closes both sides.
#[derive(Default)]
struct Recording(Mutex<Vec<Handed>>);

impl DataPath for Recording {
    async fn relay<'a>(
        &'a self,
        _client: TcpStream,
        _backend: TcpStream,
        first_up: &'a [u8],
        policy: Policy,
        _meter: Meter<'a>,
    ) -> Ended {
        self.0.lock().unwrap().push(Handed {
            first_up: first_up.to_vec(),
            policy,
        });
        Ended::Closed(Moved::default())
    }
}

#[tokio::test]
async fn the_relay_seam_gets_the_header_the_early_bytes_and_the_connections_policy() {
    let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = router(vec![row("up", "eu", up.local_addr().unwrap())]);
    let p = proxy(router, TcpDialer, Recording::default());
    let mut settings = options();
    settings.send_proxy_protocol = Some(Version::V1);
    settings.idle_timeout = Duration::from_secs(7);
    settings.half_close = false;
    let (mut client, mut conn) = accepted(settings).await;
    client
        .write_all(b"PROXY TCP4 81.2.69.142 10.0.0.1 40000 443\r\n")
        .await
        .unwrap();
    let mut id = p.identify(&mut conn).await.unwrap();
    let app = p.classify(&mut conn, &mut id).await.unwrap();
    let dialed = p.route_and_dial(&mut conn, &id, &app).await.unwrap();
    p.relay_conn(conn, id, dialed).await;
    let handed = p.data_path.0.lock().unwrap().clone();
    assert_eq!(handed.len(), 1);
    assert_eq!(
        handed[0].first_up,
        b"PROXY TCP4 81.2.69.142 10.0.0.1 40000 443\r\n"
    );
    assert_eq!(handed[0].policy.idle, Duration::from_secs(7));
    assert!(!handed[0].policy.half_close);
}

/// Serves `p` on `listener` until the returned sender says stop.
fn serve<D: Dialer, P: DataPath>(
    p: &Arc<Proxy<D, P>>,
    listener: TcpListener,
) -> tokio::sync::watch::Sender<bool> {
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(Arc::clone(p).serve(
        listener,
        super::Service::app(AppId::default_app()),
        shutdown,
    ));
    stop
}

/// Settings that trust no PROXY header (every client is its TCP peer).
fn untrusting() -> ProxyOptions {
    let mut settings = options();
    settings.proxy_protocol_from.clear();
    settings
}

/// Connects to `edge`, waits until the connection is accepted (its
/// settings snapshot taken), lets `between` change the settings, then
/// sends a PROXY header and `hello`; returns what the backend received.
async fn backend_receives(
    p: &Arc<Proxy<TcpDialer>>,
    backend: &TcpListener,
    between: impl FnOnce(),
) -> Vec<u8> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = listener.local_addr().unwrap();
    let stop = serve(p, listener);
    let mut client = TcpStream::connect(edge).await.unwrap();
    // A connection task exists once it was accepted with its snapshot.
    tokio::time::timeout(Duration::from_secs(30), async {
        while p.tasks.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the connection was never accepted");
    between();
    client
        .write_all(b"PROXY TCP4 81.2.69.142 10.9.9.9 40000 443\r\nhello")
        .await
        .unwrap();
    client.shutdown().await.unwrap();
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(30), backend.accept())
        .await
        .expect("no connection reached the backend")
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got))
        .await
        .expect("the backend's stream never ended")
        .unwrap();
    let _ = stop.send(true);
    got
}

#[tokio::test]
async fn a_reload_during_a_connection_does_not_reach_it() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = router(vec![row("up", "eu", backend.local_addr().unwrap())]);

    // Sending PROXY headers is switched on after the connection was
    // accepted: the connection keeps its settings, the backend gets none.
    let p = proxy(Arc::clone(&router), TcpDialer, Relay);
    let got = backend_receives(&p, &backend, || {
        let mut reloaded = options();
        reloaded.send_proxy_protocol = Some(Version::V1);
        p.options.store(Arc::new(reloaded));
    })
    .await;
    assert_eq!(got, b"hello", "{}", String::from_utf8_lossy(&got));

    // And switched off: the connection still sends the one it started with.
    let p = proxy(router, TcpDialer, Relay);
    let mut sending = options();
    sending.send_proxy_protocol = Some(Version::V1);
    p.options.store(Arc::new(sending));
    let got = backend_receives(&p, &backend, || p.options.store(Arc::new(options()))).await;
    assert_eq!(
        got,
        b"PROXY TCP4 81.2.69.142 10.9.9.9 40000 443\r\nhello",
        "{}",
        String::from_utf8_lossy(&got)
    );
}

/// A socket bound to `local` (shared with others: `SO_REUSEADDR`)
/// connected to `to`.
async fn connect_from(local: SocketAddr, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(local).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn own_connections_are_known_by_both_ends_until_they_close() {
    let own = Arc::new(OwnConnections::default());
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (backend, edge) = (backend.local_addr().unwrap(), edge.local_addr().unwrap());
    let s = TcpStream::connect(backend).await.unwrap();
    let local = s.local_addr().unwrap();
    let id = BackendId::new("b");
    // Not a port the edge listens on: the connection cannot come back, and
    // nothing is recorded.
    assert!(own.register(&s, backend, &id).is_none());
    assert_eq!(own.origin(local, || unreachable!("asked")), None);
    // The edge listens on the backend's port (another address of the host).
    own.listening_on(Some(SocketAddr::new([0, 0, 0, 0].into(), backend.port())));
    let registered = own.register(&s, backend, &id).expect("a connected socket");
    // That connection arriving at the backend's address: the edge itself.
    assert_eq!(own.origin(local, || Some(backend)), Some(id.clone()));
    // The same ends as a dual-stack listener reports them.
    let mapped = |a: SocketAddr| {
        let std::net::IpAddr::V4(v4) = a.ip() else {
            unreachable!("bound to 127.0.0.1")
        };
        SocketAddr::new(v4.to_ipv6_mapped().into(), a.port())
    };
    assert_eq!(
        own.origin(mapped(local), || Some(mapped(backend))),
        Some(id.clone())
    );
    // The same local end towards another address: a client of this host
    // that was given the same port, not a loop.
    assert_eq!(own.origin(local, || Some(edge)), None);
    // Another peer: the socket's own address is not even asked for.
    assert_eq!(own.origin(backend, || unreachable!("asked")), None);
    drop(registered);
    assert_eq!(own.origin(local, || Some(backend)), None);
}

#[tokio::test]
async fn a_client_sharing_a_port_with_a_backend_connection_is_served() {
    // The kernel gives one local port to connections to different
    // destinations; here the client and the edge's backend connection are
    // made to share one on purpose.
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let p = proxy(
        router(vec![row("up", "eu", backend_addr)]),
        TcpDialer,
        Relay,
    );
    p.options.store(Arc::new(untrusting()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = listener.local_addr().unwrap();
    let stop = serve(&p, listener);

    let shared = closed_port().await;
    let own = connect_from(shared, backend_addr).await;
    // As if the edge also listened on the backend's port, so that its
    // connection there is recorded.
    p.own.listening_on(Some(backend_addr));
    let _registered = p
        .own
        .register(&own, backend_addr, &BackendId::new("up"))
        .unwrap();
    let mut client = connect_from(shared, edge).await;
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let _first = backend.accept().await.unwrap();
    let (mut relayed, _) = tokio::time::timeout(Duration::from_secs(30), backend.accept())
        .await
        .expect("the client never reached the backend")
        .unwrap();
    let mut got = Vec::new();
    relayed.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    assert_eq!(p.conns.count(ConnResult::Loop), 0);
    let _ = stop.send(true);
}

#[tokio::test]
async fn a_client_that_is_the_edge_itself_is_reset_and_its_backend_ejected() {
    // The table's only backend is the edge's own listener (a loop the
    // reload-time check was not asked about here).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = listener.local_addr().unwrap();
    let router = router(vec![row("self", "eu", edge)]);
    let p = proxy(Arc::clone(&router), TcpDialer, Relay);
    p.options.store(Arc::new(untrusting()));
    let stop = serve(&p, listener);

    let mut client = TcpStream::connect(edge).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got))
        .await
        .expect("the looped connection never ended");
    // Aborted, as the loop was: never a clean end.
    assert!(ended.is_err(), "ended cleanly after {got:?}");
    assert_eq!(p.conns.count(ConnResult::Loop), 1);
    let snapshot = router.table().snapshot();
    let health = snapshot.backend("self").unwrap().load.health();
    assert_eq!(health.ejections(), 1);
    assert!(!health.is_admitted());

    // The next client finds no backend instead of looping again.
    let mut client = TcpStream::connect(edge).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got))
        .await
        .expect("the refused connection never ended");
    assert_eq!(p.conns.count(ConnResult::NoBackend), 1);
    assert_eq!(p.conns.count(ConnResult::Loop), 1);
    let _ = stop.send(true);
}
