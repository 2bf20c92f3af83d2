//! A sample buffer too small for the load: nothing is dropped silently. The profile counts
//! the lost samples under a pseudo-function, says so in a comment, and its CPU total still
//! holds the lost samples' time. (Own test binary: the buffer is sized once per process.)
#![cfg(all(target_os = "linux", target_arch = "x86_64", feature = "__test-hooks"))]

mod support;
use std::time::Duration;
use support::spin;

#[test]
fn a_full_buffer_is_counted_not_hidden() {
    // SAFETY: this test binary has one test and no other thread yet.
    unsafe { std::env::set_var("PROFILED_RING_CAPACITY", "2") };
    let config = profiled::Config::parse("cpu,freq=10000").unwrap().unwrap();
    let profile = profiled::Profile::start("overflow", &config).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| spin(Duration::from_millis(150))))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = profile.finish().unwrap().remove(0);
    assert!(
        report.lost_samples() > 0,
        "a 2-cell buffer at 10 kHz on 4 threads overflows"
    );
    assert!(
        report
            .summary_line(None)
            .contains(&format!("lost {}", report.lost_samples()))
    );
    // Said as a warning too, for whoever prints them.
    assert!(
        report
            .warnings()
            .any(|w| w.contains("samples lost (sample buffer full)"))
    );
    let p = profiled::pprof::decode(report.pprof_gz()).unwrap();
    let s = |i: i64| p.string_table[i as usize].as_str();
    let lost_fn = p
        .function
        .iter()
        .find(|f| s(f.name) == profiled::pprof::LOST_FUNCTION)
        .expect("pseudo-function");
    let lost_loc = p
        .location
        .iter()
        .find(|l| l.line[0].function_id == lost_fn.id)
        .unwrap();
    let lost_sample = p
        .sample
        .iter()
        .find(|x| x.location_id == [lost_loc.id])
        .unwrap();
    assert_eq!(lost_sample.value[0] as u64, report.lost_samples());
    assert!(
        p.comment
            .iter()
            .any(|&c| s(c).contains("lost: the sample buffer was full"))
    );
    // The lost samples' CPU is still in the total: 4 threads x 150 ms.
    let total: i64 = p.sample.iter().map(|x| x.value[1]).sum();
    let ratio = total as f64 / 0.6e9;
    assert!((0.9..1.15).contains(&ratio), "total {total} ns");
}
