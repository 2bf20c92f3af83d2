//! A program (or another profiler) with its own perf-sigtrap and POSIX-timer signals keeps
//! receiving them while profiled samples: profiled hands every signal that is not one of its
//! sessions' to the handler installed before it. Own test binary with one test: signal
//! dispositions are per process.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::spin;

static OWN_TRAPS: AtomicU64 = AtomicU64::new(0);
static OWN_TIMERS: AtomicU64 = AtomicU64::new(0);
const OWN_DATA: u64 = 0x1234;

extern "C" fn own_handler(sig: i32, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: SA_SIGINFO handler: the kernel passes a valid siginfo_t. The data sits at
    // offset 24 for both TRAP_PERF (si_perf_data) and SI_TIMER (si_value).
    let data = unsafe { (info as *const u8).add(24).cast::<u64>().read_unaligned() };
    if data == OWN_DATA {
        let counter = if sig == libc::SIGTRAP {
            &OWN_TRAPS
        } else {
            &OWN_TIMERS
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn install_own(sig: i32) {
    // SAFETY: a plain SA_SIGINFO handler that only touches atomics.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = own_handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        assert_eq!(libc::sigaction(sig, &action, std::ptr::null_mut()), 0);
    }
}

/// perf_event_attr up to sig_data (PERF_ATTR_SIZE_VER7 plus config3), as the kernel reads it.
#[repr(C)]
#[derive(Default)]
struct Attr {
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

/// The program's own task-clock perf event with `sigtrap`, on this thread, every
/// [`OWN_PERIOD_NS`] of CPU.
fn own_perf_event() -> i32 {
    let attr = Attr {
        kind: 1,   // PERF_TYPE_SOFTWARE
        config: 1, // PERF_COUNT_SW_TASK_CLOCK
        size: std::mem::size_of::<Attr>() as u32,
        sample_period: OWN_PERIOD_NS,
        // exclude_kernel, exclude_hv, remove_on_exec, sigtrap
        flags: (1 << 5) | (1 << 6) | (1 << 36) | (1 << 37),
        sig_data: OWN_DATA,
        ..Default::default()
    };
    // SAFETY: a complete attr of the size it states, for this thread.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            0,
            -1,
            -1,
            8,
        )
    };
    assert!(
        fd >= 0,
        "perf_event_open: {}",
        std::io::Error::last_os_error()
    );
    fd as i32
}

/// The program's own POSIX timer, SIGPROF to this thread every 4 ms. On the monotonic clock:
/// CPU-time timers expire only at kernel ticks, where profiled's timer engine (tick-bound
/// too) also fires, and the second SIGPROF of a tick is merged into the first.
fn own_timer() -> libc::timer_t {
    // SAFETY: plain timer_create/timer_settime on this thread's CPU clock.
    unsafe {
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGPROF;
        sev.sigev_value = libc::sigval {
            sival_ptr: OWN_DATA as usize as *mut libc::c_void,
        };
        sev.sigev_notify_thread_id = libc::gettid();
        let mut id: libc::timer_t = std::mem::zeroed();
        assert_eq!(
            libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id),
            0
        );
        let period = libc::timespec {
            tv_sec: 0,
            tv_nsec: 4_000_000,
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        assert_eq!(libc::timer_settime(id, 0, &spec, std::ptr::null_mut()), 0);
        id
    }
}

/// Not profiled's 1 ms, nor a multiple, so that fewer of the two events' overflows fall due
/// together: `SIGTRAP` (like `SIGPROF`) is not queued, and a pending one swallows the next,
/// whoever owns them.
const OWN_PERIOD_NS: u64 = 1_300_000;

/// How many of each kind of signal must arrive. A handler that swallowed the program's
/// signals would leave none; the kernel merging two pending signals of one number took up
/// to four in five next to a CPU hog, so the counts say that signals are passed on, not how
/// many the kernel kept.
const ARRIVED: u64 = 10;

#[test]
fn the_programs_own_signals_still_reach_it() {
    install_own(libc::SIGTRAP);
    install_own(libc::SIGPROF);
    for engine in ["perf", "timer"] {
        let config = profiled::Config::parse(&format!("cpu,engine={engine}"))
            .unwrap()
            .unwrap();
        OWN_TRAPS.store(0, Ordering::Relaxed);
        OWN_TIMERS.store(0, Ordering::Relaxed);
        let profile = profiled::Profile::start("foreign", &config).unwrap();
        let fd = own_perf_event();
        let timer = own_timer();
        spin(Duration::from_millis(300));
        // SAFETY: our own fd and timer.
        unsafe {
            libc::close(fd);
            libc::timer_delete(timer);
        }
        let report = profile.finish().unwrap().remove(0);
        let (traps, timers) = (
            OWN_TRAPS.load(Ordering::Relaxed),
            OWN_TIMERS.load(Ordering::Relaxed),
        );
        // 300 ms of CPU: ~230 perf signals at 1.3 ms; 300 ms of wall time at least: ~75 timer
        // signals at 4 ms.
        assert!(
            traps >= ARRIVED,
            "engine {engine}: own perf signals {traps}"
        );
        assert!(
            timers >= ARRIVED,
            "engine {engine}: own timer signals {timers}"
        );
        assert!(
            report.samples() >= ARRIVED,
            "engine {engine}: {} samples",
            report.samples()
        );
    }
}
