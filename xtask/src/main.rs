//! Repository automation, run as `cargo xtask <task>` (see matklad/cargo-xtask).
//!
//! Tasks:
//! - `validate`: profiles the shipped example and the test fixtures, then checks every
//!   profile with the real `go tool pprof`.
//! - `bench`: the sampling engine against pprof-rs and no profiler, side by side.
//! - `libc-share`: perf as referee: profiling a single-threaded allocation-heavy benchmark
//!   leaves its share of time in libc unchanged.

mod bench;
mod libc_share;
mod validate;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("validate") => validate::run(),
        Some("bench") => bench::run(),
        Some("libc-share") => libc_share::run(),
        _ => {
            eprintln!("usage: cargo xtask validate | bench | libc-share");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
