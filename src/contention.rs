//! Block and mutex profiles (`PROFILE=block`, `PROFILE=mutex`), from what profiled's locks
//! (src/sync.rs) see: how long a thread waited for a lock or a condition variable, and
//! which unlock made others wait.
//!
//! A session claims a slot (src/membership.rs: the slots and thread tags the heap sessions
//! use too, so a thread a test spawns is in the test's contention profiles) and a
//! recording here. A lock that had to wait calls [`blocked`] with the wait; an unlock that
//! kept others waiting calls [`unlocked`] with the waiting it caused. Each decides, per
//! session of the calling thread, whether to keep the event (Go's `blockprofilerate` and
//! `mutexprofilefraction`), walks the stack once and adds it to those sessions' buckets.
//! At the end the buckets become the kind's [`Samples`], scaled as Go scales them.
//!
//! **Invariant:** nothing here runs unless a lock waited and a contention session is
//! claimed; the uncontended lock pays one relaxed load (`on`).

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use rustc_hash::FxBuildHasher;

use crate::config::{Config, Threads};
use crate::error::{Error, Repr};
use crate::kind::{
    self, Controls, Figures, Finished, Format, Kind, PROFILED_SOURCES, Row, Samples, Trim,
    ValueType,
};
use crate::membership::{self, SLOTS, Tag};
use crate::stack::MAX_DEPTH;
use crate::stack::Thread;

/// Go's block and mutex profile sample types.
const CONTENTION_TYPES: &[ValueType] = &[
    ValueType {
        kind: "contentions",
        unit: "count",
    },
    ValueType {
        kind: "delay",
        unit: "nanoseconds",
    },
];

/// The frames between the code that locked (or unlocked) and the stack walk: profiled's
/// locks and recorder, the std lock they wrap, and a guard's drop glue.
const LOCK_FRAMES: Trim = Trim {
    names: LOCK_NAMES,
    files: &[
        PROFILED_SOURCES,
        "/library/std/src/sync/",
        "/library/std/src/sys/",
        // Bare drop glue of a guard (`drop_in_place<..>` in core's ptr module) is not
        // matched here: its name, which holds the guard's type, is.
    ],
};
const LOCK_NAMES: &[&str] = &[
    "profiled::",
    "<profiled::",
    "core::ptr::drop_in_place<profiled::",
    "drop_in_place<profiled::",
    "std::sync::",
    "<std::sync::",
    "std::sys::",
    "core::ptr::drop_in_place<std::sync::",
    "drop_in_place<std::sync::",
    // profiled::sync::parking_lot's locks are lock_api's over parking_lot's.
    "lock_api::",
    "<lock_api::",
    "core::ptr::drop_in_place<lock_api::",
    "drop_in_place<lock_api::",
    "parking_lot::",
    "<parking_lot::",
    "parking_lot_core::",
];

/// Where threads waited for profiled's locks and condition variables: Go's
/// `-blockprofile` (`contentions`, `delay` in nanoseconds, upscaled for `block_rate`).
pub(crate) const BLOCK: Format = Format {
    name: "block",
    sample_types: CONTENTION_TYPES,
    period_type: ValueType {
        kind: "contentions",
        unit: "count",
    },
    main: 1,
    default: 1,
    folded_divisor: 1000,
    trim: LOCK_FRAMES,
    headline: block_headline,
};

/// The unlocks that kept others waiting, with the waiting they caused: Go's
/// `-mutexprofile` (values scaled by `mutex_fraction`).
pub(crate) const MUTEX: Format = Format {
    name: "mutex",
    headline: mutex_headline,
    ..BLOCK
};

/// `block 0.120s waiting in 12 contentions`.
fn block_headline(f: &Figures<'_>) -> String {
    contention_headline(f, "waiting in")
}

/// `mutex 0.120s of waiting caused by 12 contentions`.
fn mutex_headline(f: &Figures<'_>) -> String {
    contention_headline(f, "of waiting caused by")
}

fn contention_headline(f: &Figures<'_>, what: &str) -> String {
    let about = f.about();
    let contentions = f.total("contentions");
    format!(
        "{} {about}{:.3}s {what} {about}{contentions} contention{}",
        f.format.name,
        Duration::from_nanos(f.total("delay").max(0) as u64).as_secs_f64(),
        if contentions == 1 { "" } else { "s" },
    )
}

/// One slot's lock state, beside its membership (src/membership.rs) at the same index.
struct LockSlot {
    /// Block profile rate in nanoseconds, 0 for none.
    block: AtomicU64,
    /// Mutex profile fraction, 0 for none.
    mutex: AtomicU64,
}

static LOCKS: [LockSlot; SLOTS] = [const {
    LockSlot {
        block: AtomicU64::new(0),
        mutex: AtomicU64::new(0),
    }
}; SLOTS];

/// Claimed slots with a block or mutex profile: 0 lets a lock skip every check. Read by
/// every lock of `profiled::sync`, so on a cache line of its own: the neighbours written by
/// the allocation hooks would make each read a miss.
static CONTENDED: Padded<AtomicUsize> = Padded(AtomicUsize::new(0));
/// Claimed slots with a mutex profile: 0 lets a waiter skip the blame bookkeeping.
static MUTEXES: AtomicUsize = AtomicUsize::new(0);

/// A value alone on its cache line (two lines: the adjacent-line prefetcher pairs them).
#[repr(align(128))]
pub(crate) struct Padded<T>(pub T);

/// Whether any block or mutex profile runs: the one check an uncontended lock makes.
#[inline]
pub(crate) fn on() -> bool {
    CONTENDED.0.load(Ordering::Relaxed) != 0
}

/// Whether any mutex profile runs: waiters register so that the unlock can blame.
#[inline]
pub(crate) fn mutex_on() -> bool {
    MUTEXES.load(Ordering::Relaxed) != 0
}

/// Sets slot `i`'s block rate and mutex fraction (0: off), keeping the counts of slots
/// with each in step.
fn set_slot(i: usize, block: u64, mutex: u64) {
    let Some(slot) = LOCKS.get(i) else { return };
    let old_block = slot.block.swap(block, Ordering::Relaxed);
    let old_mutex = slot.mutex.swap(mutex, Ordering::Relaxed);
    match (old_mutex > 0, mutex > 0) {
        (false, true) => drop(MUTEXES.fetch_add(1, Ordering::Relaxed)),
        (true, false) => drop(MUTEXES.fetch_sub(1, Ordering::Relaxed)),
        _ => {}
    }
    match (old_block > 0 || old_mutex > 0, block > 0 || mutex > 0) {
        (false, true) => drop(CONTENDED.0.fetch_add(1, Ordering::Release)),
        (true, false) => drop(CONTENDED.0.fetch_sub(1, Ordering::Release)),
        _ => {}
    }
}

/// Nanoseconds on a monotonic clock, from the first call in the process.
pub(crate) fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// One (thread, stack) of one session: events and nanoseconds, upscaled for sampling when
/// recorded (Go scales the mutex profile when it writes it, by the fraction then in force;
/// scaling each event by the fraction it was kept at stays right when the fraction changes).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bucket {
    pub thread: Thread,
    pub stack: Box<[u64]>,
    pub count: f64,
    pub delay: i64,
}

type Buckets = HashMap<(Thread, Box<[u64]>), (f64, i64), FxBuildHasher>;

#[derive(Default)]
struct Recording {
    block: Buckets,
    mutex: Buckets,
}

static STORE: Mutex<HashMap<u64, Recording, FxBuildHasher>> =
    Mutex::new(HashMap::with_hasher(FxBuildHasher));

fn store<R>(f: impl FnOnce(&mut HashMap<u64, Recording, FxBuildHasher>) -> R) -> R {
    f(&mut STORE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Which profile an event is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Block,
    Mutex,
}

/// The calling thread waited `delay` nanoseconds for a lock or a condition variable.
#[inline(never)]
pub(crate) fn blocked(delay: u64) {
    record(Which::Block, delay);
}

/// The calling thread's unlock ends `delay` nanoseconds of others' waiting (summed over the
/// waiters, since the previous unlock).
#[inline(never)]
pub(crate) fn unlocked(delay: u64) {
    record(Which::Mutex, delay);
}

/// Most sessions one event can reach: a thread's tags and a few process-wide sessions.
const REACH: usize = 8;

fn record(which: Which, delay: u64) {
    if crate::sys::process_id() != membership::claimed_by() {
        // A forked child: a thread that does not exist here may have held the store.
        return;
    }
    let delay = delay.max(1);
    let mut kept = [(0u64, 0f64, 0i64); REACH];
    let mut n = 0;
    membership::each_slot(|i, member| {
        let Some(slot) = LOCKS.get(i).filter(|_| !member.is_paused()) else {
            return;
        };
        let value = match which {
            Which::Block => keep_block(delay, slot.block.load(Ordering::Relaxed)),
            Which::Mutex => keep_mutex(delay, slot.mutex.load(Ordering::Relaxed)),
        };
        if let (Some(value), Some(cell)) = (value, kept.get_mut(n)) {
            *cell = (member.sid(), value.0, value.1);
            n += 1;
        }
    });
    if n == 0 {
        return;
    }
    let mut frames = [0u64; MAX_DEPTH];
    let depth = crate::sys::capture_stack(&mut frames);
    let thread = crate::sys::current_thread();
    let stack: Box<[u64]> = frames[..depth].into();
    store(|sessions| {
        for &(sid, count, delay) in &kept[..n] {
            let Some(rec) = sessions.get_mut(&sid) else {
                continue;
            };
            let buckets = match which {
                Which::Block => &mut rec.block,
                Which::Mutex => &mut rec.mutex,
            };
            let v = buckets.entry((thread, stack.clone())).or_default();
            v.0 += count;
            v.1 = v.1.saturating_add(delay);
        }
    });
}

/// Go's `blocksampled` and `saveblockevent`: events of at least `rate` ns are always kept;
/// shorter ones with probability `delay / rate`, then counted `rate / delay` times with
/// `rate` ns, so that the expected totals are the true ones. `None`: not kept (or no block
/// profile in this session, rate 0).
fn keep_block(delay: u64, rate: u64) -> Option<(f64, i64)> {
    if rate == 0 {
        return None;
    }
    if delay >= rate {
        return Some((1.0, delay as i64));
    }
    if membership::uniform() * rate as f64 > delay as f64 {
        return None;
    }
    Some((rate as f64 / delay as f64, rate as i64))
}

/// Go's mutex sampling: about one event in `fraction` kept, and counted `fraction` times.
fn keep_mutex(delay: u64, fraction: u64) -> Option<(f64, i64)> {
    if fraction == 0 {
        return None;
    }
    if fraction > 1 && membership::uniform() * fraction as f64 > 1.0 {
        return None;
    }
    Some((
        fraction as f64,
        (delay as i64).saturating_mul(fraction as i64),
    ))
}

/// A block and/or mutex profile being recorded.
pub(crate) struct Session {
    slot: usize,
    sid: u64,
    block: u64,
    mutex: u64,
    start: SystemTime,
    started: Instant,
}

/// What a finished (or snapshot) session hands the encoder's caller.
pub(crate) struct Recorded {
    pub block: Vec<Bucket>,
    pub mutex: Vec<Bucket>,
    /// `block_rate` (0: no block profile).
    pub block_rate: u64,
    /// `mutex_fraction` (0: no mutex profile).
    pub mutex_fraction: u64,
    pub start: SystemTime,
    pub duration: Duration,
}

impl Session {
    /// Starts recording the lock waits of the calling thread and the threads it spawns from
    /// now on (`all`: every thread): a block profile at `block` ns (0: none) and a mutex
    /// profile at `mutex` fraction (0: none).
    pub(crate) fn start(block: u64, mutex: u64, all: bool) -> Result<Session, Error> {
        if !crate::sys::STACKS {
            return Err(Error::from(Repr::Unsupported {
                what: format!(
                    "block and mutex profiles are not supported on this platform ({}-{}); \
                     profiled takes stacks on Linux x86_64",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
            }));
        }
        crate::sys::prepare_stacks();
        let (slot, sid) = membership::claim(all, |i, _| set_slot(i, block, mutex))?;
        store(|s| s.insert(sid, Recording::default()));
        if !all {
            membership::join(Tag {
                slot: slot as u8,
                sid,
            });
        }
        Ok(Session {
            slot,
            sid,
            block,
            mutex,
            start: SystemTime::now(),
            started: Instant::now(),
        })
    }

    /// What was recorded so far, recording going on (the endpoint's profiles).
    #[cfg(feature = "http")]
    pub(crate) fn snapshot(&self) -> Recorded {
        let (block, mutex) = store(|s| {
            s.get(&self.sid)
                .map(|r| (buckets(&r.block), buckets(&r.mutex)))
                .unwrap_or_default()
        });
        self.recorded(block, mutex, self.started.elapsed())
    }

    /// Changes the block rate and mutex fraction (0: off) from now on, keeping what was
    /// recorded.
    pub(crate) fn set_rates(&mut self, block: u64, mutex: u64) {
        if let Some(i) = membership::slot_of(self.sid) {
            set_slot(i, block, mutex);
        }
        self.block = block;
        self.mutex = mutex;
    }

    /// The block rate and mutex fraction in force (0: off).
    pub(crate) fn rates(&self) -> (u64, u64) {
        (self.block, self.mutex)
    }

    /// Stops recording and takes what was recorded.
    pub(crate) fn finish(self) -> Recorded {
        let duration = self.started.elapsed();
        let rec = self.stop();
        let recorded = self.recorded(buckets(&rec.block), buckets(&rec.mutex), duration);
        std::mem::forget(self);
        recorded
    }

    fn recorded(&self, block: Vec<Bucket>, mutex: Vec<Bucket>, duration: Duration) -> Recorded {
        Recorded {
            block,
            mutex,
            block_rate: self.block,
            mutex_fraction: self.mutex,
            start: self.start,
            duration,
        }
    }

    fn stop(&self) -> Recording {
        membership::leave(self.sid);
        membership::release(self.slot, self.sid, || set_slot(self.slot, 0, 0));
        store(|s| s.remove(&self.sid)).unwrap_or_default()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        drop(self.stop());
    }
}

fn buckets(b: &Buckets) -> Vec<Bucket> {
    let mut v: Vec<Bucket> = b
        .iter()
        .map(|((thread, stack), &(count, delay))| Bucket {
            thread: *thread,
            stack: stack.clone(),
            count,
            delay,
        })
        .collect();
    // A stable order: the encoder's output is then the same for the same events.
    v.sort_by(|a, b| b.delay.cmp(&a.delay).then_with(|| a.stack.cmp(&b.stack)));
    v
}

/// Drops what contention session `sid` recorded so far.
pub(crate) fn reset(sid: u64) {
    store(|s| {
        if let Some(r) = s.get_mut(&sid) {
            *r = Recording::default();
        }
    });
}

impl Recorded {
    /// What was recorded after `earlier` (a snapshot of the same session): Go's
    /// `?seconds=N` delta profiles.
    #[cfg(feature = "http")]
    pub(crate) fn since(mut self, earlier: &Recorded) -> Recorded {
        fn minus(now: &mut Vec<Bucket>, before: &[Bucket]) {
            let before: HashMap<(&Thread, &[u64]), &Bucket> =
                before.iter().map(|b| ((&b.thread, &*b.stack), b)).collect();
            for b in now.iter_mut() {
                if let Some(old) = before.get(&(&b.thread, &*b.stack)) {
                    b.count -= old.count;
                    b.delay = b.delay.saturating_sub(old.delay);
                }
            }
            now.retain(|b| b.delay != 0 || b.count.abs() >= 0.5);
        }
        minus(&mut self.block, &earlier.block);
        minus(&mut self.mutex, &earlier.mutex);
        self.duration = self.duration.saturating_sub(earlier.duration);
        self
    }

    /// The events of `kind` (block or mutex) as its samples.
    pub(crate) fn samples(&self, kind: Kind) -> Samples<'_> {
        let (format, buckets) = if kind == Kind::Mutex {
            (&MUTEX, &self.mutex)
        } else {
            (&BLOCK, &self.block)
        };
        let rows = buckets
            .iter()
            .map(|b| Row {
                thread: (b.thread.tid != 0).then_some(&b.thread),
                stack: &b.stack,
                values: vec![b.count.round() as i64, b.delay],
                num_labels: Vec::new(),
                str_labels: Vec::new(),
            })
            .collect();
        Samples {
            format,
            rows,
            placeholders: Vec::new(),
            period: 1,
            start: self.start,
            duration: self.duration,
        }
    }
}

/// The process's block and mutex profile: every thread, created at the first switch or
/// request, never stopped (Go's is always there, empty while its rate is 0).
static PROCESS: Mutex<Option<Session>> = Mutex::new(None);

/// Runs `f` on the process's contention session, starting it (both rates 0) if needed.
fn process<R>(f: impl FnOnce(&mut Session) -> R) -> Result<R, String> {
    let mut locks = PROCESS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if locks.is_none() {
        *locks = Some(Session::start(0, 0, true).map_err(|e| e.to_string())?);
    }
    Ok(f(locks.as_mut().expect("set above")))
}

/// Turns the process's block profile (served at `/debug/pprof/block`, feature `http`) on
/// or off, for every thread of the process: Go's `runtime.SetBlockProfileRate`. `ns` ≤ 0 turns it off; 1 records every
/// wait for a [`crate::sync`] lock or condition variable; larger values keep waits at least
/// that long and shorter ones in proportion to their length, scaled up. What was recorded
/// is kept when the rate changes. Per-test block profiles (`PROFILE=block`) are separate.
///
/// ```
/// profiled::sync::set_block_profile_rate(1);
/// let m = profiled::sync::Mutex::new(0);
/// *m.lock().unwrap() += 1;
/// profiled::sync::set_block_profile_rate(0);
/// ```
pub fn set_block_profile_rate(ns: i64) {
    let _ = process(|s| {
        let (_, mutex) = s.rates();
        s.set_rates(ns.max(0) as u64, mutex);
    });
}

/// Turns the process's mutex profile (served at `/debug/pprof/mutex`, feature `http`) on
/// or off: Go's
/// `runtime.SetMutexProfileFraction`. About one contention event in `n` is kept, scaled
/// up; 0 turns it off; a negative `n` only reads. Returns the fraction in force before.
///
/// ```
/// assert_eq!(profiled::sync::set_mutex_profile_fraction(-1), 0);
/// assert_eq!(profiled::sync::set_mutex_profile_fraction(5), 0);
/// assert_eq!(profiled::sync::set_mutex_profile_fraction(0), 5);
/// ```
pub fn set_mutex_profile_fraction(n: i64) -> i64 {
    process(|s| {
        let (block, mutex) = s.rates();
        if n >= 0 {
            s.set_rates(block, n as u64);
        }
        mutex as i64
    })
    .unwrap_or(0)
}

/// What the process's block and mutex profile recorded so far, started (both off) if it
/// was not.
#[cfg(feature = "http")]
pub(crate) fn process_snapshot() -> Result<Recorded, String> {
    process(|s| s.snapshot())
}

/// What `reset()` and `pause()` reach of a lock session.
static CONTROLS: Controls = Controls {
    reset,
    pause: membership::pause,
    resume: membership::resume,
    is_live: membership::is_live,
};

/// Starts the lock source: a block profile, a mutex profile or both, as `config` asks.
pub(crate) fn start(config: &Config) -> Result<Box<dyn kind::Running>, Error> {
    let wants = |k| config.kinds.contains(&k);
    Ok(Box::new(Session::start(
        if wants(Kind::Block) {
            config.block_rate
        } else {
            0
        },
        if wants(Kind::Mutex) {
            config.mutex_fraction
        } else {
            0
        },
        config.threads == Threads::All,
    )?))
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
        let mutex = kind == Kind::Mutex;
        let comments = vec![if mutex {
            format!(
                "mutex: unlocks of profiled::sync locks that kept others waiting, with the \
                 waiting each caused; one event in {} kept, values scaled up by as much \
                 (mutex_fraction)",
                self.mutex_fraction
            )
        } else {
            format!(
                "block: waits for profiled::sync locks and condition variables; events \
                 shorter than {} ns kept in proportion and scaled up (block_rate, as Go's)",
                self.block_rate
            )
        }];
        let samples = self.samples(kind);
        let count = samples.rows.len() as u64;
        Finished {
            comments,
            exact: if mutex {
                self.mutex_fraction <= 1
            } else {
                self.block_rate <= 1
            },
            ..Finished::new(samples, count)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_frames_are_trimmed_by_their_source_file() {
        let std = "/rustc/0123abcd/library";
        for (name, file) in [
            (
                "lock_contended",
                format!("{std}/std/src/sys/sync/mutex/futex.rs"),
            ),
            ("lock<u32>", format!("{std}/std/src/sync/poison/mutex.rs")),
            (
                "drop_in_place<profiled::sync::MutexGuard<u32>>",
                format!("{std}/core/src/ptr/mod.rs"),
            ),
        ] {
            assert!(BLOCK.trims(name, &file), "{name} in {file}");
        }
        // Drop glue of the user's types stays.
        assert!(!BLOCK.trims(
            "drop_in_place<app::Doc>",
            &format!("{std}/core/src/ptr/mod.rs")
        ));
    }

    #[test]
    fn block_sampling_is_gos_and_unbiased() {
        // At or above the rate: kept as is.
        assert_eq!(keep_block(5_000, 1), Some((1.0, 5_000)));
        assert_eq!(keep_block(5_000, 5_000), Some((1.0, 5_000)));
        assert_eq!(keep_block(5_000, 0), None);
        // Below: kept with probability delay/rate, then worth rate/delay events of rate ns.
        let (rate, delay, n) = (10_000u64, 1_000u64, 200_000);
        let (mut count, mut ns, mut kept) = (0.0, 0i64, 0u32);
        for _ in 0..n {
            if let Some((c, d)) = keep_block(delay, rate) {
                assert_eq!((c, d), (10.0, 10_000));
                count += c;
                ns += d;
                kept += 1;
            }
        }
        // Binomial: n·p = 20000 kept, σ = sqrt(n·p·(1-p)) ≈ 134; 5σ.
        let p = delay as f64 / rate as f64;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (f64::from(kept) - n as f64 * p).abs() < 5.0 * sigma,
            "kept {kept} of {n}"
        );
        let true_ns = (n as u64 * delay) as f64;
        assert!(
            (ns as f64 - true_ns).abs() < 5.0 * sigma * rate as f64,
            "{ns}"
        );
        assert!((count - n as f64).abs() < 5.0 * sigma * 10.0, "{count}");
    }

    #[test]
    fn mutex_sampling_keeps_one_in_fraction_and_scales_it() {
        assert_eq!(keep_mutex(7, 1), Some((1.0, 7)));
        assert_eq!(keep_mutex(7, 0), None);
        let n = 100_000;
        let kept: Vec<(f64, i64)> = (0..n).filter_map(|_| keep_mutex(7, 10)).collect();
        assert!(kept.iter().all(|&k| k == (10.0, 70)), "{:?}", kept.first());
        let sigma = (n as f64 * 0.1 * 0.9).sqrt();
        let k = kept.len() as f64;
        assert!((k - n as f64 * 0.1).abs() < 5.0 * sigma, "{k}");
    }
}
