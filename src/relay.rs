//! The relay: bytes both ways between a client and its backend.
//!
//! Each direction is copied until its reader reaches end-of-file, which is
//! passed on as a write shutdown (a half-close) while the other direction
//! keeps flowing. An error on either side ends both. When no byte has moved
//! either way for the idle timeout, both sides are closed. A direction holds
//! a buffer only while data moves: it waits for readability with none, takes
//! one from its thread's pool when bytes arrive, and gives it back as soon
//! as a read would block, so an idle connection holds no relay buffer at
//! all. Bytes are added to the
//! caller's counters as each chunk is passed on, so the metrics see a
//! long-lived connection's traffic as it flows.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Relay buffer size (per direction while data moves).
const BUFFER: usize = 64 * 1024;

/// Buffers a thread keeps for reuse; more are freed when given back.
const POOL_CAP: usize = 32;

thread_local! {
    /// Each worker thread's spare relay buffers.
    static POOL: std::cell::RefCell<Vec<Box<[u8]>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A relay buffer from the thread's pool, returned to it when dropped.
struct PooledBuf(Option<Box<[u8]>>);

impl PooledBuf {
    fn take() -> Self {
        let buf = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUFFER].into_boxed_slice());
        PooledBuf(Some(buf))
    }
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.0.take() {
            // A thread-local being torn down drops the buffer instead.
            let _ = POOL.try_with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_CAP {
                    p.push(buf);
                }
            });
        }
    }
}

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
    from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    last: &AtomicU64,
    start: Instant,
    counted: &AtomicU64,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        // Idle: wait with no buffer.
        from.readable().await?;
        let mut buf = PooledBuf::take();
        let eof = loop {
            match from.try_read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    to.write_all(&buf[..n]).await?;
                    total += n as u64;
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) => return Err(e),
            }
        };
        drop(buf);
        if eof {
            // Pass the half-close on; the other direction keeps going.
            to.shutdown().await?;
            return Ok(total);
        }
    }
}
