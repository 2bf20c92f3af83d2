//! Threads spawned inside a heap profile or an allocation count belong to it, as perf
//! events follow spawned threads for CPU: profiled defines `pthread_create`, which the
//! program's own calls (std's `thread::spawn`, tokio's and rayon's pools, C code linked in)
//! reach before libc's, and starts the new thread with its creator's session tags, and
//! with clocks for the CPU sessions its creator's events pass on to it.
//!
//! With no session open it forwards at once. Written by hand because no crate hooks thread
//! creation; the real function is found with `dlsym(RTLD_NEXT)`, as every interposer does.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::signal::{CLOCKS, born_into, memberships, thread_ends};
use crate::membership::{Tag, adopt, inherited};

type Start = unsafe extern "C-unwind" fn(*mut c_void) -> *mut c_void;
type Create = unsafe extern "C" fn(
    *mut libc::pthread_t,
    *const libc::pthread_attr_t,
    Start,
    *mut c_void,
) -> c_int;

/// What the new thread needs to start as its creator's: handed over through the start
/// routine's argument.
struct Trampoline {
    start: Start,
    arg: *mut c_void,
    tags: Option<[Tag; 4]>,
    /// The CPU sessions it is sampled for from birth.
    sessions: Option<[u64; CLOCKS]>,
}

/// The new thread's start routine: takes its tags, frees the hand-over, runs the real one.
/// "C-unwind", holding nothing to drop across the call, so that `pthread_exit` and
/// cancellation unwind through it as through the routine itself.
unsafe extern "C-unwind" fn trampoline(hand_over: *mut c_void) -> *mut c_void {
    // SAFETY: `hand_over` is the `Box<Trampoline>` leaked by `pthread_create` below for
    // this thread alone; it is taken back exactly once.
    let t = unsafe { Box::from_raw(hand_over.cast::<Trampoline>()) };
    let (start, arg, tags, sessions) = (t.start, t.arg, t.tags, t.sessions);
    drop(t);
    if let Some(sessions) = sessions {
        born_into(sessions);
    }
    if let Some(tags) = tags {
        adopt(tags);
    }
    // SAFETY: the routine and argument the program passed to `pthread_create`.
    let result = unsafe { start(arg) };
    if sessions.is_some() {
        thread_ends();
    }
    result
}

/// libc's `pthread_create`, found once.
fn real() -> Option<Create> {
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let mut f = REAL.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; it returns the next
        // definition after this object's (libc's) or null.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"pthread_create".as_ptr()) } as usize;
        REAL.store(f, Ordering::Release);
    }
    // SAFETY: a non-null result is libc's pthread_create, whose C signature `Create` is.
    (f != 0).then(|| unsafe { std::mem::transmute::<usize, Create>(f) })
}

/// `pthread_create(3)`, as libc's, with the new thread joining its creator's heap sessions.
///
/// # Safety
///
/// pthread_create's own contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: Start,
    arg: *mut c_void,
) -> c_int {
    let Some(create) = real() else {
        return libc::EAGAIN;
    };
    let (tags, sessions) = (inherited(), memberships());
    if tags.is_none() && sessions.is_none() {
        // SAFETY: the caller's arguments, unchanged, to libc's function.
        return unsafe { create(thread, attr, start, arg) };
    }
    let hand_over = Box::into_raw(Box::new(Trampoline {
        start,
        arg,
        tags,
        sessions,
    }));
    // SAFETY: as above, with our start routine and its hand-over in place of the caller's.
    let rc = unsafe { create(thread, attr, trampoline, hand_over.cast()) };
    if rc != 0 {
        // SAFETY: no thread was created, so the hand-over is still ours alone.
        drop(unsafe { Box::from_raw(hand_over) });
    }
    rc
}
