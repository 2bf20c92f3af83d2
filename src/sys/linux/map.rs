//! Object files mapped read-only for the symbolizer, and their pages given back.

use std::fs::File;

/// Maps `file` read-only and private for the process's life. Only pages that are read
/// become resident, and [`release`] drops them again.
pub(crate) fn map_file(file: &File) -> Option<&'static [u8]> {
    // SAFETY: the file is mapped read-only and private. Another process truncating a
    // loaded object would also break the running code itself; the loader makes the same
    // assumption.
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    // Reads are scattered: without this the kernel maps (and counts as resident) up to
    // 64 KiB around every page touched.
    let _ = map.advise(memmap2::Advice::Random);
    Some(Box::leak(Box::new(map)))
}

/// Drops the pages wholly inside `bytes` from this process's memory.
///
/// # Safety
/// `bytes` must lie in a mapping made by [`map_file`]: a dropped page of a private
/// read-only file mapping reads back the same bytes, while for anonymous or written memory
/// `MADV_DONTNEED` replaces the contents with zeros under every reference to them.
pub(crate) unsafe fn release(bytes: &[u8]) {
    const PAGE: usize = 4096;
    let start = (bytes.as_ptr() as usize).next_multiple_of(PAGE);
    let end = (bytes.as_ptr() as usize + bytes.len()) & !(PAGE - 1);
    if end > start {
        // SAFETY: the caller guarantees a private read-only file mapping, whose dropped
        // pages read back the same bytes. A page size other than 4 KiB makes the call fail
        // harmlessly (unaligned start).
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}
