//! Stack walking that is safe inside a signal handler: framehop over the `.eh_frame` tables
//! already mapped in memory, with caches preallocated outside the handler.
//!
//! Frame pointers are not needed: Rust's std is built without them, so a frame-pointer walk
//! loses every stack that passes through std. framehop falls back to frame pointers only where
//! an address has no CFI.
//!
//! **Invariant:** nothing here allocates, locks or panics once [`prepare`] has returned; stack
//! memory is read only after the page was found readable (`process_vm_readv` on ourselves
//! returns `EFAULT` instead of faulting), and readable pages are remembered per thread.

// Under the signal-context lint fence of `super` (no panics, no unchecked arithmetic).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, MustNotAllocateDuringUnwind, Unwinder};

use super::ring::MAX_DEPTH;
use super::ring::TRUNCATED;
use crate::modules::Module;

/// Section data is borrowed straight from the loaded image: no copies, nothing to free.
#[derive(Clone, Copy, Default)]
pub(crate) struct Mapped(&'static [u8]);

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.0
    }
}

type Framehop = UnwinderX86_64<Mapped, MustNotAllocateDuringUnwind>;

/// An unwinder and the code it knows: where a walk that stopped early stopped says whether
/// it met code loaded since (see [`NEW_CODE`]).
struct Walker {
    framehop: Framehop,
    text: Box<[std::ops::Range<u64>]>,
}
type Cache = CacheX86_64<MustNotAllocateDuringUnwind>;

/// Handlers running at the same moment on different threads each need a cache.
const CACHES: usize = 16;

struct CacheSlot {
    busy: AtomicBool,
    cache: std::cell::UnsafeCell<Cache>,
}

// SAFETY: a slot's cache is only touched by the handler that set `busy` (acquire) until it
// clears it (release).
unsafe impl Sync for CacheSlot {}

static WALKER: AtomicPtr<Walker> = AtomicPtr::new(std::ptr::null_mut());
static POOL: AtomicPtr<CacheSlot> = AtomicPtr::new(std::ptr::null_mut());
static MODULES_GENERATION: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether a handler's walk stopped in code the unwinder does not know, most likely a
/// library `dlopen`ed since it was built: [`QUIET`], [`SEEN`] (the drain thread is woken to
/// rebuild it now rather than at its next interval, which may be 50 ms away), or [`LOOKED`]
/// (it was, and the unknown code is not a new module: no more wakes until the next rebuild).
static NEW_CODE: AtomicU32 = AtomicU32::new(QUIET);
const QUIET: u32 = 0;
const SEEN: u32 = 1;
const LOOKED: u32 = 2;

/// Builds (or rebuilds, after a `dlopen`) the unwinder for the loaded modules.
/// Called from session start, never from the handler. Old unwinders are leaked on purpose:
/// a handler on another thread may still be using one.
pub(crate) fn prepare(modules: &[Module], generation: u64) {
    if POOL.load(Ordering::Acquire).is_null() {
        let pool: Box<[CacheSlot]> = (0..CACHES)
            .map(|_| CacheSlot {
                busy: AtomicBool::new(false),
                cache: Cache::new_in().into(),
            })
            .collect();
        POOL.store(Box::leak(pool).as_mut_ptr(), Ordering::Release);
    }
    if MODULES_GENERATION.swap(generation, Ordering::AcqRel) == generation {
        return;
    }
    let mut walker = Framehop::new();
    let mut text = Vec::with_capacity(modules.len());
    for m in modules {
        text.push(m.text.clone());
        let (Some(hdr), Some(eh)) = (&m.eh_frame_hdr, &m.eh_frame) else {
            continue;
        };
        // SAFETY: both ranges lie in segments the dynamic loader mapped readable, and they
        // stay mapped while the object is loaded (unloading bumps the generation).
        let (hdr_data, eh_data) = unsafe {
            (
                std::slice::from_raw_parts(hdr.start as *const u8, len(hdr)),
                std::slice::from_raw_parts(eh.start as *const u8, len(eh)),
            )
        };
        // SAFETY: the executable segment is mapped readable (r-x) for as long as the object.
        let text = unsafe { std::slice::from_raw_parts(m.text.start as *const u8, len(&m.text)) };
        let svma =
            |r: &std::ops::Range<u64>| r.start.wrapping_sub(m.bias)..r.end.wrapping_sub(m.bias);
        let info = ExplicitModuleSectionInfo {
            base_svma: 0,
            text_svma: Some(svma(&m.text)),
            text: Some(Mapped(text)),
            eh_frame_svma: Some(svma(eh)),
            eh_frame: Some(Mapped(eh_data)),
            eh_frame_hdr_svma: Some(svma(hdr)),
            eh_frame_hdr: Some(Mapped(hdr_data)),
            ..Default::default()
        };
        walker.add_module(framehop::Module::new(
            m.path.display().to_string(),
            m.text.clone(),
            m.bias,
            info,
        ));
    }
    let walker = Walker {
        framehop: walker,
        text: text.into(),
    };
    WALKER.store(Box::into_raw(Box::new(walker)), Ordering::Release);
    NEW_CODE.store(QUIET, Ordering::Release);
    #[cfg(feature = "__test-hooks")]
    INSTALLED.store(generation, Ordering::Release);
}

/// The module generation of the unwinder installed last (test hooks only: the generation in
/// [`MODULES_GENERATION`] is claimed before its unwinder is built).
#[cfg(feature = "__test-hooks")]
static INSTALLED: AtomicU64 = AtomicU64::new(u64::MAX);

/// Whether the installed unwinder knows every module loaded now.
#[cfg(feature = "__test-hooks")]
pub(crate) fn knows_every_module() -> bool {
    INSTALLED.load(Ordering::Acquire) == crate::sys::modules_generation()
}

/// A walk met `address`: if no known module holds it, wakes the drain thread (once
/// per rebuild) to look for new modules. Async-signal-safe: a scan and a futex wake.
fn stopped_at(walker: &Walker, address: u64) {
    if walker.text.iter().any(|t| t.contains(&address)) {
        return;
    }
    if NEW_CODE
        .compare_exchange(QUIET, SEEN, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: FUTEX_WAKE on a static word; a plain system call, async-signal-safe.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                NEW_CODE.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            )
        };
    }
}

/// Sleeps for `limit`, or less if a handler meets code the unwinder does not know; says
/// whether one did. The drain thread's sleep between drains.
pub(crate) fn sleep_unless_new_code(limit: Duration) -> bool {
    let state = NEW_CODE.load(Ordering::Acquire);
    if state != SEEN {
        let timeout = libc::timespec {
            tv_sec: limit.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_nsec: limit.subsec_nanos().into(),
        };
        // SAFETY: FUTEX_WAIT on a static word with a valid relative timeout: returns at the
        // timeout, on a wake, or at once if the word is no longer `state`.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                NEW_CODE.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                state,
                &timeout as *const libc::timespec,
            )
        };
    }
    NEW_CODE.load(Ordering::Acquire) == SEEN
}

/// The unknown code a handler met was looked for among the loaded modules: no more wakes
/// for it until the unwinder is rebuilt (unless [`prepare`] just did that).
pub(crate) fn new_code_looked_at() {
    let _ = NEW_CODE.compare_exchange(SEEN, LOOKED, Ordering::AcqRel, Ordering::Relaxed);
}

/// The length of an address range (0 for an inverted one).
fn len(r: &std::ops::Range<u64>) -> usize {
    r.end.saturating_sub(r.start) as usize
}

thread_local! {
    /// Page-aligned stack range of this thread already found readable.
    static READABLE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

const PAGE: u64 = 4096;

/// Is the 8-byte word at `addr` (at or above the stack pointer) readable? Remembers one
/// contiguous range of readable pages that holds the stack pointer, so a thread asks the
/// kernel about each page of its stack once. A word far above `sp` (unoptimised frames are
/// kilobytes) first has the pages between probed, so the range still holds `sp` after.
///
/// Only pages below `limit` (the top of the thread's own stack, see [`stack_limit`]) are
/// remembered: a page beyond it belongs to some other mapping, which may be unmapped later,
/// so it is asked about on every read.
fn readable(addr: u64, sp: u64, limit: u64) -> bool {
    let (lo, hi) = READABLE.with(Cell::get);
    if addr >= lo && addr.saturating_add(8) <= hi && sp >= lo && sp < hi {
        return true;
    }
    if addr % PAGE > PAGE - 8 {
        return false;
    }
    let (sp_page, page) = (sp & !(PAGE - 1), addr & !(PAGE - 1));
    if page.saturating_add(PAGE) > limit {
        return probe(page);
    }
    // The range to know: from sp's page to addr's, joined with what is known if they touch.
    let (mut want_lo, mut want_hi) = (sp_page, page.saturating_add(PAGE));
    let joins = lo < hi && lo <= want_hi && want_lo <= hi;
    if joins {
        (want_lo, want_hi) = (want_lo.min(lo), want_hi.max(hi).min(limit));
    }
    if want_hi.saturating_sub(want_lo) / PAGE > MAX_PROBES {
        return probe(page);
    }
    let mut p = want_lo;
    while p < want_hi {
        let known = joins && p >= lo && p < hi;
        if !(known || probe(p)) {
            // Not one stack: answer for this word alone, remember nothing.
            return p != page && probe(page);
        }
        p = p.saturating_add(PAGE);
    }
    READABLE.with(|r| r.set((want_lo, want_hi)));
    true
}

/// The first page above the interrupted thread's own stack, as far as it can be known in a
/// signal handler: the x86-64 TLS ABI keeps the thread pointer at `%fs:0`, and glibc and
/// musl place a thread's control block at the top of the mapping its stack lives in, so
/// for a spawned thread every page below the thread pointer's page is its own stack. The
/// main thread's control block is elsewhere (below its stack): no limit then, and its
/// stack is the kernel's `[stack]` mapping, which nothing is mapped against.
fn stack_limit(sp: u64) -> u64 {
    let tp: u64;
    // SAFETY: reads the thread pointer the x86-64 ABI stores at %fs:0; no memory is
    // written, the stack is not touched.
    unsafe {
        std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags));
    }
    if tp > sp { tp & !(PAGE - 1) } else { u64::MAX }
}

/// Pages probed at most to join a word to the known stack range (256 KiB).
const MAX_PROBES: u64 = 64;

/// Asks the kernel whether `page` is mapped readable.
fn probe(page: u64) -> bool {
    let mut word = 0u64;
    let local = libc::iovec {
        iov_base: &mut word as *mut u64 as *mut _,
        iov_len: 8,
    };
    let remote = libc::iovec {
        iov_base: page as *mut _,
        iov_len: 8,
    };
    // SAFETY: process_vm_readv on our own pid copies into `word` or fails with EFAULT; it is a
    // plain system call and async-signal-safe.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    n == 8
}

/// Frames walked at most for one sample: deep enough for a 2000-deep recursion to keep its
/// root, bounded so a runaway stack cannot keep the handler busy.
const MAX_WALK: usize = 2048;
/// A stack deeper than `frames` keeps its innermost frames and its outermost ones (which
/// name the test), with [`TRUNCATED`] between them.
const KEEP_ROOT: usize = MAX_DEPTH / 2 - 1;
const KEEP_LEAF: usize = MAX_DEPTH - KEEP_ROOT - 1;

/// A walked stack.
pub(crate) struct Walked {
    pub depth: usize,
    /// Frames were left out in the middle (marked by [`TRUNCATED`]).
    pub cut: bool,
}

/// Walks the interrupted thread's stack into `frames`: the interrupted pc first, then return
/// addresses. `None` when no cache was free (the caller keeps the leaf alone).
///
/// Async-signal-safe once [`prepare`] has run.
pub(crate) fn walk(pc: u64, sp: u64, bp: u64, frames: &mut [u64; MAX_DEPTH]) -> Option<Walked> {
    let walker = WALKER.load(Ordering::Acquire);
    let pool = POOL.load(Ordering::Acquire);
    if walker.is_null() || pool.is_null() {
        return None;
    }
    // SAFETY: `prepare` leaked a CACHES-long array at `pool` and never frees it.
    let pool = unsafe { std::slice::from_raw_parts(pool, CACHES) };
    let slot = pool.iter().find(|s| {
        s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    })?;
    // SAFETY: walkers are leaked, never freed; `busy` gives us the cache exclusively.
    let (walker, cache) = unsafe { (&*walker, &mut *slot.cache.get()) };
    let limit = stack_limit(sp);
    let mut read = |addr: u64| -> Result<u64, ()> {
        if addr % 8 != 0 || addr < sp || addr.abs_diff(sp) > 64 << 20 || !readable(addr, sp, limit)
        {
            return Err(());
        }
        // SAFETY: `readable` checked that the aligned word's page is mapped readable: either
        // just now, or earlier for a page of this thread's own stack below `limit`, which
        // stays mapped while the thread runs this handler.
        Ok(unsafe { (addr as *const u64).read_volatile() })
    };
    let mut iter =
        walker
            .framehop
            .iter_frames(pc, UnwindRegsX86_64::new(pc, sp, bp), cache, &mut read);
    // Frames past `frames` go round in `beyond`, so its last KEEP_ROOT are the outermost.
    let mut beyond = [0u64; KEEP_ROOT];
    let mut total = 0;
    while total < MAX_WALK {
        let Ok(Some(frame)) = iter.next() else { break };
        let cell = match frames.get_mut(total) {
            Some(cell) => cell,
            None => match beyond.get_mut(total.wrapping_sub(MAX_DEPTH) % KEEP_ROOT) {
                Some(cell) => cell,
                None => break,
            },
        };
        *cell = frame.address();
        total = total.saturating_add(1);
    }
    slot.busy.store(false, Ordering::Release);
    if total <= MAX_DEPTH {
        // The pc in unknown code (framehop's fallback then guesses, or stops), or a walk
        // that ended on it.
        stopped_at(walker, pc);
        if let Some(&last) = total.checked_sub(1).and_then(|i| frames.get(i)) {
            stopped_at(walker, last);
        }
        return Some(Walked {
            depth: total,
            cut: false,
        });
    }
    // The outermost KEEP_ROOT frames, in order: sequence indices total-KEEP_ROOT..total.
    let mut root = [0u64; KEEP_ROOT];
    for (k, out) in root.iter_mut().enumerate() {
        let i = total.saturating_sub(KEEP_ROOT).saturating_add(k);
        *out = match frames.get(i) {
            Some(&f) => f,
            None => beyond
                .get(i.wrapping_sub(MAX_DEPTH) % KEEP_ROOT)
                .copied()
                .unwrap_or(0),
        };
    }
    if let Some(mark) = frames.get_mut(KEEP_LEAF) {
        *mark = TRUNCATED;
    }
    if let Some(dst) = frames.get_mut(KEEP_LEAF + 1..) {
        dst.copy_from_slice(&root);
    }
    Some(Walked {
        depth: MAX_DEPTH,
        cut: true,
    })
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

    /// The stack pointer of the caller, near enough: the address of a local.
    #[inline(never)]
    fn here() -> u64 {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as u64
    }

    #[test]
    fn stack_pages_are_probed_once_and_joined_to_the_stack_pointer() {
        std::thread::spawn(|| {
            let big = std::hint::black_box([7u64; 4096]); // 32 KiB of frame above sp
            let sp = here() & !7;
            let far = &big[4090] as *const u64 as u64;
            assert!(far - sp > 7 * PAGE);
            assert!(readable(far, sp, u64::MAX));
            let (lo, hi) = READABLE.with(Cell::get);
            assert!(
                lo <= sp && sp < hi && far < hi,
                "{lo:x}..{hi:x} holds sp and the word"
            );
            // Known now: nothing to ask the kernel, the range stays.
            assert!(readable(&big[10] as *const u64 as u64, sp, u64::MAX));
            assert_eq!(READABLE.with(Cell::get), (lo, hi));
            // Unmapped memory is refused and not remembered.
            assert!(!readable(sp + (1 << 40), sp, u64::MAX));
            assert_eq!(READABLE.with(Cell::get), (lo, hi));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_spawned_threads_stack_ends_below_its_thread_pointer() {
        std::thread::spawn(|| {
            let sp = here();
            let limit = stack_limit(sp);
            assert!(limit > sp && limit != u64::MAX, "{limit:x} above sp {sp:x}");
            // Every page from sp's up to the limit is this thread's stack: readable.
            assert!(readable(limit - 8, sp, limit));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pages_past_the_stack_are_never_remembered() {
        std::thread::spawn(|| {
            // Two adjacent pages: the lower one stands for the top of a stack, the upper one
            // for a neighbouring mapping that goes away later.
            // SAFETY: anonymous private mappings we own; munmap of the upper page only.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    2 * PAGE as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            } as u64;
            assert_ne!(base as *mut libc::c_void, libc::MAP_FAILED);
            READABLE.with(|r| r.set((0, 0)));
            let (sp, limit, above) = (base + 64, base + PAGE, base + PAGE + 64);
            assert!(readable(above, sp, limit), "mapped now: readable");
            let (lo, hi) = READABLE.with(Cell::get);
            assert!(
                hi <= limit,
                "remembered {lo:x}..{hi:x} past the limit {limit:x}"
            );
            // SAFETY: unmapping the upper page of our own mapping.
            unsafe { libc::munmap((base + PAGE) as *mut libc::c_void, PAGE as usize) };
            assert!(
                !readable(above, sp, limit),
                "gone: must be refused, not read"
            );
            // SAFETY: the lower page is still ours.
            unsafe { libc::munmap(base as *mut libc::c_void, PAGE as usize) };
        })
        .join()
        .unwrap();
    }
}
