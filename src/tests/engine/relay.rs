//! The relay in the epoll loop: routing by country (IPv4 and IPv6
//! clients), a 4 MiB echo arriving whole and in order, half-close either
//! way (and `--half-close off`), failover past refusing and unanswering
//! backends (200 clients at once), resets mid-transfer reaching the other
//! side as resets, and the idle timeout.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_their_countrys_backend_and_4_mib_each_way_arrives_whole_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (eu, us, sa) = (
        Backend::start("eu-1").await,
        Backend::start("us-1").await,
        Backend::start("sa-1").await,
    );
    add_backend(&db, "eu-1", "eu", "GB", eu.addr, 100, 200);
    add_backend(&db, "us-1", "us", "US", us.addr, 100, 200);
    add_backend(&db, "sa-1", "sa", "BR", sa.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));

    let mut down = 0u64;
    let mut served = 0.0;
    for (claim, backend) in [
        (sample_address("GB"), "eu-1"),
        (sample_address("US"), "us-1"),
        (sample_address("BR"), "sa-1"),
        (sample_address("FR"), "eu-1"),
        // A London IPv6 client (a TCP6 header over IPv4).
        ("2001:8b0::1".parse().unwrap(), "eu-1"),
    ] {
        let mut c = connect_as(edge.addr, claim).await;
        let line = greeting_line(&mut c).await;
        assert_eq!(line, format!("backend={backend} client={claim}\n"),);
        down += line.len() as u64;
        served += 1.0;
    }

    // 4 MiB up, echoed back 4 MiB down, at the same time; the client
    // half-closes after its last byte and the echo ends with the
    // backend's end-of-file.
    let n: u64 = 4 << 20;
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    let line = greeting_line(&mut c).await;
    assert!(line.starts_with("backend=eu-1 "), "{line}");
    down += line.len() as u64;
    served += 1.0;
    let (r, _w) = echo_whole(c, n, "").await;

    counted(&edge, r#"edge_connections_total{result="ok"}"#, served).await;
    counted_bytes(&edge, b"echo\n".len() as u64 + n, down + n).await;
    // Every connection is closed and none is left counted.
    drop((r, _w));
    counted(&edge, "edge_connections_current", 0.0).await;
    eventually("the backends' connections closed", || {
        [&eu, &us, &sa]
            .iter()
            .all(|b| b.seen.open.load(Ordering::SeqCst) == 0)
    })
    .await;
    assert_eq!(conns(&edge, "connect_failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_clients_half_close_the_whole_answer_comes_back_then_end_of_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Reads the request to its end-of-file, then answers with how much it
    // read and 1 MiB of the pattern, and closes.
    let answer_len: u64 = 1 << 20;
    let addr = raw_backend(move |mut s| {
        header_line(&mut s);
        let mut request = Vec::new();
        if s.read_to_end(&mut request).is_err() {
            return;
        }
        let mut answer = format!("read {}\n", request.len()).into_bytes();
        answer.extend((0..answer_len).map(pattern));
        let _ = s.write_all(&answer);
    });
    add_backend(&db, "answers", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));

    for round in 0..3 {
        let mut c = connect_as(edge.addr, sample_address("GB")).await;
        let request = vec![b'q'; 100_000];
        c.get_mut().write_all(&request).await.unwrap();
        c.get_mut().shutdown().await.unwrap();
        let (got, end) = read_until_end(&mut c).await;
        assert_eq!(end, End::Eof, "round {round}: after {} bytes", got.len());
        let head = b"read 100000\n";
        assert!(
            got.starts_with(head),
            "round {round}: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(40)])
        );
        let body = &got[head.len()..];
        assert_eq!(body.len() as u64, answer_len, "round {round}");
        assert!(
            body.iter()
                .enumerate()
                .all(|(i, &b)| b == pattern(i as u64)),
            "round {round}: the answer came back altered"
        );
    }
}

/// The backend sends 1,000 bytes and half-closes: with half-close on, the
/// client reads them, then end-of-file, and can still send (the backend
/// gets its bytes); with it off, the edge closes both connections once the
/// bytes are passed on: the backend sees end-of-file without the client
/// having closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_end_of_file_half_closes_the_client_or_with_half_close_off_closes_it() {
    let (_dir, db, be) = one_backend().await;
    let edge = Edge::start(&epoll_args(&db, &["--half-close", "on"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"source 1000\n").await.unwrap();
    let read = tokio::time::timeout(GIVE_UP, read_pattern(&mut c)).await;
    assert_eq!(read.expect("an end-of-file").unwrap(), Some(1000));
    write_pattern(c.get_mut(), 5000).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    eventually(
        "the backend got the client's bytes after its own end",
        || !be.received.lock().unwrap().is_empty(),
    )
    .await;
    assert_eq!(*be.received.lock().unwrap(), [5000]);
    drop((c, edge));

    be.received.lock().unwrap().clear();
    let edge = Edge::start(&epoll_args(&db, &["--half-close", "off"]));
    let mut c = connect_as(edge.addr, sample_address("GB")).await;
    assert_eq!(greeting(&mut c).await.as_deref(), Some("be"));
    c.get_mut().write_all(b"source 1000\n").await.unwrap();
    let read = tokio::time::timeout(GIVE_UP, read_pattern(&mut c)).await;
    assert_eq!(read.expect("an end-of-file").unwrap(), Some(1000));
    // The client has not closed, yet the backend's connection ends, with
    // an end-of-file (a reset would record nothing).
    eventually("the edge closed the backend's connection", || {
        !be.received.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(*be.received.lock().unwrap(), [0]);
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_nearest_backend_fails_over_to_the_next_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // GB clients' nearest backend refuses; the next one is in DE.
    let refusing = Refusing::new();
    let next = Backend::start("next").await;
    add_backend(&db, "near", "eu", "GB", refusing.addr, 100, 200);
    add_backend(&db, "next", "eu", "DE", next.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));
    for i in 1..=3u8 {
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, i])).await;
        assert_eq!(
            greeting(&mut c).await.as_deref(),
            Some("next"),
            "client {i}"
        );
        c.get_mut().write_all(b"echo\nstill here").await.unwrap();
        let mut buf = [0u8; 10];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here");
        counted(
            &edge,
            r#"edge_connect_failures_total{backend="near",reason="refused"}"#,
            f64::from(i),
        )
        .await;
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 3.0).await;
    assert_eq!(conns(&edge, "connect_failed"), 0.0);
    assert_eq!(next.seen.accepted.load(Ordering::SeqCst), 3);
}

/// Many connections at once, each failing over (a new backend socket in
/// its slab entry) and then relaying: none is lost, mixed up or left
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_fail_over_and_echo_at_once_intact() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let refusing = Refusing::new();
    let next = Backend::start("next").await;
    add_backend(&db, "near", "eu", "GB", refusing.addr, 1000, 2000);
    add_backend(&db, "next", "eu", "DE", next.addr, 1000, 2000);
    let edge = Edge::start(&epoll_args(&db, &[]));
    let addr = edge.addr;
    const CLIENTS: u32 = 200;
    const EACH: u64 = 32 * 1024;
    let runs: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(async move {
                let claim = IpAddr::from([81, 2, 69, i as u8]);
                let mut c = connect_as(addr, claim).await;
                let line = greeting_line(&mut c).await;
                assert_eq!(line, format!("backend=next client={claim}\n"));
                // Each client's bytes start at its own offset of the
                // pattern: another's bytes would not match.
                let start = u64::from(i) * 7919;
                let mine: Vec<u8> = (start..start + EACH).map(pattern).collect();
                let (mut r, mut w) = tokio::io::split(c);
                let sent = mine.clone();
                let writer = tokio::spawn(async move {
                    w.write_all(b"echo\n").await.unwrap();
                    w.write_all(&sent).await.unwrap();
                    w.shutdown().await.unwrap();
                    w
                });
                let (got, end) = read_until_end(&mut r).await;
                let _w = writer.await.unwrap();
                assert_eq!(end, End::Eof, "client {i}");
                assert!(got == mine, "client {i}: {} bytes, altered", got.len());
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 200.0).await;
    counted(
        &edge,
        r#"edge_connect_failures_total{backend="near",reason="refused"}"#,
        200.0,
    )
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
    assert_eq!(conns(&edge, "connect_failed"), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_fails_over_after_the_connect_timeout() {
    let hole = Unanswered::new();
    // It really never answers: a connect neither succeeds nor is refused.
    let probe =
        tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(hole.addr)).await;
    assert!(probe.is_err(), "{probe:?}");

    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let next = Backend::start("next").await;
    add_backend(&db, "hole", "eu", "GB", hole.addr, 100, 200);
    add_backend(&db, "next", "eu", "DE", next.addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &["--connect-timeout", "300ms"]));
    for i in 1..=2u8 {
        let started = Instant::now();
        let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, i])).await;
        assert_eq!(
            greeting(&mut c).await.as_deref(),
            Some("next"),
            "client {i}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(300),
            "served after {waited:?}: the hole was not tried first"
        );
        counted(
            &edge,
            r#"edge_connect_failures_total{backend="hole",reason="timeout"}"#,
            f64::from(i),
        )
        .await;
    }
    counted(&edge, r#"edge_connections_total{result="ok"}"#, 2.0).await;
    drop(edge);

    // With one attempt, the timeout ends the client's connection: closed,
    // not left hanging, and counted.
    let edge = Edge::start(&epoll_args(
        &db,
        &["--connect-timeout", "300ms", "--connect-attempts", "1"],
    ));
    let mut c = connect_as(edge.addr, IpAddr::from([81, 2, 69, 50])).await;
    let (got, _) = read_until_end(&mut c).await;
    assert!(got.is_empty(), "{got:?}");
    counted(
        &edge,
        r#"edge_connections_total{result="connect_failed"}"#,
        1.0,
    )
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_mid_transfer_reaches_the_client_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Sends 4 MiB, then closes with SO_LINGER 0: a reset.
    let addr = raw_backend(|mut s| {
        header_line(&mut s);
        let chunk = vec![0x5au8; 64 * 1024];
        for _ in 0..64 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    });
    add_backend(&db, "resets", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));
    for round in 0..3 {
        let mut c = connect_as(edge.addr, sample_address("GB")).await;
        let (got, end) = read_until_end(&mut c).await;
        assert_ne!(
            end,
            End::Eof,
            "round {round}: the backend reset after 4 MiB and the client saw a clean end-of-file after {} bytes",
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_mid_transfer_reaches_the_backend_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Reads to the end; reports how many bytes, and how it ended.
    let (tx, rx) = mpsc::channel::<(u64, End)>();
    let tx = std::sync::Mutex::new(tx);
    let (progress_tx, progress) = mpsc::channel::<()>();
    let progress_tx = std::sync::Mutex::new(progress_tx);
    let addr = raw_backend(move |mut s| {
        header_line(&mut s);
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        let mut told = false;
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => total += n as u64,
                Err(e) => break End::Reset(e.kind()),
            }
            if total >= 1 << 20 && !told {
                told = true;
                let _ = progress_tx.lock().unwrap().send(());
            }
        };
        let _ = tx.lock().unwrap().send((total, end));
    });
    add_backend(&db, "uploads", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&epoll_args(&db, &[]));
    for round in 0..3 {
        let mut s = connect_as(edge.addr, sample_address("GB"))
            .await
            .into_inner();
        // Uploads until the backend has 1 MiB, then resets.
        let chunk = vec![0xa5u8; 64 * 1024];
        for _ in 0..16 {
            s.write_all(&chunk).await.unwrap();
        }
        tokio::task::block_in_place(|| progress.recv_timeout(GIVE_UP))
            .expect("the backend received 1 MiB");
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s);
        let (total, end) =
            tokio::task::block_in_place(|| rx.recv_timeout(GIVE_UP)).expect("the upload ended");
        assert_ne!(
            end,
            End::Eof,
            "round {round}: the client reset and the backend saw a clean end-of-file after {total} bytes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_closes_a_quiet_connection_and_spares_a_trickling_one() {
    let (_dir, db, be) = one_backend().await;
    let edge = Edge::start(&epoll_args(&db, &["--idle-timeout", "1s"]));

    let mut quiet = connect_as(edge.addr, IpAddr::from([81, 2, 69, 1])).await;
    assert_eq!(greeting(&mut quiet).await.as_deref(), Some("be"));
    let mut busy = connect_as(edge.addr, IpAddr::from([81, 2, 69, 2])).await;
    assert_eq!(greeting(&mut busy).await.as_deref(), Some("be"));
    busy.get_mut().write_all(b"echo\n").await.unwrap();

    let quietly = async {
        // The clock is read first: the relay sees the byte later.
        let last_byte = Instant::now();
        quiet.get_mut().write_all(b"hold\n").await.unwrap();
        let (got, end) = read_until_end(&mut quiet).await;
        (last_byte.elapsed(), got, end)
    };
    // A byte every 200 ms for 3 s (three idle timeouts), each echoed.
    let trickling = async {
        for i in 0..15u8 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            busy.get_mut().write_all(&[i]).await.expect("still open");
            let mut b = [0u8; 1];
            tokio::time::timeout(GIVE_UP, busy.read_exact(&mut b))
                .await
                .expect("echoed")
                .unwrap_or_else(|e| panic!("closed after {i} bytes: {e}"));
            assert_eq!(b[0], i);
        }
    };
    let ((closed_after, got, end), ()) = tokio::join!(quietly, trickling);
    assert_eq!(end, End::Eof, "closed with a FIN");
    assert!(got.is_empty(), "{got:?}");
    assert!(
        closed_after >= Duration::from_secs(1),
        "closed {closed_after:?} after its last byte, before the idle timeout"
    );

    // The trickling one is still open, and closes once it goes quiet.
    busy.get_mut().write_all(b"alive").await.unwrap();
    let mut b = [0u8; 5];
    busy.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"alive");
    let (got, end) = read_until_end(&mut busy).await;
    assert_eq!((got.len(), end), (0, End::Eof));
    eventually("the backend's sides closed", || {
        be.seen.open.load(Ordering::SeqCst) == 0
    })
    .await;
    counted(&edge, "edge_connections_current", 0.0).await;
}
