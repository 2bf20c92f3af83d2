//! Probe: fine-grained pause/resume around a short routine, setup in between.
use std::time::{Duration, Instant};

#[inline(never)]
fn routine(n: u64) -> u64 {
    let mut x = 1u64;
    for i in 0..n {
        x ^= x >> 31;
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(i);
    }
    std::hint::black_box(x)
}

#[inline(never)]
fn setup(kernel: bool) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1) {
        if kernel {
            std::hint::black_box(std::fs::read_to_string("/proc/thread-self/schedstat").unwrap());
        } else {
            routine(1000);
        }
    }
}

fn main() {
    for _ in 0..4 {
        once();
    }
}

fn once() {
    let kernel = std::env::args().nth(1).is_some_and(|a| a == "kernel");
    let p = profiled::Profile::start("pauses", &profiled::Config::default()).unwrap();
    let outer = std::env::args().nth(2).is_some().then(|| p.pause());
    drop(outer);
    let mut routine_time = Duration::ZERO;
    for _ in 0..300 {
        let g = profiled::pause();
        setup(kernel);
        drop(g);
        let t = Instant::now();
        routine(200_000);
        routine_time += t.elapsed();
    }
    let r = p.finish().unwrap();
    println!(
        "kernel setup {kernel}: routine {routine_time:?}, profile {:?} in {} samples",
        r.cpu_time(),
        r.samples()
    );
}
