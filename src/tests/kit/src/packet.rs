//! TCP/IP packets built by hand, for the WireGuard datapath's tests and
//! fuzz targets: the Internet checksum ([`sum`], [`fold`],
//! [`pseudo_header_sum`]), TCP segments with valid checksums
//! ([`tcp_segment`]), and a reference of what the kernel makes of a
//! virtio-net GSO super-packet ([`gso_segments`]).
//!
//! Independent of the code under test (no dependency on any geoedge crate),
//! so it can judge it.

/// The virtio-net header before each packet on a TUN with offloads.
pub const VNET_HDR_LEN: usize = 10;
/// `flags`: the checksum is partial (the kernel completes it).
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: TCP over IPv4.
pub const VNET_GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const VNET_GSO_TCPV6: u8 = 4;
/// TCP flag PSH.
pub const TCP_PSH: u8 = 0x08;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// The one's-complement sum of `data` as 16-bit big-endian words (an odd
/// last byte padded with zero), added to `initial`, not yet folded.
pub fn sum(data: &[u8], initial: u64) -> u64 {
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

/// Folds a [`sum`] into 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The TCP pseudo-header's [`sum`] of IP packet `p` (IPv6 when `v6`) for a
/// TCP part of `tcp_len` bytes.
pub fn pseudo_header_sum(p: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    sum(addrs, 6 + tcp_len as u64)
}

/// A TCP segment's fields; [`tcp_segment`] fills in the rest.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    /// IPv6 (fd00::1 to fd00::2) rather than IPv4 (10.0.0.1 to 10.0.0.2).
    pub v6: bool,
    /// The source port (the destination is 80).
    pub src_port: u16,
    /// The sequence number (the acknowledgement is 7, the window 500).
    pub seq: u32,
    /// TCP flags.
    pub flags: u8,
    /// The IPv4 identification.
    pub id: u16,
    /// The IPv4 DF bit.
    pub dont_fragment: bool,
    /// The TTL or hop limit.
    pub ttl: u8,
    /// TCP options, a multiple of 4 bytes.
    pub options: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
}

impl Default for Segment<'_> {
    fn default() -> Self {
        Segment {
            v6: false,
            src_port: 5000,
            seq: 0,
            flags: TCP_ACK,
            id: 0,
            dont_fragment: true,
            ttl: 64,
            options: &[],
            payload: &[],
        }
    }
}

/// Builds the segment `s` with valid IP and TCP checksums.
pub fn tcp_segment(s: &Segment<'_>) -> Vec<u8> {
    let ip_len = if s.v6 { 40 } else { 20 };
    let tcp_len = 20 + s.options.len();
    let total = ip_len + tcp_len + s.payload.len();
    let mut p = vec![0u8; total];
    if s.v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = s.ttl;
        p[8] = 0xfd;
        p[23] = 1;
        p[24] = 0xfd;
        p[39] = 2;
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&s.id.to_be_bytes());
        p[6] = if s.dont_fragment { 0x40 } else { 0 };
        p[8] = s.ttl;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = !fold(sum(&p[..20], 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = ip_len;
    p[t..t + 2].copy_from_slice(&s.src_port.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&s.seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
    p[t + 12] = ((tcp_len / 4) as u8) << 4;
    p[t + 13] = s.flags;
    p[t + 14..t + 16].copy_from_slice(&500u16.to_be_bytes());
    p[t + 20..t + tcp_len].copy_from_slice(s.options);
    p[t + tcp_len..].copy_from_slice(s.payload);
    let c = !fold(sum(&p[t..], pseudo_header_sum(&p, s.v6, total - ip_len)));
    p[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    p
}

/// What the kernel makes of a buffer written to a TUN with offloads
/// (`VNET_HDR_LEN` header bytes, then the packet): the packet itself when
/// the header asks for no segmentation (it must then be all zeroes), or the
/// segments of a GSO super-packet: headers copied from the first, sequence
/// numbers, IPv4 IDs and lengths advanced, PSH on the last only, checksums
/// computed. Panics on a header no sane writer makes.
pub fn gso_segments(buf: &[u8]) -> Vec<Vec<u8>> {
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
            let c = !fold(sum(&s[t..], pseudo_header_sum(&s, v6, total - t)));
            s[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_segment_checks_out_and_a_super_packet_comes_apart() {
        for v6 in [false, true] {
            let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let p = tcp_segment(&Segment {
                v6,
                seq: 1000,
                payload: &payload,
                ..Segment::default()
            });
            let ip_len = if v6 { 40 } else { 20 };
            if !v6 {
                assert_eq!(fold(sum(&p[..20], 0)), 0xffff);
            }
            let tcp = p.len() - ip_len;
            assert_eq!(
                fold(sum(&p[ip_len..], pseudo_header_sum(&p, v6, tcp))),
                0xffff
            );
            // The same bytes as one super-packet of 1000-byte segments.
            let mut buf = vec![0u8; VNET_HDR_LEN];
            buf[0] = VNET_F_NEEDS_CSUM;
            buf[1] = if v6 { VNET_GSO_TCPV6 } else { VNET_GSO_TCPV4 };
            buf[2..4].copy_from_slice(&((ip_len + 20) as u16).to_ne_bytes());
            buf[4..6].copy_from_slice(&1000u16.to_ne_bytes());
            buf.extend_from_slice(&p);
            let segs = gso_segments(&buf);
            assert_eq!(segs.len(), 3);
            for (k, s) in segs.iter().enumerate() {
                let want = tcp_segment(&Segment {
                    v6,
                    seq: 1000 + 1000 * k as u32,
                    id: k as u16,
                    payload: &payload[1000 * k..1000 * (k + 1)],
                    ..Segment::default()
                });
                assert_eq!(*s, want, "segment {k}");
            }
        }
    }
}
