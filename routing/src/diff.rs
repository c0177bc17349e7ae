//! What changed between two snapshots: a pure comparison used to log each
//! reload and to refuse edits that would empty a working table.

use std::fmt;

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
    /// Compares two snapshots (both sorted by backend id).
    pub fn between(old: &Snapshot, new: &Snapshot) -> Self {
        let mut d = SnapshotDiff::default();
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&old.backends, &new.backends);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.id == y.id => {
                    if !x.same_config(y) {
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

impl fmt::Display for SnapshotDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[BackendId]| {
            v.iter()
                .map(BackendId::as_str)
                .collect::<Vec<_>>()
                .join(",")
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
