//! Kinds of profile: the list of them ([`Kind`]), and the shapes every kind's module fills
//! in: its [`Format`] (sample types, trims, headline), its running session ([`Running`],
//! with the [`Controls`] that `reset()` and `pause()` reach) and its finished data
//! ([`Recorded`], which gives a [`Finished`] per kind).
//!
//! A kind's module knows nothing of reports, symbols or pprof: src/report.rs turns a
//! `Finished` into a `Report`, and src/session.rs starts and stops the sources.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Repr};
use crate::stack::Thread;

/// A kind of profile: what `PROFILE` names, and what a [`Report`](crate::Report) holds.
///
/// ```
/// use profiled::Kind;
/// let kind: Kind = "heap".parse().unwrap();
/// assert_eq!(kind, Kind::Heap);
/// assert_eq!(kind.to_string(), "heap");
/// assert!("heep".parse::<Kind>().unwrap_err().to_string().contains("accepted: cpu, heap"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// CPU time, sampled: Go's `-cpuprofile`.
    Cpu,
    /// Sampled allocations still live (and allocated), unbiased: Go's `-memprofile`.
    Heap,
    /// The same data as `Heap`, shown by bytes allocated: Go's `allocs` profile.
    Allocs,
    /// Waits for `profiled::sync` locks and condition variables: Go's `-blockprofile`.
    Block,
    /// Unlocks that kept others waiting: Go's `-mutexprofile`.
    Mutex,
    /// Every thread on wall time, running or waiting: fgprof's profile.
    Wall,
    /// Calls of a test hook: a kind built for profiled's own unit tests (src/tally.rs).
    #[cfg(test)]
    Tally,
}

impl Kind {
    /// Every kind, in the order `PROFILE`'s documentation lists them.
    ///
    /// ```
    /// assert_eq!(profiled::Kind::ALL.len(), 6);
    /// ```
    pub const ALL: &'static [Kind] = &[
        Kind::Cpu,
        Kind::Heap,
        Kind::Allocs,
        Kind::Block,
        Kind::Mutex,
        Kind::Wall,
    ];

    /// Its name in `PROFILE` and in file names (`<test>.<name>.pb.gz`).
    ///
    /// ```
    /// assert_eq!(profiled::Kind::Mutex.name(), "mutex");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Heap => "heap",
            Kind::Allocs => "allocs",
            Kind::Block => "block",
            Kind::Mutex => "mutex",
            Kind::Wall => "wall",
            #[cfg(test)]
            Kind::Tally => "tally",
        }
    }

    /// The kind called `name`.
    pub(crate) fn find(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|k| k.name() == name)
    }

    /// Every kind's name, for error messages (a test checks it against [`Kind::ALL`]).
    pub(crate) const NAMES: &'static str = "cpu, heap, allocs, block, mutex, wall";
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Kind, Error> {
        Kind::find(s.trim()).ok_or_else(|| {
            Error::from(Repr::Config {
                var: "kind",
                item: s.to_string(),
                reason: "is not a kind of profile profiled takes".into(),
                accepted: Kind::NAMES,
            })
        })
    }
}

/// One value each sample of a kind carries: pprof's `ValueType`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ValueType {
    pub kind: &'static str,
    pub unit: &'static str,
}

/// How a kind's samples are laid out and read: pprof's sample and period types, the value
/// that ranks, the frames to trim, the summary's headline. Each kind's module defines its
/// own.
#[derive(Debug)]
pub(crate) struct Format {
    /// Its name in file names and pprof's comments (a [`Kind`]'s, or the endpoint's
    /// `threads`).
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
    /// The summary line's figures after the profile's name (`cpu 1.82s  1820 samples`).
    pub headline: fn(&Figures<'_>) -> String,
}

impl PartialEq for Format {
    fn eq(&self, other: &Format) -> bool {
        self.name == other.name
    }
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

impl Format {
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

/// What a finished session of any kind hands the encoder.
pub(crate) struct Samples<'a> {
    pub format: &'static Format,
    /// Stacks (leaf first, raw addresses) with their values in `format.sample_types` order.
    pub rows: Vec<Row<'a>>,
    /// Values that belong to no stack, shown under a placeholder frame of that name
    /// (samples lost to a full buffer).
    pub placeholders: Vec<(&'static str, Vec<i64>)>,
    /// What one sample stood for, in `format.period_type` units.
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

impl Samples<'_> {
    /// Each sample type's total over rows and placeholders (what the encoder's totals are).
    pub(crate) fn totals(&self) -> Vec<i64> {
        let mut totals = vec![0i64; self.format.sample_types.len()];
        let values = self
            .rows
            .iter()
            .map(|r| &r.values)
            .chain(self.placeholders.iter().map(|p| &p.1));
        for v in values {
            for (t, x) in totals.iter_mut().zip(v) {
                *t = t.saturating_add(*x);
            }
        }
        totals
    }
}

/// A finished profile of one kind, as plain data: its samples, and what its report says
/// about them. src/report.rs symbolizes and encodes it.
pub(crate) struct Finished<'a> {
    pub samples: Samples<'a>,
    /// pprof comments after the profile's name.
    pub comments: Vec<String>,
    /// Why the profile may not show what the user expects, and what to do about it.
    pub note: Option<String>,
    /// What [`Report::samples`](crate::Report::samples) says.
    pub count: u64,
    /// Every event recorded: the values are counts, not estimates.
    pub exact: bool,
    /// Samples lost because a buffer was full.
    pub lost: u64,
    /// What else the user should hear about how it was taken.
    pub notices: Vec<Notice>,
}

impl<'a> Finished<'a> {
    /// A finished profile with nothing to add to its samples.
    pub(crate) fn new(samples: Samples<'a>, count: u64) -> Finished<'a> {
        Finished {
            samples,
            comments: Vec::new(),
            note: None,
            count,
            exact: false,
            lost: 0,
            notices: Vec::new(),
        }
    }
}

/// What the user should hear about a finished profile, beyond its summary line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notice {
    /// Said once per process (the same cause would repeat for every test), or `None`: said
    /// for each profile.
    pub once: Option<&'static str>,
    pub text: String,
    /// About the machine rather than the code (a system library's missing debug file):
    /// printed only with `verbose`.
    pub minor: bool,
}

/// The figures a headline is made of.
pub(crate) struct Figures<'a> {
    pub format: &'static Format,
    /// Each sample type's total, in the format's order.
    pub totals: &'a [i64],
    pub count: u64,
    pub exact: bool,
}

impl Figures<'_> {
    /// The total of sample type `name`, `None` for one the format lacks.
    pub(crate) fn get(&self, name: &str) -> Option<i64> {
        let i = self
            .format
            .sample_types
            .iter()
            .position(|t| t.kind == name)?;
        self.totals.get(i).copied()
    }

    /// The total of sample type `name` (0 for one the format lacks).
    pub(crate) fn total(&self, name: &str) -> i64 {
        self.get(name).unwrap_or(0)
    }

    /// `~` before an estimate, nothing before an exact figure.
    pub(crate) fn about(&self) -> &'static str {
        if self.exact { "" } else { "~" }
    }
}

/// What `reset()`, `pause()` and a profile's liveness check reach of a running session,
/// by its id: functions, so that a thread's current profile is plain `Copy` data.
pub(crate) struct Controls {
    pub reset: fn(u64),
    pub pause: fn(u64),
    pub resume: fn(u64),
    pub is_live: fn(u64) -> bool,
}

/// A source's session while it records (src/session.rs holds them).
pub(crate) trait Running: Send {
    /// Its id, which its [`Controls`] take.
    fn sid(&self) -> u64;
    fn controls(&self) -> &'static Controls;
    /// Stops recording; what was recorded.
    fn finish(self: Box<Self>) -> Box<dyn Recorded>;
}

/// What a source recorded, for each of its kinds.
pub(crate) trait Recorded {
    /// The finished profile of `kind`, one of its source's.
    fn finished(&self, kind: Kind) -> Finished<'_>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_words_listed_once() {
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.join(", "), Kind::NAMES);
        for &kind in Kind::ALL {
            assert!(
                kind.name().bytes().all(|b| b.is_ascii_lowercase()),
                "{kind}: a kind's name is a lower-case word, in PROFILE and in file names"
            );
            assert_eq!(kind.name().parse::<Kind>().unwrap(), kind);
        }
        assert_eq!(Kind::find("nope"), None);
    }
}
