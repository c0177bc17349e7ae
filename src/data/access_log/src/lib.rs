//! geoedge's access log: one line per proxied TCP connection, written when
//! the connection ends (what HAProxy's `option tcplog`, nginx's stream
//! `log_format` and Envoy's access logs do). A worker hands a [`Record`] to
//! [`AccessLog::log`], which never blocks: the record goes into a bounded
//! queue and a writer thread of its own formats and writes it.
//!
//! # Formats
//!
//! **Text** ([`Format::Text`], [`format_text`]): one line of space-separated
//! fields, in HAProxy tcplog order:
//!
//! ```text
//! CLIENT [START] LISTENER APP/BACKEND CONNECT_MS/DURATION_MS BYTES_UP BYTES_DOWN END COUNTRY REGION REASON/TIER SNI attempts=N
//! 203.0.113.7:51234 [2026-12-06T22:31:07.123Z] 0.0.0.0:443 web/fra-2 3/5031 1532 88211 client_closed DE eu-central sticky/country shop.example.com attempts=1
//! [2001:db8::7]:40022 [2026-12-06T22:31:08.000Z] - web/- -/0 0 0 no_backend - - -/- - attempts=0
//! ```
//!
//! - `CLIENT` and `LISTENER` are `ip:port`, an IPv6 address in brackets;
//!   `START` is when the connection was accepted, RFC 3339 in UTC with
//!   milliseconds; `CONNECT_MS` (how long the connect to the backend took,
//!   all attempts included) and `DURATION_MS` (accept to close) are whole
//!   milliseconds; `BYTES_UP` went client to backend, `BYTES_DOWN` backend
//!   to client; `END` is one of [`End::as_str`]; `COUNTRY` is the ISO code;
//!   `REASON` is the routing decision's kind and `TIER` its tier.
//! - `-` is an unknown field. Free text (`APP`, `BACKEND`, `REGION`,
//!   `REASON`, `TIER`, `SNI`) keeps ASCII letters, digits and
//!   `. - _ * : @ + [ ]`; every other byte is written `\xHH` (a space is
//!   `\x20`, `/` is `\x2F`, a backslash `\x5C`, each byte of a non-ASCII
//!   character on its own), an empty value is `-` and a value that is
//!   exactly `-` is `\x2D`. So a line always has exactly 13 fields, the
//!   `/` pairs split on their one `/`, and nothing from the network (the
//!   SNI) can add a field or a line.
//!
//! **JSON** ([`Format::Json`], [`format_json`]): one object per line, every
//! key always present in this order, `null` when unknown; strings escaped
//! by serde_json, times and durations as in the text format:
//!
//! ```text
//! {"start":"2026-12-06T22:31:07.123Z","duration_ms":5031,"client":"203.0.113.7:51234","country":"DE","region":"eu-central","app":"web","sni":"shop.example.com","listener":"0.0.0.0:443","backend":"fra-2","reason":"sticky","tier":"country","attempts":1,"connect_ms":3,"bytes_up":1532,"bytes_down":88211,"end":"client_closed"}
//! ```
//!
//! # Sinks
//!
//! - **`stdout`** ([`Sink::Stdout`]): lines with a newline, written in
//!   batches (up to 64 KiB, and whatever is queued when the queue empties).
//! - **a file** ([`Sink::File`]): opened `O_APPEND|O_CREAT`, mode 0640 when
//!   created (less the umask); lines written in batches as for stdout. A
//!   path that cannot be opened is an error at [`AccessLog::start`].
//!   **Reopen rule** (logrotate's move-then-signal): [`AccessLog::reopen`]
//!   makes the writer close the file and open the same path again after
//!   the lines queued before the call and before any queued after it; if
//!   the queue is full at that moment, at the start of its next batch. A
//!   failed reopen keeps writing to the old file and tries again at every
//!   batch. Stdout and journald ignore it.
//! - **`journald`** ([`Sink::Journald`]): journald's native protocol, one
//!   datagram per line to `/run/systemd/journal/socket`, with fields
//!   `MESSAGE` (the line in the chosen format), `SYSLOG_IDENTIFIER=geoedge`,
//!   `PRIORITY=6` (info), `GEOEDGE_END`, `GEOEDGE_CLIENT`, `GEOEDGE_APP`,
//!   `GEOEDGE_DURATION_MS`, `GEOEDGE_BYTES_UP`, `GEOEDGE_BYTES_DOWN` and,
//!   when known, `GEOEDGE_BACKEND`, `GEOEDGE_COUNTRY`, `GEOEDGE_REGION`,
//!   `GEOEDGE_SNI`, `GEOEDGE_LISTENER` (free text escaped as in the text
//!   format). No value ever holds a newline, so every field is the simple
//!   `KEY=value` form. A missing socket is an error at start
//!   (`journald socket /run/systemd/journal/socket: No such file or
//!   directory`). Query with e.g. `journalctl -t geoedge GEOEDGE_END=connect_failed`.
//!
//! # Drop rule
//!
//! The queue holds `queue` records ([`AccessLog::start`]). [`AccessLog::log`]
//! only tries to queue: when the queue is full (the sink is slower than the
//! traffic, or stuck) or the log is closed, the record is dropped and
//! counted in [`AccessLog::dropped`]; a worker never waits. A line the sink
//! refused (disk full, broken pipe, journald gone) is counted in
//! [`AccessLog::errors`] and the writer goes on with the next ones. Every
//! logged record ends up in exactly one of [`AccessLog::written`],
//! [`AccessLog::errors`], [`AccessLog::dropped`], or is still
//! [`AccessLog::queued`]. Write failures and drops are each reported with
//! `tracing::warn!` at most once every 10 s, with the count since the last
//! report.

#![forbid(unsafe_code)]

mod format;
mod writer;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

pub use format::{format_json, format_text, push_escaped, Rfc3339Millis};

use writer::{Msg, Out, Writer};

/// Where journald listens for native-protocol entries.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// The client closed (or reset) its side first.
    ClientClosed,
    /// The backend closed (or reset) its side first.
    BackendClosed,
    /// Neither side sent anything for the idle timeout.
    IdleTimeout,
    /// Refused: the client's concurrent-connection limit.
    ClientLimit,
    /// Refused: the client's connection-rate limit.
    ClientRate,
    /// No backend could take the client.
    NoBackend,
    /// Every connect attempt to the backend failed.
    ConnectFailed,
    /// The PROXY protocol header was missing or bad.
    BadHeader,
    /// A TLS-only listener got something else.
    NotTls,
    /// Closed because the proxy was draining (shutdown).
    Draining,
    /// Any other error.
    Error,
}

impl End {
    /// Every reason, in declaration order.
    pub const ALL: [End; 11] = [
        End::ClientClosed,
        End::BackendClosed,
        End::IdleTimeout,
        End::ClientLimit,
        End::ClientRate,
        End::NoBackend,
        End::ConnectFailed,
        End::BadHeader,
        End::NotTls,
        End::Draining,
        End::Error,
    ];

    /// The lower-case label the lines use.
    pub fn as_str(&self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::BackendClosed => "backend_closed",
            End::IdleTimeout => "idle_timeout",
            End::ClientLimit => "client_limit",
            End::ClientRate => "client_rate",
            End::NoBackend => "no_backend",
            End::ConnectFailed => "connect_failed",
            End::BadHeader => "bad_header",
            End::NotTls => "not_tls",
            End::Draining => "draining",
            End::Error => "error",
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished connection.
#[derive(Debug, Clone)]
pub struct Record {
    /// When the connection was accepted.
    pub start: SystemTime,
    /// From accept to close.
    pub duration: Duration,
    /// The client's address (after the PROXY protocol, when used).
    pub client: SocketAddr,
    /// The client's ISO country code, upper-case ASCII.
    pub country: Option<[u8; 2]>,
    /// The region the client's country maps to.
    pub region: Option<Arc<str>>,
    /// The app (listener group) the connection belongs to.
    pub app: Arc<str>,
    /// The TLS server name the client sent.
    pub sni: Option<Box<str>>,
    /// The local address the connection was accepted on.
    pub listener: Option<SocketAddr>,
    /// The backend the connection went to.
    pub backend: Option<Arc<str>>,
    /// The routing decision's kind, e.g. "sticky", "country", "region".
    pub reason: Option<&'static str>,
    /// The routing decision's tier.
    pub tier: Option<&'static str>,
    /// Connect attempts made.
    pub attempts: u32,
    /// How long connecting to the backend took, all attempts included.
    pub connect_time: Option<Duration>,
    /// Bytes from the client to the backend.
    pub bytes_up: u64,
    /// Bytes from the backend to the client.
    pub bytes_down: u64,
    /// Why it ended.
    pub end: End,
}

/// A line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`format_text`].
    Text,
    /// [`format_json`].
    Json,
}

impl FromStr for Format {
    type Err = AccessLogError;

    /// `text` or `json`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(AccessLogError::BadFormat(s.to_owned())),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Text => "text",
            Format::Json => "json",
        })
    }
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// journald's native protocol at [`JOURNALD_SOCKET`].
    Journald,
    /// A file, appended to.
    File(PathBuf),
}

impl FromStr for Sink {
    type Err = AccessLogError;

    /// `stdout`, `journald`, or any other text as a file path (absolute, or
    /// relative to the working directory). Empty text and a path ending in
    /// `/` are refused. (`off` is the caller's business.)
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Sink::Stdout),
            "journald" => Ok(Sink::Journald),
            "" => Err(AccessLogError::BadSink(
                "empty (expected stdout, journald or a file path)".into(),
            )),
            p if p.ends_with('/') => Err(AccessLogError::BadSink(format!(
                "{p}: a directory, not a file path"
            ))),
            p => Ok(Sink::File(PathBuf::from(p))),
        }
    }
}

impl fmt::Display for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sink::Stdout => f.write_str("stdout"),
            Sink::Journald => f.write_str("journald"),
            Sink::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// What can go wrong setting the access log up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessLogError {
    /// `--access-log-format` (or the like) is neither `text` nor `json`.
    #[error("access log format {0:?}: expected text or json")]
    BadFormat(String),
    /// The sink text is not usable.
    #[error("access log sink {0}")]
    BadSink(String),
    /// The file cannot be opened for appending.
    #[error("access log {}: {reason}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// The journald socket is missing or unusable.
    #[error("journald socket {}: {reason}", path.display())]
    Journald {
        /// The socket.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// A queue of 0 records.
    #[error("access log queue must hold at least one record")]
    ZeroQueue,
    /// The writer thread could not start.
    #[error("access log writer thread: {0}")]
    Thread(String),
}

/// The counters the workers and the writer share.
#[derive(Default)]
pub(crate) struct Shared {
    /// Records put in the queue.
    accepted: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    /// A reopen that could not be queued.
    reopen: AtomicBool,
    /// `close` was called.
    closing: AtomicBool,
}

struct Inner {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    /// Disconnected when the writer has finished.
    done: Mutex<Option<mpsc::Receiver<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    capacity: usize,
    sink: Sink,
}

/// The access log: a bounded queue and the writer thread behind it. Cheap
/// to clone (every clone is the same log); `Send + Sync`.
#[derive(Clone)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessLog")
            .field("sink", &self.inner.sink)
            .field("capacity", &self.inner.capacity)
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .field("errors", &self.errors())
            .finish()
    }
}

impl AccessLog {
    /// Opens the sink (a file is created or appended to, mode 0640; a path
    /// that cannot be opened, or a missing journald socket, is an error
    /// naming it) and starts the writer thread with a queue of `queue`
    /// records (at least 1; each takes about 240 bytes, allocated up front).
    pub fn start(sink: Sink, format: Format, queue: usize) -> Result<AccessLog, AccessLogError> {
        let out = match &sink {
            Sink::Stdout => Out::Stdout(std::io::stdout()),
            Sink::Journald => Out::journald(PathBuf::from(JOURNALD_SOCKET))?,
            Sink::File(p) => Out::file(p.clone())?,
        };
        Self::start_out(sink, out, format, queue)
    }

    /// [`AccessLog::start`] with journald at `socket` instead of
    /// [`JOURNALD_SOCKET`] (for tests).
    #[doc(hidden)]
    pub fn start_journald_at(
        socket: &Path,
        format: Format,
        queue: usize,
    ) -> Result<AccessLog, AccessLogError> {
        let out = Out::journald(socket.to_path_buf())?;
        Self::start_out(Sink::Journald, out, format, queue)
    }

    fn start_out(
        sink: Sink,
        out: Out,
        format: Format,
        queue: usize,
    ) -> Result<AccessLog, AccessLogError> {
        if queue == 0 {
            return Err(AccessLogError::ZeroQueue);
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::sync_channel(queue);
        let (done_tx, done_rx) = mpsc::sync_channel(0);
        let writer = Writer::new(out, format, shared.clone());
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx, done_tx))
            .map_err(|e| AccessLogError::Thread(e.to_string()))?;
        Ok(AccessLog {
            inner: Arc::new(Inner {
                tx,
                shared,
                done: Mutex::new(Some(done_rx)),
                thread: Mutex::new(Some(thread)),
                capacity: queue,
                sink,
            }),
        })
    }

    /// Queues `record` for the writer. Never blocks: when the queue is full
    /// or the log is closed the record is dropped and counted.
    pub fn log(&self, record: Record) {
        let shared = &self.inner.shared;
        if shared.closing.load(Relaxed) {
            shared.dropped.fetch_add(1, Relaxed);
            return;
        }
        // Counted before it is sent, so `queued` never sees the writer
        // count a line it has not seen accepted.
        shared.accepted.fetch_add(1, Relaxed);
        if self.inner.tx.try_send(Msg::Record(record)).is_err() {
            shared.accepted.fetch_sub(1, Relaxed);
            shared.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Asks the writer to close and reopen a file sink at the same path
    /// (after logrotate moved it); see the crate documentation for when.
    /// A no-op for stdout and journald. Never blocks.
    pub fn reopen(&self) {
        if !matches!(self.inner.sink, Sink::File(_)) {
            return;
        }
        if let Err(TrySendError::Full(_)) = self.inner.tx.try_send(Msg::Reopen) {
            self.inner.shared.reopen.store(true, Relaxed);
        }
    }

    /// Lines the sink took.
    pub fn written(&self) -> u64 {
        self.inner.shared.written.load(Relaxed)
    }

    /// Records dropped because the queue was full or the log closed.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Relaxed)
    }

    /// Lines that failed to write.
    pub fn errors(&self) -> u64 {
        self.inner.shared.errors.load(Relaxed)
    }

    /// Records queued and not yet written or failed (the batch being
    /// written included). Read while records move, the four counters may
    /// be a few records apart.
    pub fn queued(&self) -> u64 {
        let s = &self.inner.shared;
        let accepted = s.accepted.load(Relaxed);
        let done = s.written.load(Relaxed) + s.errors.load(Relaxed);
        accepted.saturating_sub(done)
    }

    /// The queue's size, in records.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Writes what is queued and stops the writer, waiting at most
    /// `timeout` (a sink that is stuck leaves the writer behind, and what
    /// it had not written uncounted). Records logged afterwards are
    /// dropped. Calling it again returns at once.
    pub fn close(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let inner = &self.inner;
        if inner.shared.closing.swap(true, Relaxed) {
            return;
        }
        // The Close goes behind what is queued; a full queue means waiting
        // for room (this is shutdown, not a worker).
        loop {
            match inner.tx.try_send(Msg::Close) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                Err(TrySendError::Full(_)) => {
                    if Instant::now() >= deadline {
                        tracing::warn!(
                            queued = self.queued(),
                            "access log: not flushed within {timeout:?} (sink stuck?)"
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let done = inner.done.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(done) = done else { return };
        let left = deadline.saturating_duration_since(Instant::now());
        match done.recv_timeout(left) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::warn!(
                    queued = self.queued(),
                    "access log: not flushed within {timeout:?} (sink stuck?)"
                );
            }
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let thread = inner
                    .thread
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(t) = thread {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
