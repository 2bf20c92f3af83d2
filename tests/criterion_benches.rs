//! `cargo bench -- --profile-time N` with profiled's criterion integration: one profile per
//! benchmark, setup left out; nothing profiled in normal benchmarking.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::*;

#[test]
fn profile_time_writes_one_profile_per_benchmark_without_setup() {
    let criterion = fixture_target().join("criterion");
    let _ = std::fs::remove_dir_all(&criterion);
    let out = cargo_bench(
        "setup",
        &["--profile-time", "1"],
        &[("PROFILE", "cpu,heap,block,heap_rate=1,svg")],
    );
    assert!(out.status.success());
    // The block profile: the routine's waits for the lock, none of the setup's.
    let block = read(
        &criterion
            .join("waits_for_a_holder/profile")
            .join("block.pb.gz"),
    );
    let waited = |leaf: &str| -> i64 {
        block
            .profile
            .sample
            .iter()
            .filter(|s| block.stack(s).iter().any(|f| f.ends_with(leaf)))
            .map(|s| s.value[1])
            .sum()
    };
    assert!(waited("setup::routine_waits") > 0, "the routine's waits");
    assert_eq!(
        waited("setup::setup_waits"),
        0,
        "setup is not in the block profile"
    );
    assert!(stderr(&out).contains("profiled: waits_for_a_holder  block "));
    // The heap profile: the routine's 4 KiB blocks, none of the setup's (its fixture
    // vector, allocated before every iteration, outside the timed routine).
    let heap = read(
        &criterion
            .join("iter_batched_setup/profile")
            .join("heap.pb.gz"),
    );
    let at = |leaf: &str| -> i64 {
        heap.profile
            .sample
            .iter()
            .filter(|s| heap.stack(s).iter().any(|f| f.ends_with(leaf)))
            .map(|s| s.value[1])
            .sum()
    };
    let routine = at("setup::routine_allocates");
    assert!(routine > 0 && routine % 4096 == 0, "{routine}");
    assert_eq!(
        at("workloads::expensive_setup"),
        0,
        "setup is not in the heap profile"
    );
    assert!(stderr(&out).contains("profiled: iter_batched_setup  heap "));
    for (bench, hot) in [
        ("setup_before_iter", "workloads::heavy_a"),
        ("iter_batched_setup", "workloads::heavy_b"),
        ("unprofiled_inside", "workloads::heavy_a"),
    ] {
        let dir = criterion.join(bench).join("profile");
        let p = read(&dir.join("cpu.pb.gz"));
        // Setup costs as much CPU as the routine: were it in, it would hold half.
        p.assert_share_at_most("workloads::setup_hot", 0.05);
        p.assert_share_at_least(hot, 0.9);
        assert!(
            stderr(&out).contains(&format!("profiled: {bench}  cpu ")),
            "summary line for {bench}"
        );
        let titles = svg_titles(&dir.join("flamegraph.svg"));
        assert!(
            titles.iter().any(|t| t.starts_with(hot)),
            "{bench}: {hot} not in the flamegraph: {titles:?}"
        );
    }
}

#[test]
fn normal_benchmarking_profiles_nothing() {
    let criterion = fixture_target().join("criterion-normal");
    let _ = std::fs::remove_dir_all(&criterion);
    let out = cargo_bench(
        "setup",
        &[
            "--warm-up-time",
            "0.05",
            "--measurement-time",
            "0.1",
            "--sample-size",
            "10",
            "--noplot",
        ],
        &[("CRITERION_HOME", criterion.to_str().unwrap())],
    );
    assert!(out.status.success());
    assert!(!stderr(&out).contains("profiled:"), "{}", stderr(&out));
    let profiles: Vec<_> = walk(&criterion)
        .into_iter()
        .filter(|p| p.ends_with("cpu.pb.gz"))
        .collect();
    assert!(profiles.is_empty(), "{profiles:?}");
    assert!(
        criterion.join("setup_before_iter").is_dir(),
        "criterion ran and saved its results"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
