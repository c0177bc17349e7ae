//! SNI routing end to end: a real `geoedge run` with an `--sni-listen`
//! listener, routes in routing.db's `sni_routes` written and edited with
//! the `sqlite3` CLI while it runs.
//!
//! With real TLS: a CA and leaf certificates made by the `openssl` CLI,
//! `openssl s_server -WWW` backends (one per app, each serving a file that
//! names it), `openssl s_client` and `curl` clients that verify the
//! backend's certificate through the edge, which never terminates TLS.
//! With captured ClientHellos (`src/data/client_hello/tests/fixtures`)
//! written by hand, slowly and in pieces, to backends that record every
//! byte: what reaches the backend is the PROXY header and then exactly
//! what the client sent. Anything else on the listener is closed, counted
//! `not_tls`, and never dialed.

use geoedge_testkit as support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long a condition may take before the test gives up: a guard
/// against a hang, not a timing target.
const GIVE_UP: Duration = Duration::from_secs(30);

/// A child process, killed and reaped when dropped (also when the test
/// fails).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Collects the lines of a child's output in a thread.
fn collect_lines(from: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

/// Runs `cmd` with `input` on its stdin (then closed): its stdout when it
/// succeeds within `within`, else what went wrong (it is killed if it
/// hangs).
fn output_within(mut cmd: Command, input: &[u8], within: Duration) -> Result<String, String> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Guard(cmd.spawn().map_err(|e| format!("{cmd:?}: {e}"))?);
    if let Some(mut stdin) = child.0.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let read_all = |mut from: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = from.read_to_string(&mut text);
            text
        })
    };
    let out = read_all(Box::new(child.0.stdout.take().unwrap()));
    let err = read_all(Box::new(child.0.stderr.take().unwrap()));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(child);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    match status {
        Some(s) if s.success() => Ok(out),
        Some(s) => Err(format!("{cmd:?}: {s}\nstdout:\n{out}\nstderr:\n{err}")),
        None => Err(format!(
            "{cmd:?}: no exit within {within:?}\nstdout:\n{out}\nstderr:\n{err}"
        )),
    }
}

/// The backend an `s_server -WWW` answer names (`backend=APP`).
fn backend_of(body: &str) -> Option<String> {
    body.lines()
        .find_map(|l| l.trim().strip_prefix("backend="))
        .map(str::to_owned)
}

/// Runs `openssl ARGS` in `dir` (file names relative to it), panicking
/// with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        describe_output(&out)
    );
}

/// A test CA and the leaf certificates it signs, made by the `openssl` CLI
/// in a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// A CA (EC P-256, valid two days) in `dir`.
    fn new(dir: &Path) -> Pki {
        // A config of our own: nothing from the system's openssl.cnf.
        std::fs::write(
            dir.join("req.cnf"),
            "[req]\ndistinguished_name = dn\n[dn]\n",
        )
        .unwrap();
        openssl(
            dir,
            &[
                "req",
                "-config",
                "req.cnf",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=geoedge test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Pki {
            dir: dir.to_owned(),
        }
    }

    /// The CA certificate, the one clients trust.
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate for `sans` (DNS names) signed by the CA:
    /// `NAME.pem` and `NAME.key`.
    fn leaf(&self, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        let san: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
        let (ext, csr, key, cert) = (
            format!("{name}.ext"),
            format!("{name}.csr"),
            format!("{name}.key"),
            format!("{name}.pem"),
        );
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
                san.join(",")
            ),
        )
        .unwrap();
        openssl(
            &self.dir,
            &[
                "req",
                "-config",
                "req.cnf",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={}", sans[0]),
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}

/// An `openssl s_server -WWW` backend of one app: serves `whoami.txt`
/// (`backend=APP`) from a directory of its own, with a certificate for
/// `sans`. It serves one connection at a time.
struct TlsBackend {
    addr: SocketAddr,
    _process: Guard,
}

impl TlsBackend {
    fn start(pki: &Pki, app: &str, sans: &[&str]) -> TlsBackend {
        let (cert, key) = pki.leaf(app, sans);
        let root = pki.dir.join(format!("www-{app}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("whoami.txt"), format!("backend={app}\n")).unwrap();
        let log = std::fs::File::create(pki.dir.join(format!("s_server-{app}.log"))).unwrap();
        let mut child = Command::new("openssl")
            .args(["s_server", "-accept", "127.0.0.1:0", "-WWW", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("openssl s_server starts");
        let lines = collect_lines(child.stdout.take().unwrap());
        let process = Guard(child);
        // `ACCEPT 127.0.0.1:PORT` once it listens (not printed with -quiet).
        let deadline = Instant::now() + GIVE_UP;
        let addr = loop {
            let found = lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix("ACCEPT ")?.trim().parse().ok());
            if let Some(addr) = found {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "s_server of {app} printed no ACCEPT line: {:?}",
                lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        TlsBackend {
            addr,
            _process: process,
        }
    }
}

/// The request every TLS client sends.
const GET: &[u8] = b"GET /whoami.txt HTTP/1.0\r\n\r\n";

/// `curl https://NAME:PORT/whoami.txt` through the edge (NAME resolved to
/// it), verifying the certificate against the test CA and NAME: the
/// backend that answered, or why it failed.
fn curl(edge: SocketAddr, name: &str, ca: &Path) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--noproxy", "*", "--max-time", "20", "--resolve"])
        .arg(format!("{name}:{}:{}", edge.port(), edge.ip()))
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://{name}:{}/whoami.txt", edge.port()));
    let body = output_within(cmd, b"", GIVE_UP)?;
    backend_of(&body).ok_or_else(|| format!("no backend named in {body:?}"))
}

/// `openssl s_client` through the edge: a TLS session to `server_name`
/// (None: no SNI at all), the chain verified against the test CA (and the
/// name, when there is one), then the request: the backend that answered,
/// or why it failed.
fn s_client(edge: SocketAddr, server_name: Option<&str>, ca: &Path) -> Result<String, String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect"])
        .arg(edge.to_string())
        .args(["-verify_return_error", "-quiet", "-CAfile"])
        .arg(ca);
    match server_name {
        Some(name) => cmd.args(["-servername", name, "-verify_hostname", name]),
        None => cmd.arg("-noservername"),
    };
    let body = output_within(cmd, GET, GIVE_UP)?;
    backend_of(&body).ok_or_else(|| format!("no backend named in {body:?}"))
}

/// An `openssl s_client` session kept open: the handshake done (and the
/// certificate verified), the request not sent yet.
struct HeldSession {
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<String>>>,
    _process: Guard,
}

impl HeldSession {
    async fn open(edge: SocketAddr, name: &str, ca: &Path) -> HeldSession {
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect"])
            .arg(edge.to_string())
            .args(["-servername", name, "-verify_hostname", name])
            .args(["-verify_return_error", "-CAfile"])
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_client starts");
        let stdin = child.stdin.take().unwrap();
        let out = collect_lines(child.stdout.take().unwrap());
        let mut process = Guard(child);
        // Printed once the handshake is done and the chain verified.
        until(
            || format!("no verified handshake: {:?}", out.lock().unwrap()),
            GIVE_UP,
            || {
                assert!(
                    process.0.try_wait().unwrap().is_none(),
                    "s_client ended: {:?}",
                    out.lock().unwrap()
                );
                out.lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("Verify return code: 0 (ok)"))
            },
        )
        .await;
        HeldSession {
            stdin,
            out,
            _process: process,
        }
    }

    /// Sends the request over the session: the backend that answered.
    async fn ask(&mut self) -> String {
        self.stdin.write_all(GET).unwrap();
        self.stdin.flush().unwrap();
        let out = Arc::clone(&self.out);
        until(
            || format!("no answer on the held session: {:?}", out.lock().unwrap()),
            GIVE_UP,
            || backend_of(&out.lock().unwrap().join("\n")).is_some(),
        )
        .await;
        let answered = backend_of(&self.out.lock().unwrap().join("\n"));
        answered.unwrap()
    }
}

/// The value of a series in the edge's metrics (0 when absent).
fn series(edge: &Edge, name: &str) -> f64 {
    metric(&scrape(edge.metrics.unwrap()), name).unwrap_or(0.0)
}

fn hellos(edge: &Edge, result: &str) -> f64 {
    series(
        edge,
        &format!("edge_sni_hellos_total{{result=\"{result}\"}}"),
    )
}

fn conns(edge: &Edge, result: &str) -> f64 {
    series(
        edge,
        &format!("edge_connections_total{{result=\"{result}\"}}"),
    )
}

/// Adds a backend of `app` at `addr` (region eu).
fn add_app_backend(db: &Path, app: &str, addr: SocketAddr) {
    sqlite3(
        db,
        &format!(
            "INSERT INTO backends (id, app, region, country, wg_ip, port, soft_limit, hard_limit)
             VALUES ('{app}-1', '{app}', 'eu', 'GB', '{}', {}, 100, 200);",
            addr.ip(),
            addr.port()
        ),
    );
}

/// Three apps behind `openssl s_server`, routed by name, and an edge that
/// reads the ClientHello and forwards it untouched (no PROXY header: a TLS
/// server does not speak it).
struct TlsLab {
    pki: Pki,
    db: PathBuf,
    edge: Edge,
    /// The SNI listener.
    sni: SocketAddr,
    _backends: Vec<TlsBackend>,
    _dir: tempfile::TempDir,
}

impl TlsLab {
    /// The lab, or `None` (the test skips) without `openssl` or `curl`.
    fn start() -> Option<TlsLab> {
        if !tool_or_skip("openssl") || !tool_or_skip("curl") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        // b's certificate also covers a.example.com, the name that moves
        // to b when the route is edited; fallback's covers the names that
        // fall to it.
        let backends = vec![
            TlsBackend::start(&pki, "a", &["a.example.com"]),
            TlsBackend::start(
                &pki,
                "b",
                &["b.example.com", "*.b.example.com", "a.example.com"],
            ),
            TlsBackend::start(
                &pki,
                "fallback",
                &[
                    "fallback.example.com",
                    "*.example.com",
                    "unrouted.example.org",
                ],
            ),
        ];
        let db = routing_db(dir.path());
        for (app, b) in ["a", "b", "fallback"].iter().zip(&backends) {
            add_app_backend(&db, app, b.addr);
        }
        // An exact name, an exact name and a wildcard for b, and a shorter
        // wildcard that the longer one beats.
        sqlite3(
            &db,
            "INSERT INTO sni_routes (hostname, app) VALUES
               ('a.example.com', 'a'),
               ('b.example.com', 'b'),
               ('*.b.example.com', 'b'),
               ('*.example.com', 'fallback');",
        );
        let edge = Edge::start(&[
            "run",
            "--routing-db",
            db.to_str().unwrap(),
            "--region",
            "eu",
            "--sni-listen",
            "fallback=127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ]);
        let listeners = edge.listeners();
        assert_eq!(listeners.len(), 1, "{listeners:?}");
        assert!(listeners[0].2, "an SNI listener: {listeners:?}");
        assert_eq!(listeners[0].0, "fallback");
        let sni = listeners[0].1;
        Some(TlsLab {
            pki,
            db,
            edge,
            sni,
            _backends: backends,
            _dir: dir,
        })
    }
}

#[tokio::test]
async fn tls_clients_reach_the_app_of_their_server_name_and_verify_its_certificate() {
    let Some(lab) = TlsLab::start() else {
        return;
    };
    let ca = lab.pki.ca();
    let routed = |name: &str, got: Result<String, String>, app: &str| {
        assert_eq!(got.as_deref(), Ok(app), "{name}");
    };
    // Exact names, verified against the name.
    routed(
        "s_client a.example.com",
        s_client(lab.sni, Some("a.example.com"), &ca),
        "a",
    );
    routed(
        "curl a.example.com",
        curl(lab.sni, "a.example.com", &ca),
        "a",
    );
    routed(
        "s_client b.example.com",
        s_client(lab.sni, Some("b.example.com"), &ca),
        "b",
    );
    // Server names are case-insensitive: the route is written lower-case.
    routed(
        "s_client A.Example.COM",
        s_client(lab.sni, Some("A.Example.COM"), &ca),
        "a",
    );
    // The longest wildcard wins: *.b.example.com over *.example.com.
    routed(
        "curl x.b.example.com",
        curl(lab.sni, "x.b.example.com", &ca),
        "b",
    );
    routed(
        "curl other.example.com",
        curl(lab.sni, "other.example.com", &ca),
        "fallback",
    );
    // No route: the listener's app.
    routed(
        "curl unrouted.example.org",
        curl(lab.sni, "unrouted.example.org", &ca),
        "fallback",
    );
    // No SNI at all: the listener's app (the chain verified, no name).
    routed(
        "s_client -noservername",
        s_client(lab.sni, None, &ca),
        "fallback",
    );
    // The check is real: a name the certificate that answers does not
    // cover fails verification, end to end.
    let mismatch = curl(lab.sni, "elsewhere.example.net", &ca);
    assert!(
        mismatch
            .as_ref()
            .is_err_and(|e| e.contains("certificate") || e.contains("SSL")),
        "a name fallback's certificate does not cover: {mismatch:?}"
    );
    assert_eq!(hellos(&lab.edge, "routed"), 6.0);
    assert_eq!(hellos(&lab.edge, "unmatched"), 2.0);
    assert_eq!(hellos(&lab.edge, "no_sni"), 1.0);
    assert_eq!(conns(&lab.edge, "not_tls"), 0.0);
}

#[tokio::test]
async fn an_sni_route_edit_moves_new_connections_and_leaves_open_ones() {
    let Some(lab) = TlsLab::start() else {
        return;
    };
    let ca = lab.pki.ca();
    assert_eq!(curl(lab.sni, "a.example.com", &ca).as_deref(), Ok("a"));
    // A session to a, handshake done, request not sent yet (s_server
    // serves one connection at a time: a is busy with it from now on).
    let mut held = HeldSession::open(lab.sni, "a.example.com", &ca).await;
    let generation = series(&lab.edge, "edge_routing_generation");
    sqlite3(
        &lab.db,
        "UPDATE sni_routes SET app = 'b' WHERE hostname = 'a.example.com';",
    );
    until(
        || "the edited sni_routes never applied".into(),
        GIVE_UP,
        || series(&lab.edge, "edge_routing_generation") > generation,
    )
    .await;
    // New connections for a.example.com reach b (whose certificate also
    // covers the name: verified against it). A try that still reached a
    // would wait behind the held session: it gives up and tries again.
    let last = std::cell::RefCell::new(Err(String::new()));
    until(
        || format!("a.example.com never reached b: {:?}", last.borrow()),
        GIVE_UP,
        || {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--noproxy", "*", "--max-time", "5", "--resolve"])
                .arg(format!("a.example.com:{}:127.0.0.1", lab.sni.port()))
                .arg("--cacert")
                .arg(&ca)
                .arg(format!(
                    "https://a.example.com:{}/whoami.txt",
                    lab.sni.port()
                ));
            let got =
                output_within(cmd, b"", GIVE_UP).and_then(|body| backend_of(&body).ok_or(body));
            let reached_b = got.as_deref() == Ok("b");
            *last.borrow_mut() = got;
            reached_b
        },
    )
    .await;
    assert_eq!(
        s_client(lab.sni, Some("a.example.com"), &ca).as_deref(),
        Ok("b")
    );
    // The session opened before the edit still talks to a.
    assert_eq!(held.ask().await, "a");
    // And b's own names are b's still.
    assert_eq!(curl(lab.sni, "x.b.example.com", &ca).as_deref(), Ok("b"));
}

/// A plain TCP backend that records every byte of every connection, in
/// the order they were accepted, and answers nothing.
struct Recorder {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::new()));
        let (count, all) = (Arc::clone(&accepted), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let index = {
                    let mut all = all.lock().unwrap();
                    all.push(Vec::new());
                    all.len() - 1
                };
                count.fetch_add(1, Ordering::SeqCst);
                let all = Arc::clone(&all);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        all.lock().unwrap()[index].extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        Recorder {
            addr,
            accepted,
            conns,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits until connection `index` has brought `expected.len()` bytes
    /// (or more), and checks they are exactly `expected`.
    async fn expect(&self, index: usize, expected: &[u8], what: &str) {
        let conns = Arc::clone(&self.conns);
        until(
            || {
                let got = conns.lock().unwrap().get(index).map(Vec::len);
                format!("{what}: {got:?} of {} bytes", expected.len())
            },
            GIVE_UP,
            || {
                conns
                    .lock()
                    .unwrap()
                    .get(index)
                    .is_some_and(|c| c.len() >= expected.len())
            },
        )
        .await;
        let got = self.conns.lock().unwrap()[index].clone();
        assert!(
            got == expected,
            "{what}: the backend got\n{:?}\nnot\n{:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }
}

/// A captured ClientHello (see the fixtures' README).
fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/data/client_hello/tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A hello of one TLS record re-framed as two records, the handshake
/// message split after `at` of its bytes.
fn two_records(hello: &[u8], at: usize) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    assert_eq!(hello.len(), 5 + len, "one record");
    let body = &hello[5..];
    let mut out = Vec::new();
    for part in [&body[..at], &body[at..]] {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// Connects (TCP_NODELAY: each piece its own segment) and writes `bytes`
/// in pieces of `piece` bytes, pausing between them.
async fn send_in_pieces(to: SocketAddr, bytes: &[u8], piece: usize, pause: Duration) -> TcpStream {
    let mut s = TcpStream::connect(to).await.unwrap();
    s.set_nodelay(true).unwrap();
    for chunk in bytes.chunks(piece) {
        s.write_all(chunk).await.unwrap();
        tokio::time::sleep(pause).await;
    }
    s
}

/// The PROXY v1 header geoedge sends for a direct client `c` of `listener`.
fn proxy_v1(c: &TcpStream, listener: SocketAddr) -> Vec<u8> {
    let from = c.local_addr().unwrap();
    format!(
        "PROXY TCP4 {} {} {} {}\r\n",
        from.ip(),
        listener.ip(),
        from.port(),
        listener.port()
    )
    .into_bytes()
}

/// Whether the edge closes `c` (end-of-file or a reset) within the give-up.
async fn closed_by_edge(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(GIVE_UP, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// An edge with one SNI listener (app `fallback` for unmatched names and
/// hellos without one) sending PROXY v1 to backends that record.
async fn recording_edge(db: &Path, header_timeout: &str) -> Edge {
    Edge::start(&[
        "run",
        "--routing-db",
        db.to_str().unwrap(),
        "--region",
        "eu",
        "--sni-listen",
        "fallback=127.0.0.1:0",
        "--send-proxy-protocol",
        "v1",
        "--proxy-header-timeout",
        header_timeout,
        "--metrics-listen",
        "127.0.0.1:0",
    ])
}

#[tokio::test]
async fn hellos_in_pieces_reach_the_backend_unchanged_and_anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, fallback) = (Recorder::start().await, Recorder::start().await);
    add_app_backend(&db, "a", a.addr);
    add_app_backend(&db, "fallback", fallback.addr);
    sqlite3(
        &db,
        "INSERT INTO sni_routes (hostname, app) VALUES
           ('a.example.com', 'a'), ('c.example.com', 'a');",
    );
    // Time enough for the slow writers below: this test is not about the
    // timeout.
    let edge = recording_edge(&db, "20s").await;
    let sni = edge.addr;
    let pause = Duration::from_millis(5);

    // A one-record hello (a.example.com) a few bytes at a time, each its
    // own segment.
    let tls13 = fixture("openssl_tls13.bin");
    let c = send_in_pieces(sni, &tls13, 5, pause).await;
    let mut expected = proxy_v1(&c, sni);
    expected.extend_from_slice(&tls13);
    a.expect(0, &expected, "tls13 in 5-byte pieces").await;
    drop(c);

    // A hello OpenSSL split over four records (c.example.com), written in
    // pieces that cut across the record boundaries, with application data
    // behind it in the last piece: all of it forwarded, in order.
    let fragmented = fixture("openssl_fragmented.bin");
    let mut sent = fragmented.clone();
    sent.extend((0..200u64).map(pattern));
    let c = send_in_pieces(sni, &sent, 333, pause).await;
    let mut expected = proxy_v1(&c, sni);
    expected.extend_from_slice(&sent);
    a.expect(1, &expected, "four records and data behind them")
        .await;
    drop(c);

    // The same one-record hello re-framed as two records, cut inside the
    // handshake header (type and one byte of the length in the first).
    let reframed = two_records(&tls13, 2);
    let c = send_in_pieces(sni, &reframed, 7, pause).await;
    let mut expected = proxy_v1(&c, sni);
    expected.extend_from_slice(&reframed);
    a.expect(2, &expected, "two records, cut in the handshake header")
        .await;
    drop(c);

    // No SNI, and a name no route matches (curl's, b.example.com): the
    // listener's app.
    for (i, name) in ["openssl_no_sni.bin", "curl.bin"].into_iter().enumerate() {
        let hello = fixture(name);
        let c = send_in_pieces(sni, &hello, 64, pause).await;
        let mut expected = proxy_v1(&c, sni);
        expected.extend_from_slice(&hello);
        fallback.expect(i, &expected, name).await;
    }
    assert_eq!(a.accepted(), 3);
    assert_eq!(fallback.accepted(), 2);
    assert_eq!(hellos(&edge, "routed"), 3.0);
    assert_eq!(hellos(&edge, "no_sni"), 1.0);
    assert_eq!(hellos(&edge, "unmatched"), 1.0);

    // Plain text: closed, counted, never dialed.
    let mut c = TcpStream::connect(sni).await.unwrap();
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    assert!(closed_by_edge(&mut c).await, "plain text left open");
    until(
        || "not_tls not counted".into(),
        GIVE_UP,
        || conns(&edge, "not_tls") == 1.0,
    )
    .await;
    assert_eq!((a.accepted(), fallback.accepted()), (3, 2), "dialed");
    assert_eq!(hellos(&edge, "routed"), 3.0);
}

#[tokio::test]
async fn a_hello_that_never_completes_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let fallback = Recorder::start().await;
    add_app_backend(&db, "fallback", fallback.addr);
    let edge = recording_edge(&db, "1s").await;
    let tls13 = fixture("openssl_tls13.bin");
    // Half a hello, then nothing; and a client that sends nothing at all.
    let mut half = send_in_pieces(edge.addr, &tls13[..tls13.len() / 2], 64, Duration::ZERO).await;
    let mut silent = TcpStream::connect(edge.addr).await.unwrap();
    assert!(closed_by_edge(&mut half).await, "half a hello left open");
    assert!(
        closed_by_edge(&mut silent).await,
        "a silent client left open"
    );
    until(
        || "not_tls not counted twice".into(),
        GIVE_UP,
        || conns(&edge, "not_tls") == 2.0,
    )
    .await;
    assert_eq!(fallback.accepted(), 0, "dialed");
    for result in ["routed", "unmatched", "no_sni"] {
        assert_eq!(hellos(&edge, result), 0.0, "{result}");
    }
}

/// A PROXY v2 header (PROXY command, TCP over IPv4) from `src` to `dst`.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only here");
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_hello_follows_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, fallback) = (Recorder::start().await, Recorder::start().await);
    add_app_backend(&db, "a", a.addr);
    add_app_backend(&db, "fallback", fallback.addr);
    sqlite3(
        &db,
        "INSERT INTO sni_routes (hostname, app) VALUES ('a.example.com', 'a');",
    );
    let edge = Edge::start(&[
        "run",
        "--routing-db",
        db.to_str().unwrap(),
        "--region",
        "eu",
        "--sni-listen",
        "fallback=127.0.0.1:0",
        "--proxy-protocol-from",
        "127.0.0.0/8",
        "--send-proxy-protocol",
        "v1",
        "--proxy-header-timeout",
        "20s",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let sni = edge.addr;
    let tls13 = fixture("openssl_tls13.bin");
    let pause = Duration::from_millis(5);

    // A v1 header and the whole hello in one segment: the backend gets
    // geoedge's header for the client the proxy named, then the hello.
    let v1 = b"PROXY TCP4 81.2.69.142 192.0.2.1 40000 443\r\n";
    let mut sent = v1.to_vec();
    sent.extend_from_slice(&tls13);
    let c = send_in_pieces(sni, &sent, sent.len(), Duration::ZERO).await;
    let mut expected = v1.to_vec();
    expected.extend_from_slice(&tls13);
    a.expect(0, &expected, "v1 header and hello at once").await;
    drop(c);

    // A v2 header with the hello's first bytes behind it in one segment,
    // the rest of the hello a few bytes at a time.
    let (from, to): (SocketAddr, SocketAddr) = (
        "81.2.69.143:40001".parse().unwrap(),
        "192.0.2.1:443".parse().unwrap(),
    );
    let mut first = proxy_v2(from, to);
    first.extend_from_slice(&tls13[..3]);
    let mut c = send_in_pieces(sni, &first, first.len(), Duration::ZERO).await;
    tokio::time::sleep(pause).await;
    for chunk in tls13[3..].chunks(9) {
        c.write_all(chunk).await.unwrap();
        tokio::time::sleep(pause).await;
    }
    let mut expected = b"PROXY TCP4 81.2.69.143 192.0.2.1 40001 443\r\n".to_vec();
    expected.extend_from_slice(&tls13);
    a.expect(1, &expected, "v2 header, then the hello in pieces")
        .await;
    drop(c);
    assert_eq!(hellos(&edge, "routed"), 2.0);

    // A hello declaring more than 16 KiB: refused at once, never dialed.
    let mut huge = v1.to_vec();
    huge.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x4e, 0x20]);
    huge.extend_from_slice(&[0u8; 1000]);
    let mut c = send_in_pieces(sni, &huge, huge.len(), Duration::ZERO).await;
    assert!(closed_by_edge(&mut c).await, "an oversized hello left open");
    // Half a hello, then the client's end-of-file.
    let mut half = v1.to_vec();
    half.extend_from_slice(&tls13[..100]);
    let mut c = send_in_pieces(sni, &half, half.len(), Duration::ZERO).await;
    c.shutdown().await.unwrap();
    assert!(
        closed_by_edge(&mut c).await,
        "a closed half hello left open"
    );
    until(
        || "not_tls not counted twice".into(),
        GIVE_UP,
        || conns(&edge, "not_tls") == 2.0,
    )
    .await;
    assert_eq!((a.accepted(), fallback.accepted()), (2, 0), "dialed");
}
