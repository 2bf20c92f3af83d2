//! Kinds of profile: what each one's samples carry and how its files are named.
//!
//! A kind is a [`Kind`] registered in [`KINDS`] plus a source that fills [`Samples`] for it
//! (the CPU kind's is the sampler, turned into `Samples` by `Collected::samples` in
//! src/aggregate.rs). Everything downstream is shared: symbolization, the pprof encoding
//! with the kind's sample types, folded stacks and the summary's `top:`, file names, atomic
//! writes and the summary line.

#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use crate::stack::Thread;

/// One value each sample of a kind carries: pprof's `ValueType`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ValueType {
    pub kind: &'static str,
    pub unit: &'static str,
}

/// A kind of profile.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Kind {
    /// Its name in `PROFILE`/`PROFILED` and in file names (`<test>.<name>.pb.gz`).
    pub name: &'static str,
    /// The values of every sample, in order (pprof's `sample_type`).
    pub sample_types: &'static [ValueType],
    /// What one sample stands for (pprof's `period_type`).
    pub period_type: ValueType,
    /// Index into `sample_types` of the value flamegraphs weigh and the summary's `top:`
    /// ranks by.
    pub main: usize,
    /// Index into `sample_types` of the value pprof shows by default (`default_sample_type`).
    pub default: usize,
    /// Flamegraph widths are the main value divided by this (CPU: nanoseconds shown as
    /// microseconds, so that inferno's integer counts stay readable).
    pub folded_divisor: i64,
    /// Leading (leaf-side) frames dropped from every stack, as Go hides `runtime.*` below an
    /// allocation: the allocator's own frames, so that a heap profile's leaf is the code that
    /// allocated.
    pub trim: Trim,
}

/// Frames a kind drops from the leaf side of its stacks: by the function's name, or by its
/// source file, which is what tells them apart where names are bare (code built with
/// `debug = "line-tables-only"` names inlined functions without their module path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trim {
    /// Prefixes of the function's name; for a trait impl `<T as Trait>`, of the trait's too.
    pub names: &'static [&'static str],
    /// Parts of the source file's path.
    pub files: &'static [&'static str],
}

impl Trim {
    /// Nothing trimmed.
    pub(crate) const NONE: Trim = Trim {
        names: &[],
        files: &[],
    };

    /// Whether nothing is trimmed.
    pub(crate) fn is_empty(&self) -> bool {
        self.names.is_empty() && self.files.is_empty()
    }
}

/// Whether `file` is a source of Rust's standard library: std's own (`/rustc/<commit>/library/`)
/// or a crate std vendors and builds into itself (`/rust/deps/hashbrown-*`, gimli and
/// addr2line for backtraces), which are std's internals to whoever calls std.
pub(crate) fn is_std_source(file: &str) -> bool {
    file.starts_with("/rustc/") || file.starts_with("/rust/deps/")
}

/// profiled's own sources, as the compiler that built it recorded their paths.
pub(crate) const PROFILED_SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/");

/// CPU time, sampled: Go's `-cpuprofile` (`samples/count`, `cpu/nanoseconds`).
pub(crate) const CPU: Kind = Kind {
    name: "cpu",
    sample_types: &[
        ValueType {
            kind: "samples",
            unit: "count",
        },
        ValueType {
            kind: "cpu",
            unit: "nanoseconds",
        },
    ],
    period_type: ValueType {
        kind: "cpu",
        unit: "nanoseconds",
    },
    main: 1,
    default: 1,
    folded_divisor: 1000,
    trim: Trim::NONE,
};

/// Every thread's stack at one moment, one sample per thread (Go's `goroutine` profile):
/// served by `/debug/pprof/threads`, not a per-test kind.
#[cfg(feature = "http")]
pub(crate) const THREADS: Kind = Kind {
    name: "threads",
    sample_types: &[ValueType {
        kind: "threads",
        unit: "count",
    }],
    period_type: ValueType {
        kind: "threads",
        unit: "count",
    },
    main: 0,
    default: 0,
    folded_divisor: 1,
    trim: Trim::NONE,
};

/// Go's heap profile sample types, in Go's order.
const HEAP_TYPES: &[ValueType] = &[
    ValueType {
        kind: "alloc_objects",
        unit: "count",
    },
    ValueType {
        kind: "alloc_space",
        unit: "bytes",
    },
    ValueType {
        kind: "inuse_objects",
        unit: "count",
    },
    ValueType {
        kind: "inuse_space",
        unit: "bytes",
    },
];

/// The frames an allocation passes through before it reaches the allocator: the wrapper,
/// the `__rust_alloc` shims, and std's `alloc` crate (`RawVec` growth, `Box::new`,
/// collections' node allocation). `<` opens trait impls: `<alloc::vec::Vec<T> as ..>` is
/// matched by its type, `<u8 as alloc::vec::SpecFromElem>` by its trait.
const ALLOCATOR_FRAMES: Trim = Trim {
    names: ALLOCATOR_NAMES,
    // std's sources are recorded as `/rustc/<commit>/library/..` (or rust-src's copy).
    files: &[
        PROFILED_SOURCES,
        "/library/alloc/src/",
        "/library/core/src/alloc/",
        "/library/std/src/alloc.rs",
        // std's HashMap and HashSet allocate inside the hashbrown std vendors; their own
        // frames (`std::collections::hash::..::insert`) stay, as the API the caller used.
        "/rust/deps/hashbrown-",
    ],
};
const ALLOCATOR_NAMES: &[&str] = &[
    "profiled::",
    "<profiled::",
    "alloc::",
    "<alloc::",
    "core::alloc::",
    "<core::alloc::",
    "std::alloc::",
    "<std::alloc::",
    "__rustc::",
    "__rust_alloc",
    "__rust_dealloc",
    "__rust_realloc",
    "__rust_alloc_zeroed",
    "__rdl_",
    "__rg_",
];

/// Sampled allocations of a test, unbiased: Go's `-memprofile` (`alloc_objects`,
/// `alloc_space`, `inuse_objects`, `inuse_space`), `inuse_space` shown by default; the
/// summary's `top:` and flamegraphs weigh bytes allocated.
pub(crate) const HEAP: Kind = Kind {
    name: "heap",
    sample_types: HEAP_TYPES,
    period_type: ValueType {
        kind: "space",
        unit: "bytes",
    },
    main: 1,
    default: 3,
    folded_divisor: 1,
    trim: ALLOCATOR_FRAMES,
};

/// The same data as [`HEAP`] with `alloc_space` shown by default (Go's `allocs` profile).
pub(crate) const ALLOCS: Kind = Kind {
    name: "allocs",
    default: 1,
    ..HEAP
};

/// Go's block and mutex profile sample types.
const CONTENTION_TYPES: &[ValueType] = &[
    ValueType {
        kind: "contentions",
        unit: "count",
    },
    ValueType {
        kind: "delay",
        unit: "nanoseconds",
    },
];

/// The frames between the code that locked (or unlocked) and the stack walk: profiled's
/// locks and recorder, the std lock they wrap, and a guard's drop glue.
const LOCK_FRAMES: Trim = Trim {
    names: LOCK_NAMES,
    files: &[
        PROFILED_SOURCES,
        "/library/std/src/sync/",
        "/library/std/src/sys/",
        // Bare drop glue of a guard (`drop_in_place<..>` in core's ptr module) is not
        // matched here: its name, which holds the guard's type, is.
    ],
};
const LOCK_NAMES: &[&str] = &[
    "profiled::",
    "<profiled::",
    "core::ptr::drop_in_place<profiled::",
    "drop_in_place<profiled::",
    "std::sync::",
    "<std::sync::",
    "std::sys::",
    "core::ptr::drop_in_place<std::sync::",
    "drop_in_place<std::sync::",
    // profiled::sync::parking_lot's locks are lock_api's over parking_lot's.
    "lock_api::",
    "<lock_api::",
    "core::ptr::drop_in_place<lock_api::",
    "drop_in_place<lock_api::",
    "parking_lot::",
    "<parking_lot::",
    "parking_lot_core::",
];

/// Where threads waited for profiled's locks and condition variables: Go's
/// `-blockprofile` (`contentions`, `delay` in nanoseconds, upscaled for `block_rate`).
pub(crate) const BLOCK: Kind = Kind {
    name: "block",
    sample_types: CONTENTION_TYPES,
    period_type: ValueType {
        kind: "contentions",
        unit: "count",
    },
    main: 1,
    default: 1,
    folded_divisor: 1000,
    trim: LOCK_FRAMES,
};

/// The unlocks that kept others waiting, with the waiting they caused: Go's
/// `-mutexprofile` (values scaled by `mutex_fraction`).
pub(crate) const MUTEX: Kind = Kind {
    name: "mutex",
    ..BLOCK
};

/// Every thread of a test on wall time, running or waiting (fgprof's profile for Go):
/// `samples/count`, `wall/nanoseconds`, with a `state` label.
pub(crate) const WALL: Kind = Kind {
    name: "wall",
    sample_types: &[
        ValueType {
            kind: "samples",
            unit: "count",
        },
        ValueType {
            kind: "wall",
            unit: "nanoseconds",
        },
    ],
    period_type: ValueType {
        kind: "wall",
        unit: "nanoseconds",
    },
    main: 1,
    default: 1,
    folded_divisor: 1000,
    trim: Trim::NONE,
};

impl Kind {
    /// Whether a frame of function `name`, from source `file` (empty if unknown), is one
    /// this kind trims from the top of stacks (see [`Trim`]).
    pub(crate) fn trims(&self, name: &str, file: &str) -> bool {
        let by_trait = name
            .strip_prefix('<')
            .and_then(|n| n.split_once(" as "))
            .map(|(_, t)| t);
        self.trim
            .names
            .iter()
            .any(|p| name.starts_with(p) || by_trait.is_some_and(|t| t.starts_with(p)))
            || (!file.is_empty() && self.trim.files.iter().any(|f| file.contains(f)))
    }
}

/// Every kind profiled takes. `PROFILE`'s grammar and the file names are checked against it.
pub(crate) const KINDS: &[&Kind] = &[&CPU, &HEAP, &ALLOCS, &BLOCK, &MUTEX, &WALL];

/// The kind called `name`.
pub(crate) fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// What a finished session of any kind hands the encoder.
pub(crate) struct Samples<'a> {
    pub kind: &'static Kind,
    /// Stacks (leaf first, raw addresses) with their values in `kind.sample_types` order.
    pub rows: Vec<Row<'a>>,
    /// Values that belong to no stack, shown under a placeholder frame of that name
    /// (samples lost to a full buffer).
    pub placeholders: Vec<(&'static str, Vec<i64>)>,
    /// What one sample stood for, in `kind.period_type` units.
    pub period: i64,
    pub start: SystemTime,
    pub duration: Duration,
}

/// One stack of one thread and its values.
pub(crate) struct Row<'a> {
    pub thread: Option<&'a Thread>,
    pub stack: &'a [u64],
    pub values: Vec<i64>,
    /// Numeric labels (a heap sample's `bytes`: the size of each block).
    pub num_labels: Vec<(&'static str, i64)>,
    /// Text labels (a wall sample's `state`: `running` or `waiting`).
    pub str_labels: Vec<(&'static str, &'static str)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_consistent() {
        for kind in KINDS {
            assert!(kind.main < kind.sample_types.len(), "{}", kind.name);
            assert!(kind.default < kind.sample_types.len(), "{}", kind.name);
            assert!(kind.folded_divisor > 0, "{}", kind.name);
            assert_eq!(find(kind.name), Some(*kind));
            assert!(
                kind.name.bytes().all(|b| b.is_ascii_lowercase()),
                "{}: a kind's name is a lower-case word, in PROFILE and in file names",
                kind.name
            );
        }
        assert_eq!(find("nope"), None);
    }

    #[test]
    fn allocator_frames_are_trimmed_by_path_or_by_trait() {
        for name in [
            "__rustc::__rust_alloc",
            "alloc::raw_vec::finish_grow",
            "<alloc::vec::Vec<T> as core::clone::Clone>::clone",
            "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
            "<profiled::sys::alloc::Alloc<A> as core::alloc::global::GlobalAlloc>::alloc",
            "profiled::heap::hook::record",
        ] {
            assert!(HEAP.trims(name, ""), "{name}");
        }
        for name in [
            "app::parse",
            "<app::Doc as core::clone::Clone>::clone",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
            "allocator_api2::boxed::Box::new",
        ] {
            assert!(!HEAP.trims(name, ""), "{name}");
        }
        assert!(!CPU.trims("alloc::raw_vec::finish_grow", ""));
    }

    #[test]
    fn bare_names_are_trimmed_by_their_source_file() {
        // Inlined frames of code built with `debug = "line-tables-only"`: no module path.
        let std = "/rustc/0123abcd/library";
        for (name, file) in [
            (
                "with_capacity_zeroed_in<alloc::alloc::Global>",
                format!("{std}/alloc/src/raw_vec/mod.rs"),
            ),
            ("alloc_impl", format!("{std}/std/src/alloc.rs")),
            ("record", format!("{PROFILED_SOURCES}heap/hook.rs")),
            (
                "hashbrown::raw::alloc::inner::do_alloc<alloc::alloc::Global>",
                "/rust/deps/hashbrown-0.16.1/src/raw/alloc.rs".into(),
            ),
        ] {
            assert!(HEAP.trims(name, &file), "{name} in {file}");
            assert!(!CPU.trims(name, &file), "{name} in {file}");
        }
        for (name, file) in [
            (
                "lock_contended",
                format!("{std}/std/src/sys/sync/mutex/futex.rs"),
            ),
            ("lock<u32>", format!("{std}/std/src/sync/poison/mutex.rs")),
            (
                "drop_in_place<profiled::sync::MutexGuard<u32>>",
                format!("{std}/core/src/ptr/mod.rs"),
            ),
        ] {
            assert!(BLOCK.trims(name, &file), "{name} in {file}");
        }
        // The user's code, and drop glue of the user's types, stay.
        assert!(!HEAP.trims("parse", "/home/me/app/src/parse.rs"));
        assert!(!BLOCK.trims(
            "drop_in_place<app::Doc>",
            &format!("{std}/core/src/ptr/mod.rs")
        ));
        assert!(!HEAP.trims("parse", ""));
        // A program's own hashbrown (from a registry) is its own code.
        assert!(!HEAP.trims(
            "hashbrown::raw::alloc::inner::do_alloc",
            "/home/me/.cargo/registry/src/index.crates.io-1/hashbrown-0.15.2/src/raw/alloc.rs"
        ));
    }
}
