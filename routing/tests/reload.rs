//! The reloader against real routing.db files edited by the real `sqlite3`
//! CLI: every valid edit becomes visible (the deadline here is a generous
//! 5 s; the observed latency is printed), every invalid one keeps the last
//! good table and is counted. Copies pushed the way
//! `deploy/push-routing-db.sh` pushes them (`.backup` of a master in WAL
//! mode, then a rename over the file) apply every time, also back to back.

// Tests read the clock once for an arbitrary base instant; the code under
// test never does.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use geoedge_routing::loader;
use geoedge_routing::watcher::{load_into, Reloader, WatchOptions};
use geoedge_routing::{RejectReason, RoutingTable};
use geoedge_testkit::{drop_triggers, sqlite3};

/// A new routing.db with the sample rows and without the schema's
/// triggers: the invalid edits here are the ones a tool that bypasses
/// them writes, for geoedge's own validation to refuse.
fn init(path: &Path) {
    loader::init(path, true).unwrap();
    drop_triggers(path);
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    table: Arc<RoutingTable>,
    _reloader: Reloader,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.db");
    init(&path);
    let table = Arc::new(RoutingTable::new());
    load_into(&table, &path).unwrap();
    let reloader =
        Reloader::spawn(path.clone(), Arc::clone(&table), WatchOptions::default()).unwrap();
    Fixture {
        _dir: dir,
        path,
        table,
        _reloader: reloader,
    }
}

/// Polls `cond` until it holds or 5 s pass; returns how long it took.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed();
    eprintln!("{what}: visible after {took:?}");
    took
}

/// Makes a bad edit with `edit` and asserts that its refusal is counted and
/// the table stays as it was.
fn refused(
    f: &Fixture,
    what: &str,
    reason: RejectReason,
    edit: impl FnOnce(),
    still: impl Fn(&RoutingTable) -> bool,
) {
    let before = f.table.stats().rejected(reason);
    let generation = f.table.generation();
    edit();
    eventually(what, || f.table.stats().rejected(reason) > before);
    assert_eq!(f.table.generation(), generation, "{what}: generation moved");
    assert!(still(&f.table), "{what}: the last good table was not kept");
}

fn hard_limit(t: &RoutingTable, id: &str) -> Option<u32> {
    t.snapshot().backend(id).map(|b| b.hard_limit)
}

#[test]
fn limit_change_drain_delete_and_new_region_apply() {
    let f = fixture();
    assert_eq!(hard_limit(&f.table, "eu-lhr-1"), Some(200));
    sqlite3(
        &f.path,
        "UPDATE backends SET hard_limit = 500 WHERE id = 'eu-lhr-1';",
    );
    eventually("limit changed", || {
        hard_limit(&f.table, "eu-lhr-1") == Some(500)
    });

    sqlite3(
        &f.path,
        "UPDATE backends SET healthy = 0 WHERE id = 'eu-fra-1';",
    );
    eventually("backend drained", || {
        f.table
            .snapshot()
            .backend("eu-fra-1")
            .is_some_and(|b| !b.healthy)
    });

    sqlite3(&f.path, "DELETE FROM backends WHERE id = 'ap-sin-1';");
    eventually("row deleted", || {
        f.table.snapshot().backend("ap-sin-1").is_none()
    });

    sqlite3(
        &f.path,
        "BEGIN;
         INSERT INTO regions (id, name, latitude, longitude) VALUES ('af', 'Africa (Johannesburg)', -26.2, 28.05);
         INSERT INTO country_regions (country, region) VALUES ('ZA', 'af');
         INSERT INTO backends (id, region, country, wg_ip, port, soft_limit, hard_limit)
           VALUES ('af-jnb-1', 'af', 'ZA', '10.1.0.5', 8080, 10, 20);
         COMMIT;",
    );
    eventually("region added in a transaction", || {
        let s = f.table.snapshot();
        s.region_index("af").is_some() && s.backend("af-jnb-1").is_some()
    });
    assert!(f.table.generation() >= 5);
}

#[test]
fn invalid_edits_keep_the_last_good_table() {
    let f = fixture();
    let lhr_is_200 = |t: &RoutingTable| hard_limit(t, "eu-lhr-1") == Some(200);

    refused(
        &f,
        "inverted limits",
        RejectReason::Invalid,
        || {
            sqlite3(
                &f.path,
                "UPDATE backends SET soft_limit = 300 WHERE id = 'eu-lhr-1';",
            )
        },
        |t| t.snapshot().backend("eu-lhr-1").unwrap().soft_limit == 100,
    );

    // Fixing it applies.
    sqlite3(
        &f.path,
        "UPDATE backends SET soft_limit = 150 WHERE id = 'eu-lhr-1';",
    );
    eventually("fix applied", || {
        f.table.snapshot().backend("eu-lhr-1").unwrap().soft_limit == 150
    });

    refused(
        &f,
        "unknown region",
        RejectReason::Invalid,
        || {
            sqlite3(
                &f.path,
                "UPDATE backends SET region = 'mars' WHERE id = 'us-iad-1';",
            )
        },
        lhr_is_200,
    );
    sqlite3(
        &f.path,
        "UPDATE backends SET region = 'us' WHERE id = 'us-iad-1';",
    );

    refused(
        &f,
        "unparsable wg_ip",
        RejectReason::Invalid,
        || {
            sqlite3(
                &f.path,
                "UPDATE backends SET wg_ip = 'not-an-ip' WHERE id = 'us-iad-1';",
            )
        },
        lhr_is_200,
    );
    sqlite3(
        &f.path,
        "UPDATE backends SET wg_ip = '127.0.0.1' WHERE id = 'us-iad-1';",
    );

    refused(
        &f,
        "negative limit",
        RejectReason::Invalid,
        || {
            sqlite3(
                &f.path,
                "UPDATE backends SET hard_limit = -5 WHERE id = 'us-iad-1';",
            )
        },
        lhr_is_200,
    );
    sqlite3(
        &f.path,
        "UPDATE backends SET hard_limit = 200 WHERE id = 'us-iad-1';",
    );

    // Without a PRIMARY KEY a duplicate id can be written; it is refused.
    let dup = "BEGIN;
        CREATE TABLE b2 AS SELECT * FROM backends; DROP TABLE backends; ALTER TABLE b2 RENAME TO backends;
        INSERT INTO backends SELECT * FROM backends WHERE id = 'eu-lhr-1';
        COMMIT;";
    refused(
        &f,
        "duplicate id",
        RejectReason::Invalid,
        || sqlite3(&f.path, dup),
        lhr_is_200,
    );
    sqlite3(
        &f.path,
        "DELETE FROM backends WHERE rowid = (SELECT max(rowid) FROM backends);",
    );

    refused(
        &f,
        "table emptied",
        RejectReason::Emptied,
        || sqlite3(&f.path, "DELETE FROM backends;"),
        lhr_is_200,
    );
}

/// One bad edit is one failure, however often the reloader looks at it:
/// no-op transactions and touches of the file while it stays invalid are
/// not counted (or logged) again.
#[test]
fn one_bad_edit_is_counted_once() {
    let f = fixture();
    let before = f.table.stats().rejected(RejectReason::Invalid);
    sqlite3(
        &f.path,
        "UPDATE backends SET soft_limit = 300 WHERE id = 'eu-lhr-1';",
    );
    eventually("the bad edit is refused", || {
        f.table.stats().rejected(RejectReason::Invalid) > before
    });
    for _ in 0..5 {
        // A write transaction that changes nothing, and a touch: the file
        // changes, the table in it does not.
        sqlite3(
            &f.path,
            "UPDATE backends SET soft_limit = soft_limit WHERE id = 'eu-lhr-1';",
        );
        let now = std::time::SystemTime::now();
        std::fs::File::options()
            .append(true)
            .open(&f.path)
            .unwrap()
            .set_modified(now)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    assert_eq!(
        f.table.stats().rejected(RejectReason::Invalid),
        before + 1,
        "the same bad edit was counted again"
    );
    // A different bad edit is a new failure.
    sqlite3(
        &f.path,
        "UPDATE backends SET region = 'mars' WHERE id = 'us-iad-1';",
    );
    eventually("the second bad edit is counted", || {
        f.table.stats().rejected(RejectReason::Invalid) == before + 2
    });
}

#[test]
fn garbage_over_the_file_then_a_replacement_by_rename() {
    let f = fixture();
    // Overwrite the file in place (same inode) with garbage.
    let garbage: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    refused(
        &f,
        "garbage written over the file",
        RejectReason::Unreadable,
        || std::fs::write(&f.path, &garbage).unwrap(),
        |t| hard_limit(t, "eu-lhr-1") == Some(200),
    );

    // An operator builds a new database beside it and renames it into place.
    let fresh = f.path.with_file_name("routing.db.new");
    init(&fresh);
    sqlite3(
        &fresh,
        "UPDATE backends SET hard_limit = 321 WHERE id = 'eu-lhr-1';",
    );
    std::fs::rename(&fresh, &f.path).unwrap();
    eventually("file replaced by rename", || {
        hard_limit(&f.table, "eu-lhr-1") == Some(321)
    });

    // Later edits to the new file are followed too.
    sqlite3(
        &f.path,
        "UPDATE backends SET hard_limit = 322 WHERE id = 'eu-lhr-1';",
    );
    eventually("edit after rename", || {
        hard_limit(&f.table, "eu-lhr-1") == Some(322)
    });

    // A deleted file keeps the table.
    refused(
        &f,
        "file deleted",
        RejectReason::Unreadable,
        || std::fs::remove_file(&f.path).unwrap(),
        |t| hard_limit(t, "eu-lhr-1") == Some(322),
    );
}

#[test]
fn wal_mode_edits_apply() {
    let f = fixture();
    sqlite3(&f.path, "PRAGMA journal_mode = WAL;");
    sqlite3(
        &f.path,
        "UPDATE backends SET hard_limit = 401 WHERE id = 'eu-lhr-1';",
    );
    eventually("WAL edit", || hard_limit(&f.table, "eu-lhr-1") == Some(401));
    sqlite3(
        &f.path,
        "BEGIN; UPDATE backends SET hard_limit = 402 WHERE id = 'eu-lhr-1';
         UPDATE backends SET weight = 3 WHERE id = 'us-iad-1'; COMMIT;",
    );
    eventually("WAL transaction", || {
        let s = f.table.snapshot();
        s.backend("eu-lhr-1").unwrap().hard_limit == 402
            && s.backend("us-iad-1").unwrap().weight == 3
    });
    refused(
        &f,
        "invalid WAL edit",
        RejectReason::Invalid,
        || {
            sqlite3(
                &f.path,
                "UPDATE backends SET soft_limit = 999 WHERE id = 'eu-lhr-1';",
            )
        },
        |t| hard_limit(t, "eu-lhr-1") == Some(402),
    );
}

#[test]
fn connection_counts_survive_a_reload() {
    let f = fixture();
    let snap = f.table.snapshot();
    let lhr = snap.backend("eu-lhr-1").unwrap();
    let held = geoedge_routing::Reservation::try_new(lhr).unwrap();
    sqlite3(
        &f.path,
        "UPDATE backends SET soft_limit = 50 WHERE id = 'eu-lhr-1';",
    );
    eventually("edit", || {
        f.table.snapshot().backend("eu-lhr-1").unwrap().soft_limit == 50
    });
    assert_eq!(f.table.snapshot().backend("eu-lhr-1").unwrap().active(), 1);
    drop(held);
    assert_eq!(f.table.snapshot().backend("eu-lhr-1").unwrap().active(), 0);
}

#[test]
fn edgeproxy_routing_db_loads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.db");
    sqlite3(
        &path,
        "CREATE TABLE backends (
           id TEXT PRIMARY KEY, app TEXT, region TEXT, wg_ip TEXT, port INTEGER,
           healthy INTEGER, weight INTEGER, soft_limit INTEGER, hard_limit INTEGER, deleted INTEGER DEFAULT 0);
         INSERT INTO backends (id, app, region, wg_ip, port, healthy, weight, soft_limit, hard_limit) VALUES
           ('fly-gru-1', 'edgeproxy-backend', 'sa', 'fdaa:9:3ca6:a7b:5c5:84eb:a8dd:2', 8080, 1, 1, 100, 200),
           ('fly-iad-1', 'edgeproxy-backend', 'us', 'fdaa:9:3ca6:a7b:9d36:68ea:a86c:2', 8080, 1, 1, 100, 200),
           ('fly-lhr-1', 'edgeproxy-backend', 'eu', 'fdaa:9:3ca6:a7b:1:2:3:2', 8080, 1, 2, 100, 200);",
    );
    assert!(loader::check(&path).unwrap().is_empty());
    let table = RoutingTable::new();
    load_into(&table, &path).unwrap();
    let s = table.snapshot();
    assert!(s.builtin_regions && s.builtin_countries);
    assert_eq!(s.app("edgeproxy-backend").unwrap().candidates.len(), 3);
    assert_eq!(s.backend("fly-lhr-1").unwrap().weight, 2);
}

#[test]
fn check_lists_row_errors_of_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routing.db");
    init(&path);
    sqlite3(
        &path,
        "UPDATE backends SET soft_limit = 900 WHERE id = 'eu-lhr-1';
         UPDATE backends SET port = 0 WHERE id = 'us-iad-1';",
    );
    let errors = loader::check(&path).unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors
        .iter()
        .any(|e| e.row.contains("eu-lhr-1") && e.column == Some("soft_limit")));
    assert!(errors
        .iter()
        .any(|e| e.row.contains("us-iad-1") && e.column == Some("port")));
    // init refuses to overwrite.
    assert!(loader::init(&path, true).is_err());
}

#[test]
fn wireguard_peers_reload_with_the_table() {
    let f = fixture();
    assert!(f.table.snapshot().wg_peers.is_empty());
    let key = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
    sqlite3(
        &f.path,
        &format!(
            "INSERT INTO wg_peers (public_key, endpoint, allowed_ips, persistent_keepalive, region)
             VALUES ('{key}', '192.0.2.10:51820', '10.77.1.0/24', 25, 'us');"
        ),
    );
    eventually("peer added", || f.table.snapshot().wg_peers.len() == 1);
    let peer = f.table.snapshot().wg_peers[0].clone();
    assert_eq!(peer.public_key.to_string(), key);
    assert_eq!(peer.persistent_keepalive, Some(25));
    sqlite3(
        &f.path,
        "UPDATE wg_peers SET endpoint = '192.0.2.11:51820';",
    );
    eventually("endpoint changed", || {
        f.table.snapshot().wg_peers[0]
            .endpoint
            .as_ref()
            .map(ToString::to_string)
            .as_deref()
            == Some("192.0.2.11:51820")
    });
    refused(
        &f,
        "malformed peer key",
        RejectReason::Invalid,
        || sqlite3(&f.path, "UPDATE wg_peers SET public_key = 'short';"),
        |t| t.snapshot().wg_peers.len() == 1,
    );
}

/// One push of the master to a POP's copy, as `deploy/push-routing-db.sh`
/// does it: a consistent copy with `.backup`, switched to rollback-journal
/// mode unless `keep_mode`, written beside the POP's routing.db and renamed
/// over it.
fn push(master: &Path, pop: &Path, keep_mode: bool) {
    let tmp = pop.with_file_name(".routing.db.push");
    sqlite3(master, &format!(".backup '{}'", tmp.display()));
    if !keep_mode {
        sqlite3(&tmp, "PRAGMA journal_mode = DELETE;");
    }
    std::fs::rename(&tmp, pop).unwrap();
}

/// A master in WAL mode whose edits still sit in its -wal file (a connection
/// held open keeps them from being checkpointed), and a POP fixture.
fn master_and_pop() -> (tempfile::TempDir, PathBuf, rusqlite::Connection, Fixture) {
    let dir = tempfile::tempdir().unwrap();
    let master = dir.path().join("master.db");
    init(&master);
    sqlite3(&master, "PRAGMA journal_mode = WAL;");
    let held = rusqlite::Connection::open(&master).unwrap();
    let _: i64 = held
        .query_row("SELECT count(*) FROM backends", [], |r| r.get(0))
        .unwrap();
    let pop = fixture();
    (dir, master, held, pop)
}

#[test]
fn pushes_by_backup_and_rename_apply_every_time() {
    let (_dir, master, held, pop) = master_and_pop();
    let mut worst = Duration::ZERO;
    for i in 0..10u32 {
        sqlite3(
            &master,
            &format!(
                "UPDATE backends SET hard_limit = {} WHERE id = 'eu-lhr-1';",
                300 + i
            ),
        );
        push(&master, &pop.path, false);
        let took = eventually(&format!("push {i}"), || {
            hard_limit(&pop.table, "eu-lhr-1") == Some(300 + i)
        });
        worst = worst.max(took);
    }
    // Pushes back to back: the last one is never lost.
    for i in 0..5u32 {
        sqlite3(
            &master,
            &format!(
                "UPDATE backends SET hard_limit = {} WHERE id = 'eu-lhr-1';",
                400 + i
            ),
        );
        push(&master, &pop.path, false);
    }
    let burst = eventually("the last of 5 pushes back to back", || {
        hard_limit(&pop.table, "eu-lhr-1") == Some(404)
    });
    eprintln!("10 pushes: the slowest was visible after {worst:?}; a burst of 5 after {burst:?}");
    // The POP's copy never grows a -wal or -journal file, and no temporary
    // file is left.
    let names: Vec<String> = std::fs::read_dir(pop.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["routing.db".to_owned()], "{names:?}");
    // The master still had its edits only in its -wal file.
    assert!(master.with_file_name("master.db-wal").exists());
    drop(held);
}

#[test]
fn wal_mode_copies_pushed_by_rename_apply_too() {
    let (_dir, master, held, pop) = master_and_pop();
    for i in 0..5u32 {
        sqlite3(
            &master,
            &format!(
                "UPDATE backends SET hard_limit = {} WHERE id = 'eu-lhr-1';",
                500 + i
            ),
        );
        push(&master, &pop.path, true);
        eventually(&format!("WAL-mode push {i}"), || {
            hard_limit(&pop.table, "eu-lhr-1") == Some(500 + i)
        });
    }
    let mut names: Vec<String> = std::fs::read_dir(pop.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    eprintln!("beside a WAL-mode copy: {names:?}");
    drop(held);
}
