//! Used by the code `#[profiled]` generates. Not public API and not subject to SemVer.
//!
//! /!\ WARNING: This is *not* a stable API! /!\

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::panic::Location;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::config::FromEnv;
use crate::error::Error;
use crate::{Config, Profile, heap, output};

/// What `#[profiled::test]` and `profiled::main!()` expand to.
#[cfg(feature = "harness")]
pub mod harness {
    pub use crate::harness::{Outcome, Test, main, outcome};
}
#[cfg(feature = "harness")]
pub use inventory;

/// `PROFILED` / `PROFILE`, read and parsed once per process; the notice for a `PROFILE` that
/// belongs to another tool is printed here, once. The error is kept as its message so that
/// every profiled test can report it.
pub(crate) fn settings() -> &'static Result<FromEnv, String> {
    static SETTINGS: OnceLock<Result<FromEnv, String>> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        let read = Config::read_env(|name| std::env::var_os(name)).map_err(|e| e.to_string());
        if let Ok(FromEnv {
            ignored: Some(notice),
            ..
        }) = &read
        {
            output::notice(notice);
        }
        read
    })
}

/// The per-test profile directory of this binary, checked writable once per process, before
/// the first profiled test runs: a bad `dir=` fails at the start, naming the variable.
fn checked_dir(
    settings: &FromEnv,
    config: &Config,
    package: Option<&str>,
) -> &'static Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let dir = output::profile_dir(config.dir.as_deref(), package);
        output::check_writable(&dir).map_err(|e| match &config.dir {
            Some(d) => format!(
                "{}: `dir={}`: {e}; give dir= a directory this test can write",
                settings.var,
                d.display()
            ),
            None => format!("{e}; set {}=cpu,dir=<a writable directory>", settings.var),
        })
    })
}

/// Profiles one test from construction to drop; the macro puts one at the top of the body.
#[must_use]
pub struct TestGuard {
    active: Option<Active>,
}

struct Active {
    profile: Profile,
    /// One file per kind, in the config's order.
    paths: Vec<PathBuf>,
    /// The process that started the profile: a child forked by the test must leave it alone.
    pid: u32,
    caller: &'static Location<'static>,
}

impl TestGuard {
    /// Starts the test's profile if `PROFILED`/`PROFILE` asks for one. Panics, failing the
    /// test (at the test, thanks to `track_caller`), when the variable is malformed, the
    /// profile directory is not writable, or profiling cannot start.
    #[track_caller]
    pub fn enter(
        package: Option<&'static str>,
        module_path: &'static str,
        fn_name: &'static str,
    ) -> TestGuard {
        let settings = match settings() {
            Ok(s) => s,
            Err(message) => panic!("profiled: {message}"),
        };
        let Some(config) = &settings.config else {
            return TestGuard { active: None };
        };
        if let Err(message) = checked_dir(settings, config, package) {
            panic!("profiled: {message}");
        }
        let name = output::test_name(module_path, fn_name);
        let paths = config
            .kinds
            .iter()
            .map(|kind| {
                let path = output::profile_path(config.dir.as_deref(), package, &name, *kind);
                unique_path(path, &name)
            })
            .collect();
        match Profile::start(name.clone(), config) {
            Ok(profile) => TestGuard {
                active: Some(Active {
                    profile,
                    paths,
                    pid: std::process::id(),
                    caller: Location::caller(),
                }),
            },
            Err(e) => panic!("profiled: cannot profile {name}: {e}"),
        }
    }

    /// Whether this guard is collecting a profile.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

/// `path`, or `<stem>.<n>.<kind>.pb.gz` when this process already profiled under that name:
/// `#[profiled]` on a helper that several tests call (or a test calling another) must not
/// overwrite its earlier profiles silently.
fn unique_path(path: PathBuf, name: &str) -> PathBuf {
    static SEEN: OnceLock<Mutex<HashMap<PathBuf, u32>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let count = seen.entry(path.clone()).or_insert(0);
    *count += 1;
    if *count == 1 {
        return path;
    }
    let numbered = output::numbered(&path, *count);
    output::notice(&format!(
        "`{name}` was profiled more than once in this process, so this profile goes to {} \
         instead of replacing {}; #[profiled] belongs on tests, not on functions they call",
        output::display_path(&numbered),
        output::display_path(&path),
    ));
    numbered
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        let Some(active) = self.active.take() else {
            return;
        };
        if std::process::id() != active.pid {
            // A child the test forked is unwinding through the test: the profile, its
            // machinery and its locks belong to the parent. Touch nothing.
            std::mem::forget(active);
            return;
        }
        let Active {
            profile,
            paths,
            caller,
            ..
        } = active;
        let (svg, verbose) = (profile.config().svg, profile.config().verbose);
        let result = profile.finish().and_then(|reports| {
            for (report, path) in reports.iter().zip(&paths) {
                let svg = svg.then(|| output::svg_path(path));
                report.publish(path, svg.as_deref(), verbose)?;
            }
            Ok(())
        });
        if let Err(e) = result {
            report_failure(e, caller);
        }
    }
}

/// A profile that could not be written fails the test, unless the test is already failing:
/// then its own panic is what the user must see, and ours goes to stderr. The message names
/// the test's location; the panic is raised without the panic hook, whose location would be
/// this file rather than the test.
fn report_failure(e: Error, caller: &Location<'_>) {
    let message = format!("profiled: {e} (profile of the test at {caller})");
    if std::thread::panicking() {
        output::line(&message);
    } else {
        eprintln!("{message}");
        std::panic::resume_unwind(Box::new(message));
    }
}

/// Whether the calling thread is running profiled's signal handler, for test allocators that
/// prove the handler never allocates.
#[cfg(all(target_os = "linux", target_arch = "x86_64", feature = "__test-hooks"))]
pub fn in_signal_handler() -> bool {
    crate::sampler::in_handler()
}

/// Whether the signal handler's unwinder knows every module loaded now (rebuilt since the
/// last `dlopen`), for tests that order themselves by the rebuild, not by sleeping.
#[cfg(all(target_os = "linux", target_arch = "x86_64", feature = "__test-hooks"))]
pub fn unwinder_knows_every_module() -> bool {
    crate::sys::knows_every_module()
}

/// The limits `assert_allocations!` checks.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    pub allocs: Option<u64>,
    pub bytes: Option<u64>,
}

/// What `assert_allocations!` expands to: counts `f`'s allocations exactly and records each
/// one's stack; over a limit, writes those allocations as a profile and panics with its
/// path and the stack that allocated the most.
#[doc(hidden)]
#[track_caller]
pub fn assert_allocations<R>(limits: Limits, package: Option<&'static str>, f: impl FnOnce() -> R) {
    let site = std::panic::Location::caller();
    if !heap::installed() {
        panic!("profiled::assert_allocations!: {}", heap::not_installed());
    }
    // Where stacks cannot be taken, the counts alone.
    let recording = match heap::Session::start(1, false) {
        Ok(session) => Some(session),
        Err(_) if !crate::sys::STACKS => None,
        Err(e) => panic!("profiled::assert_allocations!: {e}"),
    };
    let (counts, result) = heap::counted(f);
    let recorded = recording.map(heap::Session::finish);
    drop(result);
    let over_count = limits.allocs.filter(|&m| counts.allocs > m);
    let over_bytes = limits.bytes.filter(|&m| counts.alloc_bytes > m);
    if over_count.is_none() && over_bytes.is_none() {
        return;
    }
    let mut what = Vec::new();
    if let Some(m) = over_count {
        what.push(format!(
            "{} allocation{} where at most {m} {} allowed",
            counts.allocs,
            if counts.allocs == 1 { "" } else { "s" },
            if m == 1 { "is" } else { "are" }
        ));
    }
    if let Some(m) = over_bytes {
        what.push(format!(
            "{} bytes allocated where at most {m} are allowed",
            counts.alloc_bytes
        ));
    }
    let test = std::thread::current().name().unwrap_or("main").to_string();
    let file = site
        .file()
        .rsplit('/')
        .next()
        .unwrap_or("")
        .trim_end_matches(".rs")
        .to_string();
    let name = format!("{test}::{file}_{}", site.line());
    let Some(recorded) = recorded else {
        panic!(
            "profiled::assert_allocations! at {site}: {} (no profile: stacks cannot be taken \
             on this platform)",
            what.join(", and ")
        );
    };
    let kind = crate::Kind::Allocs;
    let report = crate::Report::new(
        &name,
        kind,
        crate::kind::Recorded::finished(&recorded, kind),
    );
    let stack = report
        .folded_stacks()
        .next()
        .map(|(stack, _)| {
            let frames: Vec<&str> = stack.rsplit(';').take(8).collect();
            frames.join("\n      <- ")
        })
        .unwrap_or_else(|| "(no stack recorded)".into());
    let path = crate::output::profile_dir(None, package)
        .join(format!("{}.allocs.pb.gz", crate::output::file_stem(&name)));
    let written = match report.write(&path) {
        Ok(()) => format!(
            "profile of them: {0}\n  read it with: go tool pprof -sample_index=alloc_space -top {0}",
            crate::output::display_path(&path)
        ),
        Err(e) => format!("their profile could not be written: {e}"),
    };
    panic!(
        "profiled::assert_allocations! at {site}: {}\n  most bytes allocated at: {stack}\n  {written}",
        what.join(", and ")
    );
}
