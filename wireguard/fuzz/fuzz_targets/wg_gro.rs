//! Fuzzes the GRO coalescer with batches of decrypted packets: TCP segments
//! of a few flows (IPv4 and IPv6, with valid checksums unless corrupted on
//! purpose, sequence numbers that mostly continue, assorted flags, options,
//! TTLs, IDs and DF bits) mixed with arbitrary bytes.
//!
//! Checked besides "never panics": the buffers to write are in order, each
//! once; and, as the kernel takes them apart again (a reference segmenter,
//! the test kit's, as in the unit tests), every packet comes out exactly as it went in, in
//! its flow's order, except for what GSO rewrites by design: the IPv4 ID
//! (and header checksum) of a segment merged with DF set.

#![no_main]

use arbitrary::{Result, Unstructured};
use geoedge_testkit::packet::{gso_segments, tcp_segment, Segment, TCP_ACK, TCP_PSH};
use geoedge_wireguard::gro::{Coalescer, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

/// One flow's state while a batch is generated.
#[derive(Clone, Copy, Default)]
struct FlowGen {
    seq: u32,
    id: u16,
}

/// A TCP segment of flow `flow` (0..4; flow 3 is IPv6), or arbitrary bytes.
fn packet(u: &mut Unstructured<'_>, flows: &mut [FlowGen; 4]) -> Result<Vec<u8>> {
    if u.ratio(1u8, 10)? {
        return u.arbitrary();
    }
    let flow = u.int_in_range(0..=3usize)?;
    let v6 = flow == 3;
    let g = &mut flows[flow];
    if u.ratio(1u8, 16)? {
        g.seq = g.seq.wrapping_add(u.int_in_range(1..=3000)?);
    }
    let len = match u.int_in_range(0u8..=7)? {
        0..=4 => 1200,
        5 => 0,
        _ => u.int_in_range(0..=1400usize)?,
    };
    let options: &[u8] = match u.int_in_range(0u8..=3)? {
        0 => &[],
        1 => &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        2 => &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 2],
        _ => &[2, 4, 5, 180],
    };
    let flags = match u.int_in_range(0u8..=9)? {
        0 => TCP_ACK | TCP_PSH,
        1 => u.arbitrary()?,
        _ => TCP_ACK,
    };
    let ttl = if u.ratio(1u8, 16)? { 63 } else { 64 };
    let (id, dont_fragment) = if v6 {
        (0, true)
    } else {
        let id = if u.ratio(1u8, 8)? {
            u.arbitrary()?
        } else {
            g.id
        };
        (id, !u.ratio(1u8, 4)?)
    };
    let payload: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(g.seq as u8))
        .collect();
    let mut p = tcp_segment(&Segment {
        v6,
        src_port: 5000 + flow as u16,
        seq: g.seq,
        flags,
        id,
        dont_fragment,
        ttl,
        options,
        payload: &payload,
    });
    g.seq = g.seq.wrapping_add(len as u32);
    g.id = g.id.wrapping_add(1);
    // Corruption, after the checksums.
    if u.ratio(1u8, 32)? {
        let i = u.choose_index(p.len())?;
        p[i] ^= u.int_in_range(1..=255)?;
    }
    if u.ratio(1u8, 32)? {
        let n = u.int_in_range(0..=p.len())?;
        p.truncate(n);
    }
    Ok(p)
}

/// What names a flow (addresses and ports), if `p` looks like a segment.
fn flow_of(p: &[u8]) -> Option<Vec<u8>> {
    match p.first()? >> 4 {
        4 => p.get(12..24).map(<[u8]>::to_vec),
        6 => p.get(8..44).map(<[u8]>::to_vec),
        _ => None,
    }
}

/// An IPv4 packet with DF set has its ID (and so its header checksum)
/// rewritten by GSO: compare without them.
fn same(got: &[u8], want: &[u8]) -> bool {
    if got.len() != want.len() || got.len() < 20 || got[0] >> 4 != 4 || want[6] & 0x40 == 0 {
        return got == want;
    }
    got[..4] == want[..4] && got[6..10] == want[6..10] && got[12..] == want[12..]
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let mut flows = [FlowGen::default(); 4];
    let n = u.int_in_range(1..=96usize)?;
    let mut packets = Vec::with_capacity(n);
    for _ in 0..n {
        packets.push(packet(u, &mut flows)?);
    }
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
    assert!(write.windows(2).all(|w| w[0] < w[1]), "writes out of order");
    assert!(write.last().is_none_or(|&i| i < bufs.len()));
    let out: Vec<Vec<u8>> = write.iter().flat_map(|&i| gso_segments(&bufs[i])).collect();
    // Runts (no IP byte after the headroom) are not written at all.
    let went_in: Vec<&Vec<u8>> = packets.iter().filter(|p| !p.is_empty()).collect();
    assert_eq!(out.len(), went_in.len(), "packets lost or made up");
    // Per flow (and for everything that is no flow), the same packets in order.
    let mut keys: Vec<Option<Vec<u8>>> = went_in.iter().map(|p| flow_of(p)).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let want = went_in.iter().filter(|p| flow_of(p) == key);
        let got = out.iter().filter(|p| flow_of(p) == key);
        for (k, (g, w)) in got.zip(want).enumerate() {
            assert!(same(g, w), "flow {key:?} packet {k}: {g:?} != {w:?}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
