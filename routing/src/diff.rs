//! What changed between two snapshots: a pure comparison used to log each
//! reload and to refuse edits that would empty a working table.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use crate::model::BackendId;
use crate::snapshot::Snapshot;

/// The difference between an old and a new snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Backends only in the new snapshot.
    pub added: Vec<BackendId>,
    /// Backends only in the old snapshot.
    pub removed: Vec<BackendId>,
    /// Backends in both whose configuration differs.
    pub changed: Vec<BackendId>,
    /// The regions differ.
    pub regions_changed: bool,
    /// The country map differs.
    pub countries_changed: bool,
    /// The WireGuard peers differ.
    pub peers_changed: bool,
    /// The `apps` rows (per-app limits) added, removed and changed, by app.
    pub apps: KeyCounts,
    /// The `sni_routes` rows added, removed and changed, by hostname.
    pub sni_routes: KeyCounts,
}

/// How many keys of a small keyed table were added, removed and changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyCounts {
    /// Keys only in the new table.
    pub added: usize,
    /// Keys only in the old table.
    pub removed: usize,
    /// Keys in both whose value differs.
    pub changed: usize,
}

impl KeyCounts {
    /// Compares two maps by key.
    pub fn between<K: Eq + Hash, V: PartialEq, S: BuildHasher>(
        old: &HashMap<K, V, S>,
        new: &HashMap<K, V, S>,
    ) -> Self {
        let mut c = KeyCounts::default();
        for (k, v) in old {
            match new.get(k) {
                None => c.removed += 1,
                Some(w) if w != v => c.changed += 1,
                Some(_) => {}
            }
        }
        c.added = new.keys().filter(|k| !old.contains_key(*k)).count();
        c
    }

    /// Nothing added, removed or changed.
    pub fn is_empty(&self) -> bool {
        *self == KeyCounts::default()
    }

    fn add(self, o: KeyCounts) -> KeyCounts {
        KeyCounts {
            added: self.added + o.added,
            removed: self.removed + o.removed,
            changed: self.changed + o.changed,
        }
    }
}

impl fmt::Display for KeyCounts {
    /// The non-zero counts: `1 added, 2 changed` (`no change` when none).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            (self.added, "added"),
            (self.removed, "removed"),
            (self.changed, "changed"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            f.write_str("no change")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

impl SnapshotDiff {
    /// Compares two snapshots (both sorted by backend id). A backend the new
    /// snapshot kept from the old one (the same `Arc`) is unchanged without
    /// a look at its fields, so the walk over an edit of a large table is
    /// mostly pointer comparisons.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Self {
        let mut d = SnapshotDiff::default();
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&old.backends, &new.backends);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if Arc::ptr_eq(x, y) || x.id == y.id => {
                    if !Arc::ptr_eq(x, y) && !x.same_config(y) {
                        d.changed.push(y.id.clone());
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.id < y.id => {
                    d.removed.push(x.id.clone());
                    i += 1;
                }
                (Some(_), Some(y)) => {
                    d.added.push(y.id.clone());
                    j += 1;
                }
                (Some(x), None) => {
                    d.removed.push(x.id.clone());
                    i += 1;
                }
                (None, Some(y)) => {
                    d.added.push(y.id.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        d.regions_changed = old.regions != new.regions;
        d.countries_changed = old.country_map != new.country_map;
        d.peers_changed = old.wg_peers != new.wg_peers;
        if !Arc::ptr_eq(&old.app_limits, &new.app_limits) {
            d.apps = KeyCounts::between(&old.app_limits, &new.app_limits);
        }
        if !Arc::ptr_eq(&old.sni_routes, &new.sni_routes) {
            let (a, b) = (&old.sni_routes, &new.sni_routes);
            d.sni_routes = KeyCounts::between(&a.exact, &b.exact)
                .add(KeyCounts::between(&a.wildcard, &b.wildcard));
        }
        d
    }

    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.regions_changed
            && !self.countries_changed
            && !self.peers_changed
            && self.apps.is_empty()
            && self.sni_routes.is_empty()
    }
}

/// Backend ids a diff's text names per list (added, removed, changed).
const LISTED: usize = 10;

impl fmt::Display for SnapshotDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // At most LISTED ids per list: a reload of a large table changes
        // many backends, and its log line stays short.
        let list = |v: &[BackendId]| {
            let mut s = v
                .iter()
                .take(LISTED)
                .map(BackendId::as_str)
                .collect::<Vec<_>>()
                .join(",");
            if v.len() > LISTED {
                s.push_str(&format!(",… {} more", v.len() - LISTED));
            }
            s
        };
        write!(
            f,
            "+{} [{}] -{} [{}] ~{} [{}]",
            self.added.len(),
            list(&self.added),
            self.removed.len(),
            list(&self.removed),
            self.changed.len(),
            list(&self.changed)
        )?;
        if self.regions_changed {
            f.write_str(" regions changed")?;
        }
        if self.countries_changed {
            f.write_str(" country map changed")?;
        }
        if self.peers_changed {
            f.write_str(" wireguard peers changed")?;
        }
        if !self.apps.is_empty() {
            write!(f, " apps: {}", self.apps)?;
        }
        if !self.sni_routes.is_empty() {
            write!(f, " sni_routes: {}", self.sni_routes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_of_a_large_diff_names_a_few_ids_and_counts_the_rest() {
        let ids = |n: usize| {
            (0..n)
                .map(|i| BackendId::new(&format!("b{i:06}")))
                .collect()
        };
        let d = SnapshotDiff {
            added: ids(100_000),
            removed: ids(3),
            ..SnapshotDiff::default()
        };
        let text = d.to_string();
        assert!(text.len() < 300, "{} bytes: {text}", text.len());
        assert!(text.starts_with("+100000 [b000000,b000001,"), "{text}");
        assert!(
            text.contains(",… 99990 more] -3 [b000000,b000001,b000002]"),
            "{text}"
        );
    }
}
