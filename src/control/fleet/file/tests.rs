use super::*;
use crate::control::fleet::revision::Revision;

fn sample(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    loader::init(&p, true).unwrap();
    p
}

fn sql(path: &Path, statement: &str) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(statement).unwrap();
}

#[test]
fn a_prepared_copy_is_one_file_with_the_masters_rows_even_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let master = sample(dir.path(), "master.db");
    sql(&master, "PRAGMA journal_mode = WAL;");
    // A writer holds uncommitted work: the copy has what was committed.
    let writer = Connection::open(&master).unwrap();
    writer
        .execute_batch("BEGIN; UPDATE backends SET weight = 9;")
        .unwrap();
    let prepared = prepare(&master).unwrap();
    writer.execute_batch("ROLLBACK").unwrap();
    assert_eq!(prepared.sha256, Sha256Digest::of(&prepared.bytes));
    assert_eq!(
        prepared.rows.backends,
        loader::load(&master).unwrap().backends.len()
    );
    // Rollback journal mode: byte 18 and 19 of the header are 1, not 2 (WAL).
    assert_eq!(&prepared.bytes[18..20], &[1, 1]);
    assert!(check_bytes(&prepared.bytes).is_ok());
    // The same content prepared twice has the same digest.
    assert_eq!(prepare(&master).unwrap().sha256, prepared.sha256);
}

#[test]
fn an_invalid_master_is_refused_with_every_row_error() {
    let dir = tempfile::tempdir().unwrap();
    let master = sample(dir.path(), "master.db");
    // Written as a tool that bypasses the schema's triggers would.
    geoedge_routing::triggers::remove(&Connection::open(&master).unwrap()).unwrap();
    sql(&master, "UPDATE backends SET port = 0;");
    let e = prepare(&master).unwrap_err();
    assert_eq!(e.reason(), "invalid");
    let FileError::Invalid(errors) = &e else {
        panic!("{e}")
    };
    assert!(errors.len() > 1, "{e}");
    assert!(e.to_string().contains("port"), "{e}");
    assert!(prepare(&dir.path().join("missing.db")).is_err());
}

#[test]
fn install_refuses_a_wrong_digest_and_an_invalid_file_and_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = sample(dir.path(), "routing.db");
    let before = std::fs::read(&db).unwrap();
    let good = prepare(&sample(dir.path(), "master.db")).unwrap();
    let e = install(&db, &good.bytes, &Sha256Digest::of(b"other")).unwrap_err();
    assert_eq!(e.reason(), "digest");
    let garbage = b"not sqlite at all".repeat(100);
    let e = install(&db, &garbage, &Sha256Digest::of(&garbage)).unwrap_err();
    assert_eq!(e.reason(), "invalid", "{e}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
    install(&db, &good.bytes, &good.sha256).unwrap();
    assert_eq!(digest_of(&db).unwrap(), Some(good.sha256.clone()));
    // No temporary file is left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".routing.db")),
        "{names:?}"
    );
}

#[test]
fn the_installed_record_round_trips_and_a_bad_one_reads_as_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("routing.db");
    assert_eq!(read_installed(&db), None);
    let installed = Installed {
        revision: Revision(4),
        sha256: Sha256Digest::of(b"x"),
        installed_at: 7,
    };
    write_installed(&db, &installed).unwrap();
    assert_eq!(record_path(&db), dir.path().join("routing.db.installed"));
    assert_eq!(read_installed(&db), Some(installed));
    std::fs::write(record_path(&db), "{").unwrap();
    assert_eq!(read_installed(&db), None);
}
