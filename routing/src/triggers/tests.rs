//! The triggers against geoedge's own validation: each rule refuses its
//! edit with its message, and no edit a trigger refuses is one geoedge
//! accepts.

use std::path::Path;

use rusqlite::Connection;

use super::*;
use crate::loader::{self, SCHEMA_SQL};

/// A database with the schema, the triggers when `triggers`, and the
/// sample rows, plus an app `api` routed by SNI.
fn db(triggers: bool) -> Connection {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA_SQL).unwrap();
    if triggers {
        install(&c).unwrap();
    }
    c.execute_batch(include_str!("../../sample.sql")).unwrap();
    c.execute_batch(
        "INSERT INTO apps (app, client_max_connections) VALUES ('api', 5);
         INSERT INTO sni_routes VALUES ('api.example.com', 'api'), ('*.example.com', 'default');
         INSERT INTO wg_peers (public_key, allowed_ips, region)
           VALUES ('HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=', '10.77.0.0/24', 'eu');",
    )
    .unwrap();
    c
}

/// geoedge's errors for the table in `c`.
fn errors(c: &Connection) -> Vec<String> {
    let raw = loader::read(c, Path::new(":memory:")).unwrap();
    crate::snapshot::check(&raw)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// Runs `sql` on `c`: SQLite's error message, if it refused it, and
/// geoedge's errors for the table it made otherwise.
fn attempt(c: Connection, sql: &str) -> Result<Vec<String>, String> {
    c.execute_batch(sql).map_err(|e| e.to_string())?;
    Ok(errors(&c))
}

/// Every rule, with an edit it refuses and a like one it lets through.
const CASES: &[(&str, &str, &str)] = &[
    (
        "UPDATE backends SET soft_limit = 500 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET soft_limit = 200 WHERE id = 'eu-fra-1'",
        "backends.soft_limit is above hard_limit (inverted limits)",
    ),
    (
        "UPDATE backends SET hard_limit = 0 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET soft_limit = 0, hard_limit = 0 WHERE id = 'eu-fra-1'",
        "backends.soft_limit is above hard_limit (inverted limits)",
    ),
    (
        "UPDATE backends SET soft_limit = -1 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET soft_limit = 0 WHERE id = 'eu-fra-1'",
        "backends.soft_limit must be an integer in 0..=16777216",
    ),
    (
        "UPDATE backends SET hard_limit = 16777217 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET hard_limit = 16777216 WHERE id = 'eu-fra-1'",
        "backends.hard_limit must be an integer in 0..=16777216",
    ),
    (
        "UPDATE backends SET hard_limit = 'lots' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET hard_limit = '300' WHERE id = 'eu-fra-1'",
        "backends.hard_limit must be an integer in 0..=16777216",
    ),
    (
        "UPDATE backends SET port = 0 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET port = 65535 WHERE id = 'eu-fra-1'",
        "backends.port must be an integer in 1..=65535",
    ),
    (
        "UPDATE backends SET port = 65536 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET port = 1 WHERE id = 'eu-fra-1'",
        "backends.port must be an integer in 1..=65535",
    ),
    (
        "UPDATE backends SET port = 80.5 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET port = 80.0 WHERE id = 'eu-fra-1'",
        "backends.port must be an integer in 1..=65535",
    ),
    (
        "UPDATE backends SET weight = -1 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET weight = 0 WHERE id = 'eu-fra-1'",
        "backends.weight must be an integer in 0..=16777216",
    ),
    (
        "UPDATE backends SET healthy = 2 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET healthy = 0 WHERE id = 'eu-fra-1'",
        "backends.healthy must be 0 or 1",
    ),
    (
        "UPDATE backends SET deleted = 'yes' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET deleted = 1 WHERE id = 'eu-fra-1'",
        "backends.deleted must be 0 or 1",
    ),
    (
        "UPDATE backends SET region = 'af' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET region = ' us ' WHERE id = 'eu-fra-1'",
        "backends.region must be the id of a regions row (unknown region)",
    ),
    (
        "UPDATE backends SET region = '' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET region = 'sa' WHERE id = 'eu-fra-1'",
        "backends.region must be the id of a regions row (unknown region)",
    ),
    (
        "UPDATE backends SET country = 'DEU' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET country = 'de' WHERE id = 'eu-fra-1'",
        "backends.country must be an ISO 3166-1 alpha-2 code (two letters) or NULL",
    ),
    (
        "UPDATE backends SET latitude = 91 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET latitude = -90 WHERE id = 'eu-fra-1'",
        "backends.latitude must be a number in -90..=90 or NULL",
    ),
    (
        "UPDATE backends SET longitude = -180.5 WHERE id = 'eu-fra-1'",
        "UPDATE backends SET longitude = 180 WHERE id = 'eu-fra-1'",
        "backends.longitude must be a number in -180..=180 or NULL",
    ),
    (
        "UPDATE backends SET latitude = NULL WHERE id = 'eu-fra-1'",
        "UPDATE backends SET latitude = NULL, longitude = NULL WHERE id = 'eu-fra-1'",
        "backends.latitude and longitude must be both set or both NULL",
    ),
    (
        "UPDATE backends SET wg_ip = '10.0.0' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET wg_ip = '10.0.0.9' WHERE id = 'eu-fra-1'",
        "backends.wg_ip must be an IPv4 or IPv6 address",
    ),
    (
        "UPDATE backends SET wg_ip = 'backend.example.com' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET wg_ip = '[fd00::1]' WHERE id = 'eu-fra-1'",
        "backends.wg_ip must be an IPv4 or IPv6 address",
    ),
    (
        "UPDATE backends SET id = '  ' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET id = 'eu-fra-2' WHERE id = 'eu-fra-1'",
        "backends.id must be a non-empty text",
    ),
    (
        "UPDATE backends SET id = 'eu-lhr-1 ' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET id = 'eu-lhr-2 ' WHERE id = 'eu-fra-1'",
        "backends.id is another row's id but for white space (duplicate backend id)",
    ),
    (
        "UPDATE backends SET app = '' WHERE id = 'eu-fra-1'",
        "UPDATE backends SET app = 'web' WHERE id = 'eu-fra-1'",
        "backends.app must be a non-empty text (NULL: default)",
    ),
    (
        "INSERT INTO backends (id, region, wg_ip, port, soft_limit, hard_limit) VALUES ('x', 'eu', '10.0.0.1', 0, 1, 2)",
        "INSERT INTO backends (id, region, wg_ip, port, soft_limit, hard_limit) VALUES ('x', 'eu', '10.0.0.1', 80, 1, 2)",
        "backends.port must be an integer in 1..=65535",
    ),
    (
        "DELETE FROM regions WHERE id = 'ap'",
        "UPDATE backends SET region = 'eu'; UPDATE country_regions SET region = 'eu'; DELETE FROM regions WHERE id = 'ap'",
        "regions.id is used by backends, country_regions or wg_peers (unknown region)",
    ),
    (
        "UPDATE regions SET id = 'apac' WHERE id = 'ap'",
        "UPDATE regions SET id = 'ap ' WHERE id = 'ap'",
        "regions.id is used by backends, country_regions or wg_peers (unknown region)",
    ),
    (
        "INSERT INTO regions VALUES ('af', 'Africa', -33.9, 118.4 + 100)",
        "INSERT INTO regions VALUES ('af', 'Africa', -33.9, 18.4)",
        "regions.longitude must be a number in -180..=180",
    ),
    (
        "INSERT INTO regions VALUES ('af', 'Africa', -93.9, 18.4)",
        "INSERT INTO regions VALUES ('af', NULL, -33.9, 18.4)",
        "regions.latitude must be a number in -90..=90",
    ),
    (
        "INSERT INTO regions VALUES (' ', 'Africa', -33.9, 18.4)",
        "INSERT INTO regions VALUES ('af', 'Africa', -33.9, 18.4)",
        "regions.id must be a non-empty text",
    ),
    (
        "INSERT INTO regions VALUES ('eu ', 'Europe', 50, 8)",
        "INSERT INTO regions VALUES ('eu2', 'Europe', 50, 8)",
        "regions.id is another row's id but for white space (duplicate region id)",
    ),
    (
        "INSERT INTO country_regions VALUES ('ZAF', 'eu')",
        "INSERT INTO country_regions VALUES ('za', 'eu')",
        "country_regions.country must be an ISO 3166-1 alpha-2 code (two letters)",
    ),
    (
        "INSERT INTO country_regions VALUES ('de', 'eu')",
        "INSERT OR REPLACE INTO country_regions VALUES ('DE', 'us')",
        "country_regions.country is another row's country in another case (duplicate country)",
    ),
    (
        "INSERT INTO country_regions VALUES ('ZA', 'af')",
        "INSERT INTO country_regions VALUES ('ZA', 'eu')",
        "country_regions.region must be the id of a regions row (unknown region)",
    ),
    (
        "UPDATE wg_peers SET persistent_keepalive = 70000",
        "UPDATE wg_peers SET persistent_keepalive = 0",
        "wg_peers.persistent_keepalive must be an integer in 0..=65535 or NULL",
    ),
    (
        "UPDATE wg_peers SET region = 'mars'",
        "UPDATE wg_peers SET region = NULL",
        "wg_peers.region must be the id of a regions row or NULL (unknown region)",
    ),
    (
        "UPDATE apps SET client_max_connections = -5",
        "UPDATE apps SET client_max_connections = NULL",
        "apps.client_max_connections must be an integer in 0..=16777216 or NULL",
    ),
    (
        "UPDATE apps SET client_rate = 16777217",
        "UPDATE apps SET client_rate = 0",
        "apps.client_rate must be an integer in 0..=16777216 or NULL",
    ),
    (
        "UPDATE apps SET client_rate_period_seconds = 0",
        "UPDATE apps SET client_rate_period_seconds = 86400",
        "apps.client_rate_period_seconds must be an integer in 1..=86400 or NULL",
    ),
    (
        "INSERT INTO apps (app) VALUES ('')",
        "INSERT INTO apps (app) VALUES ('web')",
        "apps.app must be a non-empty text",
    ),
    (
        "INSERT INTO apps (app) VALUES (' api')",
        "INSERT INTO apps (app) VALUES ('api2')",
        "apps.app is another row's app but for white space (duplicate app)",
    ),
    (
        "DELETE FROM apps WHERE app = 'api'",
        "DELETE FROM sni_routes WHERE app = 'api'; DELETE FROM apps WHERE app = 'api'",
        "apps: an app that sni_routes routes to and no backend has (unknown app)",
    ),
    (
        "DELETE FROM backends",
        "DELETE FROM sni_routes WHERE app = 'default'; DELETE FROM backends",
        "backends: the last row of an app that sni_routes routes to (unknown app)",
    ),
    (
        "UPDATE backends SET app = 'web'",
        "UPDATE backends SET app = 'web' WHERE id <> 'eu-fra-1'",
        "backends: the last row of an app that sni_routes routes to (unknown app)",
    ),
    (
        "INSERT INTO sni_routes VALUES ('Shop.example.com', 'default')",
        "INSERT INTO sni_routes VALUES ('shop.example.com', 'default')",
        "sni_routes.hostname must be a lower-case name or *.wildcard",
    ),
    (
        "INSERT INTO sni_routes VALUES ('*', 'default')",
        "INSERT INTO sni_routes VALUES ('*.shop.example.com', 'default')",
        "sni_routes.hostname must be a lower-case name or *.wildcard",
    ),
    (
        "INSERT INTO sni_routes VALUES ('shop..example.com', 'default')",
        "INSERT INTO sni_routes VALUES ('shop.example.com', 'default')",
        "sni_routes.hostname must be a lower-case name or *.wildcard",
    ),
    (
        "INSERT INTO sni_routes VALUES ('shop.example.com', 'web')",
        "INSERT INTO sni_routes VALUES ('shop.example.com', ' api ')",
        "sni_routes.app must be the app of a backends row or an apps row (unknown app)",
    ),
];

#[test]
fn each_rule_refuses_its_edit_and_geoedge_agrees() {
    assert!(errors(&db(true)).is_empty(), "{:?}", errors(&db(true)));
    for &(bad, good, message) in CASES {
        let e = attempt(db(true), bad).expect_err(bad);
        assert!(e.starts_with(message), "{bad}: {e}");
        let geo = attempt(db(false), bad).unwrap();
        assert!(
            !geo.is_empty(),
            "{bad}: refused by SQLite, accepted by geoedge"
        );
        let geo = attempt(db(true), good).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert!(geo.is_empty(), "{good}: {geo:?}");
    }
    // Every rule has a case.
    for rule in all_rules() {
        assert!(
            CASES.iter().any(|c| rule.message.starts_with(c.2)),
            "no case for {}",
            rule.message
        );
    }
}

/// Values of every kind for each cell, valid and not.
const VALUES: &[&str] = &[
    "NULL",
    "0",
    "1",
    "2",
    "-1",
    "80",
    "65535",
    "65536",
    "16777216",
    "16777217",
    "1.5",
    "90.0",
    "-180",
    "180.5",
    "'7'",
    "' 7 '",
    "'+7'",
    "'1e3'",
    "char(160) || '7'",
    "'seven'",
    "''",
    "' '",
    "x'00'",
    "'eu'",
    "' eu '",
    "'EU'",
    "'af'",
    "'de'",
    "'DE'",
    "'DEU'",
    "'10.0.0.1'",
    "'[::1]'",
    "'::ffff:1.2.3.4'",
    "'10.0.0.256'",
    "'a.b.c.d'",
    "'default'",
    "'api'",
    "'web'",
    "'*.example.com'",
    "'a..b'",
    "'-a.com'",
];

#[test]
fn no_edit_a_trigger_refuses_is_one_geoedge_accepts() {
    let columns: &[(&str, &[&str], &str)] = &[
        (
            "backends",
            &[
                "id",
                "app",
                "region",
                "country",
                "latitude",
                "longitude",
                "wg_ip",
                "port",
                "healthy",
                "weight",
                "soft_limit",
                "hard_limit",
                "deleted",
            ],
            "id = 'eu-fra-1'",
        ),
        ("regions", &["id", "latitude", "longitude"], "id = 'ap'"),
        ("country_regions", &["country", "region"], "country = 'DE'"),
        ("wg_peers", &["persistent_keepalive", "region"], "1"),
        (
            "apps",
            &[
                "app",
                "client_max_connections",
                "client_rate",
                "client_rate_period_seconds",
            ],
            "1",
        ),
        (
            "sni_routes",
            &["hostname", "app"],
            "hostname = 'api.example.com'",
        ),
    ];
    let mut refused = 0;
    for (table, cols, row) in columns {
        for col in *cols {
            for v in VALUES {
                let sql = format!("UPDATE {table} SET {col} = {v} WHERE {row}");
                if let Err(e) = attempt(db(true), &sql) {
                    if e.contains("NOT NULL") || e.contains("UNIQUE") {
                        continue;
                    }
                    refused += 1;
                    if let Ok(geo) = attempt(db(false), &sql) {
                        assert!(!geo.is_empty(), "{sql}: {e}, but geoedge accepts it");
                    }
                }
            }
        }
    }
    assert!(refused > 100, "{refused}");
    // Pairs: the limits, of the numbers and texts of numbers.
    let numbers = &VALUES[..20];
    for s in numbers {
        for h in numbers {
            let sql = format!(
                "UPDATE backends SET soft_limit = {s}, hard_limit = {h} WHERE id = 'eu-fra-1'"
            );
            if let Err(e) = attempt(db(true), &sql) {
                if e.contains("NOT NULL") {
                    continue;
                }
                // Without triggers, a NOT NULL constraint may refuse it.
                if let Ok(geo) = attempt(db(false), &sql) {
                    assert!(!geo.is_empty(), "{sql}: {e}, but geoedge accepts it");
                }
            }
        }
    }
}

#[test]
fn the_shipped_rows_insert() {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA_SQL).unwrap();
    assert!(!install(&c).unwrap().is_empty());
    c.execute_batch(include_str!("../../sample.sql")).unwrap();

    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA_SQL).unwrap();
    install(&c).unwrap();
    c.execute_batch(include_str!("../../../deploy/examples/three-regions.sql"))
        .unwrap();
    assert!(errors(&c).is_empty(), "{:?}", errors(&c));

    let lab = include_str!("../../../deploy/lab/routing.sql.in")
        .replace("@EU_PUB@", "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")
        .replace("@US_PUB@", "AIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")
        .replace("@SA_PUB@", "BIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=")
        .replace("@WAN@", "192.0.2")
        .replace("@OVERLAY@", "10.77.0");
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch(SCHEMA_SQL).unwrap();
    install(&c).unwrap();
    c.execute_batch(&lab).unwrap();
    assert!(errors(&c).is_empty(), "{:?}", errors(&c));
}

/// An edgeProxy routing.db: no country or coordinates, no regions.
const SCHEMA_V0: &str = "
    CREATE TABLE backends (id TEXT PRIMARY KEY, app TEXT NOT NULL DEFAULT 'default',
      region TEXT NOT NULL, wg_ip TEXT NOT NULL, port INTEGER NOT NULL,
      healthy INTEGER NOT NULL DEFAULT 1, weight INTEGER NOT NULL DEFAULT 1,
      soft_limit INTEGER NOT NULL, hard_limit INTEGER NOT NULL,
      deleted INTEGER NOT NULL DEFAULT 0);
    INSERT INTO backends (id, region, wg_ip, port, soft_limit, hard_limit)
      VALUES ('gru-1', 'sa', '10.0.0.1', 8080, 10, 20);";

#[test]
fn an_edgeproxy_file_gets_the_rules_of_its_columns() {
    let v0 = || {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(SCHEMA_V0).unwrap();
        install(&c).unwrap();
        c
    };
    let c = v0();
    let names = installed(&c).unwrap();
    assert!(names.contains(&"geoedge_backends_limits_update".to_owned()));
    assert!(!names
        .iter()
        .any(|n| n.contains("country") || n.contains("latitude")));
    // Again: nothing new, nothing fails.
    let mut again = install(&c).unwrap();
    again.sort();
    assert_eq!(again, names);
    assert_eq!(installed(&c).unwrap(), names);

    let e = attempt(v0(), "UPDATE backends SET soft_limit = 50").unwrap_err();
    assert!(
        e.starts_with("backends.soft_limit is above hard_limit"),
        "{e}"
    );
    let e = attempt(v0(), "UPDATE backends SET region = 'af'").unwrap_err();
    assert!(
        e.starts_with("backends.region must be a built-in region: eu, us, sa or ap"),
        "{e}"
    );
    assert!(attempt(v0(), "UPDATE backends SET region = 'eu'")
        .unwrap()
        .is_empty());
    // With a regions table of its own, geoedge reads that one: the
    // built-in list no longer applies.
    let own = "CREATE TABLE regions (id TEXT PRIMARY KEY, name TEXT, latitude REAL NOT NULL, longitude REAL NOT NULL);
         INSERT INTO regions VALUES ('sa', NULL, -23.5, -46.6), ('af', NULL, -33.9, 18.4);
         UPDATE backends SET region = 'af';";
    assert!(attempt(v0(), own).unwrap().is_empty());
}

#[test]
fn the_messages_are_literals_sqlite_3_40_takes() {
    for rule in all_rules() {
        for (name, sql) in rule.sql() {
            assert!(name.starts_with(PREFIX), "{name}");
            let raise = format!("RAISE(ABORT, '{}'); END;", rule.message.replace('\'', "''"));
            assert!(sql.ends_with(&raise), "{sql}");
        }
    }
    // Every message is in the schema reference.
    let doc = include_str!("../../../docs/routing.md");
    for rule in all_rules() {
        assert!(
            doc.contains(rule.message),
            "docs/routing.md lacks {:?}",
            rule.message
        );
    }
}
