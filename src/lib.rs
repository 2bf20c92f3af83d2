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
//! notice. [`Config::STRICT_ENV_VAR`] (`PROFILED=cpu`) is always read strictly and wins over it. A
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
//! // One report per kind the config asks for: here the CPU profile alone.
//! for report in profile.finish().unwrap() {
//!     # let dir = tempfile::tempdir().unwrap();
//!     let path = dir.path().join(format!("startup.{}.pb.gz", report.kind()));
//!     report.write(&path).unwrap();
//! }
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
//!     .unwrap()
//!     .remove(0);
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
mod membership;
mod modules;
mod output;
mod report;
mod sampler;
mod session;
mod stack;
mod symbolize;
pub mod sync;
mod sys;
#[cfg(test)]
mod tally;
mod wall;

pub use config::{Config, Engine, Threads};
pub use error::{Error, ErrorKind};
pub use heap::Alloc;
pub use heap::{Allocations, allocations, allocs_per_run};
pub use kind::Kind;
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
pub use report::Report;
pub use session::{Paused, Profile, pause, reset, unprofiled};

// Unit tests count what the code under test allocates (`allocations`).
#[cfg(test)]
#[global_allocator]
static TEST_ALLOC: Alloc = Alloc::system();

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
