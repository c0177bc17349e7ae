//! `geoedge db migrate`: upgrades a routing.db in place to
//! [`SCHEMA_VERSION`].
//!
//! Migrating adds only the tables a newer schema has that are optional and
//! whose absence means "none": `apps` and `sni_routes` (version 2), and the
//! triggers that refuse, in SQLite itself, the edits geoedge would refuse
//! (version 3, [`crate::triggers`]): those of the tables and columns the
//! file has once its tables are added. It never
//! adds `regions` or `country_regions`, whose absence means the built-in
//! regions and country map (an edgeProxy file, version 0, or a hand-made
//! version 1 file without them): empty ones would change routing. Columns
//! are never added either: missing optional columns already read as NULL.
//!
//! Before changing anything, a consistent copy of the file is written
//! beside it, `PATH.bak-v{old}` (with `VACUUM INTO`, which reads one
//! committed state even while others write the file). An existing backup
//! of that name is never overwritten: migrating then refuses, and the
//! operator moves the old backup away. The tables are then created and
//! `user_version` set in one write transaction, which first checks that
//! the version is still the one backed up (a concurrent migration makes
//! this one fail instead of doing the work twice). A migration that fails
//! after the backup changed nothing and removes the backup it made, so it
//! can be retried. A file already at [`SCHEMA_VERSION`] is left alone,
//! without a backup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::loader::{self, LoadError, SCHEMA_SQL};
use crate::snapshot::SCHEMA_VERSION;

/// The tables a migration adds when missing, in schema order.
pub const ADDED_TABLES: &[&str] = &["apps", "sni_routes"];

/// How long a migration waits for a writer's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What a migration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The file's `user_version` before.
    pub from: i64,
    /// Its `user_version` after ([`SCHEMA_VERSION`]).
    pub to: i64,
    /// The copy of the file as it was, when it was changed.
    pub backup: Option<PathBuf>,
    /// The tables created (those of [`ADDED_TABLES`] the file lacked).
    pub created: Vec<&'static str>,
    /// The triggers created ([`crate::triggers`]).
    pub triggers: Vec<String>,
}

impl Migrated {
    /// True when the file was already current and nothing was done.
    pub fn is_noop(&self) -> bool {
        self.backup.is_none()
    }
}

/// The backup path for a file at version `from`: `PATH.bak-v{from}`.
pub fn backup_path(path: &Path, from: i64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".bak-v{from}"));
    PathBuf::from(s)
}

/// The `CREATE TABLE` statement of `table` in the shipped schema, without
/// its comments (the schema has no `--` inside a string).
pub fn create_statement(table: &str) -> Option<String> {
    let head = format!("CREATE TABLE IF NOT EXISTS {table} (");
    let sql: String = SCHEMA_SQL
        .lines()
        .map(|l| l.split_once("--").map_or(l, |(code, _)| code).trim_end())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    sql.split(';')
        .map(str::trim)
        .find(|stmt| stmt.starts_with(&head))
        .map(|stmt| format!("{stmt};"))
}

fn schema_error(path: &Path, what: String) -> LoadError {
    LoadError::Schema {
        path: path.to_owned(),
        what,
    }
}

/// Upgrades the routing.db at `path` to [`SCHEMA_VERSION`] (see the
/// module). Does not validate the rows: [`loader::check`] does, after.
pub fn migrate(path: &Path) -> Result<Migrated, LoadError> {
    loader::nonblocking_opens();
    // Refuses a missing file or a FIFO at once.
    loader::open(path)?;
    let sqlite = |e: rusqlite::Error| LoadError::sqlite(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
    let version = |c: &Connection| -> Result<i64, LoadError> {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sqlite)
    };
    let from = version(&conn)?;
    if from == SCHEMA_VERSION {
        return Ok(Migrated {
            from,
            to: from,
            backup: None,
            created: Vec::new(),
            triggers: Vec::new(),
        });
    }
    if !(0..SCHEMA_VERSION).contains(&from) {
        return Err(schema_error(
            path,
            format!("user_version {from} is not one this build migrates (0..={SCHEMA_VERSION})"),
        ));
    }
    let has_backends: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND lower(name) = 'backends'",
            [],
            |r| r.get(0),
        )
        .map_err(sqlite)?;
    if !has_backends {
        return Err(schema_error(
            path,
            "no backends table: not a routing.db".into(),
        ));
    }

    let backup = backup_path(path, from);
    if backup.exists() || backup.symlink_metadata().is_ok() {
        return Err(LoadError::Exists(backup));
    }
    let Some(target) = backup.to_str() else {
        return Err(schema_error(
            path,
            format!("backup path {} is not UTF-8", backup.display()),
        ));
    };
    conn.execute("VACUUM INTO ?1", [target]).map_err(sqlite)?;

    // A migration that fails from here changed nothing: the backup it
    // just made goes too, so that it can be retried.
    match upgrade(&mut conn, path, from) {
        Ok((created, triggers)) => Ok(Migrated {
            from,
            to: SCHEMA_VERSION,
            backup: Some(backup),
            created,
            triggers,
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&backup);
            Err(e)
        }
    }
}

/// Creates the missing tables and the triggers and sets `user_version`,
/// in one write transaction, if the file is still at version `from`.
fn upgrade(
    conn: &mut Connection,
    path: &Path,
    from: i64,
) -> Result<(Vec<&'static str>, Vec<String>), LoadError> {
    let sqlite = |e: rusqlite::Error| LoadError::sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let now: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if now != from {
        return Err(schema_error(
            path,
            format!("user_version changed from {from} to {now} while migrating (another migration?); nothing done"),
        ));
    }
    let mut created = Vec::new();
    for &table in ADDED_TABLES {
        let exists: bool = tx
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE lower(name) = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(sqlite)?;
        if exists {
            continue;
        }
        let sql = create_statement(table).expect("the shipped schema creates every added table");
        tx.execute_batch(&sql).map_err(sqlite)?;
        created.push(table);
    }
    let triggers = crate::triggers::install(&tx).map_err(sqlite)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION};"))
        .map_err(sqlite)?;
    tx.commit().map_err(sqlite)?;
    Ok((created, triggers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version 1 schema, as shipped before `apps` and `sni_routes`,
    /// and a few rows.
    fn v1() -> String {
        format!(
            "{}
            INSERT INTO regions VALUES ('eu', 'Europe', 50.1, 8.7);
            INSERT INTO country_regions VALUES ('DE', 'eu');
            INSERT INTO backends (id, region, wg_ip, port, soft_limit, hard_limit)
              VALUES ('eu-1', 'eu', '127.0.0.1', 9101, 10, 20);",
            include_str!("../schema-v1.sql")
        )
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

    fn make(dir: &Path, name: &str, sql: &str) -> PathBuf {
        let p = dir.join(name);
        Connection::open(&p).unwrap().execute_batch(sql).unwrap();
        p
    }

    fn tables(p: &Path) -> Vec<String> {
        let c = Connection::open(p).unwrap();
        let mut s = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        let v = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        v
    }

    #[test]
    fn the_added_tables_are_in_the_schema() {
        for t in ADDED_TABLES {
            let sql = create_statement(t).unwrap();
            assert!(
                sql.starts_with(&format!("CREATE TABLE IF NOT EXISTS {t} (")),
                "{sql}"
            );
            assert!(sql.ends_with(");"), "{sql}");
        }
        assert_eq!(create_statement("nope"), None);
    }

    #[test]
    fn a_version_1_file_gains_the_new_tables_and_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = make(dir.path(), "routing.db", &v1());
        let m = migrate(&p).unwrap();
        assert_eq!(m.from, 1);
        assert_eq!(m.to, SCHEMA_VERSION);
        assert_eq!(m.created, ["apps", "sni_routes"]);
        assert!(m
            .triggers
            .contains(&"geoedge_backends_limits_update".to_owned()));
        let backup = m.backup.unwrap();
        assert_eq!(backup, dir.path().join("routing.db.bak-v1"));
        assert_eq!(loader::load(&backup).unwrap().schema_version, 1);
        assert!(!tables(&backup).contains(&"apps".to_owned()));
        let raw = loader::load(&p).unwrap();
        assert_eq!(raw.schema_version, SCHEMA_VERSION);
        assert_eq!(raw.backends.len(), 1);
        assert!(loader::check(&p).unwrap().is_empty());
        // The new tables take rows.
        Connection::open(&p)
            .unwrap()
            .execute_batch(
                "INSERT INTO apps (app, client_max_connections) VALUES ('default', 5);
                 INSERT INTO sni_routes VALUES ('*.example.com', 'default');",
            )
            .unwrap();
        let raw = loader::load(&p).unwrap();
        assert_eq!((raw.apps.len(), raw.sni_routes.len()), (1, 1));
        // The triggers refuse what geoedge would.
        let e = Connection::open(&p)
            .unwrap()
            .execute_batch("UPDATE backends SET soft_limit = 50")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("backends.soft_limit is above hard_limit"),
            "{e}"
        );
        assert_eq!(
            crate::triggers::installed(&Connection::open(&backup).unwrap()).unwrap(),
            Vec::<String>::new()
        );
        assert!(loader::check(&p).unwrap().is_empty());
        // Again: nothing to do.
        let again = migrate(&p).unwrap();
        assert!(again.is_noop());
        assert_eq!((again.from, again.to), (SCHEMA_VERSION, SCHEMA_VERSION));
    }

    #[test]
    fn a_version_2_file_gains_the_triggers() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = SCHEMA_SQL.replace(
            &format!("PRAGMA user_version = {SCHEMA_VERSION};"),
            "PRAGMA user_version = 2;",
        );
        let p = make(dir.path(), "routing.db", &v2);
        Connection::open(&p)
            .unwrap()
            .execute_batch(crate::loader::SAMPLE_SQL)
            .unwrap();
        let m = migrate(&p).unwrap();
        assert_eq!((m.from, m.to), (2, SCHEMA_VERSION));
        assert!(m.created.is_empty());
        let conn = Connection::open(&p).unwrap();
        let mut installed = crate::triggers::installed(&conn).unwrap();
        installed.sort();
        let mut made = m.triggers.clone();
        made.sort();
        assert_eq!(installed, made);
        // A new file has the same triggers.
        let fresh = dir.path().join("fresh.db");
        loader::init(&fresh, false).unwrap();
        let conn = Connection::open(&fresh).unwrap();
        assert_eq!(crate::triggers::installed(&conn).unwrap(), installed);
        assert!(migrate(&p).unwrap().is_noop());
        assert!(migrate(&fresh).unwrap().is_noop());
    }

    #[test]
    fn an_edgeproxy_file_keeps_the_built_in_regions() {
        let dir = tempfile::tempdir().unwrap();
        let p = make(dir.path(), "edge.db", SCHEMA_V0);
        let m = migrate(&p).unwrap();
        assert_eq!((m.from, m.created.len()), (0, 2));
        assert_eq!(
            m.backup.as_ref().unwrap(),
            &dir.path().join("edge.db.bak-v0")
        );
        assert_eq!(tables(&p), ["apps", "backends", "sni_routes"]);
        assert!(!m.triggers.is_empty());
        assert!(!m.triggers.iter().any(|t| t.contains("country")));
        let e = Connection::open(&p)
            .unwrap()
            .execute_batch("UPDATE backends SET port = 0")
            .unwrap_err();
        assert!(e.to_string().starts_with("backends.port must be"), "{e}");
        let raw = loader::load(&p).unwrap();
        assert!(raw.regions.is_none() && raw.country_regions.is_none());
        let s = crate::snapshot::build(&raw, |_| Default::default()).unwrap();
        assert!(s.builtin_regions && s.builtin_countries);
    }

    #[test]
    fn an_existing_backup_newer_or_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = make(dir.path(), "routing.db", &v1());
        std::fs::write(backup_path(&p, 1), b"keep me").unwrap();
        let e = migrate(&p).unwrap_err();
        assert!(matches!(e, LoadError::Exists(_)), "{e}");
        assert!(
            e.to_string().ends_with("routing.db.bak-v1: already exists"),
            "{e}"
        );
        assert_eq!(std::fs::read(backup_path(&p, 1)).unwrap(), b"keep me");
        assert_eq!(loader::load(&p).unwrap().schema_version, 1);

        let newer = make(
            dir.path(),
            "newer.db",
            &format!("{} PRAGMA user_version = 9;", v1()),
        );
        let e = migrate(&newer).unwrap_err();
        assert!(
            e.to_string()
                .contains("user_version 9 is not one this build migrates"),
            "{e}"
        );

        let other = make(dir.path(), "other.db", "CREATE TABLE t (x);");
        let e = migrate(&other).unwrap_err();
        assert!(e.to_string().contains("no backends table"), "{e}");
        assert!(!backup_path(&other, 0).exists());

        let e = migrate(&dir.path().join("missing.db")).unwrap_err();
        assert!(matches!(e, LoadError::Missing(_)), "{e}");
    }
}
