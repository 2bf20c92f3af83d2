//! Threads' current stacks, for `/debug/pprof/threads` (every thread) and wall-clock
//! profiles (a session's threads, src/wall.rs): each thread is sent a dump request
//! (src/sys/linux/signal/dump.rs) and its handler answers with its own stack. Also what
//! /proc says a thread is doing, which needs no signal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::signal::dump::{self, CELLS};
use super::signal::{SI_QUEUE, VALUE_OFFSET};
use crate::error::Error;
#[cfg(feature = "http")]
use crate::error::Repr;
use crate::stack::Thread;

/// A thread that has not answered within this long blocks `SIGPROF` or is stopped.
#[cfg(any(feature = "http", test))]
const PATIENCE: Duration = Duration::from_secs(1);

/// One dump at a time: the board has one set of cells.
static DUMPING: Mutex<()> = Mutex::new(());

/// A thread and its stack (leaf first), or `None` when it did not answer.
pub(crate) type ThreadStack = (Thread, Option<Vec<u64>>);

/// The stacks of every thread of the process, in thread id order.
#[cfg(feature = "http")]
pub(crate) fn thread_stacks() -> Result<Vec<ThreadStack>, Error> {
    let mut tids = super::thread_ids().map_err(|e| {
        Error::from(Repr::Sampler {
            what: "listing the process's threads (/proc/self/task)",
            source: e,
        })
    })?;
    tids.sort_unstable();
    stacks_of(&tids, PATIENCE)
}

/// The stacks of threads `tids` of this process, in that order; a thread that has not
/// answered within `patience` (gone, blocking `SIGPROF`, stopped) is `None`.
pub(crate) fn stacks_of(tids: &[i32], patience: Duration) -> Result<Vec<ThreadStack>, Error> {
    super::engine::ready()?;
    let _one = DUMPING.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::with_capacity(tids.len());
    for batch in tids.chunks(CELLS) {
        for (i, &tid) in batch.iter().enumerate() {
            if let Some(value) = dump::ask(i, tid) {
                ask(tid, value);
            }
        }
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline && !dump::all_answered(batch.len()) {
            std::thread::sleep(Duration::from_millis(1));
        }
        for (i, &tid) in batch.iter().enumerate() {
            match dump::take(i) {
                Some((thread, frames)) => out.push((thread, Some(frames))),
                None => {
                    let thread = Thread {
                        tid: tid as u32,
                        name: thread_name(tid),
                    };
                    out.push((thread, None));
                }
            }
        }
    }
    Ok(out)
}

/// Queues `SIGPROF` with `value` to thread `tid` of this process.
fn ask(tid: i32, value: u64) {
    // SAFETY: an all-zero siginfo_t is valid; we fill signo, code, pid, uid and the value
    // at their offsets for SI_QUEUE, as sigqueue(3) does.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let base = &mut info as *mut libc::siginfo_t as *mut u8;
    // SAFETY: getpid and getuid have no preconditions; the writes are inside `info`
    // (128 bytes): si_signo at 0, si_code at 8, si_pid at 16, si_uid at 20, si_value at 24.
    unsafe {
        base.cast::<i32>().write_unaligned(libc::SIGPROF);
        base.add(8).cast::<i32>().write_unaligned(SI_QUEUE);
        base.add(16).cast::<i32>().write_unaligned(libc::getpid());
        base.add(20).cast::<u32>().write_unaligned(libc::getuid());
        base.add(VALUE_OFFSET).cast::<u64>().write_unaligned(value);
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            tid,
            libc::SIGPROF,
            &info as *const libc::siginfo_t,
        );
    }
}

/// What thread `tid` of this process is doing, from /proc (no signal): whether it is
/// running or runnable (`R`), and the line of `/proc/self/task/<tid>/syscall` (the system
/// call it is blocked in, with its stack pointer and program counter: the same line again
/// means it has not moved). `None`: the thread is gone or exiting (it would not answer).
pub(crate) fn thread_state(tid: i32) -> Option<(bool, String)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The state follows the command name, which is in parentheses and may hold any byte.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    if matches!(state, 'Z' | 'X' | 'x') {
        return None;
    }
    let syscall =
        std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap_or_default();
    Some((state == 'R', syscall))
}

/// The calling thread's id.
pub(crate) fn current_tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A thread's name from /proc, for threads that did not answer.
fn thread_name(tid: i32) -> [u8; 16] {
    let mut name = [0u8; 16];
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")) {
        let comm = comm.trim_end().as_bytes();
        let n = comm.len().min(15);
        name[..n].copy_from_slice(&comm[..n]);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn parked_in_a_known_function(
        ready: std::sync::mpsc::Sender<()>,
        stop: std::sync::mpsc::Receiver<()>,
    ) {
        ready.send(()).unwrap();
        let _ = stop.recv();
    }

    #[test]
    fn every_thread_answers_with_its_own_stack() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel();
        let parked = std::thread::Builder::new()
            .name("parked-thread".into())
            .spawn(move || parked_in_a_known_function(ready_tx, stop_rx))
            .unwrap();
        ready_rx.recv().unwrap();
        let mut tids = crate::sys::thread_ids().unwrap();
        tids.sort_unstable();
        let stacks = stacks_of(&tids, PATIENCE).unwrap();
        stop_tx.send(()).unwrap();
        parked.join().unwrap();
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() } as u32;
        assert!(
            stacks.iter().any(|(t, s)| t.tid == me && s.is_some()),
            "this thread"
        );
        let (_, stack) = stacks
            .iter()
            .find(|(t, _)| t.name() == "parked-thread")
            .expect("the parked thread is listed");
        let stack = stack.as_ref().expect("the parked thread answered");
        let here = parked_in_a_known_function as *const () as u64;
        let names: Vec<_> = crate::symbolize::with(|sym| {
            stack
                .iter()
                .enumerate()
                .flat_map(|(i, &a)| {
                    sym.resolve(a, i > 0)
                        .lines
                        .iter()
                        .map(|l| l.function.to_string())
                        .collect::<Vec<_>>()
                })
                .collect()
        });
        assert!(
            names
                .iter()
                .any(|n| n.ends_with("parked_in_a_known_function")),
            "{here:#x}: {names:#?}"
        );
    }
}
