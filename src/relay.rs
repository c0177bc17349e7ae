//! The relay: bytes both ways between a client and its backend.
//!
//! Each direction is copied until its reader reaches end-of-file, which is
//! passed on as a write shutdown (a half-close) while the other direction
//! keeps flowing. An error on either side ends both. When no byte has moved
//! either way for the idle timeout, both sides are closed.
//!
//! Memory: the relay is one small state machine polled by the connection's
//! task (two sockets, two direction states and one timer), not a future
//! per direction. A direction holds a buffer only while data moves: it waits
//! for readability with none, takes one from its thread's pool when bytes
//! arrive, and gives it back as soon as a read would block and everything
//! read has been written, so an idle connection holds no relay buffer at
//! all. Bytes are added to the caller's counters as each chunk is passed on,
//! so the metrics see a long-lived connection's traffic as it flows.

use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
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
    mut backend: TcpStream,
    first_up: &[u8],
    idle: Duration,
    meter: Meter<'_>,
) -> Ended {
    if !first_up.is_empty() {
        if let Err(e) = backend.write_all(first_up).await {
            return Ended::Error(e);
        }
    }
    let mut up = Direction::default();
    let mut down = Direction::default();
    let mut last = Instant::now();
    let sleep = tokio::time::sleep_until(last + idle);
    tokio::pin!(sleep);
    poll_fn(|cx| {
        let mut moved = false;
        let up_done = match up.poll(cx, &client, &backend, meter.up, &mut moved) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => return Poll::Ready(Ended::Error(e)),
            Poll::Pending => false,
        };
        let down_done = match down.poll(cx, &backend, &client, meter.down, &mut moved) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => return Poll::Ready(Ended::Error(e)),
            Poll::Pending => false,
        };
        if up_done && down_done {
            return Poll::Ready(Ended::Closed(Moved {
                up: up.moved + first_up.len() as u64,
                down: down.moved,
            }));
        }
        if moved {
            last = Instant::now();
        }
        // The timer is armed for the last activity seen when it was set;
        // when it fires after newer activity, it is moved on.
        while sleep.as_mut().poll(cx).is_ready() {
            let deadline = last + idle;
            if deadline <= Instant::now() {
                return Poll::Ready(Ended::Idle);
            }
            sleep.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// One direction of a relay: what it has read and not yet written.
#[derive(Default)]
struct Direction {
    /// Held while data moves; `None` while waiting for the reader.
    buf: Option<PooledBuf>,
    /// `buf[pos..end]` is read and not yet written.
    pos: usize,
    end: usize,
    /// The reader reached end-of-file.
    eof: bool,
    /// The writer was shut down after end-of-file.
    shut: bool,
    /// Bytes passed on.
    moved: u64,
}

impl Direction {
    /// Moves what it can from `from` to `to`; `Ready(Ok)` once end-of-file
    /// has been passed on. Sets `moved` when bytes were read or written.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        counted: &AtomicU64,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.pos < self.end {
                let Some(buf) = self.buf.as_ref() else {
                    return Poll::Ready(Err(io::Error::other("relay buffer missing")));
                };
                ready!(to.poll_write_ready(cx))?;
                match to.try_write(&buf[self.pos..self.end]) {
                    Ok(n) => {
                        self.pos += n;
                        self.moved += n as u64;
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                        *moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.eof {
                if !self.shut {
                    // Pass the half-close on; the other direction keeps going.
                    self.shut = true;
                    socket2::SockRef::from(to).shutdown(Shutdown::Write)?;
                }
                return Poll::Ready(Ok(()));
            }
            if self.buf.is_none() {
                // Idle: wait with no buffer.
                ready!(from.poll_read_ready(cx))?;
                self.buf = Some(PooledBuf::take());
            }
            let Some(buf) = self.buf.as_mut() else {
                continue;
            };
            match from.try_read(buf) {
                Ok(0) => {
                    self.eof = true;
                    self.buf = None;
                }
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    *moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Drained: the buffer goes back until more arrives.
                    self.buf = None;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}
