//! The report: every kind's finished data made into a [`Report`], the one place where
//! symbolization and encoding run, and its publishing (file, SVG, summary line, notes) for
//! tests, criterion, the harness and the endpoint alike.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::error::Error;
use crate::{aggregate, contention, encode, heap, kind, output, sampler, stack, symbolize, wall};

/// A finished CPU session's report.
pub(crate) fn finish_cpu(name: &str, config: &Config, session: sampler::Session) -> Report {
    let mut collected = session.finish();
    let calibration = aggregate::calibrate(&mut collected);
    let mut comments = vec![
        format!("profiled: {name}"),
        format!(
            "sampler: {} at {} Hz requested; each sample weighs the CPU time since the \
                 thread's previous sample",
            collected.source.name(),
            config.frequency
        ),
    ];
    if collected.sampling_ns != collected.period_ns {
        // Said so that a reader comparing sample counts with the rate asked for is not
        // puzzled (src/sys/linux/engine.rs `apart`).
        comments.push(format!(
            "sampled at {:.0} Hz: other profiles were running, and periods \
             apart keep their signals from falling due together",
            1e9 / collected.sampling_ns.max(1) as f64
        ));
    }
    if collected.lost > 0 {
        comments.push(format!(
            "{} samples ({:.3}s CPU) lost: the sample buffer was full; they are under {}",
            collected.lost,
            collected.lost_ns as f64 / 1e9,
            stack::LOST_FUNCTION
        ));
    }
    comments.extend(calibration);
    if collected.truncated > 0 {
        comments.push(format!(
            "{} samples kept with their leaf frame only",
            collected.truncated
        ));
    }
    if collected.cut > 0 {
        comments.push(format!(
            "{} samples had stacks deeper than {} frames: their middle frames are left \
                 out, marked by {}",
            collected.cut,
            stack::MAX_DEPTH,
            stack::TRUNCATED_FUNCTION
        ));
    }
    let (encoded, unreadable) = symbolize::with(|sym| {
        let encoded = encode::encode(&collected.samples(), &comments, sym);
        (encoded, sym.take_notices())
    });
    // The CPU kind's values: [samples, CPU ns].
    let total = |i: usize| u64::try_from(encoded.totals[i]).unwrap_or(0);
    let (samples, cpu_ns) = (total(0), total(1));
    let mut notices = aggregate::notices(name, &collected, config.frequency, samples, cpu_ns);
    notices.extend(
        unreadable
            .into_iter()
            .map(|text| aggregate::Notice { once: None, text }),
    );
    Report {
        name: name.to_string(),
        kind: &kind::CPU,
        totals: encoded.totals,
        gz: encoded.gz,
        samples,
        cpu: Duration::from_nanos(cpu_ns),
        top: encoded.top,
        folded: encoded.folded,
        lost: collected.lost,
        start: collected.start,
        wall: collected.duration,
        note: aggregate::where_cpu_went(
            collected.active,
            cpu_ns,
            collected.process_cpu_ns,
            config.threads,
            collected.source,
        ),
        notices,
        exact: true,
    }
}

/// A finished heap session's report as `kind` (heap or allocs: the same data).
pub(crate) fn heap_report(
    name: &str,
    kind: &'static kind::Kind,
    recorded: &heap::Recorded,
) -> Report {
    let comments = [
        format!("profiled: {name}"),
        if recorded.rate <= 1 {
            "heap: every allocation recorded (heap_rate=1)".to_string()
        } else {
            format!(
                "heap: allocations sampled once per {} bytes on average (a Poisson process \
                 over bytes, as Go's), values unbiased as Go's",
                recorded.rate
            )
        },
    ];
    let count = recorded
        .buckets
        .iter()
        .map(|b| b.allocs.max(0) as u64)
        .sum();
    // An empty sampled profile is not "allocated nothing": say what it means.
    let note = (count == 0 && recorded.rate > 1).then(|| {
        format!(
            "no allocation was sampled: heap profiles sample one allocation per {} allocated \
             on average, as Go's do, so a test that allocates less is rarely caught; \
             heap_rate=1 records every allocation (PROFILE=heap,heap_rate=1)",
            output::bytes(i64::try_from(recorded.rate).unwrap_or(i64::MAX))
        )
    });
    report_of(
        name,
        &recorded.samples(kind),
        &comments,
        count,
        note,
        recorded.rate <= 1,
    )
}

/// The report of a finished session of any kind but CPU: its samples symbolized and
/// encoded; `count` is what [`Report::samples`] says.
fn report_of(
    name: &str,
    samples: &kind::Samples<'_>,
    comments: &[String],
    count: u64,
    note: Option<String>,
    exact: bool,
) -> Report {
    let (encoded, unreadable) = symbolize::with(|sym| {
        let encoded = encode::encode(samples, comments, sym);
        (encoded, sym.take_notices())
    });
    Report {
        name: name.to_string(),
        kind: samples.kind,
        samples: count,
        cpu: Duration::ZERO,
        gz: encoded.gz,
        top: encoded.top,
        folded: encoded.folded,
        totals: encoded.totals,
        lost: 0,
        start: samples.start,
        wall: samples.duration,
        note,
        notices: unreadable
            .into_iter()
            .map(|text| aggregate::Notice { once: None, text })
            .collect(),
        exact,
    }
}

/// A finished wall-clock session's report.
pub(crate) fn wall_report(name: &str, recorded: &wall::Recorded) -> Report {
    let comments = [
        format!("profiled: {name}"),
        format!(
            "wall: every thread of the test sampled {} times a second of wall time, running \
             or not; label state=running|waiting (go tool pprof -tagfocus=state=waiting)",
            recorded.frequency
        ),
    ];
    let (waiting, total) = recorded.waiting_and_total();
    let note = (total > 0).then(|| {
        format!(
            "{:.0}% of the sampled threads' wall time was spent waiting (state=waiting)",
            100.0 * waiting as f64 / total as f64
        )
    });
    let count = recorded.rows.iter().map(|r| r.3.max(0) as u64).sum();
    report_of(
        name,
        &recorded.samples(&kind::WALL),
        &comments,
        count,
        note,
        false,
    )
}

/// A finished contention session's report as `kind` (block or mutex).
pub(crate) fn contention_report(
    name: &str,
    kind: &'static kind::Kind,
    recorded: &contention::Recorded,
) -> Report {
    let mutex = kind.name == kind::MUTEX.name;
    let comments = [
        format!("profiled: {name}"),
        if mutex {
            format!(
                "mutex: unlocks of profiled::sync locks that kept others waiting, with the \
                 waiting each caused; one event in {} kept, values scaled up by as much \
                 (mutex_fraction)",
                recorded.mutex_fraction
            )
        } else {
            format!(
                "block: waits for profiled::sync locks and condition variables; events \
                 shorter than {} ns kept in proportion and scaled up (block_rate, as Go's)",
                recorded.block_rate
            )
        },
    ];
    let samples = recorded.samples(kind);
    let exact = if mutex {
        recorded.mutex_fraction <= 1
    } else {
        recorded.block_rate <= 1
    };
    let count = samples.rows.len() as u64;
    report_of(name, &samples, &comments, count, None, exact)
}

/// A finished CPU profile: the encoded pprof file and its headline figures.
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// let report = profiled::Profile::start("r", &profiled::Config::default()).unwrap().finish().unwrap();
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("r.cpu.pb.gz");
/// report.write(&path).unwrap();
/// assert!(report.summary_line(Some(&path)).starts_with("profiled: r  cpu "));
/// # }
/// ```
#[derive(Clone)]
pub struct Report {
    name: String,
    kind: &'static kind::Kind,
    /// Each sample type's total, in the kind's order.
    totals: Vec<i64>,
    /// Heap kinds: every allocation recorded, no estimate.
    exact: bool,
    gz: Vec<u8>,
    samples: u64,
    cpu: Duration,
    top: Option<(String, f64)>,
    folded: Vec<(String, u64)>,
    lost: u64,
    start: SystemTime,
    wall: Duration,
    /// Why the profile may not show what the user expects, and what to do about it.
    note: Option<String>,
    /// What else the user should hear (perf refused, rate short, samples lost).
    notices: Vec<aggregate::Notice>,
}

impl Report {
    /// The profile's name.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("n", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.name(), "n");
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of profile: `cpu`, `heap` or `allocs`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("k", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.kind(), "cpu");
    /// # }
    /// ```
    pub fn kind(&self) -> &'static str {
        self.kind.name
    }

    /// The total of one of the kind's sample types over the whole profile (`cpu`,
    /// `samples`; `alloc_space`, `alloc_objects`, `inuse_space`, `inuse_objects`), `None`
    /// for a type the kind does not have. Heap values are Go's unbiased estimates unless
    /// `heap_rate=1`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("t", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert_eq!(r.total("cpu"), Some(r.cpu_time().as_nanos() as i64));
    /// assert_eq!(r.total("inuse_space"), None);
    /// # }
    /// ```
    pub fn total(&self, sample_type: &str) -> Option<i64> {
        let i = self
            .kind
            .sample_types
            .iter()
            .position(|t| t.kind == sample_type)?;
        self.totals.get(i).copied()
    }

    /// The gzipped pprof protobuf.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("g", &profiled::Config::default()).unwrap().finish().unwrap();
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
    /// let r = profiled::Profile::start("s", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.samples() < 10, "nothing ran");
    /// # }
    /// ```
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Total CPU time in the profile (zero for other kinds).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("c", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.cpu_time() < std::time::Duration::from_secs(1));
    /// # }
    /// ```
    pub fn cpu_time(&self) -> Duration {
        self.cpu
    }

    /// Samples lost because the sample buffer was full.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let r = profiled::Profile::start("l", &profiled::Config::default()).unwrap().finish().unwrap();
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
    /// let r = profiled::Profile::start("t", &profiled::Config::default()).unwrap().finish().unwrap();
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
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.wall_time().1 < std::time::Duration::from_secs(10));
    /// # }
    /// ```
    pub fn wall_time(&self) -> (SystemTime, Duration) {
        (self.start, self.wall)
    }

    /// Why the profile may not hold what you expect (far less CPU than wall time, threads
    /// it could not sample), and what to do; printed under the summary line.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("waits", &profiled::Config::default()).unwrap();
    /// std::thread::sleep(std::time::Duration::from_millis(100));
    /// let r = p.finish().unwrap();
    /// assert!(r.note().unwrap().contains("the test mostly waited"));
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
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap();
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
    /// let r = profiled::Profile::start("w", &profiled::Config::default()).unwrap().finish().unwrap();
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
    /// let r = profiled::Profile::start("f", &profiled::Config::default()).unwrap().finish().unwrap();
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
    /// let r = profiled::Profile::start("svg", &profiled::Config::default()).unwrap().finish().unwrap();
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
    pub(crate) fn publish(&self, path: &Path, svg: Option<&Path>) -> Result<(), Error> {
        self.write(path)?;
        for notice in &self.notices {
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
    /// let r = profiled::Profile::start("x", &profiled::Config::default()).unwrap().finish().unwrap();
    /// assert!(r.summary_line(None).contains(" samples"));
    /// # }
    /// ```
    pub fn summary_line(&self, path: Option<&Path>) -> String {
        let mut line = if self.kind.name == "cpu" {
            format!(
                "profiled: {}  cpu {:.2}s  {} samples",
                self.name,
                self.cpu.as_secs_f64(),
                self.samples
            )
        } else if self.kind.name == "wall" {
            format!(
                "profiled: {}  wall {:.2}s over {} samples",
                self.name,
                Duration::from_nanos(self.total("wall").unwrap_or(0).max(0) as u64).as_secs_f64(),
                self.samples
            )
        } else if self.kind.name == "block" || self.kind.name == "mutex" {
            let about = if self.exact { "" } else { "~" };
            let total = |t| self.total(t).unwrap_or(0);
            let what = if self.kind.name == "block" {
                "waiting in"
            } else {
                "of waiting caused by"
            };
            let contentions = total("contentions");
            format!(
                "profiled: {}  {} {about}{:.3}s {what} {about}{contentions} contention{}",
                self.name,
                self.kind.name,
                Duration::from_nanos(total("delay").max(0) as u64).as_secs_f64(),
                if contentions == 1 { "" } else { "s" },
            )
        } else {
            let about = if self.exact { "" } else { "~" };
            let total = |t| self.total(t).unwrap_or(0);
            let allocations = total("alloc_objects");
            format!(
                "profiled: {}  {} {about}{} allocated in {about}{allocations} allocation{}, \
                 {about}{} in use",
                self.name,
                self.kind.name,
                output::bytes(total("alloc_space")),
                if allocations == 1 { "" } else { "s" },
                output::bytes(total("inuse_space")),
            )
        };
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
            .field("samples", &self.samples)
            .field("cpu", &self.cpu)
            .field("top", &self.top)
            .finish_non_exhaustive()
    }
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
