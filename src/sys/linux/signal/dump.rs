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
const DUMP_TAG: u64 = 0x0070_6474 << 40;
const TAG_MASK: u64 = 0x00ff_ffff << 40;

const IDLE: u32 = 0;
const ASKED: u32 = 1;
const WRITING: u32 = 2;
const DONE: u32 = 3;

/// One thread's answer. The requester owns `thread`/`frames` while the state is `IDLE` or
/// `ASKED`; the handler of thread `tid` owns them from its `ASKED -> WRITING` exchange
/// until it stores `DONE`.
struct Cell {
    tid: AtomicI32,
    state: AtomicU32,
    depth: AtomicUsize,
    thread: UnsafeCell<Thread>,
    frames: UnsafeCell<[u64; MAX_DEPTH]>,
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

static BOARD: [Cell; CELLS] = [EMPTY; CELLS];

/// The requester's side (one requester at a time: the caller serializes): cell `i` asks
/// thread `tid`; the value to queue to it with `SIGPROF`.
pub(crate) fn ask(i: usize, tid: i32) -> Option<u64> {
    let cell = BOARD.get(i)?;
    cell.tid.store(tid, Ordering::Relaxed);
    cell.depth.store(0, Ordering::Relaxed);
    cell.state.store(ASKED, Ordering::Release);
    Some(DUMP_TAG | i as u64)
}

/// Whether the first `n` cells have all been answered.
pub(crate) fn all_answered(n: usize) -> bool {
    BOARD
        .iter()
        .take(n)
        .all(|c| c.state.load(Ordering::Acquire) == DONE)
}

/// Takes cell `i` back: its answer, or `None` when its thread has not answered (an answer
/// that comes later is ignored; a handler that is writing now is waited for: it walks one
/// stack, microseconds). The cell is free again after.
pub(crate) fn take(i: usize) -> Option<(Thread, Vec<u64>)> {
    let cell = BOARD.get(i)?;
    while cell
        .state
        .compare_exchange(ASKED, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
        && cell.state.load(Ordering::Acquire) != DONE
    {
        std::thread::yield_now();
    }
    let answer = (cell.state.load(Ordering::Acquire) == DONE).then(|| {
        // SAFETY: DONE, seen with Acquire: the handler has finished writing and will not
        // write again until the cell is asked again, by the requester.
        let (thread, frames) = unsafe { (*cell.thread.get(), &*cell.frames.get()) };
        let depth = cell.depth.load(Ordering::Relaxed).min(frames.len());
        (thread, frames.get(..depth).unwrap_or_default().to_vec())
    });
    cell.state.store(IDLE, Ordering::Release);
    cell.tid.store(0, Ordering::Relaxed);
    answer
}

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
