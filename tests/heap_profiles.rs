//! Runs the fixture's heap-profiled tests (tests/fixtures/workloads/tests/heap.rs) with
//! `PROFILE=heap,allocs` and checks their profiles against the allocations they are known to
//! make: exactly at `heap_rate=1`, within sampling error at Go's default rate.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use support::*;

const MIB: i64 = 1 << 20;

/// Sums value `index` over the samples whose leaf (after the allocator frames are trimmed)
/// is a function whose name ends with `leaf`.
fn at_leaf(p: &Read, leaf: &str, index: usize) -> i64 {
    p.profile
        .sample
        .iter()
        .filter(|s| p.stack(s).first().is_some_and(|f| f.ends_with(leaf)))
        .map(|s| s.value[index])
        .sum()
}

/// Sums value `index` over samples with a frame whose name ends with `name` anywhere.
fn through(p: &Read, name: &str, index: usize) -> i64 {
    p.profile
        .sample
        .iter()
        .filter(|s| p.stack(s).iter().any(|f| f.ends_with(name)))
        .map(|s| s.value[index])
        .sum()
}

const ALLOC_OBJECTS: usize = 0;
const ALLOC_SPACE: usize = 1;
const INUSE_OBJECTS: usize = 2;
const INUSE_SPACE: usize = 3;

#[test]
fn every_allocation_is_recorded_exactly_at_rate_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "heap",
        &[],
        &[
            (
                "PROFILE",
                &format!("cpu,heap,allocs,heap_rate=1,dir={}", dir.path().display()),
            ),
            ("HEAP_UNITS", "1"),
            ("LEAK_BLOCKS", "64"),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let path = |test: &str, kind: &str| {
        dir.path()
            .join(format!("workloads/heap/{test}.{kind}.pb.gz"))
    };

    // 3:1 by bytes, 4 KiB blocks: exact, and the leaf is the function that allocated (the
    // wrapper, `__rust_alloc`, `vec!`'s and RawVec's frames trimmed).
    let p = read(&path("three_to_one_bytes", "heap"));
    assert_eq!(
        p.value_types(),
        [
            ("alloc_objects", "count"),
            ("alloc_space", "bytes"),
            ("inuse_objects", "count"),
            ("inuse_space", "bytes")
        ]
    );
    let (blocks, block) = (16384i64, 4096i64);
    assert_eq!(
        at_leaf(&p, "heap::allocates_three", ALLOC_SPACE),
        3 * blocks * block
    );
    assert_eq!(
        at_leaf(&p, "heap::allocates_three", ALLOC_OBJECTS),
        3 * blocks
    );
    assert_eq!(
        at_leaf(&p, "heap::allocates_one", ALLOC_SPACE),
        blocks * block
    );
    assert_eq!(at_leaf(&p, "heap::allocates_one", ALLOC_OBJECTS), blocks);
    assert_eq!(
        at_leaf(&p, "heap::allocates_three", INUSE_SPACE),
        0,
        "all freed"
    );
    for s in &p.profile.sample {
        let stack = p.stack(s);
        // Whole stacks, down to the test (none cut short to a leaf).
        assert!(
            stack
                .iter()
                .any(|f| f.ends_with("heap::three_to_one_bytes")),
            "{stack:?}"
        );
        let leaf = stack[0];
        assert!(
            !leaf.starts_with("alloc::") && !leaf.contains("__rust") && !leaf.contains("profiled"),
            "allocator frame left at the leaf: {stack:?}"
        );
    }
    // profiled's own work (the CPU profile's drain thread, symbolizing, encoding) is in no
    // heap profile.
    for test in ["three_to_one_bytes", "leak_beside_freed", "parallel_left"] {
        let p = read(&path(test, "heap"));
        for s in &p.profile.sample {
            let stack = p.stack(s);
            assert!(
                !stack
                    .iter()
                    .any(|f| f.contains("drain_loop") || f.contains("profiled::symbolize")),
                "{test}: profiled's own allocation: {stack:?}"
            );
        }
    }
    // Each sample carries its block size as Go's `bytes` label.
    let bytes_key = p
        .profile
        .string_table
        .iter()
        .position(|s| s == "bytes")
        .unwrap() as i64;
    let sized: Vec<i64> = p
        .profile
        .sample
        .iter()
        .filter(|s| p.stack(s)[0].ends_with("heap::allocates_one"))
        .map(|s| s.label.iter().find(|l| l.key == bytes_key).unwrap().num)
        .collect();
    assert_eq!(sized, [block]);
    assert_eq!(p.profile.period, 1);
    let heap_default = &p.profile.string_table[p.profile.default_sample_type as usize];
    assert_eq!(heap_default, "inuse_space");
    let a = read(&path("three_to_one_bytes", "allocs"));
    assert_eq!(
        &a.profile.string_table[a.profile.default_sample_type as usize],
        "alloc_space"
    );

    // The leak shows in use, exactly; memory freed does not.
    let p = read(&path("leak_beside_freed", "heap"));
    let leaked = 64 * 256 * 1024;
    assert_eq!(at_leaf(&p, "heap::leaks", INUSE_SPACE), leaked);
    assert_eq!(at_leaf(&p, "heap::leaks", INUSE_OBJECTS), 64);
    assert_eq!(through(&p, "heap::allocates_and_frees", INUSE_SPACE), 0);
    assert!(through(&p, "heap::allocates_and_frees", ALLOC_SPACE) >= leaked);

    // Parallel tests with workers: each profile has its own four threads' allocations
    // (4 x 20000 blocks of 1000 bytes), none of the other's.
    for (mine, theirs) in [("left", "right"), ("right", "left")] {
        let p = read(&path(&format!("parallel_{mine}"), "heap"));
        let worker = format!("heap::{mine}_worker");
        assert_eq!(
            at_leaf(&p, &worker, ALLOC_SPACE),
            4 * 20_000 * 1000,
            "{mine}"
        );
        assert_eq!(
            through(&p, &format!("heap::{theirs}_worker"), ALLOC_OBJECTS),
            0
        );
    }

    // reset() drops the setup's allocations, pause() keeps the second batch out.
    let p = read(&path("setup_is_reset_away", "heap"));
    assert_eq!(through(&p, "heap::setup_allocations", ALLOC_OBJECTS), 0);
    assert_eq!(at_leaf(&p, "heap::allocates_one", ALLOC_OBJECTS), blocks);
}

/// At Go's default rate (512 KiB) the shares and the leak are estimates; the tolerances are
/// four and a half standard errors of the sampling, computed from the expected number of
/// samples.
#[test]
fn sampled_profiles_estimate_within_their_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "heap",
        &["three_to_one_bytes", "leak_beside_freed"],
        &[("PROFILE", &format!("heap,dir={}", dir.path().display()))],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rate = 512.0 * 1024.0;

    // 1 GiB in 4 KiB blocks, 3:1: about 2048 samples, each function's a Poisson count.
    let p = read(
        &dir.path()
            .join("workloads/heap/three_to_one_bytes.heap.pb.gz"),
    );
    let three = at_leaf(&p, "heap::allocates_three", ALLOC_SPACE) as f64;
    let one = at_leaf(&p, "heap::allocates_one", ALLOC_SPACE) as f64;
    let share = three / (three + one);
    let n = 1024.0 * MIB as f64 / rate;
    let tolerance = 4.5 * (0.75 * 0.25 / n).sqrt();
    assert!(
        (share - 0.75).abs() < tolerance && tolerance < 0.05,
        "allocates_three's share of alloc_space {share:.3}, expected 0.75 ± {tolerance:.3}"
    );
    let total = (three + one) / (1024.0 * MIB as f64);
    assert!(
        (total - 1.0).abs() < 4.5 / n.sqrt(),
        "unbiased total {total:.3} of the true 1 GiB"
    );

    // 1024 leaked blocks of 256 KiB, each sampled with probability 1 - e^-0.5.
    let p = read(
        &dir.path()
            .join("workloads/heap/leak_beside_freed.heap.pb.gz"),
    );
    let leaked = at_leaf(&p, "heap::leaks", INUSE_SPACE) as f64;
    let truth = 1024.0 * 256.0 * 1024.0;
    let q = 1.0 - (-(256.0 * 1024.0) / rate).exp();
    let relative = ((1.0 - q) / (1024.0 * q)).sqrt();
    assert!(
        (leaked / truth - 1.0).abs() < 4.5 * relative,
        "leak estimated at {:.1} MiB of 256 MiB (± {:.0} %)",
        leaked / MIB as f64,
        450.0 * relative
    );
    assert_eq!(through(&p, "heap::allocates_and_frees", INUSE_SPACE), 0);
}

/// `PROFILE=heap` in a test binary without the wrapper fails its profiled tests with the
/// two lines to add.
#[test]
fn without_the_wrapper_heap_profiles_say_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = cargo_test(
        "parallel",
        &["alpha"],
        &[("PROFILE", &format!("heap,dir={}", dir.path().display()))],
    );
    assert!(!out.status.success());
    let err = stdout(&out) + &stderr(&out);
    assert!(
        err.contains("#[global_allocator]")
            && err.contains(
                "static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();"
            ),
        "{err}"
    );
}
