//! The platform boundary: every item that needs an operating system's own API is in here,
//! one module per platform, and nowhere else (a test walks the source to keep it so).
//!
//! Each platform module provides the same items:
//! - the CPU sampler: `Session` (`start`/`sid`/`finish`), `reset`, `pause`, `resume`,
//!   `is_live`, `forked`, `on_drain_start`;
//! - the loaded objects: `known_modules` (unloaded ones too), `modules_generation`, and the
//!   vDSO's image (`vdso_image`, which has no file);
//! - the process's threads: `thread_ids` (and, with `http`, `thread_stacks`); its id without a
//!   system call, for the fork checks on every recorded event: `process_id`;
//! - file mappings for the symbolizer: `map_file`, `release`;
//! - for heap profiles: `capture_stack` (the calling thread's), `current_thread`,
//!   `prepare_stacks`; on Linux, spawned threads join their creator's heap sessions
//!   (linux/spawn.rs).
//!
//! Portable code that must say `unsafe` to implement an unsafe trait lives with its kind:
//! the allocator wrapper in src/heap/alloc.rs, the watched raw lock in src/sync/raw_lock.rs.
//!
//! `linux` is Linux x86_64, where profiles are taken. `unsupported` is every other target:
//! it compiles everywhere, sessions refuse to start with a clear error, and `#[profiled]`
//! stays inert while no profile is asked for.

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported)))]
mod linux;
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported)))]
pub(crate) use linux::*;

// Compiled on every target, so its error is tested where the tests run; selected off Linux
// x86_64, or with `--cfg profiled_unsupported` (CI builds the crate that way to prove the
// portable code needs nothing from `linux`).
#[cfg_attr(
    all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported)),
    allow(dead_code)
)]
mod unsupported;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))))]
pub(crate) use unsupported::*;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// What only a platform module may use: OS bindings, memory maps, the native unwinder,
    /// foreign functions and assembly.
    const PLATFORM_ONLY: &[&str] = &[
        "libc::",
        "memmap2::",
        "framehop::",
        "std::os::unix",
        "std::os::linux",
        "std::os::fd",
        "std::os::windows",
        "extern \"C\"",
        "asm!(",
        // `unsafe` too: all of it is platform code, every other module forbids it.
        "unsafe {",
        "unsafe fn",
        "unsafe impl",
    ];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Code outside `src/sys/<platform>/` builds on every target: the portable stages use
    /// only std (and no `unsafe`), and what they need of the platform comes through
    /// `crate::sys`. Unit tests
    /// (from `mod tests {` on) may use anything, since they run on Linux only.
    #[test]
    fn platform_apis_are_used_only_in_platform_modules() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        rust_files(&root.join("macros/src"), &mut files);
        let platform = root.join("src/sys/linux");
        // The allocator wrapper and the watched raw lock may say `unsafe` (unsafe traits),
        // nothing else.
        let wrappers = [
            root.join("src/heap/alloc.rs"),
            root.join("src/sync/raw_lock.rs"),
        ];
        let mut found = Vec::new();
        let mut checked = 0;
        for file in files.iter().filter(|f| !f.starts_with(&platform)) {
            let text = std::fs::read_to_string(file).unwrap();
            let code = text.split("\nmod tests {").next().unwrap_or_default();
            checked += 1;
            for (n, line) in code.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                let allowed = |api: &str| wrappers.contains(file) && api.starts_with("unsafe");
                for api in PLATFORM_ONLY
                    .iter()
                    .filter(|api| code.contains(*api) && !allowed(api))
                {
                    found.push(format!("{}:{}: {api}", file.display(), n + 1));
                }
            }
        }
        assert!(checked >= 15, "walked only {checked} files");
        assert!(
            found.is_empty(),
            "platform APIs outside src/sys/linux:\n{}",
            found.join("\n")
        );
    }

    /// The walk above would catch what it looks for: the Linux module is full of it.
    #[test]
    fn the_walk_recognises_platform_code() {
        let engine = include_str!("linux/map.rs");
        assert!(PLATFORM_ONLY.iter().any(|api| engine.contains(api)));
    }
}
