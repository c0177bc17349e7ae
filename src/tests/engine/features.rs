//! What the epoll loop keeps besides the relay: the access log's lines,
//! the per-client limits, and the drain on SIGTERM (with what the drain
//! timeout cuts reset).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_access_log_on_the_loop_writes_each_connections_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let log = dir.path().join("access.log");
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let refusing = Refusing::new();
    add_backend(&db, "dead", "us", "US", refusing.addr, 100, 200);
    let edge = Edge::start(&epoll_args(
        &db,
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-format",
            "json",
            "--connect-attempts",
            "1",
        ],
    ));
    // A client whose backend refuses: its line says so.
    let mut refused = connect_as(edge.addr, "207.237.0.1".parse().unwrap()).await;
    assert_eq!(greeting(&mut refused).await, None);
    // A short exchange and 1 MiB each way.
    let mut c = connect_as(edge.addr, "81.2.69.21".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("b1"));
    c.get_mut().write_all(b"echo\nhello").await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let (got, end) = read_until_end(&mut c).await;
    assert_eq!((got.as_slice(), end), (&b"hello"[..], End::Eof));
    let n: u64 = 1 << 20;
    let mut c = connect_as(edge.addr, "81.2.69.22".parse().unwrap()).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("b1"));
    c.get_mut()
        .write_all(format!("source {n}\n").as_bytes())
        .await
        .unwrap();
    let read = tokio::time::timeout(GIVE_UP, read_pattern(&mut c)).await;
    assert_eq!(read.expect("an end-of-file").unwrap(), Some(n));
    write_pattern(c.get_mut(), n).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let (rest, _) = read_until_end(&mut c).await;
    assert!(rest.is_empty());
    eventually("the backend got the upload", || {
        !b.received.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*b.received.lock().unwrap(), [n]);

    // The loop writes the access-log lines itself: one each.
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    eventually("three access-log lines", || lines().len() == 3).await;
    let lines = lines();
    let line = |client: &str| {
        lines
            .iter()
            .find(|l| l["client"] == client)
            .unwrap_or_else(|| panic!("no line for {client}: {lines:#?}"))
    };
    let short = line("81.2.69.21:40000");
    assert_eq!(short["backend"], "b1");
    assert_eq!(short["country"], "GB");
    assert_eq!(short["end"], "client_closed");
    assert_eq!(short["bytes_up"], 10); // "echo\n" + "hello"
    let bulk = line("81.2.69.22:40000");
    assert_eq!(bulk["backend"], "b1");
    assert_eq!(bulk["bytes_up"], format!("source {n}\n").len() as u64 + n);
    assert!(bulk["bytes_down"].as_u64().unwrap() >= n, "{bulk}");
    let failed = line("207.237.0.1:40000");
    assert_eq!(failed["end"], "connect_failed", "{failed}");
    assert_eq!(failed["backend"], "dead");
    assert_eq!(failed["country"], "US");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["bytes_up"], 0);
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 2.0).await;
    counted(
        &edge,
        r#"edge_connections_total{result="connect_failed"}"#,
        1.0,
    )
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_keeps_the_per_client_limits_itself_and_a_closed_connection_frees_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let b = Backend::start("b1").await;
    add_backend(&db, "b1", "eu", "GB", b.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &["--client-max-connections", "1"]));
    let x: IpAddr = "81.2.69.31".parse().unwrap();
    let mut first = connect_as(edge.addr, x).await;
    assert_eq!(greeting(&mut first).await.as_deref(), Some("b1"));
    first.get_mut().write_all(b"echo\n").await.unwrap();
    let mut second = connect_as(edge.addr, x).await;
    assert_eq!(
        greeting(&mut second).await,
        None,
        "a second connection of one client"
    );
    counted(
        &edge,
        r#"edge_connections_total{result="client_limit"}"#,
        1.0,
    )
    .await;
    // Another client is served; the first one still relays.
    let mut other = connect_as(edge.addr, "81.2.69.32".parse().unwrap()).await;
    assert_eq!(greeting(&mut other).await.as_deref(), Some("b1"));
    first.get_mut().write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    // The first connection closes: its place is free, and the client's
    // next connection is served (once the loop has seen the close).
    drop(first);
    eventually("the first connection's place freed", || {
        tokio::task::block_in_place(|| {
            metric(&scrape(edge.metrics.unwrap()), "edge_connections_current") == Some(1.0)
        })
    })
    .await;
    let mut again = connect_as(edge.addr, x).await;
    assert_eq!(greeting(&mut again).await.as_deref(), Some("b1"));
    counted(
        &edge,
        r#"edge_connections_total{result="client_limit"}"#,
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_an_open_connection_keeps_relaying_new_ones_are_refused_and_the_exit_is_0() {
    let (_dir, db, _be) = one_backend().await;
    let mut edge = Edge::start(&epoll_args(&db, &["--drain-timeout", "60s"]));
    let addr = edge.addr;

    let mut c = connect_as(addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"echo\n").await.unwrap();
    edge.signal("TERM");
    eventually("new connections refused", || {
        tokio::task::block_in_place(|| {
            matches!(
                std::net::TcpStream::connect(addr),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused
            )
        })
    })
    .await;

    // Still relaying, both ways, 64 KiB at a time, while draining.
    let mut offset = 0u64;
    for _ in 0..8 {
        let chunk: Vec<u8> = (offset..offset + 65536).map(pattern).collect();
        c.get_mut().write_all(&chunk).await.expect("still open");
        let mut back = vec![0u8; chunk.len()];
        tokio::time::timeout(GIVE_UP, c.read_exact(&mut back))
            .await
            .expect("echoed while draining")
            .expect("still open");
        assert!(back == chunk, "altered while draining");
        offset += 65536;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        edge.try_wait().is_none(),
        "exited with a connection open: {:#?}",
        edge.log()
    );

    // The client ends it; the edge exits, well before the drain timeout.
    c.get_mut().shutdown().await.unwrap();
    let (rest, end) = read_until_end(&mut c).await;
    assert_eq!((rest.len(), end), (0, End::Eof));
    let status = tokio::task::block_in_place(|| edge.wait(GIVE_UP));
    assert!(status.success(), "{status:?}: {:#?}", edge.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_resets_what_the_loop_still_relays_and_the_exit_is_0() {
    let (_dir, db, _be) = one_backend().await;
    let mut edge = Edge::start(&epoll_args(&db, &["--drain-timeout", "1s"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"hold\n").await.unwrap();
    edge.signal("TERM");
    let status = tokio::task::block_in_place(|| edge.wait(GIVE_UP));
    assert!(status.success(), "{status:?}: {:#?}", edge.log());
    // Cut by the drain: a reset, not a clean end.
    let (got, end) = read_until_end(&mut c).await;
    assert!(got.is_empty(), "{got:?}");
    assert_ne!(
        end,
        End::Eof,
        "a connection cut by the drain looked complete"
    );
}
