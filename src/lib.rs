//! Per-test CPU and heap profiles for Rust, the way `go test -cpuprofile` and `-memprofile`
//! give them to Go, with setup left out; and allocation assertions that say where.
//!
//! ```no_run
//! use profiled::profiled;
//!
//! # fn build_big_fixture() -> Vec<u64> { vec![1; 1000] }
//! #[profiled]
//! #[test]
//! fn sums_a_big_fixture() {
//!     let fixture = build_big_fixture(); // expensive setup
//!     profiled::reset();                 // nothing before this is in the profile
//!     assert!(fixture.iter().sum::<u64>() > 0);
//! }
//! ```
//!
//! `cargo test` runs it as usual: `#[profiled]` does nothing until asked. `PROFILE=cpu cargo
//! test` writes one gzipped pprof file per `#[profiled]` test, to
//! `target/profiles/<package>/<test binary>/<test>.cpu.pb.gz`, and prints one summary line
//! per test. Read a profile with `go tool pprof -http=: FILE` or `go tool pprof -top FILE`.
//!
//! # `PROFILE` and `PROFILED`
//!
//! Comma-separated kinds and options; unset or empty means off.
//!
//! | item | meaning | default |
//! | --- | --- | --- |
//! | `cpu` | a CPU profile per `#[profiled]` test | one kind at least |
//! | `heap` | a heap profile per test (needs [`Alloc`] as the global allocator) | |
//! | `allocs` | the heap profile's data shown by bytes allocated | |
//! | `heap_rate=<bytes>` | heap sampling: one allocation per this many bytes on average; 1 = all | 524288 |
//! | `block` | where the test's threads waited for [`sync`] locks and condition variables | |
//! | `mutex` | the [`sync`] unlocks that kept the test's threads waiting | |
//! | `block_rate=<ns>` | waits this long or longer all kept, shorter ones in proportion, scaled up (Go's) | 1 |
//! | `mutex_fraction=<n>` | about one contention event in n kept, scaled up (Go's) | 1 |
//! | `wall` | every thread of the test on wall time, running or waiting, labelled `state` | |
//! | `wall_freq=<Hz>` | wall samples per second per thread, 1 to 1000 | 100 |
//! | `freq=<Hz>` | samples per second of CPU time per thread, 1 to 10000 | 1000 |
//! | `dir=<path>` | base directory, relative to the test's current directory | `<target dir>/profiles` |
//! | `engine=<auto\|perf\|timer>` | perf events where the kernel allows them, else a thread CPU timer | `auto` |
//! | `threads=<test\|all>` | the test's thread and the threads it spawns, or every thread of the process (run tests one at a time) | `test` |
//! | `svg` | also an SVG flamegraph beside each profile (feature `flamegraph`) | off |
//!
//! `PROFILE` is a common name (`PROFILE=release` in Makefiles): a value that names none of
//! these kinds or options, nor comes close to one, is left to whoever set it, with one
//! notice. [`STRICT_ENV_VAR`] (`PROFILED=cpu`) is always read strictly and wins over it. A
//! bad item fails every profiled test with a message that names the variable, the item and
//! what is accepted ([`Config::parse`] reads the same grammar).
//!
//! # Ways in
//!
//! - [`macro@profiled`] on a test, sync or async (next to `#[tokio::test]`), with
//!   [`reset`], [`pause`] and [`unprofiled`] inside it.
//! - [`sync`]'s `Mutex`, `RwLock` and `Condvar` (one `use` line in place of std's) give
//!   block and mutex profiles (`PROFILE=block,mutex`).
//! - [`Alloc`], installed once per test binary, gives heap profiles (`PROFILE=heap`) and
//!   exact counts without `PROFILE`: [`allocations`], [`allocs_per_run`],
//!   [`assert_allocations!`], which on failure writes a profile of the offending
//!   allocations and names the stack that made most of them.
//! - [`Profile`] for code that is not a test:
//!
//! ```
//! # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
//! let profile = profiled::Profile::start("startup", &profiled::Config::default()).unwrap();
//! let total: u64 = (0..1_000_000u64).sum();
//! let report = profile.finish().unwrap();
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("startup.cpu.pb.gz");
//! report.write(&path).unwrap();
//! # assert!(total > 0);
//! # }
//! ```
//!
//! - Feature `criterion`: `cargo bench -- --profile-time 30` writes one profile per benchmark,
//!   setup left out, with one line in `criterion_group!`:
//!
//! ```
//! # #[cfg(feature = "criterion")] mod benches {
//! use criterion::{criterion_group, Criterion};
//! use profiled::criterion::Measured;
//!
//! fn bench(c: &mut Criterion<Measured>) {
//!     let input: Vec<u64> = (0..1000).collect(); // setup: not in the profile
//!     c.bench_function("sum", |b| b.iter(|| input.iter().sum::<u64>()));
//! }
//!
//! criterion_group! {
//!     name = benches;
//!     config = profiled::criterion::config();
//!     targets = bench
//! }
//! # }
//! ```
//!
//! - Feature `harness`: for `harness = false` test targets, `#[profiled::test]` and
//!   `profiled::main!()` give libtest's command line plus Go's flags (`--cpuprofile FILE`,
//!   `--profile DIR`, `--profile-freq HZ`), under `cargo test` and `cargo nextest run`:
//!
//! ```no_run
//! # #[cfg(feature = "harness")] mod t {
//! #[profiled::test]
//! fn parses() {
//!     assert_eq!("42".parse::<u32>(), Ok(42));
//! }
//!
//! profiled::main!();
//! # }
//! # fn main() {}
//! ```
//!
//! - Feature `flamegraph`: `PROFILE=cpu,svg` writes `<test>.cpu.svg` beside each profile,
//!   and `Report::write_flamegraph` does it in code:
//!
//! ```
//! # #[cfg(all(feature = "flamegraph", target_os = "linux", target_arch = "x86_64"))] {
//! let report = profiled::Profile::start("f", &profiled::Config::default())
//!     .unwrap()
//!     .finish()
//!     .unwrap();
//! # let dir = tempfile::tempdir().unwrap();
//! report.write_flamegraph(&dir.path().join("f.cpu.svg")).unwrap();
//! # }
//! ```
//!
//! - Feature `http`: Go's `/debug/pprof/` for a running service, read by the unmodified
//!   `go tool pprof`: merge `profiled::http::router` into the service's axum app, or start
//!   `profiled::http::serve` on a thread of its own (feature `http-tls` adds TLS with a
//!   private CA, for addresses off loopback):
//!
//! ```
//! # #[cfg(all(feature = "http", target_os = "linux", target_arch = "x86_64"))] {
//! let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
//! // Prints, and returns, the line to paste: go tool pprof 'http://127.0.0.1:PORT/debug/pprof/profile?seconds=30'
//! assert!(server.pprof_command().starts_with("go tool pprof"));
//! # }
//! ```
//!
//! README.md has the walkthrough, ARCHITECTURE.md how it works.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

use std::cell::Cell;
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
mod aggregate;
mod config;
mod contention;
#[cfg(feature = "criterion")]
pub mod criterion;
mod encode;
mod error;
#[cfg(feature = "flamegraph")]
mod flamegraph;
#[cfg(feature = "harness")]
mod harness;
mod heap;
#[cfg(feature = "http")]
pub mod http;
mod kind;
mod modules;
mod output;
mod sampler;
mod stack;
mod symbolize;
pub mod sync;
mod sys;
mod wall;

pub use config::DEFAULT_HEAP_RATE;
pub use config::{
    Config, DEFAULT_FREQUENCY, ENV_VAR, Engine, MAX_FREQUENCY, MAX_WALL_FREQUENCY, STRICT_ENV_VAR,
    Threads,
};
pub use config::{DEFAULT_BLOCK_RATE, DEFAULT_MUTEX_FRACTION};
pub use error::Error;
pub use heap::{Allocations, allocations, allocs_per_run};
/// Marks a test (sync, or async under `#[tokio::test]`) to be profiled when `PROFILE` asks.
///
/// Inert when `PROFILE` is unset: no thread, no signal handler, no file. Stacks with `#[test]`
/// in either order, with `#[should_panic]`, `#[ignore]` and `Result`-returning tests, and
/// never adds a test attribute of its own. On an `async fn` it must sit next to the async
/// test attribute (`#[tokio::test]`), above or below it.
///
/// ```no_run
/// #[profiled::profiled]
/// #[test]
/// fn parses_a_large_file() {
///     let input = "x".repeat(10_000_000); // setup
///     profiled::reset();
///     assert_eq!(input.len(), 10_000_000);
/// }
/// ```
pub use profiled_macros::profiled;
pub use sys::Alloc;

// Unit tests count what the code under test allocates (`allocations`).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: Alloc = Alloc::system();
pub use config::DEFAULT_WALL_FREQUENCY;

/// Registers a test with profiled's harness (`harness = false` targets that end in
/// [`main!`]). Takes `#[ignore]` and `#[should_panic(expected = "..")]` below it, and fns
/// returning `()` or `Result<(), E: Debug>`.
///
/// ```no_run
/// #[profiled::test]
/// fn parses() {
///     assert_eq!("4".parse::<u8>().unwrap(), 4);
/// }
///
/// profiled::main!();
/// ```
#[cfg(feature = "harness")]
pub use profiled_macros::test;

/// Fails the test when a closure allocates more than allowed, exactly counted (the calling
/// thread and threads spawned during the call; parallel tests don't disturb it). On failure
/// it writes a profile of exactly the offending allocations, and the panic message names the
/// stack that allocated the most and the profile's path. Limits: `at_most = <allocations>`,
/// `bytes_at_most = <bytes>`, or both. Needs [`Alloc`] as the global allocator; works
/// without `PROFILE`.
///
/// ```
/// #[global_allocator]
/// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
///
/// let words = ["a", "b"];
/// profiled::assert_allocations!(at_most = 0, || words.iter().map(|w| w.len()).sum::<usize>());
/// profiled::assert_allocations!(at_most = 1, bytes_at_most = 64, || words.join(","));
///
/// let failed = std::panic::catch_unwind(|| {
///     profiled::assert_allocations!(at_most = 0, || words.concat());
/// });
/// let message = failed.unwrap_err().downcast::<String>().unwrap();
/// assert!(message.contains("1 allocation where at most 0 are allowed"), "{message}");
/// ```
#[macro_export]
macro_rules! assert_allocations {
    (at_most = $n:expr, bytes_at_most = $b:expr, $f:expr $(,)?) => {
        $crate::assert_allocations!(@limits ::core::option::Option::Some($n), ::core::option::Option::Some($b), $f)
    };
    (at_most = $n:expr, $f:expr $(,)?) => {
        $crate::assert_allocations!(@limits ::core::option::Option::Some($n), ::core::option::Option::None, $f)
    };
    (bytes_at_most = $b:expr, $f:expr $(,)?) => {
        $crate::assert_allocations!(@limits ::core::option::Option::None, ::core::option::Option::Some($b), $f)
    };
    (@limits $allocs:expr, $bytes:expr, $f:expr) => {
        $crate::__private::assert_allocations(
            $crate::__private::Limits {
                allocs: $allocs,
                bytes: $bytes,
            },
            ::core::option_env!("CARGO_PKG_NAME"),
            $f,
        )
    };
}

/// What profiled writes: pprof `profile.proto` files, gzipped.
pub mod pprof {
    #[cfg(feature = "decode")]
    pub use crate::encode::{decode, proto};
    pub use crate::stack::{LOST_FUNCTION, TRUNCATED_FUNCTION};
}

thread_local! {
    /// Session ids of the profile this thread started (CPU, heap, contention), 0 for none.
    static CURRENT: Cell<Sids> = const { Cell::new(Sids { cpu: 0, heap: 0, locks: 0, wall: 0 }) };
}

/// The sessions of one profile, one per source: what `reset()`, `pause()` and a
/// [`Remote`] reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sids {
    cpu: u64,
    heap: u64,
    /// Block and mutex (one session).
    locks: u64,
    wall: u64,
}

impl Sids {
    fn is_none(self) -> bool {
        self == Sids::default()
    }
    fn is_live(self) -> bool {
        (self.cpu != 0 && sampler::is_live(self.cpu))
            || (self.heap != 0 && heap::is_live(self.heap))
            || (self.locks != 0 && heap::is_live(self.locks))
            || (self.wall != 0 && wall::is_live(self.wall))
    }
    fn reset(self) {
        if self.cpu != 0 {
            sampler::reset(self.cpu);
        }
        if self.heap != 0 {
            heap::reset(self.heap);
        }
        if self.locks != 0 {
            contention::reset(self.locks);
        }
        if self.wall != 0 {
            wall::reset(self.wall);
        }
    }
    fn pause(self) {
        if self.cpu != 0 {
            sampler::pause(self.cpu);
        }
        for sid in [self.heap, self.locks].into_iter().filter(|&s| s != 0) {
            heap::pause(sid);
        }
        if self.wall != 0 {
            wall::pause(self.wall);
        }
    }
    fn resume(self) {
        if self.cpu != 0 {
            sampler::resume(self.cpu);
        }
        for sid in [self.heap, self.locks].into_iter().filter(|&s| s != 0) {
            heap::resume(sid);
        }
        if self.wall != 0 {
            wall::resume(self.wall);
        }
    }
}

/// A profile being collected, of each kind its [`Config`] asks for (CPU by default): the
/// calling thread and, where perf events (CPU) or the allocator wrapper (heap) can follow
/// them, every thread it spawns from now on.
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// use profiled::{Config, Profile};
/// let profile = Profile::start("example", &Config::default()).unwrap();
/// let mut x = 0u64;
/// for i in 0..50_000_000u64 { x = x.wrapping_mul(31).wrapping_add(i); }
/// std::hint::black_box(x);
/// let report = profile.finish().unwrap();
/// assert!(report.cpu_time() > std::time::Duration::ZERO);
/// # }
/// ```
pub struct Profile {
    name: String,
    config: Config,
    cpu: Option<sampler::Session>,
    heap: Option<heap::Session>,
    locks: Option<contention::Session>,
    wall: Option<wall::Session>,
    detached: bool,
}

impl Profile {
    /// Starts profiling the calling thread (with [`Threads::All`], every thread of the
    /// process). `name` ends up in the profile's comments and the summary line. The
    /// config's [`Config::dir`] and [`Config::svg`] are for the files `#[profiled]` and the
    /// harness name; here [`Report::write`] takes the path. Fails on unsupported platforms,
    /// when this thread already profiles, and for [`Threads::All`] while other profiles run.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("a", &profiled::Config::default()).unwrap();
    /// assert!(profiled::Profile::start("b", &profiled::Config::default()).is_err());
    /// drop(p.finish());
    /// # }
    /// ```
    pub fn start(name: impl Into<String>, config: &Config) -> Result<Profile, Error> {
        // A Profile dropped without `finish` releases its slot (sampler::Session's Drop) but
        // leaves CURRENT set; a stale id is harmless (reset/pause check it) and is replaced
        // here.
        let current = CURRENT.with(Cell::get);
        if !current.is_none() && !current.is_live() {
            CURRENT.with(|c| c.set(Sids::default()));
        }
        if !CURRENT.with(Cell::get).is_none() {
            return Err(Error::AlreadyProfiling);
        }
        let profile = Profile::start_detached(name, config)?;
        pause_in_panic_hooks();
        CURRENT.with(|c| c.set(profile.sids()));
        Ok(Profile {
            detached: false,
            ..profile
        })
    }

    /// The sessions' ids.
    fn sids(&self) -> Sids {
        Sids {
            cpu: self.cpu.as_ref().map_or(0, sampler::Session::sid),
            heap: self.heap.as_ref().map_or(0, heap::Session::sid),
            locks: self.locks.as_ref().map_or(0, contention::Session::sid),
            wall: self.wall.as_ref().map_or(0, wall::Session::sid),
        }
    }

    /// Discards everything sampled so far (Go's `b.ResetTimer`, for the profile).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("r", &profiled::Config::default()).unwrap();
    /// p.reset();
    /// p.finish().unwrap();
    /// # }
    /// ```
    pub fn reset(&self) {
        self.sids().reset();
    }

    /// Pauses sampling for this profile until the guard drops.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("p", &profiled::Config::default()).unwrap();
    /// {
    ///     let _paused = p.pause();
    ///     // not in the profile
    /// }
    /// p.finish().unwrap();
    /// # }
    /// ```
    pub fn pause(&self) -> Paused {
        Paused::new(self.sids())
    }

    /// The name given at start.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("named", &profiled::Config::default()).unwrap();
    /// assert_eq!(p.name(), "named");
    /// p.finish().unwrap();
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a profile that is not the thread's current one: `reset()`/`pause()` don't
    /// reach it, and the thread may start its own (the harness's whole-run profile).
    #[cfg_attr(not(feature = "harness"), allow(dead_code))]
    pub(crate) fn start_detached(
        name: impl Into<String>,
        config: &Config,
    ) -> Result<Profile, Error> {
        // What the profile keeps, before any session: a heap session must not see
        // profiled's own allocations.
        let name = name.into();
        let owned = config.clone();
        let (block, mutex) = (config.wants(&kind::BLOCK), config.wants(&kind::MUTEX));
        let locks = if block || mutex {
            Some(contention::Session::start(
                if block { config.block_rate } else { 0 },
                if mutex { config.mutex_fraction } else { 0 },
                config.threads == Threads::All,
            )?)
        } else {
            None
        };
        let wall = if config.wants(&kind::WALL) {
            Some(wall::Session::start(
                config.wall_frequency,
                config.threads == Threads::All,
            )?)
        } else {
            None
        };
        let cpu = if config.wants(&kind::CPU) {
            sampler::on_drain_start(symbolize::prewarm);
            Some(sampler::Session::start(
                config.frequency,
                config.engine,
                config.threads,
                true,
            )?)
        } else {
            None
        };
        // The heap session last, for the same reason; one that cannot start (no wrapper)
        // drops those started above, which stops them.
        let heap = if config.wants(&kind::HEAP) || config.wants(&kind::ALLOCS) {
            Some(heap::Session::start(
                config.heap_rate,
                config.threads == Threads::All,
            )?)
        } else {
            None
        };
        Ok(Profile {
            name,
            config: owned,
            cpu,
            heap,
            locks,
            wall,
            detached: true,
        })
    }

    /// Starts a detached profile of every thread of the process that other profiles may
    /// run beside (the `/debug/pprof/profile` endpoint: a service's tests and its endpoint
    /// each get what they ask for).
    #[cfg(feature = "http")]
    pub(crate) fn start_shared(name: impl Into<String>, config: &Config) -> Result<Profile, Error> {
        sampler::on_drain_start(symbolize::prewarm);
        let session =
            sampler::Session::start(config.frequency, config.engine, Threads::All, false)?;
        Ok(Profile {
            name: name.into(),
            config: config.clone(),
            cpu: Some(session),
            heap: None,
            locks: None,
            wall: None,
            detached: true,
        })
    }

    /// A handle that pauses and resumes this profile from anywhere (criterion's measurement
    /// brackets the timed routine with it, far from the `Profile`).
    #[cfg_attr(not(feature = "criterion"), allow(dead_code))]
    pub(crate) fn remote(&self) -> Remote {
        Remote(self.sids())
    }

    /// Stops sampling, symbolizes and encodes the profile of its config's first kind (see
    /// [`Profile::finish_all`] for every kind).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("f", &profiled::Config::default()).unwrap();
    /// let report = p.finish().unwrap();
    /// assert_eq!(report.name(), "f");
    /// # }
    /// ```
    pub fn finish(self) -> Result<Report, Error> {
        let mut reports = self.finish_all()?;
        Ok(reports.remove(0))
    }

    /// Stops every kind's session and gives one report per kind, in the config's order.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// #[global_allocator]
    /// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
    ///
    /// let config = profiled::Config::parse("cpu,heap").unwrap().unwrap();
    /// let p = profiled::Profile::start("both", &config).unwrap();
    /// let kept: Vec<Vec<u8>> = (0..100).map(|_| vec![0; 100_000]).collect();
    /// let reports = p.finish_all().unwrap();
    /// assert_eq!(reports.iter().map(|r| r.kind()).collect::<Vec<_>>(), ["cpu", "heap"]);
    /// assert!(reports[1].total("inuse_space").unwrap() > 5_000_000);
    /// # drop(kept);
    /// # }
    /// ```
    pub fn finish_all(self) -> Result<Vec<Report>, Error> {
        if !self.detached {
            CURRENT.with(|c| c.set(Sids::default()));
        }
        if sampler::forked() || heap::forked() {
            // The drain lock may have been held at the fork, by a thread that does not exist
            // here: finishing could hang, and would steal the parent's samples anyway.
            drop(self);
            return Err(Error::Unsupported {
                what: "a profile can only be finished by the process that started it, not by a \
                       child forked from it"
                    .into(),
            });
        }
        let Profile {
            name,
            config,
            cpu,
            heap,
            locks,
            wall,
            ..
        } = self;
        // The heap session stops first: building the CPU report allocates.
        let recorded = heap.map(heap::Session::finish);
        let waits = locks.map(contention::Session::finish);
        let walled = wall.map(wall::Session::finish);
        let mut cpu = cpu.map(|session| finish_cpu(&name, &config, session));
        let mut reports = Vec::with_capacity(config.kinds.len());
        for kind in &config.kinds {
            match (kind.name, &recorded) {
                ("cpu", _) => reports.extend(cpu.take()),
                ("wall", _) => {
                    reports.extend(walled.as_ref().map(|w| wall_report(&name, w)));
                }
                ("block" | "mutex", _) => {
                    reports.extend(waits.as_ref().map(|w| contention_report(&name, kind, w)));
                }
                (_, Some(recorded)) => reports.push(heap_report(&name, kind, recorded)),
                _ => {}
            }
        }
        Ok(reports)
    }
}

/// A finished CPU session's report.
fn finish_cpu(name: &str, config: &Config, session: sampler::Session) -> Report {
    let mut collected = session.finish();
    let calibration = aggregate::calibrate(&mut collected);
    let mut comments = vec![
        format!("profiled: {name}"),
        format!(
            "sampler: {} at {} Hz requested; each sample weighs the CPU time since the \
                 thread's previous sample",
            collected.source.name(),
            config.frequency
        ),
    ];
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
    comments.extend(calibration);
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
    let (encoded, unreadable) = symbolize::with(|sym| {
        let encoded = encode::encode(&collected.samples(), &comments, sym);
        (encoded, sym.take_notices())
    });
    // The CPU kind's values: [samples, CPU ns].
    let total = |i: usize| u64::try_from(encoded.totals[i]).unwrap_or(0);
    let (samples, cpu_ns) = (total(0), total(1));
    let mut notices = aggregate::notices(name, &collected, config.frequency, samples, cpu_ns);
    notices.extend(
        unreadable
            .into_iter()
            .map(|text| aggregate::Notice { once: None, text }),
    );
    Report {
        name: name.to_string(),
        kind: &kind::CPU,
        totals: encoded.totals,
        gz: encoded.gz,
        samples,
        cpu: Duration::from_nanos(cpu_ns),
        top: encoded.top,
        folded: encoded.folded,
        lost: collected.lost,
        start: collected.start,
        wall: collected.duration,
        note: aggregate::where_cpu_went(
            collected.active,
            cpu_ns,
            collected.process_cpu_ns,
            config.threads,
            collected.source,
        ),
        notices,
        exact: true,
    }
}

/// A finished heap session's report as `kind` (heap or allocs: the same data).
pub(crate) fn heap_report(
    name: &str,
    kind: &'static kind::Kind,
    recorded: &heap::Recorded,
) -> Report {
    let comments = [
        format!("profiled: {name}"),
        if recorded.rate <= 1 {
            "heap: every allocation recorded (heap_rate=1)".to_string()
        } else {
            format!(
                "heap: allocations sampled once per {} bytes on average (a Poisson process \
                 over bytes, as Go's), values unbiased as Go's",
                recorded.rate
            )
        },
    ];
    let count = recorded
        .buckets
        .iter()
        .map(|b| b.allocs.max(0) as u64)
        .sum();
    // An empty sampled profile is not "allocated nothing": say what it means.
    let note = (count == 0 && recorded.rate > 1).then(|| {
        format!(
            "no allocation was sampled: heap profiles sample one allocation per {} allocated \
             on average, as Go's do, so a test that allocates less is rarely caught; \
             heap_rate=1 records every allocation (PROFILE=heap,heap_rate=1)",
            output::bytes(i64::try_from(recorded.rate).unwrap_or(i64::MAX))
        )
    });
    report_of(
        name,
        &recorded.samples(kind),
        &comments,
        count,
        note,
        recorded.rate <= 1,
    )
}

/// The report of a finished session of any kind but CPU: its samples symbolized and
/// encoded; `count` is what [`Report::samples`] says.
fn report_of(
    name: &str,
    samples: &kind::Samples<'_>,
    comments: &[String],
    count: u64,
    note: Option<String>,
    exact: bool,
) -> Report {
    let (encoded, unreadable) = symbolize::with(|sym| {
        let encoded = encode::encode(samples, comments, sym);
        (encoded, sym.take_notices())
    });
    Report {
        name: name.to_string(),
        kind: samples.kind,
        samples: count,
        cpu: Duration::ZERO,
        gz: encoded.gz,
        top: encoded.top,
        folded: encoded.folded,
        totals: encoded.totals,
        lost: 0,
        start: samples.start,
        wall: samples.duration,
        note,
        notices: unreadable
            .into_iter()
            .map(|text| aggregate::Notice { once: None, text })
            .collect(),
        exact,
    }
}

/// A finished wall-clock session's report.
fn wall_report(name: &str, recorded: &wall::Recorded) -> Report {
    let comments = [
        format!("profiled: {name}"),
        format!(
            "wall: every thread of the test sampled {} times a second of wall time, running \
             or not; label state=running|waiting (go tool pprof -tagfocus=state=waiting)",
            recorded.frequency
        ),
    ];
    let (waiting, total) = recorded.waiting_and_total();
    let note = (total > 0).then(|| {
        format!(
            "{:.0}% of the sampled threads' wall time was spent waiting (state=waiting)",
            100.0 * waiting as f64 / total as f64
        )
    });
    let count = recorded.rows.iter().map(|r| r.3.max(0) as u64).sum();
    report_of(
        name,
        &recorded.samples(&kind::WALL),
        &comments,
        count,
        note,
        false,
    )
}

/// A finished contention session's report as `kind` (block or mutex).
pub(crate) fn contention_report(
    name: &str,
    kind: &'static kind::Kind,
    recorded: &contention::Recorded,
) -> Report {
    let mutex = kind.name == kind::MUTEX.name;
    let comments = [
        format!("profiled: {name}"),
        if mutex {
            format!(
                "mutex: unlocks of profiled::sync locks that kept others waiting, with the \
                 waiting each caused; one event in {} kept, values scaled up by as much \
                 (mutex_fraction)",
                recorded.mutex_fraction
            )
        } else {
            format!(
                "block: waits for profiled::sync locks and condition variables; events \
                 shorter than {} ns kept in proportion and scaled up (block_rate, as Go's)",
                recorded.block_rate
            )
        },
    ];
    let samples = recorded.samples(kind);
    let exact = if mutex {
        recorded.mutex_fraction <= 1
    } else {
        recorded.block_rate <= 1
    };
    let count = samples.rows.len() as u64;
    report_of(name, &samples, &comments, count, None, exact)
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A finished CPU profile: the encoded pprof file and its headline figures.
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// let report = profiled::Profile::start("r", &profiled::Config::default()).unwrap().finish().unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("r.cpu.pb.gz");
/// report.write(&path).unwrap();
/// assert!(report.summary_line(Some(&path)).starts_with("profiled: r  cpu "));
/// # }
/// ```
#[derive(Clone)]
pub struct Report {
    name: String,
    kind: &'static kind::Kind,
    /// Each sample type's total, in the kind's order.
    totals: Vec<i64>,
    /// Heap kinds: every allocation recorded, no estimate.
    exact: bool,
    gz: Vec<u8>,
    samples: u64,
    cpu: Duration,
    top: Option<(String, f64)>,
    folded: Vec<(String, u64)>,
    lost: u64,
    start: SystemTime,
    wall: Duration,
    /// Why the profile may not show what the user expects, and what to do about it.
    note: Option<String>,
    /// What else the user should hear (perf refused, rate short, samples lost).
    notices: Vec<aggregate::Notice>,
}

impl Report {
    /// The profile's name.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("n", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.name(), "n");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of profile: `cpu`, `heap` or `allocs`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("k", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.kind(), "cpu");
    /// # }
    /// ```
    pub fn kind(&self) -> &'static str {
        self.kind.name
    }

    /// The total of one of the kind's sample types over the whole profile (`cpu`,
    /// `samples`; `alloc_space`, `alloc_objects`, `inuse_space`, `inuse_objects`), `None`
    /// for a type the kind does not have. Heap values are Go's unbiased estimates unless
    /// `heap_rate=1`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("t", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.total("cpu"), Some(r.cpu_time().as_nanos() as i64));
    /// assert_eq!(r.total("inuse_space"), None);
    /// # }
    /// ```
    pub fn total(&self, sample_type: &str) -> Option<i64> {
        let i = self
            .kind
            .sample_types
            .iter()
            .position(|t| t.kind == sample_type)?;
        self.totals.get(i).copied()
    }

    /// The gzipped pprof protobuf.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("g", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(&r.pprof_gz()[..2], &[0x1f, 0x8b]);
    /// # }
    /// ```
    pub fn pprof_gz(&self) -> &[u8] {
        &self.gz
    }

    /// Number of samples in the profile (lost ones included); for heap kinds, of sampled
    /// allocations.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("s", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.samples() < 10, "nothing ran");
    /// # }
    /// ```
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Total CPU time in the profile (zero for other kinds).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("c", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.cpu_time() < std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn cpu_time(&self) -> Duration {
        self.cpu
    }

    /// Samples lost because the sample buffer was full.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("l", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.lost_samples(), 0);
    /// # }
    /// ```
    pub fn lost_samples(&self) -> u64 {
        self.lost
    }

    /// The function with the most CPU time of its own, and its share of the total.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("t", &profiled::Config::default()).unwrap().finish().unwrap();
    /// if let Some((name, share)) = r.top_function() { assert!(!name.is_empty() && share <= 1.0); }
    /// # }
    /// ```
    pub fn top_function(&self) -> Option<(&str, f64)> {
        self.top.as_ref().map(|(n, s)| (n.as_str(), *s))
    }

    /// Wall-clock start and length of the profile.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.wall_time().1 < std::time::Duration::from_secs(10));
    /// # }
    /// ```
    pub fn wall_time(&self) -> (SystemTime, Duration) {
        (self.start, self.wall)
    }

    /// Why the profile may not hold what you expect (far less CPU than wall time, threads
    /// it could not sample), and what to do; printed under the summary line.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("waits", &profiled::Config::default()).unwrap();
    /// std::thread::sleep(std::time::Duration::from_millis(100));
    /// let r = p.finish().unwrap();
    /// assert!(r.note().unwrap().contains("the test mostly waited"));
    /// # }
    /// ```
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Warnings about how the profile was taken: perf events refused (the timer was used),
    /// a delivered rate far below the one asked for, samples lost. `#[profiled]`, the
    /// harness and criterion print them (the per-process ones once); code that writes its
    /// own profiles can print or log them.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap();
    /// for warning in r.warnings() {
    ///     eprintln!("{warning}");
    /// }
    /// # }
    /// ```
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.notices.iter().map(|n| n.text.as_str())
    }

    /// Writes the profile atomically (temporary file, then rename), creating directories.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// r.write(&dir.path().join("deep/dir/w.pb.gz")).unwrap();
    /// # }
    /// ```
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        output::write_atomic(path, &self.gz)
    }

    /// Stacks in the folded format (`outer;...;leaf`) with their CPU time in microseconds,
    /// the input of flamegraph tools such as inferno.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("f", &profiled::Config::default()).unwrap().finish().unwrap();
    /// for (stack, micros) in r.folded_stacks() { assert!(!stack.is_empty()); let _ = micros; }
    /// # }
    /// ```
    pub fn folded_stacks(&self) -> impl Iterator<Item = (&str, u64)> {
        self.folded.iter().map(|(s, w)| (s.as_str(), *w))
    }

    /// Writes an SVG flamegraph of the profile (atomically), widths proportional to CPU time.
    /// A profile without samples gets an SVG that says so.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("svg", &profiled::Config::default()).unwrap().finish().unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// r.write_flamegraph(&dir.path().join("svg.cpu.svg")).unwrap();
    /// # }
    /// ```
    #[cfg(feature = "flamegraph")]
    pub fn write_flamegraph(&self, path: &Path) -> Result<(), Error> {
        let svg = flamegraph::render(&self.name, &self.folded);
        output::write_atomic(path, &svg)
    }

    /// Writes the profile to `path` (and, with the `flamegraph` feature, an SVG to `svg`),
    /// then prints the summary line: what every integration does with a finished profile.
    pub(crate) fn publish(&self, path: &Path, svg: Option<&Path>) -> Result<(), Error> {
        self.write(path)?;
        for notice in &self.notices {
            if notice.once.is_none_or(first_time) {
                output::notice(&notice.text);
            }
        }
        let mut text = self.summary_line(Some(path));
        #[cfg(feature = "flamegraph")]
        if let Some(svg) = svg {
            self.write_flamegraph(svg)?;
            text += &format!(", {}", output::display_path(svg));
        }
        #[cfg(not(feature = "flamegraph"))]
        let _ = svg;
        if let Some(note) = &self.note {
            text += &format!("\nprofiled: {}: note: {note}", self.name);
        }
        output::line(&text);
        Ok(())
    }

    /// `profiled: NAME  cpu 1.82s  1820 samples  top: FN (61%)  -> PATH`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("x", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.summary_line(None).contains(" samples"));
    /// # }
    /// ```
    pub fn summary_line(&self, path: Option<&Path>) -> String {
        let mut line = if self.kind.name == "cpu" {
            format!(
                "profiled: {}  cpu {:.2}s  {} samples",
                self.name,
                self.cpu.as_secs_f64(),
                self.samples
            )
        } else if self.kind.name == "wall" {
            format!(
                "profiled: {}  wall {:.2}s over {} samples",
                self.name,
                Duration::from_nanos(self.total("wall").unwrap_or(0).max(0) as u64).as_secs_f64(),
                self.samples
            )
        } else if self.kind.name == "block" || self.kind.name == "mutex" {
            let about = if self.exact { "" } else { "~" };
            let total = |t| self.total(t).unwrap_or(0);
            let what = if self.kind.name == "block" {
                "waiting in"
            } else {
                "of waiting caused by"
            };
            let contentions = total("contentions");
            format!(
                "profiled: {}  {} {about}{:.3}s {what} {about}{contentions} contention{}",
                self.name,
                self.kind.name,
                Duration::from_nanos(total("delay").max(0) as u64).as_secs_f64(),
                if contentions == 1 { "" } else { "s" },
            )
        } else {
            let about = if self.exact { "" } else { "~" };
            let total = |t| self.total(t).unwrap_or(0);
            let allocations = total("alloc_objects");
            format!(
                "profiled: {}  {} {about}{} allocated in {about}{allocations} allocation{}, \
                 {about}{} in use",
                self.name,
                self.kind.name,
                output::bytes(total("alloc_space")),
                if allocations == 1 { "" } else { "s" },
                output::bytes(total("inuse_space")),
            )
        };
        match &self.top {
            Some((name, share)) => line += &format!("  top: {name} ({:.0}%)", share * 100.0),
            None => line += "  top: -",
        }
        if self.lost > 0 {
            line += &format!("  lost {}", self.lost);
        }
        if let Some(path) = path {
            line += &format!("  -> {}", output::display_path(path));
        }
        line
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("name", &self.name)
            .field("samples", &self.samples)
            .field("cpu", &self.cpu)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

/// Whether a once-per-process notice of kind `kind` has not been printed yet (and now is).
fn first_time(kind: &'static str) -> bool {
    static SAID: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.contains(&kind) {
        return false;
    }
    said.push(kind);
    true
}

/// Pauses and resumes one profile; a no-op once it has finished. Copied into code that cannot
/// hold the [`Profile`] (criterion's measurement).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "criterion"), allow(dead_code))]
pub(crate) struct Remote(Sids);

#[cfg_attr(not(feature = "criterion"), allow(dead_code))]
impl Remote {
    /// Stops recording samples until the matching [`Remote::resume`].
    pub(crate) fn pause(self) {
        self.0.pause();
    }

    /// Ends one [`Remote::pause`].
    pub(crate) fn resume(self) {
        self.0.resume();
    }
}

/// Discards everything sampled so far in the current thread's profile, like Go's
/// `b.ResetTimer()` but for the profile. A no-op outside a profiled test or when profiling is
/// off. Call it from the test's own thread.
///
/// ```
/// profiled::reset(); // not profiling: nothing happens
/// ```
pub fn reset() {
    CURRENT.with(Cell::get).reset();
}

/// Leaves what runs while the returned guard lives out of the current thread's profile
/// (Go's `StopTimer`/`StartTimer`, applied to the profile). A no-op when not profiling.
///
/// ```
/// let guard = profiled::pause();
/// // ... work that should not be in the profile ...
/// drop(guard);
/// ```
pub fn pause() -> Paused {
    Paused::new(CURRENT.with(Cell::get))
}

/// Leaves a panic's hook out of the panicking thread's profile: std's prints the message
/// and, with `RUST_BACKTRACE`, captures and symbolizes a backtrace, which in a test build
/// takes longer than most tests' work and would top a failing test's profile. Wraps the hook
/// in place when the first profile starts; a hook set later replaces the wrapper, as any.
fn pause_in_panic_hooks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A panic in profiled's own code may hold a lock that pausing takes.
            let own = info
                .location()
                .is_some_and(|l| l.file().starts_with(kind::PROFILED_SOURCES));
            let _paused = (!own).then(pause);
            previous(info);
        }));
    });
}

/// Runs `f` with the current profile paused and returns its value.
///
/// ```
/// let v = profiled::unprofiled(|| 6 * 7);
/// assert_eq!(v, 42);
/// ```
pub fn unprofiled<R>(f: impl FnOnce() -> R) -> R {
    let _paused = pause();
    f()
}

/// Guard returned by [`pause`] and [`Profile::pause`]; sampling resumes when it drops.
///
/// ```
/// let _g: profiled::Paused = profiled::pause();
/// ```
#[must_use = "sampling resumes as soon as the guard is dropped"]
pub struct Paused {
    sids: Sids,
    // Not Send: pausing and resuming belong to one thread's view of its profile.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Paused {
    fn new(sids: Sids) -> Paused {
        sids.pause();
        Paused {
            sids,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.sids.resume();
    }
}

impl fmt::Debug for Paused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paused")
            .field("active", &!self.sids.is_none())
            .finish()
    }
}
