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
mod format;
mod hook;
mod store;

pub use alloc::Alloc;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use hook::{COUNTING, HEAP_SLOTS};
pub(crate) use hook::{on_alloc, on_free};
pub(crate) use store::Bucket;

use crate::config::{Config, Threads};
use crate::error::{Error, Repr};
use crate::kind::{self, Controls, Finished, Kind, Row, Samples};
use crate::membership::{self, Tag};
use crate::output;
pub(crate) use format::{ALLOCS, HEAP};

/// Claims a slot for a heap session sampling every `rate` bytes (0: none) or counting
/// exactly (`count`), for `all` threads or the tagged ones.
fn claim(rate: u64, count: bool, all: bool) -> Result<(usize, u64), Error> {
    membership::claim(all, |i, sid| {
        let Some(slot) = HEAP_SLOTS.get(i) else {
            return;
        };
        slot.rate.store(rate, Ordering::Relaxed);
        slot.count.store(count, Ordering::Relaxed);
        if count {
            COUNTING.fetch_add(1, Ordering::Relaxed);
        }
        // A counting session's owned tally is its claimer's (see `hook::Counters`).
        slot.counters
            .clear(if count { membership::me() } else { 0 });
        if rate > 0 {
            hook::locked(|s| s.open(sid));
        }
    })
}

/// Releases a heap session's slot.
fn release(i: usize, sid: u64) {
    membership::release(i, sid, || {
        let Some(slot) = HEAP_SLOTS.get(i) else {
            return;
        };
        slot.rate.store(0, Ordering::Relaxed);
        if slot.count.swap(false, Ordering::Relaxed) {
            COUNTING.fetch_sub(1, Ordering::Relaxed);
        }
    });
}

/// Drops what heap session `sid` recorded so far.
pub(crate) fn reset(sid: u64) {
    if let Some(s) = membership::slot_of(sid).and_then(|i| HEAP_SLOTS.get(i)) {
        s.counters.clear(s.counters.owner.load(Ordering::Relaxed));
        hook::locked(|store| store.clear(sid));
    }
}

/// Whether `profiled::Alloc` is this program's global allocator: a probe allocation is
/// counted by the hooks or not.
pub(crate) fn installed() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let Ok((i, sid)) = claim(0, true, false) else {
            return false;
        };
        membership::join(Tag { slot: i as u8, sid });
        drop(std::hint::black_box(Box::new(0u64)));
        membership::leave(sid);
        let seen = HEAP_SLOTS
            .get(i)
            .is_some_and(|s| s.counters.totals().allocs > 0);
        release(i, sid);
        seen
    })
}

/// What `PROFILE=heap` without the wrapper fails with.
pub(crate) fn not_installed() -> Error {
    Error::from(Repr::Unsupported {
        what: "heap and allocation profiles need profiled's allocator wrapper as the \
               program's global allocator; add these two lines to the test file (a service: \
               to its main.rs), or wrap your own allocator \
               (`profiled::Alloc::new(mimalloc::MiMalloc)`):\n    \
               #[global_allocator]\n    \
               static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();"
            .into(),
    })
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
            return Err(Error::from(Repr::Unsupported {
                what: format!(
                    "heap profiles are not supported on this platform ({}-{}); profiled \
                     takes stacks on Linux x86_64 (allocation counts work everywhere)",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
            }));
        }
        if !installed() {
            return Err(not_installed());
        }
        crate::sys::prepare_stacks();
        let (slot, sid) = claim(rate.max(1), false, all)?;
        if !all {
            membership::join(Tag {
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
        membership::leave(self.sid);
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
    pub(crate) fn samples(&self, kind: Kind) -> Samples<'_> {
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
            format: if kind == Kind::Allocs { &ALLOCS } else { &HEAP },
            rows,
            placeholders: Vec::new(),
            period: self.rate as i64,
            start: self.start,
            duration: self.duration,
        }
    }
}

/// What `reset()` and `pause()` reach of a heap session.
static CONTROLS: Controls = Controls {
    reset,
    pause: membership::pause,
    resume: membership::resume,
    is_live: membership::is_live,
};

/// Starts the heap source (both heap kinds) as `config` asks.
pub(crate) fn start(config: &Config) -> Result<Box<dyn kind::Running>, Error> {
    let session = Session::start(config.heap_rate, config.threads == Threads::All)?;
    // The profile must not see its own box.
    Ok(membership::unrecorded(|| Box::new(session)))
}

impl kind::Running for Session {
    fn sid(&self) -> u64 {
        self.sid
    }

    fn controls(&self) -> &'static Controls {
        &CONTROLS
    }

    fn finish(self: Box<Self>) -> Box<dyn kind::Recorded> {
        Box::new(Session::finish(*self))
    }
}

impl kind::Recorded for Recorded {
    fn finished(&self, kind: Kind) -> Finished<'_> {
        let comments = vec![if self.rate <= 1 {
            "heap: every allocation recorded (heap_rate=1)".to_string()
        } else {
            format!(
                "heap: allocations sampled once per {} bytes on average (a Poisson process \
                 over bytes, as Go's), values unbiased as Go's",
                self.rate
            )
        }];
        let count = self.buckets.iter().map(|b| b.allocs.max(0) as u64).sum();
        // An empty sampled profile is not "allocated nothing": say what it means.
        let note = (count == 0 && self.rate > 1).then(|| {
            format!(
                "no allocation was sampled: heap profiles sample one allocation per {} \
                 allocated on average, as Go's do, so a test that allocates less is rarely \
                 caught; heap_rate=1 records every allocation (PROFILE=heap,heap_rate=1)",
                output::bytes(i64::try_from(self.rate).unwrap_or(i64::MAX))
            )
        });
        Finished {
            comments,
            note,
            exact: self.rate <= 1,
            ..Finished::new(self.samples(kind), count)
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
    let (i, sid) = match claim(0, true, false) {
        Ok(claimed) => claimed,
        Err(e) => panic!("profiled::allocations: {e}"),
    };
    membership::join(Tag { slot: i as u8, sid });
    /// Leaves the session even when `f` panics.
    struct Leave(usize, u64);
    impl Drop for Leave {
        fn drop(&mut self) {
            membership::leave(self.1);
            release(self.0, self.1);
        }
    }
    let leave = Leave(i, sid);
    let result = f();
    membership::leave(sid);
    let counts = HEAP_SLOTS
        .get(i)
        .map(|s| s.counters.totals())
        .unwrap_or_default();
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
        let claimed: Vec<(usize, u64)> = (0..membership::TAGS)
            .map(|_| claim(1, false, false).unwrap())
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
