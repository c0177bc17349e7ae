//! The epoll worker's clients before their routing: a trusted source's
//! PROXY header being read, within its deadline.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::conn::{refuse, Arrival, Entry};
use super::{EventLoop, Handoff};
use crate::data::admission::Slot;
use crate::data::conn_stats::ConnResult;
use crate::data::dialer::Dialer;
use crate::data::proxy::log_line::LogLine;
use crate::data::proxy::stages::Identity;
use crate::data::proxy::{DataPath, Proxy, ProxyOptions, Service};
use crate::data::proxy_protocol::{self, Header, Parse};

/// A client of a trusted source whose PROXY header is being read.
pub(super) struct Pending {
    /// The accepted socket.
    pub(super) client: TcpStream,
    /// The TCP peer (the trusted source).
    pub(super) peer: SocketAddr,
    /// The listener's address, when known.
    pub(super) listener: Option<SocketAddr>,
    /// What the listener serves.
    pub(super) service: Service,
    /// The settings snapshot taken at accept.
    pub(super) options: Arc<ProxyOptions>,
    /// What was read so far.
    pub(super) buf: Vec<u8>,
    /// The header's deadline.
    pub(super) deadline: Instant,
    /// The connection's slot of the global limit.
    pub(super) slot: Slot,
    /// Counts the connection among the open ones.
    pub(super) token: TaskTrackerToken,
    /// The access-log line, when the log is on.
    pub(super) log: Option<Box<LogLine>>,
}

impl EventLoop {
    /// Reads what a pending client sent; once its PROXY header is whole,
    /// routes the client.
    pub(super) fn read_header<D: Dialer, P: DataPath>(
        &mut self,
        proxy: &Arc<Proxy<D, P>>,
        handoff: &Handoff,
        idx: usize,
        now: Instant,
    ) {
        let Some(Some(Entry::Header(pe))) = self.slab.get_mut(idx) else {
            return;
        };
        let parsed = loop {
            let filled = pe.buf.len();
            pe.buf.resize(proxy_protocol::MAX_HEADER_LEN, 0);
            let read = (&pe.client).read(&mut pe.buf[filled..]);
            match read {
                Ok(0) => {
                    pe.buf.truncate(filled);
                    break Err("closed inside the PROXY header".to_string());
                }
                Ok(n) => {
                    pe.buf.truncate(filled + n);
                    match proxy_protocol::parse(&pe.buf) {
                        Ok(Parse::Complete { header, consumed }) => break Ok((header, consumed)),
                        Ok(Parse::Incomplete) if pe.buf.len() < proxy_protocol::MAX_HEADER_LEN => {
                            continue
                        }
                        Ok(Parse::Incomplete) => break Err("PROXY header too long".to_string()),
                        Err(e) => break Err(e.to_string()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pe.buf.truncate(filled);
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => pe.buf.truncate(filled),
                Err(e) => {
                    pe.buf.truncate(filled);
                    break Err(e.to_string());
                }
            }
        };
        let Some(Entry::Header(pe)) = self.slab[idx].take() else {
            return;
        };
        self.release(idx);
        let Pending {
            client,
            peer,
            listener,
            service,
            options,
            buf,
            slot,
            token,
            log,
            ..
        } = *pe;
        let (header, consumed) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => {
                tracing::debug!(%peer, "PROXY header rejected: {e}");
                refuse(proxy, log, ConnResult::BadProxyHeader);
                return;
            }
        };
        let local = || client.local_addr().ok().or(listener).unwrap_or(peer);
        let (source, destination) = match header {
            Header::Proxied {
                source,
                destination,
            } => (source, destination),
            Header::Local => (peer, local()),
        };
        let ip = source.ip().to_canonical();
        let identity = Identity {
            source,
            destination,
            early: buf[consumed..].to_vec(),
            ip,
            lookup: proxy.geoip.lookup(ip),
        };
        let arrival = Arrival {
            client,
            registered: true,
            peer,
            listener,
            service: &service,
            options: &options,
            slot,
            token,
            log,
        };
        self.start(proxy, handoff, arrival, identity, now);
    }
}
