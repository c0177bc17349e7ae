//! The writer thread: takes records off the queue, formats them, writes
//! them to the sink in batches, reopens a file on request, counts what was
//! written and what failed, and warns about failures and drops at most once
//! per [`WARN_EVERY`].

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::format::push_escaped;
use crate::{AccessLogError, Format, Record, Shared};

/// The most a batch for stdout or a file holds before it is written, even
/// if more records are waiting.
const BATCH_BYTES: usize = 64 * 1024;

/// The least time between two warnings of one kind.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// What the queue carries. Nearly every message is a record, so the
/// record is not boxed: that would be an allocation on the worker per line.
#[allow(
    clippy::large_enum_variant,
    reason = "records are almost all the traffic; boxing costs a worker an allocation"
)]
pub(crate) enum Msg {
    Record(Record),
    /// Reopen the file before the next record (queued by `reopen`).
    Reopen,
    /// Write what is queued and stop.
    Close,
}

/// An open sink.
pub(crate) enum Out {
    Stdout(io::Stdout),
    File { path: PathBuf, file: File },
    Journald { path: PathBuf, socket: UnixDatagram },
}

/// `e` without the " (os error N)" std appends, for messages that name
/// the path themselves.
pub(crate) fn reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.rsplit_once(" (os error ") {
        Some((head, _)) => head.to_owned(),
        None => s,
    }
}

/// Opens (creates) `path` for appending, mode 0640 when created.
fn open_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

impl Out {
    pub(crate) fn file(path: PathBuf) -> Result<Out, AccessLogError> {
        match open_file(&path) {
            Ok(file) => Ok(Out::File { path, file }),
            Err(e) => Err(AccessLogError::Open {
                reason: reason(&e),
                path,
            }),
        }
    }

    pub(crate) fn journald(path: PathBuf) -> Result<Out, AccessLogError> {
        let err = |reason: String, path: PathBuf| AccessLogError::Journald { path, reason };
        match std::fs::metadata(&path) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => return Err(err("not a socket".into(), path)),
            Err(e) => return Err(err(reason(&e), path)),
        }
        match UnixDatagram::unbound() {
            Ok(socket) => Ok(Out::Journald { path, socket }),
            Err(e) => Err(err(reason(&e), path)),
        }
    }

    /// What the warnings call it.
    fn describe(&self) -> String {
        match self {
            Out::Stdout(_) => "stdout".into(),
            Out::File { path, .. } => path.display().to_string(),
            Out::Journald { path, .. } => format!("journald ({})", path.display()),
        }
    }
}

/// A warning given at most once per [`WARN_EVERY`], with what happened
/// since the last one.
struct Warn {
    last: Option<Instant>,
}

impl Warn {
    fn due(&mut self) -> bool {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < WARN_EVERY => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

/// The writer's state.
pub(crate) struct Writer {
    out: Out,
    format: Format,
    shared: Arc<Shared>,
    /// The line being formatted.
    line: String,
    /// Lines formatted for stdout or a file, not yet written.
    batch: Vec<u8>,
    batch_lines: u64,
    /// A journald entry.
    entry: String,
    write_warn: Warn,
    /// Lines failed since the last write warning.
    failed_since: u64,
    reopen_warn: Warn,
    drop_warn: Warn,
    /// `dropped` at the last drop warning.
    dropped_seen: u64,
}

impl Writer {
    pub(crate) fn new(out: Out, format: Format, shared: Arc<Shared>) -> Writer {
        Writer {
            out,
            format,
            shared,
            line: String::with_capacity(512),
            batch: Vec::with_capacity(BATCH_BYTES + 1024),
            batch_lines: 0,
            entry: String::with_capacity(1024),
            write_warn: Warn { last: None },
            failed_since: 0,
            reopen_warn: Warn { last: None },
            drop_warn: Warn { last: None },
            dropped_seen: 0,
        }
    }

    /// The thread's body: runs until `Close` or until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Msg>, _done: SyncSender<()>) {
        // `_done` is dropped when this returns, which is what `close`
        // waits for.
        while let Ok(first) = rx.recv() {
            // A reopen that found the queue full waits here, at the start
            // of the next batch.
            if self.shared.reopen.swap(false, Relaxed) {
                self.reopen();
            }
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Record(r) => self.record(&r),
                    Msg::Reopen => {
                        self.flush();
                        self.reopen();
                    }
                    Msg::Close => {
                        // What raced with `close` into the queue goes too.
                        while let Ok(msg) = rx.try_recv() {
                            if let Msg::Record(r) = msg {
                                self.record(&r);
                            }
                        }
                        self.flush();
                        return;
                    }
                }
                next = rx.try_recv().ok();
            }
            self.flush();
            self.warn_drops();
        }
        self.flush();
    }

    /// Formats `r` and writes it (journald) or adds it to the batch.
    fn record(&mut self, r: &Record) {
        self.line.clear();
        match self.format {
            Format::Text => crate::format_text(r, &mut self.line),
            Format::Json => crate::format_json(r, &mut self.line),
        }
        if let Out::Journald { path, socket } = &self.out {
            build_entry(&mut self.entry, &self.line, r);
            match socket.send_to(self.entry.as_bytes(), path) {
                Ok(_) => {
                    self.shared.written.fetch_add(1, Relaxed);
                }
                Err(e) => self.failed(1, &e),
            }
            return;
        }
        self.batch.extend_from_slice(self.line.as_bytes());
        self.batch.push(b'\n');
        self.batch_lines += 1;
        if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Writes the batch. Lines written whole count as written, the rest of
    /// the batch (a line cut short included) as failed.
    fn flush(&mut self) {
        if self.batch_lines == 0 {
            return;
        }
        let res = match &mut self.out {
            Out::Stdout(s) => write_counted(&mut s.lock(), &self.batch),
            Out::File { file, .. } => write_counted(file, &self.batch),
            // Journald entries are sent one by one, never batched.
            Out::Journald { .. } => return,
        };
        let lines = self.batch_lines;
        self.batch.clear();
        self.batch_lines = 0;
        match res {
            Ok(()) => {
                self.shared.written.fetch_add(lines, Relaxed);
            }
            Err((done_lines, e)) => {
                self.shared.written.fetch_add(done_lines, Relaxed);
                self.failed(lines - done_lines, &e);
            }
        }
    }

    /// Counts `lines` failed and warns when due.
    fn failed(&mut self, lines: u64, e: &io::Error) {
        self.shared.errors.fetch_add(lines, Relaxed);
        self.failed_since += lines;
        if self.write_warn.due() {
            tracing::warn!(
                sink = %self.out.describe(),
                error = %e,
                failed_lines = self.failed_since,
                "access log: writing failed (warned at most every {}s)",
                WARN_EVERY.as_secs()
            );
            self.failed_since = 0;
        }
    }

    /// Closes and reopens a file sink at its path; keeps the old file and
    /// tries again at the next batch if that fails.
    fn reopen(&mut self) {
        let Out::File { path, file } = &mut self.out else {
            return;
        };
        match open_file(path) {
            Ok(new) => *file = new,
            Err(e) => {
                self.shared.reopen.store(true, Relaxed);
                if self.reopen_warn.due() {
                    tracing::warn!(
                        path = %path.display(),
                        error = %e,
                        "access log: reopening failed; writing to the old file and retrying"
                    );
                }
            }
        }
    }

    /// Warns when lines were dropped since the last warning.
    fn warn_drops(&mut self) {
        let dropped = self.shared.dropped.load(Relaxed);
        if dropped != self.dropped_seen && self.drop_warn.due() {
            tracing::warn!(
                dropped = dropped - self.dropped_seen,
                total = dropped,
                "access log: queue full, lines dropped (warned at most every {}s)",
                WARN_EVERY.as_secs()
            );
            self.dropped_seen = dropped;
        }
    }
}

/// `write_all` that says how many whole lines reached the sink when it
/// fails.
fn write_counted(sink: &mut dyn io::Write, buf: &[u8]) -> Result<(), (u64, io::Error)> {
    let mut off = 0;
    let mut err = None;
    while off < buf.len() {
        match sink.write(&buf[off..]) {
            Ok(0) => {
                err = Some(io::Error::from(io::ErrorKind::WriteZero));
                break;
            }
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    if err.is_none() {
        if let Err(e) = sink.flush() {
            err = Some(e);
        }
    }
    match err {
        None => Ok(()),
        Some(e) => {
            let whole = buf[..off].iter().filter(|&&b| b == b'\n').count() as u64;
            Err((whole, e))
        }
    }
}

/// Builds a journald native-protocol entry: `KEY=value` lines, every value
/// free of newlines (the MESSAGE is a formatted line, which never holds
/// one; the other values are escaped as in the text format), so the
/// length-prefixed binary form is never needed.
pub(crate) fn build_entry(s: &mut String, message: &str, r: &Record) {
    use std::fmt::Write as _;
    s.clear();
    s.push_str("MESSAGE=");
    s.push_str(message);
    s.push_str("\nSYSLOG_IDENTIFIER=geoedge\nPRIORITY=6\nGEOEDGE_END=");
    s.push_str(r.end.as_str());
    let _ = write!(s, "\nGEOEDGE_CLIENT={}\nGEOEDGE_APP=", r.client);
    push_escaped(s, &r.app);
    if let Some(b) = &r.backend {
        s.push_str("\nGEOEDGE_BACKEND=");
        push_escaped(s, b);
    }
    if let Some(c) = r
        .country
        .as_ref()
        .filter(|c| c.iter().all(u8::is_ascii_alphanumeric))
    {
        s.push_str("\nGEOEDGE_COUNTRY=");
        s.push(char::from(c[0]));
        s.push(char::from(c[1]));
    }
    if let Some(region) = &r.region {
        s.push_str("\nGEOEDGE_REGION=");
        push_escaped(s, region);
    }
    if let Some(sni) = &r.sni {
        s.push_str("\nGEOEDGE_SNI=");
        push_escaped(s, sni);
    }
    if let Some(l) = r.listener {
        let _ = write!(s, "\nGEOEDGE_LISTENER={l}");
    }
    let _ = write!(
        s,
        "\nGEOEDGE_DURATION_MS={}\nGEOEDGE_BYTES_UP={}\nGEOEDGE_BYTES_DOWN={}\n",
        u64::try_from(r.duration.as_millis()).unwrap_or(u64::MAX),
        r.bytes_up,
        r.bytes_down
    );
}
