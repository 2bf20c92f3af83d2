//! Used by the code `#[profiled]` generates. Not public API and not subject to SemVer.
//!
//! /!\ WARNING: This is *not* a stable API! /!\

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::{output, sampler, Config, Error, Profile};

/// What `#[profiled::test]` and `profiled::main!()` expand to.
#[cfg(feature = "harness")]
pub mod harness {
    pub use crate::harness::{main, outcome, Outcome, Test};
}
#[cfg(feature = "harness")]
pub use inventory;

/// `PROFILE`, read and parsed once per process. The error is kept as its message so that
/// every profiled test can report it.
fn config() -> &'static Result<Option<Config>, String> {
    static CONFIG: OnceLock<Result<Option<Config>, String>> = OnceLock::new();
    CONFIG.get_or_init(|| Config::from_env().map_err(|e| e.to_string()))
}

/// Profiles one test from construction to drop; the macro puts one at the top of the body.
#[must_use]
pub struct TestGuard {
    active: Option<(Profile, PathBuf)>,
}

impl TestGuard {
    /// Starts the test's profile if `PROFILE` asks for one. Panics, failing the test, when
    /// `PROFILE` is malformed or profiling cannot start.
    pub fn enter(module_path: &'static str, fn_name: &'static str) -> TestGuard {
        let config = match config() {
            Ok(None) => return TestGuard { active: None },
            Ok(Some(config)) => config,
            Err(message) => panic!("profiled: {message}"),
        };
        let name = output::test_name(module_path, fn_name);
        let path = output::profile_path(config.dir.as_deref(), &name);
        match Profile::start(name.clone(), config) {
            Ok(profile) => TestGuard {
                active: Some((profile, path)),
            },
            Err(e) => panic!("profiled: cannot profile {name}: {e}"),
        }
    }

    /// Whether this guard is collecting a profile.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        let Some((profile, path)) = self.active.take() else {
            return;
        };
        let svg = profile.config.svg.then(|| output::svg_path(&path));
        let result = profile
            .finish()
            .and_then(|report| report.publish(&path, svg.as_deref()));
        if let Err(e) = result {
            report_failure(e);
        }
    }
}

/// A profile that could not be written fails the test, unless the test is already failing:
/// then its own panic is what the user must see, and ours goes to stderr.
fn report_failure(e: Error) {
    if std::thread::panicking() {
        output::line(&format!("profiled: {e}"));
    } else {
        panic!("profiled: {e}");
    }
}

/// Whether the sampling machinery was ever set up in this process (for "off means off" tests).
pub fn sampler_installed() -> bool {
    sampler::installed()
}
