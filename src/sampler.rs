//! The CPU kind's source: sessions that start, reset, pause and finish, and what they
//! deliver (raw stacks with CPU time, per thread, in a `Collected`, src/aggregate.rs), made
//! into the kind's finished data with its comments, note and warnings.
//!
//! The machinery is platform code and lives in [`crate::sys`]: on Linux x86_64 a signal
//! handler writes samples tagged with the session id into a shared ring, and a drain moves
//! them into per-session stack counts; elsewhere a session refuses to start with an
//! unsupported-platform error. Symbolization and encoding happen later, in src/report.rs.

#![forbid(unsafe_code)]

use crate::aggregate::{self, Collected};
use crate::config::{Config, Threads};
use crate::error::Error;
use crate::kind::{self, Controls, Finished, Kind, Notice};
use crate::stack;
#[cfg(feature = "__test-hooks")]
pub(crate) use crate::sys::in_handler;
pub(crate) use crate::sys::{Session, forked, is_live, on_drain_start, pause, reset, resume};
#[cfg(feature = "http")]
pub(crate) use crate::sys::{ThreadStack, thread_stacks};
pub(crate) use crate::sys::{current_tid, stacks_of, thread_state};

/// What `reset()` and `pause()` reach of a CPU session.
static CONTROLS: Controls = Controls {
    reset,
    pause,
    resume,
    is_live,
};

/// A CPU session and what its report needs of the config.
struct Cpu {
    session: Session,
    frequency: u32,
    threads: Threads,
}

/// Starts a CPU profile as `config` asks (the calling thread, the threads it spawns, or
/// every thread). `exclusive`: no other profile of every thread may run beside it.
pub(crate) fn start(config: &Config) -> Result<Box<dyn kind::Running>, Error> {
    start_with(config, config.threads, true)
}

/// Starts a CPU profile of `threads`; not `exclusive`, it runs beside the others (the
/// `/debug/pprof/profile` endpoint).
pub(crate) fn start_with(
    config: &Config,
    threads: Threads,
    exclusive: bool,
) -> Result<Box<dyn kind::Running>, Error> {
    on_drain_start(crate::symbolize::prewarm);
    let session = Session::start(config.frequency, config.engine, threads, exclusive)?;
    Ok(Box::new(Cpu {
        session,
        frequency: config.frequency,
        threads,
    }))
}

impl kind::Running for Cpu {
    fn sid(&self) -> u64 {
        self.session.sid()
    }

    fn controls(&self) -> &'static Controls {
        &CONTROLS
    }

    fn finish(self: Box<Self>) -> Box<dyn kind::Recorded> {
        let mut collected = self.session.finish();
        let calibration = aggregate::calibrate(&mut collected);
        Box::new(Recorded {
            collected,
            calibration,
            frequency: self.frequency,
            threads: self.threads,
        })
    }
}

/// A finished CPU session.
struct Recorded {
    collected: Collected,
    /// What calibrating the weights against the kernel's count said, if anything.
    calibration: Option<String>,
    frequency: u32,
    threads: Threads,
}

impl kind::Recorded for Recorded {
    fn finished(&self, _: Kind) -> Finished<'_> {
        let collected = &self.collected;
        let mut comments = vec![format!(
            "sampler: {} at {} Hz requested; each sample weighs the CPU time since the \
             thread's previous sample",
            collected.source.name(),
            self.frequency
        )];
        if collected.sampling_ns != collected.period_ns {
            // Said so that a reader comparing sample counts with the rate asked for is not
            // puzzled (src/sys/linux/engine.rs `apart`).
            comments.push(format!(
                "sampled at {:.0} Hz: other profiles were running, and periods \
                 apart keep their signals from falling due together",
                1e9 / collected.sampling_ns.max(1) as f64
            ));
        }
        if collected.lost > 0 {
            comments.push(format!(
                "{} samples ({:.3}s CPU) lost: the sample buffer was full; they are under {}",
                collected.lost,
                collected.lost_ns as f64 / 1e9,
                stack::LOST_FUNCTION
            ));
        }
        comments.extend(self.calibration.clone());
        if collected.truncated > 0 {
            comments.push(format!(
                "{} samples kept with their leaf frame only",
                collected.truncated
            ));
        }
        if collected.cut > 0 {
            comments.push(format!(
                "{} samples had stacks deeper than {} frames: their middle frames are left \
                 out, marked by {}",
                collected.cut,
                stack::MAX_DEPTH,
                stack::TRUNCATED_FUNCTION
            ));
        }
        let samples = collected.samples();
        // The CPU kind's values: [samples, CPU ns].
        let totals = samples.totals();
        let total = |i: usize| totals.get(i).map_or(0, |&t| u64::try_from(t).unwrap_or(0));
        let (count, cpu_ns) = (total(0), total(1));
        let notices: Vec<Notice> = aggregate::notices(collected, self.frequency, count, cpu_ns);
        let note = aggregate::where_cpu_went(
            collected.active,
            cpu_ns,
            collected.process_cpu_ns,
            collected.sampling_ns,
            self.threads,
            collected.source,
        );
        Finished {
            comments,
            note,
            count,
            exact: true,
            lost: collected.lost,
            notices,
            ..Finished::new(samples, count)
        }
    }
}
