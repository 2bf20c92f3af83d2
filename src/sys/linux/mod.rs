//! Linux x86_64: perf events and CPU timers deliver signals, a fenced handler walks the
//! stack into a lock-free ring, and the engine drains it per session.

mod engine;
mod map;
mod modules;
mod perf;
mod signal;
mod spawn;
mod threads;
mod timer;

pub(crate) use engine::{
    forked, is_live, on_drain_start, pause, prepare_unwinder as prepare_stacks, reset, resume,
    Session,
};
pub(crate) use map::{map_file, release};
pub(crate) use modules::{generation as modules_generation, known as known_modules};
pub(crate) use signal::{capture_stack, who as current_thread};
pub(crate) use threads::{current_tid, stacks_of, thread_state};
#[cfg(feature = "http")]
pub(crate) use threads::{thread_stacks, ThreadStack};
#[cfg(feature = "__test-hooks")]
pub(crate) use {engine::installed, signal::in_handler};

/// Whether stacks can be taken here (heap profiles need them).
pub(crate) const STACKS: bool = true;

/// The ids of this process's threads now (/proc/self/task).
pub(crate) fn thread_ids() -> std::io::Result<Vec<libc::pid_t>> {
    Ok(std::fs::read_dir("/proc/self/task")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}
