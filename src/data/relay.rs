//! The relay: bytes both ways between a client and its backend.
//!
//! Each direction is copied until its reader reaches end-of-file, which is
//! passed on as a write shutdown (a half-close) while the other direction
//! keeps flowing. An error on either side ends both, and is passed on as a
//! reset to both peers, as is a relay cut before its end (see [`relay`]).
//! When no byte has moved either way for the idle timeout, both sides are
//! closed (checked every [`IDLE_STEPS`]th of the timeout, so the close comes
//! up to that much later: moving bytes reads no clock).
//!
//! Memory: the relay is one small state machine polled by the connection's
//! task (two sockets, two direction states and one timer), not a future
//! per direction. A direction holds a buffer only while data moves: it waits
//! for readability with none, takes one from its thread's pool when bytes
//! arrive, and gives it back as soon as a read would block and everything
//! read has been written, so an idle connection holds no relay buffer at
//! all. A direction that has moved more than [`SPLICE_AFTER`] and reads
//! big chunks (a bulk transfer) moves its bytes with splice(2) through a
//! pooled pipe instead of copying them (see [`crate::data::splice`]), unless
//! [`Policy::splice`] is off; small
//! messages (keep-alive HTTP) stay on the copy path, which costs them less.
//! A short read means the socket was drained, so it clears the socket's
//! readiness (as tokio's own reads do) and the next read waits for
//! readiness instead of making a system call only to be told `WouldBlock`;
//! a short read made after the reactor saw the peer's end-of-file ends the
//! direction without a read only to be told so. Bytes are added to the caller's
//! counters as each chunk is passed on, so the metrics see a long-lived
//! connection's traffic as it flows.

use std::future::{poll_fn, Future};
use std::io;
use std::net::Shutdown;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::data::conn_stats::ByteCounter;
use crate::data::splice::Pipe;

/// Relay buffer size (per direction while data moves). Copying a bulk
/// transfer through 32 KiB moved as much as HAProxy's and nginx's 16 KiB
/// buffers on the 2026-12-03 host; through 64 KiB it moved about 30% less
/// at 1.6–1.8× the proxy's CPU per byte (docs/benchmarks.md, "bulk
/// throughput, splice and copy").
const BUFFER: usize = 32 * 1024;

/// The idle timeout is checked this many times per timeout while bytes
/// move, so a connection is closed between the idle timeout and an eighth
/// more after its last byte (see [`relay`]'s timer).
pub const IDLE_STEPS: u32 = 8;

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
    /// The backend ended its side first (the client did, or both were
    /// seen ending at the same time, when false): who closed the
    /// connection, for its access-log line.
    pub backend_first: bool,
}

/// Where a relay counts the bytes it passes on (one add per chunk).
#[derive(Debug, Clone, Copy)]
pub struct Meter<'a> {
    /// Client to backend.
    pub up: ByteCounter<'a>,
    /// Backend to client.
    pub down: ByteCounter<'a>,
}

/// How a relay moves bytes, and when it ends besides both sides closing.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Nothing moved either way for this long: both sides are closed.
    pub idle: Duration,
    /// The backend's end-of-file is passed to the client as a half-close,
    /// and the client may go on sending until it ends its side (true); or
    /// the client connection is closed as soon as everything the backend
    /// sent is passed on (false: cheaper for protocols where the server's
    /// close ends the exchange, as HTTP `Connection: close` does, but it
    /// cuts off a client still sending). A client's end-of-file is passed
    /// to the backend as a half-close either way.
    pub half_close: bool,
    /// A bulk transfer (past [`SPLICE_AFTER`], big reads) moves its bytes
    /// with splice(2) through a pooled pipe (true), or goes on copying
    /// through the relay buffer (false). Splicing costs the proxy fewer
    /// system calls and no copies, but hands the receiver pages that the
    /// sender wrote long before; on some hosts the receiver's copy of them
    /// costs more than the proxy saves (measured in docs/benchmarks.md).
    pub splice: bool,
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

/// Relays between `client` and `backend` until both directions are closed
/// (or the backend's is, without `policy.half_close`), one fails, or both
/// stay idle for `policy.idle`. `first_up` is sent to the
/// backend before anything read from the client (bytes that arrived with a
/// PROXY header); it is not counted by `meter`.
///
/// A relay that does not end cleanly is aborted on both sides: when a
/// socket fails (a reset, a write to a closed peer) or the relay is dropped
/// before it ends (the drain timeout cutting open connections, the worker's
/// runtime going away), both sockets are closed with `SO_LINGER 0`, so each
/// peer sees a reset instead of an end-of-file that would make a truncated
/// transfer look complete.
pub async fn relay(
    client: TcpStream,
    backend: TcpStream,
    first_up: &[u8],
    policy: Policy,
    meter: Meter<'_>,
) -> Ended {
    let mut pair = Pair {
        client,
        backend,
        clean: false,
    };
    let ended = relay_pair(&pair.client, &mut pair.backend, first_up, policy, meter).await;
    pair.clean = !matches!(ended, Ended::Error(_));
    ended
}

/// The two sockets of a relay, reset when dropped unless the relay ended
/// cleanly (see [`relay`]).
struct Pair {
    client: TcpStream,
    backend: TcpStream,
    /// Set when the relay ended by both sides closing or by the idle
    /// timeout: the sockets then close with a FIN.
    clean: bool,
}

impl Drop for Pair {
    fn drop(&mut self) {
        if !self.clean {
            abort(&self.client);
            abort(&self.backend);
        }
    }
}

/// Makes the close of `socket` send a reset (`SO_LINGER 0`) instead of a
/// FIN. Best effort: a socket that cannot take the option has failed
/// already, and its close says so.
pub(crate) fn abort(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

/// [`relay`] over borrowed sockets.
async fn relay_pair(
    client: &TcpStream,
    backend: &mut TcpStream,
    first_up: &[u8],
    policy: Policy,
    meter: Meter<'_>,
) -> Ended {
    let idle = policy.idle;
    if !first_up.is_empty() {
        if let Err(e) = backend.write_all(first_up).await {
            return Ended::Error(e);
        }
    }
    let backend = &*backend;
    let mut up = Direction::new(policy.splice);
    let mut down = Direction::new(policy.splice);
    // The idle timer: while bytes move it fires every `step`, and each
    // firing that finds `active` set takes its own time as the start of
    // the quiet; one that finds nothing moved since the previous one leaves
    // it, and the relay ends at `quiet + idle`. A chunk passed on only sets
    // `active`: no clock read and no timer call per chunk, and the timer is
    // polled only once it has fired (`is_elapsed` is one atomic load; the
    // task's waker, registered at the first poll, stays the same).
    let step = (idle / IDLE_STEPS).max(Duration::from_millis(1));
    let mut quiet = Instant::now();
    let mut active = false;
    let mut armed = false;
    let sleep = tokio::time::sleep_until(quiet + step.min(idle));
    tokio::pin!(sleep);
    // Which side ended first, once one has.
    let mut backend_first = None;
    poll_fn(|cx| {
        let mut moved = false;
        let up_done = match up.poll(cx, client, backend, meter.up, &mut moved) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => return Poll::Ready(Ended::Error(e)),
            Poll::Pending => false,
        };
        let down_done = match down.poll(cx, backend, client, meter.down, &mut moved) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => return Poll::Ready(Ended::Error(e)),
            Poll::Pending => false,
        };
        if backend_first.is_none() && (up_done || down_done) {
            backend_first = Some(!up_done);
        }
        if down_done && (up_done || !policy.half_close) {
            // Both sockets are closed when the relay returns, and closing
            // sends the FIN a write shutdown would (both receive queues are
            // empty: each reader has read its end-of-file), so the
            // direction that finished last needs no shutdown call. (Without
            // half-close, the client's queue may hold unread bytes, and
            // closing then resets the connection, as a full close does.)
            return Poll::Ready(Ended::Closed(Moved {
                up: up.moved + first_up.len() as u64,
                down: down.moved,
                backend_first: backend_first == Some(true),
            }));
        }
        // One direction is done while the other still flows: pass its
        // end-of-file on as a half-close.
        let half = if up_done {
            up.pass_eof(backend)
        } else if down_done {
            down.pass_eof(client)
        } else {
            Ok(())
        };
        if let Err(e) = half {
            return Poll::Ready(Ended::Error(e));
        }
        active |= moved;
        if !armed || sleep.is_elapsed() {
            armed = true;
            while sleep.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if std::mem::take(&mut active) {
                    quiet = now;
                } else if now >= quiet + idle {
                    return Poll::Ready(Ended::Idle);
                }
                sleep.as_mut().reset((now + step).min(quiet + idle));
            }
        }
        Poll::Pending
    })
    .await
}

/// Reads what `from` holds into `buf`. A short read (less than `buf`)
/// means the socket was drained, so it also clears the socket's read
/// readiness, as tokio's own reads do: the next read then waits for
/// readiness instead of making a system call only to be told `WouldBlock`
/// (one syscall per chunk). The readiness is cleared inside the same
/// `try_io` as the read, against the readiness event the read was based
/// on, so bytes or an end-of-file that arrive after it raise a newer event
/// that stays set: no wake-up is lost.
fn read_short_clears(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut short = None;
    let read = from.try_io(Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(from)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            // Tells `try_io` to clear the readiness this read consumed.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match short {
        Some(n) => Ok(n),
        None => read,
    }
}

/// Whether `from`'s readiness already holds the peer's end-of-file (an
/// `EPOLLRDHUP` seen by the reactor). Closed states are final in tokio's
/// readiness (a cleared readiness keeps them), so this is exact for
/// everything that arrived before the next read. Called when `from` is
/// known to be readable, where the readiness future is ready at once
/// (one atomic load, no waiter registered); if it is not, "not closed" is
/// the safe answer (the read then finds the end-of-file itself).
///
/// A reset seen the same way (`EPOLLERR`) is an error, so that a short read
/// before it does not end the direction as if the peer had closed cleanly.
fn read_closed(from: &TcpStream, cx: &mut Context<'_>) -> io::Result<bool> {
    let ready = std::pin::pin!(from.ready(Interest::READABLE | Interest::ERROR));
    match ready.poll(cx) {
        Poll::Ready(Ok(r)) if r.is_error() => Err(from
            .take_error()?
            .unwrap_or_else(|| io::ErrorKind::ConnectionReset.into())),
        Poll::Ready(Ok(r)) => Ok(r.is_read_closed()),
        _ => Ok(false),
    }
}

/// A direction that has moved less than this asks, before each read,
/// whether the peer's end-of-file is already in ([`read_closed`]), to save
/// the read that would only report it. Asking costs a lock and unlock of
/// the socket's waiter list (about as much as the read it saves on a
/// keep-alive connection's many small reads), so past this a direction,
/// long-lived by then, reads its end-of-file like any other.
const EOF_CHECK_BELOW: u64 = 16 * 1024;

/// A direction that has moved this much is a bulk transfer: it switches
/// from copying to splice (below it, two syscalls per chunk either way, and
/// a pipe would cost kernel memory for nothing).
pub(crate) const SPLICE_AFTER: u64 = 256 * 1024;

/// A read at least this big is a bulk read. Long-lived connections that
/// exchange small messages (keep-alive HTTP) pass [`SPLICE_AFTER`] too, but
/// splicing a small message costs two splices and a pipe where copying
/// costs a read and a write, so a direction splices only while its reads
/// are big, and goes back to copying after a small one.
pub(crate) const BULK_READ: usize = 16 * 1024;

/// One direction of a relay: what it has read and not yet written.
#[derive(Default)]
struct Direction {
    /// Held while data moves; `None` while waiting for the reader.
    buf: Option<PooledBuf>,
    /// The pipe of a splicing direction, held while data moves.
    pipe: Option<Pipe>,
    /// Bulk transfers may splice ([`Policy::splice`]).
    may_splice: bool,
    /// Past [`SPLICE_AFTER`]: moves bytes with splice.
    splicing: bool,
    /// No pipe was to be had: copy until the reader is drained.
    no_pipe: bool,
    /// `buf[pos..end]` is read and not yet written.
    pos: usize,
    end: usize,
    /// While splicing: the size of the last splice into the pipe.
    last_fill: usize,
    /// The reader reached end-of-file.
    eof: bool,
    /// The writer was shut down after end-of-file.
    shut: bool,
    /// Bytes passed on.
    moved: u64,
}

impl Direction {
    fn new(may_splice: bool) -> Self {
        Direction {
            may_splice,
            ..Direction::default()
        }
    }

    /// Moves what it can from `from` to `to`; `Ready(Ok)` once end-of-file
    /// has been read and everything before it written. Sets `moved` when bytes were read or written.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        counted: ByteCounter<'_>,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.splicing {
                return self.poll_splice(cx, from, to, counted, moved);
            }
            if self.pos < self.end {
                let Some(buf) = self.buf.as_ref() else {
                    return Poll::Ready(Err(io::Error::other("relay buffer missing")));
                };
                ready!(to.poll_write_ready(cx))?;
                match to.try_write(&buf[self.pos..self.end]) {
                    Ok(n) => {
                        self.pos += n;
                        self.moved += n as u64;
                        counted.add(n as u64);
                        *moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.may_splice
                && self.moved >= SPLICE_AFTER
                && self.end >= BULK_READ
                && !self.eof
                && !self.no_pipe
            {
                // A bulk transfer (a long one, and its last read was a big
                // one), and nothing is left in the buffer: go on with
                // splice.
                self.buf = None;
                self.splicing = true;
                self.last_fill = self.end;
                (self.pos, self.end) = (0, 0);
                continue;
            }
            if self.eof {
                // Everything read is passed on; the relay half-closes the
                // writer unless the other direction is done too.
                self.buf = None;
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
            // Whether the peer's end-of-file had arrived before this read;
            // asked only of a short-lived direction (see `EOF_CHECK_BELOW`).
            let closed = self.moved < EOF_CHECK_BELOW && read_closed(from, cx)?;
            match read_short_clears(from, buf) {
                Ok(0) => {
                    self.eof = true;
                    self.buf = None;
                }
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    // A short read drained the socket; with the end-of-file
                    // already in, nothing can follow: no read only to be
                    // told so (one syscall per connection that closes right
                    // after its last bytes, as an HTTP `Connection: close`
                    // response does).
                    self.eof = closed && n < buf.len();
                    *moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Drained: the buffer goes back until more arrives (and
                    // the next stretch may find a pipe).
                    self.buf = None;
                    self.no_pipe = false;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Passes the reader's end-of-file on to `to` as a write shutdown (a
    /// half-close; the other direction keeps going), once.
    fn pass_eof(&mut self, to: &TcpStream) -> io::Result<()> {
        if !self.shut {
            self.shut = true;
            socket2::SockRef::from(to).shutdown(Shutdown::Write)?;
        }
        Ok(())
    }

    /// [`Direction::poll`] for a bulk transfer: socket to pipe to socket,
    /// holding a pipe only while data moves. Falls back to copying when no
    /// pipe is to be had.
    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        from: &TcpStream,
        to: &TcpStream,
        counted: ByteCounter<'_>,
        moved: &mut bool,
    ) -> Poll<io::Result<()>> {
        loop {
            if let Some(pipe) = self.pipe.as_mut().filter(|p| p.filled > 0) {
                ready!(to.poll_write_ready(cx))?;
                match to.try_io(Interest::WRITABLE, || pipe.drain_to(to)) {
                    Ok(n) => {
                        self.moved += n as u64;
                        counted.add(n as u64);
                        *moved = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Poll::Ready(Err(e)),
                }
                continue;
            }
            if self.eof {
                // Everything read is passed on; the relay half-closes the
                // writer unless the other direction is done too.
                return Poll::Ready(Ok(()));
            }
            if self.pipe.is_none() {
                ready!(from.poll_read_ready(cx))?;
                match Pipe::take() {
                    Some(p) => self.pipe = Some(p),
                    None => {
                        // No pipe to spare: copy this stretch.
                        self.splicing = false;
                        self.no_pipe = true;
                        return self.poll(cx, from, to, counted, moved);
                    }
                }
            }
            let Some(pipe) = self.pipe.as_mut() else {
                continue;
            };
            match from.try_io(Interest::READABLE, || pipe.fill_from(from)) {
                Ok(0) => {
                    self.eof = true;
                    self.pipe = None;
                }
                Ok(n) => {
                    *moved = true;
                    self.last_fill = n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Drained and empty: the pipe goes back to the pool.
                    self.pipe = None;
                    if self.last_fill < BULK_READ {
                        // The stretch ended with a small read: small
                        // messages again, which copying moves cheaper.
                        self.splicing = false;
                        return self.poll(cx, from, to, counted, moved);
                    }
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::conn_stats::ConnStats;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    fn meter(stats: &ConnStats) -> Meter<'_> {
        Meter {
            up: stats.up(),
            down: stats.down(),
        }
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    /// Sends `data` and a write shutdown on `stream` while reading it to its
    /// end; returns what was read.
    async fn send_and_read_all(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
        let (mut r, mut w) = stream.split();
        let send = async {
            w.write_all(data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let (_, n) = tokio::join!(send, r.read_to_end(&mut got));
        n.unwrap();
        got
    }

    /// The relay policy of most tests: half-close and splice on, an idle
    /// timeout no test reaches.
    fn policy() -> Policy {
        Policy {
            idle: Duration::from_secs(30),
            half_close: true,
            splice: true,
        }
    }

    /// What a bulk transfer both ways through a relay left behind.
    struct Bulk {
        up: Vec<u8>,
        down: Vec<u8>,
        at_backend: Vec<u8>,
        at_client: Vec<u8>,
        moved: Moved,
        stats: ConnStats,
    }

    /// Relays 3 MB up (after `first_up`) and 2 MB down, each side sending
    /// and half-closing while it reads the other's bytes to their end.
    async fn bulk_both_ways(first_up: &[u8], policy: Policy) -> Bulk {
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let stats = ConnStats::default();
        let up: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let down: Vec<u8> = (0..2_000_000u32).map(|i| (i % 241) as u8).collect();
        let relaying = relay(client_side, backend_side, first_up, policy, meter(&stats));
        let (ended, at_client, at_backend) = tokio::join!(
            relaying,
            send_and_read_all(&mut client, &up),
            send_and_read_all(&mut backend, &down)
        );
        let Ended::Closed(moved) = ended else {
            panic!("{ended:?}");
        };
        Bulk {
            up,
            down,
            at_backend,
            at_client,
            moved,
            stats,
        }
    }

    /// A bulk transfer switches to splice past the threshold (the thread's
    /// pipe pool shows it), every byte arrives in order both ways, and the
    /// pipe is back in the pool once the relay has ended.
    #[tokio::test(flavor = "current_thread")]
    async fn bulk_bytes_are_spliced_and_arrive_intact_both_ways() {
        let b = bulk_both_ways(b"early", policy()).await;
        assert_eq!(&b.at_backend[..5], b"early");
        assert!(
            b.at_backend[5..] == b.up[..],
            "client to backend bytes differ"
        );
        assert!(b.at_client == b.down, "backend to client bytes differ");
        assert_eq!(b.moved.up, b.up.len() as u64 + 5);
        assert_eq!(b.moved.down, b.down.len() as u64);
        assert_eq!(b.stats.bytes_up(), b.up.len() as u64);
        assert_eq!(b.stats.bytes_down(), b.down.len() as u64);
        let (open, spare) = crate::data::splice::thread_pipes();
        assert!(open >= 1, "no pipe was used: the transfer was copied");
        assert_eq!(open, spare, "every pipe is back in the pool");
    }

    /// With splice off, the same bulk transfer as above is copied: every
    /// byte arrives both ways and no pipe is ever opened.
    #[tokio::test(flavor = "current_thread")]
    async fn with_splice_off_bulk_bytes_are_copied_and_arrive_intact() {
        let policy = Policy {
            splice: false,
            ..policy()
        };
        let b = bulk_both_ways(b"", policy).await;
        assert!(b.at_backend == b.up, "client to backend bytes differ");
        assert!(b.at_client == b.down, "backend to client bytes differ");
        assert_eq!(
            (b.moved.up, b.moved.down),
            (b.up.len() as u64, b.down.len() as u64)
        );
        assert_eq!(b.stats.bytes_up(), b.up.len() as u64);
        assert_eq!(
            crate::data::splice::thread_pipes(),
            (0, 0),
            "a pipe was used"
        );
    }

    /// Request and response in small chunks, one after the other (each read
    /// is short, so each direction waits for readiness after writing it
    /// out): every exchange completes, and data sent together with its
    /// end-of-file still passes the end-of-file on.
    #[tokio::test(flavor = "current_thread")]
    async fn short_reads_lose_no_wake_up() {
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let stats = ConnStats::default();
        let relaying = relay(client_side, backend_side, b"", policy(), meter(&stats));
        let exchanges = async {
            let mut buf = [0u8; 64];
            for i in 0..2_000u32 {
                let ask = format!("ask {i}");
                client.write_all(ask.as_bytes()).await.unwrap();
                let n = backend.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], ask.as_bytes());
                let answer = format!("answer {i}");
                backend.write_all(answer.as_bytes()).await.unwrap();
                let n = client.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], answer.as_bytes());
            }
            // The last bytes and the end-of-file in one go, both ways.
            client.write_all(b"bye").await.unwrap();
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            backend.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"bye");
            backend.write_all(b"bye too").await.unwrap();
            backend.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"bye too");
        };
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(relaying, exchanges)
        })
        .await
        .expect("the relay stalled: a wake-up was lost");
        assert!(matches!(ended, Ended::Closed(_)), "{ended:?}");
    }

    /// Data followed at once by the end-of-file, already in before the
    /// relay reads (so its readiness holds the end-of-file and a short read
    /// ends the direction without reading again): every byte arrives, the
    /// end-of-file is passed on as a half-close, and the other direction
    /// keeps flowing. Sizes around the buffer's, where a read is full and
    /// the end-of-file must still be read for itself.
    #[tokio::test(flavor = "current_thread")]
    async fn data_with_its_end_of_file_is_passed_on_whole() {
        for len in [1, 100, BUFFER - 1, BUFFER, BUFFER + 1, 3 * BUFFER + 7] {
            let (mut client, client_side) = pair().await;
            let (backend_side, mut backend) = pair().await;
            let data: Vec<u8> = (0..len as u32).map(|i| (i % 251) as u8).collect();
            backend.write_all(&data).await.unwrap();
            backend.shutdown().await.unwrap();
            // Let the end-of-file land before the relay starts.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let stats = ConnStats::default();
            let relaying = relay(client_side, backend_side, b"", policy(), meter(&stats));
            let talk = async {
                let mut got = Vec::new();
                client.read_to_end(&mut got).await.unwrap();
                assert!(got == data, "{len} bytes: received {}", got.len());
                // Half-closed only: the client can still send.
                client.write_all(b"after").await.unwrap();
                client.shutdown().await.unwrap();
                let mut rest = Vec::new();
                backend.read_to_end(&mut rest).await.unwrap();
                assert_eq!(rest, b"after", "{len} bytes");
            };
            let (ended, ()) = tokio::time::timeout(Duration::from_secs(20), async {
                tokio::join!(relaying, talk)
            })
            .await
            .expect("the relay stalled");
            assert!(matches!(ended, Ended::Closed(_)), "{len} bytes: {ended:?}");
            assert_eq!(stats.bytes_down(), len as u64);
        }
    }

    /// A backend that resets after a short answer (the reset already in
    /// when the relay reads the answer, so the short-read end-of-file check
    /// sees it) ends the relay in an error, and the client sees a reset
    /// after the answer, not an end-of-file.
    #[tokio::test(flavor = "current_thread")]
    async fn a_reset_after_a_short_answer_reaches_the_client_as_a_reset() {
        let (mut client, client_side) = pair().await;
        let (backend_side, backend) = pair().await;
        let mut backend = backend.into_std().unwrap();
        std::io::Write::write_all(&mut backend, b"partial").unwrap();
        socket2::SockRef::from(&backend)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(backend);
        // Let the reset arrive and the reactor see it before relaying.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = ConnStats::default();
        let ended = relay(client_side, backend_side, b"", policy(), meter(&stats)).await;
        assert!(matches!(ended, Ended::Error(_)), "{ended:?}");
        let mut got = Vec::new();
        let err = client.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "read {got:?}");
    }

    /// A relay dropped before it ends (the drain timeout dropping the
    /// worker's tasks) resets both peers.
    #[tokio::test(flavor = "current_thread")]
    async fn a_relay_dropped_before_its_end_resets_both_peers() {
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let stats = ConnStats::default();
        client.write_all(b"up").await.unwrap();
        backend.write_all(b"down").await.unwrap();
        let relaying = relay(client_side, backend_side, b"", policy(), meter(&stats));
        // Polled long enough to pass both messages on, then dropped.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), relaying)
                .await
                .is_err(),
            "the relay ended on its own"
        );
        for (peer, sent) in [(&mut client, &b"down"[..]), (&mut backend, &b"up"[..])] {
            let mut got = Vec::new();
            let err = peer.read_to_end(&mut got).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
            assert_eq!(got, sent);
        }
    }

    /// Without half-close, the backend's end-of-file ends the relay once
    /// its last bytes are passed on, with the client still open: the client
    /// reads them and then its end-of-file. A client's end-of-file is still
    /// only a half-close: the backend answers after it.
    #[tokio::test(flavor = "current_thread")]
    async fn without_half_close_the_backend_closing_closes_the_client() {
        let policy = Policy {
            half_close: false,
            ..policy()
        };
        // The backend answers and closes; the client never closes.
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let stats = ConnStats::default();
        let relaying = relay(client_side, backend_side, b"", policy, meter(&stats));
        let backend_talk = async {
            let mut buf = [0u8; 16];
            let n = backend.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"ask");
            backend.write_all(b"answer").await.unwrap();
            backend.shutdown().await.unwrap();
        };
        let client_talk = async {
            client.write_all(b"ask").await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"answer");
        };
        let (ended, (), ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(relaying, backend_talk, client_talk)
        })
        .await
        .expect("the relay waited for the client to close");
        assert!(matches!(ended, Ended::Closed(_)), "{ended:?}");

        // The client sends and shuts down first; the backend still answers.
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let relaying = relay(client_side, backend_side, b"", policy, meter(&stats));
        let talk = async {
            client.write_all(b"ask").await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            backend.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"ask");
            backend.write_all(b"answer").await.unwrap();
            backend.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"answer");
        };
        let (ended, ()) = tokio::time::timeout(Duration::from_secs(20), async {
            tokio::join!(relaying, talk)
        })
        .await
        .expect("the relay stalled");
        assert!(matches!(ended, Ended::Closed(_)), "{ended:?}");
    }

    /// Small chunks keep arriving while the writer side is full: a short
    /// read, then a write that has to wait, then more bytes arriving before
    /// the write can finish. The readiness the short read consumed must not
    /// be cleared after the wait (that would drop the newer edge and stall
    /// the direction until the idle timeout): every byte arrives.
    #[tokio::test(flavor = "current_thread")]
    async fn bytes_arriving_while_the_writer_waits_are_not_lost() {
        let (client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        // Small buffers between the relay and the client so its writes wait.
        socket2::SockRef::from(&client)
            .set_recv_buffer_size(4096)
            .unwrap();
        socket2::SockRef::from(&client_side)
            .set_send_buffer_size(4096)
            .unwrap();
        let stats = ConnStats::default();
        let relaying = relay(client_side, backend_side, b"", policy(), meter(&stats));
        const TOTAL: usize = 200 * 1024;
        let sending = async {
            let chunk = [5u8; 1000];
            let mut sent = 0;
            while sent < TOTAL {
                let n = chunk.len().min(TOTAL - sent);
                backend.write_all(&chunk[..n]).await.unwrap();
                sent += n;
                tokio::task::yield_now().await;
            }
            // Keep the backend open: only the bytes themselves can wake the
            // relay now.
            backend
        };
        let mut client = client;
        let reading = async {
            let mut got = 0;
            let mut buf = [0u8; 700];
            while got < TOTAL {
                let n = client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed after {got} bytes");
                got += n;
                if got % 7 == 0 {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            got
        };
        let run = async {
            tokio::select! {
                ended = relaying => panic!("relay ended early: {ended:?}"),
                (_backend, got) = async { tokio::join!(sending, reading) } => got,
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the relay stalled: a wake-up was lost");
        assert_eq!(got, TOTAL);
    }

    /// A long-lived connection exchanging small messages (keep-alive HTTP)
    /// passes the splice threshold many times over but keeps copying: its
    /// reads are small, and splicing them would cost more.
    #[tokio::test(flavor = "current_thread")]
    async fn small_messages_past_the_threshold_are_copied() {
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let stats = ConnStats::default();
        let relaying = relay(client_side, backend_side, b"", policy(), meter(&stats));
        let exchanges = async {
            let ask = [7u8; 200];
            let answer = [9u8; 1500];
            let mut buf = vec![0u8; 4096];
            for _ in 0..400 {
                client.write_all(&ask).await.unwrap();
                backend.read_exact(&mut buf[..ask.len()]).await.unwrap();
                backend.write_all(&answer).await.unwrap();
                client.read_exact(&mut buf[..answer.len()]).await.unwrap();
            }
            drop(client);
            drop(backend);
        };
        let (ended, ()) = tokio::join!(relaying, exchanges);
        assert!(!matches!(ended, Ended::Idle), "{ended:?}");
        assert_eq!(stats.bytes_down(), 400 * 1500);
        assert!(stats.bytes_down() > SPLICE_AFTER);
        assert_eq!(
            crate::data::splice::thread_pipes(),
            (0, 0),
            "small messages went through a pipe"
        );
    }

    /// Bytes moving keep a relay open; after the last of them it ends
    /// between the idle timeout and an [`IDLE_STEPS`]th of it more, on
    /// paused time.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_relay_ends_an_idle_timeout_after_its_last_byte() {
        let (mut client, client_side) = pair().await;
        let (backend_side, mut backend) = pair().await;
        let stats = ConnStats::default();
        let idle = Duration::from_millis(800);
        let started = Instant::now();
        let relaying = relay(
            client_side,
            backend_side,
            b"",
            Policy { idle, ..policy() },
            meter(&stats),
        );
        let talk = async {
            let mut got = [0u8; 1];
            // A byte every 500 ms for 2.5 s: longer than the timeout in
            // all, never idle for it.
            for _ in 0..6 {
                client.write_all(b"x").await.unwrap();
                backend.read_exact(&mut got).await.unwrap();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            started.elapsed() - Duration::from_millis(500)
        };
        let (ended, last) = tokio::join!(relaying, talk);
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
        let quiet = started.elapsed() - last;
        assert!(
            quiet >= idle && quiet <= idle + idle / IDLE_STEPS,
            "ended {quiet:?} after the last byte (idle timeout {idle:?})"
        );
    }

    /// An idle connection holds no buffer and no pipe, and ends at the idle
    /// timeout: on paused time, exactly then.
    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn an_idle_relay_ends_at_the_idle_timeout() {
        let (_client, client_side) = pair().await;
        let (backend_side, _backend) = pair().await;
        let stats = ConnStats::default();
        let started = Instant::now();
        let ended = relay(
            client_side,
            backend_side,
            b"",
            Policy {
                idle: Duration::from_millis(300),
                ..policy()
            },
            meter(&stats),
        )
        .await;
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(crate::data::splice::thread_pipes(), (0, 0));
    }
}
