//! Unit tests: the formats (exact lines, hostile SNIs, timestamps against
//! known dates and humantime), the sink texts, and the writer against real
//! sinks: files (reopen, mode), /dev/full, a pipe nobody reads, a journald
//! socket in a temporary directory.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use geoedge_testkit::until;

use super::*;

/// Generous: a guard against a hang, not a timing target.
const GIVE_UP: Duration = Duration::from_secs(60);

/// 2026-12-06T22:31:07.123Z.
fn example_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_796_596_267_123)
}

/// The crate documentation's first example.
fn full() -> Record {
    Record {
        start: example_start(),
        duration: Duration::from_micros(5_031_900),
        client: "203.0.113.7:51234".parse().unwrap(),
        country: Some(*b"DE"),
        region: Some("eu-central".into()),
        app: "web".into(),
        sni: Some("shop.example.com".into()),
        listener: Some("0.0.0.0:443".parse().unwrap()),
        backend: Some("fra-2".into()),
        reason: Some("sticky"),
        tier: Some("country"),
        attempts: 1,
        connect_time: Some(Duration::from_micros(3_400)),
        bytes_up: 1532,
        bytes_down: 88211,
        end: End::ClientClosed,
    }
}

/// The crate documentation's second example: nothing known.
fn bare() -> Record {
    Record {
        start: example_start() + Duration::from_millis(877),
        duration: Duration::ZERO,
        client: SocketAddr::new(IpAddr::V6("2001:db8::7".parse().unwrap()), 40022),
        country: None,
        region: None,
        app: "web".into(),
        sni: None,
        listener: None,
        backend: None,
        reason: None,
        tier: None,
        attempts: 0,
        connect_time: None,
        bytes_up: 0,
        bytes_down: 0,
        end: End::NoBackend,
    }
}

fn text(r: &Record) -> String {
    let mut s = String::new();
    format_text(r, &mut s);
    s
}

fn json(r: &Record) -> String {
    let mut s = String::new();
    format_json(r, &mut s);
    s
}

/// A server name no client should send but anyone can.
const HOSTILE_SNI: &str = "a b\"c\\d\n\re\tf\0g\u{1b}[31m/h\u{7f}é\u{2028}-";

const JSON_KEYS: [&str; 16] = [
    "start",
    "duration_ms",
    "client",
    "country",
    "region",
    "app",
    "sni",
    "listener",
    "backend",
    "reason",
    "tier",
    "attempts",
    "connect_ms",
    "bytes_up",
    "bytes_down",
    "end",
];

#[test]
fn end_labels() {
    let labels: Vec<&str> = End::ALL.iter().map(End::as_str).collect();
    assert_eq!(
        labels,
        [
            "client_closed",
            "backend_closed",
            "idle_timeout",
            "client_limit",
            "client_rate",
            "no_backend",
            "connect_failed",
            "bad_header",
            "not_tls",
            "draining",
            "error"
        ]
    );
    assert_eq!(End::NotTls.to_string(), "not_tls");
}

#[test]
fn text_lines_are_the_documented_ones() {
    assert_eq!(
        text(&full()),
        "203.0.113.7:51234 [2026-12-06T22:31:07.123Z] 0.0.0.0:443 web/fra-2 3/5031 1532 88211 \
         client_closed DE eu-central sticky/country shop.example.com attempts=1"
    );
    assert_eq!(
        text(&bare()),
        "[2001:db8::7]:40022 [2026-12-06T22:31:08.000Z] - web/- -/0 0 0 no_backend - - -/- - attempts=0"
    );
    // The examples in the crate documentation are these lines.
    let doc = include_str!("lib.rs");
    assert!(doc.contains(&format!("//! {}\n", text(&full()))));
    assert!(doc.contains(&format!("//! {}\n", text(&bare()))));
    assert!(doc.contains(&format!("//! {}\n", json(&full()))));
}

#[test]
fn format_appends() {
    let mut s = String::from("x");
    format_text(&bare(), &mut s);
    format_json(&bare(), &mut s);
    assert!(s.starts_with("x[2001:db8::7]:40022 "));
    assert!(s.ends_with("\"end\":\"no_backend\"}"));
}

#[test]
fn json_has_every_key_in_order() {
    for r in [full(), bare()] {
        let line = json(&r);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), JSON_KEYS.len());
        // Key order as documented (the raw text, not the parsed map).
        let mut at = 0;
        for k in JSON_KEYS {
            let pos = line[at..].find(&format!("\"{k}\":")).unwrap() + at;
            at = pos;
        }
    }
    let v: serde_json::Value = serde_json::from_str(&json(&full())).unwrap();
    assert_eq!(v["start"], "2026-12-06T22:31:07.123Z");
    assert_eq!(v["duration_ms"], 5031);
    assert_eq!(v["client"], "203.0.113.7:51234");
    assert_eq!(v["country"], "DE");
    assert_eq!(v["connect_ms"], 3);
    assert_eq!(v["listener"], "0.0.0.0:443");
    assert_eq!(v["end"], "client_closed");
    let v: serde_json::Value = serde_json::from_str(&json(&bare())).unwrap();
    for k in [
        "country",
        "region",
        "sni",
        "listener",
        "backend",
        "reason",
        "tier",
        "connect_ms",
    ] {
        assert!(v[k].is_null(), "{k}");
    }
    assert_eq!(v["client"], "[2001:db8::7]:40022");
    assert_eq!(v["attempts"], 0);
}

#[test]
fn hostile_sni_round_trips_in_json() {
    let mut r = full();
    r.sni = Some(HOSTILE_SNI.into());
    r.app = "a\"pp".into();
    let line = json(&r);
    assert!(!line.contains('\n') && !line.contains('\r') && !line.contains('\0'));
    assert!(!line.bytes().any(|b| b < 0x20));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["sni"], HOSTILE_SNI);
    assert_eq!(v["app"], "a\"pp");
    assert_eq!(v.as_object().unwrap().len(), JSON_KEYS.len());
}

#[test]
fn hostile_sni_stays_one_field_in_text() {
    let mut r = full();
    r.sni = Some(HOSTILE_SNI.into());
    let line = text(&r);
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 13, "{line}");
    assert_eq!(
        fields[11],
        "a\\x20b\\x22c\\x5Cd\\x0A\\x0De\\x09f\\x00g\\x1B[31m\\x2Fh\\x7F\\xC3\\xA9\\xE2\\x80\\xA8-"
    );
    assert!(line.bytes().all(|b| (0x21..0x7f).contains(&b) || b == b' '));
    // Every free-text field, and the `-` that means unknown.
    let mut r = bare();
    r.app = "my app/x".into();
    r.backend = Some("-".into());
    r.region = Some("".into());
    r.reason = Some("a b");
    let line = text(&r);
    assert_eq!(line.split(' ').count(), 13, "{line}");
    assert!(line.contains(" my\\x20app\\x2Fx/\\x2D "), "{line}");
    assert!(line.contains(" no_backend - - a\\x20b/- - "), "{line}");
}

#[test]
fn escaping_multibyte_never_panics() {
    for s in [
        "é",
        "éa",
        "aé",
        "日本語.example",
        "\u{10FFFF}",
        "x\u{80}y",
        "-x",
        "--",
    ] {
        let mut out = String::new();
        push_escaped(&mut out, s);
        assert!(out.is_ascii(), "{s:?} -> {out}");
        assert!(!out.contains(' '));
    }
    let mut out = String::new();
    push_escaped(&mut out, "Shop-1.Example_x*:@+[::1]");
    assert_eq!(out, "Shop-1.Example_x*:@+[::1]");
}

#[test]
fn country_that_is_not_a_code_is_unknown() {
    let mut r = bare();
    r.country = Some([b' ', 0xff]);
    assert!(text(&r).contains(" no_backend - - "));
    let v: serde_json::Value = serde_json::from_str(&json(&r)).unwrap();
    assert!(v["country"].is_null());
}

fn ts(secs: u64, millis: u64) -> String {
    Rfc3339Millis::new(UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)).to_string()
}

#[test]
fn timestamps_at_known_dates() {
    assert_eq!(ts(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(ts(86_399, 999), "1970-01-01T23:59:59.999Z");
    assert_eq!(ts(951_782_400, 0), "2000-02-29T00:00:00.000Z");
    assert_eq!(ts(951_868_800, 0), "2000-03-01T00:00:00.000Z");
    assert_eq!(ts(4_107_456_000, 0), "2100-02-28T00:00:00.000Z");
    assert_eq!(ts(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    assert_eq!(ts(1_709_164_800, 1), "2024-02-29T00:00:00.001Z");
    assert_eq!(ts(1_735_689_599, 500), "2024-12-31T23:59:59.500Z");
    assert_eq!(ts(1_796_596_267, 123), "2026-12-06T22:31:07.123Z");
    assert_eq!(ts(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
    // Beyond four-digit years, and before the epoch: clamped.
    assert_eq!(ts(253_402_300_800, 0), "9999-12-31T23:59:59.999Z");
    assert_eq!(
        Rfc3339Millis::new(UNIX_EPOCH - Duration::from_secs(1)).as_str(),
        "1970-01-01T00:00:00.000Z"
    );
    // Sub-millisecond parts are cut, not rounded.
    let t = UNIX_EPOCH + Duration::from_nanos(1_999_999);
    assert_eq!(Rfc3339Millis::new(t).as_str(), "1970-01-01T00:00:00.001Z");
}

#[test]
fn timestamps_agree_with_humantime() {
    // Every day for 600 years, at an odd time of day, and pseudo-random
    // instants up to year 9999.
    let mut secs = 0u64;
    while secs < 600 * 366 * 86_400 {
        let t = UNIX_EPOCH + Duration::from_millis(secs * 1000 + 45_296_789);
        assert_eq!(
            Rfc3339Millis::new(t).to_string(),
            humantime::format_rfc3339_millis(t).to_string()
        );
        secs += 86_400;
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = UNIX_EPOCH + Duration::from_millis(x % 253_402_300_800_000);
        assert_eq!(
            Rfc3339Millis::new(t).to_string(),
            humantime::format_rfc3339_millis(t).to_string()
        );
    }
}

#[test]
fn sink_and_format_texts() {
    assert_eq!("stdout".parse::<Sink>().unwrap(), Sink::Stdout);
    assert_eq!("journald".parse::<Sink>().unwrap(), Sink::Journald);
    assert_eq!(
        "/var/log/geoedge/access.log".parse::<Sink>().unwrap(),
        Sink::File("/var/log/geoedge/access.log".into())
    );
    assert_eq!(
        "access.log".parse::<Sink>().unwrap(),
        Sink::File("access.log".into())
    );
    assert!("".parse::<Sink>().is_err());
    assert!("/var/log/".parse::<Sink>().is_err());
    assert_eq!("text".parse::<Format>().unwrap(), Format::Text);
    assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
    let e = "yaml".parse::<Format>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "access log format \"yaml\": expected text or json"
    );
    for s in ["stdout", "journald", "/a/b.log"] {
        assert_eq!(s.parse::<Sink>().unwrap().to_string(), s);
    }
}

#[test]
fn access_log_is_send_sync_clone() {
    fn ok<T: Send + Sync + Clone>() {}
    ok::<AccessLog>();
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn numbered(i: u64) -> Record {
    let mut r = full();
    r.bytes_up = i;
    r
}

#[test]
fn bad_paths_fail_at_start_with_the_path() {
    let e = AccessLog::start(
        Sink::File("/nonexistent-dir/x/access.log".into()),
        Format::Text,
        8,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "access log /nonexistent-dir/x/access.log: No such file or directory"
    );
    let dir = tempfile::tempdir().unwrap();
    let e = AccessLog::start(Sink::File(dir.path().to_owned()), Format::Text, 8).unwrap_err();
    assert!(e.to_string().contains("Is a directory"), "{e}");
    let e = AccessLog::start(Sink::Stdout, Format::Text, 0).unwrap_err();
    assert_eq!(e, AccessLogError::ZeroQueue);
}

#[test]
fn missing_journald_socket_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal/socket");
    let e = AccessLog::start_journald_at(&path, Format::Text, 8).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "journald socket {}: No such file or directory",
            path.display()
        )
    );
    let file = dir.path().join("plain");
    std::fs::write(&file, "").unwrap();
    let e = AccessLog::start_journald_at(&file, Format::Text, 8).unwrap_err();
    assert!(e.to_string().ends_with(": not a socket"), "{e}");
    if !Path::new(JOURNALD_SOCKET).exists() {
        let e = AccessLog::start(Sink::Journald, Format::Text, 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "journald socket /run/systemd/journal/socket: No such file or directory"
        );
    }
}

#[tokio::test]
async fn file_gets_lines_and_close_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    std::fs::write(&path, "earlier\n").unwrap();
    let log = AccessLog::start(Sink::File(path.clone()), Format::Json, 2048).unwrap();
    for i in 0..1000 {
        log.log(numbered(i));
    }
    log.close(GIVE_UP);
    assert_eq!(
        (log.written(), log.dropped(), log.errors(), log.queued()),
        (1000, 0, 0, 0)
    );
    let got = lines(&path);
    assert_eq!(got.len(), 1001);
    assert_eq!(got[0], "earlier");
    for (i, l) in got[1..].iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["bytes_up"], i as u64);
    }
    // Closed: dropped from now on; a second close returns.
    log.log(full());
    assert_eq!(log.dropped(), 1);
    log.close(GIVE_UP);
}

#[tokio::test]
async fn created_file_has_mode_0640() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.log");
    let log = AccessLog::start(Sink::File(path.clone()), Format::Text, 8).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    // 0640 less the umask.
    assert_eq!(mode & !0o640, 0, "mode {mode:o}");
    assert_ne!(mode & 0o600, 0, "mode {mode:o}");
    log.close(GIVE_UP);
}

#[tokio::test]
async fn reopen_after_rename_starts_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let log = AccessLog::start(Sink::File(path.clone()), Format::Text, 64).unwrap();
    for i in 0..10 {
        log.log(numbered(i));
    }
    until(
        || format!("10 lines, {log:?}"),
        GIVE_UP,
        || log.written() == 10,
    )
    .await;
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen();
    for i in 10..15 {
        log.log(numbered(i));
    }
    log.close(GIVE_UP);
    assert_eq!((log.written(), log.dropped(), log.errors()), (15, 0, 0));
    let old = lines(&rotated);
    let new = lines(&path);
    assert_eq!(old.len(), 10);
    assert_eq!(new.len(), 5);
    assert!(old[9].contains(" 9 88211 "), "{}", old[9]);
    assert!(new[0].contains(" 10 88211 "), "{}", new[0]);
    // Reopen is ordered with the records: no wait needed between them.
    let log = AccessLog::start(Sink::File(path.clone()), Format::Text, 64).unwrap();
    log.log(numbered(20));
    std::fs::rename(&path, dir.path().join("access.log.2")).unwrap();
    log.reopen();
    log.log(numbered(21));
    log.close(GIVE_UP);
    assert_eq!(lines(&dir.path().join("access.log.2")).len(), 6);
    assert_eq!(lines(&path).len(), 1);
}

/// Warnings about the /dev/full sink, counted by [`WarnCounter`].
static DEV_FULL_WARNS: AtomicU64 = AtomicU64::new(0);

/// A global tracing subscriber (the writer runs on a thread of its own)
/// that counts the warnings whose `sink` is /dev/full.
struct WarnCounter;

impl tracing::Subscriber for WarnCounter {
    fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
        *m.level() == tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        struct Sink(bool);
        impl tracing::field::Visit for Sink {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "sink" && format!("{v:?}").contains("/dev/full") {
                    self.0 = true;
                }
            }
        }
        let mut v = Sink(false);
        e.record(&mut v);
        if v.0 {
            DEV_FULL_WARNS.fetch_add(1, Relaxed);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn disk_full_is_counted_and_the_writer_goes_on() {
    let full_dev = Path::new("/dev/full");
    if !full_dev.exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    // The only test that writes to /dev/full, so the only one counted.
    let _ = tracing::subscriber::set_global_default(WarnCounter);
    let began = std::time::Instant::now();
    let log = AccessLog::start(Sink::File(full_dev.into()), Format::Text, 64).unwrap();
    for i in 0..10 {
        log.log(numbered(i));
    }
    until(
        || format!("10 errors, {log:?}"),
        GIVE_UP,
        || log.errors() == 10,
    )
    .await;
    // 30 more failed batches, one line each.
    for i in 0..30 {
        log.log(numbered(i));
        let want = 11 + i;
        until(
            || format!("{want} errors, {log:?}"),
            GIVE_UP,
            || log.errors() == want,
        )
        .await;
    }
    log.close(GIVE_UP);
    assert_eq!((log.written(), log.errors(), log.dropped()), (0, 40, 0));
    // Warned, but at most once per 10 s, not per failed batch.
    let warns = DEV_FULL_WARNS.load(Relaxed);
    let most = 1 + began.elapsed().as_secs() / writer::WARN_EVERY.as_secs();
    assert!(
        warns >= 1 && warns <= most,
        "{warns} warnings, at most {most}"
    );
}

#[tokio::test]
async fn a_stuck_sink_never_blocks_log() {
    // A pipe nobody reads: the writer blocks once it is full.
    let (reader, writer) = std::io::pipe().unwrap();
    let path = PathBuf::from(format!("/proc/self/fd/{}", writer.as_raw_fd()));
    let log = AccessLog::start(Sink::File(path), Format::Text, 64).unwrap();
    drop(writer);
    const N: u64 = 100_000;
    for i in 0..N {
        log.log(numbered(i));
    }
    // Returned: at most the queue, a batch and the pipe's buffer got out.
    assert!(log.dropped() > 0);
    // Once the writer is stuck the counters hold still and add up.
    until(
        || format!("counters add up, {log:?} queued {}", log.queued()),
        GIVE_UP,
        || log.written() + log.errors() + log.dropped() + log.queued() == N,
    )
    .await;
    // Closing the reader unsticks the writer (EPIPE): everything is
    // accounted for.
    drop(reader);
    log.close(GIVE_UP);
    assert_eq!(log.queued(), 0);
    assert_eq!(log.written() + log.errors() + log.dropped(), N);
    assert!(log.errors() > 0 || log.written() > 0);
}

/// journald's side: `KEY=value` lines.
fn parse_entry(datagram: &[u8]) -> HashMap<String, String> {
    let text = std::str::from_utf8(datagram).unwrap();
    assert!(text.ends_with('\n'));
    text.lines()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn journald_gets_native_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socket");
    let journal = UnixDatagram::bind(&path).unwrap();
    journal.set_read_timeout(Some(GIVE_UP)).unwrap();
    let log = AccessLog::start_journald_at(&path, Format::Text, 64).unwrap();
    let mut hostile = full();
    hostile.sni = Some(HOSTILE_SNI.into());
    hostile.end = End::BackendClosed;
    hostile.client = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 9);
    log.log(full());
    log.log(bare());
    log.log(hostile.clone());
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    for _ in 0..3 {
        let n = journal.recv(&mut buf).unwrap();
        got.push(parse_entry(&buf[..n]));
    }
    log.close(GIVE_UP);
    assert_eq!(log.written(), 3);

    let e = &got[0];
    assert_eq!(e["MESSAGE"], text(&full()));
    assert_eq!(e["SYSLOG_IDENTIFIER"], "geoedge");
    assert_eq!(e["PRIORITY"], "6");
    assert_eq!(e["GEOEDGE_END"], "client_closed");
    assert_eq!(e["GEOEDGE_CLIENT"], "203.0.113.7:51234");
    assert_eq!(e["GEOEDGE_APP"], "web");
    assert_eq!(e["GEOEDGE_BACKEND"], "fra-2");
    assert_eq!(e["GEOEDGE_COUNTRY"], "DE");
    assert_eq!(e["GEOEDGE_REGION"], "eu-central");
    assert_eq!(e["GEOEDGE_SNI"], "shop.example.com");
    assert_eq!(e["GEOEDGE_LISTENER"], "0.0.0.0:443");
    assert_eq!(e["GEOEDGE_DURATION_MS"], "5031");
    assert_eq!(e["GEOEDGE_BYTES_UP"], "1532");
    assert_eq!(e["GEOEDGE_BYTES_DOWN"], "88211");
    assert_eq!(e.len(), 14);

    let e = &got[1];
    assert_eq!(e["MESSAGE"], text(&bare()));
    assert_eq!(e["GEOEDGE_END"], "no_backend");
    for k in [
        "GEOEDGE_BACKEND",
        "GEOEDGE_COUNTRY",
        "GEOEDGE_SNI",
        "GEOEDGE_LISTENER",
    ] {
        assert!(!e.contains_key(k), "{k}");
    }

    let e = &got[2];
    assert_eq!(e["MESSAGE"], text(&hostile));
    assert_eq!(e["GEOEDGE_CLIENT"], "[::1]:9");
    assert_eq!(e["GEOEDGE_END"], "backend_closed");
    let mut sni = String::new();
    push_escaped(&mut sni, HOSTILE_SNI);
    assert_eq!(e["GEOEDGE_SNI"], sni);
    assert_eq!(e.len(), 14);
}

#[tokio::test]
async fn journald_json_message_and_a_gone_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socket");
    let journal = UnixDatagram::bind(&path).unwrap();
    journal.set_read_timeout(Some(GIVE_UP)).unwrap();
    let log = AccessLog::start_journald_at(&path, Format::Json, 64).unwrap();
    let mut r = full();
    r.sni = Some(HOSTILE_SNI.into());
    log.log(r);
    let mut buf = vec![0u8; 65536];
    let n = journal.recv(&mut buf).unwrap();
    let e = parse_entry(&buf[..n]);
    let v: serde_json::Value = serde_json::from_str(&e["MESSAGE"]).unwrap();
    assert_eq!(v["sni"], HOSTILE_SNI);
    // journald goes away: counted as errors, and the writer goes on.
    drop(journal);
    std::fs::remove_file(&path).unwrap();
    log.log(full());
    log.log(full());
    until(
        || format!("2 errors, {log:?}"),
        GIVE_UP,
        || log.errors() == 2,
    )
    .await;
    log.close(GIVE_UP);
    assert_eq!((log.written(), log.errors()), (1, 2));
}

#[test]
fn addresses_are_written_as_std_displays_them() {
    use std::net::{Ipv4Addr, SocketAddrV6};
    let mut addrs: Vec<SocketAddr> = [
        "0.0.0.0:0",
        "255.255.255.255:65535",
        "10.0.0.1:443",
        "[::]:0",
        "[::1]:443",
        "[2001:db8::7]:40022",
        "[::ffff:192.0.2.1]:80",
        "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    // The longest text there is (58 bytes): eight full groups and a scope.
    addrs.push(SocketAddr::V6(SocketAddrV6::new(
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
        65535,
        0,
        u32::MAX,
    )));
    for o in [0u8, 9, 10, 99, 100, 199, 255] {
        addrs.push(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(o, o, o, o)),
            u16::from(o) * 257,
        ));
    }
    for a in addrs {
        assert_eq!(crate::format::AddrText::new(&a).as_str(), a.to_string());
    }
}

#[test]
fn a_queue_slot_is_small() {
    // What `start` documents: a queued record takes about 240 bytes.
    let size = std::mem::size_of::<crate::writer::Msg>();
    assert!(size <= 248, "{size}");
}
