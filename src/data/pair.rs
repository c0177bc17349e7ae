//! The relay of one client/backend pair as a state machine that does no IO
//! and reads no clock. Its driver (the epoll worker,
//! [`crate::data::event_loop`]) feeds it the sockets' readiness
//! ([`PairRelay::handle_readiness`]), what each read, write and shutdown it
//! asked for did (`handle_read`, `handle_write`, `handle_shutdown`) and the
//! time (`handle_timeout`); [`PairRelay::poll_io`] says what to do next,
//! until it has nothing to do before the next readiness.
//!
//! The rules are the tokio relay's ([`crate::data::relay`]):
//! - each direction is copied until its reader reaches end-of-file, which is
//!   passed on as a write shutdown (a half-close) once every byte read
//!   before it is written, while the other direction keeps flowing; when
//!   both have ended the pair closes, with a FIN (the last direction needs
//!   no shutdown: the close sends it);
//! - without half-close, the backend's end-of-file closes the pair as soon
//!   as everything the backend sent is written to the client;
//! - an error on either socket ends the pair with a reset on both
//!   ([`Io::Close`] with `reset`), so a cut transfer never looks complete;
//! - nothing moved either way for the idle timeout: both close with a FIN.
//!
//! Readiness is edge-triggered: a socket is read until a read comes back
//! short (the socket is drained; the next bytes raise a new edge) or would
//! block, and written until a write comes back short. After the reader saw
//! the peer's end-of-file (`read_closed`), a short read does not stop it:
//! the next read returns the end-of-file itself.
//!
//! Memory: a direction holds a buffer from the worker's [`BufPool`] only
//! while bytes wait in it, so an idle pair holds none.
//!
//! Splice: with a [`SpliceRule`], a direction that has moved
//! [`SpliceRule::after`] bytes and whose last read filled at least
//! [`SpliceRule::bulk_read`] (a bulk transfer) moves its bytes socket to
//! pipe to socket ([`Io::SpliceIn`], [`Io::SpliceOut`]) instead of copying
//! them, the tokio relay's rule. The pipe is the driver's (a pooled one,
//! [`crate::data::splice::Pipe`]); the relay keeps the count of the bytes
//! in it and says when the driver may give it back
//! ([`PairRelay::holds_pipe`]): once drained and the reader would block,
//! or at its end-of-file. A stretch that ends with a small read goes back
//! to copying; with no pipe to be had ([`PairRelay::handle_no_pipe`]) the
//! direction copies until its reader is drained. A splice that comes back
//! short does not mean the socket is drained (a pipe holds 16 socket
//! buffers, full or not), so a splicing reader is read until it would
//! block.

use std::io;
use std::time::{Duration, Instant};

/// One end of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The client's socket (accepted).
    Client = 0,
    /// The backend's socket (dialed).
    Backend = 1,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Backend,
            Side::Backend => Side::Client,
        }
    }

    /// Index into per-side arrays.
    fn i(self) -> usize {
        self as usize
    }
}

/// When a direction switches from copying to splice(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpliceRule {
    /// Bytes a direction has moved before it may splice.
    pub after: u64,
    /// A read at least this big is a bulk read: a direction splices only
    /// after one, and goes back to copying after a stretch that ended
    /// with a smaller one.
    pub bulk_read: usize,
}

/// What the driver is to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// Read from this side's socket into [`PairRelay::read_buf`], then
    /// [`PairRelay::handle_read`].
    Read(Side),
    /// Write [`PairRelay::write_buf`] to this side's socket, then
    /// [`PairRelay::handle_write`].
    Write(Side),
    /// Splice from this side's socket into the pipe of the bytes read
    /// from it (taking one from the pool when it holds none), then
    /// [`PairRelay::handle_splice_in`]; with no pipe to be had,
    /// [`PairRelay::handle_no_pipe`] instead.
    SpliceIn(Side),
    /// Splice the pipe of the bytes read from the other side into this
    /// side's socket, then [`PairRelay::handle_splice_out`].
    SpliceOut(Side),
    /// Shut down this side's writing half (the other side's end-of-file,
    /// passed on), then [`PairRelay::handle_shutdown`].
    Shutdown(Side),
    /// Close both sockets, with a reset (`SO_LINGER 0`) when `reset`. The
    /// pair is over: [`PairRelay::poll_io`] returns `None` from now on.
    Close {
        /// Why the pair ends.
        end: End,
    },
}

/// How a pair ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions reached end-of-file (or the backend's did, without
    /// half-close): a FIN to each peer.
    Closed,
    /// Nothing moved for the idle timeout: a FIN to each peer.
    Idle,
    /// A socket failed: a reset to each peer.
    Error,
}

impl End {
    /// Whether the sockets close with a reset.
    pub fn reset(self) -> bool {
        self == End::Error
    }
}

/// The readiness an event reported for one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Bytes (or an end-of-file) to read.
    pub readable: bool,
    /// Room to write.
    pub writable: bool,
    /// The peer ended its side (`EPOLLRDHUP`/`EPOLLHUP`).
    pub read_closed: bool,
    /// The socket failed (`EPOLLERR`).
    pub error: bool,
}

/// Relay buffers of one worker, reused across pairs.
#[derive(Debug)]
pub struct BufPool {
    /// Spare buffers, each [`BufPool::size`] bytes.
    free: Vec<Box<[u8]>>,
    /// Each buffer's size.
    size: usize,
    /// Spare buffers kept at most; more are freed when given back.
    cap: usize,
}

impl BufPool {
    /// A pool of `size`-byte buffers keeping at most `cap` spares.
    pub fn new(size: usize, cap: usize) -> Self {
        BufPool {
            free: Vec::new(),
            size: size.max(1),
            cap,
        }
    }

    /// A buffer, reused or new.
    fn take(&mut self) -> Box<[u8]> {
        self.free
            .pop()
            .unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    /// Gives a buffer back (one of another size, bytes owed at the start,
    /// is freed).
    fn give(&mut self, buf: Box<[u8]>) {
        if buf.len() == self.size && self.free.len() < self.cap {
            self.free.push(buf);
        }
    }

    /// Spare buffers held.
    pub fn spare(&self) -> usize {
        self.free.len()
    }
}

/// One direction: bytes read from one side, to be written to the other.
#[derive(Debug, Default)]
struct Dir {
    /// The bytes waiting (a pooled buffer, or the bytes owed at the start).
    buf: Option<Box<[u8]>>,
    /// Where the waiting bytes start in `buf`.
    off: usize,
    /// How many bytes wait.
    len: usize,
    /// The reader saw end-of-file.
    eof: bool,
    /// The end-of-file is passed on (or needs no passing).
    done: bool,
    /// Bytes written to the other side (the uncounted ones excluded).
    moved: u64,
    /// The size of the last read (or splice into the pipe).
    last_read: usize,
    /// Moves bytes by splice ([`SpliceRule`]).
    splicing: bool,
    /// No pipe was to be had: copy until the reader is drained.
    no_pipe: bool,
    /// Bytes in the driver's pipe for this direction.
    piped: usize,
}

/// The relay state of one pair (see the module documentation).
#[derive(Debug)]
pub struct PairRelay {
    /// `dirs[s]` carries the bytes read from side `s`.
    dirs: [Dir; 2],
    /// Per side: the last edge said readable, and no read has drained it.
    readable: [bool; 2],
    /// Per side: the last edge said writable, and no write came back short.
    writable: [bool; 2],
    /// Per side: the peer ended its side.
    read_closed: [bool; 2],
    /// The backend's socket is connected: nothing moves before.
    connected: bool,
    /// The backend's end-of-file half-closes the client (true) or closes
    /// the pair (false).
    half_close: bool,
    /// When bulk directions splice; `None`: they copy.
    splice: Option<SpliceRule>,
    /// Bytes at the front of the client's direction that are not counted
    /// (a PROXY header for the backend).
    uncounted: usize,
    /// Nothing moved for this long: the pair closes.
    idle: Duration,
    /// Bytes moved since the last [`PairRelay::handle_timeout`].
    active: bool,
    /// Since when nothing has moved, as far as the timeouts saw.
    quiet: Instant,
    /// How the pair ended, once it has.
    ended: Option<End>,
    /// [`Io::Close`] was returned.
    closed: bool,
    /// The side whose end-of-file was passed on first, once one was.
    first_done: Option<Side>,
}

impl PairRelay {
    /// A pair whose backend is being connected at `now`. `first` is written
    /// to the backend before anything read from the client; its first
    /// `uncounted` bytes are not counted as moved. Bulk directions splice
    /// by `splice`, or copy without one.
    pub fn new(
        first: Vec<u8>,
        uncounted: usize,
        half_close: bool,
        splice: Option<SpliceRule>,
        idle: Duration,
        now: Instant,
    ) -> Self {
        let mut dirs: [Dir; 2] = Default::default();
        if !first.is_empty() {
            dirs[0].len = first.len();
            dirs[0].buf = Some(first.into_boxed_slice());
        }
        PairRelay {
            dirs,
            readable: [false; 2],
            // A socket just accepted has room; the backend's is writable
            // once connected.
            writable: [true, false],
            read_closed: [false; 2],
            connected: false,
            half_close,
            splice,
            uncounted,
            idle,
            active: false,
            quiet: now,
            ended: None,
            closed: false,
            first_done: None,
        }
    }

    /// Records one socket's readiness (an edge). An error ends the pair.
    pub fn handle_readiness(&mut self, side: Side, r: Readiness) {
        let i = side.i();
        self.readable[i] |= r.readable || r.read_closed;
        self.writable[i] |= r.writable;
        self.read_closed[i] |= r.read_closed;
        if r.error {
            self.end(End::Error);
        }
    }

    /// The backend's connect completed at `now`: bytes may move. (The idle
    /// timeout counts from here.)
    pub fn handle_connected(&mut self, now: Instant) {
        self.connected = true;
        self.writable[Side::Backend.i()] = true;
        self.quiet = now;
    }

    /// The backend's socket was replaced by a new one (a failover, before
    /// any connect completed): its readiness is forgotten.
    pub fn handle_new_backend(&mut self) {
        let b = Side::Backend.i();
        self.readable[b] = false;
        self.writable[b] = false;
        self.read_closed[b] = false;
        self.connected = false;
    }

    /// Whether the backend's connect has completed.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether the pair has ended (its sockets are to be closed, or are).
    pub fn is_over(&self) -> bool {
        self.ended.is_some()
    }

    /// The side that ended its half first (its end-of-file passed on
    /// whole), once one has: who closed the connection, for its
    /// access-log line.
    pub fn first_done(&self) -> Option<Side> {
        self.first_done
    }

    /// Bytes written to the backend and to the client so far (the
    /// uncounted ones excluded).
    pub fn moved(&self) -> (u64, u64) {
        (self.dirs[0].moved, self.dirs[1].moved)
    }

    /// The next IO to do, or `None` until the next readiness (or timeout).
    pub fn poll_io(&mut self, pool: &mut BufPool) -> Option<Io> {
        if let Some(end) = self.ended {
            if self.closed {
                return None;
            }
            self.closed = true;
            self.release(pool);
            return Some(Io::Close { end });
        }
        if !self.connected {
            return None;
        }
        for src in [Side::Client, Side::Backend] {
            let dst = src.other();
            let d = &mut self.dirs[src.i()];
            if d.piped > 0 {
                if self.writable[dst.i()] {
                    return Some(Io::SpliceOut(dst));
                }
                continue;
            }
            if d.len > 0 {
                if self.writable[dst.i()] {
                    return Some(Io::Write(dst));
                }
                continue;
            }
            if let Some(rule) = self.splice {
                if !d.splicing
                    && !d.no_pipe
                    && !d.eof
                    && d.moved >= rule.after
                    && d.last_read >= rule.bulk_read
                {
                    d.splicing = true;
                }
            }
            if d.eof {
                if d.done {
                    continue;
                }
                d.done = true;
                self.first_done.get_or_insert(src);
                let both = self.dirs[dst.i()].done;
                if both || (src == Side::Backend && !self.half_close) {
                    self.end(End::Closed);
                    return self.poll_io(pool);
                }
                return Some(Io::Shutdown(dst));
            }
            if self.readable[src.i()] {
                return Some(if d.splicing {
                    Io::SpliceIn(src)
                } else {
                    Io::Read(src)
                });
            }
        }
        None
    }

    /// Where [`Io::Read`] of `side` reads into (a buffer from `pool`).
    pub fn read_buf(&mut self, side: Side, pool: &mut BufPool) -> &mut [u8] {
        let d = &mut self.dirs[side.i()];
        d.off = 0;
        d.buf.get_or_insert_with(|| pool.take())
    }

    /// What [`Io::Read`] of `side` did.
    pub fn handle_read(&mut self, side: Side, result: io::Result<usize>, pool: &mut BufPool) {
        let i = side.i();
        let d = &mut self.dirs[i];
        match result {
            Ok(0) => {
                d.eof = true;
                self.readable[i] = false;
                if let Some(buf) = d.buf.take() {
                    pool.give(buf);
                }
            }
            Ok(n) => {
                let size = d.buf.as_ref().map_or(0, |b| b.len());
                d.off = 0;
                d.len = n.min(size);
                d.last_read = d.len;
                self.active = true;
                if n < size && !self.read_closed[i] {
                    // Drained: the next stretch may find a pipe.
                    self.readable[i] = false;
                    d.no_pipe = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable[i] = false;
                // Drained: the next stretch may find a pipe.
                d.no_pipe = false;
                if let Some(buf) = d.buf.take() {
                    pool.give(buf);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.end(End::Error),
        }
    }

    /// The bytes [`Io::Write`] to `side` writes.
    pub fn write_buf(&self, side: Side) -> &[u8] {
        let d = &self.dirs[side.other().i()];
        d.buf
            .as_deref()
            .and_then(|b| b.get(d.off..d.off + d.len))
            .unwrap_or_default()
    }

    /// What [`Io::Write`] to `side` did; returns the bytes to count as
    /// moved (the uncounted ones excluded).
    pub fn handle_write(
        &mut self,
        side: Side,
        result: io::Result<usize>,
        pool: &mut BufPool,
    ) -> u64 {
        let src = side.other();
        let Some(w) = self.written(side, result, self.dirs[src.i()].len) else {
            return 0;
        };
        let d = &mut self.dirs[src.i()];
        d.off += w;
        d.len -= w;
        let counted = count(src, w, &mut self.uncounted);
        d.moved += counted;
        if d.len > 0 {
            self.writable[side.i()] = false;
        } else if let Some(buf) = d.buf.take() {
            pool.give(buf);
        }
        counted
    }

    /// What a write (or splice) of `pending` bytes to `side` moved, or
    /// `None` when it moved none: it would block (the side waits for its
    /// next edge), was interrupted, or failed (the pair ends; so does a
    /// write of zero bytes while some wait).
    fn written(&mut self, side: Side, result: io::Result<usize>, pending: usize) -> Option<usize> {
        match result {
            Ok(0) if pending > 0 => {
                self.end(End::Error);
                None
            }
            Ok(w) => {
                self.active = true;
                Some(w.min(pending))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.writable[side.i()] = false;
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(_) => {
                self.end(End::Error);
                None
            }
        }
    }

    /// What [`Io::SpliceIn`] of `side` did (bytes spliced into the pipe).
    pub fn handle_splice_in(&mut self, side: Side, result: io::Result<usize>) {
        let i = side.i();
        let bulk_read = self.splice.map_or(0, |r| r.bulk_read);
        let d = &mut self.dirs[i];
        match result {
            Ok(0) => {
                d.eof = true;
                self.readable[i] = false;
            }
            Ok(n) => {
                d.piped += n;
                d.last_read = n;
                self.active = true;
                // A short splice may have filled the pipe's slots, not
                // drained the socket: the reader stays readable until it
                // would block.
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable[i] = false;
                if d.last_read < bulk_read {
                    // The stretch ended with a small read: small messages
                    // again, which copying moves cheaper.
                    d.splicing = false;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => self.end(End::Error),
        }
    }

    /// [`Io::SpliceIn`] of `side` found no pipe to be had: the direction
    /// copies until its reader is drained.
    pub fn handle_no_pipe(&mut self, side: Side) {
        let d = &mut self.dirs[side.i()];
        d.splicing = false;
        d.no_pipe = true;
    }

    /// What [`Io::SpliceOut`] to `side` did; returns the bytes to count as
    /// moved (the uncounted ones excluded).
    pub fn handle_splice_out(&mut self, side: Side, result: io::Result<usize>) -> u64 {
        let src = side.other();
        let Some(w) = self.written(side, result, self.dirs[src.i()].piped) else {
            return 0;
        };
        let d = &mut self.dirs[src.i()];
        d.piped -= w;
        let counted = count(src, w, &mut self.uncounted);
        d.moved += counted;
        if d.piped > 0 {
            self.writable[side.i()] = false;
        }
        counted
    }

    /// Whether the pipe of the bytes read from `side` is still needed:
    /// bytes wait in it, or its reader is mid-stretch. Once not, the driver
    /// gives it back to the pool (empty) or closes it (the pair ended with
    /// bytes in it).
    pub fn holds_pipe(&self, side: Side) -> bool {
        let d = &self.dirs[side.i()];
        self.ended.is_none() && (d.piped > 0 || (d.splicing && !d.eof && self.readable[side.i()]))
    }

    /// Whether the bytes read from `side` move by splice now.
    #[cfg(test)]
    pub fn is_splicing(&self, side: Side) -> bool {
        self.dirs[side.i()].splicing
    }

    /// What [`Io::Shutdown`] of `side` did.
    pub fn handle_shutdown(&mut self, _side: Side, result: io::Result<()>) {
        if result.is_err() {
            self.end(End::Error);
        }
    }

    /// The time, at least every so often: a pair that moved nothing for
    /// its idle timeout ends. (A connect still under way is the driver's to
    /// time out.)
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.connected || self.ended.is_some() {
            return;
        }
        if std::mem::take(&mut self.active) {
            self.quiet = now;
        } else if now >= self.quiet + self.idle {
            self.end(End::Idle);
        }
    }

    /// When the pair ends unless bytes move before
    /// ([`PairRelay::handle_timeout`] must see it then, or later).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.connected && self.ended.is_none()).then(|| self.quiet + self.idle)
    }

    /// Ends the pair (the first reason stands).
    pub fn end(&mut self, end: End) {
        if self.ended.is_none() {
            self.ended = Some(end);
        }
    }

    /// Gives the buffers back.
    fn release(&mut self, pool: &mut BufPool) {
        for d in &mut self.dirs {
            d.len = 0;
            d.piped = 0;
            if let Some(buf) = d.buf.take() {
                pool.give(buf);
            }
        }
    }
}

/// Of `w` bytes written from `src`'s direction, those to count as moved:
/// the client's first `uncounted` bytes (a PROXY header) are not.
fn count(src: Side, w: usize, uncounted: &mut usize) -> u64 {
    let skip = if src == Side::Client {
        let skip = w.min(*uncounted);
        *uncounted -= skip;
        skip
    } else {
        0
    };
    (w - skip) as u64
}

#[cfg(test)]
mod tests;
