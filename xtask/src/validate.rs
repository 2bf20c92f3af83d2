//! `cargo xtask validate`: real profiles, read by the real consumer.
//!
//! Runs the example's and the fixtures' tests with `PROFILE=cpu` (and the heap fixture with
//! `cpu,heap,allocs`) into `target/validate/`, then for every profile file runs `go tool
//! pprof -top`, `-traces` and `-list <hot function>`, and for heap profiles `-top` by
//! `alloc_space` and by `inuse_space`.
//! Each must exit 0 with nothing on stderr (pprof prints its warnings there), and `-top` must
//! list the function the test spends its time in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How the fixtures and the example are run to produce profiles.
enum Run {
    /// `cargo test --test TARGET` in CRATE with `PROFILE=cpu,dir=<out>`.
    Test(&'static str, &'static str),
    /// `cargo test --test TARGET` in CRATE with `PROFILE=KINDS,dir=<out>`.
    Kinds(&'static str, &'static str, &'static str),
    /// `cargo bench --bench TARGET -- --profile-time 1` in CRATE (criterion integration);
    /// profiles land in the criterion directory.
    Bench(&'static str, &'static str),
    /// `cargo test --test TARGET -- ARGS` in CRATE (profiled's harness); `{out}` is replaced.
    Harness(&'static str, &'static str, &'static [&'static str]),
    /// `cargo test --release --test TARGET` in CRATE with `debug = "line-tables-only"` (the
    /// Rust performance book's setting for profiling release builds) and `PROFILE=KINDS`,
    /// profiles into `<out>/release`. Such builds name inlined frames without their module
    /// path, so heap profiles there show the allocator's frames are trimmed by source file.
    ReleaseLines(&'static str, &'static str, &'static str),
}

const FIXTURES: &str = "tests/fixtures/workloads";

const RUNS: &[Run] = &[
    Run::Test("example", "scheduler"),
    Run::Test(FIXTURES, "attribution"),
    Run::Test(FIXTURES, "setup"),
    Run::Test(FIXTURES, "parallel"),
    Run::Test(FIXTURES, "threads"),
    Run::Test(FIXTURES, "asyncs"),
    Run::Test(FIXTURES, "deep"),
    Run::Kinds(FIXTURES, "heap", "cpu,heap,allocs"),
    Run::Kinds(FIXTURES, "contention", "block,mutex,wall"),
    Run::ReleaseLines(FIXTURES, "attribution", "cpu"),
    Run::ReleaseLines(FIXTURES, "heap", "heap,allocs"),
    Run::Bench(FIXTURES, "setup"),
    Run::Harness(
        FIXTURES,
        "harness",
        &[
            "--profile",
            "{out}",
            "--cpuprofile",
            "{out}/harness-all.cpu.pb.gz",
            "--blockprofile",
            "{out}/harness-all.block.pb.gz",
            "--mutexprofile",
            "{out}/harness-all.mutex.pb.gz",
        ],
    ),
];

/// What `go tool pprof` must show for a profile.
#[derive(Clone, Copy)]
enum Expect {
    /// Only valid (a test too short for a sample, a whole-run profile).
    Valid,
    /// The function holds >= 50% cum in `-top`, and `-list` shows its source (debug builds).
    Hot(&'static str),
    /// The function is the first row of `-top` (release-built benchmarks, no line info).
    Top(&'static str),
    /// A heap profile: `-sample_index=alloc_space -top` and `-sample_index=inuse_space -top`
    /// both read it, and the function is the first row of the first (the most bytes
    /// allocated) and, when given, of the second (the most bytes still in use).
    Heap(&'static str, Option<&'static str>),
}
use Expect::{Heap, Hot, Top, Valid};

/// Profile files, relative to target/, and what each must show.
const EXPECTED: &[(&str, Expect)] = &[
    (
        "validate/scheduler-example/scheduler/schedules_1000_pods.cpu.pb.gz",
        Hot("scheduler_example::score_node"),
    ),
    (
        "validate/scheduler-example/scheduler/schedules_in_waves.cpu.pb.gz",
        Hot("scheduler_example::score_node"),
    ),
    (
        "validate/scheduler-example/scheduler/schedules_on_runtime_workers.cpu.pb.gz",
        Hot("scheduler_example::score_node"),
    ),
    (
        "validate/workloads/attribution/three_to_one_split.cpu.pb.gz",
        Hot("workloads::heavy_a"),
    ),
    (
        "validate/workloads/attribution/too_short_for_a_sample.cpu.pb.gz",
        Valid,
    ),
    (
        "validate/release/workloads/attribution/three_to_one_split.cpu.pb.gz",
        Hot("workloads::heavy_a"),
    ),
    (
        "validate/workloads/setup/setup_then_reset.cpu.pb.gz",
        Hot("workloads::heavy_a"),
    ),
    (
        "validate/workloads/setup/setup_paused.cpu.pb.gz",
        Hot("workloads::heavy_a"),
    ),
    (
        "validate/workloads/parallel/alpha.cpu.pb.gz",
        Hot("workloads::alpha_hot"),
    ),
    (
        "validate/workloads/parallel/beta.cpu.pb.gz",
        Hot("workloads::beta_hot"),
    ),
    (
        "validate/workloads/threads/four_workers.cpu.pb.gz",
        Hot("workloads::worker_hot"),
    ),
    (
        "validate/workloads/asyncs/multi_thread_workers.cpu.pb.gz",
        Hot("workloads::async_hot"),
    ),
    (
        "validate/workloads/asyncs/current_thread_below.cpu.pb.gz",
        Hot("workloads::async_hot"),
    ),
    (
        "validate/workloads/asyncs/current_thread_above.cpu.pb.gz",
        Hot("workloads::async_hot"),
    ),
    (
        "validate/workloads/deep/two_thousand_deep.cpu.pb.gz",
        Hot("deep::two_thousand_deep"),
    ),
    (
        "fixtures/criterion/setup_before_iter/profile/cpu.pb.gz",
        Top("workloads::heavy_a"),
    ),
    (
        "fixtures/criterion/iter_batched_setup/profile/cpu.pb.gz",
        Top("workloads::heavy_b"),
    ),
    (
        "fixtures/criterion/unprofiled_inside/profile/cpu.pb.gz",
        Top("workloads::heavy_a"),
    ),
    (
        "validate/workloads/harness/alpha_work.cpu.pb.gz",
        Hot("workloads::alpha_hot"),
    ),
    (
        "validate/workloads/harness/beta_work.cpu.pb.gz",
        Hot("workloads::beta_hot"),
    ),
    (
        "validate/workloads/harness/nested.worker_threads.cpu.pb.gz",
        Hot("workloads::worker_hot"),
    ),
    (
        "validate/workloads/harness/fails_when_asked.cpu.pb.gz",
        Valid,
    ),
    ("validate/harness-all.cpu.pb.gz", Valid),
    (
        "validate/harness-all.block.pb.gz",
        Top("harness::worker_takes_turns"),
    ),
    (
        "validate/harness-all.mutex.pb.gz",
        Top("harness::worker_takes_turns"),
    ),
    (
        "validate/workloads/contention/consumer_waits_for_the_producer.block.pb.gz",
        Top("contention::consumer_pops"),
    ),
    (
        "validate/workloads/contention/consumer_waits_for_the_producer.mutex.pb.gz",
        Top("contention::producer_holds"),
    ),
    (
        "validate/workloads/contention/consumer_waits_for_the_producer.wall.pb.gz",
        Valid,
    ),
    (
        "validate/workloads/heap/three_to_one_bytes.heap.pb.gz",
        Heap("heap::allocates_three", None),
    ),
    (
        "validate/workloads/heap/three_to_one_bytes.allocs.pb.gz",
        Heap("heap::allocates_three", None),
    ),
    (
        "validate/workloads/heap/three_to_one_bytes.cpu.pb.gz",
        Valid,
    ),
    (
        "validate/workloads/heap/leak_beside_freed.heap.pb.gz",
        Heap(
            "heap::allocates_and_frees::{{closure}}",
            Some("heap::leaks"),
        ),
    ),
    (
        "validate/workloads/heap/parallel_left.heap.pb.gz",
        Heap("heap::left_worker", None),
    ),
    (
        "validate/workloads/heap/parallel_right.allocs.pb.gz",
        Heap("heap::right_worker", None),
    ),
    (
        "validate/workloads/heap/setup_is_reset_away.heap.pb.gz",
        Heap("heap::allocates_one", None),
    ),
    // Release with line tables only: std's allocation code and profiled's hook are inlined
    // under bare names there, and must still be trimmed (`top: on_alloc` before they were).
    (
        "validate/release/workloads/heap/three_to_one_bytes.allocs.pb.gz",
        Heap("heap::allocates_three", None),
    ),
    (
        "validate/release/workloads/heap/parallel_left.heap.pb.gz",
        Heap("heap::left_worker", None),
    ),
    (
        "validate/release/workloads/heap/setup_is_reset_away.heap.pb.gz",
        Heap("heap::allocates_one", None),
    ),
];

pub fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let go = find_go()?;
    let target = root.join("target");
    let out = target.join("validate");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(target.join("fixtures/criterion"));
    for run in RUNS {
        let out_dir = out.display().to_string();
        let release = matches!(run, Run::ReleaseLines(..));
        let (krate, kind, target_name, extra, profile): (_, _, _, Vec<String>, _) = match run {
            Run::Test(krate, test) => (
                krate,
                "test",
                test,
                vec![],
                Some(format!("cpu,dir={out_dir}")),
            ),
            Run::Kinds(krate, test, kinds) => (
                krate,
                "test",
                test,
                vec![],
                Some(format!("{kinds},dir={out_dir}")),
            ),
            Run::Bench(krate, bench) => (
                krate,
                "bench",
                bench,
                vec!["--profile-time".into(), "1".into()],
                None,
            ),
            Run::Harness(krate, test, args) => (
                krate,
                "test",
                test,
                args.iter().map(|a| a.replace("{out}", &out_dir)).collect(),
                None,
            ),
            Run::ReleaseLines(krate, test, kinds) => (
                krate,
                "test",
                test,
                vec![],
                Some(format!("{kinds},dir={out_dir}/release")),
            ),
        };
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(&root)
            .args([kind, "--quiet", "--manifest-path"])
            .arg(root.join(krate).join("Cargo.toml"))
            .args(release.then_some("--release"))
            .env("CARGO_PROFILE_RELEASE_DEBUG", "line-tables-only")
            .args([format!("--{kind}"), target_name.to_string(), "--".into()])
            .args(&extra)
            .env("CARGO_TARGET_DIR", target.join("fixtures"))
            .env_remove("PROFILE");
        if let Some(profile) = profile {
            cmd.env("PROFILE", profile);
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`cargo {kind} --{kind} {target_name}` in {krate} failed: {status}"
            ));
        }
    }
    let check = |rel: &str, expect: &Expect| -> Result<String, String> {
        let file = target.join(rel);
        if !file.is_file() {
            return Err(format!("{} was not written", file.display()));
        }
        let top = pprof(&go, &["-top"], &file)?;
        pprof(&go, &["-traces"], &file)?;
        // Rows after the header: flat flat% sum% cum cum% name.
        let rows: Vec<&str> = top
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat"))
            .skip(1)
            .collect();
        let first = rows.first().map_or("", |r| r.trim());
        let first_row = |index: &str| -> Result<String, String> {
            let top = pprof(&go, &[&format!("-sample_index={index}"), "-top"], &file)?;
            Ok(top
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("flat"))
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string())
        };
        match *expect {
            Valid => {}
            Heap(allocated, in_use) => {
                let by_alloc = first_row("alloc_space")?;
                let by_inuse = first_row("inuse_space")?;
                if !by_alloc.ends_with(allocated) {
                    return Err(format!(
                        "{}: {allocated} is not the top entry by alloc_space: {by_alloc}",
                        file.display()
                    ));
                }
                if let Some(in_use) = in_use.filter(|f| !by_inuse.ends_with(f)) {
                    return Err(format!(
                        "{}: {in_use} is not the top entry by inuse_space: {by_inuse}",
                        file.display()
                    ));
                }
                return Ok(format!(
                    "ok  {}  alloc_space: {by_alloc}  inuse_space: {by_inuse}",
                    display(&file, &root)
                ));
            }
            Top(hot) => {
                if !first.ends_with(hot) {
                    return Err(format!(
                        "{}: {hot} is not the top entry:\n{top}",
                        file.display()
                    ));
                }
            }
            Hot(hot) => {
                let cum = rows
                    .iter()
                    .find(|l| l.trim_end().ends_with(hot))
                    .and_then(|l| l.split_whitespace().nth(4))
                    .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok());
                if !cum.is_some_and(|c| c >= 50.0) {
                    return Err(format!(
                        "{}: `go tool pprof -top` does not list {hot} with >= 50% cum:\n{top}",
                        file.display()
                    ));
                }
                let listed = pprof(&go, &["-list", &regex_escape(hot)], &file)?;
                if !listed.contains("ROUTINE") {
                    return Err(format!(
                        "{}: -list {hot} shows no source:\n{listed}",
                        file.display()
                    ));
                }
            }
        }
        Ok(format!("ok  {}  top row: {first}", display(&file, &root)))
    };
    // Two at a time (2 cores), reported in order.
    let (left, right) = EXPECTED.split_at(EXPECTED.len() / 2);
    let run_all = |part: &[(&str, Expect)]| -> Vec<Result<String, String>> {
        part.iter()
            .map(|(rel, expect)| check(rel, expect))
            .collect()
    };
    let results = std::thread::scope(|scope| {
        let other = scope.spawn(|| run_all(right));
        let mut mine = run_all(left);
        mine.extend(other.join().unwrap_or_default());
        mine
    });
    let mut checked = 0;
    for result in results {
        println!("{}", result?);
        checked += 1;
    }
    checked += validate_stress(&root, &go)?;
    println!(
        "validate: {checked} profiles read by {} with no warnings",
        go.display()
    );
    Ok(())
}

/// The 200 profiles of tests/stress.rs (taken while threads allocate, lock and spawn), each
/// read with `-top`. Runs the stress test first when its output is missing.
fn validate_stress(root: &Path, go: &Path) -> Result<usize, String> {
    let dir = root.join("target/stress");
    if !dir.is_dir() {
        let status = Command::new(env!("CARGO"))
            .current_dir(root)
            // With all features, as README's test command builds it: the build is shared.
            .args(["test", "--quiet", "--all-features", "--test", "stress"])
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("the stress test failed: {status}"));
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".pb.gz"))
        .collect();
    files.sort();
    // Two at a time: each go tool pprof run is a process start and a parse, on 2 cores.
    let halves = files.split_at(files.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            halves
                .1
                .iter()
                .try_for_each(|f| pprof(go, &["-top"], f).map(drop))
        });
        let mine = halves
            .0
            .iter()
            .try_for_each(|f| pprof(go, &["-top"], f).map(drop));
        mine.and(
            other
                .join()
                .unwrap_or_else(|_| Err("a go tool pprof worker panicked".into())),
        )
    })?;
    println!(
        "ok  {} stress profiles in {}",
        files.len(),
        display(&dir, root)
    );
    Ok(files.len())
}

/// Runs `go tool pprof ARGS FILE`; fails on a non-zero exit or any stderr output.
pub(crate) fn pprof(go: &Path, args: &[&str], file: &Path) -> Result<String, String> {
    let out = Command::new(go)
        .args(["tool", "pprof"])
        .args(args)
        .arg(file)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", go.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        return Err(format!(
            "go tool pprof {} {}: {}\nstderr:\n{stderr}",
            args.join(" "),
            file.display(),
            out.status
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn find_go() -> Result<PathBuf, String> {
    let candidates = [
        PathBuf::from("/usr/lib/go-1.19/bin/go"),
        PathBuf::from("go"),
    ];
    for go in candidates {
        if Command::new(&go)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(go);
        }
    }
    Err(
        "no Go toolchain found: install it (Debian: apt-get install -y golang-1.19-go) or put \
         `go` on PATH"
            .into(),
    )
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

fn display(file: &Path, root: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}
