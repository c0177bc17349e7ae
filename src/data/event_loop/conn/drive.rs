//! Driving one pair's relay: the IO its [`PairRelay`] asks for, done on
//! the pair's sockets (reads and writes through the worker's buffers,
//! splices through pipes from the worker thread's pool, shutdowns), the
//! bytes counted, and the pair closed, logged and released once it is
//! over.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use super::{reset, Entry};
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
        while let Some(io) = p.relay.poll_io(pool) {
            match io {
                Io::Read(side) => {
                    let socket = if side == Side::Client {
                        &p.client
                    } else {
                        &p.backend
                    };
                    let mut socket = socket;
                    let result = socket.read(p.relay.read_buf(side, pool));
                    p.relay.handle_read(side, result, pool);
                }
                Io::Write(side) => {
                    let mut socket = if side == Side::Client {
                        &p.client
                    } else {
                        &p.backend
                    };
                    let result = socket.write(p.relay.write_buf(side));
                    let counted = p.relay.handle_write(side, result, pool);
                    if counted > 0 {
                        match side {
                            Side::Backend => proxy.conns.up().add(counted),
                            Side::Client => proxy.conns.down().add(counted),
                        }
                    }
                }
                Io::SpliceIn(side) => {
                    let socket = if side == Side::Client {
                        &p.client
                    } else {
                        &p.backend
                    };
                    let pipes = p.pipes.get_or_insert_with(Default::default);
                    let held = &mut pipes[side as usize];
                    if held.is_none() {
                        *held = Pipe::take();
                    }
                    match held {
                        Some(pipe) => p.relay.handle_splice_in(side, pipe.fill_from(socket)),
                        None => p.relay.handle_no_pipe(side),
                    }
                    if !p.relay.holds_pipe(side) {
                        *held = None;
                    }
                }
                Io::SpliceOut(side) => {
                    let socket = if side == Side::Client {
                        &p.client
                    } else {
                        &p.backend
                    };
                    let src = side.other();
                    let held = p.pipes.as_mut().map(|pipes| &mut pipes[src as usize]);
                    let result = match held {
                        Some(Some(pipe)) => pipe.drain_to(socket),
                        _ => Err(io::Error::other("relay pipe missing")),
                    };
                    let counted = p.relay.handle_splice_out(side, result);
                    if counted > 0 {
                        match side {
                            Side::Backend => proxy.conns.up().add(counted),
                            Side::Client => proxy.conns.down().add(counted),
                        }
                    }
                    if !p.relay.holds_pipe(src) {
                        if let Some(pipes) = p.pipes.as_mut() {
                            pipes[src as usize] = None;
                        }
                    }
                }
                Io::Shutdown(side) => {
                    let socket = if side == Side::Client {
                        &p.client
                    } else {
                        &p.backend
                    };
                    p.relay
                        .handle_shutdown(side, socket.shutdown(Shutdown::Write));
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
