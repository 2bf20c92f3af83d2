//! The source stage of the CPU profile: sessions that start, reset, pause and finish, and
//! what they deliver (raw stacks with CPU time, per thread, in a `Collected`, src/aggregate.rs).
//!
//! The machinery is platform code and lives in [`crate::sys`]: on Linux x86_64 a signal
//! handler writes samples tagged with the session id into a shared ring, and a drain moves
//! them into per-session stack counts; elsewhere a session refuses to start with
//! [`Error::Unsupported`](crate::error::Error::Unsupported). Symbolization and encoding
//! happen later, in `symbolize` and `encode`.

#![forbid(unsafe_code)]

#[cfg(feature = "__test-hooks")]
pub(crate) use crate::sys::in_handler;
pub(crate) use crate::sys::{Session, forked, is_live, on_drain_start, pause, reset, resume};
#[cfg(feature = "http")]
pub(crate) use crate::sys::{ThreadStack, thread_stacks};
pub(crate) use crate::sys::{current_tid, stacks_of, thread_state};
