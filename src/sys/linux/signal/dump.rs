//! Thread dumps: one `SIGPROF` queued to a thread (`rt_tgsigqueueinfo`, `SI_QUEUE`, with
//! [`DUMP_TAG`] and a cell index in `si_value`) makes its handler walk that thread's stack
//! into the cell. The `/debug/pprof/threads` endpoint asks every thread of the process this
//! way, a batch of [`CELLS`] at a time.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};

use super::ring::{MAX_DEPTH, Thread};

/// Threads asked at once.
pub(crate) const CELLS: usize = 64;
/// Marks a queued signal as a dump request: "pdt" in the bits above the cell index.
pub(crate) const DUMP_TAG: u64 = 0x0070_6474 << 40;
const TAG_MASK: u64 = 0x00ff_ffff << 40;

pub(crate) const IDLE: u32 = 0;
pub(crate) const ASKED: u32 = 1;
const WRITING: u32 = 2;
pub(crate) const DONE: u32 = 3;

/// One thread's answer. The requester owns `thread`/`frames` while the state is `IDLE` or
/// `ASKED`; the handler of thread `tid` owns them from its `ASKED -> WRITING` exchange
/// until it stores `DONE`.
pub(crate) struct Cell {
    pub tid: AtomicI32,
    pub state: AtomicU32,
    pub depth: AtomicUsize,
    pub thread: UnsafeCell<Thread>,
    pub frames: UnsafeCell<[u64; MAX_DEPTH]>,
}

// SAFETY: `thread` and `frames` are written only by the one party the state machine above
// gives them to at a time, and read by the requester only after an Acquire load of `DONE`.
unsafe impl Sync for Cell {}

#[allow(clippy::declare_interior_mutable_const)] // Only used to initialise `CELLS_`.
const EMPTY: Cell = Cell {
    tid: AtomicI32::new(0),
    state: AtomicU32::new(IDLE),
    depth: AtomicUsize::new(0),
    thread: UnsafeCell::new(Thread {
        tid: 0,
        name: [0; 16],
    }),
    frames: UnsafeCell::new([0; MAX_DEPTH]),
};

pub(crate) static BOARD: [Cell; CELLS] = [EMPTY; CELLS];

/// Whether a queued signal's value is a dump request.
pub(crate) fn is_dump(value: u64) -> bool {
    value & TAG_MASK == DUMP_TAG
}

/// Signal context: answers the request in cell `value & 0xff` if it is this thread's.
pub(crate) fn answer(value: u64, ctx: *mut libc::c_void) {
    let Some(cell) = BOARD.get((value & 0xff) as usize) else {
        return;
    };
    let thread = super::who();
    if cell.tid.load(Ordering::Acquire) != thread.tid as i32 {
        return;
    }
    if cell
        .state
        .compare_exchange(ASKED, WRITING, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let (pc, sp, bp) = super::registers(ctx);
    // SAFETY: this handler won the ASKED -> WRITING exchange, so it alone writes the cell
    // until it stores DONE; the requester reads only after seeing DONE.
    let (frames, slot) = unsafe { (&mut *cell.frames.get(), &mut *cell.thread.get()) };
    let (depth, _) = super::walk(pc, sp, bp, frames);
    *slot = thread;
    cell.depth.store(depth, Ordering::Relaxed);
    cell.state.store(DONE, Ordering::Release);
}
