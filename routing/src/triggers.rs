//! The schema's own checks (version 3): `BEFORE` triggers that make SQLite
//! refuse an edit geoedge would refuse, so that the `sqlite3` CLI fails the
//! statement (exit 1, the rule in its message) instead of committing a
//! table that geoedge then rejects in its log while the old one serves.
//!
//! Each rule checks one row, or looks one value up in another table, and
//! is written so that it refuses only what geoedge's validation
//! ([`crate::snapshot`]) refuses too: a row a trigger lets through may
//! still be refused by geoedge (whole-table rules, and the parses SQL
//! cannot repeat exactly, stay there), never the other way round. Texts
//! are compared trimmed of the same white space as Rust's `str::trim`.
//!
//! Triggers are added to a file without rebuilding its tables (CHECK
//! constraints could not be), so `geoedge db migrate` adds them to older
//! files: [`install`] creates the triggers of the rules whose tables and
//! columns the file has (an edgeProxy file, without `country`, coordinates
//! or `regions`, gets those of the columns it has; its regions are checked
//! against the built-in ones while it has no `regions` table). SQLite
//! 3.40's `RAISE` takes a literal message, so a message names the table,
//! column and rule, not the values.

use std::collections::BTreeMap;

use rusqlite::Connection;

use crate::builtin;
use crate::snapshot::{MAX_LIMIT, MAX_RATE_PERIOD_SECONDS};

/// The prefix of every trigger name.
pub const PREFIX: &str = "geoedge_";

/// The white space Rust's `str::trim` removes (Unicode `White_Space`), as
/// the second argument of SQLite's `trim`.
const WS: &str = "char(32,9,10,11,12,13,133,160,5760,8192,8193,8194,8195,8196,8197,8198,8199,8200,8201,8202,8232,8233,8239,8287,12288)";

/// The statement a trigger guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// `INSERT`: the row is `NEW`.
    Insert,
    /// `UPDATE OF` the rule's columns: `OLD` and `NEW`.
    Update,
    /// `DELETE`: the row is `OLD`.
    Delete,
}

impl Event {
    fn suffix(self) -> &'static str {
        match self {
            Event::Insert => "insert",
            Event::Update => "update",
            Event::Delete => "delete",
        }
    }
}

/// One rule: the condition on which SQLite refuses a statement on `table`,
/// and the message it fails with.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The table the statement changes.
    pub table: &'static str,
    /// A short name, unique within the table (the trigger is
    /// `geoedge_{table}_{name}_{event}`).
    pub name: &'static str,
    /// The columns the rule reads: an `UPDATE` of one of them is checked.
    pub columns: &'static [&'static str],
    /// The conditions, by event (SQL over `NEW`/`OLD`): true refuses.
    pub when: Vec<(Event, String)>,
    /// What SQLite fails the statement with.
    pub message: &'static str,
}

impl Rule {
    /// The `CREATE TRIGGER` statements of this rule.
    pub fn sql(&self) -> Vec<(String, String)> {
        self.when
            .iter()
            .map(|(event, cond)| {
                let name = format!("{PREFIX}{}_{}_{}", self.table, self.name, event.suffix());
                let on = match event {
                    Event::Insert => format!("INSERT ON {}", self.table),
                    Event::Update => {
                        format!("UPDATE OF {} ON {}", self.columns.join(", "), self.table)
                    }
                    Event::Delete => format!("DELETE ON {}", self.table),
                };
                let sql = format!(
                    "CREATE TRIGGER IF NOT EXISTS {name} BEFORE {on}\nWHEN {cond}\nBEGIN SELECT RAISE(ABORT, '{}'); END;",
                    self.message.replace('\'', "''")
                );
                (name, sql)
            })
            .collect()
    }
}

/// The tables of a file and their columns (lower-case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Present(BTreeMap<String, Vec<String>>);

impl Present {
    /// Reads the tables (and views) of the open database.
    pub fn read(conn: &Connection) -> rusqlite::Result<Present> {
        let names: Vec<String> = conn
            .prepare("SELECT lower(name) FROM sqlite_master WHERE type IN ('table', 'view')")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut out = BTreeMap::new();
        for name in names {
            let cols: Vec<String> = conn
                .prepare(&format!(
                    "PRAGMA table_info(\"{}\")",
                    name.replace('"', "\"\"")
                ))?
                .query_map([], |r| r.get::<_, String>(1))?
                .map(|c| c.map(|c| c.to_ascii_lowercase()))
                .collect::<Result<_, _>>()?;
            out.insert(name, cols);
        }
        Ok(Present(out))
    }

    /// Every table and column of the shipped schema.
    pub fn full() -> Present {
        let conn = Connection::open_in_memory().expect("in-memory SQLite opens");
        conn.execute_batch(include_str!("../schema.sql"))
            .expect("the shipped schema is valid SQL");
        Present::read(&conn).expect("the shipped schema reads back")
    }

    /// True when the file has `table`.
    pub fn table(&self, table: &str) -> bool {
        self.0.contains_key(table)
    }

    /// True when the file has `table` with every one of `columns`.
    pub fn has(&self, table: &str, columns: &[&str]) -> bool {
        self.0
            .get(table)
            .is_some_and(|have| columns.iter().all(|c| have.iter().any(|h| h == c)))
    }
}

/// `x` trimmed as Rust's `str::trim` does.
fn t(x: &str) -> String {
    format!("trim({x}, {WS})")
}

/// True when `x`, a cell geoedge reads as an integer in `lo..=hi`, is
/// one it refuses: a number out of range or not whole, a blob, a text
/// that is not an optionally signed number (SQLite's integer affinity has
/// already turned the others into integers), or NULL when `null_ok` is
/// false.
fn int_bad(x: &str, lo: i64, hi: i64, null_ok: bool) -> String {
    let tx = t(x);
    let null = if null_ok {
        String::new()
    } else {
        format!(" OR {x} IS NULL")
    };
    format!(
        "(typeof({x}) IN ('integer', 'real') AND ({x} < {lo} OR {x} > {hi} OR {x} <> CAST({x} AS INTEGER)) \
         OR typeof({x}) = 'blob' \
         OR (typeof({x}) = 'text' AND (NOT {tx} GLOB '*[0-9]*' OR {tx} GLOB '*[^0-9+-]*')){null})"
    )
}

/// True when `x`, a cell geoedge reads as a text that must not be empty,
/// is not one (NULL passes when `null_ok`).
fn text_bad(x: &str, null_ok: bool) -> String {
    let null = if null_ok {
        String::new()
    } else {
        format!(" OR {x} IS NULL")
    };
    format!(
        "(typeof({x}) NOT IN ('text', 'null') OR (typeof({x}) = 'text' AND {} = ''){null})",
        t(x)
    )
}

/// True when `x`, a coordinate, is one geoedge refuses: a number outside
/// `-limit..=limit`, a blob or a text without a digit.
fn coord_bad(x: &str, limit: i64) -> String {
    format!(
        "(typeof({x}) IN ('integer', 'real') AND ({x} < -{limit} OR {x} > {limit}) \
         OR typeof({x}) = 'blob' \
         OR (typeof({x}) = 'text' AND NOT {} GLOB '*[0-9]*'))",
        t(x)
    )
}

/// True when `x`, a country cell, is not NULL, blank or two ASCII letters.
fn country_bad(x: &str, null_ok: bool) -> String {
    let tx = t(x);
    let blank = if null_ok {
        format!("{tx} <> '' AND ")
    } else {
        String::new()
    };
    let null = if null_ok {
        String::new()
    } else {
        format!(" OR {x} IS NULL")
    };
    format!(
        "(typeof({x}) NOT IN ('text', 'null') OR (typeof({x}) = 'text' AND {blank}NOT {tx} GLOB '[A-Za-z][A-Za-z]'){null})"
    )
}

/// True when the trimmed text `x` names no region: no `regions` row has it
/// as id, or, in a file without a `regions` table, no built-in region is.
fn region_unknown(x: &str, p: &Present) -> String {
    let tx = t(x);
    if p.has("regions", &["id"]) {
        // The primary key's index first: a full scan only for an id
        // that is not written exactly.
        format!(
            "(NOT EXISTS (SELECT 1 FROM regions WHERE id = {tx}) AND NOT EXISTS (SELECT 1 FROM regions WHERE typeof(id) = 'text' AND {} = {tx}))",
            t("id")
        )
    } else {
        let ids: Vec<String> = builtin::REGIONS
            .iter()
            .map(|(id, ..)| format!("'{id}'"))
            .collect();
        format!(
            "({tx} NOT IN ({}) AND NOT EXISTS (SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND lower(name) = 'regions'))",
            ids.join(", ")
        )
    }
}

/// The app a `backends.app` cell stands for, as geoedge reads it
/// (`default` for NULL; NULL for a cell that names none).
fn backend_app(x: &str) -> String {
    format!(
        "(CASE WHEN {x} IS NULL THEN 'default' WHEN typeof({x}) = 'text' AND {tx} <> '' THEN {tx} END)",
        tx = t(x)
    )
}

/// True when no backend row other than `except` (a rowid expression, or
/// none) nor any `apps` row names the app `key`.
fn app_unknown(key: &str, except: Option<&str>, p: &Present) -> String {
    let other = except.map_or(String::new(), |e| format!(" AND rowid <> {e}"));
    let mut s = format!(
        "NOT EXISTS (SELECT 1 FROM backends WHERE {} = {key}{other})",
        backend_app("app")
    );
    if p.has("apps", &["app"]) {
        s.push_str(&format!(
            " AND NOT EXISTS (SELECT 1 FROM apps WHERE app = {key}) AND NOT EXISTS (SELECT 1 FROM apps WHERE typeof(app) = 'text' AND {} = {key})",
            t("app")
        ));
    }
    s
}

/// True when another row of `table` has the key `key(NEW)` while not the
/// same `col` exactly (an exact duplicate is the primary key's to refuse,
/// or replaces the row). With `only_unlike`, only a new value unlike its
/// key (padded with white space) is looked for, so that a table written
/// row by row is not scanned for each row: a clean value next to a padded
/// one is left to geoedge.
fn duplicate(
    table: &str,
    col: &str,
    key: impl Fn(&str) -> String,
    only_unlike: bool,
    event: Event,
) -> String {
    let other = match event {
        Event::Update => " AND rowid <> OLD.rowid",
        _ => "",
    };
    let new_key = key(&format!("NEW.{col}"));
    let unlike = if only_unlike {
        format!(" AND NEW.{col} <> {new_key}")
    } else {
        String::new()
    };
    format!(
        "(typeof(NEW.{col}) = 'text'{unlike} AND EXISTS (SELECT 1 FROM {table} WHERE typeof({col}) = 'text' AND {col} <> NEW.{col} AND {} = {new_key}{other}))",
        key(col),
    )
}

/// Both events of a rule on `NEW`.
fn on_write(cond: String) -> Vec<(Event, String)> {
    vec![(Event::Insert, cond.clone()), (Event::Update, cond)]
}

/// The rules, every one with its columns in the full schema.
pub fn all_rules() -> Vec<Rule> {
    rules(&Present::full())
}

/// The rules a file with these tables and columns can have: each needs
/// its table, the columns it reads, and the tables it looks up.
pub fn rules(p: &Present) -> Vec<Rule> {
    let mut out: Vec<Rule> = Vec::new();
    let mut add = |rule: Rule| {
        if p.has(rule.table, rule.columns) {
            out.push(rule);
        }
    };
    let max = MAX_LIMIT;

    // backends
    add(Rule {
        table: "backends",
        name: "id",
        columns: &["id"],
        when: on_write(text_bad("NEW.id", false)),
        message: "backends.id must be a non-empty text",
    });
    add(Rule {
        table: "backends",
        name: "id_duplicate",
        columns: &["id"],
        when: [Event::Insert, Event::Update]
            .into_iter()
            .map(|e| (e, duplicate("backends", "id", t, true, e)))
            .collect(),
        message: "backends.id is another row's id but for white space (duplicate backend id)",
    });
    add(Rule {
        table: "backends",
        name: "app",
        columns: &["app"],
        when: on_write(text_bad("NEW.app", true)),
        message: "backends.app must be a non-empty text (NULL: default)",
    });
    add(Rule {
        table: "backends",
        name: "region",
        columns: &["region"],
        when: on_write(format!(
            "({} OR (typeof(NEW.region) = 'text' AND {} <> '' AND {}))",
            text_bad("NEW.region", false),
            t("NEW.region"),
            region_unknown("NEW.region", p)
        )),
        message: if p.has("regions", &["id"]) {
            "backends.region must be the id of a regions row (unknown region)"
        } else {
            "backends.region must be a built-in region: eu, us, sa or ap (unknown region)"
        },
    });
    add(Rule {
        table: "backends",
        name: "country",
        columns: &["country"],
        when: on_write(country_bad("NEW.country", true)),
        message: "backends.country must be an ISO 3166-1 alpha-2 code (two letters) or NULL",
    });
    add(Rule {
        table: "backends",
        name: "latitude",
        columns: &["latitude"],
        when: on_write(coord_bad("NEW.latitude", 90)),
        message: "backends.latitude must be a number in -90..=90 or NULL",
    });
    add(Rule {
        table: "backends",
        name: "longitude",
        columns: &["longitude"],
        when: on_write(coord_bad("NEW.longitude", 180)),
        message: "backends.longitude must be a number in -180..=180 or NULL",
    });
    add(Rule {
        table: "backends",
        name: "site",
        columns: &["latitude", "longitude"],
        when: on_write("((NEW.latitude IS NULL) <> (NEW.longitude IS NULL))".into()),
        message: "backends.latitude and longitude must be both set or both NULL",
    });
    let ip = format!("rtrim(ltrim({}, '['), ']')", t("NEW.wg_ip"));
    add(
        Rule {
            table: "backends",
            name: "wg_ip",
            columns: &["wg_ip"],
            when: on_write(format!(
                "({} OR (typeof(NEW.wg_ip) = 'text' AND ({ip} GLOB '*[^0-9A-Fa-f:.]*' \
                 OR (instr({ip}, ':') = 0 AND ({ip} GLOB '*[^0-9.]*' OR length({ip}) - length(replace({ip}, '.', '')) <> 3)))))",
                text_bad("NEW.wg_ip", false)
            )),
            message: "backends.wg_ip must be an IPv4 or IPv6 address",
        },
    );
    add(Rule {
        table: "backends",
        name: "port",
        columns: &["port"],
        when: on_write(int_bad("NEW.port", 1, 65535, false)),
        message: "backends.port must be an integer in 1..=65535",
    });
    for (name, message) in [
        ("healthy", "backends.healthy must be 0 or 1"),
        ("deleted", "backends.deleted must be 0 or 1"),
    ] {
        add(Rule {
            table: "backends",
            name,
            columns: if name == "healthy" {
                &["healthy"]
            } else {
                &["deleted"]
            },
            when: on_write(int_bad(&format!("NEW.{name}"), 0, 1, true)),
            message,
        });
    }
    add(Rule {
        table: "backends",
        name: "weight",
        columns: &["weight"],
        when: on_write(int_bad("NEW.weight", 0, max, true)),
        message: "backends.weight must be an integer in 0..=16777216",
    });
    add(Rule {
        table: "backends",
        name: "soft_limit",
        columns: &["soft_limit"],
        when: on_write(int_bad("NEW.soft_limit", 0, max, false)),
        message: "backends.soft_limit must be an integer in 0..=16777216",
    });
    add(Rule {
        table: "backends",
        name: "hard_limit",
        columns: &["hard_limit"],
        when: on_write(int_bad("NEW.hard_limit", 0, max, false)),
        message: "backends.hard_limit must be an integer in 0..=16777216",
    });
    add(
        Rule {
            table: "backends",
            name: "limits",
            columns: &["soft_limit", "hard_limit"],
            when: on_write(
                "(typeof(NEW.soft_limit) IN ('integer', 'real') AND typeof(NEW.hard_limit) IN ('integer', 'real') AND NEW.soft_limit > NEW.hard_limit)".into(),
            ),
            message: "backends.soft_limit is above hard_limit (inverted limits): change both in one UPDATE",
        },
    );
    if p.has("sni_routes", &["app"]) {
        let old = backend_app("OLD.app");
        let routed = format!(
            "EXISTS (SELECT 1 FROM sni_routes WHERE typeof(app) = 'text' AND {} = {old}) AND {}",
            t("app"),
            app_unknown(&old, Some("OLD.rowid"), p)
        );
        add(
            Rule {
                table: "backends",
                name: "routed_app",
                columns: &["app"],
                when: vec![
                    (Event::Delete, format!("({routed})")),
                    (
                        Event::Update,
                        format!("({} IS NOT {old} AND {routed})", backend_app("NEW.app")),
                    ),
                ],
                message: "backends: the last row of an app that sni_routes routes to (unknown app): delete its routes first, or mark the backend deleted = 1",
            },
        );
    }

    // regions
    add(Rule {
        table: "regions",
        name: "id",
        columns: &["id"],
        when: on_write(text_bad("NEW.id", false)),
        message: "regions.id must be a non-empty text",
    });
    add(Rule {
        table: "regions",
        name: "id_duplicate",
        columns: &["id"],
        when: [Event::Insert, Event::Update]
            .into_iter()
            .map(|e| (e, duplicate("regions", "id", t, true, e)))
            .collect(),
        message: "regions.id is another row's id but for white space (duplicate region id)",
    });
    for (name, limit, message) in [
        (
            "latitude",
            90,
            "regions.latitude must be a number in -90..=90",
        ),
        (
            "longitude",
            180,
            "regions.longitude must be a number in -180..=180",
        ),
    ] {
        add(Rule {
            table: "regions",
            name,
            columns: if name == "latitude" {
                &["latitude"]
            } else {
                &["longitude"]
            },
            when: on_write(format!(
                "({} OR NEW.{name} IS NULL)",
                coord_bad(&format!("NEW.{name}"), limit)
            )),
            message,
        });
    }
    if p.has("regions", &["id"]) {
        // A region still referred to must stay: the rows naming it, unless
        // another regions row has the same id.
        let key = t("OLD.id");
        let mut users = Vec::new();
        for (table, col) in [
            ("backends", "region"),
            ("country_regions", "region"),
            ("wg_peers", "region"),
        ] {
            if p.has(table, &[col]) {
                users.push(format!(
                    "EXISTS (SELECT 1 FROM {table} WHERE typeof({col}) = 'text' AND {} = {key})",
                    t(col)
                ));
            }
        }
        if !users.is_empty() {
            let used = format!(
                "typeof(OLD.id) = 'text' AND ({}) AND NOT EXISTS (SELECT 1 FROM regions WHERE rowid <> OLD.rowid AND typeof(id) = 'text' AND {} = {key})",
                users.join(" OR "),
                t("id")
            );
            add(
                Rule {
                    table: "regions",
                    name: "in_use",
                    columns: &["id"],
                    when: vec![
                        (Event::Delete, format!("({used})")),
                        (
                            Event::Update,
                            format!("({} IS NOT {key} AND {used})", t("NEW.id")),
                        ),
                    ],
                    message: "regions.id is used by backends, country_regions or wg_peers (unknown region): move them to another region first",
                },
            );
        }
    }

    // country_regions
    add(Rule {
        table: "country_regions",
        name: "country",
        columns: &["country"],
        when: on_write(country_bad("NEW.country", false)),
        message: "country_regions.country must be an ISO 3166-1 alpha-2 code (two letters)",
    });
    add(Rule {
        table: "country_regions",
        name: "country_duplicate",
        columns: &["country"],
        when: [Event::Insert, Event::Update]
            .into_iter()
            .map(|e| {
                (
                    e,
                    duplicate(
                        "country_regions",
                        "country",
                        |x| format!("upper({})", t(x)),
                        false,
                        e,
                    ),
                )
            })
            .collect(),
        message:
            "country_regions.country is another row's country in another case (duplicate country)",
    });
    add(Rule {
        table: "country_regions",
        name: "region",
        columns: &["region"],
        when: on_write(format!(
            "({} OR (typeof(NEW.region) = 'text' AND {} <> '' AND {}))",
            text_bad("NEW.region", false),
            t("NEW.region"),
            region_unknown("NEW.region", p)
        )),
        message: if p.has("regions", &["id"]) {
            "country_regions.region must be the id of a regions row (unknown region)"
        } else {
            "country_regions.region must be a built-in region: eu, us, sa or ap (unknown region)"
        },
    });

    // wg_peers
    add(
        Rule {
            table: "wg_peers",
            name: "persistent_keepalive",
            columns: &["persistent_keepalive"],
            when: on_write(
                "(NEW.persistent_keepalive IS NOT NULL AND (typeof(NEW.persistent_keepalive) <> 'integer' OR NEW.persistent_keepalive NOT BETWEEN 0 AND 65535))".into(),
            ),
            message: "wg_peers.persistent_keepalive must be an integer in 0..=65535 or NULL",
        },
    );
    add(Rule {
        table: "wg_peers",
        name: "region",
        columns: &["region"],
        when: on_write(format!(
            "(typeof(NEW.region) NOT IN ('text', 'null') OR (typeof(NEW.region) = 'text' AND {}))",
            region_unknown("NEW.region", p)
        )),
        message: if p.has("regions", &["id"]) {
            "wg_peers.region must be the id of a regions row or NULL (unknown region)"
        } else {
            "wg_peers.region must be a built-in region (eu, us, sa or ap) or NULL (unknown region)"
        },
    });

    // apps
    add(Rule {
        table: "apps",
        name: "app",
        columns: &["app"],
        when: on_write(text_bad("NEW.app", false)),
        message: "apps.app must be a non-empty text",
    });
    add(Rule {
        table: "apps",
        name: "app_duplicate",
        columns: &["app"],
        when: [Event::Insert, Event::Update]
            .into_iter()
            .map(|e| (e, duplicate("apps", "app", t, true, e)))
            .collect(),
        message: "apps.app is another row's app but for white space (duplicate app)",
    });
    add(Rule {
        table: "apps",
        name: "client_max_connections",
        columns: &["client_max_connections"],
        when: on_write(int_bad("NEW.client_max_connections", 0, max, true)),
        message: "apps.client_max_connections must be an integer in 0..=16777216 or NULL",
    });
    add(Rule {
        table: "apps",
        name: "client_rate",
        columns: &["client_rate"],
        when: on_write(int_bad("NEW.client_rate", 0, max, true)),
        message: "apps.client_rate must be an integer in 0..=16777216 or NULL",
    });
    add(Rule {
        table: "apps",
        name: "client_rate_period_seconds",
        columns: &["client_rate_period_seconds"],
        when: on_write(int_bad(
            "NEW.client_rate_period_seconds",
            1,
            MAX_RATE_PERIOD_SECONDS,
            true,
        )),
        message: "apps.client_rate_period_seconds must be an integer in 1..=86400 or NULL",
    });
    if p.has("sni_routes", &["app"]) && p.has("backends", &["app"]) {
        let old = t("OLD.app");
        let routed = format!(
            "typeof(OLD.app) = 'text' AND EXISTS (SELECT 1 FROM sni_routes WHERE typeof(app) = 'text' AND {} = {old}) \
             AND NOT EXISTS (SELECT 1 FROM apps WHERE rowid <> OLD.rowid AND typeof(app) = 'text' AND {} = {old}) \
             AND NOT EXISTS (SELECT 1 FROM backends WHERE {} = {old})",
            t("app"),
            t("app"),
            backend_app("app")
        );
        add(
            Rule {
                table: "apps",
                name: "routed_app",
                columns: &["app"],
                when: vec![
                    (Event::Delete, format!("({routed})")),
                    (
                        Event::Update,
                        format!("({} IS NOT {old} AND {routed})", t("NEW.app")),
                    ),
                ],
                message: "apps: an app that sni_routes routes to and no backend has (unknown app): delete its routes first",
            },
        );
    }

    // sni_routes
    let host = t("NEW.hostname");
    let name =
        format!("(CASE WHEN substr({host}, 1, 2) = '*.' THEN substr({host}, 3) ELSE {host} END)");
    add(
        Rule {
            table: "sni_routes",
            name: "hostname",
            columns: &["hostname"],
            when: on_write(format!(
                "({} OR (typeof(NEW.hostname) = 'text' AND ({name} GLOB '*[^a-z0-9.-]*' OR {name} GLOB '.*' \
                 OR {name} GLOB '*.' OR instr({name}, '..') > 0 OR length({host}) > 253)))",
                text_bad("NEW.hostname", false)
            )),
            message: "sni_routes.hostname must be a lower-case name or *.wildcard of letters, digits, '-' and '.' (no empty label, 253 characters at most)",
        },
    );
    if p.has("backends", &["app"]) {
        add(Rule {
            table: "sni_routes",
            name: "app",
            columns: &["app"],
            when: on_write(format!(
                "({} OR (typeof(NEW.app) = 'text' AND {}))",
                text_bad("NEW.app", false),
                app_unknown(&t("NEW.app"), None, p)
            )),
            message:
                "sni_routes.app must be the app of a backends row or an apps row (unknown app)",
        });
    }
    out
}

/// Creates the triggers of the rules the open database's tables allow
/// (those it has already stay) and returns their names.
pub fn install(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let present = Present::read(conn)?;
    let mut names = Vec::new();
    for rule in rules(&present) {
        for (name, sql) in rule.sql() {
            conn.execute_batch(&sql)?;
            names.push(name);
        }
    }
    Ok(names)
}

/// The names of the geoedge triggers the open database has.
pub fn installed(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'geoedge\\_%' ESCAPE '\\' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Drops every geoedge trigger of the open database (as a file written by
/// a tool that bypasses them would be); returns how many there were.
pub fn remove(conn: &Connection) -> rusqlite::Result<usize> {
    let names = installed(conn)?;
    for name in &names {
        conn.execute_batch(&format!("DROP TRIGGER \"{name}\";"))?;
    }
    Ok(names.len())
}

#[cfg(test)]
mod tests;
