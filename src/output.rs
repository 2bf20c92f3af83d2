//! Where profile files go, how they are written (atomically) and the summary line.

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Repr};
use crate::kind::Kind;

/// libtest's name for a test from the macro's `module_path!()` and the fn name: the module
/// path inside the test crate (the crate name dropped) plus the fn name.
pub(crate) fn test_name(module_path: &str, fn_name: &str) -> String {
    match module_path.split_once("::") {
        Some((_krate, inner)) => format!("{inner}::{fn_name}"),
        None => fn_name.to_string(),
    }
}

/// The test binary's name without cargo's `-<16 hex digits>` suffix.
pub(crate) fn binary_name(exe: &Path) -> String {
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// Cargo's target directory for the running binary: the nearest ancestor holding cargo's
/// `CACHEDIR.TAG` (true for `CARGO_TARGET_DIR`, workspaces and custom profiles), or its
/// parent when that is a `--target <triple>` directory, which cargo tags too (profiles then
/// still go to `target/profiles`); else `CARGO_TARGET_DIR`, else `<dir of the binary>/../..`.
/// Not the outermost tagged ancestor: a target directory may sit inside another one (a
/// tool building fixtures into `target/fixtures`).
pub(crate) fn target_dir(exe: &Path) -> PathBuf {
    let tagged = |d: &Path| d.join("CACHEDIR.TAG").is_file();
    if let Some(dir) = exe.ancestors().skip(1).find(|d| tagged(d)) {
        let triple = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().matches('-').count() >= 2);
        return match dir.parent() {
            Some(parent) if triple && tagged(parent) => parent.to_path_buf(),
            _ => dir.to_path_buf(),
        };
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// `<base>/<package>/<binary>`, base being `dir=` or `<target dir>/profiles`. The package
/// keeps apart workspace members whose test binaries share a name (`tests/integration.rs`
/// in two members).
pub(crate) fn profile_dir(dir: Option<&Path>, package: Option<&str>) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut base = match dir {
        Some(d) => d.to_path_buf(),
        None => target_dir(&exe).join("profiles"),
    };
    if let Some(package) = package.filter(|p| !p.is_empty()) {
        base.push(file_stem(package));
    }
    base.join(binary_name(&exe))
}

/// `<profile dir>/<test name with :: as .>.<kind>.pb.gz`.
pub(crate) fn profile_path(
    dir: Option<&Path>,
    package: Option<&str>,
    test: &str,
    kind: Kind,
) -> PathBuf {
    profile_dir(dir, package).join(format!("{}.{}.pb.gz", file_stem(test), kind.name()))
}

/// `x.<kind>.pb.gz` -> `x.<n>.<kind>.pb.gz`.
pub(crate) fn numbered(path: &Path, n: u32) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let split = name
        .strip_suffix(".pb.gz")
        .and_then(|s| s.rsplit_once('.'))
        .filter(|(_, kind)| crate::kind::Kind::find(kind).is_some());
    match split {
        Some((stem, kind)) => path.with_file_name(format!("{stem}.{n}.{kind}.pb.gz")),
        None => path.with_file_name(format!("{name}.{n}")),
    }
}

/// Creates `dir` and checks that a file can be created in it, so that a profile directory
/// that can't be written fails before the test runs rather than after.
pub(crate) fn check_writable(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", display_path(dir)))?;
    tempfile::Builder::new()
        .prefix(".profiled-check")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| format!("cannot create files in {}: {e}", display_path(dir)))
}

/// The flamegraph beside a profile: `x.cpu.pb.gz` -> `x.cpu.svg`.
pub(crate) fn svg_path(profile: &Path) -> PathBuf {
    let name = profile
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".pb.gz").unwrap_or(&name);
    profile.with_file_name(format!("{stem}.svg"))
}

/// A test name as a file name: `::` -> `.`, and nothing that leaves the directory.
pub(crate) fn file_stem(test: &str) -> String {
    test.replace("::", ".").replace(['/', '\\', '\0'], "_")
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so
/// readers see either no file or the whole profile. Creates missing directories. The
/// temporary file has a random name and is created exclusively (tempfile), so a link
/// planted in a shared directory is never followed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| {
            Error::from(Repr::Io {
                action,
                path,
                source,
            })
        }
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let prefix = format!(
        ".{}.",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io("create a temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io("write", tmp.path()))?;
    // No fdatasync: a profile is a test artifact. Readers get the whole file or none from
    // the rename; surviving a power cut is not worth the 1 to 5 ms of wall time it cost
    // every test on a busy disk (BENCHMARKS.md).
    tmp.persist(path)
        .map_err(|e| io("rename into place", path)(e.error))?;
    Ok(())
}

/// One line on stderr, outside libtest's capture (which only hooks the print macros), in
/// one write: parallel tests' output never lands inside it.
pub(crate) fn line(text: &str) {
    let mut whole = String::with_capacity(text.len() + 1);
    whole.push_str(text);
    whole.push('\n');
    let _ = std::io::stderr().lock().write_all(whole.as_bytes());
}

/// Set in a harness child: its notices are marked, so the parent that runs a child per test
/// can say each one once without telling them from summary lines by their wording.
static MARK_NOTICES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What starts a marked notice.
pub(crate) const NOTICE_MARK: &str = "\u{1e}profiled-notice\t";

/// Marks this process's notices from now on (see [`MARK_NOTICES`]).
#[cfg_attr(not(feature = "harness"), allow(dead_code))]
pub(crate) fn mark_notices() {
    MARK_NOTICES.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// `profiled: TEXT` on stderr, outside libtest's capture.
pub(crate) fn notice(text: &str) {
    let mark = if MARK_NOTICES.load(std::sync::atomic::Ordering::Relaxed) {
        NOTICE_MARK
    } else {
        ""
    };
    line(&format!("{mark}profiled: {text}"));
}

/// A byte count as people read it: `512 B`, `1.5 KiB`, `12.3 MiB`, `2.0 GiB`.
pub(crate) fn bytes(n: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v.abs() >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// A path as the user should read it: absolute, because the test runs in its package's
/// directory, which is often not the directory the user typed `cargo test` in.
pub(crate) fn display_path(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            test_name("integration::scheduler", "schedules"),
            "scheduler::schedules"
        );
        assert_eq!(test_name("integration", "top_level"), "top_level");
        assert_eq!(
            binary_name(Path::new("/t/debug/deps/integration-0123456789abcdef")),
            "integration"
        );
        assert_eq!(binary_name(Path::new("/t/debug/deps/my-tool")), "my-tool");
        assert_eq!(file_stem("a::b::c"), "a.b.c");
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn file_names_carry_the_kind_and_a_number_before_it() {
        let dir = Path::new("/p");
        let path = profile_path(Some(dir), None, "m::t", crate::kind::Kind::Cpu);
        assert!(path.starts_with(dir));
        assert_eq!(path.file_name().unwrap(), "m.t.cpu.pb.gz");
        assert_eq!(numbered(&path, 2).file_name().unwrap(), "m.t.2.cpu.pb.gz");
        assert_eq!(svg_path(&path).file_name().unwrap(), "m.t.cpu.svg");
        // A name profiled doesn't make (a user's --cpuprofile) is numbered at its end.
        let own = Path::new("/tmp/out.pprof");
        assert_eq!(numbered(own, 3), Path::new("/tmp/out.pprof.3"));
    }

    #[test]
    fn target_dir_is_found_by_cachedir_tag() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("custom-target");
        let deps = target.join("x86_64-unknown-linux-gnu/debug/deps");
        fs::create_dir_all(&deps).unwrap();
        let tag = "Signature: 8a477f597d28d172789f06886806bc55";
        fs::write(target.join("CACHEDIR.TAG"), tag).unwrap();
        assert_eq!(target_dir(&deps.join("t-0123456789abcdef")), target);
        // `--target <triple>`: cargo tags the triple's directory as well.
        fs::write(target.join("x86_64-unknown-linux-gnu/CACHEDIR.TAG"), tag).unwrap();
        assert_eq!(target_dir(&deps.join("t-0123456789abcdef")), target);
        // A target directory inside another one is its own.
        let nested = target.join("fixtures");
        fs::create_dir_all(nested.join("debug/deps")).unwrap();
        fs::write(nested.join("CACHEDIR.TAG"), tag).unwrap();
        assert_eq!(
            target_dir(&nested.join("debug/deps/t-0123456789abcdef")),
            nested
        );
    }

    #[test]
    fn atomic_write_creates_dirs_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/b/p.pb.gz");
        write_atomic(&path, b"abc").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abc");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn links_planted_at_temporary_names_are_never_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        fs::create_dir(&shared).unwrap();
        let victim = tmp.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        // Every name the old scheme (`.<name>.<pid>.<n>.tmp`) would have used, and a few
        // more shapes, all pointing at a file outside the profile directory.
        for n in 0..64 {
            for name in [
                format!(".p.cpu.pb.gz.{}.{n}.tmp", std::process::id()),
                format!(".p.cpu.pb.gz.{n}.tmp"),
            ] {
                std::os::unix::fs::symlink(&victim, shared.join(name)).unwrap();
            }
        }
        let path = shared.join("p.cpu.pb.gz");
        write_atomic(&path, b"profile").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"profile");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        // Only the profile was added; every planted link is still a link to the victim.
        let entries: Vec<_> = fs::read_dir(&shared).unwrap().flatten().collect();
        assert_eq!(entries.len(), 129);
        for e in entries {
            if e.file_name() != "p.cpu.pb.gz" {
                assert_eq!(fs::read_link(e.path()).unwrap(), victim);
            }
        }
    }

    #[test]
    fn unwritable_directory_names_path_and_os_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("plain-file");
        fs::write(&file, "x").unwrap();
        let err = write_atomic(&file.join("sub/p.pb.gz"), b"abc")
            .unwrap_err()
            .to_string();
        assert!(err.contains("plain-file/sub"), "{err}");
        assert!(err.contains("os error"), "{err}");
    }
}
