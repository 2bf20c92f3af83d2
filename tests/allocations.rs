//! `profiled::allocations` and `allocs_per_run`: exact, per call, under parallel tests, with
//! threads the call spawns included and other threads' allocations left out.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[global_allocator]
static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();

#[inline(never)]
fn hand_counted() -> Vec<Box<[u8]>> {
    // 10 boxes of 100 bytes, plus the Vec's own buffer of 10 pointers (16 bytes each).
    let mut v = Vec::with_capacity(10);
    for _ in 0..10 {
        v.push(vec![1u8; 100].into_boxed_slice());
    }
    v
}

#[test]
fn counts_are_exact() {
    let a = profiled::allocations(hand_counted);
    assert_eq!(a.allocs, 11, "{a:?}");
    assert_eq!(a.alloc_bytes, 10 * 100 + 10 * 16, "{a:?}");
    assert_eq!(
        (a.frees, a.freed_bytes),
        (0, 0),
        "the result is dropped after counting"
    );
    assert_eq!(a.peak_live_bytes, 1160);

    let b = profiled::allocations(|| drop(hand_counted()));
    assert_eq!((b.allocs, b.frees), (11, 11), "{b:?}");
    assert_eq!(b.alloc_bytes, b.freed_bytes);
    assert_eq!(b.peak_live_bytes, 1160);
}

#[test]
fn a_realloc_is_an_allocation_and_a_free() {
    let a = profiled::allocations(|| {
        let mut v: Vec<u8> = Vec::with_capacity(8);
        v.extend_from_slice(&[0; 8]);
        v.reserve_exact(24); // 8 -> 32: one realloc
        std::hint::black_box(&v);
    });
    assert_eq!((a.allocs, a.frees), (2, 2), "{a:?}");
    assert_eq!((a.alloc_bytes, a.freed_bytes), (8 + 32, 8 + 32), "{a:?}");
    assert_eq!(a.peak_live_bytes, 32);
}

#[test]
fn spawned_threads_count_and_neighbours_do_not() {
    // A neighbour allocating all along, as a parallel test would.
    let stop = Arc::new(AtomicBool::new(false));
    let neighbour = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::black_box(vec![0u8; 64]);
            }
        })
    };
    for _ in 0..20 {
        let a = profiled::allocations(|| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    std::thread::spawn(|| {
                        for _ in 0..1000 {
                            std::hint::black_box(vec![0u8; 1000]);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
        });
        // 4 x 1000 blocks of 1000 bytes from the workers, plus std's own per-thread
        // bookkeeping (thread handles, names, result packets): small, bounded.
        assert!(
            (4000..4000 + 64).contains(&a.allocs),
            "{} allocations: {a:?}",
            a.allocs
        );
        assert!(
            (4_000_000..4_000_000 + 16_384).contains(&a.alloc_bytes),
            "{a:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    neighbour.join().unwrap();
}

/// The calling thread and the threads it spawns keep their counts apart (the caller's
/// without read-modify-writes), but the peak is of their sum, seen from either side.
#[test]
fn the_peak_adds_the_callers_and_spawned_threads_live_bytes() {
    const MB: u64 = 1 << 20;
    // std's own per-thread bookkeeping comes on top.
    let about = |a: profiled::Allocations, mb: u64| {
        assert!(
            (mb * MB..mb * MB + 16_384).contains(&a.peak_live_bytes),
            "peak of {mb} MB expected: {a:?}"
        );
    };
    // A spawned thread's allocation on top of the caller's live megabyte.
    let a = profiled::allocations(|| {
        let mine = std::hint::black_box(vec![1u8; MB as usize]);
        std::thread::spawn(|| drop(std::hint::black_box(vec![2u8; 3 * MB as usize])))
            .join()
            .unwrap();
        drop(mine);
    });
    about(a, 4);
    // The caller's allocation on top of what a spawned thread allocated and handed over.
    let a = profiled::allocations(|| {
        let kept = std::thread::spawn(|| std::hint::black_box(vec![3u8; 2 * MB as usize]))
            .join()
            .unwrap();
        let mine = std::hint::black_box(vec![4u8; 3 * MB as usize]);
        drop((mine, kept));
    });
    about(a, 5);
}

#[test]
fn allocs_per_run_is_gos() {
    let mut cache = std::collections::HashMap::new();
    assert_eq!(
        profiled::allocs_per_run(50, || {
            cache.entry(1).or_insert_with(|| vec![0u8; 10]);
        }),
        0.0
    );
    assert_eq!(profiled::allocs_per_run(50, || vec![1u8; 3]), 1.0);
    assert_eq!(profiled::allocs_per_run(10, || (vec![1u8], vec![2u8])), 2.0);
}

#[test]
fn nested_counts_each_see_their_own() {
    let mut inner = profiled::Allocations::default();
    let outer = profiled::allocations(|| {
        let _a = std::hint::black_box(vec![0u8; 10]);
        inner = profiled::allocations(|| vec![0u8; 20]);
    });
    assert_eq!((inner.allocs, inner.alloc_bytes), (1, 20));
    assert_eq!((outer.allocs, outer.alloc_bytes), (2, 30), "{outer:?}");
}

#[inline(never)]
fn allocates_for_the_assertion() -> Vec<u8> {
    vec![0u8; 4096]
}

#[test]
fn assertions_pass_within_their_limits() {
    let words = ["a", "b"];
    profiled::assert_allocations!(at_most = 0, || words.iter().map(|w| w.len()).sum::<usize>());
    profiled::assert_allocations!(at_most = 5, bytes_at_most = 5 * 4096, || {
        (0..4)
            .map(|_| allocates_for_the_assertion())
            .collect::<Vec<_>>()
    });
}

#[test]
fn a_failed_assertion_names_the_stack_and_writes_the_offending_allocations() {
    let failed = std::panic::catch_unwind(|| {
        profiled::assert_allocations!(at_most = 2, || {
            (0..5)
                .map(|_| allocates_for_the_assertion())
                .collect::<Vec<_>>()
        })
    });
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    // Five blocks of 4 KiB, and the Vec that holds them.
    assert!(
        message.contains("6 allocations where at most 2 are allowed"),
        "{message}"
    );
    assert!(
        message.contains("most bytes allocated at: allocations::allocates_for_the_assertion"),
        "{message}"
    );
    let path = message
        .split("profile of them: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no profile path in: {message}"));
    let top = support::go_tool_pprof(
        &["-sample_index=alloc_space", "-top"],
        std::path::Path::new(path),
    );
    let first = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or("");
    assert!(
        first.contains("20kB") && first.ends_with("allocations::allocates_for_the_assertion"),
        "{top}"
    );
}

#[inline(never)]
fn counts_distinct(items: &[u64]) -> usize {
    let mut seen = std::collections::HashMap::new();
    for &i in items {
        *seen.entry(i).or_insert(0u32) += 1;
    }
    seen.len()
}

/// std's HashMap allocates inside the hashbrown std vendors (sources under `/rust/deps/`):
/// those frames are trimmed as std's `alloc` crate's are, so the stack shown reaches the code
/// that used the map, not `hashbrown::raw::alloc::inner::do_alloc` and its callers.
#[test]
fn a_failed_assertion_on_std_hash_map_reaches_the_code_that_used_it() {
    let items: Vec<u64> = (0..20_000).collect();
    let failed = std::panic::catch_unwind(|| {
        profiled::assert_allocations!(at_most = 1, || counts_distinct(&items))
    });
    let message = *failed.unwrap_err().downcast::<String>().unwrap();
    let stack = message
        .split("most bytes allocated at: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no stack in: {message}"));
    let frames: Vec<&str> = stack
        .lines()
        .map(|l| l.trim_start().trim_start_matches("<- "))
        .take_while(|l| !l.starts_with("profile of them") && !l.is_empty())
        .collect();
    assert!(
        !frames.iter().any(|f| f.starts_with("hashbrown::")),
        "{message}"
    );
    assert!(
        frames.contains(&"allocations::counts_distinct"),
        "{message}"
    );
}

thread_local! {
    static ON_EXIT: AllocatesOnDrop = const { AllocatesOnDrop };
}

struct AllocatesOnDrop;

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        std::hint::black_box(vec![0u8; 777]);
    }
}

/// A spawned thread's thread-local destructors run as it exits, after its own code:
/// their allocations are counted like any other, and nothing breaks.
#[test]
fn allocations_in_thread_local_destructors_are_counted() {
    let a = profiled::allocations(|| {
        std::thread::spawn(|| ON_EXIT.with(|_| ())).join().unwrap();
    });
    assert!(
        a.alloc_bytes >= 777 && a.frees >= 1,
        "the destructor's block: {a:?}"
    );
}

/// A child forked while other threads allocate (and take the heap store's lock at every
/// allocation, at `heap_rate=1`) must never wait on that lock: a thread that held it does
/// not exist in the child.
#[test]
fn a_forked_child_never_waits_on_the_heap_store() {
    let config = profiled::Config::default()
        .with_kinds([profiled::Kind::Heap])
        .unwrap()
        .with_heap_rate(1)
        .unwrap();
    let profile = profiled::Profile::start("fork", &config).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(vec![0u8; 100]);
                }
            })
        })
        .collect();
    for _ in 0..50 {
        // SAFETY: the child only allocates, frees and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            for _ in 0..1000 {
                std::hint::black_box(vec![0u8; 100]);
            }
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child without blocking.
            let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if done == pid {
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: kills the hung child we made.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("a forked child hung allocating");
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        b.join().unwrap();
    }
    let report = profile.finish().unwrap().remove(0);
    assert!(report.total("alloc_objects").unwrap() > 0);
}

/// A sampled heap profile that caught no allocation says so, and how to see them all; an
/// exact one that saw none has nothing to explain.
#[test]
fn a_heap_profile_too_small_to_sample_says_why() {
    let heap = |rate| {
        profiled::Config::default()
            .with_kinds([profiled::Kind::Heap])
            .unwrap()
            .with_heap_rate(rate)
            .unwrap()
    };
    // About 1 KiB allocated against one sample per GiB: caught once in a million runs.
    let profile = profiled::Profile::start("unsampled", &heap(1 << 30)).unwrap();
    drop(std::hint::black_box(hand_counted()));
    let report = profile.finish().unwrap().remove(0);
    assert_eq!(report.samples(), 0);
    let note = report.note().expect("a note on the empty profile");
    assert!(
        note.contains("1.0 GiB") && note.contains("heap_rate=1"),
        "{note}"
    );

    let profile = profiled::Profile::start("exact", &heap(1)).unwrap();
    drop(std::hint::black_box(hand_counted()));
    let report = profile.finish().unwrap().remove(0);
    assert!(report.samples() >= 11, "{}", report.samples());
    assert_eq!(report.note(), None);

    let config = heap(1);
    let profile = profiled::Profile::start("nothing", &config).unwrap();
    let report = profile.finish().unwrap().remove(0);
    assert_eq!(
        (report.samples(), report.note()),
        (0, None),
        "{:?}",
        report.folded_stacks().collect::<Vec<_>>()
    );
}
