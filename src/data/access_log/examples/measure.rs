//! Measures the access log: the cost of formatting one line (text and
//! JSON), the cost of `log` on a worker, and how many lines per second the
//! writer puts in a file (and in /dev/null, which leaves only formatting,
//! batching and the write calls).
//!
//! `cargo run --release -p geoedge-access-log --example measure`; prints the
//! median and the spread (min–max) of several runs, by the wall clock and
//! by the thread's time on a CPU (`/proc/.../schedstat`), which is what
//! counts on a machine shared with other load.

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

/// Nanoseconds a thread has spent on a CPU: the first field of its
/// schedstat file.
fn cpu_ns(schedstat: &str) -> u64 {
    std::fs::read_to_string(schedstat)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn my_cpu_ns() -> u64 {
    cpu_ns("/proc/thread-self/schedstat")
}

/// The writer thread's schedstat file (the thread names itself once it
/// runs, so look until it has).
fn writer_schedstat() -> String {
    loop {
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "access-log" {
                return task.path().join("schedstat").display().to_string();
            }
        }
        std::thread::yield_now();
    }
}

/// Median, min, max.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn show(what: &str, unit: &str, wall: Vec<f64>, cpu: Vec<f64>) {
    let (m, lo, hi) = stats(wall);
    let (cm, clo, chi) = stats(cpu);
    println!(
        "{what}: {cm:.2} {unit} on-CPU (min {clo:.2}, max {chi:.2}); \
         wall {m:.2} (min {lo:.2}, max {hi:.2}); {RUNS} runs"
    );
}

/// ns per line, wall and on-CPU.
fn format_ns(f: fn(&Record, &mut String)) -> (f64, f64) {
    const N: u64 = 1_000_000;
    let r = record(123_456);
    let mut out = String::with_capacity(512);
    let c = my_cpu_ns();
    let t = Instant::now();
    for _ in 0..N {
        out.clear();
        f(std::hint::black_box(&r), &mut out);
        std::hint::black_box(&out);
    }
    let wall = t.elapsed().as_nanos() as f64 / N as f64;
    (wall, (my_cpu_ns() - c) as f64 / N as f64)
}

/// Million lines per second the writer got out for `n` records into
/// `sink`: by the wall clock, and per second of the writer thread's CPU.
/// The producer waits for room instead of dropping, so this is the
/// writer's pace. Records are clones of one (shared `Arc`s, a fresh SNI
/// box), as a worker's would be.
fn sink_rate(sink: Sink, n: u64) -> (f64, f64) {
    let log = AccessLog::start(sink, Format::Text, 65_536).unwrap();
    let writer = writer_schedstat();
    let cap = log.capacity() as u64;
    let template = record(0);
    let c = cpu_ns(&writer);
    let t = Instant::now();
    for i in 0..n {
        while log.queued() + 1 >= cap {
            std::thread::yield_now();
        }
        let mut r = template.clone();
        r.bytes_up = i;
        log.log(r);
    }
    while log.written() < n {
        std::thread::yield_now();
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = (cpu_ns(&writer) - c) as f64 / 1e9;
    log.close(Duration::from_secs(120));
    assert_eq!(log.dropped(), 0);
    assert_eq!(log.written(), n);
    (n as f64 / secs / 1e6, n as f64 / cpu / 1e6)
}

/// ns per `log` call (wall, on-CPU) for a burst of records into a queue
/// with room for all of them: the worker's cost, while the writer drains.
fn log_ns() -> (f64, f64) {
    const N: usize = 200_000;
    let log = AccessLog::start(Sink::File("/dev/null".into()), Format::Text, N).unwrap();
    let template = record(0);
    let records: Vec<Record> = (0..N).map(|_| template.clone()).collect();
    let c = my_cpu_ns();
    let t = Instant::now();
    for r in records {
        log.log(r);
    }
    let wall = t.elapsed().as_nanos() as f64 / N as f64;
    let cpu = (my_cpu_ns() - c) as f64 / N as f64;
    log.close(Duration::from_secs(120));
    assert_eq!(log.dropped(), 0);
    (wall, cpu)
}

fn main() {
    for (name, f) in [
        ("format_text", format_text as fn(&Record, &mut String)),
        ("format_json", format_json),
    ] {
        let (wall, cpu) = (0..RUNS).map(|_| format_ns(f)).unzip();
        show(name, "ns/line", wall, cpu);
    }
    let mut line = String::new();
    format_text(&record(123_456), &mut line);
    println!("text line: {} bytes", line.len() + 1);

    let dir = tempfile::tempdir().unwrap();
    const N: u64 = 1_000_000;
    for (name, path) in [
        ("file sink (tmpdir)", Some(dir.path().join("access.log"))),
        ("file sink (/dev/null)", None),
    ] {
        let (wall, cpu) = (0..RUNS)
            .map(|_| {
                let p = path.clone().unwrap_or_else(|| "/dev/null".into());
                let r = sink_rate(Sink::File(p), N);
                if let Some(p) = &path {
                    let _ = std::fs::remove_file(p);
                }
                r
            })
            .unzip();
        show(name, "M lines/s", wall, cpu);
    }
    let (wall, cpu) = (0..RUNS).map(|_| log_ns()).unzip();
    show("log()", "ns/call", wall, cpu);
}
