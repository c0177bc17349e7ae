//! The sans-IO routing core stays light: `geoedge-routing` without its
//! `sqlite` adapters must build without the WireGuard crates and their
//! cryptography, the MaxMind reader, notify or SQLite. Asks `cargo tree`
//! (offline, against the committed Cargo.lock) for the crates it pulls and
//! fails if a heavy one is among them or the count grows past a budget.

use std::collections::BTreeSet;
use std::process::Command;

/// Crates the core must never pull (by name, any version).
const HEAVY: &[&str] = &[
    "geoedge-wireguard",
    "boringtun",
    "ring",
    "x25519-dalek",
    "curve25519-dalek",
    "chacha20",
    "chacha20poly1305",
    "poly1305",
    "blake2",
    "aead",
    "hmac",
    "maxminddb",
    "notify",
    "inotify",
    "rusqlite",
    "libsqlite3-sys",
    "tokio",
];

/// Crates (name and version, the core itself included) the core may pull.
/// 33 when this budget was set, down from 80 when the core depended on the
/// WireGuard crate for its key type and on the GeoIP crate's watcher.
const BUDGET: usize = 40;

#[test]
fn the_core_pulls_no_crypto_mmdb_notify_or_sqlite() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "--manifest-path",
            manifest,
            "-p",
            "geoedge-routing",
            "--no-default-features",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("cargo tree prints UTF-8");
    // Lines are `name vX.Y.Z [(path)] [(proc-macro)] [(*)]`.
    let crates: BTreeSet<(&str, &str)> = text
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    assert!(
        crates.iter().any(|(name, _)| *name == "geoedge-routing"),
        "unexpected cargo tree output:\n{text}"
    );
    let heavy: Vec<_> = crates
        .iter()
        .filter(|(name, _)| HEAVY.contains(name))
        .collect();
    assert!(
        heavy.is_empty(),
        "the routing core pulls {heavy:?}; keep them behind the `sqlite` \
         feature or in the crates that use them"
    );
    println!(
        "geoedge-routing --no-default-features: {} crates",
        crates.len()
    );
    assert!(
        crates.len() <= BUDGET,
        "the routing core pulls {} crates, more than its budget of {BUDGET}: {crates:?}",
        crates.len()
    );
}
