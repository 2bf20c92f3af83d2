//! The session: a [`Profile`] holds one session per source its kinds need (the CPU sampler,
//! the heap hooks, the lock recorder, the wall sampler), the thread's current profile that
//! `reset()`, `pause()` and `unprofiled()` reach, and [`Remote`] for code that cannot hold
//! the profile (criterion's measurement). Finishing hands each session's data to
//! src/report.rs.

#![forbid(unsafe_code)]

use std::cell::Cell;
use std::fmt;

use crate::config::{Config, Threads};
use crate::error::Error;
use crate::report::{Report, contention_report, finish_cpu, heap_report, wall_report};
use crate::{contention, heap, kind, sampler, symbolize, wall};

thread_local! {
    /// Session ids of the profile this thread started (CPU, heap, contention), 0 for none.
    static CURRENT: Cell<Sids> = const { Cell::new(Sids { cpu: 0, heap: 0, locks: 0, wall: 0 }) };
}

/// The sessions of one profile, one per source: what `reset()`, `pause()` and a
/// [`Remote`] reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Sids {
    cpu: u64,
    heap: u64,
    /// Block and mutex (one session).
    locks: u64,
    wall: u64,
}

impl Sids {
    fn is_none(self) -> bool {
        self == Sids::default()
    }
    fn is_live(self) -> bool {
        (self.cpu != 0 && sampler::is_live(self.cpu))
            || (self.heap != 0 && heap::is_live(self.heap))
            || (self.locks != 0 && heap::is_live(self.locks))
            || (self.wall != 0 && wall::is_live(self.wall))
    }
    fn reset(self) {
        if self.cpu != 0 {
            sampler::reset(self.cpu);
        }
        if self.heap != 0 {
            heap::reset(self.heap);
        }
        if self.locks != 0 {
            contention::reset(self.locks);
        }
        if self.wall != 0 {
            wall::reset(self.wall);
        }
    }
    fn pause(self) {
        if self.cpu != 0 {
            sampler::pause(self.cpu);
        }
        for sid in [self.heap, self.locks].into_iter().filter(|&s| s != 0) {
            heap::pause(sid);
        }
        if self.wall != 0 {
            wall::pause(self.wall);
        }
    }
    fn resume(self) {
        if self.cpu != 0 {
            sampler::resume(self.cpu);
        }
        for sid in [self.heap, self.locks].into_iter().filter(|&s| s != 0) {
            heap::resume(sid);
        }
        if self.wall != 0 {
            wall::resume(self.wall);
        }
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
/// let report = profile.finish().unwrap();
/// assert!(report.cpu_time() > std::time::Duration::ZERO);
/// # }
/// ```
pub struct Profile {
    name: String,
    config: Config,
    cpu: Option<sampler::Session>,
    heap: Option<heap::Session>,
    locks: Option<contention::Session>,
    wall: Option<wall::Session>,
    detached: bool,
}

impl Profile {
    /// Starts profiling the calling thread (with [`Threads::All`], every thread of the
    /// process). `name` ends up in the profile's comments and the summary line. The
    /// config's [`Config::dir`] and [`Config::svg`] are for the files `#[profiled]` and the
    /// harness name; here [`Report::write`] takes the path. Fails on unsupported platforms,
    /// when this thread already profiles, and for [`Threads::All`] while other profiles run.
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
            CURRENT.with(|c| c.set(Sids::default()));
        }
        if !CURRENT.with(Cell::get).is_none() {
            return Err(Error::AlreadyProfiling);
        }
        let profile = Profile::start_detached(name, config)?;
        pause_in_panic_hooks();
        CURRENT.with(|c| c.set(profile.sids()));
        Ok(Profile {
            detached: false,
            ..profile
        })
    }

    /// The sessions' ids.
    fn sids(&self) -> Sids {
        Sids {
            cpu: self.cpu.as_ref().map_or(0, sampler::Session::sid),
            heap: self.heap.as_ref().map_or(0, heap::Session::sid),
            locks: self.locks.as_ref().map_or(0, contention::Session::sid),
            wall: self.wall.as_ref().map_or(0, wall::Session::sid),
        }
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
        self.sids().reset();
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
        Paused::new(self.sids())
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
        let (block, mutex) = (config.wants(&kind::BLOCK), config.wants(&kind::MUTEX));
        let locks = if block || mutex {
            Some(contention::Session::start(
                if block { config.block_rate } else { 0 },
                if mutex { config.mutex_fraction } else { 0 },
                config.threads == Threads::All,
            )?)
        } else {
            None
        };
        let wall = if config.wants(&kind::WALL) {
            Some(wall::Session::start(
                config.wall_frequency,
                config.threads == Threads::All,
            )?)
        } else {
            None
        };
        let cpu = if config.wants(&kind::CPU) {
            sampler::on_drain_start(symbolize::prewarm);
            Some(sampler::Session::start(
                config.frequency,
                config.engine,
                config.threads,
                true,
            )?)
        } else {
            None
        };
        // The heap session last, for the same reason; one that cannot start (no wrapper)
        // drops those started above, which stops them.
        let heap = if config.wants(&kind::HEAP) || config.wants(&kind::ALLOCS) {
            Some(heap::Session::start(
                config.heap_rate,
                config.threads == Threads::All,
            )?)
        } else {
            None
        };
        Ok(Profile {
            name,
            config: owned,
            cpu,
            heap,
            locks,
            wall,
            detached: true,
        })
    }

    /// Starts a detached profile of every thread of the process that other profiles may
    /// run beside (the `/debug/pprof/profile` endpoint: a service's tests and its endpoint
    /// each get what they ask for).
    #[cfg(feature = "http")]
    pub(crate) fn start_shared(name: impl Into<String>, config: &Config) -> Result<Profile, Error> {
        sampler::on_drain_start(symbolize::prewarm);
        let session =
            sampler::Session::start(config.frequency, config.engine, Threads::All, false)?;
        Ok(Profile {
            name: name.into(),
            config: config.clone(),
            cpu: Some(session),
            heap: None,
            locks: None,
            wall: None,
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
        Remote(self.sids())
    }

    /// Stops sampling, symbolizes and encodes the profile of its config's first kind (see
    /// [`Profile::finish_all`] for every kind).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let p = profiled::Profile::start("f", &profiled::Config::default()).unwrap();
    /// let report = p.finish().unwrap();
    /// assert_eq!(report.name(), "f");
    /// # }
    /// ```
    pub fn finish(self) -> Result<Report, Error> {
        let mut reports = self.finish_all()?;
        Ok(reports.remove(0))
    }

    /// Stops every kind's session and gives one report per kind, in the config's order.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// #[global_allocator]
    /// static ALLOC: profiled::Alloc<std::alloc::System> = profiled::Alloc::system();
    ///
    /// let config = profiled::Config::parse("cpu,heap").unwrap().unwrap();
    /// let p = profiled::Profile::start("both", &config).unwrap();
    /// let kept: Vec<Vec<u8>> = (0..100).map(|_| vec![0; 100_000]).collect();
    /// let reports = p.finish_all().unwrap();
    /// assert_eq!(reports.iter().map(|r| r.kind()).collect::<Vec<_>>(), ["cpu", "heap"]);
    /// assert!(reports[1].total("inuse_space").unwrap() > 5_000_000);
    /// # drop(kept);
    /// # }
    /// ```
    pub fn finish_all(self) -> Result<Vec<Report>, Error> {
        if !self.detached {
            CURRENT.with(|c| c.set(Sids::default()));
        }
        if sampler::forked() || heap::forked() {
            // The drain lock may have been held at the fork, by a thread that does not exist
            // here: finishing could hang, and would steal the parent's samples anyway.
            drop(self);
            return Err(Error::Unsupported {
                what: "a profile can only be finished by the process that started it, not by a \
                       child forked from it"
                    .into(),
            });
        }
        let Profile {
            name,
            config,
            cpu,
            heap,
            locks,
            wall,
            ..
        } = self;
        // The heap session stops first: building the CPU report allocates.
        let recorded = heap.map(heap::Session::finish);
        let waits = locks.map(contention::Session::finish);
        let walled = wall.map(wall::Session::finish);
        let mut cpu = cpu.map(|session| finish_cpu(&name, &config, session));
        let mut reports = Vec::with_capacity(config.kinds.len());
        for kind in &config.kinds {
            match (kind.name, &recorded) {
                ("cpu", _) => reports.extend(cpu.take()),
                ("wall", _) => {
                    reports.extend(walled.as_ref().map(|w| wall_report(&name, w)));
                }
                ("block" | "mutex", _) => {
                    reports.extend(waits.as_ref().map(|w| contention_report(&name, kind, w)));
                }
                (_, Some(recorded)) => reports.push(heap_report(&name, kind, recorded)),
                _ => {}
            }
        }
        Ok(reports)
    }
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(feature = "criterion"), allow(dead_code))]
pub(crate) struct Remote(Sids);

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
    sids: Sids,
    // Not Send: pausing and resuming belong to one thread's view of its profile.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Paused {
    fn new(sids: Sids) -> Paused {
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
