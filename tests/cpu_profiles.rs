//! Runs the fixture's real test binaries with `PROFILE=cpu` and checks what their profiles
//! hold. Linux x86_64 only, where sampling is supported.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::*;

fn profile_env(dir: &std::path::Path, extra: &str) -> String {
    format!("cpu,dir={}{extra}", dir.display())
}

#[test]
fn attribution_and_cpu_total() {
    for engine in ["", ",engine=timer"] {
        let dir = tempfile::tempdir().unwrap();
        let out_file = dir.path().join("reported");
        let out = cargo_test(
            "attribution",
            &[],
            &[
                ("PROFILE", &profile_env(dir.path(), engine)),
                ("FIXTURE_OUT", out_file.to_str().unwrap()),
            ],
        );
        assert!(out.status.success());
        let p = read(
            &dir.path()
                .join("workloads/attribution/three_to_one_split.cpu.pb.gz"),
        );
        let a = p.share("workloads::heavy_a");
        let b = p.share("workloads::heavy_b");
        // Against the share the fixture measured, within four binomial standard errors of
        // the samples this profile holds (perf: ~800; timer, at the kernel tick: ~500).
        let truth: f64 = reported(&out_file)["three_to_one_split.share_a"]
            .parse()
            .unwrap();
        let n = p.samples();
        let tolerance = sampling_error(truth, n);
        assert!(
            (a - truth).abs() <= tolerance,
            "engine {engine:?}: heavy_a share {a:.3} (true {truth:.3} ±{tolerance:.3}, \
             {n} samples), heavy_b {b:.3}"
        );
        let measured: f64 = reported(&out_file)["three_to_one_split.cpu_ns"]
            .parse()
            .unwrap();
        let ratio = p.cpu_ns() as f64 / measured;
        assert!(
            (0.9..=1.1).contains(&ratio),
            "engine {engine:?}: profile/thread CPU = {ratio:.3}"
        );
        assert_eq!(
            p.value_types(),
            [("samples", "count"), ("cpu", "nanoseconds")]
        );
        assert!(p.profile.duration_nanos > 0 && p.profile.time_nanos > 0);
        assert!(p.profile.period > 0);
        let main = &p.profile.mapping[0];
        assert!(p.profile.string_table[main.filename as usize].contains("attribution-"));
        assert_eq!(p.profile.string_table[main.build_id as usize].len(), 40);

        // Zero samples still make a valid profile and a summary line.
        let empty = read(
            &dir.path()
                .join("workloads/attribution/too_short_for_a_sample.cpu.pb.gz"),
        );
        assert!(empty.samples() <= 1);
        assert!(stderr(&out).contains("profiled: too_short_for_a_sample  cpu 0.00s"));
        assert!(stderr(&out).contains("profiled: three_to_one_split  cpu "));
        // The timer falls short of 1000 Hz (kernel tick): said once, perf never.
        let shortfalls = stderr(&out)
            .matches("the thread CPU timer delivered")
            .count();
        assert_eq!(
            shortfalls,
            usize::from(!engine.is_empty()),
            "engine {engine:?}"
        );
        assert!(
            stderr(&out).contains("top: workloads::heavy_a ("),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn setup_before_reset_or_paused_is_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test("setup", &[], &[("PROFILE", &profile_env(dir.path(), ""))]);
    assert!(out.status.success());
    for test in ["setup_then_reset", "setup_paused"] {
        let p = read(&dir.path().join(format!("workloads/setup/{test}.cpu.pb.gz")));
        p.assert_share_at_most("workloads::setup_hot", 0.05);
        p.assert_share_at_least("workloads::heavy_a", 0.85);
        let cpu = p.cpu_ns() as f64 / 1e9;
        assert!(
            (0.25..0.45).contains(&cpu),
            "{test}: {cpu:.3}s CPU, expected ~0.3 s of work"
        );
    }
    // Setup ten times the work, left out: no note about other threads (or waiting), since
    // the stretch profiled was all work.
    let err = stderr(&out);
    for test in ["long_setup_then_reset", "long_setup_unprofiled"] {
        assert!(err.contains(&format!("profiled: {test}  cpu ")), "{err}");
        assert!(!err.contains(&format!("{test}: note:")), "{err}");
    }
}

#[test]
fn parallel_tests_get_their_own_work_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "parallel",
        &["--test-threads=2"],
        &[("PROFILE", &profile_env(dir.path(), ""))],
    );
    assert!(out.status.success());
    for (test, own) in [
        ("alpha", "workloads::alpha_hot"),
        ("beta", "workloads::beta_hot"),
    ] {
        let p = read(
            &dir.path()
                .join(format!("workloads/parallel/{test}.cpu.pb.gz")),
        );
        p.assert_share_at_least(own, 0.95);
    }
}

#[test]
fn spawned_threads_are_in_the_profile_and_neighbours_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "threads",
        &["--test-threads=2"],
        &[("PROFILE", &profile_env(dir.path(), ""))],
    );
    assert!(out.status.success());
    let p = read(&dir.path().join("workloads/threads/four_workers.cpu.pb.gz"));
    // Each sample says which thread it was taken on (go tool pprof -tagfocus thread=...).
    let mut names: Vec<&str> = p
        .profile
        .sample
        .iter()
        .filter(|s| p.stack(s).iter().any(|f| f.ends_with("worker_hot")))
        .map(|s| p.label(s, "thread").expect("thread label"))
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["worker-0", "worker-1", "worker-2", "worker-3"]);
    p.assert_share_at_least("workloads::worker_hot", 0.9);
    p.assert_share_at_most("workloads::beta_hot", 0.01);
    let cpu = p.cpu_ns() as f64 / 1e9;
    assert!(
        (0.36..0.5).contains(&cpu),
        "4 workers x 100 ms, got {cpu:.3}s"
    );
}

#[test]
fn async_tests_include_runtime_worker_threads() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test("asyncs", &[], &[("PROFILE", &profile_env(dir.path(), ""))]);
    assert!(out.status.success());
    // Each test ran once: stacking with #[tokio::test] in either order adds no second test.
    assert_eq!(
        summary(&out)[0],
        "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out"
    );
    let p = read(
        &dir.path()
            .join("workloads/asyncs/multi_thread_workers.cpu.pb.gz"),
    );
    let cpu = p.cpu_ns() as f64 / 1e9;
    p.assert_share_at_least("workloads::async_hot", 0.9);
    // 4 tasks on worker threads + 1 blocking task, 60 ms each.
    assert!(
        (0.27..0.4).contains(&cpu),
        "multi_thread: {cpu:.3}s in profile"
    );
    for test in ["current_thread_below", "current_thread_above"] {
        let p = read(
            &dir.path()
                .join(format!("workloads/asyncs/{test}.cpu.pb.gz")),
        );
        p.assert_share_at_least("workloads::async_hot", 0.9);
    }
}

#[test]
fn svg_flamegraph_beside_each_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "attribution",
        &[],
        &[("PROFILE", &profile_env(dir.path(), ",svg"))],
    );
    assert!(out.status.success());
    let titles = svg_titles(
        &dir.path()
            .join("workloads/attribution/three_to_one_split.cpu.svg"),
    );
    // inferno's title: "name (N µs CPU, P%)".
    let pct = |title: &str| -> f64 {
        title
            .rsplit(", ")
            .next()
            .and_then(|p| p.trim_end_matches("%)").parse().ok())
            .unwrap_or(0.0)
    };
    let a = titles
        .iter()
        .find(|t| t.starts_with("workloads::heavy_a "))
        .expect("heavy_a in the flamegraph");
    // heavy_a holds about 3/4 of the profile.
    assert!((65.0..85.0).contains(&pct(a)), "{a}");
    // The graph starts at the test: no thread start, libtest or C runtime frames below it,
    // which would hold all of it. (std's own frames may still show above the test's code,
    // where it called std: reading an environment variable, say.)
    for runner in [
        "start_thread",
        "clone",
        "test::run_test",
        "std::sys::",
        "__rust_begin",
    ] {
        assert!(
            !titles
                .iter()
                .any(|t| t.starts_with(runner) && pct(t) > 50.0),
            "{runner} in {titles:?}"
        );
    }
    assert!(titles.iter().any(|t| t.contains("three_to_one_split")));
    // The summary line names the SVG too.
    assert!(
        stderr(&out).contains("three_to_one_split.cpu.pb.gz, ")
            && stderr(&out).contains("three_to_one_split.cpu.svg"),
        "{}",
        stderr(&out)
    );
    // A test without samples still gets a readable SVG.
    let empty = svg_titles(
        &dir.path()
            .join("workloads/attribution/too_short_for_a_sample.cpu.svg"),
    );
    assert!(!empty.is_empty());
}
