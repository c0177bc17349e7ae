//! The `geoedge` binary under test as the tests run it: [`geoedge`] (a
//! command with none of the caller's `GEOEDGE_*` variables), [`Edge`] (a
//! running `geoedge run`, killed when dropped, also on failure), and the
//! routing.db files, arguments and keys it starts with.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cmd::sqlite3;

/// Where the `geoedge` binary is: `CARGO_BIN_EXE_geoedge` when cargo set
/// it for the running test, else beside the test binary's `deps/` folder
/// (cargo builds the package's binaries before its integration tests).
pub fn geoedge_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CARGO_BIN_EXE_geoedge") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in <target>/<profile>/deps");
    let path = dir.join("geoedge");
    assert!(
        path.is_file(),
        "{} is missing: run the tests of the geoedge package with cargo",
        path.display()
    );
    path
}

/// The `geoedge` binary, with no `GEOEDGE_*` variables from the caller.
pub fn geoedge() -> Command {
    let mut c = Command::new(geoedge_path());
    without_geoedge_env(&mut c);
    c
}

/// The one `GEOEDGE_*` setting a test run passes to every edge it starts:
/// the worker engine, so that `.ci/run` can run the end-to-end tests once
/// on each (a test that names `--engine` itself still wins: flags over the
/// environment).
pub const ENGINE_VAR: &str = "GEOEDGE_ENGINE";

/// Keeps the caller's `GEOEDGE_*` variables from `cmd` (settings the test
/// did not choose), except [`ENGINE_VAR`].
pub fn without_geoedge_env(cmd: &mut Command) {
    for (k, _) in std::env::vars() {
        if k.starts_with("GEOEDGE_") && k != ENGINE_VAR {
            cmd.env_remove(k);
        }
    }
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
    /// The process's `TMPDIR` (unless the caller set one), removed after
    /// it is killed (fields drop after [`Drop::drop`]): a `demo` killed
    /// before it can clean up leaves its files here, not in the machine's
    /// temporary directory.
    _tmp: Option<tempfile::TempDir>,
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
        let tmp = if cmd.get_envs().any(|(key, _)| key == "TMPDIR") {
            None
        } else {
            let dir = tempfile::Builder::new()
                .prefix("geoedge-kit-")
                .tempdir()
                .expect("a temporary directory for geoedge");
            cmd.env("TMPDIR", dir.path());
            Some(dir)
        };
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
            _tmp: tmp,
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
                let rest = rest.strip_prefix("sni ").unwrap_or(rest);
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

    /// Every client listener so far, from its `listening [sni] APP ADDR`
    /// lines: (app, address, reads the ClientHello), in order.
    pub fn listeners(&self) -> Vec<(String, SocketAddr, bool)> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let rest = l.strip_prefix("listening ")?;
                let (sni, rest) = match rest.strip_prefix("sni ") {
                    Some(rest) => (true, rest),
                    None => (false, rest),
                };
                let (app, addr) = rest.split_once(' ')?;
                Some((app.to_owned(), addr.trim().parse().ok()?, sni))
            })
            .collect()
    }

    /// The address of the listener of `app` (the first one).
    pub fn listener(&self, app: &str) -> SocketAddr {
        self.listeners()
            .into_iter()
            .find(|(a, _, _)| a == app)
            .unwrap_or_else(|| panic!("no listener of {app}: {:?}", self.listeners()))
            .1
    }

    /// What it printed on stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
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

/// `geoedge run` on 127.0.0.1:0 for the routing.db `db`, in region `eu`
/// (unless `extra` gives `--region`), trusting PROXY headers from loopback
/// and sending PROXY v1 to backends, then `extra`.
pub fn edge_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--listen",
        "127.0.0.1:0",
        "--routing-db",
        db.to_str().unwrap(),
    ];
    if !extra.contains(&"--region") {
        args.extend_from_slice(&["--region", "eu"]);
    }
    args.extend_from_slice(&[
        "--proxy-protocol-from",
        "127.0.0.0/8",
        "--send-proxy-protocol",
        "v1",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    args.extend_from_slice(extra);
    args
}

/// A private key file (mode 0600) in `dir` and its public key, made with
/// `geoedge wg genkey` and `geoedge wg pubkey` (interchangeable with the
/// `wg` tool's).
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

/// Raises this test process's soft descriptor limit to its hard limit (at
/// most 2^20): load tests hold thousands of sockets.
pub fn raise_own_nofile() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain rlimit calls on our own process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max.min(1 << 20);
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
}

/// Open descriptors of a process (0 when it is gone).
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A log line without its ANSI colour sequences.
pub fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

/// Sets the descriptor limits (`RLIMIT_NOFILE`) of the running process
/// `pid`, as `prlimit --nofile=SOFT:HARD --pid PID` does.
pub fn set_nofile(pid: u32, soft: u64, hard: u64) {
    let rl = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit reads the struct we pass and writes nothing.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &rl,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}
