//! 200 profile start/stop cycles at 1000 Hz while 8 threads allocate, free, take locks and
//! spawn short-lived threads: no deadlock, no crash, every profile valid. The profiles are
//! kept in target/stress/ for `cargo xtask validate` to read with go tool pprof. The handler
//! never touches the heap: the test allocator aborts if it does.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profiled::{Config, Profile};

mod support;

#[cfg(feature = "__test-hooks")]
#[global_allocator]
static ALLOC: support::NoAllocInHandler = support::NoAllocInHandler;

const CYCLES: usize = 200;

fn churn(stop: &AtomicBool, shared: &Mutex<Vec<u64>>) {
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let v: Vec<Box<[u8]>> = (0..64)
            .map(|i| vec![i as u8; 64 + (i * 37) % 4000].into())
            .collect();
        let sum: u64 = v.iter().map(|b| b[0] as u64).sum();
        shared.lock().unwrap().push(sum);
        if round % 16 == 0 {
            std::thread::spawn(move || std::hint::black_box(vec![0u8; 1 << 16]).len())
                .join()
                .unwrap();
            shared.lock().unwrap().clear();
        }
        round += 1;
    }
}

#[test]
fn start_stop_under_allocation_locks_and_thread_churn() {
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("stress");
    let _ = std::fs::remove_dir_all(&out);
    let config = Config::parse("cpu,freq=1000").unwrap().unwrap();
    let started = Instant::now();
    for cycle in 0..CYCLES {
        let profile = Profile::start(format!("stress::cycle_{cycle}"), &config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (stop, shared) = (stop.clone(), shared.clone());
                std::thread::spawn(move || churn(&stop, &shared))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(60));
        if cycle % 3 == 0 {
            profile.reset();
        }
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let report = profile.finish().unwrap().remove(0);

        assert_eq!(report.lost_samples(), 0, "the drain keeps up at 1000 Hz");
        let decoded = profiled::pprof::decode(report.pprof_gz()).expect("valid profile");
        assert_eq!(decoded.sample_type.len(), 2);
        for s in &decoded.sample {
            assert_eq!(s.value.len(), 2);
            assert!(
                s.location_id
                    .iter()
                    .all(|&id| id >= 1 && id as usize <= decoded.location.len())
            );
        }
        report
            .write(&out.join(format!("cycle_{cycle:03}.cpu.pb.gz")))
            .unwrap();
    }
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        CYCLES,
        "one complete file per cycle"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
