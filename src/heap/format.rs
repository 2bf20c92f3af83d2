//! The heap kinds' format: Go's heap sample types, the allocator frames trimmed from
//! every stack, and the summary's headline.

#![forbid(unsafe_code)]

use crate::kind::{Figures, Format, PROFILED_SOURCES, Trim, ValueType};
use crate::output;

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
pub(crate) const HEAP: Format = Format {
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
    headline,
};

/// The same data as [`HEAP`] with `alloc_space` shown by default (Go's `allocs` profile).
pub(crate) const ALLOCS: Format = Format {
    name: "allocs",
    default: 1,
    ..HEAP
};

/// `heap ~1.2 MiB allocated in ~30 allocations, ~0 B in use`.
fn headline(f: &Figures<'_>) -> String {
    let about = f.about();
    let allocations = f.total("alloc_objects");
    format!(
        "{} {about}{} allocated in {about}{allocations} allocation{}, {about}{} in use",
        f.format.name,
        output::bytes(f.total("alloc_space")),
        if allocations == 1 { "" } else { "s" },
        output::bytes(f.total("inuse_space")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        }
        // The user's code stays.
        assert!(!HEAP.trims("parse", "/home/me/app/src/parse.rs"));
        assert!(!HEAP.trims("parse", ""));
        // A program's own hashbrown (from a registry) is its own code.
        assert!(!HEAP.trims(
            "hashbrown::raw::alloc::inner::do_alloc",
            "/home/me/.cargo/registry/src/index.crates.io-1/hashbrown-0.15.2/src/raw/alloc.rs"
        ));
    }
}
