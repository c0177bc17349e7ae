//! Driving one pair's relay: the IO its
//! [`PairRelay`](crate::data::pair::PairRelay) asks for, done on the pair's
//! sockets (reads and writes through the worker's buffers,
//! splices through pipes from the worker thread's pool, shutdowns), the
//! bytes counted, and the pair closed, logged and released once it is
//! over.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use super::{reset, Entry, Pair};
use crate::data::dialer::TcpDialer;
use crate::data::event_loop::EventLoop;
use crate::data::pair::{End, Io, Side};
use crate::data::proxy::{DataPath, Proxy};
use crate::data::splice::Pipe;
use geoedge_access_log::End as AccessEnd;

impl EventLoop {
    /// Runs what pair `idx`'s relay asks until it waits; closes the pair
    /// when it is over.
    pub(super) fn drive<P: DataPath>(&mut self, proxy: &Arc<Proxy<TcpDialer, P>>, idx: usize) {
        let Some(Some(Entry::Pair(p))) = self.slab.get_mut(idx) else {
            return;
        };
        let pool = &mut self.pool;
        let mut ended = None;
        let Pair {
            client,
            backend,
            relay,
            pipes,
            ..
        } = &mut **p;
        let socket = |side| match side {
            Side::Client => &*client,
            Side::Backend => &*backend,
        };
        while let Some(io) = relay.poll_io(pool) {
            match io {
                Io::Read(side) => {
                    let result = socket(side).read(relay.read_buf(side, pool));
                    relay.handle_read(side, result, pool);
                }
                Io::Write(side) => {
                    let result = socket(side).write(relay.write_buf(side));
                    let n = relay.handle_write(side, result, pool);
                    count_moved(proxy, side, n);
                }
                Io::SpliceIn(side) => {
                    let socket = socket(side);
                    let held = &mut pipes.get_or_insert_with(Default::default)[side as usize];
                    if held.is_none() {
                        *held = Pipe::take();
                    }
                    match held {
                        Some(pipe) => relay.handle_splice_in(side, pipe.fill_from(socket)),
                        None => relay.handle_no_pipe(side),
                    }
                    if !relay.holds_pipe(side) {
                        *held = None;
                    }
                }
                Io::SpliceOut(side) => {
                    let src = side.other();
                    let held = pipes.as_mut().map(|held| &mut held[src as usize]);
                    let result = match held {
                        Some(Some(pipe)) => pipe.drain_to(socket(side)),
                        _ => Err(io::Error::other("relay pipe missing")),
                    };
                    let n = relay.handle_splice_out(side, result);
                    count_moved(proxy, side, n);
                    if !relay.holds_pipe(src) {
                        if let Some(held) = pipes.as_mut() {
                            held[src as usize] = None;
                        }
                    }
                }
                Io::Shutdown(side) => {
                    let result = socket(side).shutdown(Shutdown::Write);
                    relay.handle_shutdown(side, result);
                }
                Io::Close { end } => ended = Some(end),
            }
        }
        let Some(end) = ended else {
            return;
        };
        if end.reset() {
            reset(&p.client);
            reset(&p.backend);
        }
        let (up, down) = p.relay.moved();
        if let (Some(line), Some(log)) = (p.log.take(), &proxy.access_log) {
            let how = match end {
                End::Closed if p.relay.first_done() == Some(Side::Backend) => {
                    AccessEnd::BackendClosed
                }
                End::Closed => AccessEnd::ClientClosed,
                End::Idle => AccessEnd::IdleTimeout,
                End::Error => AccessEnd::Error,
            };
            line.finish(log, how, up, down);
        }
        match end {
            End::Closed => tracing::debug!(up, down, "closed"),
            End::Idle => tracing::debug!("idle timeout"),
            End::Error => tracing::debug!(up, down, "relay ended by a socket error"),
        }
        self.release(idx);
    }
}

/// Counts `n` bytes written to `side` (to the backend: up; to the client:
/// down).
fn count_moved<P: DataPath>(proxy: &Proxy<TcpDialer, P>, side: Side, n: u64) {
    if n > 0 {
        match side {
            Side::Backend => proxy.conns.up().add(n),
            Side::Client => proxy.conns.down().add(n),
        }
    }
}
