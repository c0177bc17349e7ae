//! Traffic for the geoedge-to-geoedge tests: clients through the edge with
//! a PROXY header, and streams that check every byte echoed (against the
//! kit's echo backends inside POP namespaces); threads are joined when
//! dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::lab::eventually;
use super::support::*;

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
