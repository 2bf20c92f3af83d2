//! Object files mapped read-only for the symbolizer, and their pages given back.

use std::fs::File;
use std::sync::Mutex;

/// Address ranges of the mappings [`map_file`] made. They are never unmapped, so a range
/// found here stays a private read-only file mapping for the process's life.
static MAPPED: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

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
    let bytes: &'static [u8] = Box::leak(Box::new(map));
    let start = bytes.as_ptr() as usize;
    lock().push((start, start + bytes.len()));
    Some(bytes)
}

fn lock() -> std::sync::MutexGuard<'static, Vec<(usize, usize)>> {
    MAPPED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Drops the pages wholly inside `bytes` from this process's memory, if `bytes` lies in a
/// mapping made by [`map_file`]; anything else is left alone. A dropped page of a private
/// read-only file mapping reads back the same bytes from the page cache, whereas for
/// anonymous or written memory `MADV_DONTNEED` would replace the contents with zeros under
/// every reference to them: hence the check.
pub(crate) fn release(bytes: &[u8]) {
    const PAGE: usize = 4096;
    let (from, to) = (
        bytes.as_ptr() as usize,
        bytes.as_ptr() as usize + bytes.len(),
    );
    if !lock()
        .iter()
        .any(|&(start, end)| start <= from && to <= end)
    {
        return;
    }
    let start = from.next_multiple_of(PAGE);
    let end = to & !(PAGE - 1);
    if end > start {
        // SAFETY: the range lies in a private read-only file mapping (checked above), whose
        // dropped pages read back the same bytes. A page size other than 4 KiB makes the
        // call fail harmlessly (unaligned start).
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's resident KiB of the mapping that starts at `bytes` (/proc/self/smaps;
    /// `mincore` would answer for the page cache instead).
    fn resident_kib(bytes: &[u8]) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{:x}-", bytes.as_ptr() as usize);
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        let rss = lines
            .find(|l| l.starts_with("Rss:"))
            .expect("mapping in smaps");
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn releases_only_its_own_mappings_and_they_read_back_the_same() {
        let exe = std::env::current_exe().unwrap();
        let bytes = map_file(&File::open(&exe).unwrap()).unwrap();
        let part = &bytes[..bytes.len().min(64 << 10)];
        let sum: u64 = part.iter().map(|&b| u64::from(b)).sum();
        assert!(resident_kib(bytes) > 0);
        release(part);
        assert_eq!(resident_kib(bytes), 0, "the mapping's pages were dropped");
        assert_eq!(part.iter().map(|&b| u64::from(b)).sum::<u64>(), sum);
        // Heap memory is not a mapping of ours: released, it would read back as zeros.
        let heap = vec![7u8; 64 << 10];
        release(&heap);
        assert!(heap.iter().all(|&b| b == 7));
    }
}
