//! profiled's own harness (`profiled::main!()` + `#[profiled::test]`, on libtest-mimic):
//! libtest's command line, Go-style profiling flags, the summary table, and cargo-nextest.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use std::process::Command;
use support::*;

const TESTS: [&str; 6] = [
    "alpha_work",
    "beta_work",
    "fails_when_asked",
    "nested::panics_as_expected",
    "nested::panics_with_the_short_form",
    "nested::worker_threads",
];

fn file(test: &str) -> String {
    format!("{}.cpu.pb.gz", test.replace("::", "."))
}

#[test]
fn profile_dir_writes_one_profile_per_test_and_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test("harness", &["--profile", dir.path().to_str().unwrap()], &[]);
    assert!(out.status.success());
    for test in TESTS {
        assert!(
            dir.path()
                .join("workloads/harness")
                .join(file(test))
                .is_file(),
            "{test}"
        );
    }
    assert!(
        !dir.path()
            .join("workloads/harness")
            .join(file("ignored_one"))
            .exists()
    );
    let alpha = read(
        &dir.path()
            .join("workloads/harness")
            .join(file("alpha_work")),
    );
    alpha.assert_share_at_least("workloads::alpha_hot", 0.9);
    let beta = read(&dir.path().join("workloads/harness").join(file("beta_work")));
    // reset() works in harness tests.
    beta.assert_share_at_least("workloads::beta_hot", 0.9);
    beta.assert_share_at_most("workloads::setup_hot", 0.05);
    let workers = read(
        &dir.path()
            .join("workloads/harness")
            .join(file("nested::worker_threads")),
    );
    // Spawned threads are profiled.
    workers.assert_share_at_least("workloads::worker_hot", 0.9);
    // The table: a header and one row per profiled test, naming CPU, samples, top fn, file.
    let err = stderr(&out);
    assert!(err.contains("profiled: 6 profiles"), "{err}");
    // The table: each header over its column, numbers right-aligned under theirs.
    let table: Vec<&str> = err
        .lines()
        .skip_while(|l| *l != "profiled: 6 profiles")
        .skip(1)
        .collect();
    let header = table[0];
    let at = |name: &str| {
        header
            .find(name)
            .unwrap_or_else(|| panic!("{name}: {header}"))
    };
    let row = table
        .iter()
        .find(|l| l.starts_with("alpha_work "))
        .expect("alpha_work's row");
    let (kind, total_end) = (at("kind"), at("total") + "total".len());
    assert_eq!(&row[kind..kind + 4], "cpu ", "{header}\n{row}");
    // "0.15s" ends where "total" does.
    assert!(
        row[..total_end].ends_with('s') && row.as_bytes()[total_end] == b' ',
        "{header}\n{row}"
    );
    assert!(
        row[at("top function")..].starts_with("workloads::alpha_hot ("),
        "{header}\n{row}"
    );
    let row = err
        .lines()
        .find(|l| l.starts_with("alpha_work "))
        .expect("row for alpha_work");
    assert!(row.contains("workloads::alpha_hot ("), "{row}");
    assert!(row.contains(&file("alpha_work")), "{row}");
    assert!(row.contains("s "), "{row}");
}

#[test]
fn cpuprofile_writes_one_profile_of_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cpu.pb.gz");
    let out = cargo_test("harness", &["--cpuprofile", path.to_str().unwrap()], &[]);
    assert!(out.status.success());
    let p = read(&path);
    for hot in [
        "workloads::alpha_hot",
        "workloads::beta_hot",
        "workloads::worker_hot",
    ] {
        p.assert_share_at_least(hot, 0.1);
    }
    // Only that file: no per-test profiles.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    assert!(stderr(&out).contains("profiled: 1 profile\n"));
}

/// Sums the second value (`alloc_space` in heap profiles, `delay` in block and mutex ones)
/// over samples whose leaf (the kind's own frames trimmed) ends with `leaf`.
fn at_leaf(p: &Read, leaf: &str) -> i64 {
    p.profile
        .sample
        .iter()
        .filter(|s| p.stack(s).first().is_some_and(|f| f.ends_with(leaf)))
        .map(|s| s.value[1])
        .sum()
}

#[test]
fn memprofile_writes_one_heap_profile_of_the_whole_run_and_per_test_ones_beside() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mem.pb.gz");
    let cpu = dir.path().join("cpu.pb.gz");
    let out = cargo_test(
        "harness",
        &[
            "--memprofile",
            path.to_str().unwrap(),
            "--memprofilerate=1",
            "--cpuprofile",
            cpu.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let p = read(&path);
    assert_eq!(p.value_types()[1], ("alloc_space", "bytes"));
    // Exact at rate 1: alpha's 64 x 64 KiB, and both workers' 100 x 10 000 bytes (threads
    // the test spawned).
    assert_eq!(at_leaf(&p, "harness::alpha_allocates"), 64 * 64 * 1024);
    assert_eq!(at_leaf(&p, "harness::worker_allocates"), 2 * 100 * 10_000);
    read(&cpu).assert_share_at_least("workloads::alpha_hot", 0.1);
    let err = stderr(&out);
    assert!(err.contains("profiled: 2 profiles"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("all tests ") && l.contains(" heap ")),
        "a table row for the heap profile: {err}"
    );

    // PROFILE's kinds per test, with --profile's directory.
    let per_test = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "harness",
        &["--profile", per_test.path().to_str().unwrap(), "alpha_work"],
        &[("PROFILE", "cpu,heap,heap_rate=1")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let heap = read(
        &per_test
            .path()
            .join("workloads/harness/alpha_work.heap.pb.gz"),
    );
    assert_eq!(at_leaf(&heap, "harness::alpha_allocates"), 64 * 64 * 1024);
    assert!(
        per_test
            .path()
            .join("workloads/harness/alpha_work.cpu.pb.gz")
            .is_file()
    );
}

#[test]
fn blockprofile_and_mutexprofile_write_whole_run_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let block = dir.path().join("block.pb.gz");
    let mutex = dir.path().join("mutex.pb.gz");
    let out = cargo_test(
        "harness",
        &[
            "--blockprofile",
            block.to_str().unwrap(),
            "--blockprofilerate=1",
            "--mutexprofile",
            mutex.to_str().unwrap(),
            "--mutexprofilefraction",
            "1",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for path in [&block, &mutex] {
        let p = read(path);
        assert_eq!(
            p.value_types(),
            [("contentions", "count"), ("delay", "nanoseconds")]
        );
        // Two workers take 5 turns each of 10 ms on one lock: until one is through, the
        // other waits: 50 ms at least (threads the test spawned).
        let waited = at_leaf(&p, "harness::worker_takes_turns");
        assert!(waited > 45_000_000, "{}: {waited} ns", path.display());
    }
    let err = stderr(&out);
    assert!(
        err.lines().any(|l| l.starts_with("all tests  block ")),
        "a table row for the block profile: {err}"
    );

    // Per test with PROFILE, and the rate flags checked.
    let per_test = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "harness",
        &[
            "--profile",
            per_test.path().to_str().unwrap(),
            "worker_threads",
        ],
        &[("PROFILE", "block")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = per_test.path().join("workloads/harness");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("worker_threads.block.pb.gz"))
        .unwrap_or_else(|| panic!("no block profile in {}", dir.display()));
    assert!(at_leaf(&read(&file), "harness::worker_takes_turns") > 45_000_000);
    for (flag, message) in [
        (
            "--blockprofilerate=0",
            "invalid value '0' for '--blockprofilerate': accepted 1 (every wait) and up",
        ),
        (
            "--mutexprofilefraction=x",
            "invalid value 'x' for '--mutexprofilefraction': not a whole number of events",
        ),
    ] {
        let out = cargo_test("harness", &[flag], &[]);
        assert_eq!(out.status.code(), Some(101), "{flag}");
        assert!(stderr(&out).contains(message), "{flag}: {}", stderr(&out));
    }
}

#[test]
fn profile_env_works_and_flags_win_over_it() {
    let env_dir = tempfile::tempdir().unwrap();
    let flag_dir = tempfile::tempdir().unwrap();
    let env = format!("cpu,dir={}", env_dir.path().display());
    let out = cargo_test("harness", &["alpha_work"], &[("PROFILE", &env)]);
    assert!(out.status.success());
    assert!(
        env_dir
            .path()
            .join("workloads/harness")
            .join(file("alpha_work"))
            .is_file()
    );

    let env2 = tempfile::tempdir().unwrap();
    let env = format!("cpu,dir={}", env2.path().display());
    let out = cargo_test(
        "harness",
        &[
            "alpha_work",
            "--profile",
            flag_dir.path().to_str().unwrap(),
            "--profile-freq",
            "500",
        ],
        &[("PROFILE", &env)],
    );
    assert!(out.status.success());
    let p = read(
        &flag_dir
            .path()
            .join("workloads/harness")
            .join(file("alpha_work")),
    );
    assert!(
        p.comments().iter().any(|c| c.contains("at 500 Hz")),
        "{:?}",
        p.comments()
    );
    assert!(
        !env2.path().join("workloads/harness").exists(),
        "the flag's directory wins"
    );
}

#[test]
fn libtest_command_line_works() {
    let out = cargo_test("harness", &["--list", "--format", "terse"], &[]);
    assert!(out.status.success());
    let listed: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    let mut expected: Vec<String> = TESTS.iter().map(|t| format!("{t}: test")).collect();
    expected.push("ignored_one: test".into());
    expected.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "nothing but the list on stdout");

    let out = cargo_test(
        "harness",
        &["--list", "--format", "terse", "--ignored"],
        &[],
    );
    assert_eq!(stdout(&out).trim(), "ignored_one: test");

    let out = cargo_test("harness", &["alpha_work", "--exact"], &[]);
    assert_eq!(
        summary(&out)[0],
        "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 6 filtered out"
    );

    let out = cargo_test(
        "harness",
        &["--skip", "nested", "--test-threads", "1", "--quiet"],
        &[],
    );
    assert_eq!(
        summary(&out)[0],
        "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out"
    );

    let out = cargo_test("harness", &[], &[("HARNESS_FAIL", "1")]);
    assert_eq!(out.status.code(), Some(101));
    assert_eq!(
        summary(&out)[0],
        "test result: FAILED. 5 passed; 1 failed; 1 ignored; 0 measured; 0 filtered out"
    );
    assert!(stdout(&out).contains("asked to fail"));
}

#[test]
fn failures_show_the_panic_message_and_tests_run_on_threads_named_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("reported");
    let out = cargo_test(
        "harness",
        &[],
        &[
            ("HARNESS_FAIL", "panic"),
            ("FIXTURE_OUT", out_file.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(101));
    let text = stdout(&out);
    let failures = text.split("failures:").nth(1).unwrap_or_default();
    assert!(
        failures.contains("thread 'fails_when_asked' panicked at tests/harness.rs:")
            && failures.contains("asked to panic"),
        "{text}"
    );
    // Kept for the failures section, not printed while the tests run.
    assert!(!stderr(&out).contains("asked to panic"), "{}", stderr(&out));
    assert_eq!(reported(&out_file)["alpha_work.thread"], "alpha_work");

    // `#[should_panic = "text"]` checks its text like the long form does.
    let out = cargo_test("harness", &["short_form"], &[("HARNESS_FAIL", "short")]);
    assert_eq!(out.status.code(), Some(101));
    assert!(
        stdout(&out).contains("panic did not contain expected string")
            && stdout(&out).contains("expected substring: \"short form\""),
        "{}",
        stdout(&out)
    );

    // What tests print is kept: shown under `failures:` for a failing test, not at all for
    // a passing one; --nocapture shows it as it comes.
    let out = cargo_test("harness", &[], &[("HARNESS_FAIL", "1")]);
    let failures = stdout(&out);
    let failures = failures.split("failures:").nth(1).unwrap_or_default();
    assert!(failures.contains("said before failing"), "{}", stdout(&out));
    let all = stdout(&out) + &stderr(&out);
    assert!(!all.contains("printed by alpha_work"), "{all}");
    let out = cargo_test("harness", &["alpha_work", "--nocapture"], &[]);
    assert!(
        stdout(&out).contains("printed by alpha_work"),
        "{}",
        stdout(&out)
    );

    // A misspelt flag: the closest one, not clap's tip about values.
    let out = cargo_test("harness", &["--cpuprofil", "x.pb.gz"], &[]);
    assert_eq!(out.status.code(), Some(101));
    let err = stderr(&out);
    assert!(
        err.contains("unknown option '--cpuprofil' (did you mean '--cpuprofile'?)"),
        "{err}"
    );
    assert!(!err.contains("tip:"), "{err}");
}

#[test]
fn bad_flags_give_usage_and_exit_101() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (args, named) in [
        (vec!["--cpuprofile"], "option '--cpuprofile' needs a value"),
        (
            vec!["--profile-freq", "abc", "--profile", d],
            "invalid value 'abc' for '--profile-freq'",
        ),
        (
            vec!["--profile-freq", "0", "--profile", d],
            "invalid value '0' for '--profile-freq': accepted 1..=10000",
        ),
        (vec!["--bogus", "--profile", d], "'--bogus'"),
        (
            vec!["--memprofilerate", "0", "--profile", d],
            "invalid value '0' for '--memprofilerate': accepted 1 (every allocation) and up",
        ),
    ] {
        let out = cargo_test("harness", &args, &[]);
        assert_eq!(out.status.code(), Some(101), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(err.contains("--cpuprofile FILE"), "usage text: {err}");
        assert!(!stdout(&out).contains("test result"), "no test ran");
    }
    // A right command line with a wrong setting: the message alone, no usage to drown it.
    let out = cargo_test("harness", &["--profile", d], &[("PROFILED", "cpu,frq=100")]);
    assert_eq!(out.status.code(), Some(101));
    let err = stderr(&out);
    assert!(err.contains("did you mean"), "{err}");
    assert!(!err.contains("--cpuprofile FILE"), "{err}");
    assert!(!stdout(&out).contains("test result"), "no test ran");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn nextest_writes_one_profile_per_test_named_as_under_cargo_test() {
    let nextest = Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .output();
    assert!(
        nextest.is_ok_and(|o| o.status.success()),
        "cargo-nextest is needed: cargo install --locked cargo-nextest"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["nextest", "run", "--manifest-path"])
        .arg(fixture_manifest())
        .args(["--test", "harness", "--test", "parallel", "--no-fail-fast"])
        // What README says to add: nextest hides passing tests' output, summary lines too.
        .args(["--success-output", "final"])
        .env("CARGO_TARGET_DIR", fixture_target())
        .env("PROFILE", format!("cpu,dir={}", dir.path().display()))
        .output()
        .unwrap();
    eprintln!("{}\n{}", stdout(&out), stderr(&out));
    assert!(out.status.success());
    let shown = stdout(&out) + &stderr(&out);
    for test in ["alpha", "alpha_work"] {
        assert!(
            shown.contains(&format!("profiled: {test}  cpu "))
                && shown.contains(&format!("/{test}.cpu.pb.gz")),
            "{test}'s summary line: {shown}"
        );
    }
    for test in TESTS {
        assert!(
            dir.path()
                .join("workloads/harness")
                .join(file(test))
                .is_file(),
            "harness: {test}"
        );
    }
    for test in ["alpha", "beta"] {
        let p = read(&dir.path().join("workloads/parallel").join(file(test)));
        // #[profiled] under nextest.
        p.assert_share_at_least(&format!("workloads::{test}_hot"), 0.95);
    }
}

/// (start, end) wall-clock spans the harness fixture's alpha and beta tests reported.
fn spans(file: &std::path::Path) -> [(u128, u128); 2] {
    let r = reported(file);
    ["alpha_work.span", "beta_work.span"].map(|k| {
        let (a, b) = r[k].split_once(' ').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    })
}

#[test]
fn profiled_tests_run_one_at_a_time_unprofiled_ones_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("spans");
    let f = out_file.to_str().unwrap();
    let out = cargo_test(
        "harness",
        &[
            "work",
            "--test-threads",
            "2",
            "--profile",
            dir.path().to_str().unwrap(),
        ],
        &[("FIXTURE_OUT", f)],
    );
    assert!(out.status.success());
    let [a, b] = spans(&out_file);
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "profiled tests overlapped: {a:?} {b:?}"
    );

    std::fs::remove_file(&out_file).unwrap();
    let out = cargo_test(
        "harness",
        &["work", "--test-threads", "2"],
        &[("FIXTURE_OUT", f)],
    );
    assert!(out.status.success());
    let [a, b] = spans(&out_file);
    assert!(
        a.0 < b.1 && b.0 < a.1,
        "without profiling they run in parallel: {a:?} {b:?}"
    );
}
