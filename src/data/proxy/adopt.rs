//! Connections accepted elsewhere and handed to this pipeline whole: the
//! epoll worker (`engine = "epoll"`) runs every stage itself but the wait
//! for another POP's lease, and hands a client whose decision waits for
//! one to its worker's second thread, a tokio runtime.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::field::Empty;
use tracing::Instrument;

use super::log_line::LogLine;
use super::stages::{Admitted, Conn, Identity};
use super::{DataPath, Proxy, ProxyOptions, Service};
use crate::data::admission::Slot;
use crate::data::conn_stats::ConnResult;
use crate::data::dialer::Dialer;

/// An accepted client, handed over with what was found out about it.
#[derive(Debug)]
pub struct Adopted {
    /// The accepted socket (non-blocking, registered with no poller).
    pub client: std::net::TcpStream,
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The address the listener is bound to, when known.
    pub listener: Option<SocketAddr>,
    /// What the listener serves.
    pub service: Service,
    /// The settings snapshot taken at accept.
    pub options: Arc<ProxyOptions>,
    /// The connection's slot of the global limit.
    pub slot: Slot,
    /// Who the client is, when the PROXY header was read already (stage 1
    /// is then skipped).
    pub identity: Option<Identity>,
    /// Counts the connection among the open ones until its task starts
    /// (the drain waits for it).
    pub token: TaskTrackerToken,
    /// Set when the client's first decision found the better backend's
    /// lease missing: the lease answers seen before it (see
    /// [`Conn::lease_seen`]).
    pub lease_seen: Option<u64>,
    /// The client's place under its per-client limits, when it was held
    /// to them already (see [`Conn::admitted`]).
    pub admitted: Option<Admitted>,
    /// The connection's access-log line, begun at accept (`None`: the
    /// access log is off).
    pub log: Option<Box<LogLine>>,
}

impl<D: Dialer, P: DataPath> Proxy<D, P> {
    /// Runs the pipeline for a handed-over client, on the current tokio
    /// runtime, from stage 1 (or 2, with its identity).
    pub fn adopt(self: &Arc<Self>, a: Adopted) {
        let client = match TcpStream::from_std(a.client) {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!("a handed-over client could not join the runtime: {e}");
                self.conns.record(ConnResult::LocalError);
                return;
            }
        };
        let conn = Conn {
            client,
            peer: a.peer,
            listener: a.listener,
            app: a.service.app.clone(),
            options: a.options,
            sni: a.service.sni,
            log: a.log,
            lease_seen: a.lease_seen,
            admitted: a.admitted,
        };
        let span = tracing::debug_span!("conn", client = Empty, country = Empty, backend = Empty);
        let this = Arc::clone(self);
        let (slot, identity, token) = (a.slot, a.identity, a.token);
        self.tasks.spawn(
            async move {
                let _token = token;
                Self::handle(this, slot, conn, identity).await;
            }
            .instrument(span),
        );
    }
}
