//! Kinds of profile: what each one's samples carry and how its files are named.
//!
//! A kind is a [`Kind`] registered in [`KINDS`] plus a source that fills [`Samples`] for it
//! (the CPU kind's is the sampler, turned into `Samples` by `Collected::samples` in
//! src/aggregate.rs). Everything downstream is shared: symbolization, the pprof encoding
//! with the kind's sample types, folded stacks and the summary's `top:`, file names, atomic
//! writes and the summary line.

#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use crate::aggregate::Thread;

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
    /// Leading (leaf-side) frames dropped from every stack when their function's name starts
    /// with one of these, as Go hides `runtime.*` below an allocation: the allocator's own
    /// frames, so that a heap profile's leaf is the code that allocated.
    pub trim: &'static [&'static str],
}

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
    trim: &[],
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
    trim: &[],
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
const ALLOCATOR_FRAMES: &[&str] = &[
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
const LOCK_FRAMES: &[&str] = &[
    "profiled::",
    "<profiled::",
    "core::ptr::drop_in_place<profiled::",
    "std::sync::",
    "<std::sync::",
    "std::sys::",
    "core::ptr::drop_in_place<std::sync::",
    // profiled::sync::parking_lot's locks are lock_api's over parking_lot's.
    "lock_api::",
    "<lock_api::",
    "core::ptr::drop_in_place<lock_api::",
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
    trim: &[],
};

impl Kind {
    /// Whether a frame of function `name` is one this kind trims from the top of stacks:
    /// its name, or for a trait impl `<T as Trait>` the trait's, starts with one of `trim`.
    pub(crate) fn trims(&self, name: &str) -> bool {
        let by_trait = name
            .strip_prefix('<')
            .and_then(|n| n.split_once(" as "))
            .map(|(_, t)| t);
        self.trim
            .iter()
            .any(|p| name.starts_with(p) || by_trait.is_some_and(|t| t.starts_with(p)))
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
            assert!(HEAP.trims(name), "{name}");
        }
        for name in [
            "app::parse",
            "<app::Doc as core::clone::Clone>::clone",
            "std::collections::hash::map::HashMap<K,V,S>::insert",
            "allocator_api2::boxed::Box::new",
        ] {
            assert!(!HEAP.trims(name), "{name}");
        }
        assert!(!CPU.trims("alloc::raw_vec::finish_grow"));
    }
}
