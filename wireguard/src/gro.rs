//! TCP receive coalescing (GRO) for a TUN with offload, without IO and
//! without allocating.
//!
//! Decrypted packets are written to a TUN opened with `IFF_VNET_HDR`: each
//! write starts with a virtio-net header. [`Coalescer::coalesce`] takes a
//! batch of packets, each after [`VNET_HDR_LEN`] bytes of headroom, and
//! appends the payload of every TCP segment that continues a flow onto the
//! first segment of that flow in the batch, so that the kernel takes one
//! super-packet (marked `GSO_TCPV4`/`GSO_TCPV6` with a partial checksum)
//! instead of dozens of packets. Every other packet gets an empty header
//! and goes in unchanged.
//!
//! A segment joins a flow's super-packet only when the kernel's own GRO
//! would merge it: same addresses and ports, IPv4 without options or
//! fragments and with a valid header checksum (and the same TTL, TOS and
//! DF) or IPv6 without extension headers (and the same traffic class and
//! hop limit), ACK set with at most PSH besides, the same acknowledgement
//! number, window and TCP options, the next sequence number, a payload no
//! longer than the first segment's, and a valid TCP checksum (a corrupt
//! segment goes in alone, for the kernel to drop). A shorter segment or
//! one with PSH closes the super-packet; a packet that cannot merge closes
//! every super-packet before it. Super-packets stay within 64 KiB and the
//! buffers' capacity.

/// The virtio-net header written before each packet.
pub const VNET_HDR_LEN: usize = 10;

const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_TCPV4: u8 = 1;
const VNET_GSO_TCPV6: u8 = 4;

#[cfg(test)]
const TCP_FIN: u8 = 0x01;
#[cfg(test)]
const TCP_SYN: u8 = 0x02;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// Flows tracked at once in a batch.
const FLOWS: usize = 16;

/// The largest IP packet a super-packet may grow to.
const MAX_SUPER: usize = 65_535;

/// What identifies a flow and must match for segments to merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    v6: bool,
    /// Source and destination addresses (IPv4 in the first 8 bytes).
    addrs: [u8; 32],
    ports: [u8; 4],
}

/// A super-packet under construction.
#[derive(Debug, Clone, Copy)]
struct Flow {
    key: Key,
    /// The packet buffer it grows in.
    head: usize,
    /// IP header length, TCP header length.
    ip_len: usize,
    tcp_len: usize,
    /// The payload size of its first segment (the GSO size).
    segment: usize,
    /// Payload bytes so far.
    payload: usize,
    /// Segments so far.
    count: usize,
    /// The next sequence number expected.
    next_seq: u32,
    /// The IPv4 ID expected next.
    next_id: u16,
}

/// A parsed TCP segment that may be merged.
struct Segment {
    key: Key,
    ip_len: usize,
    tcp_len: usize,
    payload: usize,
    seq: u32,
    flags: u8,
    id: u16,
    df: bool,
}

/// Merges TCP segments of a batch into super-packets; holds only a small
/// flow table, reused from batch to batch.
#[derive(Debug, Default)]
pub struct Coalescer {
    flows: Vec<Flow>,
}

impl Coalescer {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self {
            flows: Vec::with_capacity(FLOWS),
        }
    }

    /// Coalesces `packets` (each a virtio header's room followed by an IP
    /// packet) in place and pushes onto `write` the indices of the buffers
    /// to write to the TUN, in order; every one of them starts with its
    /// virtio header. A merged segment's buffer is not written.
    pub fn coalesce(&mut self, packets: &mut [Vec<u8>], write: &mut Vec<usize>) {
        self.flows.clear();
        write.clear();
        for i in 0..packets.len() {
            if packets[i].len() <= VNET_HDR_LEN {
                continue;
            }
            let seg = parse(&packets[i][VNET_HDR_LEN..]);
            let Some(seg) = seg else {
                // It may belong to a flow in the table (a FIN, a corrupt
                // segment): what came before it goes first, whole.
                for done in self.flows.drain(..) {
                    finish(&mut packets[done.head], &done);
                }
                packets[i][..VNET_HDR_LEN].fill(0);
                write.push(i);
                continue;
            };
            if let Some(f) = self.flows.iter().position(|f| f.key == seg.key) {
                if self.try_append(packets, f, i, &seg) {
                    continue;
                }
                // This segment does not continue the flow: the flow's
                // super-packet is done, and this one may start another.
                let done = self.flows.swap_remove(f);
                finish(&mut packets[done.head], &done);
            }
            packets[i][..VNET_HDR_LEN].fill(0);
            write.push(i);
            let closes = seg.flags & TCP_PSH != 0 || seg.payload == 0;
            if !closes {
                if self.flows.len() == FLOWS {
                    let done = self.flows.swap_remove(0);
                    finish(&mut packets[done.head], &done);
                }
                self.flows.push(Flow {
                    key: seg.key,
                    head: i,
                    ip_len: seg.ip_len,
                    tcp_len: seg.tcp_len,
                    segment: seg.payload,
                    payload: seg.payload,
                    count: 1,
                    next_seq: seg.seq.wrapping_add(seg.payload as u32),
                    next_id: seg.id.wrapping_add(1),
                });
            }
        }
        for done in self.flows.drain(..) {
            finish(&mut packets[done.head], &done);
        }
    }

    /// Appends segment `i` to flow `f` if it continues it; a segment that
    /// ends the super-packet (shorter, PSH, or full) removes the flow after
    /// finishing it.
    fn try_append(&mut self, packets: &mut [Vec<u8>], f: usize, i: usize, seg: &Segment) -> bool {
        let flow = self.flows[f];
        let head_len = VNET_HDR_LEN + flow.ip_len + flow.tcp_len;
        if seg.payload == 0
            || seg.payload > flow.segment
            || seg.seq != flow.next_seq
            || seg.ip_len != flow.ip_len
            || seg.tcp_len != flow.tcp_len
            || flow.ip_len + flow.tcp_len + flow.payload + seg.payload > MAX_SUPER
            || (!flow.key.v6 && !seg.df && seg.id != flow.next_id)
        {
            return false;
        }
        let (before, after) = packets.split_at_mut(i);
        let head = &mut before[flow.head];
        let this = &after[0];
        if head.len() + seg.payload > head.capacity()
            || !same_headers(&head[VNET_HDR_LEN..], &this[VNET_HDR_LEN..], &flow)
        {
            return false;
        }
        let start = VNET_HDR_LEN + seg.ip_len + seg.tcp_len;
        head.extend_from_slice(&this[start..start + seg.payload]);
        debug_assert!(head.len() >= head_len);
        // PSH travels to the super-packet.
        let flags_at = VNET_HDR_LEN + flow.ip_len + 13;
        head[flags_at] |= seg.flags & TCP_PSH;
        let flow = &mut self.flows[f];
        flow.payload += seg.payload;
        flow.count += 1;
        flow.next_seq = seg.seq.wrapping_add(seg.payload as u32);
        flow.next_id = seg.id.wrapping_add(1);
        if seg.payload < flow.segment || seg.flags & TCP_PSH != 0 {
            let done = self.flows.swap_remove(f);
            finish(&mut packets[done.head], &done);
        }
        true
    }
}

/// The fields outside the flow key that must match for a merge: IPv4 TOS,
/// TTL and DF; IPv6 traffic class and hop limit; TCP acknowledgement
/// number, flags, window and options.
fn same_headers(head: &[u8], this: &[u8], flow: &Flow) -> bool {
    let ip_same = if flow.key.v6 {
        // Version, traffic class and flow label; hop limit.
        head[..4] == this[..4] && head[7] == this[7]
    } else {
        // TOS; DF (flags); TTL.
        head[1] == this[1] && (head[6] & 0x40) == (this[6] & 0x40) && head[8] == this[8]
    };
    let t = flow.ip_len;
    ip_same
        // Acknowledgement number.
        && head[t + 8..t + 12] == this[t + 8..t + 12]
        // Flags apart from PSH.
        && (head[t + 13] & !TCP_PSH) == (this[t + 13] & !TCP_PSH)
        // Window.
        && head[t + 14..t + 16] == this[t + 14..t + 16]
        // Options.
        && head[t + 20..t + flow.tcp_len] == this[t + 20..t + flow.tcp_len]
}

/// Writes the virtio header and fixes the IP header of a finished flow.
fn finish(buf: &mut [u8], flow: &Flow) {
    let (hdr, packet) = buf.split_at_mut(VNET_HDR_LEN);
    hdr.fill(0);
    if flow.count < 2 {
        return;
    }
    let total = flow.ip_len + flow.tcp_len + flow.payload;
    if flow.key.v6 {
        let payload_len = (total - 40) as u16;
        packet[4..6].copy_from_slice(&payload_len.to_be_bytes());
    } else {
        packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        packet[10..12].fill(0);
        let sum = !fold(sum(&packet[..flow.ip_len], 0));
        packet[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    // A partial checksum: the pseudo-header's sum, for the kernel to finish
    // over the TCP header and payload.
    let tcp_total = flow.tcp_len + flow.payload;
    let pseudo = pseudo_header_sum(packet, flow.key.v6, tcp_total);
    let csum_at = flow.ip_len + 16;
    packet[csum_at..csum_at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    hdr[0] = VNET_F_NEEDS_CSUM;
    hdr[1] = if flow.key.v6 {
        VNET_GSO_TCPV6
    } else {
        VNET_GSO_TCPV4
    };
    // hdr_len, gso_size, csum_start, csum_offset: little-endian (the
    // virtio header of a TUN is in the host's order; x86 and arm64 are
    // little-endian).
    let put = |hdr: &mut [u8], at: usize, v: usize| {
        hdr[at..at + 2].copy_from_slice(&(v as u16).to_ne_bytes());
    };
    put(hdr, 2, flow.ip_len + flow.tcp_len);
    put(hdr, 4, flow.segment);
    put(hdr, 6, flow.ip_len);
    put(hdr, 8, 16);
}

/// Parses an IP packet as a TCP segment that may merge; `None` for anything
/// else (other protocols, IP options or fragments, extension headers,
/// flags beyond ACK and PSH, a bad IPv4 header or TCP checksum).
fn parse(p: &[u8]) -> Option<Segment> {
    let version = p.first()? >> 4;
    let (v6, ip_len, total, id, df) = match version {
        4 => {
            if p.len() < 20 || p[0] & 0x0f != 5 || p[9] != 6 {
                return None;
            }
            // A bad header checksum goes in alone, for the kernel to drop:
            // merged, it would be rewritten into a valid one.
            if fold(sum(&p[..20], 0)) != 0xffff {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let frag = u16::from_be_bytes([p[6], p[7]]);
            // MF or a fragment offset: a fragment.
            if frag & 0x3fff != 0 {
                return None;
            }
            (
                false,
                20,
                total,
                u16::from_be_bytes([p[4], p[5]]),
                frag & 0x4000 != 0,
            )
        }
        6 => {
            if p.len() < 40 || p[6] != 6 {
                return None;
            }
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            (true, 40, total, 0, true)
        }
        _ => return None,
    };
    if total != p.len() || total < ip_len + 20 {
        return None;
    }
    let t = ip_len;
    let tcp_len = usize::from(p[t + 12] >> 4) * 4;
    if tcp_len < 20 || ip_len + tcp_len > total {
        return None;
    }
    let flags = p[t + 13];
    if flags & TCP_ACK == 0 || flags & !(TCP_ACK | TCP_PSH) != 0 {
        return None;
    }
    let mut key = Key {
        v6,
        addrs: [0; 32],
        ports: [0; 4],
    };
    if v6 {
        key.addrs.copy_from_slice(&p[8..40]);
    } else {
        key.addrs[..8].copy_from_slice(&p[12..20]);
    }
    key.ports.copy_from_slice(&p[t..t + 4]);
    let tcp_total = total - ip_len;
    if fold(sum(&p[t..total], pseudo_header_sum(p, v6, tcp_total))) != 0xffff {
        return None;
    }
    Some(Segment {
        key,
        ip_len,
        tcp_len,
        payload: total - ip_len - tcp_len,
        seq: u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]]),
        flags,
        id,
        df,
    })
}

/// The TCP pseudo-header's sum (addresses, protocol, TCP length), unfolded.
fn pseudo_header_sum(p: &[u8], v6: bool, tcp_len: usize) -> u64 {
    let addrs = if v6 { &p[8..40] } else { &p[12..20] };
    sum(addrs, 6 + tcp_len as u64)
}

/// The one's-complement sum of `data` as big-endian 16-bit words, added to
/// `initial`; unfolded.
fn sum(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u64::from(u16::from_be_bytes([rest[i], rest[i + 1]]));
        i += 2;
    }
    if i < rest.len() {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a sum into 16 bits (not complemented).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

#[cfg(test)]
mod tests;
