//! Membership: which sessions each thread belongs to, for the sources that follow a test's
//! threads without signals (the heap hooks, the lock recorder, the wall sampler).
//!
//! A session claims one of [`SLOTS`] slots and gets a session id whose low byte is the
//! slot's index. A thread belongs to a session when it carries the session's [`Tag`] (the
//! thread that started it, and every thread spawned from a tagged one: src/sys/linux/spawn.rs
//! hands the tags over) or when the slot is for every thread. Kinds keep what is theirs in
//! arrays of their own indexed by the slot; this module knows only ids, tags, pauses and
//! the per-thread busy flag.
//!
//! **Invariant:** nothing here allocates, locks or panics: the allocation hooks call it on
//! every allocation (the lint fence below).

#![forbid(unsafe_code)]
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Repr};

/// Sessions that follow threads, open at once, process-wide.
pub(crate) const SLOTS: usize = 64;
/// Sessions one thread belongs to at once (a heap profile and nested counting scopes).
pub(crate) const TAGS: usize = 4;

/// One session's place.
pub(crate) struct Slot {
    /// The session's id; 0 while the slot is free.
    sid: AtomicU64,
    /// Every thread of the process belongs to it, tagged or not.
    all_threads: AtomicBool,
    /// `pause()`: nested pauses count; 0 records.
    paused: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            sid: AtomicU64::new(0),
            all_threads: AtomicBool::new(false),
            paused: AtomicU32::new(0),
        }
    }

    /// The id of the session holding the slot, 0 for none.
    #[inline]
    pub(crate) fn sid(&self) -> u64 {
        self.sid.load(Ordering::Acquire)
    }

    /// Whether every thread of the process belongs to it.
    #[inline]
    pub(crate) fn all_threads(&self) -> bool {
        self.all_threads.load(Ordering::Relaxed)
    }

    /// Whether the session is paused.
    #[inline]
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed) > 0
    }
}

static SLOT: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];
/// Slots claimed: 0 means every hook returns at once.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The claimed slots with `all_threads` set, one bit per slot: a service's always-on heap
/// profile costs its allocations one load, not a scan of every slot.
static ALL: AtomicU64 = AtomicU64::new(0);
/// Bumped (by 2: it stays even) after a slot is claimed, released, paused or resumed: a
/// thread's summary of its sessions holds while its [`stamp`] is the current epoch.
static EPOCH: AtomicU64 = AtomicU64::new(2);
/// The process that claimed the first slot: a forked child never takes a lock that a
/// thread that does not exist in it may have held at the fork (see [`claimed_by`]).
static PID: AtomicU32 = AtomicU32::new(0);
static NEXT: AtomicU64 = AtomicU64::new(1);

/// A thread's membership of one session.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct Tag {
    pub slot: u8,
    pub sid: u64,
}

thread_local! {
    /// The sessions this thread belongs to (sid 0: empty).
    static MINE: Cell<[Tag; TAGS]> = const { Cell::new([Tag { slot: 0, sid: 0 }; TAGS]) };
    /// Inside profiled's own bookkeeping, or one of profiled's threads: nothing this thread
    /// does is recorded.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// The epoch at which the hooks last summed up this thread's sessions, with the low
    /// bit set while its allocations may not take their fast path (it is busy, or a
    /// session counts them); 0 once its tags change.
    static STAMP: Cell<u64> = const { Cell::new(0) };
    /// xorshift state for the sampling draws.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// Claims a free slot for a new session that `all` threads belong to (or only tagged ones):
/// `(index, sid)`. `set(index, sid)` fills the kind's own state for the slot before any
/// thread is told of it.
pub(crate) fn claim(all: bool, set: impl FnOnce(usize, u64)) -> Result<(usize, u64), Error> {
    for (i, slot) in SLOT.iter().enumerate() {
        let sid = (NEXT.fetch_add(1, Ordering::Relaxed) << 8) | i as u64;
        if slot
            .sid
            .compare_exchange(0, sid, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        slot.paused.store(0, Ordering::Relaxed);
        set(i, sid);
        let _ = PID.compare_exchange(0, std::process::id(), Ordering::Relaxed, Ordering::Relaxed);
        if all {
            slot.all_threads.store(true, Ordering::Release);
            ALL.fetch_or(1 << i, Ordering::AcqRel);
        }
        ACTIVE.fetch_add(1, Ordering::Release);
        changed();
        return Ok((i, sid));
    }
    Err(Error::from(Repr::Unsupported {
        what: format!(
            "more than {SLOTS} profiles that follow threads (heap, allocation, lock and \
             wall-clock profiles, allocation counts) at once"
        ),
    }))
}

/// Frees slot `i` if session `sid` still holds it; `clear` undoes the kind's state first.
pub(crate) fn release(i: usize, sid: u64, clear: impl FnOnce()) {
    let Some(slot) = SLOT.get(i) else { return };
    if slot.sid.load(Ordering::Acquire) != sid {
        return;
    }
    if slot.all_threads.swap(false, Ordering::AcqRel) {
        ALL.fetch_and(!(1 << i), Ordering::AcqRel);
    }
    clear();
    slot.sid.store(0, Ordering::Release);
    ACTIVE.fetch_sub(1, Ordering::Release);
    changed();
}

/// Slot `i`.
pub(crate) fn slot(i: usize) -> Option<&'static Slot> {
    SLOT.get(i)
}

/// The index of live session `sid`'s slot.
pub(crate) fn slot_of(sid: u64) -> Option<usize> {
    let i = (sid & 0xff) as usize;
    SLOT.get(i)
        .filter(|s| sid != 0 && s.sid.load(Ordering::Acquire) == sid)
        .map(|_| i)
}

/// Whether session `sid` is running.
pub(crate) fn is_live(sid: u64) -> bool {
    slot_of(sid).is_some()
}

/// Whether any session is open.
#[inline(always)]
pub(crate) fn any() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// The process that claimed the first slot (0: none yet). The hooks compare it with the
/// process's own id on every recorded event, to notice a forked child.
pub(crate) fn claimed_by() -> u32 {
    PID.load(Ordering::Relaxed)
}

/// Pauses session `sid` (nested pauses count).
pub(crate) fn pause(sid: u64) {
    if let Some(s) = slot_of(sid).and_then(|i| SLOT.get(i)) {
        s.paused.fetch_add(1, Ordering::Relaxed);
        changed();
    }
}

/// Ends one [`pause`].
pub(crate) fn resume(sid: u64) {
    if let Some(s) = slot_of(sid).and_then(|i| SLOT.get(i)) {
        let _ = s
            .paused
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
        changed();
    }
}

/// A slot changed: every thread sums up its sessions afresh at its next allocation.
pub(crate) fn changed() {
    EPOCH.fetch_add(2, Ordering::AcqRel);
}

/// The current epoch (see [`EPOCH`]).
#[inline(always)]
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// The calling thread's stamp (see [`STAMP`]): equal to [`epoch`] when its summary is
/// current and its allocations may take the fast path, to `epoch() | 1` when the summary
/// is current but the fast path closed.
#[inline(always)]
pub(crate) fn stamp() -> u64 {
    STAMP.with(Cell::get)
}

/// Sets the calling thread's stamp (0: its summary is stale).
#[inline(always)]
pub(crate) fn set_stamp(epoch: u64) {
    STAMP.with(|s| s.set(epoch));
}

/// The calling thread's identity: the address of one of its thread-locals, distinct among
/// live threads and never 0.
pub(crate) fn me() -> usize {
    BUSY.with(|b| std::ptr::from_ref(b) as usize)
}

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
    set_stamp(0);
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
    set_stamp(0);
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
    if !any() {
        return None;
    }
    let mut tags = tags();
    for t in tags.iter_mut().filter(|t| t.sid != 0 && !is_current(**t)) {
        *t = Tag::default();
    }
    tags.iter().any(|t| t.sid != 0).then_some(tags)
}

/// Who hears of a thread that starts with its creator's tags: the wall profile, which
/// samples its members by thread id. Set once, by the first wall session.
static ADOPTED: std::sync::OnceLock<fn(&[Tag])> = std::sync::OnceLock::new();

/// Has `f` told of every thread that [`adopt`]s tags from now on.
pub(crate) fn on_adopt(f: fn(&[Tag])) {
    let _ = ADOPTED.set(f);
}

/// Starts the calling (newly spawned) thread with `tags`.
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code)
)]
pub(crate) fn adopt(tags: [Tag; TAGS]) {
    MINE.with(|m| m.set(tags));
    set_stamp(0);
    if let Some(f) = ADOPTED.get() {
        f(&tags);
    }
}

/// The slots of the sessions that record the calling thread now, at most `TAGS` plus the
/// all-thread ones; `f` sees each once, with its index.
#[inline]
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

/// Whether the calling thread is busy (see [`busy`]).
#[inline(always)]
pub(crate) fn is_busy() -> bool {
    BUSY.with(Cell::get)
}

/// Sets the calling thread's busy flag; setting it also closes the hooks' fast path,
/// which does not look at it (their slow path opens it again).
#[inline]
pub(crate) fn busy(on: bool) {
    BUSY.with(|b| b.set(on));
    if on {
        set_stamp(stamp() | 1);
    }
}

/// Runs `f` with nothing the calling thread does recorded (profiled's own allocations on
/// a profiled thread).
pub(crate) fn unrecorded<R>(f: impl FnOnce() -> R) -> R {
    let was = is_busy();
    busy(true);
    let r = f();
    busy(was);
    r
}

/// Marks the calling thread as profiled's own (the drain thread, the wall sampler, the
/// endpoint's server): nothing it does is recorded, whatever it inherited.
pub(crate) fn own_thread() {
    busy(true);
}

/// Uniform in (0, 1], from this thread's xorshift generator (the heap's countdowns, the
/// locks' sampling).
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
