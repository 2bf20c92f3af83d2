//! What runs inside every allocation and free once [`crate::Alloc`] is installed: each
//! slot's heap state (its rate, its exact counters), each thread's summary of its sessions,
//! and the byte countdown that picks sampled allocations. Which sessions a thread belongs
//! to is src/membership.rs's; the table of sampled blocks still live is the store's.
//!
//! **Invariant:** the hooks cannot panic (the lint fence below), take a lock only on the
//! sampled path and only outside the allocator's own reentry (the busy flag), and with no
//! session claimed cost one relaxed load. Allocations made while the thread is busy (the
//! store's maps growing) go straight to the wrapped allocator, uncounted.

#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use super::store::{LIVE, STORE, Store, maybe_sampled};
use crate::membership::{self, SLOTS, TAGS, busy, each_slot, is_busy, set_stamp, stamp};
use crate::stack::MAX_DEPTH;

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
    /// The owner's [`membership::me`], 0 for none.
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
        if self.owner.load(Ordering::Relaxed) == membership::me() {
            self.alloc_owned(size);
        } else {
            self.alloc_shared(size);
        }
    }

    fn free(&self, size: usize) {
        if self.owner.load(Ordering::Relaxed) == membership::me() {
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

/// One slot's heap state, beside its membership (src/membership.rs) at the same index.
pub(crate) struct HeapSlot {
    /// Heap profile: allocations are sampled every `rate` bytes on average. 0 for none.
    pub rate: AtomicU64,
    /// Counting sessions: exact totals.
    pub count: AtomicBool,
    pub counters: Counters,
}

impl HeapSlot {
    const fn new() -> HeapSlot {
        HeapSlot {
            rate: AtomicU64::new(0),
            count: AtomicBool::new(false),
            counters: Counters::new(),
        }
    }
}

pub(crate) static HEAP_SLOTS: [HeapSlot; SLOTS] = [const { HeapSlot::new() }; SLOTS];
/// Claimed counting slots: 0 lets a free skip the thread's sessions altogether.
pub(crate) static COUNTING: AtomicUsize = AtomicUsize::new(0);

/// Slot `i`'s heap state.
fn heap_slot(i: usize) -> Option<&'static HeapSlot> {
    HEAP_SLOTS.get(i)
}

thread_local! {
    /// Bytes this thread allocates before its next sampled allocation; `UNSET` until drawn.
    static COUNTDOWN: Cell<i64> = const { Cell::new(UNSET) };
    /// What this thread's sessions ask of an allocation, as of the thread's membership
    /// stamp: [`on_alloc`] takes its fast path (subtracts from the countdown, no call)
    /// while the stamp equals the epoch.
    static HOT: Cell<Hot> = const { Cell::new(Hot { counting: false, own: 0, rate: 0 }) };
}

/// The countdown of a thread none of whose sessions samples: never runs out.
const NEVER: i64 = i64::MAX;

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
    let epoch = membership::epoch();
    if stamp() & !1 == epoch {
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
    let (me, mut counting) = (membership::me(), 0_u32);
    each_slot(|i, member| {
        let Some(slot) = heap_slot(i) else { return };
        if slot.count.load(Ordering::Relaxed) {
            counting = counting.saturating_add(1);
            if slot.counters.owner.load(Ordering::Relaxed) == me {
                fresh.own = u8::try_from(i.saturating_add(1)).unwrap_or(0);
            }
        }
        let r = slot.rate.load(Ordering::Relaxed);
        if r != 0 && !member.is_paused() {
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
    if fresh.rate != 0 && (HOT.with(Cell::get).rate != fresh.rate || stamp() == 0) {
        // The countdown was `NEVER` (less what the quick path took off it), drawn for
        // another rate, or the thread just joined a session: draw afresh.
        COUNTDOWN.with(|c| c.set(UNSET));
    }
    HOT.with(|h| h.set(fresh));
    // Current, fast path closed until the slow path opens it.
    set_stamp(epoch | 1);
    fresh
}

const UNSET: i64 = i64::MIN;

/// A block of `size` bytes at `addr` was allocated.
#[inline]
pub(crate) fn on_alloc(addr: usize, size: usize) {
    if !membership::any() {
        return;
    }
    // Inline up to the countdown: a thread that only samples (or whose sessions ask
    // nothing) and whose countdown has bytes left subtracts and goes without a call.
    if stamp() == membership::epoch() {
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

#[inline(never)]
fn alloc_slow(addr: usize, size: usize) {
    if is_busy() {
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
        // `hot()` left the stamp current: open the fast path.
        set_stamp(stamp() & !1);
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
    each_slot(|i, _| {
        if let Some(slot) = heap_slot(i).filter(|s| s.count.load(Ordering::Relaxed)) {
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
    each_slot(|i, member| {
        let r = heap_slot(i).map_or(0, |s| s.rate.load(Ordering::Relaxed));
        if r == 0 || member.is_paused() {
            return;
        }
        if r <= rate || membership::uniform() < inclusion(size, r) / inclusion(size, rate) {
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
fn owned(hot: Hot) -> Option<&'static HeapSlot> {
    heap_slot(usize::from(hot.own).checked_sub(1)?)
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
    if is_busy() {
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
    let bytes = -membership::uniform().ln() * rate as f64;
    if bytes >= i64::MAX as f64 {
        i64::MAX
    } else {
        bytes as i64
    }
}

/// Runs `f` on the store with allocations made meanwhile going straight through; not in a
/// forked child (see [`membership::claimed_by`]).
fn with_store(f: impl FnOnce(&mut Store)) {
    if crate::sys::process_id() != membership::claimed_by() {
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

/// Runs `f` on the store from a session (outside the hooks), with this thread's
/// allocations meanwhile uncounted and unsampled: a sampled allocation would take the lock
/// this thread holds.
pub(crate) fn locked<R>(f: impl FnOnce(&mut Store) -> R) -> R {
    let was = is_busy();
    busy(true);
    let r = f(&mut STORE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
    busy(was);
    r
}
