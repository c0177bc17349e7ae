//! Zero-copy relaying with splice(2) (Linux): bytes go from one socket into
//! a pipe and from the pipe into the other socket without being copied
//! through geoedge's memory.
//!
//! A pipe costs kernel memory (its pages), so pipes come from a bounded
//! per-thread pool and a relay direction holds one only while data moves;
//! an empty pipe goes back to the pool, a pipe that still holds bytes (the
//! connection failed mid-transfer) is closed. When the pool is exhausted or
//! the kernel refuses a pipe, the relay keeps copying.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What one splice moves at most (the pipe's default capacity: 16 pages).
pub const PIPE_SIZE: usize = 64 * 1024;

/// Pipes a thread keeps for reuse (each holds up to [`PIPE_SIZE`] of kernel
/// memory only while in use).
pub const POOL_CAP: usize = 64;

/// Pipes in use or pooled by a thread at most; past it, relays copy.
const THREAD_MAX: usize = 1024;

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { spare: Vec::new(), open: 0 }) };
}

struct Pool {
    spare: Vec<(OwnedFd, OwnedFd)>,
    /// Pipes of this thread open now (pooled or in use).
    open: usize,
}

/// A pipe from the thread's pool; `filled` bytes are in it.
pub struct Pipe {
    fds: Option<(OwnedFd, OwnedFd)>,
    /// Bytes spliced in and not yet out.
    pub filled: usize,
}

impl Pipe {
    /// A pipe from the pool, a new one, or `None` when this thread has
    /// [`THREAD_MAX`] open or the kernel refuses one.
    pub fn take() -> Option<Pipe> {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            let fds = match p.spare.pop() {
                Some(fds) => fds,
                None if p.open < THREAD_MAX => {
                    let fds = new_pipe().ok()?;
                    p.open += 1;
                    fds
                }
                None => return None,
            };
            Some(Pipe {
                fds: Some(fds),
                filled: 0,
            })
        })
    }

    /// Moves up to [`PIPE_SIZE`] bytes from socket `from` into the pipe;
    /// `Ok(0)` at end-of-file.
    pub fn fill_from(&mut self, from: impl AsFd) -> io::Result<usize> {
        let (_, w) = self.fds.as_ref().ok_or_else(closed)?;
        let n = splice(from.as_fd(), w.as_fd(), PIPE_SIZE - self.filled)?;
        self.filled += n;
        Ok(n)
    }

    /// Moves what the pipe holds into socket `to`; returns how much went.
    pub fn drain_to(&mut self, to: impl AsFd) -> io::Result<usize> {
        let (r, _) = self.fds.as_ref().ok_or_else(closed)?;
        let n = splice(r.as_fd(), to.as_fd(), self.filled)?;
        self.filled -= n;
        Ok(n)
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let Some(fds) = self.fds.take() else {
            return;
        };
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if self.filled == 0 && p.spare.len() < POOL_CAP {
                p.spare.push(fds);
            } else {
                // Bytes left behind, or enough spares: close it.
                p.open = p.open.saturating_sub(1);
                drop(fds);
            }
        });
    }
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two descriptors into the array of two it is
    // given and nothing else.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open, fresh and
    // owned by nothing else; each gets exactly one owner here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The error of a pipe whose descriptors are gone (only while it is dropped).
fn closed() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

/// One non-blocking splice of up to `len` bytes from `from` to `to`.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so they stay open (and are not
    // reused for another file) for the whole call; no offsets are passed
    // (null pointers: sockets and pipes have none), and the kernel writes
    // to no memory of ours.
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Pipes this thread has open (pooled or in use) and pooled.
#[cfg(test)]
pub fn thread_pipes() -> (usize, usize) {
    POOL.with(|p| (p.borrow().open, p.borrow().spare.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn bytes_go_socket_to_socket_through_a_pooled_pipe() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l2.local_addr().unwrap()).unwrap();
        let (mut d, _) = l2.accept().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = std::thread::spawn({
            let data = data.clone();
            move || {
                a.write_all(&data).unwrap();
            }
        });
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 200_000];
            d.read_exact(&mut got).unwrap();
            got
        });
        let mut pipe = Pipe::take().unwrap();
        let mut moved = 0;
        while moved < data.len() {
            match pipe.fill_from(&b) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
            while pipe.filled > 0 {
                match pipe.drain_to(&c) {
                    Ok(n) => moved += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
        }
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), data);
        drop(pipe);
        // The empty pipe went back to the pool and comes out again.
        let spare = POOL.with(|p| p.borrow().spare.len());
        assert_eq!(spare, 1);
        let again = Pipe::take().unwrap();
        assert_eq!(POOL.with(|p| p.borrow().spare.len()), 0);
        let mut dirty = again;
        dirty.filled = 1;
        drop(dirty);
        // A pipe with bytes left in it is closed, not pooled.
        assert_eq!(
            POOL.with(|p| (p.borrow().spare.len(), p.borrow().open)),
            (0, 0)
        );
    }

    #[test]
    fn a_pipe_without_descriptors_refuses_instead_of_splicing() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut pipe = Pipe {
            fds: None,
            filled: 0,
        };
        let err = pipe.fill_from(&a).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        pipe.filled = 1;
        let err = pipe.drain_to(&a).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert_eq!(pipe.filled, 1);
    }
}
