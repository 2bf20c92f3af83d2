//! What a session's note and calibration are measured against: the kernel's counts
//! (`Meter`) and the wall and process CPU time (`Stretches`) over a session's unpaused
//! stretches since its last reset.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use super::perf::{PerfEvent, read_count};
use super::signal::MAX_SLOTS;
use super::timer;
use crate::aggregate::{Measured, OwnThread};

/// What a perf session's total is calibrated to, summed over its unpaused stretches; kept
/// apart from the handler's [`Slot`], which never reads it.
///
/// The sampling event counts the CPU time of every thread the session samples, but its
/// clock also runs while the hypervisor has taken the CPU away (steal time): on a busy host
/// it over-counts by that much, where the threads' CPU clocks (and the sample weights, read
/// from them) do not. So the session thread is counted twice more, by an event of its own
/// and by its CPU clock (their ratio tells its steal share), and the machine's steal ticks
/// are read at start and end, for the spawned threads when the session thread ran too
/// little to tell.
pub(super) struct Meter {
    /// The sampling event's fd and the own-thread counting event's; -1 when not counting.
    all_fd: AtomicI32,
    own_fd: AtomicI32,
    /// The session's thread, whose CPU clock is read (by any thread) beside the events.
    tid: AtomicI32,
    /// The readings (the sampling event's count, the own-thread event's, the thread's CPU
    /// clock) summed over unpaused stretches.
    stretches: Stretches<3>,
    /// The machine's steal and busy clock ticks (/proc/stat) when the session started.
    machine: [AtomicU64; 2],
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_METER: Meter = Meter {
    all_fd: AtomicI32::new(-1),
    own_fd: AtomicI32::new(-1),
    tid: AtomicI32::new(0),
    stretches: Stretches::NEW,
    machine: [const { AtomicU64::new(0) }; 2],
};

static METERS: [Meter; MAX_SLOTS] = [NO_METER; MAX_SLOTS];

pub(super) fn meter(sid: u64) -> &'static Meter {
    &METERS[sid as usize % MAX_SLOTS]
}

impl Meter {
    /// Starts counting with the session's sampling event and, if it opened, the calling
    /// thread's own counting event.
    pub(super) fn start(&self, all: &PerfEvent, own: Option<&PerfEvent>) {
        // SAFETY: gettid has no preconditions.
        self.tid.store(unsafe { libc::gettid() }, Ordering::Relaxed);
        self.own_fd
            .store(own.map_or(-1, PerfEvent::fd), Ordering::Relaxed);
        self.all_fd.store(all.fd(), Ordering::Release);
        let [steal, busy] = machine_ticks().unwrap_or_default();
        self.machine[0].store(steal, Ordering::Relaxed);
        self.machine[1].store(busy, Ordering::Relaxed);
        self.restart(true);
    }

    /// The three readings now; `None` when not counting. A reading that fails is 0 (the
    /// own-thread pair then drops out of the calibration).
    pub(super) fn read(&self) -> Option<[u64; 3]> {
        let all = self.all_fd.load(Ordering::Acquire);
        if all < 0 {
            return None;
        }
        let own = self.own_fd.load(Ordering::Acquire);
        Some([
            read_count(all).unwrap_or(0),
            (own >= 0).then(|| read_count(own)).flatten().unwrap_or(0),
            timer::thread_cpu_ns(self.tid.load(Ordering::Relaxed)).unwrap_or(0),
        ])
    }

    /// Ends an unpaused stretch.
    pub(super) fn bank(&self) {
        if let Some(now) = self.read() {
            self.stretches.bank(now);
        }
    }

    /// Starts a new unpaused stretch; `clear` also forgets the ended ones (start, reset).
    pub(super) fn restart(&self, clear: bool) {
        if let Some(now) = self.read() {
            self.stretches.restart(now, clear);
        }
    }

    /// Stops counting (before the events close) and returns what was counted, if anything.
    pub(super) fn stop(&self) -> Option<Measured> {
        self.own_fd.store(-1, Ordering::Release);
        if self.all_fd.swap(-1, Ordering::AcqRel) < 0 {
            return None;
        }
        let [all_ns, own_ns, own_clock_ns] = self.stretches.counted();
        let [steal0, busy0] = self.machine.each_ref().map(|c| c.load(Ordering::Relaxed));
        let machine = machine_ticks().and_then(|[steal, busy]| {
            (steal0 > 0 || busy0 > 0)
                .then(|| (steal.saturating_sub(steal0), busy.saturating_sub(busy0)))
        });
        Some(Measured {
            all_ns,
            machine,
            own: (own_ns > 0 && own_clock_ns > 0).then_some(OwnThread {
                counted_ns: own_ns,
                clock_ns: own_clock_ns,
            }),
        })
    }
}

/// Readings (clocks, counters) summed over a session's unpaused stretches since its start or
/// last reset: each stretch adds the readings' advance from its start to its end.
pub(super) struct Stretches<const N: usize> {
    /// The sums over ended stretches, and the readings at the current stretch's start.
    counted: [AtomicU64; N],
    mark: [AtomicU64; N],
}

impl<const N: usize> Stretches<N> {
    #[allow(clippy::declare_interior_mutable_const)]
    const NEW: Self = Stretches {
        counted: [const { AtomicU64::new(0) }; N],
        mark: [const { AtomicU64::new(0) }; N],
    };

    /// Ends a stretch at readings `now`.
    pub(super) fn bank(&self, now: [u64; N]) {
        for (i, now) in now.into_iter().enumerate() {
            let since = now.saturating_sub(self.mark[i].load(Ordering::Relaxed));
            self.counted[i].fetch_add(since, Ordering::Relaxed);
            self.mark[i].store(now, Ordering::Relaxed);
        }
    }

    /// Starts a stretch at readings `now`; `clear` forgets the ended ones (start, reset).
    pub(super) fn restart(&self, now: [u64; N], clear: bool) {
        for (i, now) in now.into_iter().enumerate() {
            if clear {
                self.counted[i].store(0, Ordering::Relaxed);
            }
            self.mark[i].store(now, Ordering::Relaxed);
        }
    }

    /// The sums over the ended stretches.
    pub(super) fn counted(&self) -> [u64; N] {
        self.counted.each_ref().map(|c| c.load(Ordering::Relaxed))
    }
}

/// Wall time and the whole process's CPU time over a session's unpaused stretches since its
/// last reset, for its note: setup left out with `reset` or `pause` must not read as other
/// threads' work. Kept for every engine, where [`Meter`] counts for perf sessions only.
static SPANS: [Stretches<2>; MAX_SLOTS] = [Stretches::NEW; MAX_SLOTS];

pub(super) fn span(sid: u64) -> &'static Stretches<2> {
    &SPANS[sid as usize % MAX_SLOTS]
}

/// What [`SPANS`] sum: the monotonic clock and the process's CPU clock, now.
pub(super) fn span_now() -> [u64; 2] {
    [clock_ns(libc::CLOCK_MONOTONIC), process_cpu_ns()]
}

/// The machine's clock ticks so far that the hypervisor took from its CPUs while they had
/// work (steal), and those they spent working or stolen (user, nice, system, irq, softirq,
/// steal): the first line of /proc/stat.
pub(super) fn machine_ticks() -> Option<[u64; 2]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal
    let steal = at(7);
    Some([steal, at(0) + at(1) + at(2) + at(5) + at(6) + steal])
}

/// CPU time of the whole process so far.
pub(super) fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

pub(super) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
