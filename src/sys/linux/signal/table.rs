//! Preallocated, lock-free table of stacks with their counts, filled in the signal handler.
//!
//! Used while no drain thread runs: in a single-threaded process (a criterion bench run, a
//! harness run on the main thread) profiled starts no thread, because the first
//! `pthread_create` switches glibc's malloc (and other code that checks for threads) to
//! its multi-threaded, locking paths for the rest of the process, changing what is measured.
//! Without a drain thread the ring would fill within a second; aggregating in the handler
//! keeps one entry per distinct stack, so a 30 s benchmark needs a few hundred entries.
//!
//! Entries are claimed with one CAS (`EMPTY` -> `WRITING`), filled, and published with a
//! release store (`READY`); a matching stack adds to the counts with `fetch_add`. A full
//! neighbourhood returns `false` and the caller falls back to the ring. Entries are only
//! freed by [`StackTable::clear`], called when no session is open, so no handler can be
//! looking at an entry while it is reused.

// Under the signal-context lint fence of `super` (no panics, no unchecked arithmetic).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::ring::{MAX_DEPTH, Thread, zeroed_slice};

const EMPTY: u32 = 0;
const WRITING: u32 = 1;
const READY: u32 = 2;

/// Entries probed for a stack before giving up on the table.
const PROBES: usize = 32;

struct Entry {
    state: AtomicU32,
    count: AtomicU64,
    weight_ns: AtomicU64,
    /// Written once while `WRITING`, read-only once `READY`.
    key: UnsafeCell<Key>,
}

#[derive(Clone, Copy)]
struct Key {
    hash: u64,
    sid: u64,
    thread: Thread,
    generation: u32,
    depth: u32,
    frames: [u64; MAX_DEPTH],
}

pub(crate) struct StackTable {
    entries: Box<[Entry]>,
    mask: usize,
    /// Indices (plus one; 0: not written yet) of the entries in use, in claim order, so a
    /// drain or clear visits those alone: walking all entries would touch a page per few
    /// entries of a mostly empty table, on every profile.
    claimed: Box<[AtomicU32]>,
    claimed_len: AtomicUsize,
    /// Samples added since the last drain: a drain with nothing to take skips the scan.
    pending: AtomicU64,
}

// SAFETY: an entry's key is written only by the handler that claimed it (EMPTY -> WRITING)
// and read only after its release store of READY was acquired; counts are atomics.
unsafe impl Sync for StackTable {}

/// One drained stack: `(sid, generation, thread, frames leaf first, samples, CPU ns)`.
pub(crate) type Drained<'a> = (u64, u32, Thread, &'a [u64], u64, u64);

impl StackTable {
    /// A table of `capacity` entries (a power of two), allocated zeroed: untouched entries
    /// cost no memory.
    pub(crate) fn new(capacity: usize) -> StackTable {
        assert!(capacity.is_power_of_two());
        // SAFETY: all-zero bytes are a valid Entry (EMPTY, zero counts, a zero key).
        let entries = unsafe { zeroed_slice::<Entry>(capacity) };
        // SAFETY: all-zero bytes are a valid AtomicU32.
        let claimed = unsafe { zeroed_slice::<AtomicU32>(capacity) };
        StackTable {
            entries,
            mask: capacity.wrapping_sub(1),
            claimed,
            claimed_len: AtomicUsize::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one sample of `frames` for `(sid, generation)`. Async-signal-safe: no
    /// allocation, no lock, no panic (indices are masked). `false` when no entry was free
    /// near the stack's hash.
    pub(crate) fn add(
        &self,
        sid: u64,
        generation: u32,
        thread: Thread,
        frames: &[u64],
        weight_ns: u64,
    ) -> bool {
        let frames = frames
            .get(..frames.len().min(MAX_DEPTH))
            .unwrap_or_default();
        let hash = hash(sid, generation, thread.tid, frames);
        for probe in 0..PROBES {
            let index = (hash as usize).wrapping_add(probe) & self.mask;
            let Some(entry) = self.entries.get(index) else {
                return false;
            };
            match entry.state.load(Ordering::Acquire) {
                READY => {
                    // SAFETY: READY was acquired: the key is complete and never written again
                    // until `clear`, which runs when no handler can be here.
                    let key = unsafe { &*entry.key.get() };
                    if key.hash == hash
                        && key.sid == sid
                        && key.thread == thread
                        && key.generation == generation
                        && key.depth as usize == frames.len()
                        && key.frames.get(..frames.len()) == Some(frames)
                    {
                        entry.count.fetch_add(1, Ordering::Relaxed);
                        entry.weight_ns.fetch_add(weight_ns, Ordering::Relaxed);
                        self.pending.fetch_add(1, Ordering::Release);
                        return true;
                    }
                }
                EMPTY
                    if entry
                        .state
                        .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok() =>
                {
                    // SAFETY: the CAS made this handler the entry's only writer.
                    let key = unsafe { &mut *entry.key.get() };
                    key.hash = hash;
                    key.sid = sid;
                    key.thread = thread;
                    key.generation = generation;
                    key.depth = frames.len() as u32;
                    if let Some(dst) = key.frames.get_mut(..frames.len()) {
                        dst.copy_from_slice(frames);
                    }
                    entry.count.store(1, Ordering::Relaxed);
                    entry.weight_ns.store(weight_ns, Ordering::Relaxed);
                    entry.state.store(READY, Ordering::Release);
                    let at = self.claimed_len.fetch_add(1, Ordering::AcqRel);
                    if let Some(slot) = self.claimed.get(at) {
                        slot.store((index as u32).wrapping_add(1), Ordering::Release);
                    }
                    self.pending.fetch_add(1, Ordering::Release);
                    return true;
                }
                _ => {}
            }
        }
        false
    }

    /// Takes the counts gathered since the last drain, entry by entry; entries stay for
    /// their stacks' next samples.
    pub(crate) fn drain(&self, mut take: impl FnMut(Drained<'_>)) {
        if self.pending.swap(0, Ordering::Acquire) == 0 {
            return;
        }
        for entry in self.in_use() {
            if entry.state.load(Ordering::Acquire) != READY {
                continue;
            }
            let count = entry.count.swap(0, Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let weight = entry.weight_ns.swap(0, Ordering::Relaxed);
            // SAFETY: READY was acquired; the key is immutable until `clear`.
            let key = unsafe { &*entry.key.get() };
            let frames = key
                .frames
                .get(..(key.depth as usize).min(MAX_DEPTH))
                .unwrap_or_default();
            take((key.sid, key.generation, key.thread, frames, count, weight));
        }
    }

    /// The entries claimed so far (one whose index is still being published is skipped: its
    /// counts wait for the next drain).
    fn in_use(&self) -> impl Iterator<Item = &Entry> {
        let len = self
            .claimed_len
            .load(Ordering::Acquire)
            .min(self.claimed.len());
        let claimed = self.claimed.get(..len).unwrap_or_default();
        claimed.iter().filter_map(|c| {
            let index = c.load(Ordering::Acquire).checked_sub(1)?;
            self.entries.get(index as usize)
        })
    }

    /// Frees every entry. Only while no session is open: no handler can be adding.
    pub(crate) fn clear(&self) {
        for entry in self.in_use() {
            entry.count.store(0, Ordering::Relaxed);
            entry.weight_ns.store(0, Ordering::Relaxed);
            entry.state.store(EMPTY, Ordering::Release);
        }
        let len = self
            .claimed_len
            .swap(0, Ordering::AcqRel)
            .min(self.claimed.len());
        for c in self.claimed.get(..len).unwrap_or_default() {
            c.store(0, Ordering::Relaxed);
        }
        self.pending.store(0, Ordering::Relaxed);
    }
}

/// FxHash-style mixing of the key: cheap in an unoptimised build, good enough to spread
/// stacks over a power-of-two table.
fn hash(sid: u64, generation: u32, tid: u32, frames: &[u64]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = (sid ^ u64::from(generation) ^ (u64::from(tid) << 32)).wrapping_mul(K);
    for &f in frames {
        h = (h.rotate_left(5) ^ f).wrapping_mul(K);
    }
    h
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)] // Tests, not signal context.
mod tests {
    use super::*;
    use std::sync::Arc;

    const T: Thread = Thread {
        tid: 7,
        name: [0; 16],
    };

    fn drained(table: &StackTable) -> Vec<(u64, u32, Vec<u64>, u64, u64)> {
        let mut out = Vec::new();
        table.drain(|(sid, g, _, f, c, w)| out.push((sid, g, f.to_vec(), c, w)));
        out.sort();
        out
    }

    #[test]
    fn same_stacks_aggregate_and_keys_keep_them_apart() {
        let table = StackTable::new(64);
        assert!(table.add(1, 0, T, &[10, 20], 5));
        assert!(table.add(1, 0, T, &[10, 20], 7));
        assert!(table.add(1, 1, T, &[10, 20], 1), "another generation");
        assert!(table.add(2, 0, T, &[10, 20], 1), "another session");
        assert!(table.add(1, 0, T, &[10], 1), "a prefix is another stack");
        let other = Thread { tid: 8, ..T };
        assert!(table.add(1, 0, other, &[10], 1), "another thread");
        assert_eq!(
            drained(&table),
            [
                (1, 0, vec![10], 1, 1),
                (1, 0, vec![10], 1, 1),
                (1, 0, vec![10, 20], 2, 12),
                (1, 1, vec![10, 20], 1, 1),
                (2, 0, vec![10, 20], 1, 1),
            ]
        );
        assert!(drained(&table).is_empty(), "counts are taken once");
        assert!(table.add(1, 0, T, &[10, 20], 3));
        assert_eq!(drained(&table), [(1, 0, vec![10, 20], 1, 3)]);
    }

    #[test]
    fn a_full_table_refuses_and_clear_frees_it() {
        let table = StackTable::new(4);
        for leaf in 0..4 {
            assert!(table.add(1, 0, T, &[leaf], 1));
        }
        assert!(!table.add(1, 0, T, &[99], 1));
        table.clear();
        assert!(drained(&table).is_empty());
        assert!(table.add(1, 0, T, &[99], 1));
    }

    #[test]
    fn concurrent_adders_lose_nothing_they_report_added() {
        let table = Arc::new(StackTable::new(256));
        let adders: Vec<_> = (0..4u64)
            .map(|t| {
                let table = table.clone();
                std::thread::spawn(move || {
                    let mut added = 0u64;
                    for i in 0..20_000u64 {
                        if table.add(1, 0, T, &[i % 50, t], 1) {
                            added += 1;
                        }
                    }
                    added
                })
            })
            .collect();
        let mut counted = 0;
        while !adders.iter().all(|a| a.is_finished()) {
            table.drain(|(.., c, _)| counted += c);
        }
        let added: u64 = adders.into_iter().map(|a| a.join().unwrap()).sum();
        table.drain(|(.., c, _)| counted += c);
        assert_eq!(added, counted);
        assert_eq!(added, 80_000, "200 stacks fit in 256 entries");
    }
}
