//! The background reloader against real files in a temporary directory:
//! atomic replacement, in-place garbage, recovery and deletion.
//!
//! Deadlines are generous (changes are expected within about a second);
//! nothing asserts on how fast they happen.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use geoedge_geoip::fixture::{self, FixtureEntry};
use geoedge_geoip::{
    sample_address, spawn_reloader, AttemptResult, GeoDb, GeoIp, GeoStats, ReloadOptions,
    SAMPLE_DATABASE_TYPE, SAMPLE_ENTRIES, SAMPLE_MMDB,
};

const DEADLINE: Duration = Duration::from_secs(5);
const STEP: Duration = Duration::from_millis(20);

fn opts() -> ReloadOptions {
    ReloadOptions {
        poll: Duration::from_millis(200),
        debounce: Duration::from_millis(20),
    }
}

/// Polls `cond` until it holds or the deadline passes.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..(DEADLINE.as_millis() / STEP.as_millis()) {
        if cond() {
            return;
        }
        std::thread::sleep(STEP);
    }
    assert!(cond(), "timed out waiting for: {what}");
}

fn country(g: &GeoIp, ip: IpAddr) -> Option<String> {
    g.lookup(ip).country().map(|c| c.to_string())
}

/// The sample with GB's IPv4 network moved to Ireland.
fn variant() -> Vec<u8> {
    let mut entries: Vec<FixtureEntry> = SAMPLE_ENTRIES.to_vec();
    entries[0].country = "IE";
    fixture::build_with_epoch(
        &entries,
        SAMPLE_DATABASE_TYPE,
        fixture::FIXTURE_BUILD_EPOCH + 1,
    )
}

fn replace_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("mmdb.tmp");
    fs::write(&tmp, bytes).unwrap();
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn reloader_follows_the_file_and_keeps_the_last_good_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    fs::write(&path, SAMPLE_MMDB).unwrap();
    let geoip = Arc::new(GeoIp::with_db(GeoDb::open(&path).unwrap()));
    let gb = sample_address("GB");
    let stats = || -> GeoStats { geoip.stats() };
    let reloader = spawn_reloader(&path, geoip.clone(), opts());
    assert_eq!(country(&geoip, gb).as_deref(), Some("GB"));

    // 1. Atomic rename of a different database: applied.
    replace_atomically(&path, &variant());
    eventually("the renamed-in database to apply", || {
        country(&geoip, gb).as_deref() == Some("IE")
    });
    // The database is swapped in before the reload is counted and the
    // attempt logged: wait for the log before reading either.
    let attempt = reloader
        .wait_for_attempt(0, DEADLINE)
        .expect("the attempt to be logged");
    assert!(matches!(attempt.result, AttemptResult::Applied(_)));
    let s = stats();
    assert_eq!((s.reloads_ok, s.generation), (1, 2));
    assert_eq!(s.build_epoch, fixture::FIXTURE_BUILD_EPOCH + 1);

    // 2. Garbage written in place: rejected, the old answer stays.
    // (`fs::write` truncates first, so the reloader may also catch the
    // empty file on the way: that is rejected too.)
    let failed_before = stats().reloads_failed;
    fs::write(&path, vec![0x5a; 4096]).unwrap();
    eventually("the garbage to be rejected", || {
        let last = reloader.last_attempt().unwrap();
        last.identity.is_some_and(|i| i.len == 4096)
    });
    assert!(stats().reloads_failed > failed_before);
    assert_eq!(country(&geoip, gb).as_deref(), Some("IE"));
    assert_eq!(stats().generation, 2);
    match reloader.last_attempt().unwrap().result {
        AttemptResult::Rejected { reason } => assert!(reason.contains("MaxMind"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }

    // 3. A valid file written in place again: applied.
    fs::write(&path, SAMPLE_MMDB).unwrap();
    eventually("the rewritten sample to apply", || {
        country(&geoip, gb).as_deref() == Some("GB")
    });
    assert_eq!(stats().build_epoch, fixture::FIXTURE_BUILD_EPOCH);

    // 4. Deleted: the old database keeps serving, a failed reload is counted.
    let failed_before = stats().reloads_failed;
    let attempts_before = reloader.attempts();
    fs::remove_file(&path).unwrap();
    let attempt = reloader
        .wait_for_attempt(attempts_before, DEADLINE)
        .expect("the deletion to be noticed");
    assert_eq!(attempt.identity, None);
    assert!(matches!(attempt.result, AttemptResult::Rejected { .. }));
    assert!(stats().reloads_failed > failed_before);
    assert_eq!(country(&geoip, gb).as_deref(), Some("GB"));

    // 5. And it comes back.
    replace_atomically(&path, &variant());
    eventually("the restored file to apply", || {
        country(&geoip, gb).as_deref() == Some("IE")
    });

    reloader.stop();
}

#[test]
fn wrong_database_type_is_rejected_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    fs::write(&path, SAMPLE_MMDB).unwrap();
    let geoip = Arc::new(GeoIp::with_db(GeoDb::sample()));
    let reloader = spawn_reloader(&path, geoip.clone(), opts());

    let before = reloader.attempts();
    replace_atomically(&path, &fixture::build(SAMPLE_ENTRIES, "GeoLite2-ASN"));
    let attempt = reloader
        .wait_for_attempt(before, DEADLINE)
        .expect("an attempt");
    match attempt.result {
        AttemptResult::Rejected { reason } => assert!(reason.contains("GeoLite2-ASN"), "{reason}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The same bad file is not retried on every poll.
    std::thread::sleep(opts().poll * 3);
    reloader.check_now();
    std::thread::sleep(opts().poll);
    assert_eq!(geoip.stats().reloads_failed, 1);
    assert_eq!(reloader.attempts(), before + 1);
    assert_eq!(geoip.stats().generation, 1);
    drop(reloader); // stops and joins
}

#[test]
fn empty_holder_loads_the_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("geo.mmdb");
    fs::write(&path, SAMPLE_MMDB).unwrap();
    let geoip = Arc::new(GeoIp::empty());
    assert_eq!(
        geoip.lookup(sample_address("AU")),
        geoedge_geoip::Lookup::NoDatabase
    );
    let reloader = spawn_reloader(&path, geoip.clone(), opts());
    let attempt = reloader
        .wait_for_attempt(0, DEADLINE)
        .expect("the initial load");
    assert!(
        matches!(attempt.result, AttemptResult::Applied(_)),
        "{attempt:?}"
    );
    assert_eq!(country(&geoip, sample_address("AU")).as_deref(), Some("AU"));
    reloader.stop();
}

#[test]
fn reloader_without_a_watchable_directory_still_stops() {
    // The directory does not exist, so `notify` cannot watch it: polling only.
    let geoip = Arc::new(GeoIp::with_db(GeoDb::sample()));
    let reloader = spawn_reloader(
        "/nonexistent-geoedge/geo.mmdb",
        geoip.clone(),
        ReloadOptions {
            poll: Duration::from_secs(60),
            debounce: Duration::from_millis(10),
        },
    );
    reloader.check_now();
    reloader.stop(); // must not wait out the 60 s poll
    assert!(geoip.current().is_some());
}
