//! What a user meets in the first hour: code that never asked for a profile keeps working
//! (another tool's `PROFILE`, forking tests, strict lints), and nothing is lost or silently
//! replaced (workspace members, helpers, bad directories). Runs real fixture binaries.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use std::path::Path;
use std::time::Duration;
use support::*;

fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().display().to_string();
                found.push(rel);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn another_tools_profile_variable_is_ignored_once_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    for value in ["release", "dev"] {
        let out = cargo_test(
            "parallel",
            &[],
            &[("PROFILE", value), ("CARGO_TARGET_DIR", "/nonexistent")],
        );
        assert!(out.status.success(), "PROFILE={value} must not fail tests");
        let err = stderr(&out);
        let notice = format!("profiled: PROFILE={value} names none of profiled's");
        assert_eq!(err.matches(&notice).count(), 1, "{err}");
        assert!(err.contains("PROFILED=cpu"), "{err}");
        assert!(!err.contains("profiled: alpha"), "no profile: {err}");
    }
    // PROFILED is strict and wins over PROFILE.
    let profiled = format!("cpu,dir={}", dir.path().display());
    let out = cargo_test(
        "parallel",
        &[],
        &[("PROFILE", "release"), ("PROFILED", &profiled)],
    );
    assert!(out.status.success());
    assert!(
        dir.path()
            .join("workloads/parallel/alpha.cpu.pb.gz")
            .is_file()
    );
    let out = cargo_test("parallel", &[], &[("PROFILED", "release")]);
    assert_eq!(out.status.code(), Some(101));
    assert!(
        stdout(&out).contains("profiled: PROFILED: `release` is not a known profile kind"),
        "{}",
        stdout(&out)
    );
    // A close misspelling in PROFILE is ours, and fails with a suggestion.
    let out = cargo_test("parallel", &[], &[("PROFILE", "cpuu")]);
    assert_eq!(out.status.code(), Some(101));
    assert!(
        stdout(&out).contains("(did you mean `cpu`?)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_forked_child_leaves_the_parents_profile_alone_and_never_hangs() {
    for engine in ["perf", "timer"] {
        let dir = tempfile::tempdir().unwrap();
        let value = format!("cpu,engine={engine},dir={}", dir.path().display());
        let out = cargo_test_within(
            Duration::from_secs(120),
            "fork",
            &[],
            &[("PROFILE", &value)],
        );
        assert!(out.status.success(), "engine {engine}");
        for test in ["child_panics", "child_returns"] {
            let p = read(&dir.path().join(format!("workloads/fork/{test}.cpu.pb.gz")));
            // The parent burned 2 × 200 ms in heavy_a; the child burned nothing.
            let cpu = p.cpu_ns() as f64 / 1e9;
            assert!(cpu > 0.3, "engine {engine}, {test}: {cpu:.3}s");
            p.assert_share_at_least("workloads::heavy_a", 0.8);
        }
        // Only the parent wrote (one summary line per test).
        assert_eq!(
            stderr(&out).matches("profiled: child_panics  cpu").count(),
            1
        );
    }
}

#[test]
fn a_helper_profiled_twice_keeps_both_profiles_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("cpu,dir={}", dir.path().display());
    let out = cargo_test("helper", &["--test-threads=1"], &[("PROFILE", &value)]);
    assert!(out.status.success());
    assert_eq!(
        files_under(dir.path()),
        [
            "workloads/helper/helper.2.cpu.pb.gz",
            "workloads/helper/helper.cpu.pb.gz"
        ]
    );
    let err = stderr(&out);
    assert!(
        err.contains("`helper` was profiled more than once in this process"),
        "{err}"
    );
    assert!(err.contains("#[profiled] belongs on tests"), "{err}");
}

#[test]
fn an_unwritable_directory_fails_before_the_test_runs_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("reported");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let bad = file.join("sub");
    let out = cargo_test(
        "attribution",
        &["--exact", "three_to_one_split"],
        &[
            ("PROFILE", &format!("cpu,dir={}", bad.display())),
            ("FIXTURE_OUT", out_file.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(101));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "profiled: PROFILE: `dir={}`: cannot create directory",
            bad.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("give dir= a directory this test can write"),
        "{text}"
    );
    // The panic points at the test, not at profiled's sources.
    assert!(text.contains("tests/attribution.rs:"), "{text}");
    assert!(!text.contains("src/private.rs"), "{text}");
    // The test body never ran.
    assert!(!out_file.exists());
}

fn members_manifest() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/members/Cargo.toml")
}

fn members(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.arg(args[0])
        .arg("--manifest-path")
        .arg(members_manifest())
        .args(&args[1..])
        .env("CARGO_TARGET_DIR", fixture_target())
        .env_remove("PROFILE")
        .env_remove("PROFILED")
        .env_remove("RUSTFLAGS")
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    eprintln!("{}\n{}", stdout(&out), stderr(&out));
    out
}

#[test]
fn workspace_members_with_the_same_test_names_keep_their_own_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("cpu,dir={}", dir.path().display());
    let out = members(
        &[
            "test",
            "--quiet",
            "--workspace",
            "--test",
            "integration",
            "--",
            "smoke",
        ],
        &[("PROFILE", &value)],
    );
    assert!(out.status.success());
    assert_eq!(
        files_under(dir.path()),
        [
            "alpha/integration/smoke.cpu.pb.gz",
            "beta/integration/smoke.cpu.pb.gz"
        ]
    );
    let alpha = read(&dir.path().join("alpha/integration/smoke.cpu.pb.gz"));
    let beta = read(&dir.path().join("beta/integration/smoke.cpu.pb.gz"));
    alpha.assert_share_at_least("alpha::work", 0.5);
    beta.assert_share_at_least("beta::work", 0.5);
}

#[test]
fn every_body_shape_expands_without_warnings_under_strict_lints() {
    // --all-targets type-checks the test functions (trybuild's pass cases cannot: they build
    // as binaries, where #[test] removes the function first).
    let out = members(
        &[
            "clippy",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
            "-W",
            "clippy::pedantic",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    // And they run, profiled, with the outcomes they have without profiling; beta uses the
    // crate under another name (`crate = "renamed"`), sync and async.
    let dir = tempfile::tempdir().unwrap();
    let value = format!("cpu,dir={}", dir.path().display());
    let out = members(
        &["test", "--quiet", "--workspace", "--test", "integration"],
        &[("PROFILE", &value)],
    );
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("13 passed; 0 failed; 1 ignored"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("2 passed; 0 failed"),
        "{}",
        stdout(&out)
    );
    assert_eq!(files_under(&dir.path().join("alpha/integration")).len(), 13);
    assert_eq!(
        files_under(&dir.path().join("beta/integration")),
        ["renamed_async.cpu.pb.gz", "smoke.cpu.pb.gz"]
    );
}

#[test]
fn work_on_a_pool_made_before_the_test_is_explained_and_threads_all_catches_it() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("cpu,dir={}", dir.path().display());
    let out = cargo_test("pool", &["--test-threads=1"], &[("PROFILE", &value)]);
    assert!(out.status.success());
    let err = stderr(&out);
    let pool = read(
        &dir.path()
            .join("workloads/pool/b_works_on_the_pool.cpu.pb.gz"),
    );
    assert!(
        pool.cpu_ns() < 100_000_000,
        "the pool is not in a per-test profile"
    );
    assert!(
        err.contains("profiled: b_works_on_the_pool: note: only 0.0")
            && err.contains("while other threads of the process used")
            && err.contains("PROFILE=cpu,threads=all"),
        "{err}"
    );
    // A test that only slept holds no sample, and its summary line says so: a note
    // would be noise (on a parallel run's tiny tests, on every line).
    assert!(
        err.contains("profiled: c_sleeps  cpu 0.00s  0 samples"),
        "{err}"
    );
    assert!(!err.contains("profiled: c_sleeps: note:"), "{err}");

    // threads=all: every thread of the process, pool included.
    let value = format!("cpu,threads=all,dir={}", dir.path().display());
    let out = cargo_test("pool", &["--test-threads=1"], &[("PROFILE", &value)]);
    assert!(out.status.success());
    let pool = read(
        &dir.path()
            .join("workloads/pool/b_works_on_the_pool.cpu.pb.gz"),
    );
    let cpu = pool.cpu_ns() as f64 / 1e9;
    // 2 threads × 300 ms, each first sample weighing only what followed the start.
    assert!((0.5..0.75).contains(&cpu), "{cpu:.3}s");
    pool.assert_share_at_least("workloads::worker_hot", 0.9);
    assert!(
        !stderr(&out).contains("b_works_on_the_pool: note:"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn deep_stacks_keep_their_root_and_say_where_frames_were_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let value = format!("cpu,dir={}", dir.path().display());
    let out = cargo_test("deep", &[], &[("PROFILE", &value)]);
    assert!(out.status.success());
    let p = read(
        &dir.path()
            .join("workloads/deep/two_thousand_deep.cpu.pb.gz"),
    );
    let mut cut = 0;
    for s in &p.profile.sample {
        let stack = p.stack(s);
        if stack.contains(&"[truncated]") {
            cut += s.value[0];
            // Leaf side below the mark, the test's own frames above it.
            let mark = stack.iter().position(|f| *f == "[truncated]").unwrap();
            assert!(stack[..mark].iter().any(|f| f.ends_with("deep::recurse")));
            assert!(
                stack[mark..]
                    .iter()
                    .any(|f| f.ends_with("deep::two_thousand_deep")),
                "{stack:?}"
            );
        }
    }
    let cut_share = cut as f64 / p.samples().max(1) as f64;
    assert!(
        cut_share >= 0.9 - sampling_error(0.9, p.samples()),
        "{cut} of {}",
        p.samples()
    );
    assert!(
        p.comments()
            .iter()
            .any(|c| c.contains("samples had stacks deeper than 128 frames")),
        "{:?}",
        p.comments()
    );
    // The test function holds (nearly) all of it, as it should.
    p.assert_share_at_least("deep::two_thousand_deep", 0.95);
    let shallow = read(&dir.path().join("workloads/deep/shallow.cpu.pb.gz"));
    assert_eq!(shallow.share("[truncated]"), 0.0);
    assert!(!shallow.comments().iter().any(|c| c.contains("deeper")));
}

/// This binary has no `profiled::Alloc`: counting must refuse, showing the two lines to add,
/// rather than answer zero.
#[test]
fn allocation_counts_without_the_wrapper_say_how_to_install_it() {
    let err = std::panic::catch_unwind(|| profiled::allocations(|| vec![0u8; 10]))
        .expect_err("no wrapper: must panic");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("#[global_allocator]")
            && msg.contains(
                "static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();"
            ),
        "{msg}"
    );
}
