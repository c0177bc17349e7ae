//! Coalescing checked against a reference segmenter that does what the
//! kernel does with a GSO super-packet: every super-packet written must
//! come apart into exactly the segments that went in, in order.

use super::*;
// The kit's checksum, not the coalescer's own: the judge is independent.
use geoedge_testkit::packet::{fold, gso_segments, pseudo_header_sum, sum, tcp_segment, Segment};
use proptest::prelude::*;

/// A TCP segment with valid checksums, built by the test kit (10.0.0.1 or
/// fd00::1 port `src_port` to port 80, DF set, TTL 64).
#[allow(clippy::too_many_arguments)]
fn tcp(
    v6: bool,
    src_port: u16,
    seq: u32,
    flags: u8,
    id: u16,
    options: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    tcp_segment(&Segment {
        v6,
        src_port,
        seq,
        flags,
        id,
        options,
        payload,
        ..Segment::default()
    })
}

/// What the kernel makes of a written buffer (the kit's reference
/// segmenter), after checking the virtio header the coalescer wrote: a
/// partial checksum that completes over the whole TCP part, valid IPv4
/// header checksums and lengths.
fn segments(buf: &[u8]) -> Vec<Vec<u8>> {
    let (hdr, p) = buf.split_at(VNET_HDR_LEN);
    if hdr[1] != 0 {
        let v6 = hdr[1] == VNET_GSO_TCPV6;
        assert_eq!(hdr[0], VNET_F_NEEDS_CSUM);
        let get = |at: usize| usize::from(u16::from_ne_bytes([hdr[at], hdr[at + 1]]));
        let (csum_start, csum_offset) = (get(6), get(8));
        let ip_len = if v6 { 40 } else { 20 };
        assert_eq!(csum_start, ip_len);
        assert_eq!(csum_offset, 16);
        // The partial checksum completes over the whole TCP part.
        let full = !fold(sum(&p[ip_len..], 0));
        let mut check = p.to_vec();
        check[ip_len + 16..ip_len + 18].copy_from_slice(&full.to_be_bytes());
        assert_eq!(
            fold(sum(
                &check[ip_len..],
                pseudo_header_sum(&check, v6, p.len() - ip_len)
            )),
            0xffff,
            "the partial checksum is the pseudo-header's"
        );
        if !v6 {
            assert_eq!(fold(sum(&p[..20], 0)), 0xffff, "IPv4 header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        } else {
            assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])) + 40, p.len());
        }
    }
    gso_segments(buf)
}

/// Runs the coalescer over `packets` (given without headroom) and returns
/// what the kernel would see, buffer by buffer.
fn run(packets: &[Vec<u8>]) -> Vec<Vec<Vec<u8>>> {
    let mut bufs: Vec<Vec<u8>> = packets
        .iter()
        .map(|p| {
            let mut b = Vec::with_capacity(VNET_HDR_LEN + 65_535);
            b.extend_from_slice(&[0xaa; VNET_HDR_LEN]);
            b.extend_from_slice(p);
            b
        })
        .collect();
    let mut write = Vec::new();
    Coalescer::new().coalesce(&mut bufs, &mut write);
    write.iter().map(|&i| segments(&bufs[i])).collect()
}

const TIMESTAMPS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

#[test]
fn a_run_of_segments_becomes_one_super_packet() {
    for v6 in [false, true] {
        let mut packets = Vec::new();
        let mut seq = 1_000u32;
        for k in 0..40u16 {
            let len = if k == 39 { 300 } else { 1_380 };
            let payload: Vec<u8> = (0..len).map(|b| (b + usize::from(k)) as u8).collect();
            let flags = TCP_ACK | if k == 39 { TCP_PSH } else { 0 };
            packets.push(tcp(v6, 5000, seq, flags, 100 + k, &TIMESTAMPS, &payload));
            seq += len as u32;
        }
        let out = run(&packets);
        assert_eq!(out.len(), 1, "one write");
        assert_eq!(out[0], packets);
    }
}

#[test]
fn what_must_not_merge_goes_in_alone() {
    let p = |seq, flags, payload: &[u8]| tcp(false, 5000, seq, flags, 1, &TIMESTAMPS, payload);
    let mut corrupt = p(2000, TCP_ACK, &[9; 1000]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    // The TCP checksum is fine, the IPv4 header's is not.
    let mut bad_ip_header = p(2000, TCP_ACK, &[9; 1000]);
    bad_ip_header[10] ^= 0x59;
    let mut other_ts = TIMESTAMPS;
    other_ts[7] = 9;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "a gap in sequence",
            vec![p(1000, TCP_ACK, &[1; 1000]), p(2500, TCP_ACK, &[2; 1000])],
        ),
        (
            "a longer segment",
            vec![p(1000, TCP_ACK, &[1; 500]), p(1500, TCP_ACK, &[2; 1000])],
        ),
        (
            "a bad checksum",
            vec![p(1000, TCP_ACK, &[1; 1000]), corrupt],
        ),
        (
            "a bad IPv4 header checksum",
            vec![p(1000, TCP_ACK, &[1; 1000]), bad_ip_header],
        ),
        (
            "FIN",
            vec![
                p(1000, TCP_ACK, &[1; 1000]),
                p(2000, TCP_ACK | TCP_FIN, &[2; 1000]),
            ],
        ),
        (
            "SYN",
            vec![p(1000, TCP_SYN, &[]), p(1000, TCP_ACK, &[2; 1000])],
        ),
        (
            "other options",
            vec![
                p(1000, TCP_ACK, &[1; 1000]),
                tcp(false, 5000, 2000, TCP_ACK, 2, &other_ts, &[2; 1000]),
            ],
        ),
        (
            "another flow",
            vec![
                p(1000, TCP_ACK, &[1; 1000]),
                tcp(false, 5001, 2000, TCP_ACK, 2, &TIMESTAMPS, &[2; 1000]),
            ],
        ),
        (
            "after PSH",
            vec![
                p(1000, TCP_ACK | TCP_PSH, &[1; 1000]),
                p(2000, TCP_ACK, &[2; 1000]),
            ],
        ),
        (
            "a pure ACK",
            vec![p(1000, TCP_ACK, &[]), p(1000, TCP_ACK, &[])],
        ),
    ];
    for (why, packets) in cases {
        let out = run(&packets);
        let flat: Vec<Vec<u8>> = out.iter().flatten().cloned().collect();
        assert_eq!(out.len(), packets.len(), "{why}: written separately");
        assert_eq!(flat, packets, "{why}: unchanged");
    }
    // Not TCP at all: UDP, ICMP, garbage, a runt.
    let mut udp = tcp(false, 5000, 1, TCP_ACK, 1, &[], &[0; 100]);
    udp[9] = 17;
    let garbage = vec![0x45, 1, 2];
    let out = run(&[udp.clone(), garbage.clone(), vec![0x60]]);
    assert_eq!(out, vec![vec![udp], vec![garbage], vec![vec![0x60]]]);
}

#[test]
fn a_super_packet_stops_short_of_64_kib() {
    let mut packets = Vec::new();
    let mut seq = 0u32;
    for k in 0..100u16 {
        packets.push(tcp(false, 5000, seq, TCP_ACK, k, &[], &[k as u8; 1_400]));
        seq += 1_400;
    }
    let out = run(&packets);
    assert!(out.len() >= 3, "{} writes", out.len());
    let flat: Vec<Vec<u8>> = out.into_iter().flatten().collect();
    assert_eq!(flat, packets);
}

/// One packet of a generated batch: its flow, payload length, and what
/// is odd about it.
#[derive(Debug, Clone)]
struct Gen {
    flow: usize,
    len: usize,
    skip: bool,
    psh: bool,
    corrupt: bool,
    not_tcp: bool,
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        0..4usize,
        prop_oneof![Just(1_200usize), Just(1_200), Just(1_200), 0..1_300usize],
        prop::bool::weighted(0.05),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(flow, len, skip, psh, corrupt, not_tcp)| Gen {
            flow,
            len,
            skip,
            psh,
            corrupt,
            not_tcp,
        })
}

proptest! {
    /// Whatever the batch, the kernel sees every packet exactly as it went
    /// in, each flow's in order.
    #[test]
    fn every_packet_comes_out_as_it_went_in(batch in prop::collection::vec(gen(), 1..128)) {
        let mut seqs = [0u32; 4];
        let mut ids = [0u16; 4];
        let mut packets = Vec::new();
        let mut flows = Vec::new();
        for (n, g) in batch.iter().enumerate() {
            if g.skip {
                seqs[g.flow] = seqs[g.flow].wrapping_add(7);
            }
            let v6 = g.flow == 3;
            let payload: Vec<u8> = (0..g.len).map(|b| (b * 31 + n) as u8).collect();
            let flags = TCP_ACK | if g.psh { TCP_PSH } else { 0 };
            let mut p = tcp(v6, 5000 + g.flow as u16, seqs[g.flow], flags, ids[g.flow], &TIMESTAMPS, &payload);
            seqs[g.flow] = seqs[g.flow].wrapping_add(g.len as u32);
            ids[g.flow] = ids[g.flow].wrapping_add(1);
            if g.corrupt {
                let last = p.len() - 1;
                p[last] ^= 0x10;
            }
            if g.not_tcp && !v6 {
                p[9] = 17;
            }
            packets.push(p);
            flows.push(g.flow);
        }
        let out: Vec<Vec<u8>> = run(&packets).into_iter().flatten().collect();
        prop_assert_eq!(out.len(), packets.len());
        for flow in 0..4 {
            let want: Vec<&Vec<u8>> = packets.iter().zip(&flows).filter(|(_, f)| **f == flow).map(|(p, _)| p).collect();
            let port = (5000 + flow as u16).to_be_bytes();
            let got: Vec<&Vec<u8>> = out
                .iter()
                .filter(|p| {
                    let t = if p[0] >> 4 == 6 { 40 } else { 20 };
                    p.len() >= t + 2 && p[t..t + 2] == port
                })
                .collect();
            prop_assert_eq!(got, want, "flow {}", flow);
        }
    }
}
