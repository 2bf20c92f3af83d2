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
        // SAFETY: sigevent is plain data; the fields we set select SIGEV_THREAD_ID delivery to
        // this thread. timer_create and timer_settime only read/write the structs passed.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = libc::SIGPROF;
            sev.sigev_value = libc::sigval {
                sival_ptr: sid as usize as *mut libc::c_void,
            };
            sev.sigev_notify_thread_id = libc::gettid();
            let mut id: libc::timer_t = std::mem::zeroed();
            if libc::timer_create(libc::CLOCK_THREAD_CPUTIME_ID, &mut sev, &mut id) != 0 {
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

impl Drop for CpuTimer {
    fn drop(&mut self) {
        // SAFETY: `id` is a timer we created and have not deleted.
        unsafe { libc::timer_delete(self.id) };
    }
}
