//! What the summary's `top:` names. Time spent in a C library without debug info: the
//! library (not the Rust code that called it, with 0 % of its own), and go tool pprof sees its
//! functions by their symbol-table names. Time in std's internals, the crates std vendors
//! included: the code that called std.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use std::ffi::{c_int, c_ulong, c_void};
use std::time::Duration;
use support::thread_cpu;

type Compress2 = unsafe extern "C" fn(*mut u8, *mut c_ulong, *const u8, c_ulong, c_int) -> c_int;

#[test]
fn time_in_a_c_library_is_charged_to_that_library() {
    // SAFETY: dlopen/dlsym with NUL-terminated names; zlib's compress2 has this signature.
    let compress2: Compress2 = unsafe {
        let lib = libc::dlopen(c"libz.so.1".as_ptr(), libc::RTLD_NOW);
        assert!(!lib.is_null(), "zlib is part of every Debian system");
        let f: *mut c_void = libc::dlsym(lib, c"compress2".as_ptr());
        assert!(!f.is_null());
        std::mem::transmute::<*mut c_void, Compress2>(f)
    };
    let input: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut output = vec![0u8; 2 << 20];

    let profile = profiled::Profile::start("zlib", &profiled::Config::default()).unwrap();
    let start = thread_cpu();
    while thread_cpu() - start < Duration::from_millis(400) {
        let mut len = output.len() as c_ulong;
        // SAFETY: buffers of the stated lengths; level 9.
        let r = unsafe {
            compress2(
                output.as_mut_ptr(),
                &mut len,
                input.as_ptr(),
                input.len() as c_ulong,
                9,
            )
        };
        assert_eq!(r, 0);
    }
    let report = profile.finish().unwrap().remove(0);
    let (top, share) = report.top_function().expect("samples");
    assert_eq!(top, "libz.so.1", "{}", report.summary_line(None));
    let floor = 0.8 - support::sampling_error(0.8, report.samples() as i64);
    assert!(share >= floor, "{share} over {} samples", report.samples());
}

/// Hashes and inserts through std's HashMap, whose work is in the hashbrown std vendors.
#[inline(never)]
fn fills_a_hash_map(n: u64) -> usize {
    let mut map = std::collections::HashMap::new();
    for i in 0..n {
        *map.entry(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .or_insert(0u64) += i;
    }
    map.len()
}

#[test]
fn time_in_std_hash_map_is_charged_to_the_code_that_uses_it() {
    let profile = profiled::Profile::start("hash_map", &profiled::Config::default()).unwrap();
    let start = thread_cpu();
    while thread_cpu() - start < Duration::from_millis(300) {
        std::hint::black_box(fills_a_hash_map(20_000));
    }
    let report = profile.finish().unwrap().remove(0);
    let (top, _) = report.top_function().expect("samples");
    assert_eq!(
        top,
        "c_library::fills_a_hash_map",
        "{}",
        report.summary_line(None)
    );
}
