use super::*;

#[test]
fn a_digest_is_64_lowercase_hex_digits() {
    let d = Sha256Digest::of(b"abc");
    assert_eq!(
        d.as_str(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(d.short(), "ba7816bf8f01");
    assert_eq!(d.as_str().parse::<Sha256Digest>().unwrap(), d);
    assert!(
        "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"
            .parse::<Sha256Digest>()
            .is_err()
    );
    assert!("abc".parse::<Sha256Digest>().is_err());
}

#[test]
fn a_record_round_trips_through_json_and_a_bad_one_is_an_error() {
    let info = RevisionInfo {
        revision: Revision(3),
        sha256: Sha256Digest::of(b"x"),
        size: 1,
        object: object_name(&Sha256Digest::of(b"x")),
        author: "alice".into(),
        host: "ops1".into(),
        time: 1_800_000_000,
        message: "drain fra-2".into(),
        rows: RowCounts {
            backends: 3,
            regions: 2,
            countries: 4,
            wg_peers: 1,
        },
        restores: None,
    };
    let json = info.to_json();
    assert!(!String::from_utf8_lossy(&json).contains("restores"));
    assert_eq!(RevisionInfo::from_json(&json).unwrap(), info);
    assert!(RevisionInfo::from_json(b"{\"revision\": 1}").is_err());
    let mut bad = serde_json::to_value(&info).unwrap();
    bad["sha256"] = "nothex".into();
    assert!(RevisionInfo::from_json(bad.to_string().as_bytes()).is_err());
    assert_eq!(
        info.describe(),
        "revision 3 (alice@ops1, 2027-01-15T08:00:00Z: \"drain fra-2\")"
    );
    assert_eq!(Revision(3).next(), Revision(4));
}
