//! A library `dlopen`ed during a profile, by a relative path that is not UTF-8, and
//! `dlclose`d before the profile is symbolized: its samples unwind through it to the Rust
//! function that called it, its function is named with file and line, and its mapping is
//! the library (not the main program). Ordered by the unwinder's rebuild, which a test hook
//! tells (`__test-hooks`, on in README's `--all-features` test command).
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "__test-hooks"))]

mod support;
use std::ffi::{CString, OsStr, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;
use support::{read, thread_cpu};

type Hot = unsafe extern "C" fn(u64) -> u64;

/// Builds `hot.c` into a shared library with debug info, in `dir`.
fn build_library(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("hot.c");
    std::fs::write(
        &source,
        "unsigned long long hot_in_library(unsigned long long n) {\n\
         \x20   volatile unsigned long long x = 1;\n\
         \x20   for (unsigned long long i = 0; i < n; i++) x = x * 6364136223846793005ULL + i;\n\
         \x20   return x;\n\
         }\n",
    )
    .unwrap();
    let lib = dir.join("libhot.so");
    let out = std::process::Command::new("cc")
        .args(["-O1", "-g", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .output()
        .expect("a C compiler (cc)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

#[inline(never)]
fn calls_into_library(hot: Hot, cpu: Duration) -> u64 {
    let start = thread_cpu();
    let mut x = 0;
    while thread_cpu() - start < cpu {
        // SAFETY: `hot` is the library's function, which takes and returns a u64.
        x ^= unsafe { hot(100_000) };
    }
    std::hint::black_box(x)
}

#[test]
fn a_library_loaded_and_unloaded_during_the_profile_is_unwound_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let built = build_library(dir.path());
    // A name that is not UTF-8, opened relative to the current directory (this test is
    // alone in its binary, so changing directory disturbs nothing).
    let name = OsStr::from_bytes(b"libhot-\xff.so");
    std::fs::rename(&built, dir.path().join(name)).unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let relative = CString::new([b"./".as_slice(), name.as_bytes()].concat()).unwrap();

    let profile = profiled::Profile::start("dlopen", &profiled::Config::default()).unwrap();
    // SAFETY: a NUL-terminated path; the library has no constructors; the symbol has the
    // `Hot` signature; nothing of it is used after dlclose.
    unsafe {
        let lib = libc::dlopen(relative.as_ptr(), libc::RTLD_NOW);
        assert!(!lib.is_null(), "dlopen failed");
        let f: *mut c_void = libc::dlsym(lib, c"hot_in_library".as_ptr());
        assert!(!f.is_null());
        let hot = std::mem::transmute::<*mut c_void, Hot>(f);
        // The first sample in the library wakes the drain thread, which rebuilds the
        // unwinder; samples before that stop in the library. Wait for the rebuild (how long
        // it takes depends on the machine's load), then profile the calls afresh.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !profiled::__private::unwinder_knows_every_module() {
            assert!(
                std::time::Instant::now() < deadline,
                "the unwinder was never rebuilt"
            );
            calls_into_library(hot, Duration::from_millis(5));
        }
        profile.reset();
        calls_into_library(hot, Duration::from_millis(500));
        assert_eq!(libc::dlclose(lib), 0);
    }
    let report = profile.finish().unwrap().remove(0);
    let path = dir.path().join("dlopen.cpu.pb.gz");
    report.write(&path).unwrap();
    let p = read(&path);

    // Samples in the library: named from its DWARF, with its file and line.
    let s = |i: i64| p.profile.string_table[i as usize].as_str();
    let function = p
        .profile
        .function
        .iter()
        .find(|f| s(f.name) == "hot_in_library")
        .unwrap_or_else(|| panic!("no hot_in_library in {:?}", p.profile.string_table));
    assert!(s(function.filename).ends_with("hot.c"));
    let in_library: Vec<_> = p
        .profile
        .sample
        .iter()
        .filter(|sample| p.stack(sample).first() == Some(&"hot_in_library"))
        .collect();
    let n: i64 = in_library.iter().map(|sample| sample.value[0]).sum();
    assert!(n > 200, "{n} samples in the library");
    // Once the unwinder is rebuilt, they unwind through it to the caller.
    let through = in_library
        .iter()
        .filter(|sample| {
            p.stack(sample)
                .iter()
                .any(|f| f.ends_with("calls_into_library"))
        })
        .map(|sample| sample.value[0])
        .sum::<i64>();
    assert!(
        through * 100 >= n * 99,
        "{through} of {n} library samples reach calls_into_library"
    );
    // The library's mapping is the library, found through the kernel's view (the path it
    // was opened by was relative), not the main program.
    let mappings: Vec<&str> = p.profile.mapping.iter().map(|m| s(m.filename)).collect();
    let library = p
        .profile
        .mapping
        .iter()
        .find(|m| s(m.filename).contains("libhot-"))
        .unwrap_or_else(|| panic!("mappings: {mappings:?}"));
    assert!(s(library.filename).starts_with('/'), "{mappings:?}");
    assert_ne!(library.id, p.profile.mapping[0].id);
    assert!(!s(p.profile.mapping[0].filename).contains("libhot"));
}
