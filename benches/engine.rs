//! The sampling engine measured side by side with pprof-rs 0.15 and with no profiler, on the
//! same workloads, in one run: `cargo xtask bench` (or `cargo bench --bench engine --profile
//! dev`). Each figure comes from fresh child processes, run interleaved and repeated; the
//! table prints medians and ratios against the unprofiled run of the same round.
//!
//! Built like users' test binaries (dev profile: debug info, no optimisation), because that
//! is where per-test profiling runs.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[inline(never)]
fn heavy_a(n: u64) -> u64 {
    let mut x = black_box(1u64);
    for i in 0..n {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i);
    }
    black_box(x)
}

#[inline(never)]
fn heavy_b(n: u64) -> u64 {
    let mut x = black_box(2u64);
    for i in 0..n {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i);
    }
    black_box(x)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Peak resident set (VmHWM), KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// heavy_a and heavy_b in a 3:1 ratio (identical code, 3:1 iterations) for `cpu` of this
/// thread's CPU time; returns the CPU time really used.
fn work(cpu: Duration) -> Duration {
    let start = thread_cpu();
    while thread_cpu() - start < cpu {
        heavy_a(3 * 2_000);
        heavy_b(2_000);
    }
    thread_cpu() - start
}

/// Only `f` for `cpu` of this thread's CPU time; returns the CPU time really used.
fn work_in(f: fn(u64) -> u64, cpu: Duration) -> Duration {
    let start = thread_cpu();
    while thread_cpu() - start < cpu {
        f(2_000);
    }
    thread_cpu() - start
}

#[derive(Clone, Copy, PartialEq)]
enum Prof {
    None,
    Profiled,
    Pprof,
}

impl Prof {
    fn parse(s: &str) -> Prof {
        match s {
            "none" => Prof::None,
            "profiled" => Prof::Profiled,
            "pprof" => Prof::Pprof,
            _ => panic!("unknown profiler {s}"),
        }
    }
}

/// What one profiled session reported.
#[derive(Default)]
struct Outcome {
    /// Total CPU the profile claims, ns.
    cpu_ns: f64,
    /// Share of the profile's CPU in stacks through heavy_a.
    share_a: f64,
    /// Samples in the profile.
    samples: f64,
}

fn out_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("profiled-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Process CPU the benchmark spent reading profiles back (not the profilers' cost): taken
/// out of every figure.
static ANALYSIS_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn analysis() -> Duration {
    Duration::from_nanos(ANALYSIS_NS.load(std::sync::atomic::Ordering::Relaxed))
}

/// Runs `f` to completion, counting its process CPU as analysis.
fn analysing<T>(f: impl FnOnce() -> T) -> T {
    let c0 = process_cpu();
    let out = f();
    let spent = (process_cpu() - c0).as_nanos() as u64;
    ANALYSIS_NS.fetch_add(spent, std::sync::atomic::Ordering::Relaxed);
    out
}

/// Runs `f` under `prof` at `hz`, writing the profile as a user would, and reads it back.
fn session(prof: Prof, hz: u32, name: &str, f: impl FnOnce()) -> Outcome {
    match prof {
        Prof::None => {
            f();
            Outcome::default()
        }
        Prof::Profiled => {
            let config = profiled::Config::default().with_frequency(hz).unwrap();
            let p = profiled::Profile::start(name, &config).unwrap();
            f();
            let report = p.finish().unwrap().remove(0);
            report
                .write(&out_dir().join(format!("{name}.pb.gz")))
                .unwrap();
            analysing(|| profiled_outcome(&report))
        }
        Prof::Pprof => {
            let guard = pprof::ProfilerGuardBuilder::default()
                .frequency(hz as i32)
                .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                .build()
                .unwrap();
            f();
            let report = guard.report().build().unwrap();
            let profile = report.pprof().unwrap();
            let mut raw = Vec::new();
            pprof::protos::Message::encode(&profile, &mut raw).unwrap();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            std::io::Write::write_all(&mut gz, &raw).unwrap();
            std::fs::write(
                out_dir().join(format!("{name}.pb.gz")),
                gz.finish().unwrap(),
            )
            .unwrap();
            analysing(|| {
                let mut total = 0isize;
                let mut a = 0isize;
                for (frames, count) in &report.data {
                    total += count;
                    if frames
                        .frames
                        .iter()
                        .flatten()
                        .any(|s| s.name().ends_with("heavy_a"))
                    {
                        a += count;
                    }
                }
                // pprof-rs weighs every sample as 1/frequency, whatever was delivered.
                Outcome {
                    cpu_ns: total as f64 * 1e9 / f64::from(hz),
                    share_a: a as f64 / total.max(1) as f64,
                    samples: total as f64,
                }
            })
        }
    }
}

/// Total CPU, share of heavy_a and sample count of a profiled report, read back from its
/// pprof bytes as a user's tools would.
fn profiled_outcome(report: &profiled::Report) -> Outcome {
    let decoded = profiled::pprof::decode(report.pprof_gz()).unwrap();

    let names = |s: &profiled::pprof::proto::Sample| {
        s.location_id
            .iter()
            .flat_map(|id| decoded.location[*id as usize - 1].line.iter())
            .map(|l| {
                let f = &decoded.function[l.function_id as usize - 1];
                decoded.string_table[f.name as usize].clone()
            })
            .collect::<Vec<_>>()
    };
    let total: i64 = decoded.sample.iter().map(|s| s.value[1]).sum();
    let samples: i64 = decoded.sample.iter().map(|s| s.value[0]).sum();
    let a: i64 = decoded
        .sample
        .iter()
        .filter(|s| names(s).iter().any(|n| n.ends_with("heavy_a")))
        .map(|s| s.value[1])
        .sum();
    Outcome {
        cpu_ns: total as f64,
        share_a: a as f64 / total.max(1) as f64,
        samples: samples as f64,
    }
}

/// One measurement in a fresh process; prints `key=value` lines for the parent.
fn child(args: &[String]) {
    let scenario = args[0].as_str();
    let prof = Prof::parse(&args[1]);
    let hz: u32 = args[2].parse().unwrap();
    let (started, begun) = (process_cpu(), Instant::now());
    match scenario {
        // First session in a process: its cost beyond the 20 ms of work (~20 samples at
        // 1000 Hz, so symbolization has something to do).
        "first" => {
            let (c0, a0, w0) = (process_cpu(), analysis(), Instant::now());
            let (mut used, mut took) = (Duration::ZERO, Duration::ZERO);
            session(prof, hz, "first", || {
                let t = Instant::now();
                used = work(Duration::from_millis(20));
                took = t.elapsed();
            });
            let spent = (process_cpu() - c0).saturating_sub(analysis() - a0);
            let waited = w0.elapsed().saturating_sub(analysis() - a0);
            println!(
                "session_ms={}",
                spent.saturating_sub(used).as_secs_f64() * 1e3
            );
            println!(
                "session_wall_ms={}",
                waited.saturating_sub(took).as_secs_f64() * 1e3
            );
        }
        // 200 tests of 5 ms in one process: later sessions' cost, and the whole process.
        "steady" => {
            let (mut costs, mut walls) = (Vec::new(), Vec::new());
            for i in 0..200 {
                let (c0, a0, w0) = (process_cpu(), analysis(), Instant::now());
                let (mut used, mut took) = (Duration::ZERO, Duration::ZERO);
                session(prof, hz, &format!("s{i}"), || {
                    let t = Instant::now();
                    used = work(Duration::from_millis(5));
                    took = t.elapsed();
                });
                let spent = (process_cpu() - c0).saturating_sub(analysis() - a0);
                let waited = w0.elapsed().saturating_sub(analysis() - a0);
                costs.push(spent.saturating_sub(used).as_secs_f64() * 1e3);
                walls.push(waited.saturating_sub(took).as_secs_f64() * 1e3);
            }
            println!("later_ms={}", median(costs[1..].to_vec()));
            println!("later_wall_ms={}", median(walls[1..].to_vec()));
        }
        // One ~0.85 s test: whole-process CPU, peak RSS, accuracy, attribution.
        "long" => {
            let mut used = Duration::ZERO;
            let o = session(prof, hz, "long", || used = work(Duration::from_millis(850)));
            println!("accuracy={}", o.cpu_ns / used.as_nanos() as f64);
            println!("share_a={}", o.share_a);
            println!("samples={}", o.samples);
        }
        // 8 threads of 100 ms CPU each, spawned inside the session, on 2 cores.
        "threads8" => {
            let mut used = Duration::ZERO;
            let o = session(prof, hz, "threads8", || {
                let threads: Vec<_> = (0..8)
                    .map(|_| std::thread::spawn(|| work(Duration::from_millis(100))))
                    .collect();
                used = threads.into_iter().map(|t| t.join().unwrap()).sum();
            });
            println!("accuracy={}", o.cpu_ns / used.as_nanos() as f64);
            println!("share_a={}", o.share_a);
            println!("samples={}", o.samples);
        }
        // 200 threads of 2 ms in heavy_a, one after another in pairs, beside one thread of
        // 400 ms in heavy_b: what spawning costs while a profile runs, and whether threads
        // that live two sample periods get their share (0.5 of heavy_a's and heavy_b's).
        "short" => {
            let mut used = Duration::ZERO;
            let o = session(prof, hz, "short", || {
                let long = std::thread::spawn(|| work_in(heavy_b, Duration::from_millis(400)));
                for _ in 0..100 {
                    let pair: Vec<_> = (0..2)
                        .map(|_| std::thread::spawn(|| work_in(heavy_a, Duration::from_millis(2))))
                        .collect();
                    used += pair
                        .into_iter()
                        .map(|t| t.join().unwrap())
                        .sum::<Duration>();
                }
                used += long.join().unwrap();
            });
            println!("accuracy={}", o.cpu_ns / used.as_nanos().max(1) as f64);
            println!("share_a={}", o.share_a);
            println!("samples={}", o.samples);
        }
        // 400 threads that do nothing, spawned and joined one at a time inside a session:
        // what a thread's start and end cost while a profile runs, per thread.
        "spawn" => {
            let mut per_thread = Duration::ZERO;
            session(prof, hz, "spawn", || {
                let c0 = process_cpu();
                for _ in 0..400 {
                    std::thread::spawn(|| black_box(1)).join().unwrap();
                }
                per_thread = (process_cpu() - c0) / 400;
            });
            println!("spawn_us={}", per_thread.as_secs_f64() * 1e6);
        }
        // Attribution with enough samples to tell bias from noise at 100 Hz: 2 threads of
        // 3 s CPU each (~600 samples a round). Nothing to compare without a profiler.
        "attribution" => {
            let o = if prof == Prof::None {
                Outcome::default()
            } else {
                session(prof, hz, "attribution", || {
                    let threads: Vec<_> = (0..2)
                        .map(|_| std::thread::spawn(|| work(Duration::from_secs(3))))
                        .collect();
                    for t in threads {
                        t.join().unwrap();
                    }
                })
            };
            println!("share_a={}", o.share_a);
            println!("samples={}", o.samples);
        }
        _ => panic!("unknown scenario {scenario}"),
    }
    println!(
        "process_cpu_ms={}",
        (process_cpu() - started)
            .saturating_sub(analysis())
            .as_secs_f64()
            * 1e3
    );
    // Analysis is CPU on the process's only busy thread then: its wall is as long.
    println!(
        "process_wall_ms={}",
        begun.elapsed().saturating_sub(analysis()).as_secs_f64() * 1e3
    );
    println!("peak_rss_kib={}", peak_rss_kib());
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for key in ["RssAnon", "RssFile"] {
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        println!("{}_kib={kib}", key.to_lowercase());
    }
    let _ = std::fs::remove_dir_all(out_dir());
}

type Values = std::collections::HashMap<String, f64>;

fn run(scenario: &str, prof: &str, hz: u32) -> Values {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["child", scenario, prof, &hz.to_string()])
        .env_remove("PROFILE")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{scenario} {prof}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `scenario` for all three profilers, `rounds` times interleaved; per profiler, the
/// medians of each value (means for shares) and of its ratio to the unprofiled run of the
/// same round.
struct Measured {
    value: [Values; 3],
    ratio: [Values; 3],
}

fn measure(scenario: &str, hz: u32, rounds: usize) -> Measured {
    let profs = ["none", "profiled", "pprof"];
    let mut values: [Vec<Values>; 3] = Default::default();
    for _ in 0..rounds {
        let round: Vec<Values> = profs.iter().map(|p| run(scenario, p, hz)).collect();
        for (i, v) in round.into_iter().enumerate() {
            values[i].push(v);
        }
    }
    let keys: Vec<String> = values[0][0].keys().cloned().collect();
    let mut value: [Values; 3] = Default::default();
    let mut ratio: [Values; 3] = Default::default();
    for i in 0..3 {
        for k in &keys {
            let all: Vec<f64> = values[i].iter().map(|v| v[k]).collect();
            // Shares are binomial: pool the rounds (mean) rather than pick one.
            let center = if k.starts_with("share") {
                all.iter().sum::<f64>() / all.len() as f64
            } else {
                median(all)
            };
            value[i].insert(k.clone(), center);
            let r = (0..rounds)
                .map(|r| values[i][r][k] / values[0][r][k])
                .collect();
            ratio[i].insert(k.clone(), median(r));
        }
    }
    Measured { value, ratio }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("child") {
        return child(&args[1..]);
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let t0 = Instant::now();
    eprintln!("measuring ({rounds} rounds, interleaved)...");
    let first = measure("first", 1000, rounds);
    let steady = measure("steady", 1000, rounds);
    let long100 = measure("long", 100, rounds);
    let long1000 = measure("long", 1000, rounds);
    let thr100 = measure("threads8", 100, rounds);
    let attr100 = measure("attribution", 100, rounds);
    let short1000 = measure("short", 1000, rounds);
    let spawn1000 = measure("spawn", 1000, rounds);

    let (p, q) = (1, 2); // profiled, pprof
    let v = |m: &Measured, i: usize, k: &str| m.value[i][k];
    let r = |m: &Measured, i: usize, k: &str| m.ratio[i][k];
    // Extra KiB against the unprofiled run, in MiB.
    let extra = |m: &Measured, i: usize, k: &str| (v(m, i, k) - v(m, 0, k)) / 1024.0;
    // A share with its binomial standard error over the samples of all rounds.
    let share = |m: &Measured, i: usize| {
        let (s, n) = (v(m, i, "share_a"), v(m, i, "samples") * rounds as f64);
        format!("{s:.3} ±{:.3}", (s * (1.0 - s) / n.max(1.0)).sqrt())
    };
    let mut rows: Vec<[String; 4]> = Vec::new();
    // One row: `cell` formats the figure of profiler `i`, for pprof-rs then profiled.
    let mut row = |name: &str, target: &str, cell: &dyn Fn(usize) -> String| {
        rows.push([name.to_string(), cell(q), cell(p), target.to_string()]);
    };
    row(
        "first session in a process (20 ms, 1000 Hz), CPU beyond the work",
        "< 25 ms",
        &|i| format!("{:.1} ms", v(&first, i, "session_ms")),
    );
    row("  the same, wall", "", &|i| {
        format!("{:.1} ms", v(&first, i, "session_wall_ms"))
    });
    row(
        "each later session (5 ms, 1000 Hz: start, stop, encode, write), CPU",
        "< 2 ms",
        &|i| format!("{:.2} ms", v(&steady, i, "later_ms")),
    );
    row("  the same, wall", "< 1 ms", &|i| {
        format!("{:.2} ms", v(&steady, i, "later_wall_ms"))
    });
    row(
        "200 tests of 5 ms at 1000 Hz, process CPU vs off",
        "< 1.5x",
        &|i| format!("{:.2}x", r(&steady, i, "process_cpu_ms")),
    );
    row("  the same, wall", "< 1.10x", &|i| {
        format!("{:.2}x", r(&steady, i, "process_wall_ms"))
    });
    row(
        "one 0.85 s test, process CPU vs off, 100 Hz",
        "< 1.03x",
        &|i| format!("{:.3}x", r(&long100, i, "process_cpu_ms")),
    );
    row("same, 1000 Hz", "< 1.05x", &|i| {
        format!("{:.3}x", r(&long1000, i, "process_cpu_ms"))
    });
    row("  the same, wall", "", &|i| {
        format!("{:.3}x", r(&long1000, i, "process_wall_ms"))
    });
    row(
        "extra peak RSS of that process (1000 Hz)",
        "< 8 MiB",
        &|i| format!("+{:.1} MiB", extra(&long1000, i, "peak_rss_kib")),
    );
    row(
        "  of which heap (RssAnon) / file-backed (RssFile)",
        "",
        &|i| {
            format!(
                "+{:.1} / +{:.1}",
                extra(&long1000, i, "rssanon_kib"),
                extra(&long1000, i, "rssfile_kib")
            )
        },
    );
    row(
        "reported / real CPU, 1 thread, 1000 Hz",
        "1 ± 0.05",
        &|i| format!("{:.3}", v(&long1000, i, "accuracy")),
    );
    row(
        "reported / real CPU, 8 threads, 100 Hz",
        "1 ± 0.05",
        &|i| format!("{:.3}", v(&thr100, i, "accuracy")),
    );
    row(
        "share of the 3:1 workload's first function, 100 Hz (2 x 3 s)",
        "0.75 ± 0.02",
        &|i| share(&attr100, i),
    );
    row("same, 1000 Hz (the 0.85 s test)", "0.75 ± 0.02", &|i| {
        share(&long1000, i)
    });
    row("same, 100 Hz (the 0.85 s test)", "0.75 ± 0.02", &|i| {
        share(&long100, i)
    });
    row("same, 8 threads, 100 Hz", "0.75 ± 0.02", &|i| {
        share(&thr100, i)
    });
    row(
        "200 threads of 2 ms beside one of 400 ms (1000 Hz), process CPU vs off",
        "",
        &|i| format!("{:.3}x", r(&short1000, i, "process_cpu_ms")),
    );
    row(
        "  share of the short threads' function (equal CPU)",
        "0.50 ± 0.02",
        &|i| share(&short1000, i),
    );
    row(
        "a thread spawned and joined inside a profile, process CPU",
        "",
        &|i| format!("{:.0} µs", v(&spawn1000, i, "spawn_us")),
    );
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    println!(
        "\n| {:<w0$} | {:>14} | {:>14} | {:>12} |",
        "figure", "pprof-rs 0.15", "profiled", "target"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(w0 + 2),
        "-".repeat(16),
        "-".repeat(16),
        "-".repeat(14)
    );
    for r in &rows {
        println!(
            "| {:<w0$} | {:>14} | {:>14} | {:>12} |",
            r[0], r[1], r[2], r[3]
        );
    }
    println!(
        "\nunprofiled baselines: first {:.1} ms, 200x5 ms process {:.0} ms CPU, 0.85 s test process {:.0} ms CPU, peak RSS {:.1} MiB",
        v(&first, 0, "process_cpu_ms"),
        v(&steady, 0, "process_cpu_ms"),
        v(&long100, 0, "process_cpu_ms"),
        v(&long100, 0, "peak_rss_kib") / 1024.0
    );
    println!(
        "unprofiled: a thread spawned and joined {:.0} µs of process CPU",
        v(&spawn1000, 0, "spawn_us")
    );
    println!("shares: mean of the rounds ± one binomial standard error of their pooled samples");
    println!("({} rounds, {:.0} s)", rounds, t0.elapsed().as_secs_f64());
}
