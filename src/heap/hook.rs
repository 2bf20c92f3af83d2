//! What runs inside every allocation and free once [`crate::Alloc`] is installed: the slots
//! sessions claim, each thread's tags, exact counters, the byte countdown that picks sampled
//! allocations, and the table of sampled blocks still live.
//!
//! **Invariant:** the hooks cannot panic (the lint fence below), take a lock only on the
//! sampled path and only outside the allocator's own reentry (`BUSY`), and with no session
//! claimed cost one relaxed load. Allocations made while a hook holds `BUSY` (the store's
//! maps growing) go straight to the wrapped allocator, uncounted.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::store::{STORE, Store};
use crate::stack::MAX_DEPTH;

/// Sessions (heap profiles and counting scopes) open at once, process-wide.
pub(crate) const SLOTS: usize = 64;
/// Sessions one thread belongs to at once (a heap profile and nested counting scopes).
pub(crate) const TAGS: usize = 4;

/// One side of a counting session's totals.
#[derive(Default)]
pub(crate) struct Tally {
    allocs: AtomicU64,
    alloc_bytes: AtomicU64,
    frees: AtomicU64,
    freed_bytes: AtomicU64,
    peak: AtomicI64,
}

impl Tally {
    const fn new() -> Tally {
        Tally {
            allocs: AtomicU64::new(0),
            alloc_bytes: AtomicU64::new(0),
            frees: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            peak: AtomicI64::new(0),
        }
    }

    fn clear(&self) {
        for c in [
            &self.allocs,
            &self.alloc_bytes,
            &self.frees,
            &self.freed_bytes,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.peak.store(0, Ordering::Relaxed);
    }
}

/// Exact totals of one counting session, over every thread tagged for it. The thread that
/// started it (`allocations(..)`'s caller, which makes most of its allocations) writes
/// its own tally with plain loads and stores; the threads it spawns share the other with
/// read-modify-writes. Four locked read-modify-writes per allocation-and-free pair cost
/// more than the rest of the hook together (BENCHMARKS.md).
pub(crate) struct Counters {
    /// Written by the owner only.
    owned: Tally,
    shared: Tally,
    /// The owner's [`me`], 0 for none.
    pub owner: AtomicUsize,
}

/// Adds `by` to a counter only the calling thread writes, without a read-modify-write;
/// the new value.
#[inline(always)]
fn add_owned(a: &AtomicU64, by: u64) -> u64 {
    let v = a.load(Ordering::Relaxed).wrapping_add(by);
    a.store(v, Ordering::Relaxed);
    v
}

impl Counters {
    const fn new() -> Counters {
        Counters {
            owned: Tally::new(),
            shared: Tally::new(),
            owner: AtomicUsize::new(0),
        }
    }

    /// Live bytes now, with `allocated` bytes allocated on the caller's side.
    fn live(&self, allocated: u64, other_side: &Tally) -> i64 {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        allocated
            .wrapping_add(load(&other_side.alloc_bytes))
            .wrapping_sub(load(&self.owned.freed_bytes))
            .wrapping_sub(load(&self.shared.freed_bytes)) as i64
    }

    /// The owner's allocation: no read-modify-write, since nobody else writes its tally.
    #[inline]
    fn alloc_owned(&self, size: usize) {
        let t = &self.owned;
        add_owned(&t.allocs, 1);
        let allocated = add_owned(&t.alloc_bytes, size as u64);
        let live = self.live(allocated, &self.shared);
        if live > t.peak.load(Ordering::Relaxed) {
            t.peak.store(live, Ordering::Relaxed);
        }
    }

    #[inline]
    fn free_owned(&self, size: usize) {
        add_owned(&self.owned.frees, 1);
        add_owned(&self.owned.freed_bytes, size as u64);
    }

    /// Any other thread's allocation: two read-modify-writes; the peak only when it moves.
    fn alloc_shared(&self, size: usize) {
        let t = &self.shared;
        t.allocs.fetch_add(1, Ordering::Relaxed);
        let allocated = t
            .alloc_bytes
            .fetch_add(size as u64, Ordering::Relaxed)
            .wrapping_add(size as u64);
        let live = self.live(allocated, &self.owned);
        if live > t.peak.load(Ordering::Relaxed) {
            t.peak.fetch_max(live, Ordering::Relaxed);
        }
    }

    fn free_shared(&self, size: usize) {
        self.shared.frees.fetch_add(1, Ordering::Relaxed);
        self.shared
            .freed_bytes
            .fetch_add(size as u64, Ordering::Relaxed);
    }

    fn alloc(&self, size: usize) {
        if self.owner.load(Ordering::Relaxed) == me() {
            self.alloc_owned(size);
        } else {
            self.alloc_shared(size);
        }
    }

    fn free(&self, size: usize) {
        if self.owner.load(Ordering::Relaxed) == me() {
            self.free_owned(size);
        } else {
            self.free_shared(size);
        }
    }

    /// The session's totals, both tallies added up (the peak is the larger one's: each
    /// was taken over both sides' live bytes).
    pub(crate) fn totals(&self) -> super::Allocations {
        let sum = |f: fn(&Tally) -> &AtomicU64| {
            f(&self.owned)
                .load(Ordering::Relaxed)
                .wrapping_add(f(&self.shared).load(Ordering::Relaxed))
        };
        let peak = self.owned.peak.load(Ordering::Relaxed);
        let peak = peak.max(self.shared.peak.load(Ordering::Relaxed));
        super::Allocations {
            allocs: sum(|t| &t.allocs),
            alloc_bytes: sum(|t| &t.alloc_bytes),
            frees: sum(|t| &t.frees),
            freed_bytes: sum(|t| &t.freed_bytes),
            peak_live_bytes: peak.max(0) as u64,
        }
    }

    /// Zeroes the totals; `owner`: the thread that writes the owned tally from now on.
    pub(crate) fn clear(&self, owner: usize) {
        self.owned.clear();
        self.shared.clear();
        self.owner.store(owner, Ordering::Relaxed);
    }
}

/// The calling thread's identity for [`Counters::owner`]: the address of one of its
/// thread-locals, distinct among live threads and never 0.
pub(crate) fn me() -> usize {
    BUSY.with(|b| std::ptr::from_ref(b) as usize)
}

/// One session's place in the hooks.
pub(crate) struct Slot {
    /// The session's id; 0 while the slot is free.
    pub sid: AtomicU64,
    /// Heap profile: allocations are sampled every `rate` bytes on average. 0 for a
    /// counting-only session.
    pub rate: AtomicU64,
    /// Counting sessions: exact totals.
    pub count: AtomicBool,
    /// Every thread of the process belongs to it, tagged or not.
    pub all_threads: AtomicBool,
    /// `pause()`: allocations are not recorded (frees of recorded blocks still are).
    pub paused: AtomicU32,
    pub counters: Counters,
    /// Contention session (src/contention): block profile rate in nanoseconds, 0 for none.
    pub block: AtomicU64,
    /// Contention session: mutex profile fraction, 0 for none.
    pub mutex: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            sid: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            count: AtomicBool::new(false),
            all_threads: AtomicBool::new(false),
            paused: AtomicU32::new(0),
            counters: Counters::new(),
            block: AtomicU64::new(0),
            mutex: AtomicU64::new(0),
        }
    }
}

pub(crate) static SLOT: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Slots claimed: 0 means every hook returns at once.
pub(crate) static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The claimed slots with `all_threads` set, one bit per slot: a service's always-on heap
/// profile costs its allocations one load, not a scan of every slot.
pub(crate) static ALL: AtomicU64 = AtomicU64::new(0);
/// Claimed counting slots: 0 lets a free skip the thread's sessions altogether.
pub(crate) static COUNTING: AtomicUsize = AtomicUsize::new(0);

/// Claimed slots with a block or mutex profile: 0 lets a lock skip every check. Read by
/// every lock of `profiled::sync`, so on a cache line of its own: the neighbours written by
/// the allocation hooks would make each read a miss.
pub(crate) static CONTENDED: Padded<AtomicUsize> = Padded(AtomicUsize::new(0));

/// A value alone on its cache line (two lines: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);
/// Claimed slots with a mutex profile: 0 lets a waiter skip the blame bookkeeping.
pub(crate) static MUTEXES: AtomicUsize = AtomicUsize::new(0);

/// Bumped after a slot is claimed, released, paused or resumed: a thread's summary of its
/// sessions (`HOT`) holds while its epoch is the current one.
pub(crate) static EPOCH: AtomicU64 = AtomicU64::new(1);

/// Sampled blocks in the store's live table.
pub(crate) static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The process that claimed the first slot: a forked child never takes the store's lock,
/// which a thread that does not exist in it may have held at the fork.
pub(crate) static PID: AtomicU32 = AtomicU32::new(0);

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

/// A sampled block entered the live table (under the store's lock).
pub(crate) fn filter_add(addr: usize) {
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
pub(crate) fn filter_remove(addr: usize) {
    let b = bucket(addr);
    if let Some(count) = BUCKETS.get(b) {
        if count.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let (Some(word), bit) = filter_bit(b) {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }
}

/// A thread's membership of one session.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Tag {
    pub slot: u8,
    pub sid: u64,
}

thread_local! {
    /// The sessions this thread belongs to (sid 0: empty).
    static MINE: Cell<[Tag; TAGS]> = const { Cell::new([Tag { slot: 0, sid: 0 }; TAGS]) };
    /// Inside a hook's slow path: allocations go straight through.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// Bytes this thread allocates before its next sampled allocation; `UNSET` until drawn.
    static COUNTDOWN: Cell<i64> = const { Cell::new(UNSET) };
    /// xorshift state for the countdown's exponential draws.
    static RNG: Cell<u64> = const { Cell::new(0) };
    /// The epoch `HOT` was computed at (0: never).
    static HOT_EPOCH: Cell<u64> = const { Cell::new(0) };
    /// What this thread's sessions ask of an allocation.
    static HOT: Cell<Hot> = const { Cell::new(Hot { counting: false, own: 0, rate: 0 }) };
    /// The epoch at which this thread's allocations need nothing but the countdown (no
    /// counting session, not `BUSY`): [`on_alloc`] then subtracts without a call. 0: not
    /// now.
    static QUICK: Cell<u64> = const { Cell::new(0) };
}

/// The countdown of a thread none of whose sessions samples: never runs out.
const NEVER: i64 = i64::MAX;

/// Sets `BUSY`; setting it also takes the thread off the quick path, which does not look
/// at it (the slow path puts it back).
fn busy(on: bool) {
    BUSY.with(|b| b.set(on));
    if on {
        QUICK.with(|q| q.set(0));
    }
}

/// A thread's sessions, summed up for the allocation path: whether any counts, the slot
/// (+1) of the one counting session when this thread owns it (0 otherwise), and the
/// smallest rate of those that sample now (0: none).
/// Two words, so that it comes back in registers.
#[derive(Clone, Copy)]
struct Hot {
    counting: bool,
    own: u8,
    rate: u64,
}

/// The calling thread's summary, recomputed when a slot changed since (or its tags did).
#[inline(always)]
fn hot() -> Hot {
    let epoch = EPOCH.load(Ordering::Acquire);
    if HOT_EPOCH.with(Cell::get) == epoch {
        return HOT.with(Cell::get);
    }
    refresh(epoch)
}

#[cold]
#[inline(never)]
fn refresh(epoch: u64) -> Hot {
    let mut fresh = Hot {
        counting: false,
        own: 0,
        rate: 0,
    };
    let (me, mut counting) = (me(), 0_u32);
    each_slot(|i, slot| {
        if slot.count.load(Ordering::Relaxed) {
            counting = counting.saturating_add(1);
            if slot.counters.owner.load(Ordering::Relaxed) == me {
                fresh.own = u8::try_from(i.saturating_add(1)).unwrap_or(0);
            }
        }
        let r = slot.rate.load(Ordering::Relaxed);
        if r != 0 && slot.paused.load(Ordering::Relaxed) == 0 {
            fresh.rate = if fresh.rate == 0 {
                r
            } else {
                fresh.rate.min(r)
            };
        }
    });
    fresh.counting = counting > 0;
    if counting != 1 {
        fresh.own = 0;
    }
    if fresh.rate != 0 && HOT.with(Cell::get).rate == 0 {
        // The countdown was `NEVER` (less what the quick path took off it): draw afresh.
        COUNTDOWN.with(|c| c.set(UNSET));
    }
    HOT.with(|h| h.set(fresh));
    HOT_EPOCH.with(|e| e.set(epoch));
    fresh
}

/// A slot changed: every thread recomputes its summary at its next allocation.
pub(crate) fn changed() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// This thread's tags changed.
fn retag() {
    HOT_EPOCH.with(|e| e.set(0));
    QUICK.with(|q| q.set(0));
}

const UNSET: i64 = i64::MIN;

/// The calling thread's tags.
pub(crate) fn tags() -> [Tag; TAGS] {
    MINE.with(Cell::get)
}

/// Adds the calling thread to session `tag` (a spawned thread inherits its parent's tags
/// this way). Full: the oldest tag gives way.
pub(crate) fn join(tag: Tag) {
    MINE.with(|m| {
        let mut tags = m.get();
        if tags.contains(&tag) {
            return;
        }
        let free = tags
            .iter()
            .position(|t| t.sid == 0 || !is_current(*t))
            .unwrap_or(0);
        if let Some(t) = tags.get_mut(free) {
            *t = tag;
        }
        m.set(tags);
    });
    COUNTDOWN.with(|c| c.set(UNSET));
    retag();
}

/// Removes the calling thread from session `sid`.
pub(crate) fn leave(sid: u64) {
    MINE.with(|m| {
        let mut tags = m.get();
        for t in tags.iter_mut().filter(|t| t.sid == sid) {
            *t = Tag::default();
        }
        m.set(tags);
    });
    retag();
}

/// Whether the tag's session still holds its slot.
fn is_current(tag: Tag) -> bool {
    SLOT.get(usize::from(tag.slot))
        .is_some_and(|s| s.sid.load(Ordering::Acquire) == tag.sid)
}

/// The tags a thread spawned now should start with: its creator's live ones. `None` (the
/// spawn is not wrapped) when no session is open or the creator is in none.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code)
)]
pub(crate) fn inherited() -> Option<[Tag; TAGS]> {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut tags = tags();
    for t in tags.iter_mut().filter(|t| t.sid != 0 && !is_current(**t)) {
        *t = Tag::default();
    }
    tags.iter().any(|t| t.sid != 0).then_some(tags)
}

/// Starts the calling (newly spawned) thread with `tags`.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code)
)]
pub(crate) fn adopt(tags: [Tag; TAGS]) {
    MINE.with(|m| m.set(tags));
    retag();
}

/// The slots that record the calling thread's allocations (and lock waits) now, at most
/// `TAGS` plus the all-thread ones; `f` sees each once.
pub(crate) fn each_slot(mut f: impl FnMut(usize, &'static Slot)) {
    let tags = tags();
    for t in tags.iter().filter(|t| t.sid != 0) {
        let i = usize::from(t.slot);
        if let Some(slot) = SLOT.get(i) {
            if slot.sid.load(Ordering::Acquire) == t.sid
                && !slot.all_threads.load(Ordering::Relaxed)
            {
                f(i, slot);
            }
        }
    }
    let mut all = ALL.load(Ordering::Acquire);
    while all != 0 {
        let i = all.trailing_zeros() as usize;
        all &= all.wrapping_sub(1);
        if let Some(slot) = SLOT.get(i) {
            if slot.sid.load(Ordering::Acquire) != 0 {
                f(i, slot);
            }
        }
    }
}

/// A block of `size` bytes at `addr` was allocated.
#[inline]
pub(crate) fn on_alloc(addr: usize, size: usize) {
    if ACTIVE.load(Ordering::Relaxed) == 0 {
        return;
    }
    // Inline up to the countdown: a thread that only samples (or whose sessions ask
    // nothing) and whose countdown has bytes left subtracts and goes without a call.
    if QUICK.with(Cell::get) == EPOCH.load(Ordering::Acquire) {
        let left = COUNTDOWN.with(Cell::get).saturating_sub(size as i64);
        if left > 0 {
            COUNTDOWN.with(|c| c.set(left));
            return;
        }
    }
    alloc_slow(addr, size);
}

/// A block of `size` bytes at `addr` is being freed.
#[inline]
pub(crate) fn on_free(addr: usize, size: usize) {
    // Inline up to the free filter: with no counting session, a heap profile's frees of
    // unsampled blocks (nearly all of them) end here without a call.
    if COUNTING.load(Ordering::Relaxed) == 0
        && (LIVE.load(Ordering::Relaxed) == 0 || !maybe_sampled(addr))
    {
        return;
    }
    free_slow(addr, size);
}

/// Whether the block at `addr` may be in the live table (its filter bit is set).
#[inline(always)]
fn maybe_sampled(addr: usize) -> bool {
    let (word, bit) = filter_bit(bucket(addr));
    word.is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0)
}

#[inline(never)]
fn alloc_slow(addr: usize, size: usize) {
    if BUSY.with(Cell::get) {
        return;
    }
    let hot = hot();
    if hot.counting && COUNTING.load(Ordering::Relaxed) > 0 {
        match owned(hot) {
            Some(slot) => slot.counters.alloc_owned(size),
            None => count_all(|c| c.alloc(size)),
        }
    }
    if !hot.counting {
        // `hot()` left HOT_EPOCH current.
        QUICK.with(|q| q.set(HOT_EPOCH.with(Cell::get)));
    }
    let rate = hot.rate;
    if rate == 0 {
        COUNTDOWN.with(|c| c.set(NEVER));
        return;
    }
    // `UNSET` (i64::MIN) stays below 1 here: the first draw is made out of line too.
    let left = COUNTDOWN.with(Cell::get).saturating_sub(size as i64);
    if left > 0 {
        COUNTDOWN.with(|c| c.set(left));
        return;
    }
    sampled(addr, size, rate);
}

/// Counts on every counting session of the thread (which owns none of them, or not only).
/// Out of line, as [`sampled`], so that the hooks' common paths stay small: their
/// prologues and register spills were a visible part of their cost.
#[cold]
#[inline(never)]
fn count_all(f: impl Fn(&Counters)) {
    each_slot(|_, slot| {
        if slot.count.load(Ordering::Relaxed) {
            f(&slot.counters);
        }
    });
}

/// The countdown ran out (or was never drawn): draws the next one, and records the
/// allocation for the sessions that keep it.
#[cold]
#[inline(never)]
fn sampled(addr: usize, size: usize, rate: u64) {
    if COUNTDOWN.with(Cell::get) == UNSET {
        // The thread's first allocation since it joined: its countdown starts here.
        let left = draw(rate).saturating_sub(size as i64);
        if left > 0 {
            COUNTDOWN.with(|c| c.set(left));
            return;
        }
    }
    COUNTDOWN.with(|c| c.set(draw(rate)));
    // The thread samples at the smallest rate among its sessions; a session with a larger
    // one keeps the sample with probability p(its rate) / p(smallest), which thins the
    // Poisson process to its own rate, so its unbiasing stays right.
    let mut keep = [usize::MAX; TAGS];
    let mut k = 0usize;
    each_slot(|i, slot| {
        let r = slot.rate.load(Ordering::Relaxed);
        if r == 0 || slot.paused.load(Ordering::Relaxed) > 0 {
            return;
        }
        if r <= rate || uniform() < inclusion(size, r) / inclusion(size, rate) {
            if let Some(cell) = keep.get_mut(k) {
                *cell = i;
                k = k.wrapping_add(1);
            }
        }
    });
    if k > 0 {
        record(addr, size, keep.get(..k).unwrap_or_default());
    }
}

/// The thread's one counting session when it owns it: its hook writes the owned tally
/// directly, without the walk over its sessions.
#[inline(always)]
fn owned(hot: Hot) -> Option<&'static Slot> {
    SLOT.get(usize::from(hot.own).checked_sub(1)?)
}

/// The probability that a block of `size` bytes is sampled at `rate`.
pub(crate) fn inclusion(size: usize, rate: u64) -> f64 {
    if rate <= 1 {
        return 1.0;
    }
    1.0 - (-(size as f64) / rate as f64).exp()
}

#[inline(never)]
fn free_slow(addr: usize, size: usize) {
    if BUSY.with(Cell::get) {
        return;
    }
    if COUNTING.load(Ordering::Relaxed) > 0 {
        let hot = hot();
        if hot.counting {
            match owned(hot) {
                Some(slot) => slot.counters.free_owned(size),
                None => count_all(|c| c.free(size)),
            }
        }
    }
    if LIVE.load(Ordering::Relaxed) == 0 || !maybe_sampled(addr) {
        return;
    }
    with_store(|store| store.freed(addr));
}

/// Bytes until the next sampled allocation: exponential with mean `rate` (Go's
/// `nextSample`), so that sampling is a Poisson process over allocated bytes. 0 (every
/// allocation) at rate 1.
fn draw(rate: u64) -> i64 {
    if rate <= 1 {
        return 0;
    }
    let bytes = -uniform().ln() * rate as f64;
    if bytes >= i64::MAX as f64 {
        i64::MAX
    } else {
        bytes as i64
    }
}

/// Uniform in (0, 1], from this thread's xorshift generator (also the locks' sampling).
pub(crate) fn uniform() -> f64 {
    let mut x = RNG.with(Cell::get);
    if x == 0 {
        // Seeded per thread from its stack address and the time: distinct, never 0.
        let local = 0u8;
        x = (std::ptr::addr_of!(local) as u64) ^ now_nanos() | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    RNG.with(|r| r.set(x));
    // The top 53 bits.
    ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos().into())
}

/// Runs `f` on the store with allocations made meanwhile going straight through; not in a
/// forked child (see [`PID`]).
fn with_store(f: impl FnOnce(&mut Store)) {
    if crate::sys::process_id() != PID.load(Ordering::Relaxed) {
        return;
    }
    busy(true);
    if let Ok(mut store) = STORE.lock() {
        f(&mut store);
    }
    busy(false);
}

/// Records a sampled allocation: its stack, for each session in `slots`.
#[inline(never)]
fn record(addr: usize, size: usize, slots: &[usize]) {
    busy(true);
    let mut frames = [0u64; MAX_DEPTH];
    let depth = crate::sys::capture_stack(&mut frames);
    let thread = crate::sys::current_thread();
    busy(false);
    let stack = frames.get(..depth).unwrap_or_default();
    with_store(|store| store.sampled(addr, size, thread, stack, slots));
}

/// Marks the calling thread as profiled's own (the drain thread, the endpoint's server):
/// its allocations are never counted or sampled, whatever it inherited.
pub(crate) fn own_thread() {
    busy(true);
}

/// Runs `f` on the store from a session (outside the hooks), with this thread's
/// allocations meanwhile uncounted and unsampled: a sampled allocation would take the lock
/// this thread holds.
pub(crate) fn locked<R>(f: impl FnOnce(&mut Store) -> R) -> R {
    let was = BUSY.with(Cell::get);
    busy(true);
    let r = f(&mut STORE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
    busy(was);
    r
}
