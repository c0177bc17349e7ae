//! Test support for the binary's end-to-end tests: the `geoedge` process
//! (killed when dropped, also on failure), in-process backends that record
//! what they see, routing.db files edited by the `sqlite3` CLI, and PROXY v1
//! clients.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::{TcpListener, TcpStream};

/// The `geoedge` binary, with no `GEOEDGE_*` variables from the caller.
pub fn geoedge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_geoedge"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOEDGE_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs SQL through the `sqlite3` shell, as an operator would.
pub fn sqlite3(db: &Path, sql: &str) {
    let out = Command::new("sqlite3")
        .args(["-bail", "-cmd", ".timeout 5000"])
        .arg(db)
        .arg(sql)
        .output()
        .expect("the sqlite3 CLI is installed (apt-get install sqlite3)");
    assert!(
        out.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A real database fetched by `.ci/run`; under CI its absence is a failure.
pub fn real_db(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("GEOEDGE_GEODATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/geodata"));
    let path = dir.join(name);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: .ci/run fetches it",
        path.display()
    );
    eprintln!(
        "skipping: {} missing (run .ci/run to fetch)",
        path.display()
    );
    None
}

/// A routing.db with the sample regions and country map and no backends.
pub fn routing_db(dir: &Path) -> PathBuf {
    let path = dir.join("routing.db");
    let out = geoedge().args(["db", "init"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    sqlite3(&path, "DELETE FROM backends;");
    path
}

/// Adds a backend row.
pub fn add_backend(
    db: &Path,
    id: &str,
    region: &str,
    country: &str,
    addr: SocketAddr,
    soft: u32,
    hard: u32,
) {
    sqlite3(
        db,
        &format!(
            "INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit)
             VALUES ('{id}', '{region}', '{country}', '{}', {}, {soft}, {hard});",
            addr.ip(),
            addr.port()
        ),
    );
}

/// A running `geoedge run`, killed when dropped.
pub struct Edge {
    child: Child,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// The metrics and health listener's address, when it has one.
    pub metrics: Option<SocketAddr>,
    /// stderr lines, for diagnosis.
    lines: Arc<Mutex<Vec<String>>>,
    /// stdout lines.
    out: Arc<Mutex<Vec<String>>>,
}

impl Edge {
    /// Starts `geoedge <args>` and waits for its first `listening` line.
    pub fn start(args: &[&str]) -> Edge {
        Edge::launch(args, &[("RUST_LOG", "geoedge=debug,info")], "listening ")
    }

    /// Starts `geoedge <args>` with extra environment variables and waits
    /// for its first stdout line starting with `until` (`"listening "`, or
    /// `"metrics "` to catch it before it has loaded anything).
    ///
    /// Backend health is off unless `args` or `env` turn it on (here and in
    /// [`Edge::spawn`]): active
    /// checks would add connections to the counts that tests assert, and
    /// ejection would spare a refusing backend the connects they count. The
    /// health tests (`src/tests/backends.rs`) set it with flags, which win
    /// over these variables.
    pub fn launch(args: &[&str], env: &[(&str, &str)], until: &str) -> Edge {
        let mut cmd = geoedge();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Edge::spawn(cmd, until)
    }

    /// Starts a prepared `geoedge` command (limits, namespace, environment
    /// set by the caller) and waits for its first stdout line starting
    /// with `until`.
    pub fn spawn(mut cmd: Command, until: &str) -> Edge {
        // Backend health off unless asked for (see [`Edge::launch`]).
        for (k, v) in [
            ("GEOEDGE_HEALTH_CHECK_INTERVAL", "off"),
            ("GEOEDGE_EJECT_AFTER", "0"),
        ] {
            if !cmd.get_envs().any(|(key, _)| key == k) {
                cmd.env(k, v);
            }
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("geoedge starts");
        let out = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut edge = Edge {
            child,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            metrics: None,
            lines,
            out,
        };
        edge.wait_for(until);
        edge
    }

    /// Waits (20 s at most) for a stdout line starting with `prefix`, and
    /// takes the addresses from the lines so far.
    pub fn wait_for(&mut self, prefix: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.out.lock().unwrap().clone();
            for line in &out {
                if let Some(rest) = line.strip_prefix("metrics ") {
                    self.metrics = rest.trim().parse().ok();
                }
            }
            if let Some(rest) = out.iter().find_map(|l| l.strip_prefix("listening ")) {
                self.addr = rest.split_whitespace().nth(1).unwrap().parse().unwrap();
            }
            if out.iter().any(|l| l.starts_with(prefix)) {
                return;
            }
            if std::time::Instant::now() > deadline || self.child.try_wait().unwrap().is_some() {
                let _ = self.child.kill();
                panic!(
                    "geoedge printed no {prefix:?} line: {out:#?} {:#?}",
                    self.lines.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits (up to `within`) for the exit status.
    pub fn signal_and_wait(&mut self, signal: &str, within: Duration) -> std::process::ExitStatus {
        self.signal(signal);
        self.wait(within)
    }

    /// Sends a signal.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits (up to `within`) for the exit status.
    pub fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// What it logged so far.
    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Whether a command is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `tool` is installed; when it is not, says so and returns false
/// (the caller skips), except under CI, where it fails.
pub fn tool_or_skip(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "under CI this test must run: {tool} is not installed (.ci/run installs it)"
    );
    eprintln!("skipping: {tool} is not installed");
    false
}

/// Why a test that needs root, /dev/net/tun and `tools` cannot run here,
/// if it cannot. Under CI, missing tools are a failure rather than a skip.
pub fn privileged_skip_reason(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if !missing.is_empty() {
        let reason = format!("{} not installed", missing.join(", "));
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run: {reason}"
        );
        return Some(reason);
    }
    None
}

/// The pid of the test process that created namespace `name`, when the
/// name has the shape tests give their namespaces: `ge`, lower-case
/// letters, then the pid (`gepop1234`, `gepnca1234`). Any other name is
/// not a test's and yields `None`.
pub fn namespace_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("ge")?;
    let digits = rest.find(|c: char| !c.is_ascii_lowercase())?;
    let (letters, pid) = rest.split_at(digits);
    if letters.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 1)
}

/// Removes network namespaces left behind by test processes that were
/// killed before their cleanup ran. Only a namespace whose name encodes a
/// pid ([`namespace_pid`]) and whose process no longer exists is deleted; a
/// namespace whose pid is alive (the test running, or the pid reused) is
/// never touched. Call before creating a test's namespaces.
pub fn sweep_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Some(pid) = namespace_pid(name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let removed = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if removed {
            eprintln!("removed stale namespace {name}: its test process {pid} is gone");
        }
    }
}

/// Runs a command, panicking with its stderr when it fails; returns stdout.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `geoedge run` on 127.0.0.1:0 for the routing.db `db`, in region `eu`,
/// trusting PROXY headers from loopback and sending PROXY v1 to backends,
/// then `extra`.
pub fn edge_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--routing-db",
        db.to_str().unwrap(),
        "--region",
        "eu",
        "--proxy-protocol-from",
        "127.0.0.0/8",
        "--send-proxy-protocol",
        "v1",
        "--metrics-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args
}

/// A plain HTTP/1.0 GET (so the answer is never chunked): the status code
/// and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    (status, body.to_owned())
}

/// The text of `/metrics` on a metrics listener.
pub fn scrape(metrics: SocketAddr) -> String {
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series (`name{labels}` exactly as exposed) in a scrape.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A private key file (mode 0600) in `dir` and its public key, made with
/// `geoedge wg genkey` and `geoedge wg pubkey` (interchangeable with the
/// `wg` tool's).
#[allow(dead_code)] // not every test binary makes keys
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, String) {
    use std::io::Write;
    let out = geoedge().args(["wg", "genkey"]).output().unwrap();
    assert!(out.status.success());
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut c = geoedge()
        .args(["wg", "pubkey"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let public = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    (path, public.trim().to_owned())
}

/// A finished command's exit status and output, for assertion messages.
pub fn describe_output(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
