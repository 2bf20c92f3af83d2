//! CPU profiles running at once over the same threads (a whole-run `--cpuprofile` around
//! per-test ones, the endpoint's beside a test's) each keep their own samples. Every
//! session's perf event signals the sampled thread with `SIGTRAP`, and a thread spawned
//! inside two sessions starts both events' clocks together: at one rate, or one a multiple
//! of the other, their signals would fall due together forever, and a signal already
//! pending swallows the next. Own test binary, so no other test's sessions run meanwhile.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

mod support;
use std::time::Duration;
use support::{read, spin, thread_cpu};

use profiled::{Config, Profile, Report};

/// Spins 150 ms of CPU; returns the thread's CPU time, all of it.
#[inline(never)]
fn spun_by_a_worker() -> Duration {
    spin(Duration::from_millis(150));
    thread_cpu()
}

/// CPU time `report` charges to stacks through `name`.
fn charged_to(report: &Report, name: &str) -> Duration {
    let micros = report
        .folded_stacks()
        .filter(|(stack, _)| stack.contains(name))
        .map(|(_, v)| v)
        .sum();
    Duration::from_micros(micros)
}

#[test]
fn nested_profiles_each_sample_threads_spawned_inside_both() {
    for (outer_hz, inner_hz) in [(1000, 1000), (500, 1000), (1000, 500)] {
        let config = |hz: u32| Config::parse(&format!("cpu,freq={hz}")).unwrap().unwrap();
        // One thread may hold one profile; a thread the outer profile samples starts the
        // inner one, as the harness's per-test profiles run inside its whole-run one.
        let outer = Profile::start("outer", &config(outer_hz)).unwrap();
        let (inner, spun) = std::thread::spawn(move || {
            let inner = Profile::start("inner", &config(inner_hz)).unwrap();
            let workers: Vec<_> = (0..2)
                .map(|_| std::thread::spawn(spun_by_a_worker))
                .collect();
            let spun: Duration = workers.into_iter().map(|w| w.join().unwrap()).sum();
            (inner.finish().unwrap().remove(0), spun)
        })
        .join()
        .unwrap();
        let outer = outer.finish().unwrap().remove(0);
        // The inner profile, started second, says its rate is not quite the one asked for.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inner.pb.gz");
        inner.write(&file).unwrap();
        let said = read(&file).comments().join("\n");
        assert!(said.contains("sampled at"), "{said}");
        for (report, hz) in [(&inner, inner_hz), (&outer, outer_hz)] {
            // 300 ms of the workers' CPU: 300 samples at 1000 Hz. Each sample weighs the
            // CPU since the thread's previous one, so a lost signal loses no time, but its
            // neighbour takes it: four in five must arrive.
            let samples = report.samples() as f64;
            let expected = spun.as_secs_f64() * f64::from(hz);
            let other = if hz == inner_hz { outer_hz } else { inner_hz };
            assert!(
                samples >= 0.8 * expected,
                "{} at {hz} Hz beside one at {other} Hz: {samples} samples of ~{expected:.0}",
                report.name(),
            );
        }
        // The inner profile holds the workers and the thread that waits for them: theirs is
        // nearly all of it (a share, which the total's calibration leaves alone).
        let total: u64 = inner.folded_stacks().map(|(_, v)| v).sum();
        let share = charged_to(&inner, "spun_by_a_worker").as_micros() as f64 / total.max(1) as f64;
        assert!(
            share >= 0.9,
            "inner at {inner_hz} Hz beside one at {outer_hz} Hz: the workers have {share:.3} of it"
        );
    }
}

/// 1.5 ms of CPU on a thread of its own; returns the thread's CPU time.
#[inline(never)]
fn short_lived_work() -> Duration {
    spin(Duration::from_micros(1500));
    thread_cpu()
}

/// 150 ms of CPU on a thread of its own; returns the thread's CPU time.
#[inline(never)]
fn long_lived_work() -> Duration {
    spin(Duration::from_millis(150));
    thread_cpu()
}

/// A hundred threads of 1.5 ms each beside one of 150 ms, spawned inside two profiles: each
/// profile charges every thread its time. A thread is a member of its creator's sessions
/// from birth, so each session's first sample weighs its CPU since then; a session whose
/// signal was dropped (two sessions' events overflow together in a new thread) is sampled
/// at the other's; and a thread's last stretch, which no sample follows, joins its latest
/// sample.
#[test]
fn short_lived_threads_keep_their_time_in_nested_profiles() {
    let config = Config::parse("cpu").unwrap().unwrap();
    let outer = Profile::start("outer", &config).unwrap();
    let (inner, short, long) = std::thread::spawn(move || {
        let inner = Profile::start("inner", &config).unwrap();
        let long = std::thread::spawn(long_lived_work);
        let mut short = Duration::ZERO;
        for _ in 0..50 {
            let pair: Vec<_> = (0..2)
                .map(|_| std::thread::spawn(short_lived_work))
                .collect();
            short += pair
                .into_iter()
                .map(|t| t.join().unwrap())
                .sum::<Duration>();
        }
        let long = long.join().unwrap();
        (inner.finish().unwrap().remove(0), short, long)
    })
    .join()
    .unwrap();
    let outer = outer.finish().unwrap().remove(0);
    for report in [&inner, &outer] {
        // Short against long, charged and measured (to the closures' ends; starting and
        // ending a thread costs a little more, charged to it too): a ratio that the total's
        // calibration, which scales every stack alike, leaves alone. Before, the short
        // threads got 0.05 to 0.7 of their share: nothing for a session whose first signal
        // was dropped, a period at most for one sampled after another, never their last
        // stretch.
        let charged = charged_to(report, "short_lived_work").as_secs_f64()
            / charged_to(report, "long_lived_work")
                .as_secs_f64()
                .max(1e-9);
        let measured = short.as_secs_f64() / long.as_secs_f64();
        let ratio = charged / measured;
        assert!(
            (0.85..=1.2).contains(&ratio),
            "{}: short-lived threads charged {ratio:.2} of their share beside the long one",
            report.name()
        );
    }
}
