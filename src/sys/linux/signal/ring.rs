//! Preallocated lock-free multi-producer, single-consumer queue of raw samples.
//!
//! Producers are signal handlers on any thread: they claim a cell with one CAS, fill it in
//! place and publish it with a release store, so they never block and never allocate. When the
//! queue is full the producer gives up and the caller counts the sample as lost. This is
//! Dmitry Vyukov's bounded queue, with a single consumer (the drain, under a mutex).
//!
//! # Atomic orderings
//! A cell's `seq` is the handshake: the producer's `Release` store of `pos + 1` publishes the
//! cell's contents to the consumer's `Acquire` load; the consumer's `Release` store of
//! `pos + capacity` hands the cell back to the producer that will `Acquire` it next lap.

// Under the signal-context lint fence of `super` (no panics, no unchecked arithmetic).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) use crate::stack::Thread;
pub(crate) use crate::stack::{MAX_DEPTH, TRUNCATED};

/// One sample as the signal handler writes it.
#[repr(C)]
pub(crate) struct RawSample {
    /// Session the sample belongs to.
    pub sid: u64,
    /// Where it was taken.
    pub thread: Thread,
    /// The session's reset generation when the sample was taken.
    pub generation: u32,
    /// Number of valid entries in `frames`.
    pub depth: u32,
    /// Thread CPU time this sample stands for.
    pub weight_ns: u64,
    /// `frames[0]` is the interrupted instruction, then return addresses outwards.
    pub frames: [u64; MAX_DEPTH],
}

struct Cell {
    /// Vyukov's sequence number minus the cell's index, so that all-zero memory is the
    /// initial state and a new ring needs no writes: its pages stay untouched (and out of the
    /// process's RSS) until samples land in them.
    seq: AtomicUsize,
    sample: UnsafeCell<RawSample>,
}

impl Cell {
    /// The sequence number of the cell at `index` (acquire).
    fn seq(&self, index: usize) -> usize {
        self.seq.load(Ordering::Acquire).wrapping_add(index)
    }

    /// Sets the sequence number of the cell at `index` (release).
    fn set_seq(&self, index: usize, seq: usize) {
        self.seq.store(seq.wrapping_sub(index), Ordering::Release);
    }
}

pub(crate) struct Ring {
    cells: Box<[Cell]>,
    mask: usize,
    enqueue: AtomicUsize,
    /// Owned by the consumer; atomic only so `is_empty` can be asked from anywhere.
    dequeue: AtomicUsize,
}

// SAFETY: cells are only accessed by the producer that claimed them (between the CAS and the
// release store) or by the single consumer (after the acquire load), per the seq protocol.
unsafe impl Sync for Ring {}

/// What the consumer found at the head of the queue.
pub(crate) enum Pop<'a> {
    Sample(&'a RawSample),
    /// Nothing was pushed.
    Empty,
    /// A producer claimed the head cell and has not published it yet.
    Busy,
}

/// `len` values of `T`, allocated zeroed: the pages stay untouched (and out of the
/// process's RSS) until written.
///
/// # Safety
/// All-zero bytes must be a valid `T`, and `T` must not be zero-sized.
pub(crate) unsafe fn zeroed_slice<T>(len: usize) -> Box<[T]> {
    assert!(len > 0 && std::mem::size_of::<T>() > 0);
    let Ok(layout) = std::alloc::Layout::array::<T>(len) else {
        std::process::abort()
    };
    // SAFETY: the layout is not zero-sized (checked above); the caller vouches that zeroed
    // memory is a valid T, so the slice is initialised; the Box frees it with this layout.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len))
    }
}

impl Ring {
    /// A ring of `capacity` cells (a power of two), allocated zeroed now.
    pub(crate) fn new(capacity: usize) -> Ring {
        assert!(capacity.is_power_of_two());
        // SAFETY: all-zero bytes are a valid Cell (atomics and plain integers).
        let cells = unsafe { zeroed_slice::<Cell>(capacity) };
        Ring {
            cells,
            mask: capacity.wrapping_sub(1),
            enqueue: AtomicUsize::new(0),
            dequeue: AtomicUsize::new(0),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.mask.wrapping_add(1)
    }

    /// Samples claimed but not yet consumed (an estimate while producers run).
    pub(crate) fn len(&self) -> usize {
        self.enqueue
            .load(Ordering::Relaxed)
            .wrapping_sub(self.dequeue.load(Ordering::Relaxed))
    }

    /// Claims a cell, lets `fill` write the sample in place and publishes it.
    /// Returns false, without calling `fill`, when the ring is full. Async-signal-safe.
    pub(crate) fn push_with(&self, fill: impl FnOnce(&mut RawSample)) -> bool {
        let mut pos = self.enqueue.load(Ordering::Relaxed);
        loop {
            let index = pos & self.mask;
            let Some(cell) = self.cells.get(index) else {
                return false;
            };
            let dif = cell.seq(index).wrapping_sub(pos) as isize;
            if dif == 0 {
                match self.enqueue.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the CAS made this producer the cell's only owner until the
                        // release store below.
                        fill(unsafe { &mut *cell.sample.get() });
                        cell.set_seq(index, pos.wrapping_add(1));
                        return true;
                    }
                    Err(now) => pos = now,
                }
            } else if dif < 0 {
                return false;
            } else {
                pos = self.enqueue.load(Ordering::Relaxed);
            }
        }
    }

    /// Looks at the oldest sample and, if `take` returns, releases its cell.
    /// Only one consumer may call this at a time (the caller holds the drain lock).
    pub(crate) fn pop_with<R>(&self, take: impl FnOnce(Pop<'_>) -> R) -> R {
        let pos = self.dequeue.load(Ordering::Relaxed);
        let index = pos & self.mask;
        let Some(cell) = self.cells.get(index) else {
            return take(Pop::Empty);
        };
        if cell.seq(index) == pos.wrapping_add(1) {
            // SAFETY: the acquire load saw the producer's release: the cell is complete and
            // no producer touches it until we hand it back.
            let result = take(Pop::Sample(unsafe { &*cell.sample.get() }));
            self.dequeue.store(pos.wrapping_add(1), Ordering::Relaxed);
            cell.set_seq(index, pos.wrapping_add(self.mask).wrapping_add(1));
            result
        } else if self.enqueue.load(Ordering::Relaxed) == pos {
            take(Pop::Empty)
        } else {
            take(Pop::Busy)
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::unwrap_used,
    clippy::expect_used
)] // Tests, not signal context.
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_and_full() {
        let ring = Ring::new(4);
        for i in 0..4 {
            assert!(ring.push_with(|s| s.weight_ns = i));
        }
        assert!(!ring.push_with(|_| unreachable!()), "full ring refuses");
        for i in 0..4 {
            ring.pop_with(|p| match p {
                Pop::Sample(s) => assert_eq!(s.weight_ns, i),
                _ => panic!("expected a sample"),
            });
        }
        assert!(ring.pop_with(|p| matches!(p, Pop::Empty)));
    }

    #[test]
    fn concurrent_producers_lose_nothing_they_report_pushed() {
        let ring = Arc::new(Ring::new(1024));
        let producers: Vec<_> = (0..4)
            .map(|t| {
                let ring = ring.clone();
                std::thread::spawn(move || {
                    let mut pushed = 0u64;
                    for i in 0..20_000u64 {
                        if ring.push_with(|s| {
                            s.sid = t;
                            s.weight_ns = i;
                        }) {
                            pushed += 1;
                        }
                    }
                    pushed
                })
            })
            .collect();
        let mut popped = 0u64;
        let mut last = [None::<u64>; 4];
        let mut done = false;
        while !done {
            done = producers.iter().all(|p| p.is_finished());
            loop {
                let got = ring.pop_with(|p| match p {
                    Pop::Sample(s) => Some((s.sid, s.weight_ns)),
                    _ => None,
                });
                let Some((t, i)) = got else { break };
                // Each producer's samples come out in its own order.
                assert!(last[t as usize].is_none_or(|l| l < i));
                last[t as usize] = Some(i);
                popped += 1;
            }
        }
        let pushed: u64 = producers.into_iter().map(|p| p.join().unwrap()).sum();
        while ring.pop_with(|p| matches!(p, Pop::Sample(_))) {
            popped += 1;
        }
        assert_eq!(pushed, popped);
    }
}
