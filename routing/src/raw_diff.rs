//! What changed between two routing.db files, row by row: rows added,
//! removed and changed in each table, by the table's key (`backends.id`,
//! `regions.id`, `country_regions.country`, `wg_peers.public_key`,
//! `apps.app`, `sni_routes.hostname`). A
//! pure comparison of two [`RawTable`]s, for `geoedge db publish
//! --dry-run`; the SQLite rowid is not part of a row's content.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::raw::{RawTable, Value};

/// The changes of one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// The table's name.
    pub table: &'static str,
    /// Keys of rows only in the new file.
    pub added: Vec<String>,
    /// Keys of rows only in the old file.
    pub removed: Vec<String>,
    /// Keys of rows in both whose content differs.
    pub changed: Vec<String>,
}

impl TableDiff {
    /// No row added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The changes of every table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowDiff {
    /// One entry per table, in schema order.
    pub tables: Vec<TableDiff>,
}

impl RowDiff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.tables.iter().all(TableDiff::is_empty)
    }

    /// One line per table with changes, then one per changed row.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            out.push_str("  no row changed\n");
            return out;
        }
        for t in self.tables.iter().filter(|t| !t.is_empty()) {
            let _ = writeln!(
                out,
                "  {}: {} added, {} removed, {} changed",
                t.table,
                t.added.len(),
                t.removed.len(),
                t.changed.len()
            );
            for (mark, keys) in [("+", &t.added), ("-", &t.removed), ("~", &t.changed)] {
                for k in keys {
                    let _ = writeln!(out, "    {mark} {k}");
                }
            }
        }
        out
    }
}

/// A key cell as text (`NULL` for a missing one).
fn key(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(f) => f.to_string(),
        Value::Text(s) => s.clone(),
        Value::Blob(b) => format!(
            "x'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// Compares rows by key; `content` is a row's cells without its rowid. A
/// key held by several rows (an invalid file) compares its rows in order.
fn table<R>(
    name: &'static str,
    old: &[R],
    new: &[R],
    key_of: impl Fn(&R) -> String,
    content: impl Fn(&R) -> Vec<Value>,
) -> TableDiff {
    let index = |rows: &[R]| {
        let mut m: BTreeMap<String, Vec<Vec<Value>>> = BTreeMap::new();
        for r in rows {
            m.entry(key_of(r)).or_default().push(content(r));
        }
        m
    };
    let (a, b) = (index(old), index(new));
    let mut d = TableDiff {
        table: name,
        ..Default::default()
    };
    for (k, rows) in &a {
        match b.get(k) {
            None => d.removed.push(k.clone()),
            Some(other) if other != rows => d.changed.push(k.clone()),
            Some(_) => {}
        }
    }
    d.added = b.keys().filter(|k| !a.contains_key(*k)).cloned().collect();
    d
}

/// The row changes from `old` to `new`.
pub fn diff(old: &RawTable, new: &RawTable) -> RowDiff {
    let (old_regions, new_regions) = (
        old.regions.clone().unwrap_or_default(),
        new.regions.clone().unwrap_or_default(),
    );
    let (old_countries, new_countries) = (
        old.country_regions.clone().unwrap_or_default(),
        new.country_regions.clone().unwrap_or_default(),
    );
    RowDiff {
        tables: vec![
            table(
                "backends",
                &old.backends,
                &new.backends,
                |r| key(&r.id),
                |r| {
                    vec![
                        r.id.clone(),
                        r.app.clone(),
                        r.region.clone(),
                        r.country.clone(),
                        r.latitude.clone(),
                        r.longitude.clone(),
                        r.wg_ip.clone(),
                        r.port.clone(),
                        r.healthy.clone(),
                        r.weight.clone(),
                        r.soft_limit.clone(),
                        r.hard_limit.clone(),
                        r.deleted.clone(),
                    ]
                },
            ),
            table(
                "regions",
                &old_regions,
                &new_regions,
                |r| key(&r.id),
                |r| {
                    vec![
                        r.id.clone(),
                        r.name.clone(),
                        r.latitude.clone(),
                        r.longitude.clone(),
                    ]
                },
            ),
            table(
                "country_regions",
                &old_countries,
                &new_countries,
                |r| key(&r.country),
                |r| vec![r.country.clone(), r.region.clone()],
            ),
            table(
                "wg_peers",
                &old.wg_peers,
                &new.wg_peers,
                |r| key(&r.public_key),
                |r| {
                    vec![
                        r.public_key.clone(),
                        r.endpoint.clone(),
                        r.allowed_ips.clone(),
                        r.persistent_keepalive.clone(),
                        r.region.clone(),
                    ]
                },
            ),
            table(
                "apps",
                &old.apps,
                &new.apps,
                |r| key(&r.app),
                |r| {
                    vec![
                        r.app.clone(),
                        r.client_max_connections.clone(),
                        r.client_rate.clone(),
                        r.client_rate_period_seconds.clone(),
                    ]
                },
            ),
            table(
                "sni_routes",
                &old.sni_routes,
                &new.sni_routes,
                |r| key(&r.hostname),
                |r| vec![r.hostname.clone(), r.app.clone()],
            ),
        ],
    }
}

#[cfg(test)]
mod tests;
