//! One shard of the binding table: compact entries in two segments, found
//! through one hash index.
//!
//! Entries (28 bytes each) live in two vectors: *probation*, where a key's
//! first binding goes, and *protected*, where a key moves the first time it
//! is found again. The index is a [`HashTable`] of 4-byte slots (segment and
//! position), so a binding costs its entry plus a few bytes of index.
//!
//! Eviction: when the shard is full, a new key replaces a probation entry,
//! taken in turn by a hand that walks the probation vector (roughly oldest
//! first). The protected segment is capped below the shard's capacity, so a
//! full shard always has a probation entry to give up; protected entries
//! leave only by expiry, by unbinding, or by demotion: a key promoted into a
//! full protected segment swaps places with the entry a CLOCK hand picks
//! there (the first one not used since the hand last passed). A flood of
//! keys that are never seen twice therefore churns probation only.
//!
//! Removal swaps the vector's last entry into the hole and fixes its slot.
//! Vectors and index grow on demand (nothing is pre-sized) and shrink once
//! less than a quarter full: a vector as entries leave it, the index at the
//! end of [`Shard::sweep`].

use hashbrown::HashTable;

use super::BindingKey;

/// Where a key's first binding goes.
const PROBATION: usize = 0;
/// Where a key moves once it is found again.
const PROTECTED: usize = 1;
/// The top bit of [`Entry::backend`]: used since the CLOCK hand last passed.
const REFERENCED: u32 = 1 << 31;

/// One binding.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The client.
    key: BindingKey,
    /// Interned backend id; [`REFERENCED`] in the top bit.
    backend: u32,
    /// Seconds since the table's epoch.
    last_used: u32,
}

impl Entry {
    fn backend(&self) -> u32 {
        self.backend & !REFERENCED
    }
}

fn slot(seg: usize, pos: usize) -> u32 {
    ((seg as u32) << 31) | pos as u32
}

fn unslot(slot: u32) -> (usize, usize) {
    ((slot >> 31) as usize, (slot & !(1 << 31)) as usize)
}

fn at(segs: &[Vec<Entry>; 2], s: u32) -> &Entry {
    let (seg, pos) = unslot(s);
    &segs[seg][pos]
}

/// The outcome of a [`Shard::lookup`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// Live: the interned backend.
    Live(u32),
    /// Was there but idle for the TTL: removed.
    Expired,
    /// Not there.
    Missing,
}

/// The outcome of a [`Shard::insert`].
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Inserted {
    /// The key was bound already: its backend was replaced.
    Replaced,
    /// A new key, with room for it.
    Added,
    /// A new key in a full shard: a probation entry was evicted for it.
    Evicted,
}

/// One shard (see the module doc).
#[derive(Debug)]
pub(super) struct Shard {
    /// Key hash to slot.
    index: HashTable<u32>,
    /// Probation and protected entries.
    segs: [Vec<Entry>; 2],
    /// Probation's eviction hand and protected's CLOCK hand.
    hands: [usize; 2],
    /// No entry was used before this (seconds since the epoch): a sweep
    /// earlier than this plus the TTL has nothing to do.
    oldest: u32,
    /// Most entries held.
    cap: usize,
    /// Most entries in the protected segment: `cap` less a quarter.
    protected_cap: usize,
}

impl Shard {
    /// An empty shard that holds at most `cap` (at least 1) entries.
    pub(super) fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            index: HashTable::new(),
            segs: [Vec::new(), Vec::new()],
            hands: [0, 0],
            oldest: u32::MAX,
            cap,
            protected_cap: cap - cap.div_ceil(4),
        }
    }

    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.segs[PROBATION].len() + self.segs[PROTECTED].len()
    }

    /// Entries in the protected segment.
    #[cfg(test)]
    pub(super) fn protected_len(&self) -> usize {
        self.segs[PROTECTED].len()
    }

    /// Heap bytes held by the vectors and the index.
    pub(super) fn heap_bytes(&self) -> usize {
        let entries: usize = self.segs.iter().map(Vec::capacity).sum();
        entries * std::mem::size_of::<Entry>() + self.index.allocation_size()
    }

    fn find(&self, hash: u64, key: &BindingKey) -> Option<u32> {
        let segs = &self.segs;
        self.index.find(hash, |&s| at(segs, s).key == *key).copied()
    }

    /// Moves the index's slot for the entry hashed `hash` from `from` to `to`.
    fn reslot(&mut self, hash: u64, from: u32, to: u32) {
        if let Some(s) = self.index.find_mut(hash, |&s| s == from) {
            *s = to;
        }
    }

    /// Removes the entry at `s` (hashed `hash`); the segment's last entry
    /// fills the hole.
    fn remove_at(&mut self, s: u32, hash: u64, hash_of: &impl Fn(&BindingKey) -> u64) -> Entry {
        if let Ok(found) = self.index.find_entry(hash, |&x| x == s) {
            found.remove();
        }
        let (seg, pos) = unslot(s);
        let entry = self.segs[seg].swap_remove(pos);
        let len = self.segs[seg].len();
        if pos < len {
            let moved = hash_of(&self.segs[seg][pos].key);
            self.reslot(moved, slot(seg, len), s);
        }
        // A segment left less than a quarter full (promotions drain
        // probation, expiry drains both) gives room back: amortised, as it
        // must lose half of what is left before the next time.
        let v = &mut self.segs[seg];
        if v.capacity() > 16 && len < v.capacity() / 4 {
            v.shrink_to(len * 2);
        }
        entry
    }

    /// Appends to a segment, growing it by half (not double) and never past
    /// the shard's capacity.
    fn push(&mut self, seg: usize, entry: Entry) -> u32 {
        let v = &mut self.segs[seg];
        if v.len() == v.capacity() {
            let room = self.cap.saturating_sub(v.len()).max(1);
            v.reserve_exact((v.capacity() / 2).clamp(8, room.max(8)).min(room));
        }
        v.push(entry);
        slot(seg, v.len() - 1)
    }

    /// Adds a slot to the index.
    fn index_insert(&mut self, hash: u64, s: u32, hash_of: &impl Fn(&BindingKey) -> u64) {
        let segs = &self.segs;
        self.index
            .insert_unique(hash, s, |&x| hash_of(&at(segs, x).key));
    }

    /// The key's backend if it is live (refreshing it, and promoting it out
    /// of probation); an expired entry is removed.
    pub(super) fn lookup(
        &mut self,
        hash: u64,
        key: &BindingKey,
        now: u32,
        ttl: u32,
        hash_of: &impl Fn(&BindingKey) -> u64,
    ) -> Found {
        let Some(s) = self.find(hash, key) else {
            return Found::Missing;
        };
        let (seg, pos) = unslot(s);
        if now.saturating_sub(self.segs[seg][pos].last_used) >= ttl {
            self.remove_at(s, hash, hash_of);
            return Found::Expired;
        }
        let e = &mut self.segs[seg][pos];
        e.last_used = e.last_used.max(now);
        e.backend |= REFERENCED;
        let backend = e.backend();
        if seg == PROBATION {
            self.promote(pos, hash, hash_of);
        }
        Found::Live(backend)
    }

    /// Moves probation's entry at `pos` (hashed `hash`) to the protected
    /// segment; when that is full, the entry the CLOCK hand picks there
    /// takes its place in probation.
    fn promote(&mut self, pos: usize, hash: u64, hash_of: &impl Fn(&BindingKey) -> u64) {
        if self.protected_cap == 0 {
            return;
        }
        let from = slot(PROBATION, pos);
        if self.segs[PROTECTED].len() < self.protected_cap {
            let entry = self.remove_at(from, hash, hash_of);
            let to = self.push(PROTECTED, entry);
            self.index_insert(hash, to, hash_of);
            return;
        }
        let victim = self.clock_victim();
        let to = slot(PROTECTED, victim);
        let mut demoted = self.segs[PROTECTED][victim];
        demoted.backend &= !REFERENCED;
        self.segs[PROTECTED][victim] = self.segs[PROBATION][pos];
        self.segs[PROBATION][pos] = demoted;
        // Two index slots change: through a value no slot holds, so each
        // step finds exactly one.
        const PARKED: u32 = u32::MAX;
        self.reslot(hash, from, PARKED);
        self.reslot(hash_of(&demoted.key), to, from);
        self.reslot(hash, PARKED, to);
    }

    /// The protected position to demote: the first, from the hand on, not
    /// used since the hand last passed (clearing the mark of those that were).
    fn clock_victim(&mut self) -> usize {
        let v = &mut self.segs[PROTECTED];
        loop {
            if self.hands[PROTECTED] >= v.len() {
                self.hands[PROTECTED] = 0;
            }
            let e = &mut v[self.hands[PROTECTED]];
            self.hands[PROTECTED] += 1;
            if e.backend & REFERENCED == 0 {
                return self.hands[PROTECTED] - 1;
            }
            e.backend &= !REFERENCED;
        }
    }

    /// Binds `key` to `backend`: in place if it is bound already, otherwise
    /// into probation, evicting a probation entry when the shard is full.
    pub(super) fn insert(
        &mut self,
        hash: u64,
        key: BindingKey,
        backend: u32,
        now: u32,
        hash_of: &impl Fn(&BindingKey) -> u64,
    ) -> Inserted {
        self.oldest = self.oldest.min(now);
        if let Some(s) = self.find(hash, &key) {
            let (seg, pos) = unslot(s);
            let e = &mut self.segs[seg][pos];
            e.backend = (e.backend & REFERENCED) | (backend & !REFERENCED);
            e.last_used = now;
            return Inserted::Replaced;
        }
        let entry = Entry {
            key,
            backend: backend & !REFERENCED,
            last_used: now,
        };
        if self.len() < self.cap {
            let s = self.push(PROBATION, entry);
            self.index_insert(hash, s, hash_of);
            return Inserted::Added;
        }
        // Full: protected holds at most `protected_cap` < `cap`, so
        // probation is not empty. The new entry takes the hand's place.
        let probation = &self.segs[PROBATION];
        if self.hands[PROBATION] >= probation.len() {
            self.hands[PROBATION] = 0;
        }
        let pos = self.hands[PROBATION];
        self.hands[PROBATION] += 1;
        let s = slot(PROBATION, pos);
        let old = hash_of(&probation[pos].key);
        if let Ok(found) = self.index.find_entry(old, |&x| x == s) {
            found.remove();
        }
        self.segs[PROBATION][pos] = entry;
        self.index_insert(hash, s, hash_of);
        Inserted::Evicted
    }

    /// Every entry idle less than `ttl` seconds at `now`: key, interned
    /// backend, idle seconds and whether it is protected.
    pub(super) fn export(&self, now: u32, ttl: u32) -> Vec<(BindingKey, u32, u32, bool)> {
        let mut out = Vec::with_capacity(self.len());
        for seg in [PROBATION, PROTECTED] {
            for e in &self.segs[seg] {
                let idle = now.saturating_sub(e.last_used);
                if idle < ttl {
                    out.push((e.key, e.backend(), idle, seg == PROTECTED));
                }
            }
        }
        out
    }

    /// Adds a binding handed over by another table, last used at
    /// `last_used`: into the protected segment when it was protected there
    /// and this one has room, otherwise into probation. A key bound here
    /// already keeps its binding, and a full shard takes nothing (it
    /// evicts nobody for an import). Returns whether it was added.
    pub(super) fn restore(
        &mut self,
        hash: u64,
        key: BindingKey,
        backend: u32,
        last_used: u32,
        protected: bool,
        hash_of: &impl Fn(&BindingKey) -> u64,
    ) -> bool {
        if self.len() >= self.cap || self.find(hash, &key).is_some() {
            return false;
        }
        self.oldest = self.oldest.min(last_used);
        let entry = Entry {
            key,
            backend: backend & !REFERENCED,
            last_used,
        };
        let seg = if protected && self.segs[PROTECTED].len() < self.protected_cap {
            PROTECTED
        } else {
            PROBATION
        };
        let s = self.push(seg, entry);
        self.index_insert(hash, s, hash_of);
        true
    }

    /// The key's interned backend, its last use and whether it is
    /// protected, without touching it (no refresh, no promotion, no
    /// expiry): what an operator's look-up sees.
    pub(super) fn peek(&self, hash: u64, key: &BindingKey) -> Option<(u32, u32, bool)> {
        let s = self.find(hash, key)?;
        let e = at(&self.segs, s);
        Some((e.backend(), e.last_used, unslot(s).0 == PROTECTED))
    }

    /// Removes every binding and gives their memory back; how many there
    /// were.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.len();
        *self = Shard::new(self.cap);
        n
    }

    /// Removes the key's binding.
    pub(super) fn remove(
        &mut self,
        hash: u64,
        key: &BindingKey,
        hash_of: &impl Fn(&BindingKey) -> u64,
    ) -> Option<u32> {
        let s = self.find(hash, key)?;
        Some(self.remove_at(s, hash, hash_of).backend())
    }

    /// Removes up to `budget` entries idle for `ttl` seconds at `now`, then
    /// gives memory back if the shard is less than a quarter full. Returns
    /// how many it removed.
    pub(super) fn sweep(
        &mut self,
        now: u32,
        ttl: u32,
        budget: usize,
        hash_of: &impl Fn(&BindingKey) -> u64,
    ) -> usize {
        let mut dropped = 0;
        if now.saturating_sub(self.oldest) >= ttl {
            let mut oldest = u32::MAX;
            for seg in [PROBATION, PROTECTED] {
                let mut pos = 0;
                while pos < self.segs[seg].len() {
                    let e = self.segs[seg][pos];
                    if now.saturating_sub(e.last_used) < ttl {
                        oldest = oldest.min(e.last_used);
                        pos += 1;
                    } else if dropped < budget {
                        self.remove_at(slot(seg, pos), hash_of(&e.key), hash_of);
                        dropped += 1;
                    } else {
                        oldest = oldest.min(e.last_used);
                        pos += 1;
                    }
                }
            }
            self.oldest = oldest;
        }
        self.shrink(hash_of);
        dropped
    }

    /// Gives memory back from an index less than a quarter full and from
    /// empty vectors (the others shrink as entries leave them).
    fn shrink(&mut self, hash_of: &impl Fn(&BindingKey) -> u64) {
        for v in &mut self.segs {
            if v.is_empty() {
                *v = Vec::new();
            }
        }
        if self.index.capacity() > 16 && self.index.len() < self.index.capacity() / 4 {
            let segs = &self.segs;
            let len = self.index.len();
            self.index
                .shrink_to(len * 2, |&x| hash_of(&at(segs, x).key));
        }
    }
}
