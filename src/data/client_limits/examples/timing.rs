//! The cost of one admission and its guard's drop, single-threaded, for
//! one client and for clients rotating through a table. Reads the clock to
//! measure, so it is an example (a measurement, not a test: the machine's
//! noise would make any bound on it flaky); run it with
//! `cargo run --release -p geoedge-client-limits --example timing`.

// Reads the clock for a base instant and to time the loops.
#![allow(clippy::disallowed_methods)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_client_limits::{ClientTable, Limits, Rate};

const ROUNDS: usize = 7;

/// A measured case: its name, the table's capacity, the limits and the
/// `i`-th connection's client.
type Case<'a> = (&'a str, usize, Limits, &'a dyn Fn(u32) -> IpAddr);

fn ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        0x0a00_0000u32.wrapping_add(i.wrapping_mul(7919)),
    ))
}

/// The time this thread has spent on a CPU, in nanoseconds, from
/// `/proc/thread-self/schedstat` (none where there is none): on a shared
/// machine the wall clock also counts the time other processes had the CPU.
fn on_cpu() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Median, lowest and highest ns per admit+drop over `ROUNDS` runs of
/// `ops` admissions of `key(i)` into a fresh table of `capacity`: on the
/// CPU where the kernel says, else on the wall clock.
fn measure(
    capacity: usize,
    ops: u32,
    limits: Limits,
    key: impl Fn(u32) -> IpAddr,
) -> (f64, f64, f64) {
    let now = Instant::now();
    let mut runs: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let table = Arc::new(ClientTable::<IpAddr>::new(capacity));
            // Warm up: every key once.
            for i in 0..ops.min(capacity as u32) {
                drop(table.admit(key(i), limits, now));
            }
            let start = Instant::now();
            let cpu_start = on_cpu();
            let mut admitted = 0u32;
            for i in 0..ops {
                // Time moves on 10 µs per connection: the rate never refuses.
                let at = now + Duration::from_micros(10 * u64::from(i));
                admitted += u32::from(table.admit(key(i), limits, at).is_ok());
            }
            let elapsed = match (cpu_start, on_cpu()) {
                (Some(a), Some(b)) => b - a,
                _ => start.elapsed().as_nanos() as u64,
            };
            let ns = elapsed as f64 / f64::from(ops);
            assert_eq!(admitted, ops);
            ns
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    (runs[ROUNDS / 2], runs[0], runs[ROUNDS - 1])
}

fn main() {
    let cap = Limits {
        max_connections: Some(100),
        rate: None,
    };
    let rate = Limits {
        max_connections: Some(100),
        rate: Some(Rate {
            count: 1_000_000,
            period: Duration::from_secs(1),
        }),
    };
    let n = 2_000_000;
    let cases: [Case; 6] = [
        (
            "1 key, cap only (entry made and removed each time)",
            1024,
            cap,
            &|_| ip(1),
        ),
        ("1 key, cap and rate (entry kept)", 1024, rate, &|_| ip(1)),
        (
            "100k rotating keys, cap and rate, table of 100k (all held)",
            100_000,
            rate,
            &|i| ip(i % 100_000),
        ),
        (
            "100k rotating keys, cap only, table of 100k",
            100_000,
            cap,
            &|i| ip(i % 100_000),
        ),
        (
            "100k rotating keys, cap and rate, table of 10k (every admission evicts)",
            10_000,
            rate,
            &|i| ip(i % 100_000),
        ),
        ("no limits (inert guard)", 1024, Limits::NONE, &|_| ip(1)),
    ];
    let clock = if on_cpu().is_some() {
        "on-CPU"
    } else {
        "wall-clock"
    };
    println!("{clock} time per admit+drop:");
    for (name, capacity, limits, key) in cases {
        let (median, low, high) = measure(capacity, n, limits, key);
        println!("{name}: median {median:.1} ns (range {low:.1}-{high:.1}, {ROUNDS} runs of {n})");
    }
}
