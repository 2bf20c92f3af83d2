//! The drain: moving samples from the ring (and counts from the stack table) into each
//! session's aggregate, on a thread of its own once the process has one, or on the
//! session's thread at its pauses and finish.

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::signal;
use super::signal::ring::{Pop, Ring};
use crate::aggregate::Aggregate;
use crate::error::{Error, Repr};
use crate::stack::Thread;

/// Samples buffered between drains: 1024 × ~1 KiB.
pub(super) const RING_CAPACITY: usize = 1024;

/// What the engine and the drain thread share: the aggregates, the drain thread's wake-up,
/// and the number of sessions open (none: the drain thread sleeps until woken).
pub(super) struct Engine_ {
    pub(super) drain: Mutex<Drain>,
    pub(super) wake: Condvar,
    pub(super) active: AtomicUsize,
}

/// Work the drain thread does first, while the first profile runs (opening the binary's
/// debug info): given by the layer above, which owns symbolization.
static IDLE_WORK: OnceLock<fn()> = OnceLock::new();

/// Sets the work a drain thread does before its first drain.
pub(crate) fn on_drain_start(work: fn()) {
    let _ = IDLE_WORK.set(work);
}

/// The drain thread, which `threads=all` does not sample (its work is profiled's own).
pub(super) static DRAIN_TID: AtomicI32 = AtomicI32::new(0);
/// The module generation the unwinder was last checked against.
static MODULES_CHECKED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Builds the unwinder for the loaded objects, or rebuilds it when objects were loaded or
/// unloaded since: at every session start, and from the drain thread while sessions run, so
/// that stacks through a library `dlopen`ed during a test unwind past it. Serialized: two
/// rebuilds racing could leave the older list installed.
pub(crate) fn prepare_unwinder() {
    static PREPARING: Mutex<()> = Mutex::new(());
    let generation = super::modules::generation();
    if MODULES_CHECKED.load(Ordering::Acquire) == generation {
        return;
    }
    let _one = PREPARING.lock().unwrap_or_else(|p| p.into_inner());
    let generation = super::modules::generation();
    if MODULES_CHECKED.swap(generation, Ordering::AcqRel) != generation {
        let modules = super::modules::loaded();
        super::modules::remember(&modules);
        signal::unwind::prepare(&modules, generation);
    }
}

/// The drain wakes often enough that the ring, at the rate samples arrived lately, is a
/// quarter full at most: every 4 ms at 1 kHz on 64 busy cores, at the longest interval for a
/// test or two on a laptop, where waking 200 times a second would cost more than sampling.
const DRAIN_FIRST: Duration = Duration::from_millis(5);
const DRAIN_MIN: Duration = Duration::from_millis(1);
const DRAIN_MAX: Duration = Duration::from_millis(50);

/// The consumer side of the ring and what it has drained so far.
pub(super) struct Drain {
    pub(super) sessions: HashMap<u64, Aggregate>,
    /// Each thread's latest sampled stack, in any session: where its last stretch, which no
    /// sample follows (`signal::thread_ends`), is charged.
    pub(super) latest: HashMap<Thread, Vec<u64>>,
}

/// Threads whose latest stack [`Drain::latest`] keeps before it starts over (1 KiB each at
/// most): a process that runs for ever, spawning threads, must not grow it for ever.
const LATEST_THREADS: usize = 1024;

impl Drain {
    /// Notes `stack` as `thread`'s latest.
    fn sampled(&mut self, thread: Thread, stack: &[u64]) {
        if self.latest.len() >= LATEST_THREADS && !self.latest.contains_key(&thread) {
            self.latest.clear();
        }
        let latest = self.latest.entry(thread).or_default();
        latest.clear();
        latest.extend_from_slice(stack);
    }
}

/// Starts the drain thread once the process has more than one thread. A single-threaded
/// process stays single-threaded: its first `pthread_create` would switch glibc's malloc to
/// its locking paths for good and change what the profile measures. Until a drain thread
/// runs, handlers aggregate into the table and sessions drain it themselves (at pause,
/// reset and finish).
pub(super) fn ensure_drain_thread(engine: &'static Engine_) -> Result<(), Error> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Some(done) = STARTED.get() {
        return done
            .clone()
            .map_err(|what| Error::from(Repr::Unsupported { what }));
    }
    if process_threads() <= 1 {
        return Ok(());
    }
    STARTED
        .get_or_init(|| {
            std::thread::Builder::new()
                .name("profiled-drain".into())
                .spawn(move || {
                    crate::membership::own_thread();
                    drain_loop(engine)
                })
                .map(|_| signal::drain_started())
                .map_err(|e| format!("cannot start the drain thread: {e}"))
        })
        .clone()
        .map_err(|what| Error::from(Repr::Unsupported { what }))
}

/// Threads in this process now (`num_threads` of /proc/self/stat); 0 if unreadable, which
/// counts as "has threads".
fn process_threads() -> usize {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces; the
    // thread count is field 20, the 18th after it.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(17)?.parse().ok())
        .unwrap_or(usize::MAX)
}

pub(super) fn lock(engine: &Engine_) -> MutexGuard<'_, Drain> {
    // A panic while holding the lock leaves the maps consistent (each insert is atomic).
    engine.drain.lock().unwrap_or_else(|p| p.into_inner())
}

fn drain_loop(engine: &Engine_) {
    // SAFETY: gettid has no preconditions.
    DRAIN_TID.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    if let Some(work) = IDLE_WORK.get() {
        work();
    }
    let mut guard = lock(engine);
    let mut every = DRAIN_FIRST;
    loop {
        if engine.active.load(Ordering::Acquire) == 0 {
            guard = engine.wake.wait(guard).unwrap_or_else(|p| p.into_inner());
            every = DRAIN_FIRST;
            continue;
        }
        let drained = drain_into(&mut guard, false);
        let capacity = signal::ring().map_or(RING_CAPACITY, Ring::capacity);
        every = next_interval(every, drained, capacity);
        drop(guard);
        let new_code = signal::unwind::sleep_unless_new_code(every);
        prepare_unwinder();
        if new_code {
            signal::unwind::new_code_looked_at();
        }
        guard = lock(engine);
    }
}

/// The next sleep after `drained` samples arrived during `every`: long enough to batch,
/// short enough that at that rate a quarter of the ring fills at most.
fn next_interval(every: Duration, drained: usize, capacity: usize) -> Duration {
    let quarter = (capacity / 4).max(1) as u32;
    let fill_time = match drained {
        0 => DRAIN_MAX,
        n => every.saturating_mul(quarter) / n as u32,
    };
    fill_time.clamp(DRAIN_MIN, DRAIN_MAX)
}

/// Moves samples from the ring into their sessions' aggregates and says how many it took.
/// With `complete`, waits out cells that a handler is still filling, so everything pushed
/// before the call is taken.
pub(super) fn drain_into(drain: &mut Drain, complete: bool) -> usize {
    let mut taken = 0;
    if let Some(table) = signal::table() {
        table.drain(|(sid, generation, thread, stack, count, weight)| {
            if let Some(agg) = drain.sessions.get_mut(&sid) {
                if generation >= agg.floor {
                    agg.add(thread, stack, count, weight);
                }
            }
            drain.sampled(thread, stack);
            taken += 1;
        });
    }
    let Some(ring) = signal::ring() else {
        return taken;
    };
    loop {
        let more = ring.pop_with(|pop| match pop {
            Pop::Sample(s) => {
                let stack = &s.frames[..s.depth as usize];
                if let Some(agg) = drain.sessions.get_mut(&s.sid) {
                    if s.generation >= agg.floor {
                        if s.depth > 0 {
                            agg.add(s.thread, stack, 1, s.weight_ns);
                        } else if let Some(latest) = drain.latest.get(&s.thread) {
                            // A thread's last stretch (`signal::thread_ends`): no sample of
                            // its own, its time joins the thread's latest stack.
                            agg.add(s.thread, latest, 0, s.weight_ns);
                        }
                    }
                }
                if s.depth > 0 {
                    drain.sampled(s.thread, stack);
                }
                taken += 1;
                true
            }
            Pop::Empty => false,
            Pop::Busy => {
                if complete {
                    std::thread::yield_now();
                }
                complete
            }
        });
        if !more {
            return taken;
        }
    }
}

/// Without a drain thread, the session's own thread drains at its pauses (criterion pauses
/// after every timed batch) once the ring, which takes only what the table could not, is a
/// quarter full. Not before: the table keeps counting in place, and a drain allocates from
/// the heap the measured code is using, which would change what it measures.
pub(super) fn drain_here(engine: &Engine_) {
    if signal::drain_running() {
        return;
    }
    let Some(ring) = signal::ring() else { return };
    if ring.len() < ring.capacity() / 4 {
        return;
    }
    drain_into(&mut lock(engine), false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_interval_follows_the_sample_rate() {
        let ms = Duration::from_millis;
        // 1 kHz on one thread: 5 samples per 5 ms; a quarter ring (256) takes 256 ms.
        assert_eq!(next_interval(ms(5), 5, 1024), DRAIN_MAX);
        assert_eq!(next_interval(ms(5), 0, 1024), DRAIN_MAX);
        // 64 busy cores at 1 kHz: 320 per 5 ms, a quarter ring in 4 ms.
        assert_eq!(next_interval(ms(5), 320, 1024), ms(4));
        // A full ring in 50 ms: a quarter fills in 12.5 ms.
        assert_eq!(
            next_interval(ms(50), 1024, 1024),
            ms(12) + Duration::from_micros(500)
        );
        assert_eq!(next_interval(ms(1), 1024, 1024), DRAIN_MIN);
    }
}
