//! Traffic for the geoedge-to-geoedge tests: echo backends inside POP
//! namespaces, clients through the edge with a PROXY header, and streams
//! that check every byte echoed; threads are joined when dropped.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lab::eventually;
use super::support::*;

/// A backend thread (in a namespace, or in ours): each connection starts
/// with geoedge's PROXY v1 header; it answers `backend=ID client=IP\n` and
/// echoes until end-of-file. Stopped (threads joined) when dropped.
pub(crate) struct NsBackend {
    pub(crate) addr: SocketAddr,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) thread: Option<JoinHandle<()>>,
    pub(crate) accepted: Arc<AtomicUsize>,
}

impl NsBackend {
    pub(crate) fn start(ns: Option<&str>, bind: SocketAddr, id: &'static str) -> NsBackend {
        let netns = ns.map(|ns| std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = std::thread::spawn(move || {
            if let Some(netns) = netns {
                // SAFETY: setns on a namespace file we hold open; affects this thread only.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            }
            let listener = TcpListener::bind(bind).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(listener.local_addr().unwrap()).unwrap();
            let mut conns = Vec::new();
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        accepted2.fetch_add(1, Ordering::SeqCst);
                        let stop = Arc::clone(&stop2);
                        let handle = s.try_clone().ok();
                        let thread = std::thread::spawn(move || {
                            let _ = serve_echo(s, id, &stop);
                        });
                        conns.push((handle, thread));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // A write blocked towards a vanished peer wakes up on shutdown.
            for (handle, thread) in conns {
                if let Some(h) = handle {
                    let _ = h.shutdown(Shutdown::Both);
                }
                let _ = thread.join();
            }
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("backend listening");
        NsBackend {
            addr,
            stop,
            thread: Some(thread),
            accepted,
        }
    }
}

impl Drop for NsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn serve_echo(s: TcpStream, id: &str, stop: &AtomicBool) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = s.try_clone()?;
    let mut reader = BufReader::new(s);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let client = header
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .to_owned();
    writer.write_all(format!("backend={id} client={client}\n").as_bytes())?;
    reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = vec![0u8; 65536];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => {
                let _ = writer.shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(n) => writer.write_all(&buf[..n])?,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A client connection through the edge claiming `claim` in a PROXY v1 header.
pub(crate) struct Client {
    pub(crate) writer: TcpStream,
    pub(crate) reader: BufReader<TcpStream>,
    /// Pattern position of the next byte to send.
    pub(crate) offset: u64,
}

impl Client {
    pub(crate) fn connect(edge: SocketAddr, claim: &str) -> Client {
        let writer = TcpStream::connect(edge).unwrap();
        let mut c = Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
            offset: 0,
        };
        c.writer
            .write_all(format!("PROXY TCP4 {claim} 127.0.0.1 40000 {}\r\n", edge.port()).as_bytes())
            .unwrap();
        c
    }

    /// The greeting's backend id and client address (`None`: closed or
    /// nothing within `within`).
    pub(crate) fn greeting(&mut self, within: Duration) -> Option<(String, String)> {
        self.writer.set_read_timeout(Some(within)).unwrap();
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
        };
        Some((field("backend=")?, field("client=")?))
    }

    /// Sends `n` pattern bytes (in chunks of at most 32 KiB) and checks that
    /// the same come back; errors on a mismatch, an error or 30 s of silence.
    pub(crate) fn echo(&mut self, n: usize) -> std::io::Result<()> {
        self.writer
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut left = n;
        let mut out = vec![0u8; 32 << 10];
        let mut back = vec![0u8; 32 << 10];
        while left > 0 {
            let k = left.min(out.len());
            for (j, b) in out[..k].iter_mut().enumerate() {
                *b = pattern(self.offset + j as u64);
            }
            self.writer.write_all(&out[..k])?;
            self.reader.read_exact(&mut back[..k])?;
            if back[..k] != out[..k] {
                let at = back[..k].iter().zip(&out[..k]).position(|(a, b)| a != b);
                return Err(std::io::Error::other(format!(
                    "echo mismatch at byte {} of the stream",
                    self.offset + at.unwrap_or(0) as u64
                )));
            }
            self.offset += k as u64;
            left -= k;
        }
        Ok(())
    }

    /// Half-closes and expects end-of-file back.
    pub(crate) fn finish(mut self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "unexpected bytes after the echo");
    }
}

/// A client streaming through the edge in its own thread: 16 KiB echoed at
/// a time, every byte checked, until stopped.
pub(crate) struct Stream {
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) verified: Arc<AtomicU64>,
    pub(crate) thread: Option<JoinHandle<Result<(u64, Duration), String>>>,
}

impl Stream {
    pub(crate) fn start(mut client: Client) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let verified = Arc::new(AtomicU64::new(0));
        let (s, v) = (Arc::clone(&stop), Arc::clone(&verified));
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            let mut max_gap = Duration::ZERO;
            while !s.load(Ordering::SeqCst) {
                client
                    .echo(16 << 10)
                    .map_err(|e| format!("after {} bytes: {e}", client.offset))?;
                v.store(client.offset, Ordering::SeqCst);
                max_gap = max_gap.max(last.elapsed());
                last = Instant::now();
                std::thread::sleep(Duration::from_millis(2));
            }
            let total = client.offset;
            client.finish();
            Ok((total, max_gap))
        });
        Stream {
            stop,
            verified,
            thread: Some(thread),
        }
    }

    /// Waits until at least `bytes` more are verified (within 20 s).
    pub(crate) fn progresses(&self, what: &str, bytes: u64) {
        let from = self.verified.load(Ordering::SeqCst);
        let finished = || self.thread.as_ref().is_some_and(|t| t.is_finished());
        eventually(
            &format!("the stream to POP A moves on ({what})"),
            Duration::from_secs(20),
            || {
                assert!(!finished(), "the stream to POP A ended ({what})");
                self.verified.load(Ordering::SeqCst) >= from + bytes
            },
        );
    }

    /// Stops it; the bytes verified and the longest wait for an echo.
    pub(crate) fn stop(mut self) -> (u64, Duration) {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take().unwrap().join().unwrap() {
            Ok(r) => r,
            Err(e) => panic!("the stream to POP A broke: {e}"),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
