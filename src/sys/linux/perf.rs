//! Per-thread `perf_event_open` task-clock events that signal the sampled thread itself.
//!
//! The event counts the CPU time of the thread that opens it and, with `inherit`, of every
//! thread that thread spawns afterwards (thread pools, runtime workers), transitively. With
//! `sigtrap` the kernel sends each overflow as a synchronous `SIGTRAP` to the very thread
//! that overflowed, carrying `sig_data` (our session id): exact attribution with no table of
//! thread ids. The clock is an hrtimer, so the rate is not bounded by the kernel tick.
//! Needs Linux 5.13+ and `perf_event_paranoid` <= 2 (self-profiling, user space only).

use std::io;

/// `struct perf_event_attr` up to `sig_data` and `config3` (PERF_ATTR_SIZE_VER8).
/// libc does not define it.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    aux_action: u32,
    sig_data: u64,
    config3: u64,
}

impl PerfEventAttr {
    /// A task-clock event of the size this struct states; the rest zero.
    fn task_clock() -> PerfEventAttr {
        PerfEventAttr {
            kind: PERF_TYPE_SOFTWARE,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config: PERF_COUNT_SW_TASK_CLOCK,
            ..Default::default()
        }
    }
}

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;

// Bits of the attr flags word (linux/perf_event.h).
const INHERIT: u64 = 1 << 1;
const EXCLUDE_KERNEL: u64 = 1 << 5;
const EXCLUDE_HV: u64 = 1 << 6;
const INHERIT_THREAD: u64 = 1 << 35;
const REMOVE_ON_EXEC: u64 = 1 << 36;
const SIGTRAP: u64 = 1 << 37;

/// An open event; closing it stops the thread and its descendants being sampled.
pub(crate) struct PerfEvent {
    fd: libc::c_int,
}

impl PerfEvent {
    /// Starts sampling the calling thread (and threads it spawns from now on) every
    /// `period_ns` of CPU time, tagging samples with `sid`.
    pub(crate) fn open(period_ns: u64, sid: u64) -> io::Result<PerfEvent> {
        PerfEvent::open_on(0, period_ns, sid)
    }

    /// The same for thread `tid` of this process (0: the calling thread). The kernel allows
    /// `sigtrap` events on threads of one's own process without further privilege.
    pub(crate) fn open_on(tid: libc::pid_t, period_ns: u64, sid: u64) -> io::Result<PerfEvent> {
        PerfEvent::open_attr(
            tid,
            PerfEventAttr {
                sample_period: period_ns,
                flags: INHERIT
                    | EXCLUDE_KERNEL
                    | EXCLUDE_HV
                    | INHERIT_THREAD
                    | REMOVE_ON_EXEC
                    | SIGTRAP,
                sig_data: sid,
                ..PerfEventAttr::task_clock()
            },
        )
    }

    /// Counts the calling thread's CPU time alone (no sampling, no signal, not inherited):
    /// beside a sampling event, it tells the thread's share of that event's count.
    pub(crate) fn count_own() -> io::Result<PerfEvent> {
        PerfEvent::open_attr(
            0,
            PerfEventAttr {
                flags: EXCLUDE_KERNEL | EXCLUDE_HV | REMOVE_ON_EXEC,
                ..PerfEventAttr::task_clock()
            },
        )
    }

    fn open_attr(tid: libc::pid_t, attr: PerfEventAttr) -> io::Result<PerfEvent> {
        // SAFETY: `attr` is a fully initialised perf_event_attr of the size it states;
        // pid `tid` (0: this thread) / cpu -1 means "that thread, any CPU".
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                tid,
                -1,
                -1,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PerfEvent {
            fd: fd as libc::c_int,
        })
    }
}

impl PerfEvent {
    pub(crate) fn fd(&self) -> libc::c_int {
        self.fd
    }
}

/// The event's count: task-clock nanoseconds of the thread and of the threads that inherited
/// the event (exited ones included). `None` if the read fails.
pub(crate) fn read_count(fd: libc::c_int) -> Option<u64> {
    let mut value = 0u64;
    // SAFETY: reading 8 bytes into a u64 from an fd we own (read_format 0: one u64).
    let n = unsafe { libc::read(fd, &mut value as *mut u64 as *mut libc::c_void, 8) };
    (n == 8).then_some(value)
}

impl Drop for PerfEvent {
    fn drop(&mut self) {
        // SAFETY: `fd` is our open perf event; DISABLE stops it and its inherited children
        // before close releases them.
        unsafe {
            libc::ioctl(self.fd, PERF_EVENT_IOC_DISABLE, 0);
            libc::close(self.fd);
        }
    }
}
