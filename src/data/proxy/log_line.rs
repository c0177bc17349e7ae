//! A connection's access-log line, filled in by the stages as they learn
//! its parts and written once, when the connection ends
//! ([`geoedge_access_log`]). Only connections of an edge with the access
//! log on carry one ([`LogLine`] is boxed in [`super::Conn`]), so the log
//! costs nothing when it is off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use geoedge_access_log::{AccessLog, End, Record};
use geoedge_geoip::CountryCode;

use crate::data::conn_stats::ConnResult;
use crate::data::relay::Ended;

/// The line of one connection, while it is open.
#[derive(Debug)]
pub struct LogLine {
    /// What is known so far; `end`, `duration` and the byte counts are set
    /// when it is written.
    pub record: Record,
    /// When the connection was accepted, for its duration.
    pub started: Instant,
    /// Client-to-backend bytes, counted by the relay.
    pub up: AtomicU64,
    /// Backend-to-client bytes, counted by the relay.
    pub down: AtomicU64,
}

impl LogLine {
    /// The line of a connection accepted now from `client` on `listener`,
    /// for `app` (the listener's, until the ClientHello names another).
    pub fn new(
        client: std::net::SocketAddr,
        listener: Option<std::net::SocketAddr>,
        app: std::sync::Arc<str>,
    ) -> Box<Self> {
        Box::new(LogLine {
            record: Record {
                start: SystemTime::now(),
                duration: std::time::Duration::ZERO,
                client,
                country: None,
                region: None,
                app,
                sni: None,
                listener,
                backend: None,
                reason: None,
                tier: None,
                attempts: 0,
                connect_time: None,
                bytes_up: 0,
                bytes_down: 0,
                end: End::Error,
            },
            started: Instant::now(),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        })
    }

    /// Who the client is: its address (a trusted PROXY header's source, or
    /// the peer) and its country, when located.
    pub fn identify(&mut self, client: std::net::SocketAddr, country: Option<CountryCode>) {
        self.record.client = client;
        self.record.country = country.and_then(|c| <[u8; 2]>::try_from(c.as_str().as_bytes()).ok());
    }

    /// Writes the line of a connection that ended before its relay.
    pub fn refused(mut self: Box<Self>, log: &AccessLog, result: ConnResult) {
        self.record.end = end_of(result);
        self.record.bytes_up = 0;
        self.write(log);
    }

    /// Writes the line of a connection that ended as `end` having moved
    /// `up` and `down` bytes (the epoll worker's relay counts its own).
    pub fn finish(mut self: Box<Self>, log: &AccessLog, end: End, up: u64, down: u64) {
        self.record.end = end;
        self.record.bytes_up = up;
        self.record.bytes_down = down;
        self.write(log);
    }

    /// Sets the duration and queues the line.
    fn write(mut self: Box<Self>, log: &AccessLog) {
        self.record.duration = self.started.elapsed();
        log.log(self.record);
    }
}

/// The termination reason of a connection that ended with `result`
/// before its relay.
pub fn end_of(result: ConnResult) -> End {
    match result {
        ConnResult::NoBackend => End::NoBackend,
        ConnResult::ConnectFailed => End::ConnectFailed,
        ConnResult::BadProxyHeader | ConnResult::ProxyHeaderTimeout => End::BadHeader,
        ConnResult::ClientLimit => End::ClientLimit,
        ConnResult::ClientRate => End::ClientRate,
        ConnResult::NotTls => End::NotTls,
        ConnResult::Ok | ConnResult::OverLimit | ConnResult::LocalError | ConnResult::Loop => {
            End::Error
        }
    }
}

/// A relayed connection's line (its byte counts kept in it as they
/// flow), written when the relay ends, or, if the relay is dropped before
/// (shutdown's drain timeout cutting it), written as `draining`. Two words:
/// an idle connection's relay holds no more for it.
#[derive(Debug)]
pub struct Relayed<'a> {
    /// The line, until written.
    line: Option<Box<LogLine>>,
    /// Where it goes.
    log: &'a AccessLog,
}

impl<'a> Relayed<'a> {
    /// Starts counting for `line`; `first_up` bytes (the client's, read
    /// before the relay) are counted already.
    pub fn new(line: Box<LogLine>, log: &'a AccessLog, first_up: u64) -> Self {
        line.up.store(first_up, Ordering::Relaxed);
        Relayed {
            line: Some(line),
            log,
        }
    }

    /// The connection's byte tallies (client to backend, backend to
    /// client), while the line is not written.
    pub fn tallies(&self) -> Option<(&AtomicU64, &AtomicU64)> {
        self.line.as_deref().map(|l| (&l.up, &l.down))
    }

    /// Writes the line of a relay that ended this way.
    pub fn ended(&mut self, ended: &Ended) {
        let end = match ended {
            Ended::Closed(moved) if moved.backend_first => End::BackendClosed,
            Ended::Closed(_) => End::ClientClosed,
            Ended::Idle => End::IdleTimeout,
            Ended::Error(_) => End::Error,
        };
        self.finish(end);
    }

    fn finish(&mut self, end: End) {
        if let Some(mut line) = self.line.take() {
            line.record.end = end;
            line.record.bytes_up = line.up.load(Ordering::Relaxed);
            line.record.bytes_down = line.down.load(Ordering::Relaxed);
            line.write(self.log);
        }
    }
}

impl Drop for Relayed<'_> {
    fn drop(&mut self) {
        // Not ended: the relay was cut (the drain timeout, the worker's
        // runtime going away).
        self.finish(End::Draining);
    }
}
