use super::*;
use crate::raw::{BackendRow, CountryRegionRow, RawTable, Value};
use crate::testutil::{backend, table};
use proptest::prelude::*;

fn errors(raw: &RawTable) -> Vec<RowError> {
    check(raw)
}

#[test]
fn valid_table_builds_sorted_with_region_coordinates() {
    let raw = table(vec![
        backend("b", "eu", Some("GB"), 10, 20),
        backend("a", "us", None, 10, 20),
    ]);
    let s = build(&raw, |_| Arc::default()).unwrap();
    assert_eq!(s.backends[0].id.as_str(), "a");
    // No own coordinates: the region's.
    assert_eq!(
        s.backends[0].site,
        s.regions[s.region_index("us").unwrap() as usize].point
    );
    assert_eq!(s.app("default").unwrap().candidates.len(), 2);
    assert!(!s.builtin_regions && !s.builtin_countries);
}

#[test]
fn edgeproxy_table_uses_builtin_regions_and_country_map() {
    let raw = RawTable {
        schema_version: 0,
        backends: vec![BackendRow::new(
            "fly-gru-1",
            "sa",
            "fdaa:9:3ca6::2",
            8080,
            100,
            200,
        )],
        regions: None,
        country_regions: None,
        wg_peers: Vec::new(),
        apps: Vec::new(),
        sni_routes: Vec::new(),
    };
    let s = build(&raw, |_| Arc::default()).unwrap();
    assert!(s.builtin_regions && s.builtin_countries);
    let sa = s.region_index("sa").unwrap();
    let br = geoedge_geoip::CountryCode::parse("BR").unwrap();
    assert_eq!(s.country_map.region_of(Some(br), None), Some(sa));
    // Unlisted country: continent fallback.
    let pe = geoedge_geoip::CountryCode::parse("UY").unwrap();
    let sa_cont = geoedge_geoip::ContinentCode::parse("SA").unwrap();
    assert_eq!(s.country_map.region_of(Some(pe), Some(sa_cont)), Some(sa));
}

#[test]
fn every_bad_row_is_reported() {
    let mut dup = backend("a", "eu", None, 1, 2);
    dup.rowid = 2;
    let mut neg = backend("neg", "eu", None, -1, 5);
    neg.rowid = 3;
    let mut inverted = backend("inv", "eu", None, 10, 5);
    inverted.rowid = 4;
    let mut unknown = backend("unk", "mars", None, 1, 2);
    unknown.rowid = 5;
    let mut badip = backend("ip", "eu", None, 1, 2);
    badip.wg_ip = "10.0.0.300".into();
    let mut port = backend("port", "eu", None, 1, 2);
    port.port = 70000.into();
    let mut text = backend("text", "eu", None, 1, 2);
    text.hard_limit = "lots".into();
    let mut half = backend("half", "eu", None, 1, 2);
    half.latitude = 10.0.into();
    let mut cc = backend("cc", "eu", Some("GBR"), 1, 2);
    cc.rowid = 9;
    let raw = table(vec![
        backend("a", "eu", None, 1, 2),
        dup,
        neg,
        inverted,
        unknown,
        badip,
        port,
        text,
        half,
        cc,
    ]);
    let errs = errors(&raw);
    let has = |row: &str, col: &str, text: &str| {
        errs.iter()
            .any(|e| e.row.contains(row) && e.column == Some(col) && e.message.contains(text))
    };
    assert!(has("a", "id", "duplicate"), "{errs:#?}");
    assert!(has("neg", "soft_limit", "negative"));
    assert!(has("inv", "soft_limit", "inverted"));
    assert!(has("unk", "region", "unknown region"));
    assert!(has("ip", "wg_ip", "not an IPv4 or IPv6"));
    assert!(has("port", "port", "outside"));
    assert!(has("text", "hard_limit", "expected an integer"));
    assert!(has("half", "latitude", "both"));
    assert!(has("cc", "country", "ISO 3166"));
    assert_eq!(errs.len(), 9, "{errs:#?}");
    assert!(build(&raw, |_| Arc::default()).is_err());
}

#[test]
fn bad_regions_and_country_map_are_reported() {
    let mut raw = table(vec![backend("a", "eu", None, 1, 2)]);
    raw.country_regions
        .as_mut()
        .unwrap()
        .push(CountryRegionRow {
            rowid: 99,
            country: "XX".into(),
            region: "nowhere".into(),
        });
    let regions = raw.regions.as_mut().unwrap();
    let mut bad = regions[0].clone();
    bad.id = "moon".into();
    bad.latitude = 123.0.into();
    regions.push(bad);
    let errs = errors(&raw);
    assert!(errs
        .iter()
        .any(|e| e.table == "country_regions" && e.message.contains("unknown region")));
    assert!(errs
        .iter()
        .any(|e| e.table == "regions" && e.message.contains("not a valid latitude")));
}

#[test]
fn newer_schema_is_refused() {
    let mut raw = table(vec![]);
    raw.schema_version = SCHEMA_VERSION + 1;
    assert!(errors(&raw)[0].message.contains("user_version"));
}

#[test]
fn ipv6_and_bracketed_wg_ip_parse() {
    let mut a = backend("a", "eu", None, 1, 2);
    a.wg_ip = "fdaa::2".into();
    let mut b = backend("b", "eu", None, 1, 2);
    b.wg_ip = "[fdaa::3]".into();
    let s = build(&table(vec![a, b]), |_| Arc::default()).unwrap();
    assert!(s.backends[1].addr.is_ipv6());
}

#[test]
fn counters_are_requested_only_for_valid_tables() {
    let mut calls = 0;
    let _ = build(&table(vec![backend("a", "nowhere", None, 1, 2)]), |_| {
        calls += 1;
        Arc::default()
    });
    assert_eq!(calls, 0);
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        (-1000i64..70000).prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Real),
        "[a-z0-9:.\\[\\] -]{0,12}".prop_map(Value::Text),
        Just(Value::Text("eu".into())),
        Just(Value::Text("127.0.0.1".into())),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::Blob),
    ]
}

proptest! {
    /// Snapshot building never panics, whatever the cells hold, and a table
    /// it accepts has only sane limits.
    #[test]
    fn build_never_panics(cells in proptest::collection::vec(proptest::collection::vec(value(), 13), 0..6)) {
        let backends = cells.into_iter().enumerate().map(|(i, c)| BackendRow {
            rowid: i as i64,
            id: c[0].clone(), app: c[1].clone(), region: c[2].clone(), country: c[3].clone(),
            latitude: c[4].clone(), longitude: c[5].clone(), wg_ip: c[6].clone(), port: c[7].clone(),
            healthy: c[8].clone(), weight: c[9].clone(), soft_limit: c[10].clone(),
            hard_limit: c[11].clone(), deleted: c[12].clone(),
        }).collect();
        if let Ok(s) = build(&table(backends), |_| Arc::default()) {
            for b in &s.backends {
                prop_assert!(b.soft_limit <= b.hard_limit);
                prop_assert!(b.addr.port() > 0);
            }
        }
    }
}
