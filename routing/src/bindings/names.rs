//! Interned names: each app and backend id the binding table has seen gets a
//! small integer, so that a binding holds 4-byte ids instead of strings.
//!
//! Reads (every lookup) take no lock: the table is an [`ArcSwap`] that a
//! writer replaces with a copy holding one more name. Names come from
//! routing.db (apps and backend ids), never from the network, and are kept
//! for the table's life: their number is bounded by what the operator has
//! configured over time.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

/// The names seen so far, both ways.
#[derive(Debug)]
struct Table<T> {
    /// Name to id.
    ids: HashMap<T, u32, foldhash::fast::RandomState>,
    /// Id to name.
    names: Vec<T>,
}

/// Names interned as `u32` ids (see the module doc).
#[derive(Debug)]
pub(super) struct Names<T> {
    /// The current table.
    table: ArcSwap<Table<T>>,
    /// Serialises writers.
    write: Mutex<()>,
}

impl<T: Clone + Eq + Hash> Names<T> {
    /// No names yet.
    pub(super) fn new() -> Self {
        Self {
            table: ArcSwap::from_pointee(Table {
                ids: HashMap::default(),
                names: Vec::new(),
            }),
            write: Mutex::new(()),
        }
    }

    /// The name's id, if it has one.
    pub(super) fn get(&self, name: &T) -> Option<u32> {
        self.table.load().ids.get(name).copied()
    }

    /// The name's id, giving it the next one if it has none.
    pub(super) fn id(&self, name: &T) -> u32 {
        if let Some(id) = self.get(name) {
            return id;
        }
        let _writer = self.write.lock();
        let current = self.table.load_full();
        if let Some(&id) = current.ids.get(name) {
            return id;
        }
        let id = current.names.len() as u32;
        let mut next = Table {
            ids: current.ids.clone(),
            names: current.names.clone(),
        };
        next.ids.insert(name.clone(), id);
        next.names.push(name.clone());
        self.table.store(Arc::new(next));
        id
    }

    /// The name with this id.
    pub(super) fn name(&self, id: u32) -> Option<T> {
        self.table.load().names.get(id as usize).cloned()
    }
}
