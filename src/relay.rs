//! The relay: bytes both ways between a client and its backend.
//!
//! Each direction is copied until its reader reaches end-of-file, which is
//! passed on as a write shutdown (a half-close) while the other direction
//! keeps flowing. An error on either side ends both. When no byte has moved
//! either way for the idle timeout, both sides are closed. A direction's
//! buffer is allocated on its first read, so a connection that never sends
//! in one direction holds no buffer for it. Bytes are added to the
//! caller's counters as each chunk is passed on, so the metrics see a
//! long-lived connection's traffic as it flows.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Relay buffer size per direction.
const BUFFER: usize = 16 * 1024;

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Moved {
    /// Client to backend.
    pub up: u64,
    /// Backend to client.
    pub down: u64,
}

/// Where a relay counts the bytes it passes on (relaxed adds, one per chunk).
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    /// Client to backend.
    pub up: &'a AtomicU64,
    /// Backend to client.
    pub down: &'a AtomicU64,
}

/// How a relay ended.
#[derive(Debug)]
pub enum Ended {
    /// Both directions reached end-of-file.
    Closed(Moved),
    /// Nothing moved for the idle timeout.
    Idle,
    /// A socket failed.
    Error(io::Error),
}

/// Relays between `client` and `backend` until both directions are closed,
/// one fails, or both stay idle for `idle`. `first_up` is sent to the
/// backend before anything read from the client (bytes that arrived with a
/// PROXY header); it is not counted by `meter`.
pub async fn relay(
    client: TcpStream,
    backend: TcpStream,
    first_up: &[u8],
    idle: Duration,
    meter: Meter<'_>,
) -> Ended {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = client.into_split();
    let (br, mut bw) = backend.into_split();
    if !first_up.is_empty() {
        if let Err(e) = bw.write_all(first_up).await {
            return Ended::Error(e);
        }
    }
    let both = async {
        tokio::try_join!(
            copy(cr, bw, &last, start, meter.up),
            copy(br, cw, &last, start, meter.down)
        )
    };
    let idle_watch = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            tokio::time::sleep_until(deadline).await;
            if Duration::from_millis(last.load(Ordering::Relaxed)) == since {
                return;
            }
        }
    };
    tokio::select! {
        r = both => match r {
            Ok((up, down)) => Ended::Closed(Moved { up: up + first_up.len() as u64, down }),
            Err(e) => Ended::Error(e),
        },
        () = idle_watch => Ended::Idle,
    }
}

async fn copy(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    last: &AtomicU64,
    start: Instant,
    counted: &AtomicU64,
) -> io::Result<u64> {
    let mut total = 0u64;
    // Allocated once data arrives: an idle direction holds no buffer.
    from.readable().await?;
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction keeps going.
            to.shutdown().await?;
            return Ok(total);
        }
        to.write_all(&buf[..n]).await?;
        total += n as u64;
        counted.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}
