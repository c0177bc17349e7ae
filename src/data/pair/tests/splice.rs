//! The splice rules of the pair relay, against the model of two TCP peers
//! and the driver's pipes: when a direction starts splicing and when it goes
//! back to copying, short splices, no pipe to be had, the end-of-file and
//! an error with bytes in a pipe.

use super::*;

/// The rule of the splice tests: past 32 bytes, after a read of 8 or more.
const RULE: SpliceRule = SpliceRule {
    after: 32,
    bulk_read: 8,
};

fn splicing_model(available: usize) -> Model {
    let pipes = Pipes {
        cap: 64,
        fill_max: 20,
        available,
        ..Pipes::default()
    };
    let mut m = Model::with_splice(Vec::new(), 0, true, [1000, 1000], Some(RULE), pipes);
    m.relay.handle_connected(Instant::now());
    m
}

#[test]
fn a_bulk_direction_splices_and_a_small_read_brings_it_back_to_copying() {
    let mut m = splicing_model(1);
    let bulk: Vec<u8> = (0..200u8).collect();
    // 16-byte reads (the buffer's size) past 32 bytes: then splices.
    m.send(Side::Client, &bulk[..32]);
    m.drain();
    assert_eq!(m.pipes.spliced, 0, "not yet: 32 bytes read in 16s");
    m.send(Side::Client, &bulk[32..]);
    m.drain();
    assert!(m.relay.is_splicing(Side::Client));
    assert_eq!(m.pipes.spliced, 200 - 32);
    assert_eq!(m.socks[1].got, bulk);
    assert_eq!(m.counted[1], 200);
    assert_eq!(m.pipes.available, 1, "drained: the pipe went back");
    // A stretch that ends with a small splice: copying again.
    m.send(Side::Client, b"tiny");
    m.drain();
    assert!(!m.relay.is_splicing(Side::Client));
    let splices = m.pipes.splices;
    m.send(Side::Client, b"more");
    m.drain();
    assert_eq!(m.pipes.splices, splices, "small messages are copied");
    assert_eq!(&m.socks[1].got[200..], b"tinymore");
    // The other direction never moved enough to splice.
    assert!(!m.relay.is_splicing(Side::Backend));
}

#[test]
fn a_short_splice_reads_on_until_the_socket_would_block() {
    let mut m = splicing_model(1);
    m.send(Side::Client, &[1u8; 48]);
    m.drain();
    // 100 bytes in one edge; each splice takes 20: all of it goes, with no
    // new edge.
    m.send(Side::Client, &[2u8; 100]);
    m.drain();
    assert_eq!(m.socks[1].got.len(), 148);
    assert!(m.socks[0].rx.is_empty());
}

#[test]
fn with_no_pipe_to_be_had_a_bulk_direction_copies() {
    let mut m = splicing_model(0);
    let bulk: Vec<u8> = (0..200u8).collect();
    m.send(Side::Client, &bulk);
    m.drain();
    assert_eq!(m.socks[1].got, bulk);
    assert_eq!(m.pipes.spliced, 0);
    // A pipe for the next stretch: it splices.
    m.pipes.available = 1;
    m.send(Side::Client, &[3u8; 40]);
    m.drain();
    assert_eq!(m.pipes.spliced, 40);
    assert_eq!(m.socks[1].got.len(), 240);
}

#[test]
fn bytes_in_a_pipe_are_written_before_the_end_of_file_is_passed_on() {
    let mut m = splicing_model(1);
    m.socks[1].room = 10;
    m.send(Side::Client, &[4u8; 100]);
    m.end(Side::Client);
    m.run();
    assert!(!m.socks[1].shut, "bytes still wait in the pipe");
    m.drain();
    assert!(m.socks[1].shut);
    assert_eq!(m.socks[1].got, vec![4u8; 100]);
    assert_eq!(m.pipes.available, 1);
}

#[test]
fn an_error_with_bytes_in_a_pipe_resets_and_closes_the_pipe() {
    let mut m = splicing_model(1);
    m.socks[1].room = 40;
    m.send(Side::Client, &[5u8; 100]);
    m.run();
    assert!(m.relay.holds_pipe(Side::Client));
    m.relay.handle_readiness(
        Side::Backend,
        Readiness {
            error: true,
            ..Default::default()
        },
    );
    m.run();
    assert_eq!(m.closed, Some(End::Error));
    assert!(!m.relay.holds_pipe(Side::Client));
    assert_eq!(m.pipes.available, 1);
}
