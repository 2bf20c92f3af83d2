//! The report: every kind's finished data made into a [`Report`], the one place where
//! symbolization and encoding run, and its publishing (file, SVG, summary line, notes) for
//! tests, criterion, the harness and the endpoint alike.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::kind::{Figures, Finished, Format, Kind, Notice};
use crate::{encode, output, symbolize};

/// `samples` symbolized and encoded as gzipped pprof with `comments`: for profiles that
/// are no [`Report`] (the endpoint's snapshot of every thread).
#[cfg(feature = "http")]
pub(crate) fn pprof(samples: &crate::kind::Samples<'_>, comments: &[String]) -> Vec<u8> {
    symbolize::with(|sym| encode::encode(samples, comments, sym)).gz
}

/// A finished profile of one kind: the encoded pprof file and its headline figures.
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// let report = profiled::Profile::start("r", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("r.cpu.pb.gz");
/// report.write(&path).unwrap();
/// assert!(report.summary_line(Some(&path)).starts_with("profiled: r  cpu "));
/// # }
/// ```
#[derive(Clone)]
pub struct Report {
    name: String,
    kind: Kind,
    format: &'static Format,
    /// Each sample type's total, in the kind's order.
    totals: Vec<i64>,
    /// Heap kinds: every allocation recorded, no estimate.
    exact: bool,
    gz: Vec<u8>,
    samples: u64,
    top: Option<(String, f64)>,
    folded: Vec<(String, u64)>,
    lost: u64,
    start: SystemTime,
    wall: Duration,
    /// Why the profile may not show what the user expects, and what to do about it.
    note: Option<String>,
    /// What else the user should hear (perf refused, rate short, samples lost).
    notices: Vec<Notice>,
}

impl Report {
    /// A finished profile of `kind`, symbolized and encoded: the one place where that
    /// happens, for every kind and every integration.
    pub(crate) fn new(name: &str, kind: Kind, finished: Finished<'_>) -> Report {
        let mut comments = vec![format!("profiled: {name}")];
        comments.extend(finished.comments);
        let (encoded, unreadable) = symbolize::with(|sym| {
            let encoded = encode::encode(&finished.samples, &comments, sym);
            (encoded, sym.take_notices())
        });
        let notices = finished
            .notices
            .into_iter()
            .map(|n| match n.once {
                Some(_) => n,
                None => Notice {
                    text: format!("{name}: {}", n.text),
                    ..n
                },
            })
            .chain(unreadable)
            .collect();
        Report {
            name: name.to_string(),
            kind,
            format: finished.samples.format,
            totals: encoded.totals,
            exact: finished.exact,
            gz: encoded.gz,
            samples: finished.count,
            top: encoded.top,
            folded: encoded.folded,
            lost: finished.lost,
            start: finished.samples.start,
            wall: finished.samples.duration,
            note: finished.note,
            notices,
        }
    }

    /// The profile's name.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("n", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert_eq!(r.name(), "n");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of profile.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("k", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert_eq!(r.kind(), profiled::Kind::Cpu);
    /// # }
    /// ```
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The total of one of the kind's sample types over the whole profile (`cpu`,
    /// `samples`; `alloc_space`, `alloc_objects`, `inuse_space`, `inuse_objects`), `None`
    /// for a type the kind does not have. Heap values are Go's unbiased estimates unless
    /// `heap_rate=1`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("t", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert_eq!(r.total("cpu"), Some(r.cpu_time().unwrap().as_nanos() as i64));
    /// assert_eq!(r.total("inuse_space"), None);
    /// # }
    /// ```
    pub fn total(&self, sample_type: &str) -> Option<i64> {
        self.figures().get(sample_type)
    }

    /// What the headline and the totals are read from.
    fn figures(&self) -> Figures<'_> {
        Figures {
            format: self.format,
            totals: &self.totals,
            count: self.samples,
            exact: self.exact,
        }
    }

    /// The gzipped pprof protobuf.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("g", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert_eq!(&r.pprof_gz()[..2], &[0x1f, 0x8b]);
    /// # }
    /// ```
    pub fn pprof_gz(&self) -> &[u8] {
        &self.gz
    }

    /// Number of samples in the profile (lost ones included); for heap kinds, of sampled
    /// allocations.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("s", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert!(r.samples() < 10, "nothing ran");
    /// # }
    /// ```
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Total CPU time in a CPU profile; `None` for other kinds.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("c", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert!(r.cpu_time().unwrap() < std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn cpu_time(&self) -> Option<Duration> {
        (self.kind == Kind::Cpu)
            .then(|| Duration::from_nanos(self.total("cpu").unwrap_or(0).max(0) as u64))
    }

    /// Samples lost because the sample buffer was full.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("l", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert_eq!(r.lost_samples(), 0);
    /// # }
    /// ```
    pub fn lost_samples(&self) -> u64 {
        self.lost
    }

    /// The function with the most CPU time of its own, and its share of the total.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("t", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// if let Some((name, share)) = r.top_function() { assert!(!name.is_empty() && share <= 1.0); }
    /// # }
    /// ```
    pub fn top_function(&self) -> Option<(&str, f64)> {
        self.top.as_ref().map(|(n, s)| (n.as_str(), *s))
    }

    /// Wall-clock start and length of the profile.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert!(r.wall_time().1 < std::time::Duration::from_secs(10));
    /// # }
    /// ```
    pub fn wall_time(&self) -> (SystemTime, Duration) {
        (self.start, self.wall)
    }

    /// The total of the kind's main value, in its unit: CPU, wall or waiting time in
    /// seconds, bytes allocated (the harness's table).
    #[cfg_attr(not(feature = "harness"), allow(dead_code))]
    pub(crate) fn main_total(&self) -> String {
        let main = self.format.main;
        let total = self.totals.get(main).copied().unwrap_or(0);
        match self.format.sample_types.get(main).map(|t| t.unit) {
            Some("nanoseconds") if total >= 1_000_000_000 => format!("{:.2}s", total as f64 / 1e9),
            Some("nanoseconds") => format!("{:.3}s", total as f64 / 1e9),
            Some("bytes") => output::bytes(total),
            _ => total.to_string(),
        }
    }

    /// Why the profile may not hold what you expect (far less CPU than wall time, threads
    /// it could not sample), and what to do; printed under the summary line.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("waits", &profiled::Config::default()).unwrap();
    /// // Some work (tens of milliseconds of CPU, however loaded the machine), then waiting.
    /// let mut x = 0u64;
    /// for i in 0..10_000_000u64 {
    ///     x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
    /// }
    /// std::thread::sleep(std::time::Duration::from_millis(500));
    /// let r = p.finish().unwrap().remove(0);
    /// // "only 0.05s of CPU in 0.55s of wall time: the test mostly waited ..."
    /// assert!(r.note().unwrap().contains("s of CPU in"));
    /// # }
    /// ```
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Warnings about how the profile was taken: perf events refused (the timer was used),
    /// a delivered rate far below the one asked for, samples lost. `#[profiled]`, the
    /// harness and criterion print them (the per-process ones once); code that writes its
    /// own profiles can print or log them.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// for warning in r.warnings() {
    ///     eprintln!("{warning}");
    /// }
    /// # }
    /// ```
    pub fn warnings(&self) -> impl Iterator<Item = &str> {
        self.notices.iter().map(|n| n.text.as_str())
    }

    /// Writes the profile atomically (temporary file, then rename), creating directories.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// let dir = tempfile::tempdir().unwrap();
    /// r.write(&dir.path().join("deep/dir/w.pb.gz")).unwrap();
    /// # }
    /// ```
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        output::write_atomic(path, &self.gz)
    }

    /// Stacks in the folded format (`outer;...;leaf`) with their CPU time in microseconds,
    /// the input of flamegraph tools such as inferno.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("f", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// for (stack, micros) in r.folded_stacks() { assert!(!stack.is_empty()); let _ = micros; }
    /// # }
    /// ```
    pub fn folded_stacks(&self) -> impl Iterator<Item = (&str, u64)> {
        self.folded.iter().map(|(s, w)| (s.as_str(), *w))
    }

    /// Writes an SVG flamegraph of the profile (atomically), widths proportional to CPU time.
    /// A profile without samples gets an SVG that says so.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("svg", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// let dir = tempfile::tempdir().unwrap();
    /// r.write_flamegraph(&dir.path().join("svg.cpu.svg")).unwrap();
    /// # }
    /// ```
    #[cfg(feature = "flamegraph")]
    pub fn write_flamegraph(&self, path: &Path) -> Result<(), Error> {
        let svg = crate::flamegraph::render(&self.name, &self.folded);
        output::write_atomic(path, &svg)
    }

    /// Writes the profile to `path` (and, with the `flamegraph` feature, an SVG to `svg`),
    /// then prints the summary line: what every integration does with a finished profile.
    /// Notices about the machine rather than the code are printed only when `verbose`.
    pub(crate) fn publish(
        &self,
        path: &Path,
        svg: Option<&Path>,
        verbose: bool,
    ) -> Result<(), Error> {
        self.write(path)?;
        for notice in printed(&self.notices, verbose) {
            if notice.once.is_none_or(first_time) {
                output::notice(&notice.text);
            }
        }
        let mut text = self.summary_line(Some(path));
        #[cfg(feature = "flamegraph")]
        if let Some(svg) = svg {
            self.write_flamegraph(svg)?;
            text += &format!(", {}", output::display_path(svg));
        }
        #[cfg(not(feature = "flamegraph"))]
        let _ = svg;
        if let Some(note) = &self.note {
            text += &format!("\nprofiled: {}: note: {note}", self.name);
        }
        output::line(&text);
        Ok(())
    }

    /// `profiled: NAME  cpu 1.82s  1820 samples  top: FN (61%)  -> PATH`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("x", &profiled::Config::default()).unwrap().finish().unwrap().remove(0);
    /// assert!(r.summary_line(None).contains(" samples"));
    /// # }
    /// ```
    pub fn summary_line(&self, path: Option<&Path>) -> String {
        let headline = (self.format.headline)(&self.figures());
        let mut line = format!("profiled: {}  {headline}", self.name);
        match &self.top {
            Some((name, share)) => line += &format!("  top: {name} ({:.0}%)", share * 100.0),
            None => line += "  top: -",
        }
        if self.lost > 0 {
            line += &format!("  lost {}", self.lost);
        }
        if let Some(path) = path {
            line += &format!("  -> {}", output::display_path(path));
        }
        line
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Report")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("samples", &self.samples)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
}

/// The notices [`Report::publish`] prints: every one with `verbose`, else those about the
/// code (not a system library's missing debug file, which nobody can act on in a test run).
fn printed(notices: &[Notice], verbose: bool) -> impl Iterator<Item = &Notice> {
    notices.iter().filter(move |n| verbose || !n.minor)
}

/// Whether a once-per-process notice of kind `kind` has not been printed yet (and now is).
fn first_time(kind: &'static str) -> bool {
    static SAID: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    if said.contains(&kind) {
        return false;
    }
    said.push(kind);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_notices_are_printed_only_when_verbose() {
        let notice = |text: &str, minor| Notice {
            once: None,
            text: text.into(),
            minor,
        };
        let notices = [
            notice("/lib/libgcc_s.so.1: its debug info was moved", true),
            notice("the program: its debug info is split", false),
        ];
        let texts = |verbose| -> Vec<&str> {
            printed(&notices, verbose)
                .map(|n| n.text.as_str())
                .collect()
        };
        assert_eq!(texts(false), ["the program: its debug info is split"]);
        assert_eq!(texts(true).len(), 2);
    }
}
