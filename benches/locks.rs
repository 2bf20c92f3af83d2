//! profiled's locks measured side by side with the locks they wrap, in one process,
//! interleaved: `cargo bench --bench locks` (std's), `--features parking_lot` adds
//! parking_lot's.
//!
//! Three workloads: one thread locking and unlocking a lock nobody else wants; four threads
//! incrementing one shared counter under the lock and doing nothing else; and the same
//! with a little work between one unlock and the thread's next lock, as code that locks
//! does. The contended rows also give how often the lock changed threads, per lock: in a
//! loop that does nothing but lock, that decides its speed. Each runs with the wrapped lock,
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

/// What the threads share: a count, and who took the lock last, to count its handoffs.
#[derive(Default)]
struct Shared {
    count: u64,
    last: u32,
    handoffs: u32,
}

impl Shared {
    #[inline]
    fn bump(&mut self, me: u32) {
        self.count += 1;
        if self.last != me {
            self.last = me;
            self.handoffs += 1;
        }
    }
}

trait Lock: Send + Sync + 'static {
    fn new() -> Self;
    /// Locks, counts, unlocks, as thread `me`.
    fn bump(&self, me: u32);
    fn handoffs(self) -> u32;
}

impl Lock for std::sync::Mutex<Shared> {
    fn new() -> Self {
        std::sync::Mutex::default()
    }
    #[inline]
    fn bump(&self, me: u32) {
        self.lock().unwrap().bump(me);
    }
    fn handoffs(self) -> u32 {
        self.into_inner().unwrap().handoffs
    }
}

impl Lock for profiled::sync::Mutex<Shared> {
    fn new() -> Self {
        profiled::sync::Mutex::default()
    }
    #[inline]
    fn bump(&self, me: u32) {
        self.lock().unwrap().bump(me);
    }
    fn handoffs(self) -> u32 {
        self.into_inner().unwrap().handoffs
    }
}

#[cfg(feature = "parking_lot")]
impl Lock for parking_lot::Mutex<Shared> {
    fn new() -> Self {
        parking_lot::Mutex::default()
    }
    #[inline]
    fn bump(&self, me: u32) {
        self.lock().bump(me);
    }
    fn handoffs(self) -> u32 {
        self.into_inner().handoffs
    }
}

#[cfg(feature = "parking_lot")]
impl Lock for profiled::sync::parking_lot::Mutex<Shared> {
    fn new() -> Self {
        profiled::sync::parking_lot::Mutex::default()
    }
    #[inline]
    fn bump(&self, me: u32) {
        self.lock().bump(me);
    }
    fn handoffs(self) -> u32 {
        self.into_inner().handoffs
    }
}

const UNCONTENDED: u32 = 2_000_000;
const THREADS: usize = 4;
const PER_THREAD: u32 = 300_000;
/// Rounds that also run profiled's lock with a profile running (one in this many: at
/// microseconds per contended lock, it would take most of the time).
const ON_EVERY: usize = 5;

/// Iterations of the work between a thread's unlock and its next lock in the workload that
/// has some (about 15 ns here).
const WORK: u32 = 40;

/// A run's nanoseconds per lock-and-unlock, and how often the lock changed threads per lock.
type Run = fn() -> (f64, f64);

/// One thread locking and unlocking.
#[inline(never)]
fn uncontended<L: Lock>() -> (f64, f64) {
    let lock = L::new();
    let t = Instant::now();
    for _ in 0..UNCONTENDED {
        black_box(&lock).bump(0);
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(UNCONTENDED);
    (ns, 0.0)
}

/// A lock at the start of a cache line. Where a lock falls against line boundaries decides
/// how fast threads hand it over (its lock word and data on one line or on two), so every
/// lock is measured in the same place; over random places profiled's and std's straddle a
/// line equally often (one in eight 8-byte-aligned offsets for a `Mutex<u64>`).
#[repr(align(64))]
struct Aligned<L>(L);

/// Four threads on one lock, each doing `W` iterations of work after each unlock: wall
/// nanoseconds per lock-and-unlock.
#[inline(never)]
fn contended<L: Lock, const W: u32>() -> (f64, f64) {
    let lock = Arc::new(Aligned(L::new()));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS as u32)
        .map(|me| {
            let (lock, start) = (lock.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..PER_THREAD {
                    black_box(&lock.0).bump(me);
                    for i in 0..W {
                        black_box(i);
                    }
                }
            })
        })
        .collect();
    start.wait();
    let t = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let ops = THREADS as f64 * f64::from(PER_THREAD);
    let ns = t.elapsed().as_nanos() as f64 / ops;
    let Ok(lock) = Arc::try_unwrap(lock) else {
        unreachable!("every thread has ended")
    };
    (ns, f64::from(lock.0.handoffs()) / ops)
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
fn profiled_on(f: Run) -> (f64, f64) {
    let config = profiled::Config::parse("block,mutex").unwrap().unwrap();
    let profile = profiled::Profile::start("locks", &config).unwrap();
    let r = f();
    drop(profile.finish());
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
fn compare(rounds: usize, workload: &str, base: Run, ours: Run) {
    // Warm-up.
    base();
    ours();
    let (mut base_ns, mut off_ns, mut on_ns) = (Vec::new(), Vec::new(), Vec::new());
    let (mut aa_ratio, mut off_ratio, mut on_ratio) = (Vec::new(), Vec::new(), Vec::new());
    let (mut base_h, mut off_h, mut on_h) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // [first wrapped, second wrapped, wrapped again, profiled's], run from `round % 4`.
        let runs: [Run; 4] = [base, base, base, ours];
        let mut r = [(0.0, 0.0); 4];
        for k in 0..4 {
            let i = (k + round) % 4;
            r[i] = runs[i]();
        }
        let [(b1, h1), (b2, h2), (again, _), (off, h)] = r;
        let b = (b1 + b2) / 2.0;
        if round % ON_EVERY == 0 {
            let (on, h) = profiled_on(ours);
            on_ratio.push(on / b);
            on_ns.push(on);
            on_h.push(h);
        }
        aa_ratio.push(again / b);
        off_ratio.push(off / b);
        base_ns.push(b);
        off_ns.push(off);
        base_h.extend([h1, h2]);
        off_h.push(h);
    }
    let b = median(base_ns);
    let rows = [
        (
            workload,
            b,
            quartiles(aa_ratio),
            median(base_h),
            "the wrapped lock again (noise)",
        ),
        (
            "",
            median(off_ns),
            quartiles(off_ratio),
            median(off_h),
            "no profile running",
        ),
        (
            "",
            median(on_ns),
            quartiles(on_ratio),
            median(on_h),
            "block,mutex profile running",
        ),
    ];
    for (i, (label, ns, (q1, ratio, q3), handoffs, what)) in rows.into_iter().enumerate() {
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
        let handoffs = if handoffs > 0.0 {
            format!("{handoffs:.3}")
        } else {
            String::new()
        };
        println!(
            "{label:<34} {base:>10} {ours:>12} {ratio:>9.3}x {spread:>11} {handoffs:>8}   {what}"
        );
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
    type Std = std::sync::Mutex<Shared>;
    type Ours = profiled::sync::Mutex<Shared>;
    println!("profiled's locks against the locks they wrap, {rounds} interleaved rounds");
    println!(
        "{:<34} {:>10} {:>12} {:>10} {:>11} {:>8}",
        "workload", "wrapped ns", "profiled ns", "ratio", "quartiles", "handoffs"
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
        contended::<Std, 0>,
        contended::<Ours, 0>,
    );
    compare(
        rounds,
        "contended, work between locks",
        contended::<Std, WORK>,
        contended::<Ours, WORK>,
    );
    #[cfg(feature = "parking_lot")]
    {
        type Parked = parking_lot::Mutex<Shared>;
        type OursParked = profiled::sync::parking_lot::Mutex<Shared>;
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
            contended::<Parked, 0>,
            contended::<OursParked, 0>,
        );
        compare(
            rounds,
            "contended, work between locks",
            contended::<Parked, WORK>,
            contended::<OursParked, WORK>,
        );
    }
}
