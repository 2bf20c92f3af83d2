//! The pipeline's second stage: per-session stack counts as the sampler's drain fills them
//! ([`Aggregate`], then [`Collected`] when a session finishes), and what a finished
//! session's counts say: totals calibrated to the kernel's count and notes for the user.
//! Pure: no I/O; the layer that owns the terminal prints what it returns.

#![forbid(unsafe_code)]

use rustc_hash::FxHashMap as HashMap;
use std::time::{Duration, SystemTime};

use crate::config::{Config, Threads};
use crate::kind::{Figures, Format, Notice, Row, Samples, Trim, ValueType};
use crate::stack::Thread;

/// CPU time, sampled: Go's `-cpuprofile` (`samples/count`, `cpu/nanoseconds`).
pub(crate) const CPU: Format = Format {
    name: "cpu",
    sample_types: &[
        ValueType {
            kind: "samples",
            unit: "count",
        },
        ValueType {
            kind: "cpu",
            unit: "nanoseconds",
        },
    ],
    period_type: ValueType {
        kind: "cpu",
        unit: "nanoseconds",
    },
    main: 1,
    default: 1,
    folded_divisor: 1000,
    trim: Trim::NONE,
    headline,
};

/// `cpu 1.82s  1820 samples`.
fn headline(f: &Figures<'_>) -> String {
    format!(
        "cpu {:.2}s  {} samples",
        Duration::from_nanos(f.total("cpu").max(0) as u64).as_secs_f64(),
        f.count
    )
}

/// Which source a session ended up using.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Perf,
    Timer,
}

impl Source {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Perf => "perf task-clock",
            Source::Timer => "thread CPU timer",
        }
    }
}

/// Per thread: stack (leaf first) -> (samples, CPU ns).
pub(crate) type Stacks = HashMap<Thread, HashMap<Box<[u64]>, (u64, u64)>>;

/// Stack counts of one finished session, still as raw addresses.
pub(crate) struct Collected {
    pub stacks: Stacks,
    pub lost: u64,
    pub lost_ns: u64,
    pub truncated: u64,
    /// Samples whose stacks were deeper than a sample holds: their middle frames are one
    /// `TRUNCATED` marker (src/stack.rs).
    pub cut: u64,
    /// The kernel's counts over the profile's unpaused stretches (perf source only).
    pub measured: Option<Measured>,
    pub source: Source,
    /// Why perf events were refused, when the session fell back to the timer.
    pub perf_refused: Option<String>,
    pub period_ns: u64,
    /// The period it sampled at: `period_ns`, or near it, apart from other profiles'.
    pub sampling_ns: u64,
    /// CPU time of the whole process over the profile's unpaused stretches since its last
    /// reset (other threads, other tests; not the setup the profile leaves out).
    pub process_cpu_ns: u64,
    pub start: SystemTime,
    pub duration: Duration,
    /// Wall time of the profile's unpaused stretches since its last reset.
    pub active: Duration,
}

impl Collected {
    /// The CPU kind's samples for the encoder: per stack `[samples, CPU ns]`, lost samples
    /// under [`LOST_FUNCTION`](crate::pprof::LOST_FUNCTION), and the real mean period (what
    /// a sample stood for, not what was asked for).
    pub(crate) fn samples(&self) -> Samples<'_> {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let rows: Vec<Row<'_>> = self
            .stacks
            .iter()
            .flat_map(|(thread, stacks)| {
                stacks.iter().map(move |(stack, &(count, weight))| Row {
                    thread: Some(thread),
                    stack,
                    values: vec![as_i64(count), as_i64(weight)],
                    num_labels: vec![],
                    str_labels: Vec::new(),
                })
            })
            .collect();
        let (mut count, mut weight) = (self.lost, self.lost_ns);
        for row in &rows {
            count += row.values[0] as u64;
            weight += row.values[1] as u64;
        }
        let placeholders = if self.lost > 0 {
            vec![(
                crate::stack::LOST_FUNCTION,
                vec![as_i64(self.lost), as_i64(self.lost_ns)],
            )]
        } else {
            Vec::new()
        };
        Samples {
            format: &CPU,
            rows,
            placeholders,
            period: as_i64(weight.checked_div(count).unwrap_or(self.period_ns)),
            start: self.start,
            duration: self.duration,
        }
    }
}

/// What the kernel counted of a perf session's CPU time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Measured {
    /// Task-clock time of every sampled thread: their CPU time plus any time the hypervisor
    /// took from them while they ran (steal), which the threads' CPU clocks leave out.
    pub all_ns: u64,
    /// The session's own thread, counted both ways, when both counts worked.
    pub own: Option<OwnThread>,
    /// The machine's clock ticks over the session: (stolen, busy or stolen), from
    /// /proc/stat, when readable.
    pub machine: Option<(u64, u64)>,
}

/// The session thread's share of [`Measured::all_ns`], and its CPU clock over the same time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct OwnThread {
    pub counted_ns: u64,
    pub clock_ns: u64,
}

/// Per-session aggregate, filled by the drain.
#[derive(Default)]
#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code) // only a sampler makes these (src/sys)
)]
pub(crate) struct Aggregate {
    /// Samples from generations below this were taken before the last `reset`.
    pub(crate) floor: u32,
    pub(crate) stacks: Stacks,
}

#[cfg_attr(
    not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
    allow(dead_code) // only a sampler makes these (src/sys)
)]
impl Aggregate {
    /// Counts `count` samples of `stack` on `thread`, weighing `weight_ns` in all.
    pub(crate) fn add(&mut self, thread: Thread, stack: &[u64], count: u64, weight_ns: u64) {
        let stacks = self.stacks.entry(thread).or_default();
        match stacks.get_mut(stack) {
            Some(v) => {
                v.0 += count;
                v.1 += weight_ns;
            }
            None => {
                stacks.insert(stack.into(), (count, weight_ns));
            }
        }
    }

    /// Forgets everything before a `reset`.
    pub(crate) fn clear(&mut self, floor: u32) {
        self.floor = floor;
        self.stacks.clear();
    }
}

/// A profile with far less CPU than its wall time, explained: the work ran on threads the
/// profile does not sample (a pool created before the test), or the test waited.
///
/// `wall` and `process_cpu_ns` cover the profile's unpaused stretches since its last reset
/// only: setup left out with `reset`, `pause` or `unprofiled` is neither wall time the test
/// spent nor other threads' work.
/// Sample periods of CPU under which a profile that only waited gets no note.
const QUIET_BELOW_PERIODS: u64 = 10;

pub(crate) fn where_cpu_went(
    wall: Duration,
    cpu_ns: u64,
    process_cpu_ns: u64,
    period_ns: u64,
    threads: Threads,
    source: Source,
) -> Option<String> {
    let wall_ns = u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX);
    let elsewhere = process_cpu_ns.saturating_sub(cpu_ns);
    let secs = |ns: u64| ns as f64 / 1e9;
    let timer_only_own = source == Source::Timer && threads == Threads::Test;
    if wall_ns < 50_000_000 || cpu_ns >= wall_ns / 4 {
        // Enough CPU in the profile; with the timer engine, threads the test spawned are
        // still missing if the process burned much more than the profile holds.
        return (timer_only_own && elsewhere > cpu_ns.max(wall_ns / 4)).then(|| {
            format!(
                "other threads used {:.2}s of CPU while this profile ran, and the timer engine \
                 samples only the test's own thread: threads the test spawned are not in it; \
                 use perf events (engine=perf, where the kernel allows them)",
                secs(elsewhere)
            )
        });
    }
    let head = format!(
        "only {:.2}s of CPU in {:.2}s of wall time",
        secs(cpu_ns),
        secs(wall_ns)
    );
    if timer_only_own && elsewhere >= wall_ns / 4 {
        Some(format!(
            "{head}, while other threads of the process used {:.2}s: the timer engine samples \
             only the test's own thread, so threads it spawns are not in the profile (nor \
             pools made before it, nor other tests); use perf events (engine=perf, where the \
             kernel allows them) or {}=cpu,threads=all (run profiled tests one at a \
             time: --test-threads=1)",
            secs(elsewhere),
            Config::ENV_VAR
        ))
    } else if threads == Threads::Test && elsewhere >= wall_ns / 4 {
        Some(format!(
            "{head}, while other threads of the process used {:.2}s: work that runs on threads \
             created before the test (a global pool such as rayon's, a lazily built runtime, a \
             pool in a static) is not in a per-test profile, nor are other tests running in \
             parallel; {}=cpu,threads=all samples every thread (run profiled tests one \
             at a time: --test-threads=1)",
            secs(elsewhere),
            Config::ENV_VAR
        ))
    } else if cpu_ns < QUIET_BELOW_PERIODS * period_ns {
        // Too little CPU for a profile and nothing elsewhere to explain: the summary line
        // says so already ("cpu 0.00s"), and on the tiny tests of a parallel run, whose wall
        // time is mostly waiting for a core, the note would be noise on every other line.
        // Ten periods, not one: a test that only sleeps still carries a millisecond or two
        // of its own start and end, which a loaded machine can stretch past one period.
        None
    } else {
        Some(format!(
            "{head}: the test mostly waited (sleep, I/O, locks, channels) or its work ran \
             outside the process; a CPU profile shows where CPU time went, not waiting"
        ))
    }
}

/// Makes the profile's CPU total equal the CPU time the kernel counted for the sampled
/// threads, when it has a count (perf source).
///
/// Each sample weighs its thread's CPU since that thread's previous sample, so what a thread
/// burns after its last sample is missing: up to a period per thread, which matters for short
/// threads at low rates. The kernel's task-clock count has it all (and steal time besides,
/// which [`cpu_time`] takes out); scaling every sample by the same factor keeps the
/// profile's shape and fixes its total. Returns the comment that says what was done.
pub(crate) fn calibrate(collected: &mut Collected) -> Option<String> {
    let measured = collected.measured?;
    let all = || collected.stacks.values().flat_map(|s| s.values());
    let samples: u64 = all().map(|v| v.0).sum::<u64>() + collected.lost;
    let weighed: u64 = all().map(|v| v.1).sum::<u64>() + collected.lost_ns;
    let target = cpu_time(&measured);
    if samples < 5 || weighed == 0 || target == 0 {
        return None;
    }
    let scale = target as f64 / weighed as f64;
    if !(0.2..=50.0).contains(&scale) {
        return Some(format!(
            "sampled CPU {weighed} ns vs kernel count {target} ns: too far apart to calibrate"
        ));
    }
    for v in collected.stacks.values_mut().flat_map(|s| s.values_mut()) {
        v.1 = (v.1 as f64 * scale).round() as u64;
    }
    collected.lost_ns = (collected.lost_ns as f64 * scale).round() as u64;
    let stolen = measured.all_ns.saturating_sub(target);
    // Below 1 % it is as likely the clocks' few-microsecond offsets: not worth a word.
    let steal = if stolen.saturating_mul(100) > target {
        format!("; {stolen} ns the hypervisor took from them (steal) left out")
    } else {
        String::new()
    };
    Some(format!(
        "CPU per sample scaled by {scale:.3} to the kernel's count of the sampled threads' CPU \
         time ({target} ns{steal})"
    ))
}

/// The sampled threads' CPU time from the kernel's counts, without steal time: the session
/// thread's own CPU clock, plus the other threads' share of the event's count times the
/// fraction of it that was not stolen. Steal comes in bursts (a virtual CPU descheduled for
/// milliseconds), which samples cannot see (the burst ends in one overflow), so the
/// fraction is the session thread's own (its clock over its count) when it ran long enough
/// to tell, else the machine's over the session (/proc/stat's ticks, when there are enough
/// of them), else the count stands as it is.
fn cpu_time(measured: &Measured) -> u64 {
    let Some(own) = measured.own else {
        return measured.all_ns;
    };
    let others = measured.all_ns.saturating_sub(own.counted_ns);
    let fraction = if own.counted_ns >= OWN_NS_FOR_STEAL {
        (own.clock_ns as f64 / own.counted_ns as f64).min(1.0)
    } else {
        match measured.machine {
            Some((stolen, busy)) if busy >= MACHINE_TICKS_FOR_STEAL => {
                1.0 - (stolen as f64 / busy as f64).min(1.0)
            }
            _ => 1.0,
        }
    };
    own.clock_ns + (others as f64 * fraction).round() as u64
}

/// The session thread's CPU time from which its own steal fraction is trusted.
const OWN_NS_FOR_STEAL: u64 = 100_000_000;
/// Busy clock ticks of the machine (USER_HZ, 10 ms) from which its steal fraction is.
const MACHINE_TICKS_FOR_STEAL: u64 = 20;

/// The notices a finished profile gives: perf events refused, a rate far below the one asked
/// for, lost samples (said of the profile: its report puts its name first).
pub(crate) fn notices(
    collected: &Collected,
    requested_hz: u32,
    samples: u64,
    cpu_ns: u64,
) -> Vec<Notice> {
    let mut out = Vec::new();
    if let Some(reason) = &collected.perf_refused {
        out.push(Notice {
            once: Some("perf refused"),
            text: format!(
                "perf events unavailable ({reason}); sampling with a thread CPU timer: threads \
                 spawned by a test are not sampled and the rate is bounded by the kernel tick"
            ),
            minor: false,
        });
    }
    if let Some(achieved) = rate_shortfall(requested_hz, samples, cpu_ns, collected.source) {
        out.push(Notice {
            once: Some("rate"),
            text: format!(
                "asked for {requested_hz} Hz, the {} delivered {achieved:.0} Hz; sample weights \
                 are the CPU time really elapsed, so totals stay exact",
                collected.source.name()
            ),
            minor: false,
        });
    }
    if collected.lost > 0 {
        out.push(Notice {
            once: None,
            text: format!(
                "{} samples lost (sample buffer full); they are counted under {} in the \
                 profile",
                collected.lost,
                crate::stack::LOST_FUNCTION
            ),
            minor: false,
        });
    }
    out
}

/// The rate the source delivered, when it fell short of `requested_hz` by more than a fifth
/// over enough CPU to judge. perf events fire on an hrtimer at the exact rate in user space;
/// only their kernel-mode periods go unsampled (and are still weighed), which is no
/// shortfall.
fn rate_shortfall(requested_hz: u32, samples: u64, cpu_ns: u64, source: Source) -> Option<f64> {
    let enough = 50 * 1_000_000_000 / u64::from(requested_hz.max(1));
    if source == Source::Perf || cpu_ns < enough || samples == 0 {
        return None;
    }
    let achieved = samples as f64 * 1e9 / cpu_ns as f64;
    (achieved < 0.8 * f64::from(requested_hz)).then_some(achieved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_under_ten_periods_of_cpu_gets_no_waiting_note() {
        let ms = 1_000_000;
        let note = |cpu_ns, process_cpu_ns| {
            where_cpu_went(
                Duration::from_millis(200),
                cpu_ns,
                process_cpu_ns,
                ms,
                Threads::Test,
                Source::Perf,
            )
        };
        // Only slept: the summary's "cpu 0.00s" says it all.
        assert_eq!(note(0, 0), None);
        assert_eq!(note(10 * ms - 1, 10 * ms - 1), None);
        // Some CPU, mostly waiting: said, with what to use instead.
        let waited = note(10 * ms, 10 * ms).unwrap();
        assert!(waited.contains("the test mostly waited"), "{waited}");
        // No CPU of its own while other threads worked: said, since threads=all helps.
        let elsewhere = note(0, 150 * ms).unwrap();
        assert!(elsewhere.contains("threads=all"), "{elsewhere}");
    }

    #[test]
    fn a_rate_shortfall_is_reported_for_the_timer_only() {
        let second = 1_000_000_000;
        assert_eq!(
            rate_shortfall(1000, 250, second, Source::Timer),
            Some(250.0)
        );
        assert_eq!(rate_shortfall(1000, 900, second, Source::Timer), None);
        assert_eq!(rate_shortfall(1000, 250, second, Source::Perf), None);
        assert_eq!(
            rate_shortfall(1000, 1, 1_000_000, Source::Timer),
            None,
            "too little CPU"
        );
    }

    const MS: u64 = 1_000_000;

    /// A perf session's counts: `own` (tid 1) and `others` (tid 2) as (samples, weight).
    fn session(own: (u64, u64), others: (u64, u64), measured: Measured) -> Collected {
        let mut stacks = Stacks::default();
        for (tid, (count, weight)) in [(1, own), (2, others)] {
            if count > 0 {
                let thread = Thread { tid, name: [0; 16] };
                stacks
                    .entry(thread)
                    .or_default()
                    .insert(vec![0x1000 + u64::from(tid)].into(), (count, weight));
            }
        }
        Collected {
            stacks,
            lost: 0,
            lost_ns: 0,
            truncated: 0,
            cut: 0,
            measured: Some(measured),
            source: Source::Perf,
            perf_refused: None,
            period_ns: MS,
            sampling_ns: MS,
            process_cpu_ns: 0,
            start: SystemTime::UNIX_EPOCH,
            duration: Duration::ZERO,
            active: Duration::ZERO,
        }
    }

    fn total(c: &Collected) -> u64 {
        c.stacks
            .values()
            .flat_map(|s| s.values())
            .map(|v| v.1)
            .sum()
    }

    fn own(counted_ms: u64, clock_ms: u64) -> Option<OwnThread> {
        Some(OwnThread {
            counted_ns: counted_ms * MS,
            clock_ns: clock_ms * MS,
        })
    }

    #[test]
    fn the_total_is_the_threads_cpu_clocks_not_the_stolen_time() {
        // One thread, 800 ms of CPU, while the hypervisor took 15 % more: the event counted
        // 920 ms, the weights (thread clock) 795 ms in 780 samples (the tail after the last
        // sample is missing).
        let measured = Measured {
            all_ns: 920 * MS,
            own: own(920, 800),
            machine: Some((0, 1000)),
        };
        let mut c = session((780, 795 * MS), (0, 0), measured);
        let note = calibrate(&mut c).unwrap();
        assert!(total(&c).abs_diff(800 * MS) <= 1000, "{}", total(&c));
        assert!(note.contains("120000000 ns the hypervisor took"), "{note}");

        // Spawned threads do the work while the session thread waits: their 1000 ms counted
        // hold the machine's 15 % steal over the session.
        let measured = Measured {
            all_ns: 1050 * MS,
            own: own(50, 50),
            machine: Some((15, 100)),
        };
        let mut c = session((50, 50 * MS), (900, 880 * MS), measured);
        calibrate(&mut c);
        assert!(total(&c).abs_diff(900 * MS) <= 1000, "{}", total(&c));

        // A session thread that ran long enough gives its own fraction, for all threads.
        let measured = Measured {
            all_ns: 1000 * MS,
            own: own(200, 170),
            machine: Some((0, 1000)),
        };
        let mut c = session((200, 170 * MS), (800, 790 * MS), measured);
        calibrate(&mut c);
        assert!(total(&c).abs_diff(850 * MS) <= 1000, "{}", total(&c));
    }

    #[test]
    fn the_count_stands_where_steal_cannot_be_told() {
        // Too few machine ticks over a short session with a mostly waiting session thread.
        let measured = Measured {
            all_ns: 80 * MS,
            own: own(5, 5),
            machine: Some((1, 10)),
        };
        let mut c = session((5, 5 * MS), (70, 70 * MS), measured);
        calibrate(&mut c);
        assert!(total(&c).abs_diff(80 * MS) <= 1000, "{}", total(&c));
        // No own-thread count (its event did not open): the sampling event's count.
        let measured = Measured {
            all_ns: 950 * MS,
            own: None,
            machine: Some((50, 100)),
        };
        let mut c = session((900, 880 * MS), (0, 0), measured);
        let note = calibrate(&mut c).unwrap();
        assert!(total(&c).abs_diff(950 * MS) <= 1000, "{}", total(&c));
        assert!(!note.contains("steal"), "{note}");
        // A difference under 1 % is not called steal.
        let measured = Measured {
            all_ns: 801 * MS,
            own: own(801, 800),
            machine: None,
        };
        let mut c = session((780, 795 * MS), (0, 0), measured);
        assert!(!calibrate(&mut c).unwrap().contains("steal"));
    }
}
