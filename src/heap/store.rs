//! Where sampled allocations go: per session, counts by (thread, stack, size), and the
//! sampled blocks still live, so that a free is counted against the stack that allocated.
//!
//! Reached from the allocation hooks (under their lint fence: no panics) and from sessions,
//! always through [`super::hook`], which keeps this thread's own allocations out while the
//! lock is held. The filter over the live table's addresses lets a free of an unsampled
//! block skip the lock.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use rustc_hash::FxBuildHasher;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::membership::{self, TAGS};
use crate::stack::Thread;

/// Sampled blocks in the live table.
pub(crate) static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Filter over the addresses in the live table, one bit per bucket: a free whose bit is
/// clear is known unsampled without the lock. Every free reads it, so it is bits (8 KiB):
/// the counting filter it replaced (16 Ki two-byte cells, 32 KiB) filled this machine's
/// whole L1 data cache and cost the program's own data its place there.
const FILTER_BITS: u32 = 16;
static FILTER: [AtomicU64; 1 << (FILTER_BITS - 6)] =
    [const { AtomicU64::new(0) }; 1 << (FILTER_BITS - 6)];
/// Live sampled blocks per bucket, which say when a bit may be cleared: only changed under
/// the store's lock, never read by a free's fast path.
static BUCKETS: [AtomicU32; 1 << FILTER_BITS] = [const { AtomicU32::new(0) }; 1 << FILTER_BITS];

/// The bucket of `addr`: Fibonacci hashing, as allocations are aligned and the low bits
/// alone would crowd.
fn bucket(addr: usize) -> usize {
    ((addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FILTER_BITS)) as usize
}

/// Bucket `b`'s word of [`FILTER`] and its bit in it.
fn filter_bit(b: usize) -> (Option<&'static AtomicU64>, u64) {
    (FILTER.get(b >> 6), 1 << (b & 63))
}

/// Whether the block at `addr` may be in the live table (its filter bit is set).
#[inline(always)]
pub(crate) fn maybe_sampled(addr: usize) -> bool {
    let (word, bit) = filter_bit(bucket(addr));
    word.is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
}

/// A sampled block entered the live table (under the store's lock).
fn filter_add(addr: usize) {
    let b = bucket(addr);
    if let Some(count) = BUCKETS.get(b) {
        if count.fetch_add(1, Ordering::Relaxed) == 0 {
            if let (Some(word), bit) = filter_bit(b) {
                word.fetch_or(bit, Ordering::Relaxed);
            }
        }
    }
}

/// A sampled block left the live table (under the store's lock).
fn filter_remove(addr: usize) {
    let b = bucket(addr);
    if let Some(count) = BUCKETS.get(b) {
        if count.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let (Some(word), bit) = filter_bit(b) {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }
}

pub(crate) static STORE: Mutex<Store> = Mutex::new(Store::new());

/// One (thread, stack, size) of one session: how many sampled blocks it allocated and how
/// many of those were freed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bucket {
    pub thread: Thread,
    pub stack: Box<[u64]>,
    pub size: usize,
    /// Sampled blocks allocated (signed: a delta of two snapshots subtracts).
    pub allocs: i64,
    /// Of those, freed since.
    pub frees: i64,
}

/// A heap session's sampled allocations.
#[derive(Default)]
pub(crate) struct Recording {
    pub buckets: Vec<Bucket>,
    index: HashMap<(Thread, Box<[u64]>, usize), u32, FxBuildHasher>,
}

/// A sampled block still allocated: its bucket in each session that recorded it, as many as
/// a thread can belong to, so that none misses the free. Two in place (sid 0: none); a
/// third and fourth, rare, beside, so that the table of live blocks stays as small as with
/// two (it holds every live block at `heap_rate=1`).
#[derive(Default)]
struct Live {
    sids: [u64; 2],
    buckets: [u32; 2],
    more: Option<Box<[(u64, u32); TAGS - 2]>>,
}

impl Live {
    /// Its (session, bucket) pairs, empty ones included.
    fn entries(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        let extra = self.more.iter().flat_map(|m| m.iter().copied());
        self.sids.into_iter().zip(self.buckets).chain(extra)
    }

    /// Adds a pair in the first empty place; false when full.
    fn put(&mut self, sid: u64, bucket: u32) -> bool {
        if let Some(i) = self.sids.iter().position(|&s| s == 0) {
            if let (Some(s), Some(b)) = (self.sids.get_mut(i), self.buckets.get_mut(i)) {
                *s = sid;
                *b = bucket;
                return true;
            }
        }
        let more = self.more.get_or_insert_with(Default::default);
        match more.iter_mut().find(|e| e.0 == 0) {
            Some(e) => {
                *e = (sid, bucket);
                true
            }
            None => false,
        }
    }

    /// Drops session `sid`'s pair; whether any pair is left.
    fn forget(&mut self, sid: u64) -> bool {
        for s in self.sids.iter_mut().filter(|s| **s == sid) {
            *s = 0;
        }
        for e in self.more.iter_mut().flat_map(|m| m.iter_mut()) {
            if e.0 == sid {
                *e = (0, 0);
            }
        }
        self.entries().any(|(s, _)| s != 0)
    }
}

pub(crate) struct Store {
    sessions: HashMap<u64, Recording, FxBuildHasher>,
    live: HashMap<usize, Live, FxBuildHasher>,
}

impl Store {
    const fn new() -> Store {
        Store {
            sessions: HashMap::with_hasher(FxBuildHasher),
            live: HashMap::with_hasher(FxBuildHasher),
        }
    }

    /// A copy of what session `sid` recorded so far.
    #[cfg(feature = "http")]
    pub(crate) fn buckets(&self, sid: u64) -> Vec<Bucket> {
        self.sessions
            .get(&sid)
            .map(|r| r.buckets.clone())
            .unwrap_or_default()
    }

    /// A session starts recording.
    pub(crate) fn open(&mut self, sid: u64) {
        self.sessions.insert(sid, Recording::default());
    }

    /// A session ends: what it recorded, its live blocks forgotten.
    pub(crate) fn close(&mut self, sid: u64) -> Recording {
        self.forget_live(sid);
        self.sessions.remove(&sid).unwrap_or_default()
    }

    /// `reset()`: what the session recorded so far is dropped, frees of it included.
    pub(crate) fn clear(&mut self, sid: u64) {
        self.forget_live(sid);
        if let Some(r) = self.sessions.get_mut(&sid) {
            *r = Recording::default();
        }
    }

    fn forget_live(&mut self, sid: u64) {
        self.live.retain(|&addr, live| {
            let keep = live.forget(sid);
            if !keep {
                filter_remove(addr);
                LIVE.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
    }

    /// A sampled allocation, for the sessions in `slots`.
    pub(crate) fn sampled(
        &mut self,
        addr: usize,
        size: usize,
        thread: Thread,
        stack: &[u64],
        slots: &[usize],
    ) {
        let mut live = Live::default();
        let mut any = false;
        for &i in slots {
            let Some(slot) = membership::slot(i) else {
                continue;
            };
            let sid = slot.sid();
            let Some(rec) = self.sessions.get_mut(&sid) else {
                continue;
            };
            // A process-wide profile keys by stack and size alone, as Go's: per thread, a
            // service whose threads come and go would grow it without bound.
            let thread = if slot.all_threads() {
                Thread::default()
            } else {
                thread
            };
            let key = (thread, Box::<[u64]>::from(stack), size);
            let b = match rec.index.get(&key) {
                Some(&b) => b,
                None => {
                    let b = rec.buckets.len() as u32;
                    rec.buckets.push(Bucket {
                        thread,
                        stack: key.1.clone(),
                        size,
                        allocs: 0,
                        frees: 0,
                    });
                    rec.index.insert(key, b);
                    b
                }
            };
            if let Some(bucket) = rec.buckets.get_mut(b as usize) {
                bucket.allocs = bucket.allocs.saturating_add(1);
            }
            any |= live.put(sid, b);
        }
        if !any {
            return;
        }
        if self.live.insert(addr, live).is_none() {
            filter_add(addr);
            LIVE.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A block was freed: if it was sampled, its buckets count the free.
    pub(crate) fn freed(&mut self, addr: usize) {
        let Some(live) = self.live.remove(&addr) else {
            return;
        };
        filter_remove(addr);
        LIVE.fetch_sub(1, Ordering::Relaxed);
        for (sid, b) in live.entries() {
            if let Some(bucket) = self
                .sessions
                .get_mut(&sid)
                .and_then(|r| r.buckets.get_mut(b as usize))
            {
                bucket.frees = bucket.frees.saturating_add(1);
            }
        }
    }
}
