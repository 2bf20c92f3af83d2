//! Quick cost probe: N sessions of M ms work each; prints per-session overhead.
use std::time::{Duration, Instant};

fn cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn work(ms: u64) {
    let t = Instant::now();
    let mut x = 1u64;
    while t.elapsed() < Duration::from_millis(ms) {
        for i in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(20);
    let ms: u64 = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(5);
    let on = std::env::args().nth(3).is_some_and(|s| s == "on");
    let config = profiled::Config::default();
    for i in 0..n {
        let (c0, t0) = (cpu(), Instant::now());
        let p = on.then(|| profiled::Profile::start(format!("s{i}"), &config).unwrap());
        let c1 = cpu();
        work(ms);
        let c2 = cpu();
        if let Some(p) = p {
            let r = p.finish().unwrap();
            std::hint::black_box(r.pprof_gz().len());
        }
        let c3 = cpu();
        if i < 3 || i == n - 1 {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let rss: Vec<&str> = status
                .lines()
                .filter(|l| l.starts_with("Rss") || l.starts_with("VmHWM"))
                .collect();
            println!("{rss:?}");
            println!(
                "session {i}: start {:?} finish {:?} total wall {:?}",
                c1 - c0,
                c3 - c2,
                t0.elapsed()
            );
        }
    }
}
