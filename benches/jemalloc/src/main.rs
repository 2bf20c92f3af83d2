//! profiled's heap profile against jemalloc's own sampling profiler (what `jemalloc_pprof`
//! dumps as pprof), both at 512 KiB, on the workload of `benches/heap.rs`, in one process.
//!
//! The global allocator is jemalloc either way: directly, or under `profiled::Alloc`, and it
//! switches between the two at run time (both end in jemalloc, so a block may be freed
//! through either). jemalloc starts with profiling enabled but inactive
//! (`prof:true,prof_active:false`), and is activated only for its own rounds. Rounds are
//! short and rotated, and each is compared with its own plain-jemalloc run (this VM's
//! speed flips between two levels for seconds at a time).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tikv_jemallocator::Jemalloc;

#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_active:false,lg_prof_sample:19\0";

static WRAPPED: profiled::Alloc<Jemalloc> = profiled::Alloc::new(Jemalloc);
/// Whether allocations go through profiled's wrapper.
static THROUGH_PROFILED: AtomicBool = AtomicBool::new(false);

struct Dispatch;

// SAFETY: forwards every call, unchanged, to jemalloc, directly or through profiled's
// wrapper, which forwards to it unchanged too; a block allocated one way and freed the
// other is freed by the jemalloc that made it.
unsafe impl GlobalAlloc for Dispatch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        unsafe {
            if THROUGH_PROFILED.load(Ordering::Relaxed) {
                WRAPPED.alloc(layout)
            } else {
                Jemalloc.alloc(layout)
            }
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe {
            if THROUGH_PROFILED.load(Ordering::Relaxed) {
                WRAPPED.dealloc(ptr, layout)
            } else {
                Jemalloc.dealloc(ptr, layout)
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            if THROUGH_PROFILED.load(Ordering::Relaxed) {
                WRAPPED.realloc(ptr, layout, new)
            } else {
                Jemalloc.realloc(ptr, layout, new)
            }
        }
    }
}

#[global_allocator]
static ALLOC: Dispatch = Dispatch;

#[path = "../../support/workload.rs"]
mod workload;
use workload::{build, thread_cpu};

/// A tenth of the workload built and dropped: its thread CPU seconds.
fn workload() -> f64 {
    let start = thread_cpu();
    drop(black_box(build(100_000)));
    (thread_cpu() - start).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

const MODES: [&str; 4] = [
    "jemalloc",
    "jemalloc, its profiler active (jemalloc_pprof)",
    "profiled::Alloc<Jemalloc>, nothing asked",
    "profiled::Alloc<Jemalloc>, heap profile",
];

fn main() {
    let rounds: usize = std::env::var("JEMALLOC_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(41);
    let prof = jemalloc_pprof::PROF_CTL
        .as_ref()
        .expect("jemalloc built with profiling");
    let config = profiled::Config::default().with_kinds([profiled::Kind::Heap]).unwrap();
    let run = |mode: usize| -> f64 {
        match mode {
            0 => workload(),
            1 => {
                prof.blocking_lock().activate().unwrap();
                let t = workload();
                prof.blocking_lock().deactivate().unwrap();
                t
            }
            2 => {
                THROUGH_PROFILED.store(true, Ordering::Relaxed);
                let t = workload();
                THROUGH_PROFILED.store(false, Ordering::Relaxed);
                t
            }
            _ => {
                THROUGH_PROFILED.store(true, Ordering::Relaxed);
                let profile = profiled::Profile::start("workload", &config).unwrap();
                let t = workload();
                drop(profile.finish().unwrap());
                THROUGH_PROFILED.store(false, Ordering::Relaxed);
                t
            }
        }
    };
    run(0);
    let mut ratios: [Vec<f64>; 4] = Default::default();
    let mut seconds: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let mut got = [0.0; 4];
        for k in 0..4 {
            let mode = (k + round) % 4;
            got[mode] = run(mode);
        }
        for i in 0..4 {
            seconds[i].push(got[i]);
            ratios[i].push(got[i] / got[0]);
        }
    }

    // What each keeps, and what writing it costs, with 100 000 entries live.
    prof.blocking_lock().activate().unwrap();
    let live = build(100_000);
    let t = Instant::now();
    let theirs = prof.blocking_lock().dump_pprof().unwrap();
    let their_dump = t.elapsed();
    prof.blocking_lock().deactivate().unwrap();
    drop(live);
    THROUGH_PROFILED.store(true, Ordering::Relaxed);
    let profile = profiled::Profile::start("live", &config).unwrap();
    let live = build(100_000);
    let t = Instant::now();
    let report = profile.finish().unwrap().remove(0);
    let our_dump = t.elapsed();
    let ours = report.pprof_gz();
    drop(live);
    THROUGH_PROFILED.store(false, Ordering::Relaxed);

    println!(
        "a tenth of benches/heap.rs's workload (a BTreeMap<String, Vec<u8>> of 100 000 entries \
         built and dropped), {rounds} rotated rounds, both profilers sampling every 512 KiB \
         on average; medians of each round's ratio to plain jemalloc\n"
    );
    println!("| mode | workload CPU | vs jemalloc |");
    println!("| --- | ---: | ---: |");
    for (i, name) in MODES.iter().enumerate() {
        println!(
            "| {name} | {:.1} ms | {:.3}x |",
            median(seconds[i].clone()) * 1e3,
            median(ratios[i].clone())
        );
    }
    println!(
        "\nwith the entries live: jemalloc_pprof's dump {:.1} ms, {} bytes (in-use space and \
         objects only); profiled's finish and encoding {:.1} ms, {} bytes (Go's four sample \
         types, symbolized)",
        their_dump.as_secs_f64() * 1e3,
        theirs.len(),
        our_dump.as_secs_f64() * 1e3,
        ours.len()
    );
}
