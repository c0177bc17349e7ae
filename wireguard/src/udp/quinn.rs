//! The system calls of the batched UDP socket through quinn-udp (feature
//! `quinn-udp`): the crate alternative to the hand-written `recvmmsg`,
//! `sendmmsg` and control messages of the parent module, measured against
//! them in docs/benchmarks.md.
//!
//! quinn-udp receives with one `recvmmsg` of up to 32 buffers (UDP GRO on
//! where the kernel has it) and sends one `sendmsg` per message, each
//! message a run of equal-sized datagrams with a UDP GSO control message;
//! it drops GSO for good when the kernel refuses it. The batches and their
//! grouping are the parent module's.

#![forbid(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::sync::atomic::{AtomicBool, Ordering};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::Socket;

use super::{on_wire, RecvBatch, SendBatch, Udp, RECV_BATCH};

/// Hands the bound socket to quinn-udp, which makes it non-blocking, turns
/// on UDP GRO and finds out whether the kernel offers UDP GSO.
pub(super) fn open(socket: Socket, v6: bool) -> io::Result<Udp> {
    let state = UdpSocketState::new((&socket).into())?;
    let gso = state.max_gso_segments() > 1;
    let gro = state.gro_segments() > 1;
    Ok(Udp {
        socket: tokio::net::UdpSocket::from_std(socket.into())?,
        v6,
        gso: AtomicBool::new(gso),
        gro,
        state,
    })
}

/// One `recvmmsg` through quinn-udp into the batch's buffers.
pub(super) fn recv(batch: &mut RecvBatch, udp: &Udp) -> io::Result<usize> {
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut slices = batch.bufs.each_mut().map(|b| IoSliceMut::new(b));
    let n = match udp.state.recv((&udp.socket).into(), &mut slices, &mut meta) {
        Ok(n) => n,
        Err(e) => {
            batch.count = 0;
            return Err(e);
        }
    };
    for (i, m) in meta.iter().enumerate().take(n) {
        let len = m.len.min(super::MAX_DATAGRAM);
        batch.lens[i] = len;
        batch.segments[i] = if m.stride == 0 { len } else { m.stride }.max(1);
        batch.addrs[i] = Some(m.addr);
    }
    batch.count = n;
    Ok(n)
}

/// Sends what is left of the batch, one `sendmsg` per message, as the
/// parent's `sendmmsg` does: `WouldBlock` when the socket is full, a
/// refused destination skipped and counted in `failed`, GSO dropped for
/// good (and the rest regrouped) when the kernel refuses it.
pub(super) fn send(batch: &mut SendBatch, udp: &Udp, failed: &mut u64) -> io::Result<()> {
    while batch.sent < batch.groups.len() {
        let g = batch.groups[batch.sent];
        let first = batch.items[g.first];
        let transmit = Transmit {
            destination: on_wire(first.to, udp.v6),
            ecn: None,
            contents: &batch.buf[first.start..first.start + g.bytes],
            segment_size: (g.count > 1).then_some(g.segment),
            src_ip: None,
        };
        let Err(err) = udp.state.try_send((&udp.socket).into(), &transmit) else {
            batch.sent += 1;
            continue;
        };
        match err.raw_os_error() {
            _ if err.kind() == io::ErrorKind::WouldBlock => return Err(err),
            Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE) if g.count > 1 => {
                if udp.gso.swap(false, Ordering::Relaxed) {
                    tracing::info!(error = %err, "wireguard: UDP GSO refused; sending datagrams one by one");
                }
                batch.regroup_from(g.first);
            }
            _ => {
                tracing::debug!(error = %err, "wireguard: UDP send failed");
                *failed += g.count as u64;
                batch.sent += 1;
            }
        }
    }
    Ok(())
}
