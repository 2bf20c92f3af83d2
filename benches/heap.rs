//! The allocator wrapper and heap profiles measured side by side with the plain allocator
//! and with dhat-rs 0.3, on the same allocation-heavy workload, in one run: `cargo xtask
//! bench` (or `cargo bench --bench heap`).
//!
//! One binary serves every mode: its global allocator dispatches, on a mode fixed at start,
//! to `System`, to `profiled::Alloc<System>` or to `dhat::Alloc`, so every mode pays the
//! same dispatch and the differences are the wrappers'. Each figure comes from a fresh
//! child process; modes run interleaved, rounds repeated, and the table prints medians and
//! ratios against the plain allocator of the same round.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const PLAIN: u8 = 0;
const PROFILED: u8 = 1;
const DHAT: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(PLAIN);
static WRAPPED: profiled::Alloc<System> = profiled::Alloc::system();

struct Dispatch;

// SAFETY: forwards every call, unchanged, to the allocator the mode names. A block is
// freed by the allocator that made it or by one over the same `System`: the mode is set
// before the first allocation the measured code makes, and the in-process comparison
// (`hooks`) switches only between `PLAIN` and `PROFILED`, both of which end in `System`
// (profiled's wrapper forwards every call to it); dhat's mode never changes.
unsafe impl GlobalAlloc for Dispatch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match MODE.load(Ordering::Relaxed) {
                PROFILED => WRAPPED.alloc(layout),
                DHAT => dhat::Alloc.alloc(layout),
                _ => System.alloc(layout),
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe {
            match MODE.load(Ordering::Relaxed) {
                PROFILED => WRAPPED.dealloc(ptr, layout),
                DHAT => dhat::Alloc.dealloc(ptr, layout),
                _ => System.dealloc(ptr, layout),
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            match MODE.load(Ordering::Relaxed) {
                PROFILED => WRAPPED.realloc(ptr, layout, new),
                DHAT => dhat::Alloc.realloc(ptr, layout, new),
                _ => System.realloc(ptr, layout, new),
            }
        }
    }
}

#[global_allocator]
static ALLOC: Dispatch = Dispatch;

#[path = "support/workload.rs"]
mod workload;
use workload::{build, thread_cpu};

/// Entries of the workload's map.
const ENTRIES: u64 = 1_000_000;

/// Resident set now (VmRSS), KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// What one child measures: the workload's CPU time, ns per allocation-and-free of a small
/// box, and the resident set with the million entries live.
struct Figures {
    workload: Duration,
    pair_ns: f64,
    live_rss_kib: u64,
}

/// `n` `Box<u64>` allocated and freed: the per-allocation cost, without the workload's own
/// work around it.
#[inline(never)]
fn pairs(n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        black_box(Box::new(black_box(i)));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Runs the workload (and the pair loop) as the mode `name` says, in this process.
fn child(name: &str) -> Figures {
    let measure = || {
        let pair_ns = pairs(4_000_000);
        let start = thread_cpu();
        let map = build(ENTRIES);
        let live_rss_kib = rss_kib();
        drop(black_box(map));
        Figures {
            workload: thread_cpu() - start,
            pair_ns,
            live_rss_kib,
        }
    };
    match name {
        "plain" | "wrapper-off" => measure(),
        "counting" => {
            let mut figures = None;
            let counts = profiled::allocations(|| figures = Some(measure()));
            assert!(counts.allocs > 2 * ENTRIES, "{counts:?}");
            figures.unwrap()
        }
        "heap-512k" | "heap-rate-1" => {
            let rate = if name == "heap-512k" { 512 * 1024 } else { 1 };
            let config = profiled::Config::default()
                .with_kinds([profiled::Kind::Heap])
                .unwrap()
                .with_heap_rate(rate)
                .unwrap();
            let profile = profiled::Profile::start(name, &config).unwrap();
            let figures = measure();
            let report = profile.finish().unwrap().remove(0);
            assert!(report.total("alloc_space").unwrap() > 0);
            figures
        }
        "dhat" => {
            let dir =
                std::env::temp_dir().join(format!("profiled-heap-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let profiler = dhat::Profiler::builder()
                .file_name(dir.join("dhat-heap.json"))
                .build();
            let figures = measure();
            drop(profiler);
            let _ = std::fs::remove_dir_all(&dir);
            figures
        }
        other => panic!("unknown mode {other}"),
    }
}

const MODES: &[(&str, u8)] = &[
    ("plain", PLAIN),
    ("wrapper-off", PROFILED),
    ("counting", PROFILED),
    ("heap-512k", PROFILED),
    ("heap-rate-1", PROFILED),
    ("dhat", DHAT),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A tenth of the workload, built and dropped: its thread CPU time.
fn small_workload() -> f64 {
    let start = thread_cpu();
    drop(black_box(build(ENTRIES / 10)));
    (thread_cpu() - start).as_secs_f64()
}

/// In one process, so that the drift between processes drops out: the pair loop and a
/// tenth of the workload with the plain allocator, with the wrapper and nothing asked,
/// inside `allocations(..)` and inside a heap profile at 512 KiB, `rounds` times, the order
/// rotated each round. This VM's speed flips between two levels for seconds at a time
/// (the same loop 13 or 24 ns per pair), so rounds are short (~0.2 s) and the figures are
/// medians of each round's own comparison. Returns the bare pair's ns and, per mode
/// (wrapper-off, counting, heap at 512 KiB), the added ns per pair and the workload ratio
/// to the plain allocator.
fn hooks(rounds: usize) -> (f64, [(f64, f64); 3]) {
    let config = profiled::Config::default()
        .with_kinds([profiled::Kind::Heap])
        .unwrap();
    let run = |mode: usize| -> (f64, f64) {
        let measure = || (pairs(500_000), small_workload());
        match mode {
            0 => {
                MODE.store(PLAIN, Ordering::Relaxed);
                let r = measure();
                MODE.store(PROFILED, Ordering::Relaxed);
                r
            }
            1 => measure(),
            2 => {
                let mut r = (0.0, 0.0);
                profiled::allocations(|| r = measure());
                r
            }
            _ => {
                let profile = profiled::Profile::start("pairs", &config).unwrap();
                let r = measure();
                drop(profile.finish().unwrap());
                r
            }
        }
    };
    MODE.store(PROFILED, Ordering::Relaxed);
    let mut bare = Vec::new();
    let mut added: [Vec<f64>; 3] = Default::default();
    let mut ratio: [Vec<f64>; 3] = Default::default();
    for round in 0..rounds {
        let mut got = [(0.0, 0.0); 4];
        for k in 0..4 {
            let mode = (k + round) % 4;
            got[mode] = run(mode);
        }
        let (plain_pair, plain_work) = got[0];
        bare.push(plain_pair);
        for (i, (pair, work)) in got[1..].iter().enumerate() {
            added[i].push(pair - plain_pair);
            ratio[i].push(work / plain_work);
        }
    }
    let [a0, a1, a2] = added.map(median);
    let [r0, r1, r2] = ratio.map(median);
    (median(bare), [(a0, r0), (a1, r1), (a2, r2)])
}

fn main() {
    if std::env::var("HEAP_BENCH_MODE").as_deref() == Ok("hooks") {
        let (bare, modes) = hooks(IN_PROCESS_ROUNDS);
        print!("{bare}");
        for (added, ratio) in modes {
            print!(" {added} {ratio}");
        }
        println!();
        return;
    }
    if let Ok(name) = std::env::var("HEAP_BENCH_MODE") {
        let mode = MODES.iter().find(|(n, _)| *n == name).expect("a mode").1;
        MODE.store(mode, Ordering::Relaxed);
        let f = child(&name);
        println!("{} {} {}", f.workload.as_nanos(), f.pair_ns, f.live_rss_kib);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("HEAP_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let exe = std::env::current_exe().unwrap();
    // Per mode: workload ratio to plain, pair ns minus plain's, RSS minus plain's (KiB).
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut added_ns: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut added_kib: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    let mut workload_ms: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for round in 0..rounds {
        // Rotated each round, so that no mode always runs first after a pause.
        let mut raw = vec![(0.0, 0.0, 0.0); MODES.len()];
        for k in 0..MODES.len() {
            let i = (k + round) % MODES.len();
            let out = Command::new(&exe)
                .env("HEAP_BENCH_MODE", MODES[i].0)
                .env_remove("PROFILE")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                MODES[i].0,
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            raw[i] = (v[0], v[1], v[2]);
        }
        let plain = raw[0];
        for (i, &(ns, pair, kib)) in raw.iter().enumerate() {
            workload_ms[i].push(ns / 1e6);
            ratio[i].push(ns / plain.0);
            added_ns[i].push(pair - plain.1);
            added_kib[i].push(kib - plain.2);
        }
    }
    println!(
        "allocation-heavy workload: a BTreeMap<String, Vec<u8>> of {ENTRIES} entries built and \
         dropped; {rounds} rounds, medians\n"
    );
    println!(
        "| mode | workload CPU | vs plain | added per alloc+free (Box<u64>) | RSS with the entries live, vs plain |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (i, (name, _)) in MODES.iter().enumerate() {
        println!(
            "| {name} | {:.0} ms | {:.3}x | {:+.1} ns | {:+.1} MiB |",
            median(workload_ms[i].clone()),
            median(ratio[i].clone()),
            median(added_ns[i].clone()),
            median(added_kib[i].clone()) / 1024.0
        );
    }
    let out = Command::new(&exe)
        .env("HEAP_BENCH_MODE", "hooks")
        .env_remove("PROFILE")
        .output()
        .unwrap();
    let v: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    println!(
        "\nin one process, {IN_PROCESS_ROUNDS} rounds of a tenth of the workload and 500 000 \
         pairs per mode, switching between the plain allocator and the wrapper (medians of \
         each round's figures against the plain allocator's; a Box<u64> allocated and freed \
         takes {:.1} ns with it):\n",
        v[0]
    );
    println!("| mode | workload CPU vs plain | added per alloc+free (Box<u64>) |");
    println!("| --- | ---: | ---: |");
    for (k, name) in ["wrapper-off", "counting", "heap-512k"].iter().enumerate() {
        println!(
            "| {name} | {:.3}x | {:+.1} ns |",
            v[2 + 2 * k],
            v[1 + 2 * k]
        );
    }
}

/// Rounds of the in-process comparison.
const IN_PROCESS_ROUNDS: usize = 41;
