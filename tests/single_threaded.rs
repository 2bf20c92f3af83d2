//! A profile of a single-threaded process (a criterion bench run, a harness on the main
//! thread) starts no thread: the first `pthread_create` would switch glibc's malloc to its
//! locking paths for good and change what is measured. Samples are aggregated in the signal
//! handler meanwhile, so a long stretch without pauses loses nothing.
//! `harness = false`: libtest would run this on a thread of its own.

mod support;
use std::hint::black_box;
use std::time::Duration;
use support::thread_cpu;

/// The handler never touches the heap: this allocator aborts if it does.
#[cfg(feature = "__test-hooks")]
#[global_allocator]
static ALLOC: support::NoAllocInHandler = support::NoAllocInHandler;

unsafe extern "C" {
    /// glibc (2.32+): non-zero while the process has never created a thread.
    static __libc_single_threaded: std::ffi::c_char;
}

fn single_threaded() -> bool {
    // SAFETY: a plain byte that glibc exports for this very question.
    let glibc = unsafe { __libc_single_threaded } != 0;
    let tasks = std::fs::read_dir("/proc/self/task").unwrap().count();
    glibc && tasks == 1
}

#[inline(never)]
fn heavy_a(n: u64) -> u64 {
    let mut x = black_box(1u64);
    for i in 0..n {
        x = (x ^ (x >> 31))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i);
    }
    black_box(x)
}

#[inline(never)]
fn heavy_b(n: u64) -> u64 {
    let mut x = black_box(2u64);
    for i in 0..n {
        x = (x ^ (x >> 31))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(i);
    }
    black_box(x)
}

/// `heavy_a` and `heavy_b` about 3:1 for `cpu`, in chunks of random length (a periodic
/// workload can phase-lock with the sampler); returns (CPU in `heavy_a`, CPU in all).
fn three_to_one(cpu: Duration, rng: &mut u64) -> (Duration, Duration) {
    let start = thread_cpu();
    let mut a = Duration::ZERO;
    loop {
        let now = thread_cpu();
        if now - start >= cpu {
            return (a, now - start);
        }
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let n = 2_000 + *rng % 16_000;
        heavy_a(3 * n);
        a += thread_cpu() - now;
        heavy_b(n);
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("single_threaded: test");
        return;
    }
    assert!(single_threaded(), "the test binary starts single-threaded");
    let config = profiled::Config::parse("cpu,freq=1000").unwrap().unwrap();
    let profile = profiled::Profile::start("single", &config).unwrap();

    // Criterion's shape: short timed batches with pauses between, then one long batch.
    let (mut in_a, mut used) = (Duration::ZERO, Duration::ZERO);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..20 {
        let (a, all) = three_to_one(Duration::from_millis(10), &mut rng);
        (in_a, used) = (in_a + a, used + all);
        let _paused = profile.pause();
        black_box(heavy_b(20_000));
    }
    // 2.5 s at 1 kHz: more samples than the ring holds, with no drain point.
    let (a, all) = three_to_one(Duration::from_millis(2500), &mut rng);
    (in_a, used) = (in_a + a, used + all);
    assert!(single_threaded(), "profiling started a thread");
    let report = profile.finish().unwrap().remove(0);
    assert!(single_threaded(), "finishing started a thread");

    assert_eq!(
        report.lost_samples(),
        0,
        "the handler's table keeps them all"
    );
    let ratio = report.cpu_time().unwrap().as_secs_f64() / used.as_secs_f64();
    assert!(
        (0.95..=1.05).contains(&ratio),
        "profile/used CPU {ratio:.3}"
    );
    let bytes = report.pprof_gz();
    let p = profiled::pprof::decode(bytes).unwrap();
    let name = |i: i64| p.string_table[i as usize].as_str();
    let share = |f: &str| {
        let with: i64 = p
            .sample
            .iter()
            .filter(|s| {
                s.location_id.iter().any(|id| {
                    let loc = p.location.iter().find(|l| l.id == *id).unwrap();
                    loc.line.iter().any(|l| {
                        let func = p.function.iter().find(|x| x.id == l.function_id).unwrap();
                        name(func.name).ends_with(f)
                    })
                })
            })
            .map(|s| s.value[1])
            .sum();
        with as f64 / p.sample.iter().map(|s| s.value[1]).sum::<i64>() as f64
    };
    // Taken on this thread, and labelled so.
    let tid = std::process::id() as i64; // the main thread's id is the process id
    for sample in &p.sample {
        let num = |key: &str| {
            sample
                .label
                .iter()
                .find(|l| name(l.key) == key)
                .map(|l| (l.num, name(l.str)))
        };
        assert_eq!(num("tid").map(|t| t.0), Some(tid));
        assert!(num("thread").is_some_and(|t| !t.1.is_empty()));
    }
    let n = report.samples() as i64;
    let a = share("single_threaded::heavy_a");
    let truth = in_a.as_secs_f64() / used.as_secs_f64();
    let tolerance = support::sampling_error(truth, n);
    assert!(
        (a - truth).abs() <= tolerance,
        "heavy_a share {a:.3}, true {truth:.3} ±{tolerance:.3} over {n} samples"
    );
    println!(
        "test single_threaded ... ok (share {a:.3}, true {truth:.3}, {n} samples, CPU ratio {ratio:.3})"
    );
    println!("test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
}
