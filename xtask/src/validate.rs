//! `cargo xtask validate`: real profiles, read by the real consumer.
//!
//! Runs the example's and the fixtures' tests with `PROFILE=cpu` into `target/validate/`, then
//! for every profile file runs `go tool pprof -top`, `-traces` and `-list <hot function>`.
//! Each must exit 0 with nothing on stderr (pprof prints its warnings there), and `-top` must
//! list the function the test spends its time in.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (crate manifest, test target, profile file stem, function that must top the profile).
/// `None`: the profile only has to be valid (a test too short for a sample).
const EXPECTED: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "example",
        "scheduler",
        "schedules_1000_pods",
        Some("scheduler_example::score_node"),
    ),
    (
        "example",
        "scheduler",
        "schedules_in_waves",
        Some("scheduler_example::score_node"),
    ),
    (
        "example",
        "scheduler",
        "schedules_on_runtime_workers",
        Some("scheduler_example::score_node"),
    ),
    (
        "tests/fixtures/workloads",
        "attribution",
        "three_to_one_split",
        Some("workloads::heavy_a"),
    ),
    (
        "tests/fixtures/workloads",
        "attribution",
        "too_short_for_a_sample",
        None,
    ),
    (
        "tests/fixtures/workloads",
        "setup",
        "setup_then_reset",
        Some("workloads::heavy_a"),
    ),
    (
        "tests/fixtures/workloads",
        "setup",
        "setup_paused",
        Some("workloads::heavy_a"),
    ),
    (
        "tests/fixtures/workloads",
        "parallel",
        "alpha",
        Some("workloads::alpha_hot"),
    ),
    (
        "tests/fixtures/workloads",
        "parallel",
        "beta",
        Some("workloads::beta_hot"),
    ),
    (
        "tests/fixtures/workloads",
        "threads",
        "four_workers",
        Some("workloads::worker_hot"),
    ),
    (
        "tests/fixtures/workloads",
        "asyncs",
        "multi_thread_workers",
        Some("workloads::async_hot"),
    ),
    (
        "tests/fixtures/workloads",
        "asyncs",
        "current_thread_below",
        Some("workloads::async_hot"),
    ),
    (
        "tests/fixtures/workloads",
        "asyncs",
        "current_thread_above",
        Some("workloads::async_hot"),
    ),
];

pub fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let go = find_go()?;
    let out = root.join("target/validate");
    let _ = std::fs::remove_dir_all(&out);
    let mut targets: Vec<(&str, &str)> = EXPECTED.iter().map(|e| (e.0, e.1)).collect();
    targets.dedup();
    for (krate, test) in targets {
        let status = Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["test", "--quiet", "--manifest-path"])
            .arg(root.join(krate).join("Cargo.toml"))
            .args(["--test", test])
            .env("CARGO_TARGET_DIR", root.join("target/fixtures"))
            .env("PROFILE", format!("cpu,dir={}", out.display()))
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`cargo test --test {test}` in {krate} failed: {status}"
            ));
        }
    }
    let mut checked = 0;
    for (_, test, stem, hot) in EXPECTED {
        let file = out.join(test).join(format!("{stem}.cpu.pb.gz"));
        if !file.is_file() {
            return Err(format!("{} was not written", file.display()));
        }
        let top = pprof(&go, &["-top"], &file)?;
        pprof(&go, &["-traces"], &file)?;
        if let Some(hot) = hot {
            let first = top
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("flat"))
                .nth(1)
                .unwrap_or("");
            // Row: flat flat% sum% cum cum% name. The test's hot function must hold most of it.
            let cum = top
                .lines()
                .find(|l| l.trim_end().ends_with(hot))
                .and_then(|l| l.split_whitespace().nth(4))
                .and_then(|p| p.trim_end_matches('%').parse::<f64>().ok());
            match cum {
                Some(cum) if cum >= 50.0 => {}
                _ => {
                    return Err(format!(
                        "{}: `go tool pprof -top` does not list {hot} with >= 50% cum:\n{top}",
                        file.display()
                    ))
                }
            }
            let listed = pprof(&go, &["-list", &regex_escape(hot)], &file)?;
            if !listed.contains("ROUTINE") {
                return Err(format!(
                    "{}: -list {hot} shows no source:\n{listed}",
                    file.display()
                ));
            }
            println!("ok  {}  top row: {}", display(&file, &root), first.trim());
        } else {
            println!(
                "ok  {}  (valid, no hot function expected)",
                display(&file, &root)
            );
        }
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
            .args(["test", "--quiet", "--test", "stress"])
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
    for file in &files {
        pprof(go, &["-top"], file)?;
    }
    println!(
        "ok  {} stress profiles in {}",
        files.len(),
        display(&dir, root)
    );
    Ok(files.len())
}

/// Runs `go tool pprof ARGS FILE`; fails on a non-zero exit or any stderr output.
fn pprof(go: &Path, args: &[&str], file: &Path) -> Result<String, String> {
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

fn find_go() -> Result<PathBuf, String> {
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
