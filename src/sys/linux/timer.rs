//! Fallback source: a POSIX timer on the calling thread's CPU clock, signalling that thread.
//!
//! Works wherever perf events are refused (containers, `perf_event_paranoid` 3), but the
//! kernel checks CPU timers only on its tick (250 Hz here), and it cannot follow threads the
//! profiled thread spawns. Each sample still weighs the CPU time that really elapsed.

use std::io;

/// An armed timer; dropping it deletes the timer.
pub(crate) struct CpuTimer {
    id: libc::timer_t,
}

// SAFETY: a timer_t is a kernel handle; deleting it from another thread is allowed.
unsafe impl Send for CpuTimer {}

impl CpuTimer {
    /// Sends `SIGPROF` carrying `sid` to the calling thread every `period_ns` of its CPU time.
    pub(crate) fn start(period_ns: u64, sid: u64) -> io::Result<CpuTimer> {
        // SAFETY: gettid has no preconditions.
        CpuTimer::start_on(
            unsafe { libc::gettid() },
            libc::CLOCK_THREAD_CPUTIME_ID,
            period_ns,
            sid,
        )
    }

    /// The same for thread `tid` of this process, on its CPU clock.
    pub(crate) fn start_for(tid: libc::pid_t, period_ns: u64, sid: u64) -> io::Result<CpuTimer> {
        CpuTimer::start_on(tid, thread_cpu_clock(tid), period_ns, sid)
    }

    fn start_on(
        tid: libc::pid_t,
        clock: libc::clockid_t,
        period_ns: u64,
        sid: u64,
    ) -> io::Result<CpuTimer> {
        // SAFETY: sigevent is plain data; the fields we set select SIGEV_THREAD_ID delivery to
        // this thread. timer_create and timer_settime only read/write the structs passed.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGPROF;
            sev.sigev_value = libc::sigval {
                sival_ptr: sid as usize as *mut libc::c_void,
            };
            sev.sigev_notify_thread_id = tid;
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(clock, &mut sev, &mut id) != 0 {
                return Err(io::Error::last_os_error());
            }
            let period = libc::timespec {
                tv_sec: (period_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (period_ns % 1_000_000_000) as libc::c_long,
            };
            let spec = libc::itimerspec {
                it_interval: period,
                it_value: period,
            };
            if libc::timer_settime(id, 0, &spec, std::ptr::null_mut()) != 0 {
                let err = io::Error::last_os_error();
                libc::timer_delete(id);
                return Err(err);
            }
            Ok(CpuTimer { id })
        }
    }
}

/// The CPU clock of thread `tid` of this process: the kernel's encoding of a per-thread
/// scheduler clock, `MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)`, which is what glibc's
/// `pthread_getcpuclockid` returns; we have thread ids, not `pthread_t`s.
pub(crate) fn thread_cpu_clock(tid: libc::pid_t) -> libc::clockid_t {
    const CPUCLOCK_PERTHREAD_MASK: libc::clockid_t = 4;
    const CPUCLOCK_SCHED: libc::clockid_t = 2;
    ((!tid) << 3) | CPUCLOCK_PERTHREAD_MASK | CPUCLOCK_SCHED
}

/// CPU time used so far by thread `tid` of this process, if it still exists.
pub(crate) fn thread_cpu_ns(tid: libc::pid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec; an exited thread's clock gives EINVAL.
    let r = unsafe { libc::clock_gettime(thread_cpu_clock(tid), &mut ts) };
    (r == 0).then(|| ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl Drop for CpuTimer {
    fn drop(&mut self) {
        // SAFETY: `id` is a timer we created and have not deleted.
        unsafe { libc::timer_delete(self.id) };
    }
}
