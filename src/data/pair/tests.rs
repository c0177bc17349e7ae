//! The pair relay against a model of two TCP peers: unit tests of each
//! rule, and a property test that drives random traffic, chunking, socket
//! room and end-of-file orders through it.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

/// One socket as the relay sees it, and its peer application.
#[derive(Debug, Default)]
struct Sock {
    /// Bytes the peer sent that the relay has not read yet.
    rx: VecDeque<u8>,
    /// The peer ended its side (after `rx`).
    rx_eof: bool,
    /// Bytes the relay wrote that the peer has not consumed yet.
    tx: VecDeque<u8>,
    /// Room for bytes in `tx`.
    room: usize,
    /// What the peer consumed, in order.
    got: Vec<u8>,
    /// The relay shut down its writing half (the peer saw end-of-file).
    shut: bool,
    /// Bytes written after the shutdown (must stay empty).
    after_shut: usize,
}

impl Sock {
    /// What a read of up to `max` bytes gets: the bytes, the end-of-file
    /// (none), or would-block.
    fn recv(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if self.rx.is_empty() {
            return if self.rx_eof {
                Ok(Vec::new())
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = max.min(self.rx.len());
        Ok(self.rx.drain(..n).collect())
    }

    /// What a write of `bytes` does: as many as there is room for, or
    /// would-block.
    fn send(&mut self, bytes: &[u8]) -> io::Result<usize> {
        assert!(!bytes.is_empty(), "a write of nothing");
        let room = self.room.saturating_sub(self.tx.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = room.min(bytes.len());
        if self.shut {
            self.after_shut += n;
        }
        self.tx.extend(&bytes[..n]);
        Ok(n)
    }
}

/// The driver's pipes, as the model keeps them.
#[derive(Debug, Default)]
struct Pipes {
    /// Per direction (by the side read from): the pipe held, and the
    /// bytes in it.
    held: [Option<VecDeque<u8>>; 2],
    /// Bytes a pipe holds at most.
    cap: usize,
    /// Bytes one splice into a pipe moves at most (less than `cap`: a
    /// splice that comes back short with bytes still in the socket).
    fill_max: usize,
    /// Pipes the pool can still give.
    available: usize,
    /// Splices done, either way.
    splices: usize,
    /// Bytes spliced into pipes.
    spliced: usize,
    /// A pipe was given back with bytes in it before the pair ended.
    dropped_full: usize,
}

/// A model of both sockets of a pair.
struct Model {
    socks: [Sock; 2],
    relay: PairRelay,
    pool: BufPool,
    pipes: Pipes,
    counted: [u64; 2],
    closed: Option<End>,
    ios_after_close: usize,
}

impl Model {
    fn new(first: Vec<u8>, uncounted: usize, half_close: bool, room: [usize; 2]) -> Self {
        Self::with_splice(first, uncounted, half_close, room, None, Pipes::default())
    }

    fn with_splice(
        first: Vec<u8>,
        uncounted: usize,
        half_close: bool,
        room: [usize; 2],
        rule: Option<SpliceRule>,
        pipes: Pipes,
    ) -> Self {
        let now = Instant::now();
        let idle = Duration::from_secs(60);
        let mut m = Model {
            socks: Default::default(),
            relay: PairRelay::new(first, uncounted, half_close, rule, idle, now),
            pool: BufPool::new(16, 4),
            pipes,
            counted: [0; 2],
            closed: None,
            ios_after_close: 0,
        };
        m.socks[0].room = room[0];
        m.socks[1].room = room[1];
        m
    }

    /// Gives the pipe of the bytes read from `side` back once the relay no
    /// longer holds it (as the driver does).
    fn give_back(&mut self, side: Side) {
        let i = Self::side(side);
        if !self.relay.holds_pipe(side) {
            if let Some(pipe) = self.pipes.held[i].take() {
                if !pipe.is_empty() && !self.relay.is_over() {
                    self.pipes.dropped_full += 1;
                }
                self.pipes.available += 1;
            }
        }
    }

    fn side(s: Side) -> usize {
        s as usize
    }

    /// The peer of `side` sends `bytes` (an edge: readable).
    fn send(&mut self, side: Side, bytes: &[u8]) {
        self.socks[Self::side(side)].rx.extend(bytes);
        self.relay.handle_readiness(
            side,
            Readiness {
                readable: true,
                ..Default::default()
            },
        );
    }

    /// The peer of `side` ends its side (an edge: read closed).
    fn end(&mut self, side: Side) {
        self.socks[Self::side(side)].rx_eof = true;
        self.relay.handle_readiness(
            side,
            Readiness {
                readable: true,
                read_closed: true,
                ..Default::default()
            },
        );
    }

    /// The peer of `side` consumes up to `n` bytes (an edge: writable,
    /// when it made room).
    fn consume(&mut self, side: Side, n: usize) {
        let s = &mut self.socks[Self::side(side)];
        let n = n.min(s.tx.len());
        s.got.extend(s.tx.drain(..n));
        if n > 0 {
            self.relay.handle_readiness(
                side,
                Readiness {
                    writable: true,
                    ..Default::default()
                },
            );
        }
    }

    /// Runs what the relay asks until it waits.
    fn run(&mut self) {
        for _ in 0..10_000 {
            let Some(io) = self.relay.poll_io(&mut self.pool) else {
                return;
            };
            if self.closed.is_some() {
                self.ios_after_close += 1;
            }
            match io {
                Io::Read(side) => {
                    let s = &mut self.socks[Self::side(side)];
                    let buf = self.relay.read_buf(side, &mut self.pool);
                    let result = s.recv(buf.len()).map(|got| {
                        buf[..got.len()].copy_from_slice(&got);
                        got.len()
                    });
                    self.relay.handle_read(side, result, &mut self.pool);
                }
                Io::Write(side) => {
                    let result = self.socks[Self::side(side)].send(self.relay.write_buf(side));
                    let counted = self.relay.handle_write(side, result, &mut self.pool);
                    self.counted[Self::side(side)] += counted;
                }
                Io::SpliceIn(side) => {
                    let i = Self::side(side);
                    if self.pipes.held[i].is_none() && self.pipes.available > 0 {
                        self.pipes.available -= 1;
                        self.pipes.held[i] = Some(VecDeque::new());
                    }
                    let Some(pipe) = self.pipes.held[i].as_mut() else {
                        self.relay.handle_no_pipe(side);
                        continue;
                    };
                    self.pipes.splices += 1;
                    let room = self.pipes.cap - pipe.len();
                    let result = self.socks[i]
                        .recv(room.min(self.pipes.fill_max))
                        .map(|got| {
                            pipe.extend(&got);
                            self.pipes.spliced += got.len();
                            got.len()
                        });
                    self.relay.handle_splice_in(side, result);
                    self.give_back(side);
                }
                Io::SpliceOut(side) => {
                    let src = side.other();
                    let pipe = self.pipes.held[Self::side(src)]
                        .as_mut()
                        .expect("a splice out of a pipe not held");
                    assert!(!pipe.is_empty(), "a splice out of an empty pipe");
                    self.pipes.splices += 1;
                    let result = self.socks[Self::side(side)].send(pipe.make_contiguous());
                    if let Ok(n) = result {
                        pipe.drain(..n);
                    }
                    let counted = self.relay.handle_splice_out(side, result);
                    self.counted[Self::side(side)] += counted;
                    self.give_back(src);
                }
                Io::Shutdown(side) => {
                    let s = &mut self.socks[Self::side(side)];
                    assert!(!s.shut, "shut down twice");
                    s.shut = true;
                    self.relay.handle_shutdown(side, Ok(()));
                }
                Io::Close { end } => {
                    assert!(self.closed.is_none(), "closed twice");
                    self.closed = Some(end);
                    // The pair's pipes go with it.
                    for held in &mut self.pipes.held {
                        if held.take().is_some() {
                            self.pipes.available += 1;
                        }
                    }
                }
            }
        }
        panic!("the relay never waits");
    }

    /// Peers consume everything (as often as it takes).
    fn drain(&mut self) {
        for _ in 0..10_000 {
            self.run();
            let pending = self.socks.iter().any(|s| !s.tx.is_empty());
            if !pending {
                return;
            }
            self.consume(Side::Client, usize::MAX);
            self.consume(Side::Backend, usize::MAX);
        }
    }
}

fn readable() -> Readiness {
    Readiness {
        readable: true,
        ..Default::default()
    }
}

#[test]
fn nothing_moves_before_the_connect() {
    let mut m = Model::new(b"HDR".to_vec(), 3, true, [64, 64]);
    m.send(Side::Client, b"hello");
    m.run();
    assert!(m.socks[1].tx.is_empty());
    assert_eq!(m.socks[0].rx.len(), 5, "nothing read before the connect");
    m.relay.handle_connected(Instant::now());
    m.drain();
    assert_eq!(m.socks[1].got, b"HDRhello");
    assert_eq!(m.counted[1], 5, "the header is not counted");
}

#[test]
fn a_client_end_of_file_is_passed_on_after_its_bytes_and_the_backend_answers() {
    let mut m = Model::new(Vec::new(), 0, true, [64, 64]);
    m.relay.handle_connected(Instant::now());
    m.send(Side::Client, b"request");
    m.end(Side::Client);
    m.drain();
    assert_eq!(m.socks[1].got, b"request");
    assert!(m.socks[1].shut, "the backend sees the half-close");
    assert!(m.closed.is_none(), "the backend may still answer");
    m.send(Side::Backend, b"answer");
    m.end(Side::Backend);
    m.drain();
    assert_eq!(m.socks[0].got, b"answer");
    assert!(!m.socks[0].shut, "the last direction needs no shutdown");
    assert_eq!(m.closed, Some(End::Closed));
}

#[test]
fn without_half_close_the_backend_end_of_file_closes_the_pair() {
    let mut m = Model::new(Vec::new(), 0, false, [64, 64]);
    m.relay.handle_connected(Instant::now());
    m.send(Side::Backend, b"bye");
    m.end(Side::Backend);
    m.drain();
    assert_eq!(m.socks[0].got, b"bye");
    assert_eq!(m.closed, Some(End::Closed));
}

#[test]
fn an_error_resets_both_and_nothing_follows() {
    let mut m = Model::new(Vec::new(), 0, true, [64, 64]);
    m.relay.handle_connected(Instant::now());
    m.relay.handle_readiness(Side::Client, readable());
    let io = m.relay.poll_io(&mut m.pool);
    assert_eq!(io, Some(Io::Read(Side::Client)));
    let _ = m.relay.read_buf(Side::Client, &mut m.pool);
    m.relay.handle_read(
        Side::Client,
        Err(io::ErrorKind::ConnectionReset.into()),
        &mut m.pool,
    );
    assert_eq!(
        m.relay.poll_io(&mut m.pool),
        Some(Io::Close { end: End::Error })
    );
    assert!(End::Error.reset());
    assert_eq!(m.relay.poll_io(&mut m.pool), None);
    assert_eq!(m.pool.spare(), 1, "the buffer went back to the pool");
}

#[test]
fn an_error_event_resets_both() {
    let mut m = Model::new(Vec::new(), 0, true, [64, 64]);
    m.relay.handle_connected(Instant::now());
    m.relay.handle_readiness(
        Side::Backend,
        Readiness {
            error: true,
            ..Default::default()
        },
    );
    assert_eq!(
        m.relay.poll_io(&mut m.pool),
        Some(Io::Close { end: End::Error })
    );
}

#[test]
fn a_quiet_pair_ends_after_its_idle_timeout_and_a_busy_one_does_not() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(10);
    let mut r = PairRelay::new(Vec::new(), 0, true, None, idle, t0);
    let mut pool = BufPool::new(16, 4);
    // A connect under way is not idle.
    r.handle_timeout(t0 + idle * 2);
    assert!(!r.is_over());
    let t1 = t0 + idle * 2;
    r.handle_connected(t1);
    assert_eq!(r.poll_timeout(), Some(t1 + idle));
    r.handle_timeout(t1 + idle / 2);
    assert!(!r.is_over());
    // Bytes move: the quiet starts again at the next timeout.
    r.handle_readiness(Side::Client, readable());
    assert_eq!(r.poll_io(&mut pool), Some(Io::Read(Side::Client)));
    r.read_buf(Side::Client, &mut pool)[0] = b'x';
    r.handle_read(Side::Client, Ok(1), &mut pool);
    let t2 = t1 + idle - Duration::from_millis(1);
    r.handle_timeout(t2);
    r.handle_timeout(t2 + idle - Duration::from_millis(1));
    assert!(!r.is_over());
    r.handle_timeout(t2 + idle);
    assert_eq!(r.poll_io(&mut pool), Some(Io::Close { end: End::Idle }));
    assert!(!End::Idle.reset());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn a_short_read_waits_for_the_next_edge_unless_the_peer_ended() {
    let mut r = PairRelay::new(
        Vec::new(),
        0,
        true,
        None,
        Duration::from_secs(1),
        Instant::now(),
    );
    let mut pool = BufPool::new(16, 4);
    r.handle_connected(Instant::now());
    r.handle_readiness(Side::Client, readable());
    assert_eq!(r.poll_io(&mut pool), Some(Io::Read(Side::Client)));
    let _ = r.read_buf(Side::Client, &mut pool);
    r.handle_read(Side::Client, Ok(4), &mut pool);
    assert_eq!(r.poll_io(&mut pool), Some(Io::Write(Side::Backend)));
    assert_eq!(r.handle_write(Side::Backend, Ok(4), &mut pool), 4);
    assert_eq!(r.poll_io(&mut pool), None, "drained: no read to be told so");
    r.handle_readiness(
        Side::Client,
        Readiness {
            readable: true,
            read_closed: true,
            ..Default::default()
        },
    );
    assert_eq!(r.poll_io(&mut pool), Some(Io::Read(Side::Client)));
    let _ = r.read_buf(Side::Client, &mut pool);
    r.handle_read(Side::Client, Ok(4), &mut pool);
    assert_eq!(r.poll_io(&mut pool), Some(Io::Write(Side::Backend)));
    r.handle_write(Side::Backend, Ok(4), &mut pool);
    assert_eq!(
        r.poll_io(&mut pool),
        Some(Io::Read(Side::Client)),
        "after the peer's end, read on to the end-of-file"
    );
}

#[test]
fn a_failover_forgets_the_old_backend_socket() {
    let mut r = PairRelay::new(
        b"x".to_vec(),
        0,
        true,
        None,
        Duration::from_secs(1),
        Instant::now(),
    );
    let mut pool = BufPool::new(16, 4);
    r.handle_readiness(Side::Backend, readable());
    r.handle_new_backend();
    r.handle_connected(Instant::now());
    assert_eq!(r.poll_io(&mut pool), Some(Io::Write(Side::Backend)));
    r.handle_write(Side::Backend, Ok(1), &mut pool);
    assert_eq!(
        r.poll_io(&mut pool),
        None,
        "the old socket's readiness is gone"
    );
}

/// One step of the peers' traffic.
#[derive(Debug, Clone)]
enum Step {
    /// A peer sends this many bytes of its stream.
    Send(Side, usize),
    /// A peer consumes up to this many bytes.
    Consume(Side, usize),
    /// A peer ends its side (once its stream is sent).
    End(Side),
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Client), Just(Side::Backend)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (side(), 1usize..40).prop_map(|(s, n)| Step::Send(s, n)),
        (side(), 1usize..40).prop_map(|(s, n)| Step::Consume(s, n)),
        side().prop_map(Step::End),
    ]
}

proptest! {
    // Failing cases are kept beside this file (tests.regressions), not in
    // a folder at the top of the repository.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Whatever the chunking, the room in the sockets and the order of the
    /// ends: every byte arrives once, in order, each end-of-file after the
    /// bytes before it, nothing after a shutdown, the counters exact, and
    /// the pair closes cleanly once both sides ended.
    #[test]
    fn bytes_arrive_whole_and_in_order(
        up in proptest::collection::vec(any::<u8>(), 0..300),
        down in proptest::collection::vec(any::<u8>(), 0..300),
        header in proptest::collection::vec(any::<u8>(), 0..20),
        early in proptest::collection::vec(any::<u8>(), 0..20),
        rooms in (1usize..50, 1usize..50),
        connect_after in 0usize..10,
        half_close in any::<bool>(),
        splice in proptest::option::of((0u64..60, 1usize..17, 1usize..30, 1usize..40, 0usize..3)),
        steps in proptest::collection::vec(step(), 0..200),
    ) {
        let mut first = header.clone();
        first.extend_from_slice(&early);
        // Splice past `after` bytes and reads of `bulk_read`, through
        // pipes of `cap` bytes filled `fill_max` at a time, `available`
        // of them in the pool.
        let (rule, pipes) = match splice {
            Some((after, bulk_read, cap, fill_max, available)) => (
                Some(SpliceRule { after, bulk_read }),
                Pipes { cap, fill_max, available, ..Pipes::default() },
            ),
            None => (None, Pipes::default()),
        };
        let pipes_at_start = pipes.available;
        let mut m = Model::with_splice(
            first, header.len(), half_close, [rooms.0, rooms.1], rule, pipes,
        );
        let streams = [up.clone(), down.clone()];
        let mut sent = [0usize; 2];
        let mut ended = [false; 2];
        for (k, step) in steps.iter().enumerate() {
            if k == connect_after {
                m.relay.handle_connected(Instant::now());
            }
            match *step {
                Step::Send(s, n) => {
                    let i = s as usize;
                    if ended[i] { continue; }
                    let n = n.min(streams[i].len() - sent[i]);
                    if n > 0 {
                        m.send(s, &streams[i][sent[i]..sent[i] + n]);
                        sent[i] += n;
                    }
                }
                Step::Consume(s, n) => m.consume(s, n),
                Step::End(s) => {
                    let i = s as usize;
                    if !ended[i] && sent[i] == streams[i].len() {
                        ended[i] = true;
                        m.end(s);
                    }
                }
            }
            m.run();
        }
        if !m.relay.is_connected() {
            m.relay.handle_connected(Instant::now());
        }
        // The rest of both streams, then both ends.
        for s in [Side::Client, Side::Backend] {
            let i = s as usize;
            if !ended[i] {
                let rest = streams[i][sent[i]..].to_vec();
                if !rest.is_empty() { m.send(s, &rest); }
                m.end(s);
            }
        }
        m.drain();
        prop_assert_eq!(m.ios_after_close, 0);
        prop_assert_eq!(m.socks[0].after_shut + m.socks[1].after_shut, 0);
        prop_assert_eq!(m.closed, Some(End::Closed));
        // The client gets the whole answer, with or without half-close.
        prop_assert_eq!(&m.socks[0].got, &down);
        prop_assert_eq!(m.counted[0], down.len() as u64);
        if half_close {
            let mut expected = header.clone();
            expected.extend_from_slice(&early);
            expected.extend_from_slice(&up);
            prop_assert_eq!(&m.socks[1].got, &expected);
            prop_assert_eq!(m.counted[1], (early.len() + up.len()) as u64);
            prop_assert_eq!(m.relay.moved(), (m.counted[1], m.counted[0]));
        } else {
            // The backend got a prefix of what was owed (the pair closes
            // at its end-of-file).
            let mut expected = header.clone();
            expected.extend_from_slice(&early);
            expected.extend_from_slice(&up);
            prop_assert!(expected.starts_with(&m.socks[1].got));
        }
        prop_assert!(m.pool.spare() <= 4);
        // Every pipe went back, none with bytes in it.
        prop_assert_eq!(m.pipes.available, pipes_at_start);
        prop_assert_eq!(m.pipes.dropped_full, 0);
        if rule.is_none() {
            prop_assert_eq!(m.pipes.splices, 0);
        }
        prop_assert!(m.pipes.spliced <= up.len() + down.len());
    }

    /// A failure at any point ends the pair with one reset and no IO after.
    #[test]
    fn a_failure_anywhere_resets_once(
        up in proptest::collection::vec(any::<u8>(), 1..200),
        fail_at in 0usize..30,
        splice in any::<bool>(),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        // Splicing, every direction splices from its first byte on.
        let rule = splice.then_some(SpliceRule { after: 0, bulk_read: 0 });
        let pipes = Pipes { cap: 8, fill_max: 8, available: 2, ..Pipes::default() };
        let mut m = Model::with_splice(Vec::new(), 0, true, [8, 8], rule, pipes);
        m.relay.handle_connected(Instant::now());
        let mut ios = 0;
        m.send(Side::Client, &up);
        for step in &steps {
            match *step {
                Step::Send(s, n) => m.send(s, &vec![7u8; n]),
                Step::Consume(s, n) => m.consume(s, n),
                Step::End(_) => {}
            }
            while let Some(io) = m.relay.poll_io(&mut m.pool) {
                ios += 1;
                match io {
                    Io::Close { end } => {
                        prop_assert_eq!(end, End::Error);
                        prop_assert!(m.closed.is_none());
                        m.closed = Some(end);
                    }
                    Io::Read(s) => {
                        let _ = m.relay.read_buf(s, &mut m.pool);
                        let r = if ios == fail_at { Err(io::ErrorKind::ConnectionReset.into()) } else { Ok(1) };
                        m.relay.handle_read(s, r, &mut m.pool);
                    }
                    Io::Write(s) => {
                        let r = if ios == fail_at { Err(io::ErrorKind::BrokenPipe.into()) } else { Err(io::ErrorKind::WouldBlock.into()) };
                        m.relay.handle_write(s, r, &mut m.pool);
                    }
                    Io::SpliceIn(s) => {
                        let r = if ios == fail_at { Err(io::ErrorKind::ConnectionReset.into()) } else { Ok(1) };
                        m.relay.handle_splice_in(s, r);
                    }
                    Io::SpliceOut(s) => {
                        let r = if ios == fail_at { Err(io::ErrorKind::BrokenPipe.into()) } else { Err(io::ErrorKind::WouldBlock.into()) };
                        m.relay.handle_splice_out(s, r);
                    }
                    Io::Shutdown(s) => m.relay.handle_shutdown(s, Err(io::ErrorKind::NotConnected.into())),
                }
                prop_assert!(ios < 10_000);
            }
        }
        if m.closed.is_some() {
            prop_assert_eq!(m.relay.poll_io(&mut m.pool), None);
            prop_assert!(m.relay.is_over());
        }
    }
}

mod splice;
