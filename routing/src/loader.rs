//! The SQLite adapter: reads a routing.db into a [`RawTable`] in one read
//! transaction, creates new ones from `schema.sql`, and checks them.
//!
//! Connections are opened read-only with a short busy timeout, so a writer
//! holding the database locked delays a reload instead of blocking it forever
//! (the caller retries), and a reader never takes a lock a writer waits on
//! for longer than one read transaction.
//!
//! A routing.db must be a regular file: a FIFO (or a symlink to one) put in
//! its place is refused at once with "not a regular file", never opened in
//! a way that blocks. The path is first opened `O_NONBLOCK` and checked on
//! the opened descriptor ([`geoedge_geoip::regular`]). SQLite then opens the
//! path itself, so a FIFO renamed in between the check and SQLite's open
//! would still block a plain `open(2)`; to close that window, SQLite's unix
//! VFS is given an `open` that adds `O_NONBLOCK` (see [`nonblocking_opens`]),
//! so SQLite's own open returns at once too and its first read of the FIFO
//! fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use geoedge_geoip::regular::{self, NotRegular};
use rusqlite::{Connection, OpenFlags};

use crate::raw::{
    AppRow, BackendRow, CountryRegionRow, RawTable, RegionRow, SniRouteRow, Value, WgPeerRow,
};
use crate::snapshot::{self, RowError};
use crate::table::RejectReason;

/// The schema, as shipped in `routing/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../schema.sql");

/// The sample content written by [`init`], as shipped in `routing/sample.sql`.
pub const SAMPLE_SQL: &str = include_str!("../sample.sql");

/// How long a read waits for a writer's lock before giving up for this attempt.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Why a routing.db could not be read or created. Each message holds its
/// cause's text, so the cause is not also its `source()` (anyhow's `{:#}`
/// would print it twice).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file does not exist.
    #[error("{0}: no such file")]
    Missing(PathBuf),
    /// The path names something other than a regular file (a FIFO, a
    /// device, a directory).
    #[error("{path}: {what}")]
    NotRegular {
        /// The database path.
        path: PathBuf,
        /// What it is instead.
        what: NotRegular,
    },
    /// The file could not be opened.
    #[error("{path}: {error}")]
    Io {
        /// The database path.
        path: PathBuf,
        /// What the operating system reported.
        error: std::io::Error,
    },
    /// SQLite refused the file or a query on it.
    #[error("{path}: {error}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        error: rusqlite::Error,
    },
    /// A writer held the database locked past the busy timeout.
    #[error("{0}: database is locked by a writer")]
    Locked(PathBuf),
    /// The `backends` table, or one of its required columns, is missing.
    #[error("{path}: {what}")]
    Schema {
        /// The database file.
        path: PathBuf,
        /// What is missing.
        what: String,
    },
    /// `init` refuses to overwrite an existing file.
    #[error("{0}: already exists")]
    Exists(PathBuf),
}

impl LoadError {
    /// The metric label for a reload that failed this way.
    pub fn reason(&self) -> RejectReason {
        match self {
            LoadError::Locked(_) => RejectReason::Locked,
            LoadError::Schema { .. } => RejectReason::Invalid,
            _ => RejectReason::Unreadable,
        }
    }

    pub(crate) fn sqlite(path: &Path, source: rusqlite::Error) -> Self {
        let busy = matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        );
        if busy {
            LoadError::Locked(path.to_owned())
        } else {
            LoadError::Sqlite {
                path: path.to_owned(),
                error: source,
            }
        }
    }
}

/// Checks, without blocking, that `path` is a regular file that can be
/// opened for reading.
fn check_regular(path: &Path) -> Result<(), LoadError> {
    match regular::open_regular(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(LoadError::Missing(path.to_owned()))
        }
        Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<NotRegular>()) {
            Some(what) => Err(LoadError::NotRegular {
                path: path.to_owned(),
                what: *what,
            }),
            None => Err(LoadError::Io {
                path: path.to_owned(),
                error: e,
            }),
        },
    }
}

/// SQLite's unix VFS `open`, with `O_NONBLOCK` added: returns at once on a
/// FIFO instead of waiting for a writer. The flag changes nothing for the
/// regular files and directories SQLite opens otherwise.
unsafe extern "C" fn open_nonblocking(
    path: *const std::ffi::c_char,
    flags: std::ffi::c_int,
    mode: std::ffi::c_int,
) -> std::ffi::c_int {
    // SAFETY: the arguments are SQLite's, passed on as its own `open` does.
    unsafe { libc::open(path, flags | libc::O_NONBLOCK, mode as libc::c_uint) }
}

/// Makes every `open(2)` of SQLite's default (unix) VFS non-blocking, once
/// per process, before the first connection this module opens. SQLite
/// reads the replaced pointer without a lock, so this must happen before
/// any other thread uses SQLite: `geoedge` calls it first thing in `main`,
/// and every function here that opens a connection calls it first (a no-op
/// after the first call; concurrent first callers wait for it to finish).
/// Code that opens SQLite connections by other means, in a process that
/// also uses this module, should call it before its first one.
pub fn nonblocking_opens() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // An in-memory connection makes rusqlite initialise SQLite as it
        // wants it (threading mode) before the VFS is looked up.
        if Connection::open_in_memory().is_err() {
            return;
        }
        // SAFETY: `sqlite3_vfs_find(NULL)` returns the default VFS (or
        // NULL), which lives as long as the process; `xSetSystemCall` is
        // given a function with the signature SQLite's `open` has
        // (`int(const char*, int, int)`), as its syscall table expects.
        let installed = unsafe {
            let vfs = rusqlite::ffi::sqlite3_vfs_find(std::ptr::null());
            match vfs.as_ref().and_then(|v| v.xSetSystemCall) {
                Some(set) => {
                    let f: unsafe extern "C" fn(
                        *const std::ffi::c_char,
                        std::ffi::c_int,
                        std::ffi::c_int,
                    ) -> std::ffi::c_int = open_nonblocking;
                    let f = std::mem::transmute::<
                        unsafe extern "C" fn(
                            *const std::ffi::c_char,
                            std::ffi::c_int,
                            std::ffi::c_int,
                        ) -> std::ffi::c_int,
                        unsafe extern "C" fn(),
                    >(f);
                    set(vfs, c"open".as_ptr(), Some(f)) == rusqlite::ffi::SQLITE_OK
                }
                None => false,
            }
        };
        if !installed {
            tracing::warn!("SQLite's open could not be made non-blocking: a FIFO renamed over routing.db just as it is reopened could stall reloads");
        }
    });
}

/// Opens a routing.db read-only for reloads. Anything but a regular file is
/// refused at once ([`LoadError::NotRegular`]), never waited on.
pub fn open(path: &Path) -> Result<Connection, LoadError> {
    nonblocking_opens();
    check_regular(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| LoadError::sqlite(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| LoadError::sqlite(path, e))?;
    Ok(conn)
}

/// `PRAGMA data_version`: changes whenever another connection commits.
pub fn data_version(conn: &Connection, path: &Path) -> Result<i64, LoadError> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(|e| LoadError::sqlite(path, e))
}

/// Reads a whole routing.db from a file.
pub fn load(path: &Path) -> Result<RawTable, LoadError> {
    read(&open(path)?, path)
}

fn convert(v: rusqlite::types::Value) -> Value {
    use rusqlite::types::Value as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => Value::Integer(i),
        V::Real(f) => Value::Real(f),
        V::Text(s) => Value::Text(s),
        V::Blob(b) => Value::Blob(b),
    }
}

fn columns(conn: &Connection, table: &str, path: &Path) -> Result<Vec<String>, LoadError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(|e| LoadError::sqlite(path, e))?;
    let cols = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LoadError::sqlite(path, e))?;
    Ok(cols.into_iter().map(|c| c.to_ascii_lowercase()).collect())
}

/// Selects `wanted` columns of `table` (NULL for absent optional ones) with rowids.
fn select(
    conn: &Connection,
    path: &Path,
    table: &str,
    wanted: &[(&str, bool)],
) -> Result<Vec<(i64, Vec<Value>)>, LoadError> {
    let have = columns(conn, table, path)?;
    let mut exprs = Vec::with_capacity(wanted.len());
    for &(col, required) in wanted {
        if have.iter().any(|h| h == col) {
            exprs.push(format!("\"{col}\""));
        } else if required {
            return Err(LoadError::Schema {
                path: path.to_owned(),
                what: format!("table {table} has no column {col}"),
            });
        } else {
            exprs.push("NULL".to_owned());
        }
    }
    let sql = format!(
        "SELECT rowid, {} FROM {table} ORDER BY rowid",
        exprs.join(", ")
    );
    let mut stmt = conn.prepare(&sql).map_err(|e| LoadError::sqlite(path, e))?;
    let n = wanted.len();
    let rows = stmt
        .query_map([], |r| {
            let rowid: i64 = r.get(0)?;
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                cells.push(convert(r.get::<_, rusqlite::types::Value>(i + 1)?));
            }
            Ok((rowid, cells))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| LoadError::sqlite(path, e))?;
    Ok(rows)
}

/// Reads every table in one read transaction, so the tables are seen
/// at the same commit.
pub fn read(conn: &Connection, path: &Path) -> Result<RawTable, LoadError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(|e| LoadError::sqlite(path, e))?;
    let schema_version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| LoadError::sqlite(path, e))?;
    let tables: Vec<String> = {
        let mut stmt = tx
            .prepare("SELECT lower(name) FROM sqlite_master WHERE type IN ('table', 'view')")
            .map_err(|e| LoadError::sqlite(path, e))?;
        let names = stmt
            .query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect::<Result<Vec<String>, _>>())
            .map_err(|e| LoadError::sqlite(path, e))?;
        names
    };
    let has = |t: &str| tables.iter().any(|n| n == t);
    if !has("backends") {
        return Err(LoadError::Schema {
            path: path.to_owned(),
            what: "no backends table".into(),
        });
    }

    const BACKEND_COLS: &[(&str, bool)] = &[
        ("id", true),
        ("app", false),
        ("region", true),
        ("country", false),
        ("latitude", false),
        ("longitude", false),
        ("wg_ip", true),
        ("port", true),
        ("healthy", false),
        ("weight", false),
        ("soft_limit", true),
        ("hard_limit", true),
        ("deleted", false),
    ];
    let backends = select(&tx, path, "backends", BACKEND_COLS)?
        .into_iter()
        .map(|(rowid, c)| {
            let mut c = c.into_iter();
            let mut next = || c.next().unwrap_or(Value::Null);
            BackendRow {
                rowid,
                id: next(),
                app: next(),
                region: next(),
                country: next(),
                latitude: next(),
                longitude: next(),
                wg_ip: next(),
                port: next(),
                healthy: next(),
                weight: next(),
                soft_limit: next(),
                hard_limit: next(),
                deleted: next(),
            }
        })
        .collect();

    let regions = if has("regions") {
        let cols = &[
            ("id", true),
            ("name", false),
            ("latitude", true),
            ("longitude", true),
        ];
        Some(
            select(&tx, path, "regions", cols)?
                .into_iter()
                .map(|(rowid, c)| {
                    let mut c = c.into_iter();
                    let mut next = || c.next().unwrap_or(Value::Null);
                    RegionRow {
                        rowid,
                        id: next(),
                        name: next(),
                        latitude: next(),
                        longitude: next(),
                    }
                })
                .collect(),
        )
    } else {
        None
    };

    let country_regions = if has("country_regions") {
        let cols = &[("country", true), ("region", true)];
        Some(
            select(&tx, path, "country_regions", cols)?
                .into_iter()
                .map(|(rowid, c)| {
                    let mut c = c.into_iter();
                    let mut next = || c.next().unwrap_or(Value::Null);
                    CountryRegionRow {
                        rowid,
                        country: next(),
                        region: next(),
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    let wg_peers = if has("wg_peers") {
        let cols = &[
            ("public_key", true),
            ("endpoint", false),
            ("allowed_ips", true),
            ("persistent_keepalive", false),
            ("region", false),
        ];
        select(&tx, path, "wg_peers", cols)?
            .into_iter()
            .map(|(rowid, c)| {
                let mut c = c.into_iter();
                let mut next = || c.next().unwrap_or(Value::Null);
                WgPeerRow {
                    rowid,
                    public_key: next(),
                    endpoint: next(),
                    allowed_ips: next(),
                    persistent_keepalive: next(),
                    region: next(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let apps = if has("apps") {
        let cols = &[
            ("app", true),
            ("client_max_connections", false),
            ("client_rate", false),
            ("client_rate_period_seconds", false),
        ];
        select(&tx, path, "apps", cols)?
            .into_iter()
            .map(|(rowid, c)| {
                let mut c = c.into_iter();
                let mut next = || c.next().unwrap_or(Value::Null);
                AppRow {
                    rowid,
                    app: next(),
                    client_max_connections: next(),
                    client_rate: next(),
                    client_rate_period_seconds: next(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let sni_routes = if has("sni_routes") {
        let cols = &[("hostname", true), ("app", true)];
        select(&tx, path, "sni_routes", cols)?
            .into_iter()
            .map(|(rowid, c)| {
                let mut c = c.into_iter();
                let mut next = || c.next().unwrap_or(Value::Null);
                SniRouteRow {
                    rowid,
                    hostname: next(),
                    app: next(),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    tx.finish().map_err(|e| LoadError::sqlite(path, e))?;
    Ok(RawTable {
        schema_version,
        backends,
        regions,
        country_regions,
        wg_peers,
        apps,
        sni_routes,
    })
}

/// Creates a new routing.db with the schema and, if `sample`, the sample
/// regions, country map and backends. Refuses to overwrite a file.
pub fn init(path: &Path, sample: bool) -> Result<(), LoadError> {
    if path.exists() {
        return Err(LoadError::Exists(path.to_owned()));
    }
    nonblocking_opens();
    let mut conn = Connection::open(path).map_err(|e| LoadError::sqlite(path, e))?;
    let tx = conn.transaction().map_err(|e| LoadError::sqlite(path, e))?;
    tx.execute_batch(SCHEMA_SQL)
        .map_err(|e| LoadError::sqlite(path, e))?;
    crate::triggers::install(&tx).map_err(|e| LoadError::sqlite(path, e))?;
    if sample {
        tx.execute_batch(SAMPLE_SQL)
            .map_err(|e| LoadError::sqlite(path, e))?;
    }
    tx.commit().map_err(|e| LoadError::sqlite(path, e))
}

/// Reads and validates a routing.db: every row-level error (empty when valid).
pub fn check(path: &Path) -> Result<Vec<RowError>, LoadError> {
    Ok(snapshot::check(&load(path)?))
}

/// The sample table, built in memory (for `geoedge route` without a routing.db).
pub fn sample() -> RawTable {
    nonblocking_opens();
    let mut conn = Connection::open_in_memory().expect("in-memory SQLite opens");
    let tx = conn.transaction().expect("in-memory transaction");
    tx.execute_batch(SCHEMA_SQL)
        .expect("shipped schema is valid SQL");
    crate::triggers::install(&tx).expect("the shipped schema's triggers are valid SQL");
    tx.execute_batch(SAMPLE_SQL)
        .expect("shipped sample is valid SQL");
    tx.commit().expect("in-memory commit");
    read(&conn, Path::new(":memory:")).expect("the in-memory sample reads back")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mkfifo(path: &Path) {
        let ok = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Runs `f` on a thread; fails if it blocks for 10 s.
    fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("blocked for 10 s")
    }

    #[test]
    fn a_fifo_or_a_symlink_to_one_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("routing.db");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for p in [fifo, link] {
            let e = promptly(move || load(&p).unwrap_err());
            assert!(matches!(e, LoadError::NotRegular { .. }), "{e}");
            assert!(
                e.to_string().ends_with("not a regular file (a FIFO)"),
                "{e}"
            );
            assert_eq!(e.reason(), RejectReason::Unreadable);
        }
        let e = load(dir.path()).unwrap_err();
        assert!(
            e.to_string().contains("not a regular file (a directory)"),
            "{e}"
        );
        let e = load(&dir.path().join("missing.db")).unwrap_err();
        assert!(matches!(e, LoadError::Missing(_)), "{e}");
    }

    /// The window between the check and SQLite's own open: SQLite opening
    /// a FIFO directly returns at once with an error instead of waiting for
    /// a writer.
    #[test]
    fn sqlite_itself_does_not_block_on_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.db");
        mkfifo(&fifo);
        nonblocking_opens();
        let e = promptly(move || {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            Connection::open_with_flags(&fifo, flags)
                .and_then(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0)))
                .unwrap_err()
        });
        eprintln!("SQLite on a FIFO: {e}");
    }

    #[test]
    fn regular_databases_still_load_and_init() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("routing.db");
        init(&p, true).unwrap();
        assert!(!load(&p).unwrap().backends.is_empty());
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(!load(&link).unwrap().backends.is_empty());
    }
}
