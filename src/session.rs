//! The session: a [`Profile`] holds one session per source its kinds need (the CPU sampler,
//! the heap hooks, the lock recorder, the wall sampler), the thread's current profile that
//! `reset()`, `pause()` and `unprofiled()` reach, and [`Remote`] for code that cannot hold
//! the profile (criterion's measurement). Finishing hands each session's data to
//! src/report.rs.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::fmt;

use crate::config::Config;
#[cfg(feature = "http")]
use crate::config::Threads;
use crate::error::{Error, Repr};
use crate::kind::{self, Controls, Format, Kind, Running};
use crate::report::Report;
use crate::{aggregate, contention, heap, membership, sampler, wall};

/// A source of samples, with the kinds it records.
struct Source {
    /// Each kind it records, with its format.
    kinds: &'static [(Kind, &'static Format)],
    /// Starts a session for the kinds `config` asks of it.
    start: fn(&Config) -> Result<Box<dyn Running>, Error>,
}

/// Every source, in the order a profile starts them. Adding a kind is its module, its
/// [`Kind`] variant and its entry here: nothing else names it.
const SOURCES: &[Source] = &[
    Source {
        kinds: &[
            (Kind::Block, &contention::BLOCK),
            (Kind::Mutex, &contention::MUTEX),
        ],
        start: contention::start,
    },
    Source {
        kinds: &[(Kind::Wall, &wall::WALL)],
        start: wall::start,
    },
    Source {
        kinds: &[(Kind::Cpu, &aggregate::CPU)],
        start: sampler::start,
    },
    // Last: a heap session must not see profiled's own allocations of the others' starts.
    // Finishing goes the other way, so it stops first: building reports allocates.
    Source {
        kinds: &[(Kind::Heap, &heap::HEAP), (Kind::Allocs, &heap::ALLOCS)],
        start: heap::start,
    },
    #[cfg(test)]
    Source {
        kinds: &[(Kind::Tally, &crate::tally::TALLY)],
        start: crate::tally::start,
    },
];

/// The source that records `kind`.
fn source_of(kind: Kind) -> Option<usize> {
    SOURCES
        .iter()
        .position(|s| s.kinds.iter().any(|(k, _)| *k == kind))
}

/// One running session, as `reset()`, `pause()` and a [`Remote`] reach it.
#[derive(Clone, Copy)]
struct Handle {
    sid: u64,
    controls: &'static Controls,
}

/// The sessions of one profile, one per source at most: plain data, so that a thread's
/// current profile is a `Cell`.
#[derive(Clone, Copy, Default)]
struct Handles([Option<Handle>; SOURCES.len()]);

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().flatten().map(|h| h.sid))
            .finish()
    }
}

thread_local! {
    /// The sessions of the profile this thread started, none for none.
    static CURRENT: Cell<Handles> = const { Cell::new(Handles([None; SOURCES.len()])) };
}

impl Handles {
    fn each(self, f: impl Fn(&Controls, u64)) {
        for h in self.0.iter().flatten() {
            f(h.controls, h.sid);
        }
    }
    fn is_none(self) -> bool {
        self.0.iter().all(Option::is_none)
    }
    fn is_live(self) -> bool {
        self.0.iter().flatten().any(|h| (h.controls.is_live)(h.sid))
    }
    fn reset(self) {
        self.each(|c, sid| (c.reset)(sid));
    }
    fn pause(self) {
        self.each(|c, sid| (c.pause)(sid));
    }
    fn resume(self) {
        self.each(|c, sid| (c.resume)(sid));
    }
}

/// A profile being collected, of each kind its [`Config`] asks for (CPU by default): the
/// calling thread and, where perf events (CPU) or the allocator wrapper (heap) can follow
/// them, every thread it spawns from now on.
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// use profiled::{Config, Profile};
/// let profile = Profile::start("example", &Config::default()).unwrap();
/// let mut x = 0u64;
/// for i in 0..50_000_000u64 { x = x.wrapping_mul(31).wrapping_add(i); }
/// std::hint::black_box(x);
/// let reports = profile.finish().unwrap();
/// assert!(reports[0].cpu_time().unwrap() > std::time::Duration::ZERO);
/// # }
/// ```
pub struct Profile {
    name: String,
    config: Config,
    /// One session per source its kinds need, by the source's index in [`SOURCES`].
    running: Vec<(usize, Box<dyn Running>)>,
    detached: bool,
}

impl Profile {
    /// Starts profiling the calling thread (with [`Threads::All`](crate::Threads::All), every thread of the
    /// process). `name` ends up in the profile's comments and the summary line. The
    /// config's [`Config::dir`] and [`Config::svg`] are for the files `#[profiled]` and the
    /// harness name; here [`Report::write`] takes the path. Fails on unsupported platforms,
    /// when this thread already profiles, and for [`Threads::All`](crate::Threads::All) while other profiles run.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("a", &profiled::Config::default()).unwrap();
    /// assert!(profiled::Profile::start("b", &profiled::Config::default()).is_err());
    /// drop(p.finish());
    /// # }
    /// ```
    pub fn start(name: impl Into<String>, config: &Config) -> Result<Profile, Error> {
        // A Profile dropped without `finish` releases its slot (sampler::Session's Drop) but
        // leaves CURRENT set; a stale id is harmless (reset/pause check it) and is replaced
        // here.
        let current = CURRENT.with(Cell::get);
        if !current.is_none() && !current.is_live() {
            CURRENT.with(|c| c.set(Handles::default()));
        }
        if !CURRENT.with(Cell::get).is_none() {
            return Err(Error::from(Repr::AlreadyProfiling));
        }
        let profile = Profile::start_detached(name, config)?;
        pause_in_panic_hooks();
        CURRENT.with(|c| c.set(profile.handles()));
        Ok(Profile {
            detached: false,
            ..profile
        })
    }

    /// The sessions, as `reset()` and `pause()` reach them.
    fn handles(&self) -> Handles {
        let mut handles = Handles::default();
        for (source, running) in &self.running {
            if let Some(h) = handles.0.get_mut(*source) {
                *h = Some(Handle {
                    sid: running.sid(),
                    controls: running.controls(),
                });
            }
        }
        handles
    }

    /// Discards everything sampled so far (Go's `b.ResetTimer`, for the profile).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("r", &profiled::Config::default()).unwrap();
    /// p.reset();
    /// p.finish().unwrap();
    /// # }
    /// ```
    pub fn reset(&self) {
        self.handles().reset();
    }

    /// Pauses sampling for this profile until the guard drops.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("p", &profiled::Config::default()).unwrap();
    /// {
    ///     let _paused = p.pause();
    ///     // not in the profile
    /// }
    /// p.finish().unwrap();
    /// # }
    /// ```
    pub fn pause(&self) -> Paused {
        Paused::new(self.handles())
    }

    /// The name given at start.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("named", &profiled::Config::default()).unwrap();
    /// assert_eq!(p.name(), "named");
    /// p.finish().unwrap();
    /// # }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts a profile that is not the thread's current one: `reset()`/`pause()` don't
    /// reach it, and the thread may start its own (the harness's whole-run profile).
    #[cfg_attr(not(feature = "harness"), allow(dead_code))]
    pub(crate) fn start_detached(
        name: impl Into<String>,
        config: &Config,
    ) -> Result<Profile, Error> {
        // What the profile keeps, before any session: a heap session must not see
        // profiled's own allocations.
        let name = name.into();
        let owned = config.clone();
        let mut running = Vec::with_capacity(SOURCES.len());
        for (i, source) in SOURCES.iter().enumerate() {
            if source.kinds.iter().any(|(k, _)| config.wants(*k)) {
                // One that cannot start (the heap's, without the wrapper) drops those
                // started before it, which stops them.
                running.push((i, (source.start)(config)?));
            }
        }
        Ok(Profile {
            name,
            config: owned,
            running,
            detached: true,
        })
    }

    /// Starts a detached profile of every thread of the process that other profiles may
    /// run beside (the `/debug/pprof/profile` endpoint: a service's tests and its endpoint
    /// each get what they ask for).
    #[cfg(feature = "http")]
    pub(crate) fn start_shared(name: impl Into<String>, config: &Config) -> Result<Profile, Error> {
        let cpu = source_of(Kind::Cpu).unwrap_or_default();
        let session = sampler::start_with(config, Threads::All, false)?;
        Ok(Profile {
            name: name.into(),
            config: Config {
                kinds: vec![Kind::Cpu],
                ..config.clone()
            },
            running: vec![(cpu, session)],
            detached: true,
        })
    }

    /// The configuration it was started with.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// A handle that pauses and resumes this profile from anywhere (criterion's measurement
    /// brackets the timed routine with it, far from the `Profile`).
    #[cfg_attr(not(feature = "criterion"), allow(dead_code))]
    pub(crate) fn remote(&self) -> Remote {
        Remote(self.handles())
    }

    /// Stops every kind's session and gives one report per kind, in the order the config
    /// names them.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// #[global_allocator]
    /// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
    ///
    /// use profiled::Kind;
    /// let config = profiled::Config::default().with_kinds([Kind::Cpu, Kind::Heap]).unwrap();
    /// let p = profiled::Profile::start("both", &config).unwrap();
    /// let kept: Vec<Vec<u8>> = (0..100).map(|_| vec![0; 100_000]).collect();
    /// let reports = p.finish().unwrap();
    /// assert_eq!(reports.iter().map(|r| r.kind()).collect::<Vec<_>>(), [Kind::Cpu, Kind::Heap]);
    /// assert!(reports[1].total("inuse_space").unwrap() > 5_000_000);
    /// # drop(kept);
    /// # }
    /// ```
    pub fn finish(self) -> Result<Vec<Report>, Error> {
        if !self.detached {
            CURRENT.with(|c| c.set(Handles::default()));
        }
        if sampler::forked() || membership_forked() {
            // The drain lock may have been held at the fork, by a thread that does not exist
            // here: finishing could hang, and would steal the parent's samples anyway.
            drop(self);
            return Err(Error::from(Repr::Unsupported {
                what: "a profile can only be finished by the process that started it, not by a \
                       child forked from it"
                    .into(),
            }));
        }
        let Profile {
            name,
            config,
            mut running,
            ..
        } = self;
        // Every session stops before any report is built, the last started first: the
        // heap's, which must not see what finishing allocates (this list's first push
        // comes after it stopped).
        let mut recorded = Vec::new();
        while let Some((source, session)) = running.pop() {
            let data = session.finish();
            recorded.push((source, data));
        }
        let reports = config
            .kinds
            .iter()
            .filter_map(|&kind| {
                let source = source_of(kind)?;
                let (_, data) = recorded.iter().find(|(s, _)| *s == source)?;
                Some(Report::new(&name, kind, data.finished(kind)))
            })
            .collect();
        Ok(reports)
    }
}

/// Whether this is a child forked after a session that follows threads started here.
fn membership_forked() -> bool {
    let pid = membership::claimed_by();
    pid != 0 && pid != crate::sys::process_id()
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Pauses and resumes one profile; a no-op once it has finished. Copied into code that cannot
/// hold the [`Profile`] (criterion's measurement).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "criterion"), allow(dead_code))]
pub(crate) struct Remote(Handles);

#[cfg_attr(not(feature = "criterion"), allow(dead_code))]
impl Remote {
    /// Stops recording samples until the matching [`Remote::resume`].
    pub(crate) fn pause(self) {
        self.0.pause();
    }

    /// Ends one [`Remote::pause`].
    pub(crate) fn resume(self) {
        self.0.resume();
    }
}

/// Discards everything sampled so far in the current thread's profile, like Go's
/// `b.ResetTimer()` but for the profile. A no-op outside a profiled test or when profiling is
/// off. Call it from the test's own thread.
///
/// ```
/// profiled::reset(); // not profiling: nothing happens
/// ```
pub fn reset() {
    CURRENT.with(Cell::get).reset();
}

/// Leaves what runs while the returned guard lives out of the current thread's profile
/// (Go's `StopTimer`/`StartTimer`, applied to the profile). A no-op when not profiling.
///
/// ```
/// let guard = profiled::pause();
/// // ... work that should not be in the profile ...
/// drop(guard);
/// ```
pub fn pause() -> Paused {
    Paused::new(CURRENT.with(Cell::get))
}

/// Leaves a panic's hook out of the panicking thread's profile: std's prints the message
/// and, with `RUST_BACKTRACE`, captures and symbolizes a backtrace, which in a test build
/// takes longer than most tests' work and would top a failing test's profile. Wraps the hook
/// in place when the first profile starts; a hook set later replaces the wrapper, as any.
fn pause_in_panic_hooks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // A panic in profiled's own code may hold a lock that pausing takes.
            let own = info
                .location()
                .is_some_and(|l| l.file().starts_with(kind::PROFILED_SOURCES));
            let _paused = (!own).then(pause);
            previous(info);
        }));
    });
}

/// Runs `f` with the current profile paused and returns its value.
///
/// ```
/// let v = profiled::unprofiled(|| 6 * 7);
/// assert_eq!(v, 42);
/// ```
pub fn unprofiled<R>(f: impl FnOnce() -> R) -> R {
    let _paused = pause();
    f()
}

/// Guard returned by [`pause`] and [`Profile::pause`]; sampling resumes when it drops.
///
/// ```
/// let _g: profiled::Paused = profiled::pause();
/// ```
#[must_use = "sampling resumes as soon as the guard is dropped"]
pub struct Paused {
    sids: Handles,
    // Not Send: pausing and resuming belong to one thread's view of its profile.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Paused {
    fn new(sids: Handles) -> Paused {
        sids.pause();
        Paused {
            sids,
            _not_send: std::marker::PhantomData,
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.sids.resume();
    }
}

impl fmt::Debug for Paused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paused")
            .field("active", &!self.sids.is_none())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_source_and_a_format_of_its_name() {
        for &kind in Kind::ALL {
            let entries: Vec<&Format> = SOURCES
                .iter()
                .flat_map(|s| s.kinds.iter())
                .filter(|(k, _)| *k == kind)
                .map(|(_, f)| *f)
                .collect();
            assert_eq!(entries.len(), 1, "{kind}: one source records it");
            let format = entries[0];
            assert_eq!(format.name, kind.name());
            assert!(format.main < format.sample_types.len(), "{kind}");
            assert!(format.default < format.sample_types.len(), "{kind}");
            assert!(format.folded_divisor > 0, "{kind}");
        }
        let listed: usize = SOURCES.iter().map(|s| s.kinds.len()).sum();
        // The test kind is in no list users see.
        assert_eq!(
            listed,
            Kind::ALL.len() + 1,
            "every source's kind is in Kind::ALL"
        );
    }

    /// src/tally.rs, its variant and its entry in SOURCES are all a kind takes: it starts,
    /// resets, pauses and finishes with the profile, and its report has its own sample
    /// types, headline and comments.
    #[test]
    fn a_kind_is_one_module_one_variant_and_one_entry() {
        let config = Config::default().with_kinds([Kind::Tally]).unwrap();
        let profile = Profile::start("tallied", &config).unwrap();
        crate::tally::record();
        reset();
        crate::tally::record();
        unprofiled(crate::tally::record);
        crate::tally::record();
        let reports = profile.finish().unwrap();
        assert_eq!(reports.len(), 1);
        let report = &reports[0];
        assert_eq!(report.kind(), Kind::Tally);
        assert_eq!(report.total("calls"), Some(2));
        assert_eq!(report.samples(), 2);
        assert!(
            report
                .summary_line(None)
                .starts_with("profiled: tallied  tally 2 calls"),
            "{}",
            report.summary_line(None)
        );
        let decoded = crate::encode::decode(report.pprof_gz()).unwrap();
        let s = |i: i64| decoded.string_table[i as usize].as_str();
        assert_eq!(s(decoded.sample_type[0].r#type), "calls");
        let comments: Vec<&str> = decoded.comment.iter().map(|&c| s(c)).collect();
        assert_eq!(
            comments,
            ["profiled: tallied", "tally: one sample per call"]
        );
    }
}
