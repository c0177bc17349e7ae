//! geoedge to geoedge over its own WireGuard: the edge (`geoedge run
//! --wg-…`, in the root namespace) reaches backend POPs that each run
//! `geoedge wg up` (inside a network namespace, joined by a veth pair) and a
//! greet-and-echo backend on the POP's overlay address.
//!
//! - `geoedge_to_geoedge_and_peer_churn`: two POPs; a stream to POP A keeps
//!   echoing intact data while POP B's `wg_peers` row is deleted from the
//!   edge's routing.db (B's clients fail over to A) and re-added (B serves
//!   again), and while A's row is rewritten (same endpoint in another
//!   spelling, an IPv4-mapped spelling, another persistent keepalive)
//!   without a new handshake.
//! - `a_vanished_pop_fails_over_within_the_connect_timeout`: POP A is killed
//!   and its namespace deleted; a US client is then served by a loopback
//!   backend after one connect timeout.
//! - `garbage_datagrams_get_no_reply_and_the_tunnel_keeps_working`: 100,000
//!   garbage, WireGuard-looking, truncated, mutated and replayed datagrams
//!   to each geoedge's WireGuard port get no reply, and the tunnel keeps
//!   carrying old and new connections.
//! - `rekey_keeps_connections` (about 2 minutes, as boringtun's rekey
//!   timer is a constant 120 s): a stream keeps flowing across the rekey.
//!
//! Needs root, /dev/net/tun, `ip`, `wg` and `sqlite3`: skips with a printed
//! reason where they are missing (under CI missing tools fail the test).
//! The tests run one at a time (they share the CPU with three geoedge
//! processes each). Everything a test creates (namespaces, veths, processes,
//! `/var/run/wireguard/*.sock`) is removed, also on failure.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

/// One test at a time: each runs three geoedge processes, and the flood
/// would starve the others' connect timeouts.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn skip_reason() -> Option<String> {
    privileged_skip_reason(&["ip", "wg", "sqlite3"])
}

/// Polls `cond` every 50 ms until it holds; panics after `within`.
fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Whether process `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.trim().chars().next());
            !matches!(state, None | Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// `line` without ANSI colour sequences.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What one test made, removed when dropped (after the processes and
/// backends, which are declared after it and so dropped first).
struct Lab {
    pid: u32,
    /// 172.30.{base + k}.0/24 for site k, 10.79.{base + k}.0/24 for overlays.
    base: u32,
    dir: tempfile::TempDir,
    netns: Vec<String>,
    veths: Vec<String>,
    sockets: Vec<PathBuf>,
}

/// A POP site: a namespace joined to the root namespace by a veth pair.
struct Site {
    ns: String,
    veth: String,
    /// The root side's address.
    root_ip: Ipv4Addr,
    /// The namespace side's address.
    ns_ip: Ipv4Addr,
}

impl Lab {
    /// Subnets from the pid; each test uses its own `k` (0..6).
    fn new() -> Lab {
        let pid = std::process::id();
        Lab {
            pid,
            base: (pid % 40) * 6,
            dir: tempfile::tempdir().unwrap(),
            netns: Vec::new(),
            veths: Vec::new(),
            sockets: Vec::new(),
        }
    }

    fn subnet(&self, k: u32) -> u32 {
        self.base + k
    }

    /// A unique name: prefix, tag, pid (at most 15 bytes for interfaces).
    fn name(&self, prefix: &str, tag: &str) -> String {
        let n = format!("{prefix}{tag}{}", self.pid);
        assert!(n.len() <= 15, "{n} is too long for an interface name");
        n
    }

    /// Creates site `k` (namespace `gepn{tag}`, veth `gv{tag}`/`gn{tag}`).
    fn site(&mut self, k: u32, tag: &str) -> Site {
        let (ns, veth, peer) = (
            self.name("gepn", tag),
            self.name("gv", tag),
            self.name("gn", tag),
        );
        let net = self.subnet(k);
        let (root_ip, ns_ip) = (
            Ipv4Addr::new(172, 30, net as u8, 1),
            Ipv4Addr::new(172, 30, net as u8, 2),
        );
        self.netns.push(ns.clone());
        run(&["ip", "netns", "add", &ns]);
        self.veths.push(veth.clone());
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", &peer, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("{root_ip}/24"), "dev", &veth]);
        run(&["ip", "link", "set", &veth, "up"]);
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            &peer,
        ]);
        run(&["ip", "-n", &ns, "link", "set", &peer, "up"]);
        run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        Site {
            ns,
            veth,
            root_ip,
            ns_ip,
        }
    }

    /// Deletes a site now (its namespace and veth pair).
    fn remove_site(&mut self, site: &Site) {
        let _ = Command::new("ip").args(["netns", "del", &site.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &site.veth])
            .stderr(Stdio::null())
            .status();
        self.netns.retain(|n| *n != site.ns);
        self.veths.retain(|v| *v != site.veth);
    }

    /// A key pair made with geoedge (interchangeable with the wg tool).
    fn keypair(&self, name: &str) -> (PathBuf, String) {
        let out = geoedge().args(["wg", "genkey"]).output().unwrap();
        assert!(out.status.success());
        let path = self.dir.path().join(name);
        std::fs::write(&path, &out.stdout).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let mut c = geoedge()
            .args(["wg", "pubkey"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let public = String::from_utf8(c.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned();
        (path, public)
    }

    /// A routing.db of its own, in subdirectory `name`.
    fn db(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        routing_db(&d)
    }

    /// Remembers a configuration socket to remove.
    fn socket(&mut self, iface: &str) {
        self.sockets
            .push(PathBuf::from(format!("/var/run/wireguard/{iface}.sock")));
    }

    /// Starts the edge (`geoedge run` with its WireGuard interface).
    fn edge(&mut self, iface: &str, key: &Path, address: &str, db: &Path, extra: &[&str]) -> Edge {
        self.socket(iface);
        let mut args = edge_args(
            db,
            &[
                "--wg-interface",
                iface,
                "--wg-listen-port",
                "0",
                "--wg-private-key-file",
                key.to_str().unwrap(),
                "--wg-address",
                address,
            ],
        );
        args.extend_from_slice(extra);
        Edge::start(&args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        for v in &self.veths {
            let _ = Command::new("ip")
                .args(["link", "del", v])
                .stderr(Stdio::null())
                .status();
        }
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// `geoedge wg up` inside a namespace; killed (and its configuration
/// socket removed) when dropped.
struct Pop {
    child: Child,
    iface: String,
    /// Its WireGuard UDP port.
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Pop {
    fn start(ns: &str, iface: &str, key: &Path, address: &str, db: &Path) -> Pop {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_geoedge"))
            .args([
                "wg",
                "up",
                "--wg-interface",
                iface,
                "--wg-listen-port",
                "51820",
                "--wg-private-key-file",
                key.to_str().unwrap(),
                "--wg-address",
                address,
                "--routing-db",
                db.to_str().unwrap(),
            ])
            .env("RUST_LOG", "geoedge=debug,info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("GEOEDGE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("ip netns exec geoedge wg up");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut pop = Pop {
            child,
            iface: iface.to_owned(),
            port: 0,
            lines,
        };
        let expect = format!("wireguard {iface} up, listening on UDP port ");
        loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    if let Some(port) = line.strip_prefix(&expect) {
                        pop.port = port.trim().parse().unwrap();
                        break;
                    }
                }
                Err(_) => panic!("geoedge wg up did not come up: {:#?}", pop.log()),
            }
        }
        std::thread::spawn(move || while rx.recv().is_ok() {});
        pop
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status (within 20 s).
    fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "geoedge wg up ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.iface));
    }
}

/// A backend thread (in a namespace, or in ours): each connection starts
/// with geoedge's PROXY v1 header; it answers `backend=ID client=IP\n` and
/// echoes until end-of-file. Stopped (threads joined) when dropped.
struct NsBackend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    accepted: Arc<AtomicUsize>,
}

impl NsBackend {
    fn start(ns: Option<&str>, bind: SocketAddr, id: &'static str) -> NsBackend {
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

fn serve_echo(s: TcpStream, id: &str, stop: &AtomicBool) -> std::io::Result<()> {
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
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    /// Pattern position of the next byte to send.
    offset: u64,
}

impl Client {
    fn connect(edge: SocketAddr, claim: &str) -> Client {
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
    fn greeting(&mut self, within: Duration) -> Option<(String, String)> {
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
    fn echo(&mut self, n: usize) -> std::io::Result<()> {
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
    fn finish(mut self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "unexpected bytes after the echo");
    }
}

/// A peer's line of `wg show <iface> dump`.
#[derive(Debug, Clone)]
struct DumpPeer {
    endpoint: String,
    latest_handshake: u64,
    keepalive: String,
}

fn wg_dump(iface: &str) -> Vec<(String, DumpPeer)> {
    run(&["wg", "show", iface, "dump"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() >= 8).then(|| {
                (
                    f[0].to_owned(),
                    DumpPeer {
                        endpoint: f[2].to_owned(),
                        latest_handshake: f[4].parse().unwrap_or(0),
                        keepalive: f[7].to_owned(),
                    },
                )
            })
        })
        .collect()
}

fn dump_peer(iface: &str, key: &str) -> Option<DumpPeer> {
    wg_dump(iface)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, p)| p)
}

/// The latest handshake with the peer whose hex public key is `hex_key`, in
/// nanoseconds since the epoch, straight from the configuration socket.
fn handshake_ns(iface: &str, hex_key: &str) -> u128 {
    let mut s = UnixStream::connect(format!("/var/run/wireguard/{iface}.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"get=1\n\n").unwrap();
    let mut text = String::new();
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 || line == "\n" {
            break;
        }
        text.push_str(&line);
    }
    let (mut mine, mut sec, mut nsec) = (false, 0u128, 0u128);
    for line in text.lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        match k {
            "public_key" => mine = v == hex_key,
            "last_handshake_time_sec" if mine => sec = v.parse().unwrap(),
            "last_handshake_time_nsec" if mine => nsec = v.parse().unwrap(),
            _ => {}
        }
    }
    sec * 1_000_000_000 + nsec
}

/// The base64 public key as lowercase hex (the configuration socket's form).
fn hex_key(base64: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let (mut bits, mut n, mut hex) = (0u32, 0u32, String::new());
    for c in base64.trim().bytes().take_while(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base64") as u32;
        bits = ((bits << 6) | v) & 0xffff;
        n += 6;
        if n >= 8 {
            n -= 8;
            hex.push_str(&format!("{:02x}", (bits >> n) & 0xff));
        }
    }
    assert_eq!(hex.len(), 64, "{base64} -> {hex}");
    hex
}

/// How many stderr lines contain every one of `words` (colours stripped).
fn count_lines(lines: &[String], words: &[&str]) -> usize {
    lines
        .iter()
        .map(|l| plain(l))
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// A client streaming through the edge in its own thread: 16 KiB echoed at
/// a time, every byte checked, until stopped.
struct Stream {
    stop: Arc<AtomicBool>,
    verified: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(u64, Duration), String>>>,
}

impl Stream {
    fn start(mut client: Client) -> Stream {
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
    fn progresses(&self, what: &str, bytes: u64) {
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
    fn stop(mut self) -> (u64, Duration) {
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

#[test]
fn geoedge_to_geoedge_and_peer_churn() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    let mut lab = Lab::new();
    let ov = lab.subnet(0);
    let (edge_if, pop_a_if, pop_b_if) = (
        lab.name("gec", ""),
        lab.name("gpca", ""),
        lab.name("gpcb", ""),
    );
    let (edge_key, edge_pub) = lab.keypair("edge.key");
    let (a_key, a_pub) = lab.keypair("a.key");
    let (b_key, b_pub) = lab.keypair("b.key");
    let site_a = lab.site(0, "ca");
    let site_b = lab.site(1, "cb");

    // Each POP: geoedge wg up with the edge as its only peer (the edge
    // connects to it: no endpoint), and a backend on its overlay address.
    let mut pops = Vec::new();
    let mut backends = Vec::new();
    for (site, iface, key, host, id) in [
        (&site_a, &pop_a_if, &a_key, 2, "pop-a"),
        (&site_b, &pop_b_if, &b_key, 3, "pop-b"),
    ] {
        let db = lab.db(iface);
        sqlite3(
            &db,
            &format!(
                "INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
                   VALUES ('{edge_pub}', NULL, '10.79.{ov}.1/32', NULL, NULL);"
            ),
        );
        lab.socket(iface);
        pops.push(Pop::start(
            &site.ns,
            iface,
            key,
            &format!("10.79.{ov}.{host}/24"),
            &db,
        ));
        backends.push(NsBackend::start(
            Some(&site.ns),
            format!("10.79.{ov}.{host}:9000").parse().unwrap(),
            id,
        ));
    }

    // The edge: both POPs as peers, a backend in each.
    let db = lab.db("edge");
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) VALUES
               ('pop-a', 'us', 'US', '10.79.{ov}.2', 9000, 100, 200),
               ('pop-b', 'sa', 'BR', '10.79.{ov}.3', 9000, 100, 200);
             INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region) VALUES
               ('{a_pub}', '{}:{}', '10.79.{ov}.2/32', 25, 'us'),
               ('{b_pub}', '{}:{}', '10.79.{ov}.3/32', 25, 'sa');",
            site_a.ns_ip, pops[0].port, site_b.ns_ip, pops[1].port
        ),
    );
    let edge = lab.edge(
        &edge_if,
        &edge_key,
        &format!("10.79.{ov}.1/24"),
        &db,
        &["--connect-timeout", "2s"],
    );
    let log = |what: &str| {
        format!(
            "{what}\nedge: {:#?}\npop A: {:#?}\npop B: {:#?}",
            edge.log(),
            pops[0].log(),
            pops[1].log()
        )
    };

    // A Brazilian client reaches POP B.
    let mut c = Client::connect(edge.addr, "200.160.0.1");
    let g = c.greeting(Duration::from_secs(15));
    assert_eq!(
        g,
        Some(("pop-b".into(), "200.160.0.1".into())),
        "{}",
        log("first Brazilian client")
    );
    c.echo(256 << 10).unwrap();
    c.finish();

    // A New York client streams through POP A from now on.
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    let g = c.greeting(Duration::from_secs(15));
    assert_eq!(
        g,
        Some(("pop-a".into(), "207.237.0.1".into())),
        "{}",
        log("the streaming client")
    );
    let stream = Stream::start(c);
    stream.progresses("start", 256 << 10);
    let a_hex = hex_key(&a_pub);
    let hs_a = handshake_ns(&edge_if, &a_hex);
    assert!(hs_a > 0, "{}", log("no handshake with A"));
    let edge_hex = hex_key(&edge_pub);
    let hs_at_a = handshake_ns(&pop_a_if, &edge_hex);
    let updates = |words: &[&str]| count_lines(&edge.log(), words);

    // POP B's row goes: the edge drops the peer, and Brazilian clients fail
    // over to POP A.
    sqlite3(
        &db,
        &format!("DELETE FROM wg_peers WHERE public_key = '{b_pub}';"),
    );
    eventually("the edge drops POP B", Duration::from_secs(10), || {
        dump_peer(&edge_if, &b_pub).is_none()
    });
    eventually(
        "the edge logs POP B's removal",
        Duration::from_secs(10),
        || updates(&["WireGuard peers updated", "removed=1"]) >= 1,
    );
    stream.progresses("POP B removed", 128 << 10);
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "200.160.0.2");
    let g = c.greeting(Duration::from_secs(20));
    let failover = t.elapsed();
    assert_eq!(
        g,
        Some(("pop-a".into(), "200.160.0.2".into())),
        "{}",
        log("a Brazilian client while POP B is no peer")
    );
    c.echo(64 << 10).unwrap();
    c.finish();
    eprintln!("POP B removed: a Brazilian client failed over to POP A in {failover:?}");

    // POP B's row comes back: a new Brazilian client reaches POP B again.
    sqlite3(
        &db,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
               VALUES ('{b_pub}', '{}:{}', '10.79.{ov}.3/32', 25, 'sa');",
            site_b.ns_ip, pops[1].port
        ),
    );
    eventually("the edge adds POP B back", Duration::from_secs(10), || {
        dump_peer(&edge_if, &b_pub).is_some()
    });
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "200.160.0.3");
    let g = c.greeting(Duration::from_secs(20));
    let back = t.elapsed();
    assert_eq!(
        g,
        Some(("pop-b".into(), "200.160.0.3".into())),
        "{}",
        log("a Brazilian client after POP B is back")
    );
    c.echo(256 << 10).unwrap();
    c.finish();
    eprintln!("POP B re-added: a new Brazilian client greeted by POP B in {back:?}");
    stream.progresses("POP B re-added", 128 << 10);

    // POP A's row is rewritten three ways; its session stays.
    let changed = |words: &[&str]| updates(&[&["WireGuard peers updated"], words].concat());
    // 1. The same endpoint, spelled with spaces around it: nothing changes.
    let before = updates(&["WireGuard peers updated"]);
    let reloads = updates(&["routing.db reloaded"]);
    sqlite3(
        &db,
        &format!(
            "UPDATE wg_peers SET endpoint = '  {}:{}  ' WHERE public_key = '{a_pub}';",
            site_a.ns_ip, pops[0].port
        ),
    );
    eventually(
        "the edge reloads routing.db",
        Duration::from_secs(10),
        || updates(&["routing.db reloaded"]) > reloads,
    );
    stream.progresses("A's endpoint respelled", 128 << 10);
    // The peer follower looks every 200 ms.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        updates(&["WireGuard peers updated"]),
        before,
        "{}",
        log("an equal endpoint changed a peer")
    );
    // 2. The same address as an IPv4-mapped IPv6 endpoint.
    let before = changed(&["endpoint_changed=1"]);
    sqlite3(
        &db,
        &format!(
            "UPDATE wg_peers SET endpoint = '[::ffff:{}]:{}' WHERE public_key = '{a_pub}';",
            site_a.ns_ip, pops[0].port
        ),
    );
    eventually(
        "the edge applies A's mapped endpoint",
        Duration::from_secs(10),
        || changed(&["endpoint_changed=1"]) > before,
    );
    stream.progresses("A's endpoint IPv4-mapped", 256 << 10);
    // 3. Another persistent keepalive.
    sqlite3(
        &db,
        &format!("UPDATE wg_peers SET persistent_keepalive = 5 WHERE public_key = '{a_pub}';"),
    );
    eventually(
        "the edge applies A's keepalive",
        Duration::from_secs(10),
        || dump_peer(&edge_if, &a_pub).is_some_and(|p| p.keepalive == "5"),
    );
    stream.progresses("A's keepalive changed", 256 << 10);
    let hs_a_after = handshake_ns(&edge_if, &a_hex);
    let dump_a = dump_peer(&edge_if, &a_pub).unwrap();
    let drift = hs_a_after.abs_diff(hs_a);
    assert!(
        drift < 200_000_000,
        "a new handshake with A ({drift} ns later): {dump_a:?}\n{}",
        log("")
    );
    let drift_at_a = handshake_ns(&pop_a_if, &edge_hex).abs_diff(hs_at_a);
    assert!(
        drift_at_a < 200_000_000,
        "POP A saw a new handshake ({drift_at_a} ns later)\n{}",
        log("")
    );

    // `wg show` agrees (to the second) with the configuration socket.
    let hs_a_secs = (hs_a / 1_000_000_000) as u64;
    assert!(
        dump_a.latest_handshake.abs_diff(hs_a_secs) <= 1,
        "wg show says {}, the socket {hs_a_secs}",
        dump_a.latest_handshake
    );

    let (total, max_gap) = stream.stop();
    eprintln!(
        "stream to POP A: {} KiB echoed intact, longest wait for an echo {max_gap:?}; \
         A's handshake unchanged (drift {drift} ns), A now {dump_a:?}; test took {:?}",
        total >> 10,
        started.elapsed()
    );

    let mut edge = edge;
    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    assert!(!Path::new(&format!("/var/run/wireguard/{edge_if}.sock")).exists());
    for pop in &mut pops {
        let status = pop.stop();
        assert!(status.success(), "{:#?}", pop.log());
        assert!(!Path::new(&format!("/var/run/wireguard/{}.sock", pop.iface)).exists());
    }
    drop(backends);
}

#[test]
fn a_vanished_pop_fails_over_within_the_connect_timeout() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let _serial = serial();
    let mut lab = Lab::new();
    let ov = lab.subnet(2);
    let (edge_if, pop_if) = (lab.name("gef", ""), lab.name("gpfa", ""));
    let (edge_key, edge_pub) = lab.keypair("edge.key");
    let (a_key, a_pub) = lab.keypair("a.key");
    let site = lab.site(2, "fa");

    let pop_db = lab.db("pop");
    sqlite3(
        &pop_db,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips) VALUES ('{edge_pub}', NULL, '10.79.{ov}.1/32');"
        ),
    );
    lab.socket(&pop_if);
    let mut pop = Some(Pop::start(
        &site.ns,
        &pop_if,
        &a_key,
        &format!("10.79.{ov}.2/24"),
        &pop_db,
    ));
    let mut pop_backend = Some(NsBackend::start(
        Some(&site.ns),
        format!("10.79.{ov}.2:9000").parse().unwrap(),
        "pop-a",
    ));
    let local = NsBackend::start(None, "127.0.0.1:0".parse().unwrap(), "ca-lo");

    let db = lab.db("edge");
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) VALUES
               ('pop-a', 'us', 'US', '10.79.{ov}.2', 9000, 100, 200),
               ('ca-lo', 'us', 'CA', '127.0.0.1', {}, 100, 200);
             INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region) VALUES
               ('{a_pub}', '{}:{}', '10.79.{ov}.2/32', 25, 'us');",
            local.addr.port(),
            site.ns_ip,
            pop.as_ref().unwrap().port
        ),
    );
    let mut edge = lab.edge(
        &edge_if,
        &edge_key,
        &format!("10.79.{ov}.1/24"),
        &db,
        &["--connect-timeout", "2s"],
    );

    // While POP A is up, US clients go there (the same country).
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    let g = c.greeting(Duration::from_secs(15));
    assert_eq!(
        g,
        Some(("pop-a".into(), "207.237.0.1".into())),
        "edge: {:#?}",
        edge.log()
    );
    c.echo(64 << 10).unwrap();
    c.finish();

    // POP A vanishes: its geoedge killed, its backend gone, its namespace
    // and link deleted. routing.db still lists it.
    let pop_pid = pop.as_ref().unwrap().pid();
    drop(pop.take());
    drop(pop_backend.take());
    lab.remove_site(&site);
    assert!(!alive(pop_pid));

    // The next US client (bound to POP A) waits one connect timeout, then
    // is served by the loopback backend.
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    let g = c.greeting(Duration::from_secs(30));
    let first = t.elapsed();
    assert_eq!(
        g,
        Some(("ca-lo".into(), "207.237.0.1".into())),
        "after {first:?}; edge: {:#?}",
        edge.log()
    );
    assert!(first < Duration::from_secs(10), "failover took {first:?}");
    c.echo(64 << 10).unwrap();
    c.finish();

    // The same client again (now bound to ca-lo), and a new US client
    // (whose best backend is still POP A).
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        c.greeting(Duration::from_secs(30)).map(|g| g.0).as_deref(),
        Some("ca-lo")
    );
    let rebound = t.elapsed();
    c.finish();
    let t = Instant::now();
    let mut c = Client::connect(edge.addr, "207.237.0.2");
    assert_eq!(
        c.greeting(Duration::from_secs(30)).map(|g| g.0).as_deref(),
        Some("ca-lo")
    );
    let fresh = t.elapsed();
    c.finish();
    eprintln!(
        "POP A vanished: the bound client was served by ca-lo after {first:?}; \
         again (re-bound) after {rebound:?}; a new US client after {fresh:?}"
    );
    assert!(alive(edge.pid()));
    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    assert!(local.accepted.load(Ordering::SeqCst) >= 3);
}

/// A captured UDP datagram.
#[derive(Clone)]
struct Captured {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: Vec<u8>,
}

/// Captures the IPv4 UDP datagrams crossing `ifname` (both directions) with
/// a packet socket, until stopped. geoedge sends bursts as UDP GSO
/// messages, which cross a veth unsegmented: the socket asks for each
/// frame's virtio header and splits such a message into its datagrams by
/// the segment size the header carries.
struct Capture {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Captured>>>,
}

impl Capture {
    fn start(ifname: &str) -> Capture {
        // Every protocol: outgoing frames only reach ETH_P_ALL sockets.
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as libc::c_int) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: a NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: bind with a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        // `PACKET_VNET_HDR` (linux/if_packet.h, raw packet sockets only): a
        // virtio_net_hdr before each frame; the frame is Ethernet (a veth).
        const PACKET_VNET_HDR: libc::c_int = 15;
        const VNET_HDR_LEN: usize = 10;
        const ETHERNET_LEN: usize = 14;
        const GSO_UDP_L4: u8 = 5;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt with a c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_VNET_HDR,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "PACKET_VNET_HDR: {}",
            std::io::Error::last_os_error()
        );
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setsockopt with a timeval of the size given.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::addr_of!(timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = vec![0u8; VNET_HDR_LEN + 65536];
            while !s.load(Ordering::SeqCst) {
                // SAFETY: sockaddr_ll is plain data; all zeroes is valid.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: recvfrom into a buffer and an address of the sizes given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        std::ptr::addr_of_mut!(from).cast(),
                        &mut from_len,
                    )
                };
                if n <= (VNET_HDR_LEN + ETHERNET_LEN) as isize
                    || from.sll_protocol != (libc::ETH_P_IP as u16).to_be()
                {
                    continue;
                }
                // virtio_net_hdr: flags, gso_type, hdr_len, gso_size, ...
                let gso_type = buf[1] & 0x7f;
                let gso_size = usize::from(u16::from_ne_bytes([buf[4], buf[5]]));
                let p = &buf[VNET_HDR_LEN + ETHERNET_LEN..n as usize];
                if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 17 {
                    continue;
                }
                let ihl = usize::from(p[0] & 0x0f) * 4;
                if p.len() < ihl + 8 {
                    continue;
                }
                let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
                let port = |o: usize| u16::from_be_bytes([p[o], p[o + 1]]);
                let udp_len = usize::from(port(ihl + 4));
                if udp_len < 8 || p.len() < ihl + udp_len {
                    continue;
                }
                let payload = &p[ihl + 8..ihl + udp_len];
                let segment = if gso_type == GSO_UDP_L4 && gso_size > 0 {
                    gso_size
                } else {
                    payload.len().max(1)
                };
                for datagram in payload.chunks(segment) {
                    got.push(Captured {
                        src: SocketAddrV4::new(ip(12), port(ihl)),
                        dst: SocketAddrV4::new(ip(16), port(ihl + 2)),
                        payload: datagram.to_vec(),
                    });
                }
            }
            got
        });
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Captured> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// What a flood sent, by kind.
#[derive(Debug, Default)]
struct Flood {
    random: usize,
    wg_shaped: usize,
    truncated: usize,
    replayed: usize,
    replayed_handshakes: usize,
    mutated: usize,
    send_errors: usize,
    replies: usize,
    elapsed: Duration,
}

/// The length a well-formed message of type `t` has (data: 32 + 16k).
fn wg_len(rng: &mut Rng, t: u8) -> usize {
    match t {
        1 => 148,
        2 => 92,
        3 => 64,
        _ => 32 + 16 * rng.below(90),
    }
}

/// Sends `count` garbage datagrams from `socket` to `to`: random bytes;
/// WireGuard-shaped messages (type 1..4, reserved zero, the right length,
/// random content); truncated ones; and, from `captured` (real datagrams of
/// the peer to `to`), exact replays and copies with bytes flipped.
/// Replays of handshake messages (valid MACs) are capped at 10 each: past
/// the handshake rate limit (100 per second) a valid-MAC1 initiation
/// rightly earns a cookie reply. Counts any datagram that comes back.
fn flood(
    socket: &UdpSocket,
    to: SocketAddr,
    count: usize,
    captured: &[Vec<u8>],
    seed: u64,
) -> Flood {
    let mut rng = Rng(seed | 1);
    let mut f = Flood::default();
    let mut buf = vec![0u8; 1500];
    let mut back = vec![0u8; 65536];
    let (data, handshakes): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) =
        captured.iter().partition(|d| d.first() == Some(&4));
    socket.set_nonblocking(true).unwrap();
    let start = Instant::now();
    for i in 0..count {
        let kind = rng.below(100);
        let len = if kind < 45 || (data.is_empty() && kind >= 75) {
            f.random += 1;
            let len = 1 + rng.below(1500);
            rng.fill(&mut buf[..len]);
            len
        } else if kind < 65 {
            f.wg_shaped += 1;
            let t = 1 + rng.below(4) as u8;
            let len = wg_len(&mut rng, t);
            rng.fill(&mut buf[..len]);
            buf[0] = t;
            buf[1..4].fill(0);
            len
        } else if kind < 75 {
            f.truncated += 1;
            let t = 1 + rng.below(4) as u8;
            let full = wg_len(&mut rng, t);
            let len = 1 + rng.below(full - 1);
            rng.fill(&mut buf[..len]);
            buf[0] = t;
            len
        } else if kind < 87
            && !handshakes.is_empty()
            && f.replayed_handshakes < 10 * handshakes.len()
        {
            // An exact replay of a handshake message, a few times over the flood.
            f.replayed_handshakes += 1;
            let d = handshakes[f.replayed_handshakes % handshakes.len()];
            buf[..d.len()].copy_from_slice(d);
            d.len()
        } else if kind < 87 {
            f.replayed += 1;
            let d = data[rng.below(data.len())];
            buf[..d.len()].copy_from_slice(d);
            d.len()
        } else {
            f.mutated += 1;
            let pool = if handshakes.is_empty() || rng.below(4) > 0 {
                &data
            } else {
                &handshakes
            };
            let d = pool[rng.below(pool.len())];
            buf[..d.len()].copy_from_slice(d);
            // Flip 1..4 bytes after the type and reserved bytes (for a
            // handshake message, inside what MAC1 covers), or truncate.
            let end = if d[0] == 4 { d.len() } else { d.len() - 32 };
            for _ in 0..1 + rng.below(4) {
                let at = 4 + rng.below(end - 4);
                buf[at] ^= 1 << rng.below(8);
            }
            if rng.below(5) == 0 {
                1 + rng.below(d.len() - 1)
            } else {
                d.len()
            }
        };
        if socket.send_to(&buf[..len], to).is_err() {
            f.send_errors += 1;
        }
        if i % 256 == 255 {
            while let Ok((n, from)) = socket.recv_from(&mut back) {
                eprintln!(
                    "reply of {n} bytes from {from}: {:02x?}",
                    &back[..n.min(16)]
                );
                f.replies += 1;
            }
            // Let the receiver keep up a little (its socket holds ~4 MiB).
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    f.elapsed = start.elapsed();
    // Anything still on its way back.
    socket.set_nonblocking(false).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Ok((n, from)) = socket.recv_from(&mut back) {
        eprintln!(
            "late reply of {n} bytes from {from}: {:02x?}",
            &back[..n.min(16)]
        );
        f.replies += 1;
    }
    f
}

/// `Udp:` counters (InDatagrams, RcvbufErrors, InErrors) of a network
/// namespace (`None`: ours).
fn udp_counters(ns: Option<&str>) -> [u64; 3] {
    let text = match ns {
        None => std::fs::read_to_string("/proc/net/snmp").unwrap(),
        Some(ns) => run(&["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"]),
    };
    let udp: Vec<&str> = text.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let get = |k: &str| {
        names
            .iter()
            .position(|n| *n == k)
            .and_then(|i| values[i].parse().ok())
            .unwrap_or(0)
    };
    [get("InDatagrams"), get("RcvbufErrors"), get("InErrors")]
}

/// The setup the flood and rekey tests share: an edge routing.db listing
/// one POP (`pop-a`, region us, a backend on 10.79.{ov}.2:9000) that runs
/// `geoedge wg up` in its namespace. The test starts the edge itself.
/// Fields drop in declaration order: the backend and POP before the lab.
struct OnePop {
    backend: NsBackend,
    pop: Pop,
    site: Site,
    ov: u32,
    edge_if: String,
    pop_if: String,
    edge_key: PathBuf,
    edge_pub: String,
    a_pub: String,
    db: PathBuf,
    lab: Lab,
}

fn one_pop(k: u32, edge_prefix: &str, pop_prefix: &str, tag: &str) -> OnePop {
    let mut lab = Lab::new();
    let ov = lab.subnet(k);
    let (edge_if, pop_if) = (lab.name(edge_prefix, ""), lab.name(pop_prefix, ""));
    let (edge_key, edge_pub) = lab.keypair("edge.key");
    let (a_key, a_pub) = lab.keypair("a.key");
    let site = lab.site(k, tag);
    let pop_db = lab.db("pop");
    sqlite3(
        &pop_db,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips) VALUES ('{edge_pub}', NULL, '10.79.{ov}.1/32');"
        ),
    );
    lab.socket(&pop_if);
    let pop = Pop::start(
        &site.ns,
        &pop_if,
        &a_key,
        &format!("10.79.{ov}.2/24"),
        &pop_db,
    );
    let backend = NsBackend::start(
        Some(&site.ns),
        format!("10.79.{ov}.2:9000").parse().unwrap(),
        "pop-a",
    );
    let db = lab.db("edge");
    sqlite3(
        &db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit) VALUES
               ('pop-a', 'us', 'US', '10.79.{ov}.2', 9000, 100, 200);
             INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region) VALUES
               ('{a_pub}', '{}:{}', '10.79.{ov}.2/32', 25, 'us');",
            site.ns_ip, pop.port
        ),
    );
    OnePop {
        backend,
        pop,
        site,
        ov,
        edge_if,
        pop_if,
        edge_key,
        edge_pub,
        a_pub,
        db,
        lab,
    }
}

#[test]
fn garbage_datagrams_get_no_reply_and_the_tunnel_keeps_working() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let _serial = serial();
    let mut one = one_pop(3, "geg", "gpga", "ga");
    let (ov, edge_if, pop_if, db) = (
        one.ov,
        one.edge_if.clone(),
        one.pop_if.clone(),
        one.db.clone(),
    );
    let (edge_key, edge_pub, a_pub) = (
        one.edge_key.clone(),
        one.edge_pub.clone(),
        one.a_pub.clone(),
    );
    let (lab, pop, site, backend) = (&mut one.lab, &mut one.pop, &one.site, &one.backend);

    // Record the real datagrams of the handshake and of some traffic.
    let capture = Capture::start(&site.veth);
    let mut edge = lab.edge(
        &edge_if,
        &edge_key,
        &format!("10.79.{ov}.1/24"),
        &db,
        &["--connect-timeout", "5s"],
    );
    let edge_port: u16 = run(&["wg", "show", &edge_if, "listen-port"])
        .trim()
        .parse()
        .unwrap();
    let mut old = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        old.greeting(Duration::from_secs(15))
            .map(|g| g.0)
            .as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    old.echo(512 << 10).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let captured = capture.finish();
    let pop_addr = SocketAddrV4::new(site.ns_ip, pop.port);
    let to_edge: Vec<Vec<u8>> = captured
        .iter()
        .filter(|c| c.src == pop_addr && c.dst.port() == edge_port)
        .map(|c| c.payload.clone())
        .collect();
    let to_pop: Vec<Vec<u8>> = captured
        .iter()
        .filter(|c| c.dst == pop_addr && c.src.port() == edge_port)
        .map(|c| c.payload.clone())
        .collect();
    let kinds = |v: &[Vec<u8>]| {
        let mut k = [0usize; 5];
        for d in v {
            k[usize::from(d[0]).min(4)] += 1;
        }
        k
    };
    eprintln!(
        "captured {} datagrams to the edge (by type {:?}), {} to the POP (by type {:?})",
        to_edge.len(),
        kinds(&to_edge),
        to_pop.len(),
        kinds(&to_pop)
    );
    assert!(to_edge.iter().any(|d| d[0] == 4) && to_pop.iter().any(|d| d[0] == 4));

    // 100,000 to the edge, from a socket in the POP's namespace.
    let netns = std::fs::File::open(format!("/var/run/netns/{}", site.ns)).unwrap();
    let edge_at = SocketAddr::new(site.root_ip.into(), edge_port);
    let before_edge = udp_counters(None);
    let edge_flood = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on a namespace file we hold open; affects this thread only.
            let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            flood(&socket, edge_at, 100_000, &to_edge, 0x9e37_79b9_7f4a_7c15)
        })
        .join()
        .unwrap()
    });
    let after_edge = udp_counters(None);
    eprintln!(
        "to the edge: {edge_flood:?}; root namespace UDP InDatagrams +{}, RcvbufErrors +{}, InErrors +{}",
        after_edge[0] - before_edge[0],
        after_edge[1] - before_edge[1],
        after_edge[2] - before_edge[2]
    );
    assert_eq!(edge_flood.replies, 0, "the edge answered garbage");
    assert!(alive(edge.pid()), "{:#?}", edge.log());

    // 100,000 to the POP, from a socket in the root namespace.
    let before_pop = udp_counters(Some(&site.ns));
    let socket = UdpSocket::bind(SocketAddr::new(site.root_ip.into(), 0)).unwrap();
    let pop_flood = flood(
        &socket,
        SocketAddr::V4(pop_addr),
        100_000,
        &to_pop,
        0x2545_f491_4f6c_dd1d,
    );
    let after_pop = udp_counters(Some(&site.ns));
    eprintln!(
        "to the POP: {pop_flood:?}; POP namespace UDP InDatagrams +{}, RcvbufErrors +{}, InErrors +{}",
        after_pop[0] - before_pop[0],
        after_pop[1] - before_pop[1],
        after_pop[2] - before_pop[2]
    );
    assert_eq!(pop_flood.replies, 0, "the POP answered garbage");
    assert!(alive(pop.pid()), "{:#?}", pop.log());

    // The tunnel still works: the old connection, and a new one.
    old.echo(512 << 10).unwrap();
    old.finish();
    let mut c = Client::connect(edge.addr, "207.237.0.2");
    assert_eq!(
        c.greeting(Duration::from_secs(15)).map(|g| g.0).as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    c.echo(1 << 20).unwrap();
    c.finish();
    // Neither side roamed to the flooding sockets.
    let a = dump_peer(&edge_if, &a_pub).unwrap();
    assert_eq!(a.endpoint, pop_addr.to_string());
    let e = dump_peer(&pop_if, &edge_pub).unwrap();
    assert_eq!(
        e.endpoint,
        SocketAddrV4::new(site.root_ip, edge_port).to_string()
    );
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);

    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    let status = pop.stop();
    assert!(status.success(), "{:#?}", pop.log());
}

/// boringtun rekeys a session its side initiated once it is 120 s old (a
/// constant: nothing shortens it from outside), so this test streams for
/// about two minutes.
#[test]
fn rekey_keeps_connections() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let _serial = serial();
    let mut one = one_pop(4, "ger", "gpra", "ra");
    let (ov, edge_if, pop_if, db) = (
        one.ov,
        one.edge_if.clone(),
        one.pop_if.clone(),
        one.db.clone(),
    );
    let (edge_key, edge_pub, a_pub) = (
        one.edge_key.clone(),
        one.edge_pub.clone(),
        one.a_pub.clone(),
    );
    let (lab, pop) = (&mut one.lab, &mut one.pop);
    let mut edge = lab.edge(
        &edge_if,
        &edge_key,
        &format!("10.79.{ov}.1/24"),
        &db,
        &["--connect-timeout", "5s"],
    );
    let mut c = Client::connect(edge.addr, "207.237.0.1");
    assert_eq!(
        c.greeting(Duration::from_secs(15)).map(|g| g.0).as_deref(),
        Some("pop-a"),
        "edge: {:#?}",
        edge.log()
    );
    let stream = Stream::start(c);
    stream.progresses("start", 256 << 10);
    let (a_hex, edge_hex) = (hex_key(&a_pub), hex_key(&edge_pub));
    let first = handshake_ns(&edge_if, &a_hex);
    let first_at_pop = handshake_ns(&pop_if, &edge_hex);
    assert!(first > 0 && first_at_pop > 0);

    // Wait for the edge (the session's initiator) to rekey.
    let start = Instant::now();
    let rekeyed = loop {
        let now = handshake_ns(&edge_if, &a_hex);
        if now > first + 1_000_000_000 {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(200),
            "no rekey within 200 s; edge: {:#?}",
            edge.log()
        );
        stream.progresses("waiting for the rekey", 16 << 10);
        std::thread::sleep(Duration::from_millis(500));
    };
    let at_pop = handshake_ns(&pop_if, &edge_hex);
    stream.progresses("after the rekey", 1 << 20);
    let (total, max_gap) = stream.stop();
    // A new connection after the rekey.
    let mut c = Client::connect(edge.addr, "207.237.0.2");
    assert_eq!(
        c.greeting(Duration::from_secs(15)).map(|g| g.0).as_deref(),
        Some("pop-a")
    );
    c.echo(1 << 20).unwrap();
    c.finish();
    eprintln!(
        "rekey {:.1} s after the first handshake (the POP's view moved by {:.1} s); \
         stream: {} KiB echoed intact, longest wait for an echo {max_gap:?}",
        (rekeyed - first) as f64 / 1e9,
        at_pop.saturating_sub(first_at_pop) as f64 / 1e9,
        total >> 10
    );
    assert!(
        at_pop > first_at_pop + 1_000_000_000,
        "the POP saw no new handshake"
    );
    let status = edge.signal_and_wait("TERM", Duration::from_secs(40));
    assert!(status.success(), "{:#?}", edge.log());
    let status = pop.stop();
    assert!(status.success(), "{:#?}", pop.log());
}
