//! Measures the access log: the cost of formatting one line (text and
//! JSON), the cost of `log` on a worker, and how many lines per second the
//! writer puts in a file (and in /dev/null, which leaves only formatting,
//! batching and the write calls).
//!
//! `cargo run --release -p geoedge-access-log --example measure`; prints the
//! median and the spread (min–max) of several runs.

use std::time::{Duration, Instant, SystemTime};

use geoedge_access_log::{format_json, format_text, AccessLog, End, Format, Record, Sink};

const RUNS: usize = 7;

fn record(i: u64) -> Record {
    Record {
        start: SystemTime::now(),
        duration: Duration::from_millis(5031),
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
        connect_time: Some(Duration::from_micros(3400)),
        bytes_up: i,
        bytes_down: 88211,
        end: End::ClientClosed,
    }
}

/// Median, min, max.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn format_ns(f: fn(&Record, &mut String)) -> f64 {
    const N: u64 = 1_000_000;
    let r = record(123_456);
    let mut out = String::with_capacity(512);
    let t = Instant::now();
    for _ in 0..N {
        out.clear();
        f(std::hint::black_box(&r), &mut out);
        std::hint::black_box(&out);
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

/// Lines per second the writer got out for `n` records into `sink`. The
/// producer waits for room instead of dropping, so this is the writer's
/// pace. Records are clones of one (shared `Arc`s, a fresh SNI box), as a
/// worker's would be.
fn sink_rate(sink: Sink, n: u64) -> f64 {
    let log = AccessLog::start(sink, Format::Text, 65_536).unwrap();
    let cap = log.capacity() as u64;
    let template = record(0);
    let t = Instant::now();
    for i in 0..n {
        while log.queued() + 1 >= cap {
            std::thread::yield_now();
        }
        let mut r = template.clone();
        r.bytes_up = i;
        log.log(r);
    }
    log.close(Duration::from_secs(120));
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(log.dropped(), 0);
    assert_eq!(log.written(), n);
    n as f64 / secs
}

/// ns per `log` call for a burst of records into a queue with room for
/// all of them (the worker's cost; the writer drains meanwhile).
fn log_ns() -> f64 {
    const N: usize = 200_000;
    let log = AccessLog::start(Sink::File("/dev/null".into()), Format::Text, N).unwrap();
    let template = record(0);
    let records: Vec<Record> = (0..N).map(|_| template.clone()).collect();
    let t = Instant::now();
    for r in records {
        log.log(r);
    }
    let ns = t.elapsed().as_nanos() as f64 / N as f64;
    log.close(Duration::from_secs(120));
    assert_eq!(log.dropped(), 0);
    ns
}

fn main() {
    let (m, lo, hi) = stats((0..RUNS).map(|_| format_ns(format_text)).collect());
    println!("format_text: {m:.0} ns/line (min {lo:.0}, max {hi:.0}, {RUNS} runs of 1M)");
    let (m, lo, hi) = stats((0..RUNS).map(|_| format_ns(format_json)).collect());
    println!("format_json: {m:.0} ns/line (min {lo:.0}, max {hi:.0}, {RUNS} runs of 1M)");
    let mut line = String::new();
    format_text(&record(123_456), &mut line);
    println!("text line: {} bytes", line.len() + 1);

    let dir = tempfile::tempdir().unwrap();
    const N: u64 = 1_000_000;
    for (name, path) in [
        ("file (tmpdir)", Some(dir.path().join("access.log"))),
        ("/dev/null", None),
    ] {
        let mut rates = Vec::new();
        for _ in 0..RUNS {
            let p = path.clone().unwrap_or_else(|| "/dev/null".into());
            rates.push(sink_rate(Sink::File(p), N));
            if let Some(p) = &path {
                let _ = std::fs::remove_file(p);
            }
        }
        let (m, lo, hi) = stats(rates);
        println!(
            "{name}: {:.2} M lines/s (min {:.2}, max {:.2}, {RUNS} runs of 1M, text)",
            m / 1e6,
            lo / 1e6,
            hi / 1e6
        );
    }
    let (m, lo, hi) = stats((0..RUNS).map(|_| log_ns()).collect());
    println!("log(): {m:.0} ns/call (min {lo:.0}, max {hi:.0}, {RUNS} bursts of 200k)");
}
