//! Outcomes unchanged by profiling, bad `PROFILE` values, unwritable directories, and
//! "off means off". Runs the fixture's real test binaries.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::*;

#[test]
fn outcomes_are_the_same_with_and_without_profiling() {
    let dir = tempfile::tempdir().unwrap();
    let plain = cargo_test("outcomes", &["--test-threads=1"], &[]);
    let profiled = cargo_test(
        "outcomes",
        &["--test-threads=1"],
        &[("PROFILE", &format!("cpu,dir={}", dir.path().display()))],
    );
    assert_eq!(plain.status.code(), profiled.status.code());
    assert_eq!(plain.status.code(), Some(101));
    assert_eq!(summary(&plain), summary(&profiled));
    assert_eq!(
        summary(&plain),
        ["test result: FAILED. 4 passed; 3 failed; 1 ignored; 0 measured; 0 filtered out"]
    );
    // The failure messages are the tests' own.
    for msg in ["deliberate failure", "deliberate panic", "deliberate error"] {
        assert!(stdout(&profiled).contains(msg), "{msg}");
    }
    // Every test that ran left a profile, failing ones too; the ignored one did not.
    let written: Vec<String> = std::fs::read_dir(dir.path().join("workloads/outcomes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for test in [
        "passes",
        "fails_assert",
        "panics",
        "should_panic_ok",
        "result_ok",
        "result_err",
        "nested.in_a_module",
    ] {
        let name = format!("{test}.cpu.pb.gz");
        assert!(written.contains(&name), "{name} missing from {written:?}");
        let p = read(&dir.path().join("workloads/outcomes").join(&name));
        assert!(p.samples() > 0, "{name}");
    }
    assert!(!written.iter().any(|n| n.starts_with("ignored")));
    assert!(
        !written.iter().any(|n| n.ends_with(".tmp")),
        "no temporary files left: {written:?}"
    );
}

/// With `RUST_BACKTRACE=1` std's panic hook captures and symbolizes a backtrace, which in
/// a test build costs more CPU than the test's own 20 ms: the hook runs paused, so the
/// failing test's profile is its work, not std's symbolizer.
#[test]
fn a_panicking_tests_profile_leaves_out_the_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "outcomes",
        &["--test-threads=1", "panics"],
        &[
            ("PROFILE", &format!("cpu,dir={}", dir.path().display())),
            ("RUST_BACKTRACE", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(101));
    assert!(
        stdout(&out).contains("stack backtrace:"),
        "{}",
        stdout(&out)
    );
    let p = read(&dir.path().join("workloads/outcomes/panics.cpu.pb.gz"));
    p.assert_share_at_most("default_hook", 0.02);
    p.assert_share_at_least("workloads::heavy_a", 0.9);
}

#[test]
fn bad_profile_values_fail_with_the_item_and_what_is_accepted() {
    for (value, item, reason) in [
        ("cpu,freq=0", "`freq=0`", "is out of range"),
        ("cpu,freq=abc", "`freq=abc`", "is not a whole number of Hz"),
        ("cpu,freq=1000000", "`freq=1000000`", "is out of range"),
        (
            "cpux",
            "`cpux`",
            "is not a known profile kind or option (did you mean `cpu`?)",
        ),
        ("cpu,colour=red", "`colour=red`", "is not a known option"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = cargo_test(
            "parallel",
            &["--test-threads=1"],
            &[("PROFILE", value), ("CARGO_TARGET_DIR_PROFILES", "unused")],
        );
        let _ = dir;
        assert_eq!(out.status.code(), Some(101), "{value}");
        let text = stdout(&out);
        let expected = format!(
            "profiled: PROFILE: {item} {reason}; accepted: kinds: cpu, heap, allocs, block, mutex, wall; \
             options: freq=<1..=10000 Hz, default 1000>, heap_rate=<bytes, default 524288>, \
             block_rate=<ns, default 1>, mutex_fraction=<n, default 1>, \
             wall_freq=<1..=1000 Hz, default 100>, dir=<path>, engine=<auto|perf|timer>, threads=<test|all>, svg"
        );
        assert!(
            text.contains(&expected),
            "{value}: expected {expected:?} in\n{text}"
        );
        assert!(summary(&out)[0].contains("0 passed; 2 failed"), "{value}");
    }
}

#[test]
fn bad_value_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "parallel",
        &[],
        &[(
            "PROFILE",
            &format!("cpu,freq=0,dir={}", dir.path().display()),
        )],
    );
    assert_eq!(out.status.code(), Some(101));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn empty_profile_means_off() {
    let out = cargo_test("off", &[], &[("PROFILE", "")]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("profiled:"));
}

#[test]
fn unwritable_directory_fails_the_test_with_path_and_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "a file where the directory should be").unwrap();
    let out = cargo_test(
        "outcomes",
        &["--test-threads=1"],
        &[("PROFILE", &format!("cpu,dir={}", blocker.display()))],
    );
    let text = stdout(&out);
    assert!(text.contains("profiled: PROFILE: `dir="), "{text}");
    assert!(text.contains("cannot create directory"), "{text}");
    assert!(text.contains("not-a-dir/workloads/outcomes"), "{text}");
    assert!(text.contains("os error"), "{text}");
    // Checked before the first test runs: every profiled test fails on it, with the message
    // (the should_panic test too: its expected text is not ours). None of them ran.
    assert!(!text.contains("deliberate"), "{text}");
    assert_eq!(
        summary(&out)[0],
        "test result: FAILED. 0 passed; 7 failed; 1 ignored; 0 measured; 0 filtered out"
    );
}

#[test]
fn off_means_off() {
    let target = fixture_target();
    let profiles = target.join("profiles/workloads/off");
    let _ = std::fs::remove_dir_all(&profiles);
    let out = cargo_test("off", &[], &[]);
    assert!(
        out.status.success(),
        "the fixture asserts no thread and no handler"
    );
    assert!(!profiles.exists());
    assert!(!stderr(&out).contains("profiled:"));
}

#[test]
fn default_location_is_under_the_cargo_target_dir() {
    let target = fixture_target();
    let file = target.join("profiles/workloads/parallel/alpha.cpu.pb.gz");
    let _ = std::fs::remove_file(&file);
    let out = cargo_test("parallel", &["alpha"], &[("PROFILE", "cpu")]);
    assert!(out.status.success());
    assert!(file.is_file(), "{} missing", file.display());
    assert!(stderr(&out).contains("-> "), "{}", stderr(&out));
}
