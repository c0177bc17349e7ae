//! Aborted transfers look aborted: a backend that resets mid-stream, and
//! transfers the drain timeout cuts, reach the other side as a reset (an
//! error on its next read), never as a clean end-of-file that a client or
//! an upload backend would take for a complete transfer.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use geoedge_geoip::sample_address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::*;

/// How a reader's stream ended.
#[derive(Debug, PartialEq)]
enum End {
    /// A clean end-of-file.
    Eof,
    /// A reset (or another error).
    Reset(ErrorKind),
}

/// Reads `s` to its end; returns the bytes read and how it ended.
async fn read_to_end<R: AsyncReadExt + Unpin>(s: &mut R) -> (u64, End) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Err(_) => panic!("no end after {total} bytes"),
            Ok(Ok(0)) => return (total, End::Eof),
            Ok(Ok(n)) => total += n as u64,
            Ok(Err(e)) => return (total, End::Reset(e.kind())),
        }
    }
}

/// A backend that reads what arrives (PROXY header included) and, per
/// connection, does `serve` on a thread of its own.
fn backend(serve: impl Fn(std::net::TcpStream) + Send + Sync + 'static) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let serve = Arc::clone(&serve);
            std::thread::spawn(move || serve(s));
        }
    });
    addr
}

/// Sends `n` bytes on `s` in 64 KiB writes; stops at the first error.
fn send(s: &mut std::net::TcpStream, n: u64) {
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0;
    while sent < n {
        if s.write_all(&chunk).is_err() {
            return;
        }
        sent += chunk.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reset_mid_stream_reaches_the_client_as_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // Sends 8 MiB, then closes with SO_LINGER 0: a reset.
    let addr = backend(|mut s| {
        send(&mut s, 8 << 20);
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    });
    add_backend(&db, "resets", "eu", "GB", addr, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    for round in 0..3 {
        let mut client = connect_as(edge.addr, sample_address("GB")).await;
        let (read, end) = read_to_end(&mut client).await;
        eprintln!("round {round}: the client read {read} bytes, then {end:?}");
        assert_ne!(
            end,
            End::Eof,
            "the backend reset after {read} bytes, and the client saw a clean end-of-file"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_timeout_resets_the_transfers_it_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    // A download that never ends (a client reading slowly enough to outlast
    // the drain) and an upload backend that counts what it receives and
    // records how the upload ended.
    let upload_end: Arc<std::sync::Mutex<Option<End>>> = Default::default();
    let received = Arc::new(AtomicU64::new(0));
    let (ends, counted) = (Arc::clone(&upload_end), Arc::clone(&received));
    let addr = backend(move |mut s| {
        let mut first = [0u8; 1];
        // The client's first byte (after the PROXY header line) says which
        // way: 'd' downloads, 'u' uploads.
        let mut line = Vec::new();
        while s.read_exact(&mut first).is_ok() && first[0] != b'\n' {
            line.push(first[0]);
        }
        if s.read_exact(&mut first).is_err() {
            return;
        }
        if first[0] == b'd' {
            send(&mut s, u64::MAX);
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break End::Eof,
                Ok(n) => {
                    counted.fetch_add(n as u64, Ordering::SeqCst);
                }
                Err(e) => break End::Reset(e.kind()),
            }
        };
        *ends.lock().unwrap() = Some(end);
    });
    add_backend(&db, "bulk", "eu", "GB", addr, 100, 200);
    let mut edge = Edge::start(&edge_args(&db, &["--drain-timeout", "1s"]));

    let mut down = connect_as(edge.addr, sample_address("GB")).await;
    down.get_mut().write_all(b"d").await.unwrap();
    let mut up = connect_as(edge.addr, sample_address("GB"))
        .await
        .into_inner();
    up.write_all(b"u").await.unwrap();
    // Both transfers are flowing before the edge is told to stop.
    let mut buf = vec![0u8; 64 * 1024];
    let mut downloaded = 0u64;
    while downloaded < 1 << 20 {
        downloaded += down.read(&mut buf).await.unwrap() as u64;
    }
    let uploader = tokio::spawn(async move {
        let chunk = vec![0xa5u8; 64 * 1024];
        // Writes until the edge cuts the connection.
        while up.write_all(&chunk).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    while received.load(Ordering::SeqCst) < 1 << 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    edge.signal("TERM");
    // The download goes on through the drain, then is cut.
    let slow = async {
        let mut total = downloaded;
        loop {
            match down.read(&mut buf).await {
                Ok(0) => return (total, End::Eof),
                Ok(n) => total += n as u64,
                Err(e) => return (total, End::Reset(e.kind())),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (total, end) = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the drain timeout ended the download");
    eprintln!("download: {total} bytes, then {end:?}");
    assert_ne!(end, End::Eof, "a download cut by the drain looked complete");
    let status = tokio::task::block_in_place(|| edge.wait(Duration::from_secs(10)));
    assert!(status.success(), "{status:?}");
    let _ = tokio::time::timeout(Duration::from_secs(10), uploader).await;
    let mut upload = None;
    for _ in 0..200 {
        upload = upload_end.lock().unwrap().take();
        if upload.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let upload = upload.expect("the upload backend saw its connection end");
    eprintln!(
        "upload: the backend received {} bytes, then {upload:?}",
        received.load(Ordering::SeqCst)
    );
    assert_ne!(
        upload,
        End::Eof,
        "an upload cut by the drain looked complete"
    );
}
