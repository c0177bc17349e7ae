//! Batched UDP receive (feature `io`, Linux): up to [`BATCH`] datagrams per
//! `recvmmsg` call instead of one syscall per datagram.
//!
//! The call is non-blocking (`MSG_DONTWAIT`) and meant to run inside
//! tokio's `async_io`, which waits for readiness and clears it on
//! `WouldBlock`.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams per syscall.
pub(crate) const BATCH: usize = 32;

/// The largest UDP payload, plus room to spare.
pub(crate) const MAX_DATAGRAM: usize = 65_536;

/// Buffers for one `recvmmsg`.
pub(crate) struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
    addrs: [Option<SocketAddr>; BATCH],
}

impl RecvBatch {
    /// `BATCH` buffers of [`MAX_DATAGRAM`] bytes.
    pub(crate) fn new() -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            lens: [0; BATCH],
            addrs: [None; BATCH],
        }
    }

    /// Receives up to `BATCH` datagrams from `fd` without blocking; returns
    /// how many (`WouldBlock` when none is waiting).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
        // SAFETY: as above.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, buf) in self.bufs.iter_mut().enumerate() {
            iovs[i].iov_base = buf.as_mut_ptr().cast();
            iovs[i].iov_len = buf.len();
            hdrs[i].msg_hdr.msg_name = std::ptr::addr_of_mut!(names[i]).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = std::ptr::addr_of_mut!(iovs[i]);
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer, iovec and address
        // slot of the sizes given, all outliving the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(MAX_DATAGRAM);
            let mut storage = SockAddrStorage::zeroed();
            // SAFETY: the storage is a sockaddr_storage, and the kernel filled
            // `names[i]` with `msg_namelen` bytes of an address.
            let addr = unsafe {
                *storage.view_as::<libc::sockaddr_storage>() = names[i];
                SockAddr::new(storage, hdrs[i].msg_hdr.msg_namelen)
            };
            self.addrs[i] = addr.as_socket();
        }
        Ok(n)
    }

    /// The `i`th datagram received by the last [`RecvBatch::recv`] and its
    /// sender (`None` for a sender that is not an IP address).
    pub(crate) fn get(&self, i: usize) -> (Option<SocketAddr>, &[u8]) {
        (self.addrs[i], &self.bufs[i][..self.lens[i]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_comes_in_in_order_with_senders() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        for p in &payloads {
            a.send_to(p, to).unwrap();
        }
        let mut batch = RecvBatch::new();
        let mut got = Vec::new();
        while got.len() < payloads.len() {
            match batch.recv(b.as_raw_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        let (from, d) = batch.get(i);
                        assert_eq!(from, Some(a.local_addr().unwrap()));
                        got.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads);
        let mut empty = RecvBatch::new();
        assert_eq!(
            empty.recv(a.as_raw_fd()).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
