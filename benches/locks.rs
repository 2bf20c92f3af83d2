//! `profiled::sync::Mutex` measured side by side with the `std::sync::Mutex` it wraps, in
//! one process, interleaved: `cargo bench --bench locks` (or `cargo xtask bench`).
//!
//! Two workloads: one thread locking and unlocking a lock nobody else wants, and four
//! threads incrementing one shared counter under the lock. Each runs with std's lock, with
//! profiled's while no block or mutex profile runs (what a program pays for the `use`
//! line), and with profiled's while one does. Rounds alternate the locks so that the
//! machine's drift falls on all of them; the table prints medians and the median of each
//! round's ratio to std's.
//! `LOCK_BENCH_ROUNDS` sets the number of rounds (default 15).

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::Instant;

trait Lock: Send + Sync + 'static {
    fn new() -> Self;
    fn bump(&self);
}

impl Lock for std::sync::Mutex<u64> {
    fn new() -> Self {
        std::sync::Mutex::new(0)
    }
    #[inline]
    fn bump(&self) {
        *self.lock().unwrap() += 1;
    }
}

impl Lock for profiled::sync::Mutex<u64> {
    fn new() -> Self {
        profiled::sync::Mutex::new(0)
    }
    #[inline]
    fn bump(&self) {
        *self.lock().unwrap() += 1;
    }
}

const UNCONTENDED: u32 = 5_000_000;
const THREADS: usize = 4;
const PER_THREAD: u32 = 1_000_000;

/// Nanoseconds per lock-and-unlock on one thread.
#[inline(never)]
fn uncontended<L: Lock>() -> f64 {
    let lock = L::new();
    let t = Instant::now();
    for _ in 0..UNCONTENDED {
        black_box(&lock).bump();
    }
    t.elapsed().as_nanos() as f64 / f64::from(UNCONTENDED)
}

/// Wall nanoseconds per lock-and-unlock with four threads on one lock.
#[inline(never)]
fn contended<L: Lock>() -> f64 {
    let lock = Arc::new(L::new());
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (lock, start) = (lock.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..PER_THREAD {
                    black_box(&*lock).bump();
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    t.elapsed().as_nanos() as f64 / (THREADS as f64 * f64::from(PER_THREAD))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `f` with a block and mutex profile of this thread (and those it spawns) running.
fn profiled_on(f: impl FnOnce() -> f64) -> f64 {
    let config = profiled::Config::parse("block,mutex").unwrap().unwrap();
    let profile = profiled::Profile::start("locks", &config).unwrap();
    let r = f();
    drop(profile.finish_all());
    r
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("locks: benchmark");
        return;
    }
    let rounds: usize = std::env::var("LOCK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    type Std = std::sync::Mutex<u64>;
    type Ours = profiled::sync::Mutex<u64>;
    println!("profiled::sync::Mutex against std::sync::Mutex, {rounds} interleaved rounds");
    println!(
        "{:<34} {:>10} {:>12} {:>16}",
        "workload", "std ns/op", "profiled", "ratio (median)"
    );
    for (workload, run_std, run_ours) in [
        (
            "uncontended, 1 thread",
            uncontended::<Std> as fn() -> f64,
            uncontended::<Ours> as fn() -> f64,
        ),
        (
            "contended, 4 threads, 1 lock",
            contended::<Std>,
            contended::<Ours>,
        ),
    ] {
        // Warm-up.
        run_std();
        run_ours();
        let (mut std_ns, mut off_ns, mut on_ns) = (Vec::new(), Vec::new(), Vec::new());
        let (mut off_ratio, mut on_ratio) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            // Alternate which goes first.
            let (s, off) = if round % 2 == 0 {
                let s = run_std();
                (s, run_ours())
            } else {
                let off = run_ours();
                (run_std(), off)
            };
            let on = profiled_on(run_ours);
            off_ratio.push(off / s);
            on_ratio.push(on / s);
            std_ns.push(s);
            off_ns.push(off);
            on_ns.push(on);
        }
        let s = median(std_ns);
        println!(
            "{:<34} {:>10.2} {:>12.2} {:>15.3}x   no profile running",
            workload,
            s,
            median(off_ns),
            median(off_ratio)
        );
        println!(
            "{:<34} {:>10} {:>12.2} {:>15.3}x   block,mutex profile running",
            "",
            "",
            median(on_ns),
            median(on_ratio)
        );
    }
}
