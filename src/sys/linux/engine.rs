//! Sessions on Linux x86_64: setting the engine up, slot claiming, source selection,
//! reset, pause and finish. The drain is src/sys/linux/drain.rs; what a session is measured
//! against, src/sys/linux/meter.rs.

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use super::drain::{
    DRAIN_TID, Drain, Engine_, RING_CAPACITY, drain_here, drain_into, ensure_drain_thread, lock,
    prepare_unwinder,
};
use super::meter::{meter, span, span_now};
use super::perf::PerfEvent;
use super::signal::{self, MAX_SLOTS, Slot};
use super::timer::{self, CpuTimer};
use crate::aggregate::{Aggregate, Collected, Source};
use crate::config::{Engine, Threads};
use crate::error::{Error, Repr};

/// Distinct stacks aggregated in the handler while no drain thread runs: 4096 × ~1 KiB of
/// address space, of which only entries in use cost memory.
const TABLE_CAPACITY: usize = 4096;

pub(super) static ENGINE: OnceLock<Result<Engine_, String>> = OnceLock::new();
static NEXT_SID: AtomicU64 = AtomicU64::new(1);
static PERF_REFUSED: OnceLock<String> = OnceLock::new();
/// The process that set the engine up. A child forked while profiles run inherits their
/// state (and, at the moment of the fork, possibly a held drain lock and no drain thread);
/// it must not finish, reset or disable what belongs to the parent.
pub(super) static ENGINE_PID: AtomicU32 = AtomicU32::new(0);

/// Serializes session starts against the `threads=all` exclusivity check.
static STARTING: Mutex<()> = Mutex::new(());
/// Session id of the `threads=all` session running, 0 if none.
static EXCLUSIVE: AtomicU64 = AtomicU64::new(0);
/// Whether that session refuses company: a test's `threads=all` profile does (other tests'
/// threads would be in it), the `/debug/pprof/profile` endpoint's does not.
static ALONE: AtomicBool = AtomicBool::new(false);

/// Whether this is a child forked after the engine started.
pub(crate) fn forked() -> bool {
    let pid = ENGINE_PID.load(Ordering::Relaxed);
    pid != 0 && pid != super::process_id()
}

/// One-time process set-up: ring, table, handlers, and the drain thread if the process
/// already has threads. Only reached when a profile starts.
fn engine() -> Result<&'static Engine_, Error> {
    let engine = ENGINE.get_or_init(|| {
        // With the test hooks, PROFILED_RING_CAPACITY (a power of two) lets a test force an
        // overflow.
        #[cfg(feature = "__test-hooks")]
        let capacity = std::env::var("PROFILED_RING_CAPACITY")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .filter(|c| c.is_power_of_two())
            .unwrap_or(RING_CAPACITY);
        #[cfg(not(feature = "__test-hooks"))]
        let capacity = RING_CAPACITY;
        signal::make_buffers(capacity, TABLE_CAPACITY);
        ENGINE_PID.store(std::process::id(), Ordering::Relaxed);
        // Everything the handler touches is ready before it is installed.
        prepare_unwinder();
        signal::install()
            .map_err(|e| format!("cannot install the sampling signal handlers: {e}"))?;
        Ok(Engine_ {
            drain: Mutex::new(Drain {
                sessions: HashMap::default(),
                latest: HashMap::default(),
            }),
            wake: Condvar::new(),
            active: AtomicUsize::new(0),
        })
    });
    let engine = engine
        .as_ref()
        .map_err(|e| Error::from(Repr::Unsupported { what: e.clone() }))?;
    ensure_drain_thread(engine)?;
    Ok(engine)
}

/// The handlers installed and the unwinder ready, without a session (thread dumps).
pub(crate) fn ready() -> Result<(), Error> {
    engine()?;
    prepare_unwinder();
    Ok(())
}

/// The sources a session armed: the starting thread's first, then (with `threads=all`) one
/// per other thread of the process. Dropping them stops sampling.
enum Armed {
    Perf(Vec<PerfEvent>),
    Timer(#[allow(dead_code)] Vec<CpuTimer>),
}

/// One profile being collected.
pub(crate) struct Session {
    sid: u64,
    slot: &'static Slot,
    armed: Option<Armed>,
    /// Counts the session thread's own CPU time beside the sampling event (perf, one thread).
    own_count: Option<PerfEvent>,
    source: Source,
    period_ns: u64,
    /// The period the session samples at: `period_ns`, or near it, apart from the others'.
    sampling_ns: u64,
    start: SystemTime,
    started: Instant,
    /// Why perf events were refused, when `engine=auto` fell back to the timer.
    fallback: Option<String>,
}

impl Session {
    /// Starts sampling the calling thread (and, with perf events, threads it spawns from now
    /// on) at `frequency` Hz of CPU time; with `Threads::All`, every thread of the process,
    /// and then `alone` says whether other profiles may run meanwhile.
    pub(crate) fn start(
        frequency: u32,
        engine_choice: Engine,
        threads: Threads,
        alone: bool,
    ) -> Result<Session, Error> {
        let engine = engine()?;
        prepare_unwinder();
        let period_ns = 1_000_000_000 / u64::from(frequency.max(1));
        let starting = STARTING.lock().unwrap_or_else(|p| p.into_inner());
        exclusive_check(engine, threads, alone)?;
        let (sid, slot) = claim()?;
        let sampling_ns = apart(period_ns, &signal::periods_beside(slot));
        slot.prepare(sampling_ns, threads == Threads::All);
        lock(engine).sessions.insert(sid, Aggregate::default());
        signal::mark_thread(sid);
        let others = if threads == Threads::All {
            ALONE.store(alone, Ordering::Relaxed);
            EXCLUSIVE.store(sid, Ordering::Relaxed);
            record_thread_starts()
        } else {
            Vec::new()
        };
        slot.open(sid);
        let mut own_count = None;
        let armed = match arm(engine_choice, sampling_ns, sid, &others) {
            Ok(a) => a,
            Err(e) => {
                release(engine, slot, sid);
                end_exclusive(sid);
                return Err(e);
            }
        };
        let source = match &armed {
            Armed::Perf(events) => {
                // Threads spawned from now on are sampled from birth.
                slot.inherit();
                // The kernel's counts calibrate the total; with `threads=all` there is one
                // event per thread, and the thread clocks' weights stand as they are.
                if let [event] = events.as_slice() {
                    own_count = PerfEvent::count_own().ok();
                    meter(sid).start(event, own_count.as_ref());
                }
                Source::Perf
            }
            Armed::Timer(_) => Source::Timer,
        };
        // Said as data, for the layer that owns the terminal to print.
        let fallback = (source == Source::Timer && engine_choice == Engine::Auto)
            .then(|| PERF_REFUSED.get().cloned())
            .flatten();
        span(sid).restart(span_now(), true);
        if engine.active.fetch_add(1, Ordering::AcqRel) == 0 {
            engine.wake.notify_all();
        }
        drop(starting);
        Ok(Session {
            sid,
            slot,
            armed: Some(armed),
            own_count,
            source,
            period_ns,
            sampling_ns,
            start: SystemTime::now(),
            started: Instant::now(),
            fallback,
        })
    }

    pub(crate) fn sid(&self) -> u64 {
        self.sid
    }

    /// Stops sampling and returns everything collected since the last reset.
    pub(crate) fn finish(mut self) -> Collected {
        let engine = engine().expect("a session exists, so the engine started");
        let duration = self.started.elapsed();
        let meter = meter(self.sid);
        if !self.slot.is_paused() {
            meter.bank();
            span(self.sid).bank(span_now());
        }
        let measured = meter.stop();
        let [active_ns, process_cpu_ns] = span(self.sid).counted();
        // 1. No new signals for this session.
        drop(self.armed.take());
        drop(self.own_count.take());
        // 2. No handler will take a sample for it; wait for those already inside.
        self.slot.close();
        // 3. Everything it pushed is in the ring now.
        let mut drain = lock(engine);
        drain_into(&mut drain, true);
        let stacks = drain
            .sessions
            .remove(&self.sid)
            .map(|a| a.stacks)
            .unwrap_or_default();
        drop(drain);
        end_exclusive(self.sid);
        let losses = self.slot.losses();
        let collected = Collected {
            perf_refused: self.fallback.take(),
            process_cpu_ns,
            stacks,
            lost: losses.lost,
            lost_ns: losses.lost_ns,
            truncated: losses.truncated,
            cut: losses.cut,
            measured,
            source: self.source,
            period_ns: self.period_ns,
            sampling_ns: self.sampling_ns,
            start: self.start,
            duration,
            active: Duration::from_nanos(active_ns),
        };
        self.slot.free();
        close(engine);
        collected
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if forked() {
            // The event and timer belong to the parent: closing our copy of the fd is
            // harmless, but disabling it would stop the parent's profile.
            std::mem::forget(self.armed.take());
            return;
        }
        if self.armed.is_some() {
            // Dropped without finish (e.g. a failed write path): release the slot.
            meter(self.sid).stop();
            drop(self.armed.take());
            drop(self.own_count.take());
            if let Ok(engine) = engine() {
                release(engine, self.slot, self.sid);
                close(engine);
            }
            end_exclusive(self.sid);
        }
    }
}

/// Refuses a `threads=all` session while others run, and any session while one runs: a
/// profile of every thread would take the other profiles' samples (and they its).
fn exclusive_check(engine: &Engine_, threads: Threads, alone: bool) -> Result<(), Error> {
    let refuse = |what: String| Error::from(Repr::Unsupported { what });
    let all = EXCLUSIVE.load(Ordering::Relaxed);
    if all != 0 && (threads == Threads::All || ALONE.load(Ordering::Relaxed)) {
        return Err(refuse(
            "another profile samples every thread of the process (threads=all) and must run \
             alone; run profiled tests one at a time (--test-threads=1, profiled's harness, \
             or cargo nextest)"
                .into(),
        ));
    }
    let open = engine.active.load(Ordering::Acquire);
    if threads == Threads::All && alone && open > 0 {
        return Err(refuse(format!(
            "threads=all samples every thread of the process, so it must be the only profile \
             running, but {open} other profile(s) are open; run profiled tests one at a time \
             (--test-threads=1, profiled's harness, or cargo nextest)"
        )));
    }
    Ok(())
}

fn end_exclusive(sid: u64) {
    if EXCLUSIVE
        .compare_exchange(sid, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        signal::clear_starts();
    }
}

/// Lists the process's other threads (not the caller, not the drain) and records each one's
/// CPU time now (`signal::set_starts`), where their first samples look it up.
fn record_thread_starts() -> Vec<libc::pid_t> {
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let drain = DRAIN_TID.load(Ordering::Relaxed);
    let mut tids = super::thread_ids().unwrap_or_default();
    tids.retain(|&tid| tid != me && tid != drain);
    signal::set_starts(
        tids.iter()
            .filter_map(|&tid| Some((tid, timer::thread_cpu_ns(tid)?))),
    );
    tids
}

/// One session fewer. The last one out empties the stack table: with no session open no
/// handler can be adding to it (each session waited out its handlers), and starts wait.
fn close(engine: &Engine_) {
    let _starting = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if engine.active.fetch_sub(1, Ordering::AcqRel) == 1 {
        if let Some(table) = signal::table() {
            table.clear();
        }
        lock(engine).latest = HashMap::default();
    }
}

fn claim() -> Result<(u64, &'static Slot), Error> {
    for _ in 0..4 {
        if let Some(claimed) = signal::claim(NEXT_SID.fetch_add(1, Ordering::Relaxed)) {
            return Ok(claimed);
        }
    }
    Err(Error::from(Repr::TooManyProfiles { limit: MAX_SLOTS }))
}

fn release(engine: &Engine_, slot: &Slot, sid: u64) {
    slot.close();
    lock(engine).sessions.remove(&sid);
    slot.free();
}

/// The sampling period for a new session that asked for `period_ns`, beside sessions
/// sampling at `live` periods: the requested one, or the nearest within ±10 % (in 1 %
/// steps) that is 2 % clear of every live period and of its multiples; the clearest one
/// when none is.
///
/// Each perf session's event signals its thread with `SIGTRAP`, and a signal still pending
/// swallows the next one. A thread spawned inside two sessions (a test's and a whole-run or
/// endpoint profile's) starts both events' clocks at once: at equal periods, or one a
/// multiple of the other, they would fall due together for the thread's life and one
/// session would lose its samples. Periods apart by 2 % drift apart by 2 % of a period a
/// sample, so two signals meet once in a while (a lost signal's time goes to the next
/// sample, which weighs the CPU since the previous one), never for long.
fn apart(period_ns: u64, live: &[u64]) -> u64 {
    /// 2 %, in the hundredths of a percent `clearance` gives.
    const CLEAR: u64 = 200;
    const STEPS: i64 = 10;
    // How closely `p` meets `q` or a multiple of one in the other, in hundredths of a
    // percent of the shorter period (5000 is as far apart as periods get).
    let clearance = |p: u64, q: u64| {
        let (short, long) = (p.min(q).max(1), p.max(q));
        let off = long % short;
        off.min(short - off).saturating_mul(10_000) / short
    };
    let worst = |p: u64| {
        live.iter()
            .map(|&q| clearance(p, q))
            .min()
            .unwrap_or(u64::MAX)
    };
    let candidates = (0..=STEPS).flat_map(|k| [k, -k]).map(|k| {
        let delta = i128::from(period_ns) * i128::from(k) / 100;
        u64::try_from(i128::from(period_ns) + delta)
            .unwrap_or(period_ns)
            .max(1)
    });
    let mut best = (period_ns, 0);
    for p in candidates {
        let clear = worst(p);
        if clear >= CLEAR {
            return p;
        }
        if clear > best.1 {
            best = (p, clear);
        }
    }
    best.0
}

/// Arms the chosen source on the calling thread, then on each of `others` (threads that
/// exited meanwhile are skipped).
fn arm(choice: Engine, period_ns: u64, sid: u64, others: &[libc::pid_t]) -> Result<Armed, Error> {
    let timers = || {
        let main = CpuTimer::start(period_ns, sid).map_err(|source| {
            Error::from(Repr::Sampler {
                what: "timer_create(CLOCK_THREAD_CPUTIME_ID)",
                source,
            })
        })?;
        let rest = others
            .iter()
            .filter_map(|&tid| CpuTimer::start_for(tid, period_ns, sid).ok());
        Ok(Armed::Timer(std::iter::once(main).chain(rest).collect()))
    };
    let perf = |main: PerfEvent| {
        let rest = others
            .iter()
            .filter_map(|&tid| PerfEvent::open_on(tid, period_ns, sid).ok());
        Armed::Perf(std::iter::once(main).chain(rest).collect())
    };
    match choice {
        Engine::Timer => timers(),
        Engine::Perf => PerfEvent::open(period_ns, sid).map(perf).map_err(|source| {
            Error::from(Repr::Sampler {
                what: "perf_event_open(task-clock, sigtrap)",
                source,
            })
        }),
        Engine::Auto => {
            if PERF_REFUSED.get().is_none() {
                match PerfEvent::open(period_ns, sid) {
                    Ok(event) => return Ok(perf(event)),
                    Err(e) => {
                        let _ = PERF_REFUSED.set(e.to_string());
                    }
                }
            }
            timers()
        }
    }
}

/// Whether session `sid` is still collecting.
pub(crate) fn is_live(sid: u64) -> bool {
    signal::running(sid).is_some()
}

/// Discards everything sampled so far in session `sid`.
pub(crate) fn reset(sid: u64) {
    if forked() {
        return;
    }
    let Some(slot) = signal::running(sid) else {
        return;
    };
    let Ok(engine) = engine() else { return };
    let mut drain = lock(engine);
    let generation = slot.next_generation();
    if let Some(agg) = drain.sessions.get_mut(&sid) {
        agg.clear(generation);
    }
    meter(sid).restart(true);
    span(sid).restart(span_now(), true);
}

/// Stops recording samples of session `sid` until the matching [`resume`].
pub(crate) fn pause(sid: u64) {
    if let Some(slot) = signal::running(sid) {
        signal::thread_pauses(sid);
        if slot.pause() {
            meter(sid).bank();
            span(sid).bank(span_now());
        }
        // A forked child leaves the parent's ring alone.
        if let (false, Some(Ok(engine))) = (forked(), ENGINE.get()) {
            drain_here(engine);
        }
    }
}

/// Ends one [`pause`].
pub(crate) fn resume(sid: u64) {
    if let Some(slot) = signal::running(sid) {
        if slot.resume() {
            meter(sid).restart(false);
            span(sid).restart(span_now(), false);
            signal::thread_resumes(sid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_sample_apart_from_each_other() {
        let ms = 1_000_000;
        // Alone: as asked.
        assert_eq!(apart(ms, &[]), ms);
        // Beside one at the same rate: 2 % apart; beside two, the other side.
        assert_eq!(apart(ms, &[ms]), ms + ms / 50);
        assert_eq!(apart(ms, &[ms, ms + ms / 50]), ms - ms / 50);
        // One rate a multiple of the other: their signals would meet at every second one.
        assert_eq!(apart(2 * ms, &[ms]), 2 * ms + 2 * ms / 100);
        assert_eq!(apart(ms / 2, &[ms]), ms / 2 - ms / 200);
        // Already apart: unchanged.
        assert_eq!(apart(ms, &[ms * 3 / 2]), ms);
        // More sessions than places 2 % apart: the clearest place, 1 % from the others.
        let crowd: Vec<u64> = (-5..=5)
            .map(|k| (ms as i64 + k * ms as i64 / 50) as u64)
            .collect();
        let p = apart(ms, &crowd);
        assert!(crowd.iter().all(|&q| q.abs_diff(p) >= ms / 100), "{p}");
    }
}
