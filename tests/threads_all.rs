//! `threads=all`: a profile of every thread of the process, and its refusal to share the
//! process with other profiles. Own test binary with one test, so nothing else runs here.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use profiled::{Config, Profile};

#[test]
fn every_thread_alone_or_refused() {
    let per_test = Config::default();
    let all = Config::parse("cpu,threads=all").unwrap().unwrap();

    // Refused while another profile runs (here on another thread), naming the way out.
    let (started_tx, started) = std::sync::mpsc::channel();
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let p = Profile::start("other", &Config::default()).unwrap();
        started_tx.send(()).unwrap();
        done_rx.recv().unwrap();
        p.finish().unwrap();
    });
    started.recv().unwrap();
    let err = Profile::start("all", &all).unwrap_err().to_string();
    assert!(err.contains("must be the only profile running"), "{err}");
    assert!(err.contains("--test-threads=1"), "{err}");
    done.send(()).unwrap();
    other.join().unwrap();

    // Alone it starts, and then other profiles are refused, on any thread.
    let everything = Profile::start("all", &all).unwrap();
    let err = std::thread::spawn(move || {
        Profile::start("late", &Config::default())
            .unwrap_err()
            .to_string()
    })
    .join()
    .unwrap();
    assert!(err.contains("must run alone"), "{err}");
    everything.finish().unwrap();

    // Once it finished, profiles start again.
    Profile::start("after", &per_test)
        .unwrap()
        .finish()
        .unwrap();
}
