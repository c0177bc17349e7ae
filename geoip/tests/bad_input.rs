//! Corrupt or unsuitable files are rejected with an error, never a panic.

use std::net::IpAddr;

use geoedge_geoip::{GeoDb, GeoIpError, SAMPLE_ENTRIES, SAMPLE_MMDB};
use proptest::prelude::*;

const MARKER: &[u8] = b"\xab\xcd\xefMaxMind.com";

fn marker_at() -> usize {
    SAMPLE_MMDB
        .windows(MARKER.len())
        .rposition(|w| w == MARKER)
        .expect("the sample has a metadata marker")
}

/// Looks every sample address (and a few others) up; only panics matter.
fn exercise(db: &GeoDb) {
    for e in SAMPLE_ENTRIES {
        let _ = db.lookup(e.address());
    }
    for a in [
        "1.1.1.1",
        "9.9.9.9",
        "::ffff:81.2.69.1",
        "2001:4860::1",
        "255.255.255.255",
    ] {
        let _ = db.lookup(a.parse::<IpAddr>().unwrap());
    }
}

#[test]
fn empty_input_is_rejected() {
    assert!(matches!(
        GeoDb::from_bytes(Vec::new()),
        Err(GeoIpError::Empty)
    ));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.mmdb");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(GeoDb::open(&p), Err(GeoIpError::Empty)));
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let err = GeoDb::open("/nonexistent/geoedge.mmdb").unwrap_err();
    assert!(matches!(err, GeoIpError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/geoedge.mmdb"),
        "{err}"
    );
}

#[test]
fn random_bytes_are_rejected() {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let junk: Vec<u8> = (0..1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let err = GeoDb::from_bytes(junk).unwrap_err();
    assert!(matches!(err, GeoIpError::Malformed(_)), "{err}");
}

#[test]
fn truncated_samples_are_rejected() {
    let m = marker_at();
    let len = SAMPLE_MMDB.len();
    for cut in [
        1,
        16,
        len / 4,
        len / 2,
        m,
        m + 5,
        m + MARKER.len(),
        m + MARKER.len() + 10,
        len - 20,
        len - 1,
    ] {
        let r = GeoDb::from_bytes(SAMPLE_MMDB[..cut].to_vec());
        assert!(r.is_err(), "truncated to {cut} of {len} bytes was accepted");
    }
}

#[test]
fn metadata_without_its_search_tree_is_rejected() {
    // Intact metadata, but the tree and data it describes are missing.
    let tail = SAMPLE_MMDB[marker_at() - 40..].to_vec();
    assert!(matches!(
        GeoDb::from_bytes(tail),
        Err(GeoIpError::Malformed(_))
    ));
}

#[test]
fn corrupt_data_section_fails_the_probes() {
    // The probe 81.2.69.160 lies in a sample network, so scrambling every
    // record makes its decode fail at load time.
    let meta = maxminddb::Reader::from_source(SAMPLE_MMDB)
        .unwrap()
        .metadata()
        .clone();
    let data_start = meta.node_count as usize * usize::from(meta.record_size) / 4 + 16;
    let mut bytes = SAMPLE_MMDB.to_vec();
    for b in &mut bytes[data_start..marker_at()] {
        *b = 0xff;
    }
    let err = GeoDb::from_bytes(bytes).unwrap_err();
    assert!(matches!(err, GeoIpError::Probe { .. }), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_samples_never_panic(
        edits in prop::collection::vec((0..SAMPLE_MMDB.len(), any::<u8>()), 1..12)
    ) {
        let mut bytes = SAMPLE_MMDB.to_vec();
        for (at, value) in edits {
            bytes[at] = value;
        }
        if let Ok(db) = GeoDb::from_bytes(bytes) {
            exercise(&db);
        }
    }

    #[test]
    fn mutated_record_bytes_never_panic(
        edits in prop::collection::vec((0.0..1.0f64, any::<u8>()), 1..6)
    ) {
        // Concentrate edits on the data section, where lookups decode.
        let meta = maxminddb::Reader::from_source(SAMPLE_MMDB).unwrap().metadata().clone();
        let start = meta.node_count as usize * usize::from(meta.record_size) / 4 + 16;
        let span = marker_at() - start;
        let mut bytes = SAMPLE_MMDB.to_vec();
        for (pos, value) in edits {
            bytes[start + ((pos * span as f64) as usize).min(span - 1)] = value;
        }
        if let Ok(db) = GeoDb::from_bytes(bytes) {
            exercise(&db);
        }
    }

    #[test]
    fn truncations_and_junk_never_panic(cut in 0..SAMPLE_MMDB.len(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut bytes = SAMPLE_MMDB[..cut].to_vec();
        bytes.extend_from_slice(&junk);
        if let Ok(db) = GeoDb::from_bytes(bytes) {
            exercise(&db);
        }
    }
}
