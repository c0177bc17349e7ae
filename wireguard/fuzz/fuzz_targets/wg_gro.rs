//! Fuzzes the GRO coalescer with batches of decrypted packets: TCP segments
//! of a few flows (IPv4 and IPv6, with valid checksums unless corrupted on
//! purpose, sequence numbers that mostly continue, assorted flags, options,
//! TTLs, IDs and DF bits) mixed with arbitrary bytes.
//!
//! Checked besides "never panics": the buffers to write are in order, each
//! once; and, as the kernel takes them apart again (a reference segmenter,
//! like the unit tests'), every packet comes out exactly as it went in, in
//! its flow's order, except for what GSO rewrites by design: the IPv4 ID
//! (and header checksum) of a segment merged with DF set.

#![no_main]

use arbitrary::{Result, Unstructured};
use geoedge_wireguard::gro::{Coalescer, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const VNET_GSO_TCPV6: u8 = 4;

fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo(p: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    sum(addrs, 6 + tcp_len as u64)
}

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
    let ip_len = if v6 { 40 } else { 20 };
    let tcp_len = 20 + options.len();
    let total = ip_len + tcp_len + len;
    let mut p = vec![0u8; total];
    let ttl = if u.ratio(1u8, 16)? { 63 } else { 64 };
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = ttl;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        let id = if u.ratio(1u8, 8)? {
            u.arbitrary()?
        } else {
            g.id
        };
        p[4..6].copy_from_slice(&id.to_be_bytes());
        p[6] = if u.ratio(1u8, 4)? { 0 } else { 0x40 };
        p[8] = ttl;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !fold(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = ip_len;
    p[t..t + 2].copy_from_slice(&(5000 + flow as u16).to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&g.seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
    p[t + 12] = ((tcp_len / 4) as u8) << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&500u16.to_be_bytes());
    p[t + 20..t + tcp_len].copy_from_slice(options);
    for (i, b) in p[t + tcp_len..].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(g.seq as u8);
    }
    let c = !fold(sum(&p[t..], pseudo(&p, v6, total - ip_len)));
    p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
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

/// What the kernel makes of a written buffer: the packet itself, or the
/// segments of a GSO super-packet.
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
    let get = |at: usize| usize::from(u16::from_ne_bytes([hdr[at], hdr[at + 1]]));
    let (head_len, gso) = (get(2), get(4));
    let ip_len = if v6 { 40 } else { 20 };
    assert!(gso > 0 && head_len <= p.len(), "a sane virtio header");
    let header = &p[..head_len];
    let seq0 = u32::from_be_bytes(header[ip_len + 4..ip_len + 8].try_into().unwrap());
    let id0 = u16::from_be_bytes([header[4], header[5]]);
    let chunks: Vec<&[u8]> = p[head_len..].chunks(gso).collect();
    assert!(chunks.len() >= 2, "a super-packet has segments");
    let mut offset = 0usize;
    chunks
        .iter()
        .enumerate()
        .map(|(k, chunk)| {
            let mut s = header.to_vec();
            s.extend_from_slice(chunk);
            let total = s.len();
            let t = ip_len;
            s[t + 4..t + 8].copy_from_slice(&seq0.wrapping_add(offset as u32).to_be_bytes());
            offset += chunk.len();
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
            let c = !fold(sum(&s[t..], pseudo(&s, v6, total - t)));
            s[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
            s
        })
        .collect()
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
    let out: Vec<Vec<u8>> = write.iter().flat_map(|&i| segments(&bufs[i])).collect();
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
