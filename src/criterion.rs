//! criterion integration: one profile per benchmark and kind (CPU by default; `heap` and
//! `allocs` when `PROFILE` asks) under `cargo bench -- --profile-time N`, with setup left out
//! and no change to benchmark bodies.
//!
//! criterion calls its [`Measurement`]'s `start` and `end` exactly around the timed routine;
//! setup (the code before `b.iter`, the setup closure of `iter_batched`, dropping outputs)
//! runs outside them. [`Measured`] wraps a measurement and resumes sampling in `start` and
//! pauses it in `end`, so only the routine is profiled. [`Profiler`] starts each benchmark's
//! profile paused, and writes it when criterion stops profiling.

#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Mutex;

use criterion::Criterion;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};

use crate::session::Remote;
use crate::{Config, Profile, output};

/// The benchmark profile being collected; `None` in normal benchmarking.
static ACTIVE: Mutex<Option<Remote>> = Mutex::new(None);

fn active() -> Option<Remote> {
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner())
}

fn set_active(remote: Option<Remote>) {
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = remote;
}

/// A criterion [`Criterion::with_profiler`] profiler that writes
/// `<criterion dir>/<benchmark id>/profile/cpu.pb.gz` for each benchmark run with
/// `--profile-time`, and prints one summary line per benchmark; with `PROFILE=cpu,heap` also
/// `heap.pb.gz` (and `allocs.pb.gz` for `allocs`), the routine's allocations only (needs
/// [`crate::Alloc`]).
///
/// Settings come from `PROFILE` when set (kinds, `freq=`, `heap_rate=`, `engine=`, `svg`),
/// else the defaults.
///
/// ```
/// let profiler = profiled::criterion::Profiler::new().svg(false);
/// let _c = criterion::Criterion::default()
///     .with_measurement(profiled::criterion::Measured::default())
///     .with_profiler(profiler);
/// ```
pub struct Profiler {
    config: Config,
    current: Option<Profile>,
}

impl Profiler {
    /// A profiler configured from `PROFILE` if it is set, else with the defaults.
    /// A malformed `PROFILE` is reported and the defaults are used.
    ///
    /// ```
    /// let _p = profiled::criterion::Profiler::new();
    /// ```
    pub fn new() -> Profiler {
        let config = match crate::__private::settings() {
            Ok(settings) => settings.config.clone().unwrap_or_default(),
            Err(e) => {
                output::notice(&format!("{e}; profiling benchmarks with the defaults"));
                Config::default()
            }
        };
        Profiler {
            config,
            current: None,
        }
    }

    /// A profiler with explicit settings (`dir` is ignored: criterion names the directory).
    ///
    /// ```
    /// let c = profiled::Config::parse("cpu,freq=500").unwrap().unwrap();
    /// let _p = profiled::criterion::Profiler::with_config(c);
    /// ```
    pub fn with_config(config: Config) -> Profiler {
        Profiler {
            config,
            current: None,
        }
    }

    /// Also write `flamegraph.svg` beside each profile (needs the `flamegraph` feature).
    ///
    /// ```
    /// let _p = profiled::criterion::Profiler::new().svg(cfg!(feature = "flamegraph"));
    /// ```
    pub fn svg(mut self, on: bool) -> Profiler {
        self.config.svg = on;
        self
    }
}

impl Default for Profiler {
    fn default() -> Self {
        Profiler::new()
    }
}

impl criterion::profiler::Profiler for Profiler {
    fn start_profiling(&mut self, benchmark_id: &str, _benchmark_dir: &Path) {
        match Profile::start(benchmark_id, &self.config) {
            Ok(profile) => {
                // Paused until the first `Measured::start`: warm-up bookkeeping and setup
                // stay out.
                profile.remote().pause();
                set_active(Some(profile.remote()));
                self.current = Some(profile);
            }
            Err(e) => output::notice(&format!("cannot profile {benchmark_id}: {e}")),
        }
    }

    fn stop_profiling(&mut self, benchmark_id: &str, benchmark_dir: &Path) {
        set_active(None);
        let Some(profile) = self.current.take() else {
            return;
        };
        let (svg, verbose) = (self.config.svg, self.config.verbose);
        let result = profile.finish().and_then(|reports| {
            for report in reports {
                let kind = report.kind();
                let path = benchmark_dir.join(format!("{kind}.pb.gz"));
                // The CPU flamegraph keeps the name criterion users know.
                let svg = svg.then(|| match kind {
                    crate::Kind::Cpu => benchmark_dir.join("flamegraph.svg"),
                    _ => benchmark_dir.join(format!("{kind}-flamegraph.svg")),
                });
                report.publish(&path, svg.as_deref(), verbose)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            output::notice(&format!("{benchmark_id}: {e}"));
        }
    }
}

/// A criterion measurement that profiles only the timed routine: it resumes sampling in
/// `start` and pauses it in `end`, around the wrapped measurement (wall time by default).
/// When no benchmark is being profiled it only delegates (one uncontended lock per call,
/// outside the span the wrapped measurement times).
///
/// ```
/// use criterion::Criterion;
/// use profiled::criterion::Measured;
/// fn bench(c: &mut Criterion<Measured>) {
///     c.bench_function("sum", |b| b.iter(|| (0..100u64).sum::<u64>()));
/// }
/// # let _ = bench;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Measured<M = WallTime> {
    inner: M,
}

impl Default for Measured<WallTime> {
    /// Wall time, as criterion measures by default.
    fn default() -> Self {
        Measured { inner: WallTime }
    }
}

impl<M> Measured<M> {
    /// Wraps another measurement.
    ///
    /// ```
    /// let _m = profiled::criterion::Measured::new(criterion::measurement::WallTime);
    /// ```
    pub fn new(inner: M) -> Self {
        Measured { inner }
    }
}

impl<M: Measurement> Measurement for Measured<M> {
    type Intermediate = M::Intermediate;
    type Value = M::Value;

    fn start(&self) -> Self::Intermediate {
        if let Some(profile) = active() {
            profile.resume();
        }
        self.inner.start()
    }

    fn end(&self, i: Self::Intermediate) -> Self::Value {
        let value = self.inner.end(i);
        if let Some(profile) = active() {
            profile.pause();
        }
        value
    }

    fn add(&self, v1: &Self::Value, v2: &Self::Value) -> Self::Value {
        self.inner.add(v1, v2)
    }

    fn zero(&self) -> Self::Value {
        self.inner.zero()
    }

    fn to_f64(&self, value: &Self::Value) -> f64 {
        self.inner.to_f64(value)
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.inner.formatter()
    }
}

/// The one line for `criterion_group!`'s `config`: wall-time measurement that profiles only
/// the timed routine, and the profiler.
///
/// ```
/// use criterion::{criterion_group, Criterion};
/// use profiled::criterion::Measured;
///
/// fn bench(c: &mut Criterion<Measured>) {
///     c.bench_function("sum", |b| b.iter(|| (0..100u64).sum::<u64>()));
/// }
/// criterion_group! {
///     name = benches;
///     config = profiled::criterion::config();
///     targets = bench
/// }
/// # let _ = benches;
/// ```
pub fn config() -> Criterion<Measured> {
    Criterion::default()
        .with_measurement(Measured::default())
        .with_profiler(Profiler::new())
}
