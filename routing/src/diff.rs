//! What changed between two snapshots: a pure comparison used to log each
//! reload and to refuse edits that would empty a working table.

use std::fmt;
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
