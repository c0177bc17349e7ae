//! The epoll worker's clients before their routing: a trusted source's
//! PROXY header, then, on a listener that reads it, the TLS ClientHello,
//! each read within its deadline (`proxy_header_timeout`, swept) by the
//! sans-IO parsers the tokio stages use. The ClientHello's bytes are kept,
//! owed to the backend unchanged; its server name picks the app
//! (routing.db's `sni_routes`), as [`Proxy::classify`] does.
//!
//! [`Proxy::classify`]: crate::data::proxy::Proxy

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::conn::{note_identity, refuse, reset, token, Arrival, Entry};
use super::EventLoop;
use crate::data::admission::Slot;
use crate::data::conn_stats::ConnResult;
use crate::data::dialer::TcpDialer;
use crate::data::pair::Side;
use crate::data::proxy::log_line::LogLine;
use crate::data::proxy::stages::Identity;
use crate::data::proxy::{DataPath, Proxy, ProxyOptions, Service};
use crate::data::proxy_protocol::{self, Header, Parse};
use geoedge_client_hello::{self as client_hello, MAX_CLIENT_HELLO};

/// What a pending client's bytes are awaited for.
pub(super) enum Awaiting {
    /// A trusted source's PROXY header.
    Header,
    /// The TLS ClientHello, from a client already identified.
    Hello(Box<Identity>),
}

/// A client whose first bytes are being read.
pub(super) struct Pending {
    /// The accepted socket (registered for reading under its entry's
    /// token).
    pub(super) client: TcpStream,
    /// The TCP peer.
    pub(super) peer: SocketAddr,
    /// The listener's address, when known.
    pub(super) listener: Option<SocketAddr>,
    /// What the listener serves.
    pub(super) service: Service,
    /// The settings snapshot taken at accept.
    pub(super) options: Arc<ProxyOptions>,
    /// What is awaited.
    pub(super) awaiting: Awaiting,
    /// What was read so far and not consumed (for the ClientHello: every
    /// byte from the client's first, owed to the backend).
    pub(super) buf: Vec<u8>,
    /// The deadline of what is awaited.
    pub(super) deadline: Instant,
    /// The connection's slot of the global limit.
    pub(super) slot: Slot,
    /// Counts the connection among the open ones.
    pub(super) token: TaskTrackerToken,
    /// The access-log line, when the log is on.
    pub(super) log: Option<Box<LogLine>>,
}

/// What the bytes read so far make, once they make something.
enum Step {
    /// A whole PROXY header: who the client is, and how many bytes it took.
    Header(Header, usize),
    /// A whole ClientHello and the server name it names, if any.
    Hello(Option<String>),
    /// Not what was awaited (logged at debug with the reason), or a close
    /// or error inside it.
    Refused(ConnResult, String),
}

impl Pending {
    /// What `buf` makes of what is awaited (`None`: more bytes are
    /// needed).
    fn step(&self) -> Option<Step> {
        Some(match &self.awaiting {
            Awaiting::Header => match proxy_protocol::parse(&self.buf) {
                Ok(Parse::Complete { header, consumed }) => Step::Header(header, consumed),
                Ok(Parse::Incomplete) if self.buf.len() < proxy_protocol::MAX_HEADER_LEN => {
                    return None
                }
                Ok(Parse::Incomplete) => {
                    Step::Refused(ConnResult::BadProxyHeader, "PROXY header too long".into())
                }
                Err(e) => Step::Refused(ConnResult::BadProxyHeader, e.to_string()),
            },
            Awaiting::Hello(_) if self.buf.is_empty() => return None,
            Awaiting::Hello(_) => match client_hello::parse(&self.buf) {
                Ok(client_hello::Parse::Complete(hello)) => Step::Hello(hello.server_name),
                Ok(client_hello::Parse::Incomplete) if self.buf.len() < MAX_CLIENT_HELLO => {
                    return None
                }
                Ok(client_hello::Parse::Incomplete) => Step::Refused(
                    ConnResult::NotTls,
                    client_hello::ClientHelloError::TooLong.to_string(),
                ),
                Err(e) => Step::Refused(ConnResult::NotTls, e.to_string()),
            },
        })
    }

    /// The result a client that sent nothing whole in time counts as.
    pub(super) fn timed_out(&self) -> ConnResult {
        match self.awaiting {
            Awaiting::Header => ConnResult::ProxyHeaderTimeout,
            Awaiting::Hello(_) => ConnResult::NotTls,
        }
    }

    /// The most bytes what is awaited may take.
    fn max(&self) -> usize {
        match self.awaiting {
            Awaiting::Header => proxy_protocol::MAX_HEADER_LEN,
            Awaiting::Hello(_) => MAX_CLIENT_HELLO,
        }
    }

    /// The result a close or an error inside what is awaited counts as.
    fn cut(&self) -> ConnResult {
        match self.awaiting {
            Awaiting::Header => ConnResult::BadProxyHeader,
            Awaiting::Hello(_) => ConnResult::NotTls,
        }
    }
}

impl EventLoop {
    /// Holds a trusted source's client for its PROXY header.
    pub(super) fn await_header<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        mut pending: Pending,
    ) {
        let Some(idx) = self.hold(&mut pending) else {
            refuse(proxy, pending.log, ConnResult::LocalError);
            return;
        };
        self.slab[idx] = Some(Entry::Header(Box::new(pending)));
    }

    /// Registers a pending client for reading under a new slab index
    /// (`None`: it could not be; the client is reset).
    fn hold(&mut self, pending: &mut Pending) -> Option<usize> {
        let idx = self.vacant();
        let polled = self.poll.registry().register(
            &mut pending.client,
            token(idx, 0, Side::Client),
            Interest::READABLE,
        );
        if polled.is_err() {
            self.release(idx);
            reset(&pending.client);
            return None;
        }
        Some(idx)
    }

    /// Holds a client for its ClientHello (its identity known), under slab
    /// index `idx` when it is registered there already, and reads what has
    /// come.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn await_hello<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        registered: Option<usize>,
        mut pending: Pending,
        mut identity: Identity,
        now: Instant,
    ) {
        let Some(idx) = registered.or_else(|| self.hold(&mut pending)) else {
            refuse(proxy, pending.log, ConnResult::LocalError);
            return;
        };
        note_identity(pending.log.as_deref_mut(), &identity);
        pending.buf = std::mem::take(&mut identity.early);
        pending.deadline = now + pending.options.proxy_header_timeout;
        pending.awaiting = Awaiting::Hello(Box::new(identity));
        self.slab[idx] = Some(Entry::Header(Box::new(pending)));
        self.read_pending(proxy, idx, now);
    }

    /// Reads what a pending client sent, until it would block; once what
    /// is awaited is whole, goes on (a PROXY header to the ClientHello or
    /// the routing, a ClientHello to the routing).
    pub(super) fn read_pending<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        idx: usize,
        now: Instant,
    ) {
        let Some(Some(Entry::Header(pe))) = self.slab.get_mut(idx) else {
            return;
        };
        let step = loop {
            if let Some(step) = pe.step() {
                break step;
            }
            let filled = pe.buf.len();
            pe.buf.resize(pe.max(), 0);
            let read = (&pe.client).read(&mut pe.buf[filled..]);
            pe.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => break Step::Refused(pe.cut(), "closed inside it".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Step::Refused(pe.cut(), e.to_string()),
            }
        };
        let Some(Entry::Header(pe)) = self.slab[idx].take() else {
            return;
        };
        let mut pe = *pe;
        match step {
            Step::Refused(result, why) => {
                self.release(idx);
                tracing::debug!(peer = %pe.peer, result = result.as_str(), "refused before routing: {why}");
                refuse(proxy, pe.log, result);
            }
            Step::Header(header, consumed) => {
                let local = || {
                    pe.client
                        .local_addr()
                        .ok()
                        .or(pe.listener)
                        .unwrap_or(pe.peer)
                };
                let (source, destination) = match header {
                    Header::Proxied {
                        source,
                        destination,
                    } => (source, destination),
                    Header::Local => (pe.peer, local()),
                };
                let ip = source.ip().to_canonical();
                let identity = Identity {
                    source,
                    destination,
                    early: pe.buf.split_off(consumed),
                    ip,
                    lookup: proxy.geoip.lookup(ip),
                };
                if pe.service.sni {
                    // Registered already, under this index.
                    self.await_hello(proxy, Some(idx), pe, identity, now);
                    return;
                }
                self.release(idx);
                self.route(proxy, pe, identity, now);
            }
            Step::Hello(name) => {
                self.release(idx);
                let mut identity = match std::mem::replace(&mut pe.awaiting, Awaiting::Header) {
                    Awaiting::Hello(identity) => identity,
                    // A hello is only parsed while one is awaited.
                    Awaiting::Header => return,
                };
                let routed = name.as_deref().and_then(|name| {
                    proxy
                        .router
                        .table()
                        .snapshot_guard()
                        .sni_route(name)
                        .cloned()
                });
                proxy.sni.count(name.is_some(), routed.is_some());
                let app = routed.unwrap_or_else(|| pe.service.app.clone());
                if let Some(line) = pe.log.as_deref_mut() {
                    line.record.sni = name.map(String::into_boxed_str);
                    line.record.app = app.as_arc();
                }
                // The app is decided: the rest of the way (a hand-over
                // included) never reads the hello again.
                pe.service = Service::app(app);
                identity.early = std::mem::take(&mut pe.buf);
                self.route(proxy, pe, *identity, now);
            }
        }
    }

    /// Routes a client whose first bytes are read (registered for reading
    /// under an index released already).
    fn route<P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<TcpDialer, P>>,
        pe: Pending,
        identity: Identity,
        now: Instant,
    ) {
        let arrival = Arrival {
            client: pe.client,
            registered: true,
            service: &pe.service,
            options: &pe.options,
            slot: pe.slot,
            token: pe.token,
            log: pe.log,
        };
        self.start(proxy, arrival, identity, now);
    }
}
