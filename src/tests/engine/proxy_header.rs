//! PROXY headers in the epoll loop: v1 and v2 place the client and the
//! bytes behind the header reach the backend, a header that never comes
//! times out, and the backend gets the header it is configured for.

use super::*;

/// An epoll edge that trusts PROXY headers from loopback and sends v1 to
/// its backends.
fn trusting_v1_edge(db: &Path) -> Edge {
    Edge::start(&bare_epoll_args(
        db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v1",
        ],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_v1_or_v2_places_the_client_and_the_bytes_behind_it_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (eu, us) = (Backend::start("eu-1").await, Backend::start("us-1").await);
    add_backend(&db, "eu-1", "eu", "GB", eu.addr, 100, 200);
    add_backend(&db, "us-1", "us", "US", us.addr, 100, 200);
    let edge = trusting_v1_edge(&db);
    let port = edge.addr.port();
    let (gb, us_ip) = (sample_address("GB"), sample_address("US"));
    let mut v1 = format!("PROXY TCP4 {gb} 127.0.0.1 40000 {port}\r\n").into_bytes();
    let mut v2 = proxy_v2(
        SocketAddr::new(us_ip, 40001),
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    // The header and what follows it in one write.
    v1.extend_from_slice(b"echo\nbehind v1");
    v2.extend_from_slice(b"echo\nbehind v2");
    for (sent, claim, backend, tail) in [
        (v1, gb, "eu-1", b"behind v1"),
        (v2, us_ip, "us-1", b"behind v2"),
    ] {
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(&sent).await.unwrap();
        let mut c = BufReader::new(s);
        assert_eq!(
            greeting_line(&mut c).await,
            format!("backend={backend} client={claim}\n")
        );
        let mut got = [0u8; 9];
        tokio::time::timeout(GIVE_UP, c.read_exact(&mut got))
            .await
            .expect("the bytes behind the header echoed")
            .unwrap();
        assert_eq!(&got, tail);
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 2.0).await;
    // Both clients' first bytes counted, the header not.
    counted(&edge, r#"edge_bytes_total{direction="up"}"#, 28.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_that_never_comes_is_counted_as_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let be = Backend::start("be").await;
    add_backend(&db, "be", "eu", "GB", be.addr, 100, 200);
    let edge = Edge::start(&bare_epoll_args(
        &db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v1",
            "--proxy-header-timeout",
            "500ms",
        ],
    ));
    // Nothing at all, and half a header.
    for (i, sent) in [&b""[..], &b"PROXY TCP4 81.2.69"[..]]
        .into_iter()
        .enumerate()
    {
        let started = Instant::now();
        let mut s = TcpStream::connect(edge.addr).await.unwrap();
        s.write_all(sent).await.unwrap();
        let (got, end) = read_until_end(&mut s).await;
        let closed = started.elapsed();
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(end, End::Eof);
        assert!(
            closed >= Duration::from_millis(500),
            "closed {closed:?} after connecting, before the header's deadline"
        );
        counted(
            &edge,
            r#"edge_connections_total{result="proxy_header_timeout"}"#,
            (i + 1) as f64,
        )
        .await;
    }
    assert_eq!(be.seen.accepted.load(Ordering::SeqCst), 0);
    counted(&edge, "edge_connections_current", 0.0).await;
    // A header in time still works.
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
}

/// What the backend reads: the PROXY header it is configured for, for the
/// client a trusted source named (v1 or v2) or, from an untrusted source,
/// for the TCP peer itself, whose own PROXY line is then payload; then the
/// client's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_receives_the_proxy_header_it_is_configured_for() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (addr, backend) = capturing_backend();
    add_backend(&db, "captures", "eu", "GB", addr, 100, 200);

    /// Sends `bytes` from `from` (127.0.0.1 when `None`), half-closes and
    /// reads to the end.
    async fn send(edge: SocketAddr, from: Option<[u8; 4]>, bytes: &[u8]) -> SocketAddr {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(ip) = from {
            socket.bind(SocketAddr::from((ip, 0))).unwrap();
        }
        let mut s = socket.connect(edge).await.unwrap();
        let local = s.local_addr().unwrap();
        s.write_all(bytes).await.unwrap();
        s.shutdown().await.unwrap();
        let (got, end) = read_until_end(&mut s).await;
        assert_eq!((got.len(), end), (0, End::Eof));
        local
    }

    let edge = trusting_v1_edge(&db);
    let port = edge.addr.port();
    // A trusted v1 header.
    let v1 = format!("PROXY TCP4 81.2.69.160 127.0.0.1 40000 {port}\r\n");
    send(edge.addr, None, format!("{v1}payload one").as_bytes()).await;
    assert_eq!(
        String::from_utf8_lossy(&captured(&backend)),
        format!("{v1}payload one")
    );
    // A trusted v2 header: passed on as v1.
    let mut v2 = proxy_v2(
        "81.2.69.161:40001".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    v2.extend_from_slice(b"payload two");
    send(edge.addr, None, &v2).await;
    assert_eq!(
        String::from_utf8_lossy(&captured(&backend)),
        format!("PROXY TCP4 81.2.69.161 127.0.0.1 40001 {port}\r\npayload two")
    );
    // 127.0.0.2 is not trusted: its header is the client's payload.
    let forged = format!("PROXY TCP4 81.2.69.162 127.0.0.1 40002 {port}\r\npayload three");
    let local = send(edge.addr, Some([127, 0, 0, 2]), forged.as_bytes()).await;
    assert_eq!(
        String::from_utf8_lossy(&captured(&backend)),
        format!(
            "PROXY TCP4 127.0.0.2 127.0.0.1 {} {port}\r\n{forged}",
            local.port()
        )
    );
    drop(edge);

    let edge = Edge::start(&bare_epoll_args(
        &db,
        &[
            "--proxy-protocol-from",
            "127.0.0.1/32",
            "--send-proxy-protocol",
            "v2",
        ],
    ));
    let port = edge.addr.port();
    let v1 = format!("PROXY TCP4 81.2.69.163 127.0.0.1 40003 {port}\r\n");
    send(edge.addr, None, format!("{v1}payload four").as_bytes()).await;
    let mut expected = proxy_v2(
        "81.2.69.163:40003".parse().unwrap(),
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    expected.extend_from_slice(b"payload four");
    assert_eq!(captured(&backend), expected);
}
