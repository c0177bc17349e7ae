//! Coalescing checked against a reference segmenter that does what the
//! kernel does with a GSO super-packet: every super-packet written must
//! come apart into exactly the segments that went in, in order.

use super::*;
use proptest::prelude::*;

/// Builds a TCP segment with valid checksums.
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
    let ip_len = if v6 { 40 } else { 20 };
    let tcp_len = 20 + options.len();
    let total = ip_len + tcp_len + payload.len();
    let mut p = vec![0u8; total];
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !fold(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = ip_len;
    p[t..t + 2].copy_from_slice(&src_port.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
    p[t + 12] = ((tcp_len / 4) as u8) << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&500u16.to_be_bytes());
    p[t + 20..t + tcp_len].copy_from_slice(options);
    p[t + tcp_len..].copy_from_slice(payload);
    let c = !fold(sum(&p[t..], pseudo_header_sum(&p, v6, total - ip_len)));
    p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    p
}

/// What the kernel makes of a written buffer: the packet itself, or the
/// segments of a GSO super-packet (headers copied from the first, sequence
/// numbers, IPv4 IDs and lengths advanced, PSH on the last only, checksums
/// computed).
fn segments(buf: &[u8]) -> Vec<Vec<u8>> {
    let (hdr, p) = buf.split_at(VNET_HDR_LEN);
    if hdr[1] == 0 {
        assert_eq!(
            hdr, [0u8; VNET_HDR_LEN],
            "a plain packet has an empty header"
        );
        return vec![p.to_vec()];
    }
    let v6 = hdr[1] == VNET_GSO_TCPV6;
    assert_eq!(hdr[0], VNET_F_NEEDS_CSUM);
    let get = |at: usize| usize::from(u16::from_ne_bytes([hdr[at], hdr[at + 1]]));
    let (head_len, gso, csum_start, csum_offset) = (get(2), get(4), get(6), get(8));
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
    let header = &p[..head_len];
    let seq0 = u32::from_be_bytes(header[ip_len + 4..ip_len + 8].try_into().unwrap());
    let id0 = u16::from_be_bytes([header[4], header[5]]);
    let chunks: Vec<&[u8]> = p[head_len..].chunks(gso).collect();
    assert!(chunks.len() >= 2, "a super-packet has segments");
    chunks
        .iter()
        .enumerate()
        .map(|(k, chunk)| {
            let mut s = header.to_vec();
            s.extend_from_slice(chunk);
            let total = s.len();
            let t = ip_len;
            let offset: usize = chunks[..k].iter().map(|c| c.len()).sum();
            s[t + 4..t + 8].copy_from_slice(&seq0.wrapping_add(offset as u32).to_be_bytes());
            if k + 1 < chunks.len() {
                s[t + 13] &= !TCP_PSH;
            }
            if v6 {
                s[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            } else {
                s[2..4].copy_from_slice(&(total as u16).to_be_bytes());
                s[4..6].copy_from_slice(&id0.wrapping_add(k as u16).to_be_bytes());
                s[10..12].fill(0);
                let c = !fold(sum(&s[..20], 0));
                s[10..12].copy_from_slice(&c.to_be_bytes());
            }
            s[t + 16..t + 18].fill(0);
            let c = !fold(sum(&s[t..], pseudo_header_sum(&s, v6, total - t)));
            s[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
            s
        })
        .collect()
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
