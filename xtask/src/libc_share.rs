//! `cargo xtask libc-share`: perf as referee for "profiling does not change what it
//! measures". An allocation-heavy criterion benchmark (tests/fixtures/workloads/benches/
//! alloc.rs) runs single-threaded three ways, interleaved: without a profiler, without one
//! but with one idle extra thread (what a profiler that starts a thread does to such a
//! process: glibc's malloc switches to its multi-threaded paths), and under profiled's
//! criterion integration. `perf record` measures each run's share of CPU in libc; profiled's
//! own profile gives its share too. Both must be within 3 points of the unprofiled run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::validate::{find_go, pprof};

const ROUNDS: usize = 5;
const MODES: [&str; 3] = ["plain", "plain-with-thread", "profiled"];
const LIMIT_POINTS: f64 = 3.0;

pub fn run() -> Result<(), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = root.join("target/fixtures");
    let exe = build(root, &target)?;
    let go = find_go()?;
    let scratch = target.join("libc-share");
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;

    // perf's libc share per mode, and profiled's own, over interleaved rounds.
    let mut perf_share: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut own_share = Vec::new();
    for round in 0..ROUNDS {
        for (m, mode) in MODES.iter().enumerate() {
            let data = scratch.join(format!("{mode}-{round}.perf.data"));
            let status = Command::new("perf")
                .args(["record", "-q", "-F", "1999", "-o"])
                .arg(&data)
                .arg("--")
                .arg(&exe)
                .args(["--bench", "--profile-time", "4", "alloc_heavy"])
                .env("ALLOC_BENCH", mode)
                .env("CARGO_TARGET_DIR", &scratch)
                .env_remove("PROFILE")
                .env_remove("PROFILED")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map_err(|e| {
                    format!("cannot run perf (Debian: apt-get install linux-perf): {e}")
                })?;
            if !status.success() {
                return Err(format!("perf record of the {mode} run failed: {status}"));
            }
            perf_share[m].push(perf_libc_share(&data)?);
            if *mode == "profiled" {
                let profile = scratch.join("criterion/alloc_heavy/profile/cpu.pb.gz");
                own_share.push(profile_libc_share(&go, &profile)?);
            }
        }
    }

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let plain = mean(&perf_share[0]);
    println!(
        "libc share of CPU in an allocation-heavy criterion bench, {ROUNDS} interleaved rounds:"
    );
    println!("| run | measured by | libc share | vs. unprofiled |");
    println!("| --- | --- | --- | --- |");
    let row = |run: &str, by: &str, v: &[f64]| {
        let rounds: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
        println!(
            "| {run} | {by} | {:.1} % ({}) | {:+.1} points |",
            mean(v),
            rounds.join(", "),
            mean(v) - plain
        );
    };
    row("no profiler", "perf", &perf_share[0]);
    row("no profiler, one idle thread", "perf", &perf_share[1]);
    row("profiled (criterion integration)", "perf", &perf_share[2]);
    row(
        "profiled (criterion integration)",
        "profiled's profile",
        &own_share,
    );
    for (what, v) in [
        ("perf, profiled run", &perf_share[2]),
        ("profiled's profile", &own_share),
    ] {
        if (mean(v) - plain).abs() > LIMIT_POINTS {
            return Err(format!(
                "{what}: libc share {:.1} % vs {plain:.1} % unprofiled: more than {LIMIT_POINTS} points apart",
                mean(v)
            ));
        }
    }
    Ok(())
}

/// Builds the benchmark and returns its executable.
fn build(root: &Path, target: &Path) -> Result<PathBuf, String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "bench",
            "--no-run",
            "--bench",
            "alloc",
            "--message-format=json",
            "--manifest-path",
        ])
        .arg(root.join("tests/fixtures/workloads/Cargo.toml"))
        .env("CARGO_TARGET_DIR", target)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the alloc bench failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let json = String::from_utf8_lossy(&out.stdout);
    json.split("\"executable\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|path| path.contains("/alloc-"))
        .map(PathBuf::from)
        .ok_or_else(|| "cargo did not report the alloc bench's executable".into())
}

/// Percent of the recorded samples in libc, from `perf report --sort dso`.
fn perf_libc_share(data: &Path) -> Result<f64, String> {
    let out = Command::new("perf")
        .args(["report", "--sort", "dso", "--stdio", "-q", "-i"])
        .arg(data)
        .output()
        .map_err(|e| format!("cannot run perf report: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| l.contains("libc.so"))
        .filter_map(|l| l.split('%').next()?.trim().parse::<f64>().ok())
        .sum())
}

/// Percent of the profile's CPU whose leaf frame is in libc, read with `go tool pprof -raw`.
fn profile_libc_share(go: &Path, profile: &Path) -> Result<f64, String> {
    let raw = pprof(go, &["-raw"], profile)?;
    let section = |name: &str| {
        raw.split(&format!("\n{name}\n"))
            .nth(1)
            .unwrap_or("")
            .split("\nLocations\n")
            .next()
            .unwrap_or("")
            .split("\nMappings\n")
            .next()
            .unwrap_or("")
            .to_string()
    };
    let libc_mappings: Vec<String> = section("Mappings")
        .lines()
        .filter(|l| l.contains("libc.so"))
        .filter_map(|l| Some(l.trim().split(':').next()?.to_string()))
        .collect();
    let libc_locations: Vec<String> = section("Locations")
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("M="))
                .is_some_and(|m| libc_mappings.iter().any(|x| x == m))
        })
        .filter_map(|l| Some(l.trim().split(':').next()?.to_string()))
        .collect();
    let (mut libc, mut all) = (0f64, 0f64);
    for line in section("Samples:").lines().skip(1) {
        let Some((values, stack)) = line.split_once(':') else {
            continue;
        };
        let Some(cpu) = values
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        all += cpu;
        if stack
            .split_whitespace()
            .next()
            .is_some_and(|leaf| libc_locations.iter().any(|x| x == leaf))
        {
            libc += cpu;
        }
    }
    if all == 0.0 {
        return Err(format!("{}: no samples", profile.display()));
    }
    Ok(100.0 * libc / all)
}
