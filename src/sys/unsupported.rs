//! Every target but Linux x86_64: no sampler, so a profile that is asked for refuses to start
//! with an unsupported-platform error; files are read into memory instead of mapped.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;

use crate::aggregate::Collected;
use crate::config::{Engine, Threads};
use crate::error::{Error, Repr};
use crate::modules::Module;

/// What a profile started on this platform fails with.
pub(crate) fn unsupported() -> Error {
    Error::from(Repr::Unsupported {
        what: format!(
            "CPU profiling is not supported on this platform ({}-{}); \
             profiled samples on Linux x86_64",
            std::env::consts::OS,
            std::env::consts::ARCH
        ),
    })
}

/// Never constructed: [`Session::start`] always fails here.
pub(crate) enum Session {}

impl Session {
    pub(crate) fn start(
        _frequency: u32,
        _engine: Engine,
        _threads: Threads,
        _alone: bool,
    ) -> Result<Session, Error> {
        Err(unsupported())
    }
    pub(crate) fn sid(&self) -> u64 {
        match *self {}
    }
    pub(crate) fn finish(self) -> Collected {
        match self {}
    }
}

pub(crate) fn reset(_sid: u64) {}
pub(crate) fn pause(_sid: u64) {}
pub(crate) fn resume(_sid: u64) {}
pub(crate) fn is_live(_sid: u64) -> bool {
    false
}
pub(crate) fn process_id() -> u32 {
    std::process::id()
}

pub(crate) fn forked() -> bool {
    false
}
pub(crate) fn on_drain_start(_work: fn()) {}
#[cfg(feature = "__test-hooks")]
pub(crate) fn in_handler() -> bool {
    false
}
#[cfg(feature = "__test-hooks")]
pub(crate) fn knows_every_module() -> bool {
    true
}

/// A thread and its stack, as the Linux module gives them.
pub(crate) type ThreadStack = (crate::stack::Thread, Option<Vec<u64>>);

/// No signal handler to ask threads with here.
#[cfg(feature = "http")]
pub(crate) fn thread_stacks() -> Result<Vec<ThreadStack>, Error> {
    Err(unsupported())
}

/// No signal handler to ask threads with here.
pub(crate) fn stacks_of(
    _tids: &[i32],
    _patience: std::time::Duration,
) -> Result<Vec<ThreadStack>, Error> {
    Err(unsupported())
}

/// Nothing to read it from here.
pub(crate) fn thread_state(_tid: i32) -> Option<(bool, String)> {
    None
}

/// No thread ids here.
pub(crate) fn current_tid() -> i32 {
    0
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn thread_ids() -> std::io::Result<Vec<i32>> {
    Err(std::io::ErrorKind::Unsupported.into())
}
pub(crate) fn known_modules() -> Vec<Module> {
    Vec::new()
}
pub(crate) fn modules_generation() -> u64 {
    0
}
pub(crate) fn vdso_image() -> Option<&'static [u8]> {
    None
}

/// Whether stacks can be taken here (heap profiles need them).
pub(crate) const STACKS: bool = false;

/// No unwinder here: heap profiles record no stacks.
pub(crate) fn capture_stack(_frames: &mut [u64; crate::stack::MAX_DEPTH]) -> usize {
    0
}
pub(crate) fn current_thread() -> crate::stack::Thread {
    crate::stack::Thread::default()
}
pub(crate) fn prepare_stacks() {}

/// Reads the whole file: without a sampler nothing is symbolized here, so this only has to
/// be correct, not frugal.
pub(crate) fn map_file(mut file: &File) -> Option<&'static [u8]> {
    let mut data = Vec::new();
    file.read_to_end(&mut data).ok()?;
    Some(Vec::leak(data))
}

/// Nothing to give back: the bytes are the heap's.
pub(crate) fn release(_bytes: &[u8]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_asked_for_fails_with_the_documented_error() {
        let err = match Session::start(100, Engine::Auto, Threads::Test, true) {
            Err(err) => err.to_string(),
            Ok(session) => match session {},
        };
        assert!(
            err.contains("CPU profiling is not supported on this platform (")
                && err.contains("profiled samples on Linux x86_64"),
            "{err}"
        );
    }

    #[test]
    fn files_are_read_whole() {
        let path = std::env::current_exe().unwrap();
        let bytes = map_file(&File::open(&path).unwrap()).unwrap();
        assert_eq!(bytes, std::fs::read(&path).unwrap());
    }
}
