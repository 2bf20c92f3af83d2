//! profiled's locks measured side by side with the locks they wrap, in one process,
//! interleaved: `cargo bench --bench locks` (std's), `--features parking_lot` adds
//! parking_lot's.
//!
//! Two workloads: one thread locking and unlocking a lock nobody else wants, and four
//! threads incrementing one shared counter under the lock. Each runs with the wrapped lock,
//! with profiled's while no block or mutex profile runs (what a program pays for the `use`
//! line), and with profiled's while one does; and, to show the machine's noise, the
//! wrapped lock against itself. Rounds alternate the locks so that the machine's drift
//! falls on all of them; the table prints medians and the median of each round's ratio to
//! the wrapped lock's.
//! `LOCK_BENCH_ROUNDS` sets the number of rounds (default 150: a contended lock's speed
//! varies by ±10 % from run to run here, so a median within 1 % takes many).

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

#[cfg(feature = "parking_lot")]
impl Lock for parking_lot::Mutex<u64> {
    fn new() -> Self {
        parking_lot::Mutex::new(0)
    }
    #[inline]
    fn bump(&self) {
        *self.lock() += 1;
    }
}

#[cfg(feature = "parking_lot")]
impl Lock for profiled::sync::parking_lot::Mutex<u64> {
    fn new() -> Self {
        profiled::sync::parking_lot::Mutex::new(0)
    }
    #[inline]
    fn bump(&self) {
        *self.lock() += 1;
    }
}

const UNCONTENDED: u32 = 2_000_000;
const THREADS: usize = 4;
const PER_THREAD: u32 = 300_000;
/// Rounds that also run profiled's lock with a profile running (one in this many: at
/// microseconds per contended lock, it would take most of the time).
const ON_EVERY: usize = 5;

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

/// A lock at the start of a cache line. Where a lock falls against line boundaries decides
/// how fast threads hand it over (its lock word and data on one line or on two), so every
/// lock is measured in the same place; over random places profiled's and std's straddle a
/// line equally often (one in eight 8-byte-aligned offsets for a `Mutex<u64>`).
#[repr(align(64))]
struct Aligned<L>(L);

/// Wall nanoseconds per lock-and-unlock with four threads on one lock.
#[inline(never)]
fn contended<L: Lock>() -> f64 {
    let lock = Arc::new(Aligned(L::new()));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (lock, start) = (lock.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..PER_THREAD {
                    black_box(&lock.0).bump();
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

fn median(v: Vec<f64>) -> f64 {
    quartiles(v).1
}

/// First quartile, median, third quartile.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
}

/// Runs `f` with a block and mutex profile of this thread (and those it spawns) running.
fn profiled_on(f: impl FnOnce() -> f64) -> f64 {
    let config = profiled::Config::parse("block,mutex").unwrap().unwrap();
    let profile = profiled::Profile::start("locks", &config).unwrap();
    let r = f();
    drop(profile.finish_all());
    r
}

/// One workload of one family: the wrapped lock against itself, against profiled's with no
/// profile running, and against profiled's with one running.
///
/// Each round runs the wrapped lock three times and profiled's once, each of the four in
/// each place in turn. Profiled's, and the third wrapped run (the noise row), are compared
/// with the mean of the other two wrapped runs: so a machine that speeds up or slows down
/// within a round (this one does) moves no ratio one way, and the noise row shows how far
/// the same comparison moves with no difference at all.
fn compare(rounds: usize, workload: &str, base: fn() -> f64, ours: fn() -> f64) {
    // Warm-up.
    base();
    ours();
    let (mut base_ns, mut off_ns, mut on_ns) = (Vec::new(), Vec::new(), Vec::new());
    let (mut aa_ratio, mut off_ratio, mut on_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // [first wrapped, second wrapped, wrapped again, profiled's], run from `round % 4`.
        let runs: [fn() -> f64; 4] = [base, base, base, ours];
        let mut ns = [0.0; 4];
        for k in 0..4 {
            let i = (k + round) % 4;
            ns[i] = runs[i]();
        }
        let [b1, b2, again, off] = ns;
        let b = (b1 + b2) / 2.0;
        if round % ON_EVERY == 0 {
            let on = profiled_on(ours);
            on_ratio.push(on / b);
            on_ns.push(on);
        }
        aa_ratio.push(again / b);
        off_ratio.push(off / b);
        base_ns.push(b);
        off_ns.push(off);
    }
    let b = median(base_ns);
    let rows = [
        (
            workload,
            b,
            quartiles(aa_ratio),
            "the wrapped lock again (noise)",
        ),
        (
            "",
            median(off_ns),
            quartiles(off_ratio),
            "no profile running",
        ),
        (
            "",
            median(on_ns),
            quartiles(on_ratio),
            "block,mutex profile running",
        ),
    ];
    for (i, (label, ns, (q1, ratio, q3), what)) in rows.into_iter().enumerate() {
        let base = if i == 0 {
            format!("{b:.2}")
        } else {
            String::new()
        };
        let ours = if i == 0 {
            String::new()
        } else {
            format!("{ns:.2}")
        };
        let spread = format!("{q1:.2}-{q3:.2}");
        println!("{label:<34} {base:>10} {ours:>12} {ratio:>9.3}x {spread:>11}   {what}");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("locks: benchmark");
        return;
    }
    let rounds: usize = std::env::var("LOCK_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(150);
    type Std = std::sync::Mutex<u64>;
    type Ours = profiled::sync::Mutex<u64>;
    println!("profiled's locks against the locks they wrap, {rounds} interleaved rounds");
    println!(
        "{:<34} {:>10} {:>12} {:>10} {:>11}",
        "workload", "wrapped ns", "profiled ns", "ratio", "quartiles"
    );
    println!("std::sync::Mutex");
    compare(
        rounds,
        "uncontended, 1 thread",
        uncontended::<Std>,
        uncontended::<Ours>,
    );
    compare(
        rounds,
        "contended, 4 threads, 1 lock",
        contended::<Std>,
        contended::<Ours>,
    );
    #[cfg(feature = "parking_lot")]
    {
        type Parked = parking_lot::Mutex<u64>;
        type OursParked = profiled::sync::parking_lot::Mutex<u64>;
        println!("parking_lot::Mutex");
        compare(
            rounds,
            "uncontended, 1 thread",
            uncontended::<Parked>,
            uncontended::<OursParked>,
        );
        compare(
            rounds,
            "contended, 4 threads, 1 lock",
            contended::<Parked>,
            contended::<OursParked>,
        );
    }
}
