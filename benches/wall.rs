//! A mostly-sleeping workload with and without a wall-clock profile, side by side in one
//! process, interleaved: `cargo bench --bench wall` (`WALL_BENCH_ROUNDS`, default 9).
//!
//! Four threads each sleep 2 ms and then compute ~50 µs, 100 times. The table prints the
//! workload's wall time and the process's CPU time (the sampler's own work included), as
//! medians and as the median of each round's ratio to the run without a profile.

use std::time::{Duration, Instant};

fn process_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = text
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime, fields 14 and 15 of stat (11 and 12 after the command).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[inline(never)]
fn compute(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    }
    x
}

/// The workload: (wall, process CPU).
fn workload() -> (Duration, Duration) {
    let cpu = process_cpu();
    let t = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..100 {
                    std::thread::sleep(Duration::from_millis(2));
                    std::hint::black_box(compute(50_000));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    (t.elapsed(), process_cpu().saturating_sub(cpu))
}

fn with_wall(hz: u32) -> (Duration, Duration) {
    let config = profiled::Config::parse(&format!("wall,wall_freq={hz}"))
        .unwrap()
        .unwrap();
    let profile = profiled::Profile::start("wall", &config).unwrap();
    let r = workload();
    drop(profile.finish());
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("wall: benchmark");
        return;
    }
    let rounds: usize = std::env::var("WALL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(9);
    with_wall(100); // warm-up: the engine, the sampler thread, debug info.
    /// Name, wall ms, CPU ms, and their ratios to the run without a profile, per round.
    type Row = (&'static str, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut rows: Vec<Row> = vec![
        ("no profile", vec![], vec![], vec![], vec![]),
        ("wall at 100 Hz", vec![], vec![], vec![], vec![]),
        ("wall at 1000 Hz", vec![], vec![], vec![], vec![]),
    ];
    for _ in 0..rounds {
        let runs = [workload(), with_wall(100), with_wall(1000)];
        for (row, run) in rows.iter_mut().zip(runs) {
            row.1.push(run.0.as_secs_f64() * 1e3);
            row.2.push(run.1.as_secs_f64() * 1e3);
            row.3.push(run.0.as_secs_f64() / runs[0].0.as_secs_f64());
            row.4
                .push(run.1.as_secs_f64() / runs[0].1.as_secs_f64().max(1e-3));
        }
    }
    println!("4 threads x 100 x (sleep 2 ms + ~50 us of work), {rounds} interleaved rounds");
    println!(
        "{:<18} {:>10} {:>8} {:>10} {:>8}",
        "", "wall ms", "ratio", "CPU ms", "ratio"
    );
    for (name, wall, cpu, wall_ratio, cpu_ratio) in rows {
        println!(
            "{:<18} {:>10.1} {:>7.3}x {:>10.0} {:>7.2}x",
            name,
            median(wall),
            median(wall_ratio),
            median(cpu),
            median(cpu_ratio)
        );
    }
}
