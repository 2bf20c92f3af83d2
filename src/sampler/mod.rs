//! The sampling engine's safe facade: process-wide machinery set up once, then cheap
//! sessions (one per profile) that start, reset, pause and finish.
//!
//! A session owns a [`signal::Slot`]; the signal handler writes raw samples tagged with the
//! session id into one shared [`ring::Ring`]; a drain (a background thread every few
//! milliseconds, and the finishing session itself) moves them into per-session stack counts.
//! Symbolization and encoding happen later, in `symbolize` and `encode`.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
use crate::{
    config::{Engine, Threads},
    error::Error,
};

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod perf;
#[allow(dead_code)]
pub(crate) mod ring;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) mod signal;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod table;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod timer;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod unwind;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub(crate) use linux::{forked, is_live, on_drain_start, pause, reset, resume, Session};
#[cfg(all(target_os = "linux", target_arch = "x86_64", feature = "__test-hooks"))]
pub(crate) use {linux::installed, signal::in_handler};

/// Stands for the frames a deep stack lost; the encoder names it `[truncated]`.
pub(crate) const TRUNCATED: u64 = u64::MAX;
/// Frames a sample holds at most.
pub(crate) const MAX_DEPTH: usize = ring::MAX_DEPTH;

pub(crate) use crate::aggregate::{Collected, Source, Thread};

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod unsupported {
    use super::*;

    pub(crate) struct Session;

    impl Session {
        pub(crate) fn start(
            _frequency: u32,
            _engine: Engine,
            _threads: Threads,
        ) -> Result<Session, Error> {
            Err(Error::Unsupported {
                what: format!(
                    "CPU profiling is not supported on this platform ({}-{}); \
                     profiled samples on Linux x86_64",
                    std::env::consts::OS,
                    std::env::consts::ARCH
                ),
            })
        }
        pub(crate) fn sid(&self) -> u64 {
            0
        }
        pub(crate) fn finish(self) -> Collected {
            unreachable!("no session can start on this platform")
        }
    }
    pub(crate) fn reset(_sid: u64) {}
    pub(crate) fn pause(_sid: u64) {}
    pub(crate) fn resume(_sid: u64) {}
    #[cfg(feature = "__test-hooks")]
    pub(crate) fn installed() -> bool {
        false
    }
    pub(crate) fn is_live(_sid: u64) -> bool {
        false
    }
    pub(crate) fn forked() -> bool {
        false
    }
    pub(crate) fn on_drain_start(_work: fn()) {}
}
#[cfg(all(
    not(all(target_os = "linux", target_arch = "x86_64")),
    feature = "__test-hooks"
))]
pub(crate) use unsupported::installed;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub(crate) use unsupported::{forked, is_live, on_drain_start, pause, reset, resume, Session};
