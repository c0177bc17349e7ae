//! The lab the geoedge-to-geoedge tests run in: namespaces joined by veth
//! pairs, `geoedge wg up` POPs, the one-POP setup, and what `wg` reports;
//! every part is removed when dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::support::*;

/// One test at a time, and none beside the other heavy tests of the
/// binary ([`HEAVY`]): each runs three geoedge processes, and the flood
/// would starve the others' connect timeouts.
pub(crate) fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    HEAVY.blocking_lock()
}

pub(crate) fn skip_reason() -> Option<String> {
    privileged_skip_reason(&["ip", "wg", "sqlite3"])
}

/// Polls `cond` every 50 ms until it holds; panics after `within`.
pub(crate) fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// Whether process `pid` exists and is not a zombie.
pub(crate) fn alive(pid: u32) -> bool {
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

/// What one test made, removed when dropped (after the processes and
/// backends, which are declared after it and so dropped first).
pub(crate) struct Lab {
    pub(crate) pid: u32,
    /// 172.30.{base + k}.0/24 for site k, 10.79.{base + k}.0/24 for overlays.
    pub(crate) base: u32,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) sockets: Vec<PathBuf>,
    /// Dropped after the sockets are removed, namespaces before veths.
    pub(crate) netns: Vec<Netns>,
    pub(crate) veths: Vec<Veth>,
}

/// A POP site: a namespace joined to the root namespace by a veth pair.
pub(crate) struct Site {
    pub(crate) ns: String,
    pub(crate) veth: String,
    /// The root side's address.
    pub(crate) root_ip: Ipv4Addr,
    /// The namespace side's address.
    pub(crate) ns_ip: Ipv4Addr,
}

impl Lab {
    /// Subnets from the pid; each test uses its own `k` (0..6).
    pub(crate) fn new() -> Lab {
        sweep_stale_namespaces();
        let pid = std::process::id();
        Lab {
            pid,
            base: (pid % 40) * 6,
            dir: tempfile::tempdir().unwrap(),
            sockets: Vec::new(),
            netns: Vec::new(),
            veths: Vec::new(),
        }
    }

    pub(crate) fn subnet(&self, k: u32) -> u32 {
        self.base + k
    }

    /// A unique name: prefix, tag, pid (at most 15 bytes for interfaces).
    pub(crate) fn name(&self, prefix: &str, tag: &str) -> String {
        let n = format!("{prefix}{tag}{}", self.pid);
        assert!(n.len() <= 15, "{n} is too long for an interface name");
        n
    }

    /// Creates site `k` (namespace `gepn{tag}`, veth `gv{tag}`/`gn{tag}`).
    /// The tag is lower-case letters only, so the namespace's name ends in
    /// the pid and a later run can tell when it is stale
    /// ([`namespace_pid`]).
    pub(crate) fn site(&mut self, k: u32, tag: &str) -> Site {
        assert!(
            tag.bytes().all(|b| b.is_ascii_lowercase()),
            "namespace tag {tag:?} must be lower-case letters"
        );
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
        self.netns.push(Netns::new(ns.clone()));
        self.veths.push(Veth::new(
            &ns,
            &veth,
            &peer,
            &format!("{root_ip}/24"),
            &format!("{ns_ip}/24"),
        ));
        Site {
            ns,
            veth,
            root_ip,
            ns_ip,
        }
    }

    /// Deletes a site now (its namespace and veth pair).
    pub(crate) fn remove_site(&mut self, site: &Site) {
        self.netns.retain(|n| n.name() != site.ns);
        self.veths.retain(|v| v.outer != site.veth);
    }

    /// A key pair made with geoedge (interchangeable with the wg tool).
    pub(crate) fn keypair(&self, name: &str) -> (PathBuf, String) {
        keypair(self.dir.path(), name)
    }

    /// A routing.db of its own, in subdirectory `name`.
    pub(crate) fn db(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        routing_db(&d)
    }

    /// Remembers a configuration socket to remove.
    pub(crate) fn socket(&mut self, iface: &str) {
        self.sockets
            .push(PathBuf::from(format!("/var/run/wireguard/{iface}.sock")));
    }

    /// Starts the edge (`geoedge run` with its WireGuard interface).
    pub(crate) fn edge(
        &mut self,
        iface: &str,
        key: &Path,
        address: &str,
        db: &Path,
        extra: &[&str],
    ) -> Edge {
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
        for s in &self.sockets {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// `geoedge wg up` inside a namespace; killed (and its configuration
/// socket removed) when dropped.
pub(crate) struct Pop {
    pub(crate) child: Child,
    pub(crate) iface: String,
    /// Its WireGuard UDP port.
    pub(crate) port: u16,
    pub(crate) lines: Arc<Mutex<Vec<String>>>,
}

impl Pop {
    pub(crate) fn start(ns: &str, iface: &str, key: &Path, address: &str, db: &Path) -> Pop {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(geoedge_path())
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
        without_geoedge_env(&mut cmd);
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

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub(crate) fn stop(&mut self) -> ExitStatus {
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

/// A peer's line of `wg show <iface> dump`.
#[derive(Debug, Clone)]
pub(crate) struct DumpPeer {
    pub(crate) endpoint: String,
    pub(crate) latest_handshake: u64,
    pub(crate) keepalive: String,
}

pub(crate) fn wg_dump(iface: &str) -> Vec<(String, DumpPeer)> {
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

pub(crate) fn dump_peer(iface: &str, key: &str) -> Option<DumpPeer> {
    wg_dump(iface)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, p)| p)
}

/// The latest handshake with the peer whose hex public key is `hex_key`, in
/// nanoseconds since the epoch, straight from the configuration socket.
pub(crate) fn handshake_ns(iface: &str, hex_key: &str) -> u128 {
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
pub(crate) fn hex_key(base64: &str) -> String {
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
pub(crate) fn count_lines(lines: &[String], words: &[&str]) -> usize {
    lines
        .iter()
        .map(|l| plain(l))
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .count()
}

/// The setup the flood and rekey tests share: an edge routing.db listing
/// one POP (`pop-a`, region us, a backend on 10.79.{ov}.2:9000) that runs
/// `geoedge wg up` in its namespace. The test starts the edge itself.
/// Fields drop in declaration order: the backend and POP before the lab.
pub(crate) struct OnePop {
    pub(crate) backend: NsBackend,
    pub(crate) pop: Pop,
    pub(crate) site: Site,
    pub(crate) ov: u32,
    pub(crate) edge_if: String,
    pub(crate) pop_if: String,
    pub(crate) edge_key: PathBuf,
    pub(crate) edge_pub: String,
    pub(crate) a_pub: String,
    pub(crate) db: PathBuf,
    pub(crate) lab: Lab,
}

impl OnePop {
    /// Starts the edge on this setup's interface, key, overlay address and
    /// routing.db, with `extra` arguments.
    pub(crate) fn edge(&mut self, extra: &[&str]) -> Edge {
        let address = format!("10.79.{}.1/24", self.ov);
        self.lab
            .edge(&self.edge_if, &self.edge_key, &address, &self.db, extra)
    }
}

pub(crate) fn one_pop(k: u32, edge_prefix: &str, pop_prefix: &str, tag: &str) -> OnePop {
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
