//! The allocation-heavy workload that benches/heap.rs and benches/jemalloc measure, and the
//! clock they measure it with (included by path in both).

use std::collections::BTreeMap;
use std::time::Duration;

/// Builds a `BTreeMap<String, Vec<u8>>` of `entries` entries (two blocks each, plus the
/// tree's nodes); returns it so that the caller decides when it is freed.
#[inline(never)]
pub fn build(entries: u64) -> BTreeMap<String, Vec<u8>> {
    let mut map = BTreeMap::new();
    for i in 0..entries {
        map.insert(format!("key-{i:08}"), vec![i as u8; (i % 64) as usize + 1]);
    }
    map
}

/// The calling thread's CPU time.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
