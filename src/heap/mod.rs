//! Heap and allocation profiles (`PROFILE=heap`, `PROFILE=allocs`) and exact allocation
//! counts ([`allocations`]), from what the [`Alloc`](crate::Alloc) wrapper sees.
//!
//! A session claims a slot in the hooks (src/heap/hook.rs) and tags the calling thread; a
//! thread it spawns inherits the tag at creation (src/sys/linux/spawn.rs). The hooks count
//! exactly for counting sessions and, for heap sessions, pick allocations as a Poisson
//! process over bytes (Go's sampling), walk their stack and record them in the store
//! (src/heap/store.rs) with the blocks still live, so that a free counts against the stack
//! that allocated. At the end the buckets become a kind's [`Samples`], unbiased as Go does.

// Denied, not forbidden: the allocator wrapper implements an unsafe trait and is allowed it.
#![deny(unsafe_code)]

// `GlobalAlloc` is an unsafe trait: the wrapper's impl, and nothing else here, may say
// `unsafe` (src/sys's test walks the source to keep it so).
#[allow(unsafe_code)]
mod alloc;
mod hook;
mod store;

pub use alloc::Alloc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use hook::{ACTIVE, ALL, PID, SLOT, SLOTS};
pub(crate) use hook::{CONTENDED, MUTEXES, Padded, Slot, each_slot, join, leave};
pub(crate) use hook::{Tag, uniform};
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported)))]
pub(crate) use hook::{adopt, inherited};
pub(crate) use hook::{on_alloc, on_free, own_thread};
pub(crate) use store::Bucket;

use crate::error::Error;
use crate::kind::{Kind, Row, Samples};

static NEXT: AtomicU64 = AtomicU64::new(1);

/// What a session asks of the hooks when it claims a slot.
#[derive(Clone, Copy, Default)]
pub(crate) struct Want {
    /// Heap profile: sample every `rate` bytes on average; 0 for none.
    pub rate: u64,
    /// Exact allocation counts.
    pub count: bool,
    /// Every thread of the process, tagged or not.
    pub all: bool,
    /// Block profile rate in nanoseconds (src/contention); 0 for none.
    pub block: u64,
    /// Mutex profile fraction; 0 for none.
    pub mutex: u64,
}

/// Claims a free slot for a new session: `(index, sid)`, the slot's index in the sid's low
/// byte so that `pause(sid)` finds it. The slots and the threads' tags serve every source
/// that follows a test's threads without signals: the allocation hooks and the locks.
pub(crate) fn claim(want: Want) -> Result<(usize, u64), Error> {
    for (i, slot) in SLOT.iter().enumerate() {
        let sid = (NEXT.fetch_add(1, Ordering::Relaxed) << 8) | i as u64;
        if slot
            .sid
            .compare_exchange(0, sid, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue;
        }
        slot.rate.store(want.rate, Ordering::Relaxed);
        slot.count.store(want.count, Ordering::Relaxed);
        if want.count {
            hook::COUNTING.fetch_add(1, Ordering::Relaxed);
        }
        slot.block.store(want.block, Ordering::Relaxed);
        slot.mutex.store(want.mutex, Ordering::Relaxed);
        if want.mutex > 0 {
            hook::MUTEXES.fetch_add(1, Ordering::Relaxed);
        }
        if want.block > 0 || want.mutex > 0 {
            hook::CONTENDED.0.fetch_add(1, Ordering::Release);
        }
        slot.paused.store(0, Ordering::Relaxed);
        // A counting session's owned tally is its claimer's (see `hook::Counters`).
        slot.counters.clear(if want.count { hook::me() } else { 0 });
        if want.rate > 0 {
            hook::locked(|s| s.open(sid));
        }
        let _ = PID.compare_exchange(0, std::process::id(), Ordering::Relaxed, Ordering::Relaxed);
        if want.all {
            slot.all_threads.store(true, Ordering::Release);
            ALL.fetch_or(1 << i, Ordering::AcqRel);
        }
        ACTIVE.fetch_add(1, Ordering::Release);
        hook::changed();
        return Ok((i, sid));
    }
    Err(Error::Unsupported {
        what: format!(
            "more than {SLOTS} heap, block and mutex profiles and allocation counts at once"
        ),
    })
}

pub(crate) fn release(i: usize, sid: u64) {
    let Some(slot) = SLOT.get(i) else { return };
    if slot.sid.load(Ordering::Acquire) != sid {
        return;
    }
    if slot.all_threads.swap(false, Ordering::AcqRel) {
        ALL.fetch_and(!(1 << i), Ordering::AcqRel);
    }
    if slot.count.swap(false, Ordering::Relaxed) {
        hook::COUNTING.fetch_sub(1, Ordering::Relaxed);
    }
    let block = slot.block.swap(0, Ordering::Relaxed);
    let mutex = slot.mutex.swap(0, Ordering::Relaxed);
    if mutex > 0 {
        hook::MUTEXES.fetch_sub(1, Ordering::Relaxed);
    }
    if block > 0 || mutex > 0 {
        hook::CONTENDED.0.fetch_sub(1, Ordering::Release);
    }
    slot.sid.store(0, Ordering::Release);
    ACTIVE.fetch_sub(1, Ordering::Release);
    hook::changed();
}

/// Changes a live session's block rate and mutex fraction (0: off), keeping what it
/// recorded: the endpoint's process-wide switch. Callers serialize changes of one session.
#[cfg(feature = "http")]
pub(crate) fn set_contention(sid: u64, block: u64, mutex: u64) {
    let Some(slot) = slot_of(sid) else { return };
    let old_block = slot.block.swap(block, Ordering::Relaxed);
    let old_mutex = slot.mutex.swap(mutex, Ordering::Relaxed);
    match (old_mutex > 0, mutex > 0) {
        (false, true) => drop(hook::MUTEXES.fetch_add(1, Ordering::Relaxed)),
        (true, false) => drop(hook::MUTEXES.fetch_sub(1, Ordering::Relaxed)),
        _ => {}
    }
    match (old_block > 0 || old_mutex > 0, block > 0 || mutex > 0) {
        (false, true) => drop(hook::CONTENDED.0.fetch_add(1, Ordering::Release)),
        (true, false) => drop(hook::CONTENDED.0.fetch_sub(1, Ordering::Release)),
        _ => {}
    }
}

/// The slot of a live session `sid`.
pub(crate) fn slot_of(sid: u64) -> Option<&'static Slot> {
    SLOT.get((sid & 0xff) as usize)
        .filter(|s| sid != 0 && s.sid.load(Ordering::Acquire) == sid)
}

/// Whether heap session `sid` is running.
pub(crate) fn is_live(sid: u64) -> bool {
    slot_of(sid).is_some()
}

/// The process that claimed the first slot (0: none yet).
pub(crate) fn claimed_by() -> u32 {
    PID.load(Ordering::Relaxed)
}

/// Whether this is a child forked after a heap session started here.
pub(crate) fn forked() -> bool {
    let pid = PID.load(Ordering::Relaxed);
    pid != 0 && pid != crate::sys::process_id()
}

/// Pauses heap session `sid` (nested pauses count).
pub(crate) fn pause(sid: u64) {
    if let Some(s) = slot_of(sid) {
        s.paused.fetch_add(1, Ordering::Relaxed);
        hook::changed();
    }
}

/// Ends one [`pause`].
pub(crate) fn resume(sid: u64) {
    if let Some(s) = slot_of(sid) {
        let _ = s
            .paused
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1));
        hook::changed();
    }
}

/// Drops what heap session `sid` recorded so far.
pub(crate) fn reset(sid: u64) {
    if let Some(s) = slot_of(sid) {
        s.counters.clear(s.counters.owner.load(Ordering::Relaxed));
        hook::locked(|store| store.clear(sid));
    }
}

/// Whether `profiled::Alloc` is this program's global allocator: a probe allocation is
/// counted by the hooks or not.
pub(crate) fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let Ok((i, sid)) = claim(Want {
            count: true,
            ..Want::default()
        }) else {
            return false;
        };
        hook::join(Tag { slot: i as u8, sid });
        drop(std::hint::black_box(Box::new(0u64)));
        hook::leave(sid);
        let seen = SLOT.get(i).is_some_and(|s| s.counters.totals().allocs > 0);
        release(i, sid);
        seen
    })
}

/// What `PROFILE=heap` without the wrapper fails with.
pub(crate) fn not_installed() -> Error {
    Error::Unsupported {
        what: "heap and allocation profiles need profiled's allocator wrapper as the \
               program's global allocator; add these two lines to the test file (a service: \
               to its main.rs), or wrap your own allocator \
               (`profiled::Alloc::new(mimalloc::MiMalloc)`):\n    \
               #[global_allocator]\n    \
               static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();"
            .into(),
    }
}

/// A heap profile being recorded.
pub(crate) struct Session {
    slot: usize,
    sid: u64,
    rate: u64,
    start: SystemTime,
    started: Instant,
}

/// What a finished heap session hands the encoder's caller.
pub(crate) struct Recorded {
    pub buckets: Vec<Bucket>,
    pub rate: u64,
    pub start: SystemTime,
    pub duration: Duration,
}

impl Session {
    /// Starts sampling the allocations of the calling thread and the threads it spawns from
    /// now on (`all`: every thread), one per `rate` bytes on average.
    pub(crate) fn start(rate: u64, all: bool) -> Result<Session, Error> {
        if !crate::sys::STACKS {
            return Err(Error::Unsupported {
                what: format!(
                    "heap profiles are not supported on this platform ({}-{}); profiled \
                     takes stacks on Linux x86_64 (allocation counts work everywhere)",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
            });
        }
        if !installed() {
            return Err(not_installed());
        }
        crate::sys::prepare_stacks();
        let (slot, sid) = claim(Want {
            rate: rate.max(1),
            all,
            ..Want::default()
        })?;
        if !all {
            hook::join(Tag {
                slot: slot as u8,
                sid,
            });
        }
        Ok(Session {
            slot,
            sid,
            rate: rate.max(1),
            start: SystemTime::now(),
            started: Instant::now(),
        })
    }

    pub(crate) fn sid(&self) -> u64 {
        self.sid
    }

    /// What was recorded so far, recording going on (the endpoint's always-on profile).
    #[cfg(feature = "http")]
    pub(crate) fn snapshot(&self) -> Recorded {
        let buckets = hook::locked(|s| s.buckets(self.sid));
        Recorded {
            buckets,
            rate: self.rate,
            start: self.start,
            duration: self.started.elapsed(),
        }
    }

    /// Stops recording and takes what was recorded.
    pub(crate) fn finish(self) -> Recorded {
        let duration = self.started.elapsed();
        let recording = self.stop();
        let recorded = Recorded {
            buckets: recording.buckets,
            rate: self.rate,
            start: self.start,
            duration,
        };
        std::mem::forget(self);
        recorded
    }

    /// Leaves the calling thread's tags, frees the slot and closes the recording.
    fn stop(&self) -> store::Recording {
        hook::leave(self.sid);
        release(self.slot, self.sid);
        hook::locked(|s| s.close(self.sid))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stop());
    }
}

/// Go's unbiasing of a sampled bucket (runtime/pprof `scaleHeapSample`): `count` blocks
/// of `size` bytes each were sampled with probability `1 - exp(-size/rate)` each (the
/// hooks' `inclusion`). `count` is negative in a delta where more were freed than
/// allocated.
fn scale(count: i64, size: u64, rate: u64) -> (i64, i64) {
    if count == 0 || size == 0 {
        return (0, 0);
    }
    let bytes = count.saturating_mul(size as i64);
    if rate <= 1 {
        return (count, bytes);
    }
    let s = 1.0 / hook::inclusion(size as usize, rate);
    ((count as f64 * s) as i64, (bytes as f64 * s) as i64)
}

impl Recorded {
    /// What was recorded after `earlier` (a snapshot of the same session): Go's
    /// `?seconds=N` delta profiles.
    #[cfg(feature = "http")]
    pub(crate) fn since(mut self, earlier: &Recorded) -> Recorded {
        let before: std::collections::HashMap<(&crate::stack::Thread, &[u64], usize), &Bucket> =
            earlier
                .buckets
                .iter()
                .map(|b| ((&b.thread, &*b.stack, b.size), b))
                .collect();
        for b in &mut self.buckets {
            if let Some(old) = before.get(&(&b.thread, &*b.stack, b.size)) {
                b.allocs = b.allocs.saturating_sub(old.allocs);
                b.frees = b.frees.saturating_sub(old.frees);
            }
        }
        self.buckets.retain(|b| b.allocs != 0 || b.frees != 0);
        self.duration = self.duration.saturating_sub(earlier.duration);
        self
    }

    /// The recording as `kind`'s samples (heap and allocs carry the same four values).
    pub(crate) fn samples(&self, kind: &'static Kind) -> Samples<'_> {
        let rows = self
            .buckets
            .iter()
            .map(|b| {
                let (alloc_objects, alloc_space) = scale(b.allocs, b.size as u64, self.rate);
                let live = b.allocs.saturating_sub(b.frees);
                let (inuse_objects, inuse_space) = scale(live, b.size as u64, self.rate);
                Row {
                    // No thread in a process-wide profile (see `Store::sampled`).
                    thread: (b.thread.tid != 0).then_some(&b.thread),
                    stack: &b.stack,
                    values: vec![alloc_objects, alloc_space, inuse_objects, inuse_space],
                    num_labels: vec![("bytes", b.size as i64)],
                    str_labels: Vec::new(),
                }
            })
            .collect();
        Samples {
            kind,
            rows,
            placeholders: Vec::new(),
            period: self.rate as i64,
            start: self.start,
            duration: self.duration,
        }
    }
}

/// Exact allocation counts of a piece of code: see [`allocations`].
///
/// ```
/// let a = profiled::Allocations::default();
/// assert_eq!(a.allocs, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Allocations {
    /// Blocks allocated (a `realloc` counts as one allocation and one free).
    pub allocs: u64,
    /// Bytes allocated.
    pub alloc_bytes: u64,
    /// Blocks freed, including blocks allocated before the call.
    pub frees: u64,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// The most bytes allocated and not yet freed at any moment of the call, counting from
    /// zero at its start (frees of older blocks can take the running total below zero; the
    /// peak is never below zero).
    pub peak_live_bytes: u64,
}

/// Counts exactly what `f` allocates and frees, on the calling thread and on every thread
/// spawned during the call, however many other threads allocate meanwhile (parallel tests
/// don't disturb it). `f`'s return value is dropped after counting stops.
///
/// Needs [`Alloc`](crate::Alloc) as the global allocator; panics with the two lines to add
/// when it is not. Works without `PROFILE`; costs nothing to code outside such calls beyond
/// the wrapper's one load per allocation.
///
/// ```
/// #[global_allocator]
/// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
///
/// let a = profiled::allocations(|| vec![0u8; 1000]);
/// assert_eq!((a.allocs, a.alloc_bytes), (1, 1000));
/// let none = profiled::allocations(|| 2 + 2);
/// assert_eq!(none.allocs, 0);
/// ```
#[track_caller]
pub fn allocations<R>(f: impl FnOnce() -> R) -> Allocations {
    let (counts, result) = counted(f);
    drop(result);
    counts
}

/// Runs `f` under a counting session.
#[track_caller]
pub(crate) fn counted<R>(f: impl FnOnce() -> R) -> (Allocations, R) {
    if !installed() {
        panic!("profiled::allocations: {}", not_installed());
    }
    let (i, sid) = match claim(Want {
        count: true,
        ..Want::default()
    }) {
        Ok(claimed) => claimed,
        Err(e) => panic!("profiled::allocations: {e}"),
    };
    hook::join(Tag { slot: i as u8, sid });
    /// Leaves the session even when `f` panics.
    struct Leave(usize, u64);
    impl Drop for Leave {
        fn drop(&mut self) {
            hook::leave(self.1);
            release(self.0, self.1);
        }
    }
    let leave = Leave(i, sid);
    let result = f();
    hook::leave(sid);
    let counts = SLOT[i].counters.totals();
    drop(leave);
    (counts, result)
}

/// The average number of allocations per call of `f` over `runs` calls, after one warm-up
/// call (Go's `testing.AllocsPerRun`; like Go's, a whole number: the average rounded down).
///
/// ```
/// #[global_allocator]
/// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
///
/// let mut cache = std::collections::HashMap::new();
/// let per_call = profiled::allocs_per_run(100, || {
///     cache.entry(7).or_insert_with(|| vec![1, 2, 3]).len()
/// });
/// assert_eq!(per_call, 0.0, "the warm-up call filled the cache");
/// ```
#[track_caller]
pub fn allocs_per_run<R>(runs: u32, mut f: impl FnMut() -> R) -> f64 {
    drop(f());
    let counts = allocations(|| {
        for _ in 0..runs {
            drop(std::hint::black_box(f()));
        }
    });
    if runs == 0 {
        return 0.0;
    }
    (counts.allocs / u64::from(runs)) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread can belong to `TAGS` heap sessions at once (a test's profile, the harness's
    /// whole-run one, an assertion's): freeing a block they all sampled reaches each.
    #[test]
    fn a_free_reaches_every_session_that_sampled_the_block() {
        let claimed: Vec<(usize, u64)> = (0..hook::TAGS)
            .map(|_| {
                claim(Want {
                    rate: 1,
                    ..Want::default()
                })
                .unwrap()
            })
            .collect();
        let slots: Vec<usize> = claimed.iter().map(|c| c.0).collect();
        let stack = [0x10, 0x20];
        let thread = crate::stack::Thread::default();
        hook::locked(|s| s.sampled(0x1000, 64, thread, &stack, &slots));
        hook::locked(|s| s.freed(0x1000));
        for (i, sid) in claimed {
            release(i, sid);
            let recording = hook::locked(|s| s.close(sid));
            let counts: Vec<(i64, i64)> = recording
                .buckets
                .iter()
                .map(|b| (b.allocs, b.frees))
                .collect();
            assert_eq!(counts, [(1, 1)], "session {sid:x}");
        }
    }

    #[test]
    fn unbiasing_is_gos() {
        // Go: scale = 1 / (1 - exp(-avg/rate)); at rate 1 the counts are exact.
        assert_eq!(scale(3, 100, 1), (3, 300));
        assert_eq!(scale(-3, 100, 1), (-3, -300));
        let (n, b) = scale(1, 512 * 1024, 512 * 1024);
        let s = 1.0 / (1.0 - (-1.0f64).exp());
        assert_eq!((n, b), (s as i64, (512.0 * 1024.0 * s) as i64));
        // Large blocks are sampled almost surely: scale near 1.
        assert_eq!(scale(2, 64 << 20, 512 * 1024).0, 2);
        assert_eq!(scale(0, 10, 10), (0, 0));
    }
}
