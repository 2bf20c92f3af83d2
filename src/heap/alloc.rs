//! The allocator wrapper: `unsafe` that every platform shares, since `GlobalAlloc` is an
//! unsafe trait. It forwards to the wrapped allocator and tells the heap's hooks what
//! happened, by address and size; all the logic is there.

use std::alloc::{GlobalAlloc, Layout, System};

use super::{on_alloc, on_free};

/// The global allocator wrapper that heap profiles (`PROFILE=heap`, `allocs`) and
/// [`allocations`](crate::allocations) read: install it once per test binary, around the
/// allocator the program uses anyway.
///
/// With no heap profile or count running, each allocation and free costs one relaxed
/// atomic load more than the wrapped allocator.
///
/// ```
/// #[global_allocator]
/// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
///
/// let counts = profiled::allocations(|| String::from("hello"));
/// assert_eq!(counts.alloc_bytes, 5);
/// ```
#[derive(Debug, Default)]
pub struct Alloc<A = System> {
    inner: A,
}

impl Alloc<System> {
    /// Wraps the system allocator (what Rust programs use when they choose none).
    ///
    /// ```
    /// #[global_allocator]
    /// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
    /// ```
    pub const fn system() -> Alloc<System> {
        Alloc { inner: System }
    }
}

impl<A> Alloc<A> {
    /// Wraps `inner` (`profiled::Alloc::new(mimalloc::MiMalloc)`, a jemalloc, an arena...).
    ///
    /// ```
    /// #[global_allocator]
    /// static ALLOC: profiled::Alloc<std::alloc::System> =
    ///     profiled::Alloc::new(std::alloc::System);
    /// ```
    pub const fn new(inner: A) -> Alloc<A> {
        Alloc { inner }
    }

    /// The wrapped allocator.
    ///
    /// ```
    /// let a = profiled::Alloc::system();
    /// let _system: &std::alloc::System = a.inner();
    /// ```
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

// SAFETY: every method forwards to `inner` with the caller's arguments unchanged and
// returns its result unchanged; the hooks only read the address and size, never the memory,
// and are told of a free before `inner` can hand the address out again.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Alloc<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is the inner allocator's.
        let p = unsafe { self.inner.alloc(layout) };
        if !p.is_null() {
            on_alloc(p as usize, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { self.inner.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(p as usize, layout.size());
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        on_free(ptr as usize, layout.size());
        // SAFETY: the caller's contract for `dealloc` is the inner allocator's.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Told first: once `inner` has freed the old block, another thread may get it.
        on_free(ptr as usize, layout.size());
        // SAFETY: the caller's contract for `realloc` is the inner allocator's.
        let p = unsafe { self.inner.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_alloc(p as usize, new_size);
        }
        p
    }
}
