//! Backends and clients for the proxy's traffic: [`Backend`] (in-process,
//! tokio, records what it sees) and [`NsBackend`] (a thread, optionally in
//! a network namespace), both greeting with `backend=ID client=IP` after
//! geoedge's PROXY v1 header; PROXY v1 clients ([`connect_as`],
//! [`greeting`]); and the test byte pattern both ends check.

use std::io::{BufRead, BufReader as StdBufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::netns::spawn_in;

/// What an in-process backend saw.
#[derive(Default)]
pub struct Seen {
    /// Connections accepted.
    pub accepted: AtomicUsize,
    /// Connections open now.
    pub open: AtomicUsize,
    /// Most connections open at once.
    pub max_open: AtomicUsize,
}

/// An in-process backend. Each connection starts with geoedge's PROXY v1
/// header; the backend answers `backend=ID client=IP\n`, then serves the
/// client's command line:
/// - `echo\n`: echoes until end-of-file, then closes;
/// - `sink N\n`: reads until end-of-file and checks that exactly N pattern
///   bytes came, then answers `ok\n` or `bad\n` and closes;
/// - `source N\n`: sends N pattern bytes, half-closes, then reads until
///   end-of-file and records how many pattern bytes came in `received`;
/// - `hold\n`: keeps the connection open until the client closes it.
pub struct Backend {
    /// Its address.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Seen>,
    /// Bytes received in `source` mode, by connection, once complete.
    pub received: Arc<Mutex<Vec<u64>>>,
}

/// The byte at position `i` of the test pattern.
pub fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

impl Backend {
    /// Starts a backend with this id on 127.0.0.1.
    pub async fn start(id: &'static str) -> Backend {
        Backend::start_on(id, SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a backend with this id on `addr` (a port that was free, say).
    pub async fn start_on(id: &'static str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (Arc::clone(&seen), Arc::clone(&received));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let now = s.open.fetch_add(1, Ordering::SeqCst) + 1;
                s.max_open.fetch_max(now, Ordering::SeqCst);
                let (s, r) = (Arc::clone(&s), Arc::clone(&r));
                tokio::spawn(async move {
                    let _ = serve(stream, id, &r).await;
                    s.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            addr,
            seen,
            received,
        }
    }
}

async fn serve(stream: TcpStream, id: &str, received: &Mutex<Vec<u64>>) -> std::io::Result<()> {
    let mut reader = TokioBufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).await?;
    let client = header
        .split_whitespace()
        .nth(2)
        .unwrap_or("unknown")
        .to_owned();
    reader
        .get_mut()
        .write_all(format!("backend={id} client={client}\n").as_bytes())
        .await?;
    let mut command = String::new();
    if reader.read_line(&mut command).await? == 0 {
        return Ok(());
    }
    let mut words = command.split_whitespace();
    let verb = words.next().unwrap_or("");
    let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    match verb {
        "echo" => {
            let mut buf = vec![0u8; 16384];
            loop {
                let k = reader.read(&mut buf).await?;
                if k == 0 {
                    reader.get_mut().shutdown().await?;
                    return Ok(());
                }
                reader.get_mut().write_all(&buf[..k]).await?;
            }
        }
        "sink" => {
            let got = read_pattern(&mut reader).await?;
            let answer: &[u8] = if got == Some(n) { b"ok\n" } else { b"bad\n" };
            reader.get_mut().write_all(answer).await?;
            reader.get_mut().shutdown().await
        }
        "source" => {
            write_pattern(reader.get_mut(), n).await?;
            reader.get_mut().shutdown().await?;
            let got = read_pattern(&mut reader).await?;
            received.lock().unwrap().push(got.unwrap_or(u64::MAX));
            Ok(())
        }
        _ => {
            let mut sink = Vec::new();
            reader.read_to_end(&mut sink).await.map(|_| ())
        }
    }
}

/// Writes `n` pattern bytes.
pub async fn write_pattern<W: AsyncWriteExt + Unpin>(w: &mut W, n: u64) -> std::io::Result<()> {
    let mut i = 0u64;
    let mut buf = vec![0u8; 65536];
    while i < n {
        let k = (n - i).min(buf.len() as u64) as usize;
        for (j, b) in buf[..k].iter_mut().enumerate() {
            *b = pattern(i + j as u64);
        }
        w.write_all(&buf[..k]).await?;
        i += k as u64;
    }
    Ok(())
}

/// Reads to end-of-file; the count if every byte matched the pattern.
pub async fn read_pattern<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Option<u64>> {
    let mut i = 0u64;
    let mut ok = true;
    let mut buf = vec![0u8; 65536];
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            return Ok(ok.then_some(i));
        }
        for &b in &buf[..k] {
            ok &= b == pattern(i);
            i += 1;
        }
    }
}

/// A client connection through the edge, claiming `claim` in a PROXY v1 header.
pub async fn connect_as(edge: SocketAddr, claim: IpAddr) -> TokioBufReader<TcpStream> {
    let mut s = TcpStream::connect(edge).await.unwrap();
    let family = if claim.is_ipv4() { "TCP4" } else { "TCP6" };
    let dst = if claim.is_ipv4() { "127.0.0.1" } else { "::1" };
    let header = format!("PROXY {family} {claim} {dst} 40000 {}\r\n", edge.port());
    s.write_all(header.as_bytes()).await.unwrap();
    TokioBufReader::new(s)
}

/// The backend id in a greeting line, or `None` when the edge closed the connection.
pub async fn greeting(c: &mut TokioBufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(10), c.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("backend="))
            .map(str::to_owned),
        _ => None,
    }
}

/// A backend thread (in a network namespace, or in this process's own):
/// each connection starts with geoedge's PROXY v1 header; it answers
/// `backend=ID client=IP\n` and echoes until end-of-file. Stopped (threads
/// joined) when dropped.
pub struct NsBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Set to stop it.
    pub stop: Arc<AtomicBool>,
    /// The accepting thread.
    pub thread: Option<JoinHandle<()>>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
}

impl NsBackend {
    /// Listens on `bind` inside namespace `ns` (`None`: this process's).
    pub fn start(ns: Option<&str>, bind: SocketAddr, id: &'static str) -> NsBackend {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop2, accepted2) = (Arc::clone(&stop), Arc::clone(&accepted));
        let thread = spawn_in(ns, move || {
            let listener = std::net::TcpListener::bind(bind).unwrap();
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

/// Serves one connection of an [`NsBackend`]: reads the PROXY v1 header,
/// greets, echoes until end-of-file (then half-closes) or until `stop`.
pub fn serve_echo(s: std::net::TcpStream, id: &str, stop: &AtomicBool) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = s.try_clone()?;
    let mut reader = StdBufReader::new(s);
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

/// A loopback address where every connection is refused for as long as
/// this lives: a socket bound to it that never listens holds the port, so
/// no other socket (the edge's own listeners on port 0 included) is given
/// it. A port from [`free_port`] can be: a backend meant to refuse could
/// then be one of the edge's listeners.
#[derive(Debug)]
pub struct Refusing {
    /// The bound socket that holds the port.
    _held: socket2::Socket,
    /// Its address.
    pub addr: SocketAddr,
}

impl Refusing {
    /// Binds a fresh port on 127.0.0.1 (without `SO_REUSEADDR`, so nothing
    /// else can bind it meanwhile).
    pub fn new() -> Refusing {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a TCP socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("binding a loopback port");
        let addr = socket
            .local_addr()
            .expect("its address")
            .as_socket()
            .expect("an IP address");
        Refusing {
            _held: socket,
            addr,
        }
    }
}

impl Default for Refusing {
    fn default() -> Self {
        Refusing::new()
    }
}

/// A loopback port that was free a moment ago (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
