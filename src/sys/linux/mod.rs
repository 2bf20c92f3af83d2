//! Linux x86_64: perf events and CPU timers deliver signals, a fenced handler walks the
//! stack into a lock-free ring, and the engine drains it per session.

mod drain;
mod engine;
mod map;
mod meter;
mod modules;
mod perf;
mod signal;
mod spawn;
mod threads;
mod timer;

pub(crate) use drain::{on_drain_start, prepare_unwinder as prepare_stacks};
pub(crate) use engine::{Session, forked, is_live, pause, reset, resume};
pub(crate) use map::{map_file, release};
pub(crate) use modules::{generation as modules_generation, known as known_modules, vdso_image};
#[cfg(feature = "__test-hooks")]
pub(crate) use signal::in_handler;
#[cfg(feature = "__test-hooks")]
pub(crate) use signal::unwind::knows_every_module;
pub(crate) use signal::{capture_stack, who as current_thread};
#[cfg(feature = "http")]
pub(crate) use threads::{ThreadStack, thread_stacks};
pub(crate) use threads::{current_tid, stacks_of, thread_state};

/// This process's id, without a system call after the first: glibc no longer caches it,
/// and the allocation and lock hooks compare it on every recorded event to notice a forked
/// child. A fork handler clears the cache in the child, which reads its own id again.
pub(crate) fn process_id() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CACHED: AtomicU32 = AtomicU32::new(0);
    static REGISTERED: std::sync::Once = std::sync::Once::new();

    extern "C" fn in_child() {
        // Async-signal-safe, as a fork handler must be: one atomic store.
        CACHED.store(0, Ordering::Relaxed);
    }

    let pid = CACHED.load(Ordering::Relaxed);
    if pid != 0 {
        return pid;
    }
    REGISTERED.call_once(|| {
        // SAFETY: registers a child handler that only stores to an atomic; nothing is
        // unregistered or freed later, so the pointer stays valid for the process.
        unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
    });
    // Read after the handler is in place: a fork from now on clears what is stored here.
    let pid = std::process::id();
    CACHED.store(pid, Ordering::Relaxed);
    pid
}

/// Whether stacks can be taken here (heap profiles need them).
pub(crate) const STACKS: bool = true;

/// The ids of this process's threads now (/proc/self/task).
pub(crate) fn thread_ids() -> std::io::Result<Vec<libc::pid_t>> {
    Ok(std::fs::read_dir("/proc/self/task")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect())
}
