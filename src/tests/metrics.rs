//! `/metrics` end to end: Debian's Prometheus server, started on loopback
//! with a temporary configuration and data directory and the alert rules of
//! `deploy/`, scrapes a real `geoedge run` while clients pass through it;
//! the test asks Prometheus's HTTP API and checks the values against the
//! traffic sent, the alerts against the edge's state, and runs every query
//! of the Grafana dashboard. Also: `promtool` on a scrape and on the deploy
//! files, the number of series under 100,000 distinct clients, and the
//! WireGuard metrics of a real handshake. And the metrics listener under
//! silent and trickling connections ([`listener`]).
//!
//! Needs `prometheus` and `promtool` (Debian's `prometheus` package, which
//! `.ci/run` installs): without them these tests skip with a printed reason,
//! and fail under CI. The WireGuard test also needs root and /dev/net/tun.

#[path = "metrics/listener.rs"]
mod listener;
use geoedge_testkit as support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping one target every second and evaluating the
/// deploy rules every second; killed (and its data removed) when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = repo().join("deploy/prometheus/rules.yml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: geoedge\n    static_configs:\n      - targets: ['{target}']\n",
                rules.display()
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let p = Prometheus { child, addr, dir };
        p.until("Prometheus ready", Duration::from_secs(30), || {
            std::net::TcpStream::connect(p.addr).is_ok() && http_get(p.addr, "/-/ready").0 == 200
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Polls `cond` until it holds, failing after `within`.
    fn until(&self, what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < within,
                "not within {within:?}: {what}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={}", encode(expr)));
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(status, 200, "{expr}: {body}");
        assert_eq!(v["status"], "success", "{expr}: {body}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query that yields one series (or `None`).
    fn value(&self, expr: &str) -> Option<f64> {
        match self.query(expr).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits (30 s at most) until `expr` yields `want`.
    fn expect(&self, expr: &str, want: f64) {
        let start = Instant::now();
        loop {
            let got = self.value(expr);
            if got == Some(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{expr}: {got:?}, expected {want}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The alerts Prometheus holds now: (name, state, labels).
    fn alerts(&self) -> Vec<(String, String, BTreeMap<String, String>)> {
        let (_, body) = http_get(self.addr, "/api/v1/alerts");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let labels = a["labels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect();
                (
                    a["labels"]["alertname"].as_str().unwrap().to_owned(),
                    a["state"].as_str().unwrap().to_owned(),
                    labels,
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every PromQL expression of the Grafana dashboard, with the dashboard's
/// variables filled in as Grafana would for "All" and a short range.
fn dashboard_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/grafana/geoedge.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            out.push((
                panel["title"].as_str().unwrap().to_owned(),
                expr.replace("$instance", ".*")
                    .replace("$__rate_interval", "1m"),
            ));
        }
    }
    assert!(out.len() > 20, "{} queries", out.len());
    out
}

/// One client: greeting, `echo`, `payload` bytes there and back, close.
/// Returns the backend and the bytes each way as the edge relays them.
async fn echo_client(edge: SocketAddr, claim: IpAddr, payload: usize) -> (String, u64, u64) {
    let mut c = connect_as(edge, claim).await;
    let mut greeting = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut c, &mut greeting)
        .await
        .unwrap();
    let backend = greeting
        .split_whitespace()
        .find_map(|w| w.strip_prefix("backend="))
        .unwrap_or_else(|| panic!("{claim}: no greeting"))
        .to_owned();
    let data: Vec<u8> = (0..payload as u64).map(pattern).collect();
    c.get_mut().write_all(b"echo\n").await.unwrap();
    c.get_mut().write_all(&data).await.unwrap();
    c.get_mut().shutdown().await.unwrap();
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, data, "{claim}");
    (
        backend,
        (5 + payload) as u64,
        (greeting.len() + payload) as u64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_what_the_traffic_did() {
    if !tool_or_skip("prometheus") || !tool_or_skip("promtool") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (gb, us, small) = (
        Backend::start("gb").await,
        Backend::start("us").await,
        Backend::start("small").await,
    );
    let refusing = Refusing::new();
    let dead = refusing.addr;
    add_backend(&db, "gb", "eu", "GB", gb.addr, 100, 200);
    add_backend(&db, "us", "us", "US", us.addr, 100, 200);
    add_backend(&db, "small", "sa", "BR", small.addr, 3, 3);
    add_backend(&db, "dead", "eu", "FR", dead, 100, 200);
    let edge = Edge::start(&edge_args(&db, &[]));
    let metrics = edge.metrics.expect("metrics listener");
    let prom = tokio::task::block_in_place(|| Prometheus::start(metrics));

    // 120 clients in Great Britain and 80 in the US, 1,000 bytes each way,
    // 20 at a time; then 10 in France, whose backend refuses: they fail
    // over to the nearest one in the region.
    let mut clients: Vec<(IpAddr, &str)> = (1..=120u8)
        .map(|i| (IpAddr::from([81, 2, 69, i]), "gb"))
        .chain((1..=80u8).map(|i| (IpAddr::from([207, 237, 0, i]), "us")))
        .collect();
    clients.extend((1..=10u8).map(|i| (IpAddr::from([212, 27, 48, i]), "gb")));
    let (mut up, mut down) = (0u64, 0u64);
    for batch in clients.chunks(20) {
        let runs: Vec<_> = batch
            .iter()
            .map(|&(ip, want)| {
                let addr = edge.addr;
                tokio::spawn(async move {
                    let got = echo_client(addr, ip, 1000).await;
                    assert_eq!(got.0, want, "{ip}");
                    got
                })
            })
            .collect();
        for r in runs {
            let (_, u, d) = r.await.unwrap();
            up += u;
            down += d;
        }
    }
    // Three clients in Brazil hold the small backend at its hard limit.
    let mut held = Vec::new();
    for i in 1..=3u8 {
        let mut c = connect_as(edge.addr, IpAddr::from([200, 160, 0, i])).await;
        assert_eq!(greeting(&mut c).await.as_deref(), Some("small"));
        c.get_mut().write_all(b"hold\n").await.unwrap();
        up += 5;
        down += format!("backend=small client=200.160.0.{i}\n").len() as u64;
        held.push(c);
    }

    tokio::task::block_in_place(|| {
        let ok = 213.0;
        prom.expect(r#"edge_connections_total{result="ok"}"#, ok);
        prom.expect("sum(edge_connections_total)", ok);
        prom.expect("edge_connections_current", 3.0);
        for (backend, n) in [("gb", 130.0), ("us", 80.0), ("small", 3.0), ("dead", 0.0)] {
            prom.expect(
                &format!(r#"edge_backend_connect_duration_seconds_count{{backend="{backend}"}}"#),
                n,
            );
        }
        prom.expect(
            r#"edge_connect_failures_total{backend="dead",reason="refused"}"#,
            10.0,
        );
        prom.expect(r#"sum(edge_connect_failures_total{backend!="dead"})"#, 0.0);
        prom.expect(r#"edge_routing_decisions_total{tier="country"}"#, ok);
        prom.expect(r#"edge_routing_decisions_total{tier="region"}"#, 10.0);
        prom.expect(r#"edge_bytes_total{direction="up"}"#, up as f64);
        prom.expect(r#"edge_bytes_total{direction="down"}"#, down as f64);
        prom.expect(
            r#"edge_backend_connections_current{backend="small",region="sa"}"#,
            3.0,
        );
        prom.expect(r#"edge_backend_connections_current{backend="gb"}"#, 0.0);
        prom.expect(r#"edge_backend_hard_limit{backend="small"}"#, 3.0);
        prom.expect(r#"edge_backend_soft_limit{backend="gb"}"#, 100.0);
        prom.expect(r#"edge_geoip_lookups_total{result="found"}"#, ok);
        prom.expect("edge_bindings_current", ok);
        prom.expect("edge_routing_generation", 1.0);
        prom.expect("edge_ready", 1.0);
        prom.expect("count(process_open_fds > 0)", 1.0);

        // The small backend is at its hard limit: the alert is on its way.
        prom.until(
            "GeoedgeBackendAtHardLimit pending",
            Duration::from_secs(30),
            || {
                prom.alerts().iter().any(|(name, state, labels)| {
                    name == "GeoedgeBackendAtHardLimit"
                        && (state == "pending" || state == "firing")
                        && labels.get("backend").map(String::as_str) == Some("small")
                        && labels.get("region").map(String::as_str) == Some("sa")
                })
            },
        );

        // An invalid edit (written as a tool that bypasses the schema's
        // triggers would) is refused, counted, and alerted on.
        drop_triggers(&db);
        sqlite3(&db, "UPDATE backends SET soft_limit = 500 WHERE id = 'gb';");
        prom.expect(r#"edge_routing_reloads_total{result="invalid"}"#, 1.0);
        prom.expect("edge_routing_generation", 1.0);
        prom.until(
            "GeoedgeRoutingReloadFailing firing",
            Duration::from_secs(30),
            || {
                prom.alerts().iter().any(|(name, state, _)| {
                    name == "GeoedgeRoutingReloadFailing" && state == "firing"
                })
            },
        );

        // Every dashboard query returns data (the WireGuard ones need a
        // backhaul: see the WireGuard test).
        for (title, expr) in dashboard_queries() {
            if expr.contains("edge_wireguard_") {
                continue;
            }
            let result = prom.query(&expr);
            assert!(
                !result.is_empty(),
                "panel {title:?}: {expr} returned nothing"
            );
        }

        // promtool finds nothing wrong with a scrape.
        let text = scrape(metrics);
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });

    drop(held);
    tokio::task::block_in_place(|| {
        prom.expect("edge_connections_current", 0.0);
        prom.expect(r#"edge_backend_connections_current{backend="small"}"#, 0.0);
    });
}

#[test]
fn promtool_accepts_the_deploy_files_and_the_alerts_pass_their_tests() {
    if !tool_or_skip("promtool") {
        return;
    }
    let deploy = repo().join("deploy/prometheus");
    for args in [
        &["check", "rules", "rules.yml"][..],
        &["test", "rules", "rules_test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&deploy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Label values of every series in a scrape.
fn label_values(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, rest)) = line.split_once('{') else {
            continue;
        };
        let labels = rest.rsplit_once('}').unwrap().0;
        for pair in labels.split("\",") {
            let value = pair.split_once("=\"").unwrap().1.trim_end_matches('"');
            out.push(value.to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_stay_bounded_under_100000_distinct_clients() {
    let dir = tempfile::tempdir().unwrap();
    let db = routing_db(dir.path());
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    add_backend(&db, "a", "eu", "GB", a.addr, 100_000, 200_000);
    add_backend(&db, "b", "eu", "DE", b.addr, 100_000, 200_000);
    let edge = Edge::launch(
        &edge_args(
            &db,
            &[
                "--binding-max-entries",
                "65536",
                // The per-client limits' table too: a rate keeps each
                // client's entry (its history) until it is evicted.
                "--client-rate",
                "100/60s",
                "--client-table-size",
                "10000",
            ],
        ),
        &[("RUST_LOG", "warn")],
        "listening ",
    );
    let metrics = edge.metrics.unwrap();
    let before = scrape(metrics);
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();

    // 100,000 public addresses (1.0.0.0 up), 64 clients at a time.
    const CLIENTS: u32 = 100_000;
    const PARALLEL: u32 = 64;
    let base = u32::from(Ipv4Addr::new(1, 0, 0, 0));
    let addr = edge.addr;
    let workers: Vec<_> = (0..PARALLEL)
        .map(|w| {
            tokio::spawn(async move {
                let mut i = w;
                while i < CLIENTS {
                    let claim = IpAddr::from(Ipv4Addr::from(base + i));
                    let mut c = connect_as(addr, claim).await;
                    assert!(greeting(&mut c).await.is_some(), "{claim}");
                    i += PARALLEL;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }

    let text = scrape(metrics);
    let cpu = metric(&text, "process_cpu_seconds_total").unwrap()
        - metric(&before, "process_cpu_seconds_total").unwrap();
    eprintln!(
        "the edge used {:.1} µs of CPU per connection",
        cpu * 1e6 / f64::from(CLIENTS)
    );
    assert_eq!(
        metric(&text, r#"edge_connections_total{result="ok"}"#),
        Some(f64::from(CLIENTS))
    );
    assert_eq!(
        metric(&text, r#"edge_geoip_lookups_total{result="not_found"}"#),
        Some(f64::from(CLIENTS))
    );
    // The binding table holds its maximum; the rest were evicted.
    assert_eq!(metric(&text, "edge_bindings_current"), Some(65_536.0));
    assert_eq!(
        metric(&text, "edge_binding_evictions_total"),
        Some(f64::from(CLIENTS) - 65_536.0)
    );
    // The per-client table holds at most its size (rounded up to a whole
    // number of clients per shard: 64 shards); the rest were evicted.
    let entries = metric(&text, "edge_client_table_entries").unwrap();
    assert!(
        (9_000.0..=10_048.0).contains(&entries),
        "{entries} clients tracked"
    );
    assert_eq!(
        metric(&text, "edge_client_table_evictions_total"),
        Some(f64::from(CLIENTS) - entries)
    );
    let n = series(&text);
    assert!(n < 2000, "{n} series");
    assert_eq!(n, series(&before), "clients added series");
    for v in label_values(&text) {
        assert!(
            v.parse::<IpAddr>().is_err() && v.split('.').count() < 4,
            "a label value looks like an address: {v}"
        );
    }
}

/// Removes the WireGuard configuration sockets the processes leave when
/// killed.
struct Sockets(Vec<PathBuf>);

impl Drop for Sockets {
    fn drop(&mut self) {
        for s in &self.0 {
            let _ = std::fs::remove_file(s);
        }
    }
}

#[test]
fn wireguard_metrics_show_the_handshake_and_the_garbage() {
    if skipped(privileged_skip_reason(&["ip"])) {
        return;
    }
    let pid = std::process::id();
    let n = 100 + pid % 100;
    let (pop_if, edge_if) = (format!("gmp{pid}"), format!("gme{pid}"));
    let _sockets = Sockets(vec![
        PathBuf::from(format!("/var/run/wireguard/{pop_if}.sock")),
        PathBuf::from(format!("/var/run/wireguard/{edge_if}.sock")),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (pop_key, pop_pub) = keypair(dir.path(), "pop.key");
    let (edge_key, edge_pub) = keypair(dir.path(), "edge.key");

    // The POP: `geoedge wg up` on loopback, knowing the edge's key.
    let pop_dir = dir.path().join("pop");
    std::fs::create_dir(&pop_dir).unwrap();
    let pop_db = routing_db(&pop_dir);
    sqlite3(
        &pop_db,
        &format!(
            "INSERT INTO wg_peers (public_key, allowed_ips) VALUES ('{edge_pub}', '10.82.{n}.0/24');"
        ),
    );
    let pop_port = free_port();
    let pop = Edge::launch(
        &[
            "wg",
            "up",
            "--routing-db",
            pop_db.to_str().unwrap(),
            "--wg-interface",
            &pop_if,
            "--wg-listen-port",
            &pop_port.to_string(),
            "--wg-private-key-file",
            pop_key.to_str().unwrap(),
            "--wg-address",
            &format!("10.81.{n}.1/24"),
        ],
        &[("RUST_LOG", "info")],
        "wireguard ",
    );

    // The edge: its peer is the POP, with the network behind it.
    let db = routing_db(dir.path());
    sqlite3(
        &db,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive)
               VALUES ('{pop_pub}', '127.0.0.1:{pop_port}', '10.83.{n}.0/24', 1);"
        ),
    );
    let edge_port = free_port();
    let edge = Edge::start(&edge_args(
        &db,
        &[
            "--wg-interface",
            &edge_if,
            "--wg-listen-port",
            &edge_port.to_string(),
            "--wg-private-key-file",
            edge_key.to_str().unwrap(),
            "--wg-address",
            &format!("10.82.{n}.1/24"),
        ],
    ));
    let metrics = edge.metrics.unwrap();
    let peer = |name: &str, extra: &str| {
        if extra.is_empty() {
            format!(r#"{name}{{peer="{pop_pub}"}}"#)
        } else {
            format!(r#"{name}{{peer="{pop_pub}",{extra}}}"#)
        }
    };

    // A datagram into the tunnel (and the keepalive) brings the handshake.
    let nudge = UdpSocket::bind("0.0.0.0:0").unwrap();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let _ = nudge.send_to(b"hello", format!("10.83.{n}.9:9"));
        let text = scrape(metrics);
        if metric(
            &text,
            r#"edge_wireguard_handshakes_total{result="completed"}"#,
        )
        .is_some_and(|c| c >= 1.0)
            && metric(
                &text,
                &peer("edge_wireguard_peer_bytes_total", r#"direction="rx""#),
            )
            .is_some_and(|b| b > 0.0)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no handshake in the metrics: {text}\n{:#?}\n{:#?}",
            edge.log(),
            pop.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(metric(&text, "edge_wireguard_peers"), Some(1.0));
    assert!(
        metric(
            &text,
            &peer("edge_wireguard_peer_bytes_total", r#"direction="tx""#)
        )
        .unwrap()
            > 0.0
    );
    let last = metric(
        &text,
        &peer("edge_wireguard_peer_last_handshake_timestamp_seconds", ""),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        last >= started - 1.0 && last <= now + 1.0,
        "last handshake {last}, test ran {started}..{now}"
    );
    assert_eq!(
        metric(&text, "edge_wireguard_invalid_packets_total"),
        Some(0.0)
    );

    // 50 garbage datagrams on the edge's WireGuard port, each counted.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..50u8 {
        junk.send_to(&[0xff, i, 1, 2, 3, 4, 5, 6], ("127.0.0.1", edge_port))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(metrics);
        let invalid = metric(&text, "edge_wireguard_invalid_packets_total").unwrap();
        if invalid >= 50.0 {
            assert_eq!(invalid, 50.0, "exactly the garbage sent");
            break;
        }
        assert!(Instant::now() < deadline, "invalid packets: {invalid}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The dashboard's WireGuard queries return data.
    if tool_or_skip("prometheus") {
        let prom = Prometheus::start(metrics);
        prom.expect("edge_wireguard_peers", 1.0);
        prom.until(
            "two samples of the WireGuard counters",
            Duration::from_secs(30),
            || {
                prom.value("count_over_time(edge_wireguard_peers[1m])")
                    .is_some_and(|c| c >= 2.0)
            },
        );
        for (title, expr) in dashboard_queries() {
            if expr.contains("edge_wireguard_") {
                assert!(
                    !prom.query(&expr).is_empty(),
                    "panel {title:?}: {expr} returned nothing"
                );
            }
        }
    }
    drop(edge);
    drop(pop);
}
