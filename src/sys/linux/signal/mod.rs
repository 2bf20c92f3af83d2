//! Everything that runs in signal context. Nothing else in the crate does.
//!
//! **Invariant:** the handlers only touch atomics, the preallocated [`Ring`], a `Cell` in a
//! const-initialised thread-local (plain `#[thread_local]` storage in an executable, no lazy
//! allocation) and async-signal-safe system calls (`clock_gettime`, `process_vm_readv`).
//! No allocation, no locks, no panics, no formatting, no libgcc unwinding.
//!
//! Two sources deliver samples: perf-event `sigtrap` overflows arrive as `SIGTRAP` with
//! `si_code == TRAP_PERF` and the session id in `si_perf_data`; POSIX CPU timers arrive as
//! `SIGPROF` with `si_code == SI_TIMER` and the session id in `si_value`. Thread dump
//! requests arrive as `SIGPROF` with `si_code == SI_QUEUE` and a dump tag in `si_value`
//! ([`dump`]). Any other `SIGTRAP` or `SIGPROF` is passed on to the handler that was
//! installed before ours.

// Code that runs in signal context must not panic: no unchecked arithmetic (overflow checks
// are on in users' test builds), no indexing, no unwrap.
#![deny(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};

pub(crate) mod dump;
pub(crate) mod ring;
pub(crate) mod table;
pub(crate) mod unwind;

use ring::{MAX_DEPTH, Ring, Thread};
use table::StackTable;

/// Most profiles that can be open at once (concurrent tests).
pub(crate) const MAX_SLOTS: usize = 64;

/// Per-profile state the handler reads. A slot is owned by one session at a time, identified
/// by `sid` (slot index in the low 6 bits, a process-unique counter above).
pub(crate) struct Slot {
    sid: AtomicU64,
    generation: AtomicU32,
    paused: AtomicU32,
    /// Handlers currently inside `record` for this slot; a session ends only at zero.
    inflight: AtomicU32,
    /// Nominal sampling period, the largest weight a sample of unknown start may get.
    period_ns: AtomicU64,
    /// Samples (and their CPU time) that could not be kept: ring full or no unwind cache.
    lost: AtomicU64,
    lost_ns: AtomicU64,
    /// Samples kept with their leaf frame only, because no unwind cache was free.
    truncated: AtomicU64,
    /// Samples whose stacks were deeper than a sample holds (middle frames left out).
    cut: AtomicU64,
    /// The session samples every thread of the process (`threads=all`): threads that
    /// existed before it started find their starting CPU time in [`STARTS`].
    all_threads: AtomicBool,
    /// The session's source follows the threads its threads spawn (perf events): a thread
    /// spawned by a member is a member from birth.
    inherits: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    sid: AtomicU64::new(0),
    generation: AtomicU32::new(0),
    paused: AtomicU32::new(0),
    inflight: AtomicU32::new(0),
    period_ns: AtomicU64::new(0),
    lost: AtomicU64::new(0),
    lost_ns: AtomicU64::new(0),
    truncated: AtomicU64::new(0),
    cut: AtomicU64::new(0),
    all_threads: AtomicBool::new(false),
    inherits: AtomicBool::new(false),
};

static SLOTS: [Slot; MAX_SLOTS] = [EMPTY; MAX_SLOTS];

/// `Slot::sid` while a session is being set up or shut down: handlers ignore it, claims
/// pass it by.
const CLOSING: u64 = u64::MAX;
/// The session counter's bits in a session id, between the slot index and the tag.
const SEQ_MASK: u64 = (1 << 34) - 1;

/// What a session's samples could not keep whole, counted by its handlers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Losses {
    /// Samples (and their CPU time) that could not be kept: ring full or no unwind cache.
    pub lost: u64,
    pub lost_ns: u64,
    /// Samples kept with their leaf frame only.
    pub truncated: u64,
    /// Samples whose middle frames were left out.
    pub cut: u64,
}

/// Claims a free slot, trying from the `seq`-th: its session id (slot index in the low
/// bits, `SID_TAG` in the top ones, never `CLOSING`) and the slot, which handlers ignore
/// until [`Slot::open`].
pub(crate) fn claim(seq: u64) -> Option<(u64, &'static Slot)> {
    for offset in 0..MAX_SLOTS {
        let index = (seq as usize).wrapping_add(offset) % MAX_SLOTS;
        let slot = SLOTS.get(index)?;
        let sid = SID_TAG | ((seq & SEQ_MASK) << 6) | index as u64;
        if slot
            .sid
            .compare_exchange(0, CLOSING, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            return Some((sid, slot));
        }
    }
    None
}

/// The sampling periods of the sessions running beside `slot`.
pub(crate) fn periods_beside(slot: &Slot) -> Vec<u64> {
    SLOTS
        .iter()
        .filter(|s| !std::ptr::eq(*s, slot) && s.sid.load(Ordering::Acquire) != 0)
        .map(|s| s.period_ns.load(Ordering::Relaxed))
        .collect()
}

impl Slot {
    /// Sets a claimed slot up for a session sampling every `period_ns` of `all_threads`
    /// (or of its own and their descendants), before [`Slot::open`].
    pub(crate) fn prepare(&self, period_ns: u64, all_threads: bool) {
        self.generation.store(0, Ordering::Relaxed);
        self.paused.store(0, Ordering::Relaxed);
        self.clear_losses();
        self.period_ns.store(period_ns, Ordering::Relaxed);
        self.all_threads.store(all_threads, Ordering::Relaxed);
        self.inherits.store(false, Ordering::Relaxed);
    }

    /// Handlers take samples for `sid` from now on.
    pub(crate) fn open(&self, sid: u64) {
        self.sid.store(sid, Ordering::SeqCst);
    }

    /// Threads the session's threads spawn are members from birth (perf events follow
    /// them).
    pub(crate) fn inherit(&self) {
        self.inherits.store(true, Ordering::Relaxed);
    }

    /// No handler takes a sample for the session from now on; returns once those inside
    /// have left.
    pub(crate) fn close(&self) {
        self.sid.store(CLOSING, Ordering::SeqCst);
        while self.inflight.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }

    /// Frees a closed slot for the next session.
    pub(crate) fn free(&self) {
        self.sid.store(0, Ordering::SeqCst);
    }

    /// Whether the session is paused.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire) != 0
    }

    /// One pause more; whether it is the first.
    pub(crate) fn pause(&self) -> bool {
        self.paused.fetch_add(1, Ordering::AcqRel) == 0
    }

    /// One pause fewer; whether it was the last.
    pub(crate) fn resume(&self) -> bool {
        self.paused.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Starts a new generation (`reset()`): samples of older ones are dropped when
    /// drained, and the losses start again. Returns the new generation.
    pub(crate) fn next_generation(&self) -> u32 {
        let generation = self
            .generation
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1);
        self.clear_losses();
        generation
    }

    fn clear_losses(&self) {
        for counter in [&self.lost, &self.lost_ns, &self.truncated, &self.cut] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// What the session's samples could not keep whole.
    pub(crate) fn losses(&self) -> Losses {
        Losses {
            lost: self.lost.load(Ordering::Relaxed),
            lost_ns: self.lost_ns.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
        }
    }
}

/// A thread that existed when a `threads=all` session started, and its CPU time then.
struct ThreadStart {
    tid: AtomicI32,
    cpu_ns: AtomicU64,
}

/// Threads a `threads=all` session found at its start (at most one such session runs at a
/// time: it refuses to share the process). Filled before its events are opened, cleared
/// after they are closed; `STARTS_LEN` entries are valid, `STARTS_FULL` says some did not fit.
#[allow(clippy::declare_interior_mutable_const)]
const NO_START: ThreadStart = ThreadStart {
    tid: AtomicI32::new(0),
    cpu_ns: AtomicU64::new(0),
};
const MAX_STARTS: usize = 4096;
static STARTS: [ThreadStart; MAX_STARTS] = [NO_START; MAX_STARTS];
static STARTS_LEN: AtomicUsize = AtomicUsize::new(0);
static STARTS_FULL: AtomicBool = AtomicBool::new(false);

/// Records the threads a `threads=all` session found at its start, with their CPU time
/// then, for their first samples to weigh from (before the session's events are opened).
pub(crate) fn set_starts(starts: impl IntoIterator<Item = (libc::pid_t, u64)>) {
    let mut len = 0;
    for (tid, cpu_ns) in starts {
        let Some(entry) = STARTS.get(len) else {
            STARTS_FULL.store(true, Ordering::Relaxed);
            break;
        };
        entry.tid.store(tid, Ordering::Relaxed);
        entry.cpu_ns.store(cpu_ns, Ordering::Relaxed);
        len = len.wrapping_add(1);
    }
    STARTS_LEN.store(len.min(MAX_STARTS), Ordering::Release);
}

/// Forgets the starts (after the session's events are closed).
pub(crate) fn clear_starts() {
    STARTS_LEN.store(0, Ordering::Release);
    STARTS_FULL.store(false, Ordering::Relaxed);
}

/// The CPU time the calling thread had when the `threads=all` session started: `Some(0)` for
/// a thread born since (all its CPU is the session's), `None` when unknown.
fn start_of_this_thread() -> Option<u64> {
    // SAFETY: gettid is a plain system call, async-signal-safe.
    let tid = unsafe { libc::gettid() };
    let len = STARTS_LEN.load(Ordering::Acquire).min(MAX_STARTS);
    for start in STARTS.iter().take(len) {
        if start.tid.load(Ordering::Relaxed) == tid {
            return Some(start.cpu_ns.load(Ordering::Relaxed));
        }
    }
    (!STARTS_FULL.load(Ordering::Relaxed)).then_some(0)
}

/// Where handlers put samples; set once, before any handler is installed.
static RING: OnceLock<Ring> = OnceLock::new();
/// Where handlers aggregate samples while no drain thread runs; set with the ring.
static TABLE: OnceLock<StackTable> = OnceLock::new();
/// Whether a drain thread empties the ring; until one does, handlers use [`TABLE`].
static DRAIN_RUNNING: AtomicBool = AtomicBool::new(false);

/// Makes the ring and the table (once, before [`install`]).
pub(crate) fn make_buffers(ring: usize, table: usize) {
    let _ = RING.set(Ring::new(ring));
    let _ = TABLE.set(StackTable::new(table));
}

/// The ring samples are drained from.
pub(crate) fn ring() -> Option<&'static Ring> {
    RING.get()
}

/// The table handlers count stacks in while no drain thread runs.
pub(crate) fn table() -> Option<&'static StackTable> {
    TABLE.get()
}

/// A drain thread empties the ring from now on.
pub(crate) fn drain_started() {
    DRAIN_RUNNING.store(true, Ordering::Release);
}

/// Whether a drain thread empties the ring.
pub(crate) fn drain_running() -> bool {
    DRAIN_RUNNING.load(Ordering::Acquire)
}

/// What a thread's next sample weighs, in its own CPU clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Clock {
    /// Session this state belongs to.
    sid: u64,
    /// CPU time at the thread's last sample (or session start).
    last: u64,
    /// CPU spent unpaused since `last` in stretches that already ended (by this thread's
    /// own `pause`), not yet charged to a sample.
    active: u64,
    /// Start of the current unpaused stretch (0: since `last`); `PAUSED` while this thread
    /// holds the session paused.
    since: u64,
}

const PAUSED: u64 = u64::MAX;

/// Sessions one thread can be sampled for at once with exact weights (nested profiles, e.g.
/// a whole-run profile around per-test ones). Beyond that the least recently sampled one is
/// forgotten and its next sample weighs at most one period.
pub(crate) const CLOCKS: usize = 4;

const NO_CLOCK: Clock = Clock {
    sid: 0,
    last: 0,
    active: 0,
    since: 0,
};

thread_local! {
    static CLOCK: Cell<[Clock; CLOCKS]> = const { Cell::new([NO_CLOCK; CLOCKS]) };
    /// This thread's id and name, read at its first sample (tid 0: not yet).
    static WHO: Cell<Thread> = const { Cell::new(Thread { tid: 0, name: [0; 16] }) };
    /// Whether this thread gave up a running session's clock (more sessions at once than
    /// [`CLOCKS`]): then a session it has no clock for may be one it forgot.
    static FORGOT: Cell<bool> = const { Cell::new(false) };
}

/// The slot session `sid` has (its index is in the id's low bits), whether or not the
/// session still holds it.
fn slot_for(sid: u64) -> Option<&'static Slot> {
    SLOTS.get(sid as usize % MAX_SLOTS)
}

/// Session `sid`'s slot while the session runs.
pub(crate) fn running(sid: u64) -> Option<&'static Slot> {
    slot_for(sid).filter(|s| sid != 0 && s.sid.load(Ordering::Acquire) == sid)
}

/// Session `sid`'s slot, held (its `inflight` raised: the session cannot end until the
/// holder lowers it) while the session runs with perf events, which follow the threads its
/// threads spawn; `None`, holding nothing, otherwise.
fn hold_inherited(sid: u64) -> Option<&'static Slot> {
    let slot = slot_for(sid)?;
    slot.inflight.fetch_add(1, Ordering::SeqCst);
    if sid != 0 && slot.sid.load(Ordering::SeqCst) == sid && slot.inherits.load(Ordering::Relaxed) {
        Some(slot)
    } else {
        slot.inflight.fetch_sub(1, Ordering::SeqCst);
        None
    }
}

/// Puts `clock` in entry `i` of `clocks`, noting in [`FORGOT`] when that gives up the clock
/// of a session still running.
fn replace(clocks: &mut [Clock; CLOCKS], i: usize, clock: Clock) {
    if let Some(c) = clocks.get_mut(i) {
        if c.sid != 0 && c.sid != clock.sid && running(c.sid).is_some() {
            FORGOT.with(|f| f.set(true));
        }
        *c = clock;
    }
}

/// The calling thread's id and name. Async-signal-safe: `gettid` and `prctl(PR_GET_NAME)`
/// are plain system calls, made once per thread. std names a thread before running its
/// closure, so the name read at the first sample is the one the user gave.
pub(crate) fn who() -> Thread {
    let cached = WHO.with(Cell::get);
    if cached.tid != 0 {
        return cached;
    }
    let mut name = [0u8; 16];
    // SAFETY: gettid has no preconditions; PR_GET_NAME writes at most 16 bytes, NUL
    // included, into the buffer we pass.
    let tid = unsafe {
        libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr());
        libc::gettid()
    };
    let me = Thread {
        tid: tid as u32,
        name,
    };
    WHO.with(|w| w.set(me));
    me
}

/// This thread's clock for `sid`: `(index, clock)`; a fresh clock in a free (or the least
/// recently sampled) entry when the thread has none for it.
fn clock_for(clocks: &[Clock; CLOCKS], sid: u64) -> (usize, Clock) {
    if let Some((i, c)) = clocks.iter().enumerate().find(|(_, c)| c.sid == sid) {
        return (i, *c);
    }
    let i = clocks.iter().position(|c| c.sid == 0).unwrap_or_else(|| {
        let oldest = clocks.iter().enumerate().min_by_key(|(_, c)| c.last);
        oldest.map_or(0, |(i, _)| i)
    });
    (i, NO_CLOCK)
}

/// Applies `f` to this thread's clock for `sid` and stores the result.
fn update_clock(sid: u64, f: impl FnOnce(Clock) -> Clock) {
    CLOCK.with(|c| {
        let mut clocks = c.get();
        let (i, clock) = clock_for(&clocks, sid);
        replace(&mut clocks, i, f(clock));
        c.set(clocks);
    })
}

/// Runs `f` with our sampling signals blocked on this thread, so the handler cannot
/// interleave with a read-modify-write of the thread's clock.
fn with_signals_blocked<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: sigset_t is plain data initialised by sigemptyset/sigaddset; pthread_sigmask
    // only changes this thread's mask and we restore the previous one.
    unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGTRAP);
        libc::sigaddset(&mut block, libc::SIGPROF);
        libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
        let r = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// Starts the calling thread's clock for session `sid`: its first sample weighs exactly the
/// CPU time from now.
pub(crate) fn mark_thread(sid: u64) {
    with_signals_blocked(|| {
        update_clock(sid, |_| Clock {
            sid,
            last: thread_cpu_ns(),
            active: 0,
            since: 0,
        })
    });
}

/// The perf sessions the calling thread is sampled for, which a thread it spawns now is
/// sampled for from birth (its events are inherited): `None` when there are none.
pub(crate) fn memberships() -> Option<[u64; CLOCKS]> {
    let clocks = CLOCK.with(Cell::get);
    let mut sids = [0; CLOCKS];
    for (sid, c) in sids.iter_mut().zip(clocks) {
        if running(c.sid).is_some_and(|s| s.inherits.load(Ordering::Relaxed)) {
            *sid = c.sid;
        }
    }
    sids.iter().any(|&s| s != 0).then_some(sids)
}

/// Starts the calling (newly spawned) thread's clocks for `sids`, the sessions its creator
/// was sampled for: each one's first sample weighs the thread's CPU from birth, and a
/// session whose first signal is dropped is sampled at another's (see [`overdue`]).
pub(crate) fn born_into(sids: [u64; CLOCKS]) {
    with_signals_blocked(|| {
        for sid in sids.into_iter().filter(|&s| s != 0) {
            update_clock(sid, |clock| {
                if clock.sid == sid {
                    clock
                } else {
                    Clock { sid, ..NO_CLOCK }
                }
            });
        }
    });
}

/// The calling thread is about to end: its CPU since its latest sample for each perf session
/// (unpaused) goes to the ring as a sample of no frames, which the drain charges to the
/// thread's latest sampled stack (in any session: one whose own signals were all dropped
/// has none). Without it a thread that lives a few periods would lose up to a period of its
/// CPU, the stretch no sample follows, and all of it for such a session.
pub(crate) fn thread_ends() {
    with_signals_blocked(|| {
        let mut clocks = CLOCK.with(Cell::get);
        let cpu = thread_cpu_ns();
        for c in clocks.iter_mut().filter(|c| c.sid != 0) {
            let Some(slot) = hold_inherited(c.sid) else {
                continue;
            };
            if slot.paused.load(Ordering::Acquire) == 0 {
                let (weight, next) = weigh(*c, c.sid, cpu, false, First::No);
                *c = next;
                let generation = slot.generation.load(Ordering::Acquire);
                let lost = weight > 0
                    && push(c.sid, generation, who(), weight, |_| (0, Shape::Whole)).is_none();
                if lost {
                    slot.lost.fetch_add(1, Ordering::Relaxed);
                    slot.lost_ns.fetch_add(weight, Ordering::Relaxed);
                }
            }
            slot.inflight.fetch_sub(1, Ordering::SeqCst);
        }
        CLOCK.with(|c| c.set(clocks));
    });
}

/// The calling thread pauses session `sid`: the CPU of its current unpaused stretch is kept
/// for its next sample, and what follows is not charged.
pub(crate) fn thread_pauses(sid: u64) {
    with_signals_blocked(|| {
        update_clock(sid, |mut clock| {
            if clock.sid == sid && clock.since != PAUSED {
                let now = thread_cpu_ns();
                let stretch = now.saturating_sub(clock.last.max(clock.since));
                clock.active = clock.active.saturating_add(stretch);
                clock.since = PAUSED;
            }
            clock
        })
    });
}

/// The calling thread resumes session `sid`: a new unpaused stretch starts now.
pub(crate) fn thread_resumes(sid: u64) {
    with_signals_blocked(|| {
        update_clock(sid, |mut clock| {
            if clock.sid == sid {
                clock.since = thread_cpu_ns();
            }
            clock
        })
    });
}

/// CPU time of the calling thread. Async-signal-safe.
pub(crate) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec; it is on POSIX's async-signal-safe list.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

const TRAP_PERF: i32 = 6;
const SI_TIMER: i32 = -2;
/// `sigqueue`/`rt_tgsigqueueinfo`: thread dump requests (src/sys/linux/signal/dump.rs).
pub(crate) const SI_QUEUE: i32 = -1;

struct Previous(std::cell::UnsafeCell<libc::sigaction>);
// SAFETY: written once in `install` before our handler can run, read-only afterwards.
unsafe impl Sync for Previous {}

static PREV_TRAP: OnceLock<Previous> = OnceLock::new();
static PREV_PROF: OnceLock<Previous> = OnceLock::new();

/// Installs both handlers, once per process. They stay installed for the life of the process:
/// a late signal after a session ended must never meet the default action, which would kill
/// the process (the failure behind pprof-rs#288).
pub(crate) fn install() -> std::io::Result<()> {
    static RESULT: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = RESULT.get_or_init(|| {
        for (sig, handler, prev) in [
            (libc::SIGTRAP, on_sigtrap as *const () as usize, &PREV_TRAP),
            (libc::SIGPROF, on_sigprof as *const () as usize, &PREV_PROF),
        ] {
            // SAFETY: zeroed sigaction is a valid "no handler" value; sigaction writes the old
            // action into `old` and installs ours, whose flags and mask we set explicitly.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = handler;
                // Not SA_ONSTACK: std gives each thread an alternate stack of a few KiB for overflow
                // reports, too small for DWARF unwinding; the interrupted stack has room.
                new.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
                libc::sigemptyset(&mut new.sa_mask);
                // Keep the other source out while one sample is being taken.
                libc::sigaddset(&mut new.sa_mask, libc::SIGTRAP);
                libc::sigaddset(&mut new.sa_mask, libc::SIGPROF);
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0 {
                    return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
                }
                let _ = prev.set(Previous(old.into()));
                if libc::sigaction(sig, &new, std::ptr::null_mut()) != 0 {
                    return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
                }
            }
        }
        Ok(())
    });
    result.map_err(std::io::Error::from_raw_os_error)
}

/// Saves and restores `errno` around the handler, which makes system calls.
struct ErrnoGuard(i32);

impl ErrnoGuard {
    fn new() -> Self {
        // SAFETY: __errno_location returns this thread's errno slot.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

// siginfo_t on Linux: signo, errno, code (3 × i32, padded to 16), then a union. For TRAP_PERF
// the union holds si_addr (8 bytes) then si_perf_data (u64) at offset 24; for SI_TIMER it holds
// si_tid (i32, 16), si_overrun (i32, 20), si_value (24). libc exposes neither field.
const PERF_DATA_OFFSET: usize = 24;
const OVERRUN_OFFSET: usize = 20;
pub(crate) const VALUE_OFFSET: usize = 24;

/// The top bits of every session id profiled hands out: a perf-sigtrap or timer signal
/// whose data lacks them was set up by someone else (another profiler, the program itself)
/// and goes to the handler that was installed before ours.
pub(crate) const SID_TAG: u64 = 0x0070_6664 << 40;
const SID_TAG_MASK: u64 = 0x00ff_ffff << 40;

/// Whether `sid` is one of profiled's session ids (live or ended).
pub(crate) fn is_ours(sid: u64) -> bool {
    sid & SID_TAG_MASK == SID_TAG
}

extern "C" fn on_sigtrap(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let _errno = ErrnoGuard::new();
    if info.is_null() {
        return chain(&PREV_TRAP, sig, info, ctx);
    }
    // SAFETY: non-null, and the kernel passes a valid siginfo_t with SA_SIGINFO.
    let code = unsafe { (*info).si_code };
    if code == TRAP_PERF {
        // SAFETY: for TRAP_PERF the kernel fills si_perf_data at this offset.
        let sid = unsafe {
            (info as *const u8)
                .add(PERF_DATA_OFFSET)
                .cast::<u64>()
                .read_unaligned()
        };
        if is_ours(sid) {
            record(sid, 0, ctx);
        } else {
            chain(&PREV_TRAP, sig, info, ctx);
        }
    } else {
        chain(&PREV_TRAP, sig, info, ctx);
    }
}

extern "C" fn on_sigprof(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let _errno = ErrnoGuard::new();
    if info.is_null() {
        return chain(&PREV_PROF, sig, info, ctx);
    }
    // SAFETY: non-null, and the kernel passes a valid siginfo_t with SA_SIGINFO.
    let code = unsafe { (*info).si_code };
    if code == SI_TIMER {
        // SAFETY: for SI_TIMER the kernel fills si_overrun and si_value at these offsets.
        let (overrun, sid) = unsafe {
            let base = info as *const u8;
            (
                base.add(OVERRUN_OFFSET).cast::<i32>().read_unaligned(),
                base.add(VALUE_OFFSET).cast::<u64>().read_unaligned(),
            )
        };
        if is_ours(sid) {
            record(sid, overrun.max(0) as u64, ctx);
        } else {
            chain(&PREV_PROF, sig, info, ctx);
        }
    } else if code == SI_QUEUE {
        // SAFETY: for SI_QUEUE the kernel (or our sender) fills si_value at this offset.
        let value = unsafe {
            (info as *const u8)
                .add(VALUE_OFFSET)
                .cast::<u64>()
                .read_unaligned()
        };
        if dump::is_dump(value) {
            dump::answer(value, ctx);
        } else {
            chain(&PREV_PROF, sig, info, ctx);
        }
    } else {
        chain(&PREV_PROF, sig, info, ctx);
    }
}

/// Hands a signal that is not ours to whatever handled it before.
fn chain(
    prev: &OnceLock<Previous>,
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    let Some(prev) = prev.get() else { return };
    // SAFETY: written once before our handler was installed, never again.
    let prev = unsafe { &*prev.0.get() };
    match prev.sa_sigaction {
        libc::SIG_IGN => {}
        libc::SIG_DFL => {
            // SAFETY: restoring the default action and re-raising gives the signal the
            // effect it would have had without us (for SIGTRAP and SIGPROF: terminate).
            unsafe {
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
            }
        }
        f if prev.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: the previous handler was registered with SA_SIGINFO, so it has this type.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(f) };
            f(sig, info, ctx)
        }
        f => {
            // SAFETY: a handler registered without SA_SIGINFO takes only the signal number.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(f) };
            f(sig)
        }
    }
}

/// How a thread's first sample for a session is weighed, when it has no clock for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum First {
    /// Not a first sample: the thread has a clock for the session.
    No,
    /// The thread's CPU time when the session began for it: 0 for a thread born inside the
    /// session (perf events follow only threads spawned after the start), its reading at
    /// the start for a thread a `threads=all` session found running.
    Since(u64),
    /// The thread may have had a clock for the session and given it up (see [`FORGOT`]),
    /// or a `threads=all` session did not find it running: when this session's share
    /// began is unknown, so one nominal period (`nominal`) after the latest of its other
    /// clocks is the honest bound.
    Unknown { latest: u64, nominal: u64 },
}

/// What a sample taken at thread CPU time `cpu` weighs, and the thread's clock for `sid`
/// afterwards. A sample stands for the thread's unpaused CPU time since its previous sample:
/// each interval is represented by the sample that ends it, which keeps totals unbiased
/// however finely the session is paused and resumed, includes kernel time the source could
/// not sample, and is exact whatever rate the kernel delivers. A sample taken while the
/// session is `paused` is not recorded: unpaused CPU gathered so far waits for the next
/// recorded sample, and the paused CPU up to now is dropped by moving `last`.
///
/// Pure and panic-free (saturating arithmetic): it runs in the signal handler, in users'
/// debug builds, where an overflow check would abort the process.
fn weigh(clock: Clock, sid: u64, cpu: u64, paused: bool, first: First) -> (u64, Clock) {
    let own = clock.sid == sid;
    let weight = match first {
        First::No => {
            let stretch = if clock.since == PAUSED {
                0
            } else {
                cpu.saturating_sub(clock.last.max(clock.since))
            };
            clock.active.saturating_add(stretch)
        }
        First::Since(start) => cpu.saturating_sub(start),
        First::Unknown { latest, nominal } => cpu.saturating_sub(latest).min(nominal),
    };
    let next = Clock {
        sid,
        last: cpu,
        active: if paused && own { clock.active } else { 0 },
        since: if own && clock.since == PAUSED {
            PAUSED
        } else {
            0
        },
    };
    (weight, next)
}

/// Takes one sample for session `sid`: weight from the thread CPU clock, stack from the
/// interrupted context, into the ring.
fn record(sid: u64, overrun: u64, ctx: *mut libc::c_void) {
    let Some(slot) = slot_for(sid) else {
        return;
    };
    slot.inflight.fetch_add(1, Ordering::SeqCst);
    #[cfg(feature = "__test-hooks")]
    IN_HANDLER.with(|d| d.set(d.get().wrapping_add(1)));
    if sid != 0 && slot.sid.load(Ordering::SeqCst) == sid {
        take(slot, sid, overrun, ctx);
    }
    #[cfg(feature = "__test-hooks")]
    IN_HANDLER.with(|d| d.set(d.get().wrapping_sub(1)));
    slot.inflight.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(feature = "__test-hooks")]
thread_local! {
    /// Depth of profiled's handler on this thread, for [`in_handler`] (test hooks only: the
    /// shipped handler keeps no count it never reads).
    static IN_HANDLER: Cell<u32> = const { Cell::new(0) };
}

/// Whether the calling thread is inside profiled's signal handler: test allocators abort
/// when asked to allocate then (tests/stress.rs, tests/single_threaded.rs).
#[cfg(feature = "__test-hooks")]
pub(crate) fn in_handler() -> bool {
    IN_HANDLER.with(Cell::get) != 0
}

fn take(slot: &'static Slot, sid: u64, overrun: u64, ctx: *mut libc::c_void) {
    let cpu = thread_cpu_ns();
    let generation = slot.generation.load(Ordering::Acquire);
    let nominal = slot
        .period_ns
        .load(Ordering::Relaxed)
        .saturating_mul(overrun.saturating_add(1));
    let mut clocks = CLOCK.with(Cell::get);
    let (index, clock) = clock_for(&clocks, sid);
    let paused = slot.paused.load(Ordering::Acquire) != 0;
    let first = if clock.sid == sid {
        First::No
    } else if let Some(start) = slot
        .all_threads
        .load(Ordering::Relaxed)
        .then(start_of_this_thread)
        .flatten()
    {
        First::Since(start)
    } else if !slot.all_threads.load(Ordering::Relaxed) && !FORGOT.with(Cell::get) {
        // Not the thread that started the session (it has a clock from the start), so one
        // the session's thread spawned after it started: all its CPU is the session's.
        First::Since(0)
    } else {
        First::Unknown {
            latest: clocks.iter().map(|c| c.last).max().unwrap_or(0),
            nominal,
        }
    };
    let (weight, next) = weigh(clock, sid, cpu, paused, first);
    replace(&mut clocks, index, next);
    let mut due = [const { None }; CLOCKS];
    if !paused {
        overdue(&mut clocks, sid, cpu, &mut due);
    }
    CLOCK.with(|c| c.set(clocks));
    if paused {
        return;
    }
    let (pc, sp, bp) = registers(ctx);
    let thread = who();
    let mine = Due {
        slot,
        sid,
        generation,
        weight,
    };
    if due.iter().all(Option::is_none) && DRAIN_RUNNING.load(Ordering::Relaxed) {
        // The common case: one session, its stack walked straight into the ring.
        let kept = push(sid, generation, thread, weight, |frames| {
            walk(pc, sp, bp, frames)
        });
        mine.count(kept);
        return;
    }
    let mut frames = [0u64; MAX_DEPTH];
    let (depth, shape) = walk(pc, sp, bp, &mut frames);
    let stack = frames.get(..depth).unwrap_or_default();
    mine.keep(thread, stack, shape);
    for d in due.iter().flatten() {
        d.keep(thread, stack, shape);
        d.slot.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One sample to keep for one session.
struct Due {
    slot: &'static Slot,
    sid: u64,
    generation: u32,
    weight: u64,
}

impl Due {
    /// Keeps the sample with `stack`: in the handler's table while no drain thread runs,
    /// else (or when the table is full) in the ring.
    fn keep(&self, thread: Thread, stack: &[u64], shape: Shape) {
        let in_table = !DRAIN_RUNNING.load(Ordering::Relaxed)
            && TABLE
                .get()
                .is_some_and(|t| t.add(self.sid, self.generation, thread, stack, self.weight));
        let kept = if in_table {
            Some(shape)
        } else {
            push(self.sid, self.generation, thread, self.weight, |dst| {
                if let Some(dst) = dst.get_mut(..stack.len()) {
                    dst.copy_from_slice(stack);
                }
                (stack.len(), shape)
            })
        };
        self.count(kept);
    }

    /// Counts what became of the sample.
    fn count(&self, kept: Option<Shape>) {
        let slot = self.slot;
        match kept {
            None => {
                slot.lost.fetch_add(1, Ordering::Relaxed);
                slot.lost_ns.fetch_add(self.weight, Ordering::Relaxed);
            }
            Some(Shape::LeafOnly) => {
                slot.truncated.fetch_add(1, Ordering::Relaxed);
            }
            Some(Shape::Cut) => {
                slot.cut.fetch_add(1, Ordering::Relaxed);
            }
            Some(Shape::Whole) => {}
        }
    }
}

/// The thread's other sessions whose own signal is overdue, sampled now with this one's
/// stack: their clocks move on, and each is entered in `due` with its slot held (its
/// `inflight` raised: the caller lowers it once the sample is kept).
///
/// A session samples a thread through its own perf event, whose overflow the kernel
/// sends as `SIGTRAP` when the thread next returns to user space; `SIGTRAP` is not queued,
/// so when two sessions' events overflow before that return (a long system call or page
/// fault, both events started together in a new thread) one signal is dropped. A session
/// whose clock on this thread has run a whole period with no sample of its own lost its
/// signal that way (its own would have come already): this signal stands in for it.
fn overdue(clocks: &mut [Clock; CLOCKS], sid: u64, cpu: u64, due: &mut [Option<Due>; CLOCKS]) {
    let mut n = 0;
    for c in clocks.iter_mut() {
        if c.sid == 0 || c.sid == sid {
            continue;
        }
        let period = slot_for(c.sid).map_or(0, |s| s.period_ns.load(Ordering::Relaxed));
        if cpu.saturating_sub(c.last) < period.max(1) {
            continue;
        }
        // Timer sessions' signals are queued, never dropped: only perf sessions are held.
        let Some(other) = hold_inherited(c.sid) else {
            continue;
        };
        // Paused, the lost sample would have dropped the CPU so far, as `take` does.
        let paused = other.paused.load(Ordering::Acquire) != 0;
        let (weight, next) = weigh(*c, c.sid, cpu, paused, First::No);
        *c = next;
        let Some(entry) = due.get_mut(n).filter(|_| !paused) else {
            other.inflight.fetch_sub(1, Ordering::SeqCst);
            continue;
        };
        *entry = Some(Due {
            slot: other,
            sid: c.sid,
            generation: other.generation.load(Ordering::Acquire),
            weight,
        });
        n = n.saturating_add(1);
    }
}

/// What became of a sample's stack.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    Whole,
    /// Deeper than a sample holds: the middle frames gave way to a marker.
    Cut,
    /// No unwind cache was free: the leaf alone, all we can get safely.
    LeafOnly,
}

/// Walks the interrupted stack into `frames`.
pub(crate) fn walk(pc: u64, sp: u64, bp: u64, frames: &mut [u64; MAX_DEPTH]) -> (usize, Shape) {
    match unwind::walk(pc, sp, bp, frames) {
        Some(w) if w.cut => (w.depth, Shape::Cut),
        Some(w) => (w.depth, Shape::Whole),
        None => {
            frames[0] = pc;
            (1, Shape::LeafOnly)
        }
    }
}

/// Walks the calling thread's own stack (an allocation being sampled, not a signal): the
/// first frame is in this function, the others are return addresses. Safe to call from an
/// allocator: it allocates nothing.
#[inline(never)]
pub(crate) fn capture_stack(frames: &mut [u64; MAX_DEPTH]) -> usize {
    let (pc, sp, bp): (u64, u64, u64);
    // SAFETY: copies rip, rsp and rbp into registers; reads and writes no memory.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    // Not a signal handler: when every unwind cache is taken (threads preempted mid-walk),
    // wait for one rather than keep a leaf that would be trimmed away. The registers stay
    // valid: this frame and its callers are not touched while we wait below them.
    for _ in 0..1000 {
        if let Some(w) = unwind::walk(pc, sp, bp, frames) {
            return w.depth;
        }
        std::thread::yield_now();
    }
    walk(pc, sp, bp, frames).0
}

/// Pushes one sample into the ring, its frames written in place by `fill`, which returns
/// `(depth, shape)`. `None` when the ring is full.
fn push(
    sid: u64,
    generation: u32,
    thread: Thread,
    weight: u64,
    fill: impl FnOnce(&mut [u64; MAX_DEPTH]) -> (usize, Shape),
) -> Option<Shape> {
    let ring = RING.get()?;
    let mut shape = Shape::Whole;
    let pushed = ring.push_with(|s| {
        s.sid = sid;
        s.thread = thread;
        s.generation = generation;
        s.weight_ns = weight;
        let (depth, how) = fill(&mut s.frames);
        s.depth = depth as u32;
        shape = how;
    });
    pushed.then_some(shape)
}

/// pc, sp and frame pointer of the interrupted context.
pub(crate) fn registers(ctx: *mut libc::c_void) -> (u64, u64, u64) {
    // SAFETY: with SA_SIGINFO the third handler argument is the interrupted ucontext_t.
    let gregs = unsafe { &(*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs };
    let reg = |r: libc::c_int| gregs.get(r as usize).map_or(0, |&v| v as u64);
    (reg(libc::REG_RIP), reg(libc::REG_RSP), reg(libc::REG_RBP))
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

    const S: u64 = 7;

    fn clock(last: u64, active: u64, since: u64) -> Clock {
        Clock {
            sid: S,
            last,
            active,
            since,
        }
    }

    #[test]
    fn a_sample_weighs_the_cpu_since_the_previous_one() {
        let (w, next) = weigh(clock(100, 0, 0), S, 350, false, First::No);
        assert_eq!(w, 250);
        assert_eq!(next, clock(350, 0, 0));
    }

    #[test]
    fn pause_and_resume_on_the_thread_bank_only_unpaused_cpu() {
        // Paused by this thread after 40 ns of unpaused CPU (banked in `active`).
        let paused = clock(100, 40, PAUSED);
        // A sample while paused is not recorded; the bank waits, `last` moves.
        let (_, next) = weigh(paused, S, 500, true, First::No);
        assert_eq!(next, clock(500, 40, PAUSED));
        // Resumed at 600: the next sample at 700 weighs the bank + 100.
        let resumed = Clock { since: 600, ..next };
        let (w, next) = weigh(resumed, S, 700, false, First::No);
        assert_eq!(w, 140);
        assert_eq!(next, clock(700, 0, 0));
    }

    #[test]
    fn another_threads_pause_drops_the_interval() {
        // The session is paused by another thread: this sample is dropped, and so is the
        // CPU up to it (`last` moves, nothing banked).
        let (_, next) = weigh(clock(100, 0, 0), S, 400, true, First::No);
        assert_eq!(next, clock(400, 0, 0));
        let (w, _) = weigh(next, S, 450, false, First::No);
        assert_eq!(w, 50);
    }

    #[test]
    fn first_samples_of_a_thread() {
        let none = Clock {
            sid: 0,
            last: 0,
            active: 0,
            since: 0,
        };
        // Born in the session: all its CPU.
        assert_eq!(weigh(none, S, 900, false, First::Since(0)).0, 900);
        // Found running by a threads=all session at 600.
        assert_eq!(weigh(none, S, 900, false, First::Since(600)).0, 300);
        // Sampled before for other sessions: at most one period.
        let unknown = First::Unknown {
            latest: 100,
            nominal: 50,
        };
        assert_eq!(weigh(none, S, 900, false, unknown).0, 50);
        let (_, next) = weigh(none, S, 900, false, unknown);
        assert_eq!(next, clock(900, 0, 0));
    }

    #[test]
    fn clocks_going_backwards_or_extreme_values_never_panic() {
        for (last, active, since, cpu) in [
            (u64::MAX, 0, 0, 0),
            (0, u64::MAX, 0, u64::MAX),
            (5, u64::MAX, 1, u64::MAX),
            (u64::MAX - 1, 3, u64::MAX - 1, 2),
        ] {
            let c = clock(last, active, since);
            for paused in [false, true] {
                for first in [
                    First::No,
                    First::Since(u64::MAX),
                    First::Unknown {
                        latest: u64::MAX,
                        nominal: u64::MAX,
                    },
                ] {
                    // Debug builds check overflow: any unchecked step would panic here.
                    let (w, _) = weigh(c, S, cpu, paused, first);
                    assert!(w <= cpu.saturating_add(active), "{w} from {c:?} at {cpu}");
                }
            }
        }
    }
}
