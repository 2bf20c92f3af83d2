//! Wall-clock profiles: every thread of a test, running or waiting, on wall time; waiting
//! threads not disturbed.

mod support;

use std::io::{Read, Write};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use profiled::{Config, Profile, Report};

/// One wall test at a time: their threads starting and ending would disturb each other's
/// shares (they share one sampler).
fn turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

fn config(text: &str) -> Config {
    Config::parse(text).unwrap().unwrap()
}

fn of<'a>(reports: &'a [Report], kind: &str) -> &'a Report {
    reports.iter().find(|r| r.kind().name() == kind).unwrap()
}

/// The share of a report's main value in stacks that contain `function`.
fn share(report: &Report, function: &str) -> f64 {
    let stacks: Vec<(&str, u64)> = report.folded_stacks().collect();
    let total: u64 = stacks.iter().map(|s| s.1).sum();
    let with: u64 = stacks
        .iter()
        .filter(|(s, _)| s.contains(function))
        .map(|s| s.1)
        .sum();
    with as f64 / total.max(1) as f64
}

#[inline(never)]
fn sleeps(d: Duration) {
    std::thread::sleep(d);
}

#[inline(never)]
fn burns(cpu: Duration) {
    support::spin(cpu);
}

/// 300 ms asleep and 100 ms of CPU: the wall profile splits them as the wall clock did,
/// the CPU profile sees only the burn.
#[test]
fn wall_time_splits_between_sleeping_and_burning() {
    let _turn = turn();
    let profile = Profile::start("split", &config("cpu,wall,wall_freq=1000")).unwrap();
    let t = Instant::now();
    sleeps(Duration::from_millis(300));
    let slept = t.elapsed();
    let t = Instant::now();
    burns(Duration::from_millis(100));
    // On a loaded machine the burn takes longer than its CPU time: what the wall clock
    // saw is what the profile must show.
    let burned = t.elapsed();
    let reports = profile.finish().unwrap();
    let wall = of(&reports, "wall");
    let expected = slept.as_secs_f64() / (slept + burned).as_secs_f64();
    let got = share(wall, "wall::sleeps");
    assert!(
        (got - expected).abs() < 0.05,
        "sleep's share of wall time {got:.3}, the clock's {expected:.3}"
    );
    assert!(
        (share(wall, "wall::burns") - (1.0 - expected)).abs() < 0.05,
        "burn's share {:.3}",
        share(wall, "wall::burns")
    );
    let total = wall.total("wall").unwrap() as f64 / 1e9;
    let measured = (slept + burned).as_secs_f64();
    assert!(
        (total - measured).abs() < 0.1 * measured,
        "wall total {total:.3}s, measured {measured:.3}s"
    );
    let cpu = of(&reports, "cpu");
    let n = cpu.samples() as i64;
    assert!(
        share(cpu, "wall::sleeps") <= 0.02 + support::sampling_error(0.02, n),
        "{} over {n} samples",
        share(cpu, "wall::sleeps")
    );
    assert!(
        share(cpu, "wall::burns") >= 0.9 - support::sampling_error(0.9, n),
        "{} over {n} samples",
        share(cpu, "wall::burns")
    );
    assert!(
        wall.summary_line(None).contains("  wall 0."),
        "{}",
        wall.summary_line(None)
    );
    // The headline tells the wait from the work: three quarters asleep, in std's sleep.
    let top = wall.top_function().map_or("", |t| t.0);
    assert!(
        top.starts_with("wall::sleeps waiting in std::thread::") && top.ends_with("::sleep"),
        "{}",
        wall.summary_line(None)
    );
    assert_eq!(
        cpu.top_function().map(|t| t.0),
        Some("wall::support::spin"),
        "{}",
        cpu.summary_line(None)
    );

    // The state label: go tool pprof keeps the sleep when asked for waiting samples.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("split.wall.pb.gz");
    wall.write(&path).unwrap();
    let waiting = support::go_tool_pprof(&["-top", "-tagfocus=state=waiting"], &path);
    assert!(waiting.contains("wall::sleeps"), "{waiting}");
    assert!(!waiting.contains("wall::burns"), "{waiting}");
    let running = support::go_tool_pprof(&["-top", "-tagfocus=state=running"], &path);
    assert!(running.contains("wall::burns"), "{running}");
}

#[inline(never)]
fn parked_worker(start: &Barrier, d: Duration) {
    start.wait();
    std::thread::sleep(d);
}

/// Threads the test spawns are sampled too, while they sleep.
#[test]
fn spawned_threads_are_sampled_waiting() {
    let _turn = turn();
    let profile = Profile::start("spawned", &config("wall,wall_freq=200")).unwrap();
    let start = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || parked_worker(&start, Duration::from_millis(200)))
        })
        .collect();
    start.wait();
    for w in workers {
        w.join().unwrap();
    }
    let report = profile.finish().unwrap().remove(0);
    // Two workers asleep 200 ms each, and this thread waiting for them as long.
    let worker_ns: u64 = report
        .folded_stacks()
        .filter(|(s, _)| s.contains("wall::parked_worker"))
        .map(|(_, us)| us * 1000)
        .sum();
    assert!(
        worker_ns > 300_000_000,
        "the workers' 400 ms asleep: {worker_ns} ns"
    );
}

/// A thread blocked in a read, an accept, a sleep, a lock or a condition variable while a
/// wall profile samples it at 1 kHz sees its call finish normally, never `Interrupted`.
#[test]
fn waiting_threads_see_no_eintr() {
    let _turn = turn();
    let profile = Profile::start("eintr", &config("wall,wall_freq=1000")).unwrap();
    let (mut tx, mut rx) = std::os::unix::net::UnixStream::pair().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4];
        rx.read_exact(&mut buf).map(|()| buf)
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = std::thread::spawn(move || listener.accept().map(|_| ()));
    let sleeper = std::thread::spawn(|| {
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(300));
        t.elapsed()
    });
    let lock = Arc::new(Mutex::new(()));
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let held = lock.lock().unwrap();
    let locker = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.lock().map(|_| ()).is_ok())
    };
    let waiter = {
        let pair = pair.clone();
        std::thread::spawn(move || {
            let mut ready = pair.0.lock().unwrap();
            while !*ready {
                ready = pair.1.wait(ready).unwrap();
            }
        })
    };
    // A raw read(2) as a C library would make it: restarted by the kernel (SA_RESTART).
    let (raw_tx, mut raw_rx) = std::os::unix::net::UnixStream::pair().unwrap();
    let raw_reader = std::thread::spawn(move || {
        let mut b = [0u8; 1];
        raw_rx.read(&mut b)
    });
    std::thread::sleep(Duration::from_millis(300));
    tx.write_all(b"ping").unwrap();
    drop(std::net::TcpStream::connect(addr).unwrap());
    drop(held);
    *pair.0.lock().unwrap() = true;
    pair.1.notify_all();
    (&raw_tx).write_all(b"x").unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), *b"ping");
    acceptor.join().unwrap().unwrap();
    assert!(sleeper.join().unwrap() >= Duration::from_millis(300));
    assert!(locker.join().unwrap());
    waiter.join().unwrap();
    assert_eq!(raw_reader.join().unwrap().unwrap(), 1);
    let report = profile.finish().unwrap().remove(0);
    // They were sampled: the profile holds seven threads' waiting.
    assert!(report.samples() > 300, "{} samples", report.samples());
}

#[inline(never)]
async fn user_async_work() {
    // Blocks the thread that runs it (this test's): the workers have nothing to do.
    std::thread::sleep(Duration::from_millis(200));
}

/// A tokio runtime's idle workers show as the runtime parked, not as the user's code.
#[test]
fn idle_tokio_workers_show_as_parked() {
    let _turn = turn();
    let profile = Profile::start("tokio", &config("wall,wall_freq=200")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(user_async_work());
    drop(rt);
    let report = profile.finish().unwrap().remove(0);
    // The workers' stacks (folded: what the runtime was doing, user code absent).
    let parked_us: u64 = report
        .folded_stacks()
        .filter(|(s, _)| {
            s.contains("multi_thread::park::Parker::park") && !s.contains("user_async_work")
        })
        .map(|(_, us)| us)
        .sum();
    // Two workers parked ~200 ms each.
    assert!(
        parked_us > 250_000,
        "parked {parked_us} µs: {:?}",
        report.folded_stacks().collect::<Vec<_>>()
    );
}

#[inline(never)]
fn waits_for_the_signal(pair: &(profiled::sync::Mutex<bool>, profiled::sync::Condvar)) {
    let mut ready = pair.0.lock().unwrap();
    while !*ready {
        ready = pair.1.wait(ready).unwrap();
    }
}

/// Threads waiting in profiled's own locks and condition variables are charged, in the
/// summary's `top:`, to the code that waits, with the call it waited in: the wrapper's
/// public method, not its insides.
#[test]
fn waits_in_profileds_locks_are_charged_to_the_caller() {
    let _turn = turn();
    let profile = Profile::start("headline", &config("wall,wall_freq=1000")).unwrap();
    let pair = Arc::new((
        profiled::sync::Mutex::new(false),
        profiled::sync::Condvar::new(),
    ));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let pair = pair.clone();
            std::thread::spawn(move || waits_for_the_signal(&pair))
        })
        .collect();
    // Two waiters for 200 ms each, against this thread's 200 ms asleep.
    std::thread::sleep(Duration::from_millis(200));
    *pair.0.lock().unwrap() = true;
    pair.1.notify_all();
    for w in waiters {
        w.join().unwrap();
    }
    let report = profile.finish().unwrap().remove(0);
    let (top, _) = report.top_function().expect("samples");
    assert_eq!(
        top,
        "wall::waits_for_the_signal waiting in profiled::sync::Condvar::wait",
        "{}",
        report.summary_line(None)
    );
}
