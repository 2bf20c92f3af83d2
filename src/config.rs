//! `PROFILED` / `PROFILE` environment variables -> [`Config`]. Pure: no I/O but reading
//! the variables.

#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Repr};
use crate::kind::Kind;

const ACCEPTED: &str = "kinds: cpu, heap, allocs, block, mutex, wall; options: \
                        freq=<1..=10000 Hz, default 1000>, heap_rate=<bytes, default 524288>, \
                        block_rate=<ns, default 1>, mutex_fraction=<n, default 1>, \
                        wall_freq=<1..=1000 Hz, default 100>, dir=<path>, \
                        engine=<auto|perf|timer>, threads=<test|all>, svg, verbose";

/// Why `svg` is refused without the feature, and what to do: the one thing the user needs,
/// which the whole list of accepted items would drown.
const SVG_NEEDS: &str = "needs profiled's `flamegraph` cargo feature: \
                         `profiled = { version = \"0.1\", features = [\"flamegraph\"] }` \
                         under [dev-dependencies]";

/// Every kind's name: a `PROFILE` naming one of them is ours.
fn kind_names() -> Vec<&'static str> {
    Kind::ALL.iter().map(|k| k.name()).collect()
}
/// Options without a value.
const FLAGS: &[&str] = &["svg", "verbose"];
/// Options with a value (`key=value`).
const KEYS: &[&str] = &[
    "freq",
    "heap_rate",
    "block_rate",
    "mutex_fraction",
    "wall_freq",
    "dir",
    "engine",
    "threads",
];

/// Which sampling source the CPU profiler uses.
///
/// ```
/// use profiled::{Config, Engine};
/// let config = Config::parse("cpu,engine=timer").unwrap().unwrap();
/// assert_eq!(config.engine(), Engine::Timer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Engine {
    /// perf events where the kernel allows them, else the CPU timer.
    #[default]
    Auto,
    /// Per-thread `perf_event_open` task-clock events: exact rate, follows spawned threads.
    Perf,
    /// Per-thread POSIX CPU timer: works everywhere, rate bounded by the kernel tick,
    /// samples only the profiled thread.
    Timer,
}

/// Which threads a profile samples.
///
/// ```
/// use profiled::{Config, Threads};
/// let config = Config::parse("cpu,threads=all").unwrap().unwrap();
/// assert_eq!(config.threads(), Threads::All);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Threads {
    /// The thread that starts the profile and every thread it spawns while the profile runs
    /// (with perf events): parallel tests stay apart.
    #[default]
    Test,
    /// Every thread of the process, also those that existed before the profile started (a
    /// global rayon pool, a lazily built runtime). Exact only while no other profile runs:
    /// starting one while another is open is refused.
    All,
}

/// What to profile and where to put it: the parsed form of `PROFILE`, or built in code.
///
/// ```
/// use profiled::{Config, Engine};
/// let config = Config::parse("cpu,freq=500,dir=/tmp/prof").unwrap().unwrap();
/// assert_eq!(config.frequency(), 500);
/// assert_eq!(config.dir(), Some(std::path::Path::new("/tmp/prof")));
/// assert!(Config::parse("").unwrap().is_none(), "empty means off");
///
/// let built = Config::default().with_frequency(500).unwrap().with_engine(Engine::Timer);
/// assert_eq!(built.to_string(), "cpu,freq=500,engine=timer");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The kinds of profile, in the order asked for, each once.
    pub(crate) kinds: Vec<Kind>,
    /// Heap profiles: one sampled allocation per this many bytes, on average.
    pub(crate) heap_rate: u64,
    /// Block profiles: events this many nanoseconds long or longer are all kept.
    pub(crate) block_rate: u64,
    /// Mutex profiles: about one contention event in this many is kept.
    pub(crate) mutex_fraction: u64,
    /// Wall-clock profiles: samples per second of wall time per thread.
    pub(crate) wall_frequency: u32,
    /// Requested samples per CPU-second of each thread.
    pub(crate) frequency: u32,
    /// Base directory for profile files; `None` means `<cargo target dir>/profiles`.
    pub(crate) dir: Option<PathBuf>,
    /// Sampling source.
    pub(crate) engine: Engine,
    /// Which threads are sampled.
    pub(crate) threads: Threads,
    /// Also write an SVG flamegraph beside each profile (needs the `flamegraph` feature).
    pub(crate) svg: bool,
    /// Also print the notices nobody can act on in a test run (a system library's missing
    /// debug file).
    pub(crate) verbose: bool,
}

impl Config {
    /// The environment variable that turns profiling on: `PROFILE=cpu cargo test`.
    ///
    /// `PROFILE` is also a common variable of Makefiles and CI scripts (`PROFILE=release`), so a
    /// value that names none of profiled's kinds or options, nor anything close to one, is taken
    /// to be someone else's: it is ignored, with one notice per process. [`Config::STRICT_ENV_VAR`] is
    /// always parsed strictly and wins over it.
    ///
    /// ```
    /// assert_eq!(profiled::Config::ENV_VAR, "PROFILE");
    /// ```
    pub const ENV_VAR: &str = "PROFILE";

    /// The strict spelling of [`Config::ENV_VAR`]: `PROFILED=cpu cargo test`. When set (and not empty) it
    /// wins over `PROFILE`, and any item it holds that profiled does not know is an error.
    ///
    /// ```
    /// assert_eq!(profiled::Config::STRICT_ENV_VAR, "PROFILED");
    /// ```
    pub const STRICT_ENV_VAR: &str = "PROFILED";

    /// Sampling rate used when `freq=` is not given, in Hz.
    ///
    /// High enough that a 50 ms test gets about 50 samples; the engine weights every sample by the
    /// CPU time that really elapsed, so totals stay right when the kernel delivers fewer.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().frequency(), profiled::Config::DEFAULT_FREQUENCY);
    /// ```
    pub const DEFAULT_FREQUENCY: u32 = 1000;

    /// Go's default `runtime.MemProfileRate`: one sample per 512 KiB allocated, on average.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().heap_rate(), profiled::Config::DEFAULT_HEAP_RATE);
    /// ```
    pub const DEFAULT_HEAP_RATE: u64 = 512 * 1024;

    /// Go's `-blockprofilerate` when `-blockprofile` is given: every blocking event.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().block_rate(), profiled::Config::DEFAULT_BLOCK_RATE);
    /// ```
    pub const DEFAULT_BLOCK_RATE: u64 = 1;
    /// Go's `-mutexprofilefraction` default: every contention event.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().mutex_fraction(), profiled::Config::DEFAULT_MUTEX_FRACTION);
    /// ```
    pub const DEFAULT_MUTEX_FRACTION: u64 = 1;

    /// Samples per second of wall time per thread, by default (fgprof's and Go's tick: 100 Hz).
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().wall_frequency(), profiled::Config::DEFAULT_WALL_FREQUENCY);
    /// ```
    pub const DEFAULT_WALL_FREQUENCY: u32 = 100;

    /// Highest accepted wall-clock sampling rate, in Hz: each tick reads /proc for every
    /// thread sampled.
    ///
    /// ```
    /// assert!(profiled::Config::parse("wall,wall_freq=1001").is_err());
    /// ```
    pub const MAX_WALL_FREQUENCY: u32 = 1000;

    /// Highest accepted sampling rate, in Hz.
    ///
    /// ```
    /// let too_fast = format!("cpu,freq={}", profiled::Config::MAX_FREQUENCY + 1);
    /// assert!(profiled::Config::parse(&too_fast).is_err());
    /// ```
    pub const MAX_FREQUENCY: u32 = 10_000;
}

impl Default for Config {
    /// A CPU profile at [`Config::DEFAULT_FREQUENCY`] into the default directory.
    ///
    /// ```
    /// let c = profiled::Config::default();
    /// assert_eq!(c.frequency(), profiled::Config::DEFAULT_FREQUENCY);
    /// assert_eq!(c.to_string(), "cpu");
    /// ```
    fn default() -> Self {
        Config {
            kinds: vec![Kind::Cpu],
            heap_rate: Config::DEFAULT_HEAP_RATE,
            block_rate: Config::DEFAULT_BLOCK_RATE,
            mutex_fraction: Config::DEFAULT_MUTEX_FRACTION,
            wall_frequency: Config::DEFAULT_WALL_FREQUENCY,
            frequency: Config::DEFAULT_FREQUENCY,
            dir: None,
            engine: Engine::Auto,
            threads: Threads::Test,
            svg: false,
            verbose: false,
        }
    }
}

impl Config {
    /// The kinds of profile asked for, in order.
    ///
    /// ```
    /// use profiled::Kind;
    /// let c = profiled::Config::parse("heap,cpu").unwrap().unwrap();
    /// assert_eq!(c.kinds(), [Kind::Heap, Kind::Cpu]);
    /// ```
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// Sets the kinds of profile, in order, each once; an empty list is an error.
    ///
    /// ```
    /// use profiled::{Config, Kind};
    /// let c = Config::default().with_kinds([Kind::Cpu, Kind::Heap]).unwrap();
    /// assert_eq!(c.to_string(), "cpu,heap");
    /// assert!(Config::default().with_kinds([]).is_err());
    /// ```
    pub fn with_kinds(mut self, kinds: impl IntoIterator<Item = Kind>) -> Result<Config, Error> {
        let mut chosen = Vec::new();
        for kind in kinds {
            if !chosen.contains(&kind) {
                chosen.push(kind);
            }
        }
        if chosen.is_empty() {
            return Err(Error::from(Repr::Config {
                var: Config::ENV_VAR,
                item: String::new(),
                reason: "names no profile kind".into(),
                accepted: ACCEPTED,
            }));
        }
        self.kinds = chosen;
        Ok(self)
    }

    /// Heap profiles sample one allocation per this many bytes allocated, on average (Go's
    /// `runtime.MemProfileRate`); 1 records every allocation.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().heap_rate(), profiled::Config::DEFAULT_HEAP_RATE);
    /// ```
    pub fn heap_rate(&self) -> u64 {
        self.heap_rate
    }

    /// Sets the heap sampling rate in bytes, at least 1.
    ///
    /// ```
    /// let c = profiled::Config::default().with_heap_rate(1).unwrap();
    /// assert_eq!(c.heap_rate(), 1);
    /// assert!(profiled::Config::default().with_heap_rate(0).is_err());
    /// ```
    pub fn with_heap_rate(mut self, bytes: u64) -> Result<Config, Error> {
        if bytes == 0 {
            return Err(Error::from(Repr::Config {
                var: Config::ENV_VAR,
                item: "heap_rate=0".into(),
                reason: "is out of range (1 records every allocation)".into(),
                accepted: ACCEPTED,
            }));
        }
        self.heap_rate = bytes;
        Ok(self)
    }

    /// Block profiles keep every wait of at least this many nanoseconds and shorter ones in
    /// proportion to their length, scaled up (Go's `runtime.SetBlockProfileRate`); 1 keeps
    /// every wait.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().block_rate(), profiled::Config::DEFAULT_BLOCK_RATE);
    /// ```
    pub fn block_rate(&self) -> u64 {
        self.block_rate
    }

    /// Sets the block profile rate in nanoseconds, at least 1.
    ///
    /// ```
    /// let c = profiled::Config::default().with_block_rate(10_000).unwrap();
    /// assert_eq!(c.block_rate(), 10_000);
    /// assert!(profiled::Config::default().with_block_rate(0).is_err());
    /// ```
    pub fn with_block_rate(mut self, ns: u64) -> Result<Config, Error> {
        if ns == 0 {
            return Err(out_of_range("block_rate=0", "1 records every wait"));
        }
        self.block_rate = ns;
        Ok(self)
    }

    /// Mutex profiles keep about one contention event in this many, scaled up (Go's
    /// `runtime.SetMutexProfileFraction`); 1 keeps every event.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().mutex_fraction(), profiled::Config::DEFAULT_MUTEX_FRACTION);
    /// ```
    pub fn mutex_fraction(&self) -> u64 {
        self.mutex_fraction
    }

    /// Sets the mutex profile fraction, at least 1.
    ///
    /// ```
    /// let c = profiled::Config::default().with_mutex_fraction(5).unwrap();
    /// assert_eq!(c.mutex_fraction(), 5);
    /// assert!(profiled::Config::default().with_mutex_fraction(0).is_err());
    /// ```
    pub fn with_mutex_fraction(mut self, n: u64) -> Result<Config, Error> {
        if n == 0 {
            return Err(out_of_range("mutex_fraction=0", "1 records every event"));
        }
        self.mutex_fraction = n;
        Ok(self)
    }

    /// Wall-clock profiles sample every thread of a test this many times per second of wall
    /// time.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().wall_frequency(), profiled::Config::DEFAULT_WALL_FREQUENCY);
    /// ```
    pub fn wall_frequency(&self) -> u32 {
        self.wall_frequency
    }

    /// Sets the wall-clock sampling rate, 1 to [`Config::MAX_WALL_FREQUENCY`] Hz.
    ///
    /// ```
    /// let c = profiled::Config::default().with_wall_frequency(500).unwrap();
    /// assert_eq!(c.wall_frequency(), 500);
    /// assert!(profiled::Config::default().with_wall_frequency(0).is_err());
    /// ```
    pub fn with_wall_frequency(mut self, hz: u32) -> Result<Config, Error> {
        if !(1..=Config::MAX_WALL_FREQUENCY).contains(&hz) {
            return Err(out_of_range(&format!("wall_freq={hz}"), "1 to 1000 Hz"));
        }
        self.wall_frequency = hz;
        Ok(self)
    }

    /// Whether a kind is asked for.
    pub(crate) fn wants(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    /// Requested samples per second of each thread's CPU time.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().frequency(), 1000);
    /// ```
    pub fn frequency(&self) -> u32 {
        self.frequency
    }

    /// The sampling rate, 1 to [`Config::MAX_FREQUENCY`] Hz; anything else is an error that says so.
    ///
    /// ```
    /// let c = profiled::Config::default().with_frequency(250).unwrap();
    /// assert_eq!(c.frequency(), 250);
    /// assert!(profiled::Config::default().with_frequency(0).is_err());
    /// ```
    pub fn with_frequency(mut self, hz: u32) -> Result<Config, Error> {
        if !(1..=Config::MAX_FREQUENCY).contains(&hz) {
            return Err(Error::from(Repr::Config {
                var: Config::ENV_VAR,
                item: format!("freq={hz}"),
                reason: "is out of range".into(),
                accepted: ACCEPTED,
            }));
        }
        self.frequency = hz;
        Ok(self)
    }

    /// Base directory for the profiles `#[profiled]` and the harness write; `None` for
    /// `<cargo target dir>/profiles`.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().dir(), None);
    /// ```
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Sets the base directory (see [`Config::dir`]).
    ///
    /// ```
    /// let c = profiled::Config::default().with_dir("/tmp/profiles");
    /// assert_eq!(c.dir(), Some(std::path::Path::new("/tmp/profiles")));
    /// ```
    pub fn with_dir(mut self, dir: impl Into<PathBuf>) -> Config {
        self.dir = Some(dir.into());
        self
    }

    /// The sampling source.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().engine(), profiled::Engine::Auto);
    /// ```
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Sets the sampling source.
    ///
    /// ```
    /// let c = profiled::Config::default().with_engine(profiled::Engine::Timer);
    /// assert_eq!(c.engine(), profiled::Engine::Timer);
    /// ```
    pub fn with_engine(mut self, engine: Engine) -> Config {
        self.engine = engine;
        self
    }

    /// Which threads a profile samples.
    ///
    /// ```
    /// assert_eq!(profiled::Config::default().threads(), profiled::Threads::Test);
    /// ```
    pub fn threads(&self) -> Threads {
        self.threads
    }

    /// Sets which threads a profile samples.
    ///
    /// ```
    /// let c = profiled::Config::default().with_threads(profiled::Threads::All);
    /// assert_eq!(c.to_string(), "cpu,threads=all");
    /// ```
    pub fn with_threads(mut self, threads: Threads) -> Config {
        self.threads = threads;
        self
    }

    /// Whether an SVG flamegraph is written beside each profile.
    ///
    /// ```
    /// assert!(!profiled::Config::default().svg());
    /// ```
    pub fn svg(&self) -> bool {
        self.svg
    }

    /// Asks for an SVG flamegraph beside each profile; an error without the `flamegraph`
    /// feature, which draws them.
    ///
    /// ```
    /// let c = profiled::Config::default().with_svg(true);
    /// assert_eq!(c.is_ok(), cfg!(feature = "flamegraph"));
    /// ```
    pub fn with_svg(mut self, on: bool) -> Result<Config, Error> {
        if on && !cfg!(feature = "flamegraph") {
            return Err(Error::from(Repr::Config {
                var: Config::ENV_VAR,
                item: "svg".into(),
                reason: SVG_NEEDS.into(),
                accepted: "",
            }));
        }
        self.svg = on;
        Ok(self)
    }

    /// Whether every notice is printed, those about the machine rather than the code (a
    /// system library without its debug file) too.
    ///
    /// ```
    /// assert!(!profiled::Config::default().verbose());
    /// assert!(profiled::Config::parse("cpu,verbose").unwrap().unwrap().verbose());
    /// ```
    pub fn verbose(&self) -> bool {
        self.verbose
    }

    /// Prints every notice (`PROFILE=cpu,verbose`).
    ///
    /// ```
    /// let c = profiled::Config::default().with_verbose(true);
    /// assert_eq!(c.to_string(), "cpu,verbose");
    /// ```
    pub fn with_verbose(mut self, on: bool) -> Config {
        self.verbose = on;
        self
    }
}

/// The outcome of reading the environment: a config (or off), and a notice to print once
/// when `PROFILE` held someone else's value.
#[derive(Debug)]
pub(crate) struct FromEnv {
    pub config: Option<Config>,
    /// The variable the config came from (for error messages about `dir=`).
    pub var: &'static str,
    pub ignored: Option<String>,
}

impl Config {
    /// Reads `PROFILED`, else `PROFILE`. `Ok(None)` when profiling is off: both unset or
    /// empty, or `PROFILE` holding a value that is not for profiled (see [`Config::ENV_VAR`]).
    ///
    /// ```
    /// // In doctests the variables are normally unset.
    /// if std::env::var_os("PROFILE").is_none() && std::env::var_os("PROFILED").is_none() {
    ///     assert!(profiled::Config::from_env().unwrap().is_none());
    /// }
    /// ```
    pub fn from_env() -> Result<Option<Config>, Error> {
        Ok(Config::read_env(|name| std::env::var_os(name))?.config)
    }

    pub(crate) fn read_env(
        get: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Result<FromEnv, Error> {
        let value = |name: &'static str| {
            get(name)
                .filter(|v| !v.to_string_lossy().trim().is_empty())
                .map(|v| (name, v))
        };
        let Some((var, raw)) = value(Config::STRICT_ENV_VAR).or_else(|| value(Config::ENV_VAR))
        else {
            return Ok(FromEnv {
                config: None,
                var: Config::ENV_VAR,
                ignored: None,
            });
        };
        let strict = var == Config::STRICT_ENV_VAR;
        let Some(text) = raw.to_str() else {
            if strict {
                return Err(Error::from(Repr::Config {
                    var,
                    item: raw.to_string_lossy().into_owned(),
                    reason: "is not valid UTF-8".into(),
                    accepted: ACCEPTED,
                }));
            }
            return Ok(FromEnv {
                config: None,
                var,
                ignored: Some(ignored_notice(&raw.to_string_lossy())),
            });
        };
        if !strict && !mentions_ours(text) {
            return Ok(FromEnv {
                config: None,
                var,
                ignored: Some(ignored_notice(text)),
            });
        }
        Ok(FromEnv {
            config: parse_in(text, var)?,
            var,
            ignored: None,
        })
    }

    /// Parses the `PROFILE` grammar strictly: comma-separated kinds and `key=value` options.
    /// `Ok(None)` for an empty or all-blank value.
    ///
    /// ```
    /// let err = profiled::Config::parse("cpu,freq=0").unwrap_err();
    /// assert!(err.to_string().contains("freq=0"));
    /// let err = profiled::Config::parse("cpuu").unwrap_err();
    /// assert!(err.to_string().contains("did you mean `cpu`?"));
    /// ```
    pub fn parse(text: &str) -> Result<Option<Config>, Error> {
        parse_in(text, Config::ENV_VAR)
    }
}

fn out_of_range(item: &str, hint: &str) -> Error {
    Error::from(Repr::Config {
        var: Config::ENV_VAR,
        item: item.into(),
        reason: format!("is out of range ({hint})"),
        accepted: ACCEPTED,
    })
}

fn ignored_notice(value: &str) -> String {
    let (var, strict) = (Config::ENV_VAR, Config::STRICT_ENV_VAR);
    format!(
        "{var}={value} names none of profiled's profile kinds or options, so it is taken to be \
         another tool's setting and ignored; to ask profiled for profiles use {strict}=cpu \
         (or {var}=cpu)"
    )
}

/// Whether any item names one of our kinds or options, or comes close to one (a misspelling
/// must fail loudly, not be ignored).
fn mentions_ours(text: &str) -> bool {
    let kinds = kind_names();
    text.split(',').map(str::trim).any(|item| {
        let word = item.split_once('=').map_or(item, |(k, _)| k.trim());
        let all = kinds.iter().chain(FLAGS).chain(KEYS);
        all.clone().any(|known| *known == word) || closest(word, all.copied()).is_some()
    })
}

/// The known word within a small edit distance of `word`, for "did you mean".
pub(crate) fn closest<'a>(word: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    known
        .map(|k| (edit_distance(word, k), k))
        .filter(|&(d, _)| d <= limit)
        .min_by_key(|&(d, _)| d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting a swap of two neighbours as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

fn parse_in(text: &str, var: &'static str) -> Result<Option<Config>, Error> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return Ok(None);
    }
    let bad = |item: &str, reason: &str| {
        Error::from(Repr::Config {
            var,
            item: item.to_string(),
            reason: reason.to_string(),
            accepted: ACCEPTED,
        })
    };
    let unknown = |item: &str, word: &str, what: &str, known: &[&[&str]]| {
        let hint = closest(word, known.iter().flat_map(|k| k.iter().copied()))
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        bad(item, &format!("is not a known {what}{hint}"))
    };
    let mut config = Config::default();
    config.kinds.clear();
    for &item in &items {
        match item.split_once('=') {
            None => match item {
                _ if Kind::find(item).is_some() => {
                    if let Some(k) = Kind::find(item).filter(|k| !config.kinds.contains(k)) {
                        config.kinds.push(k);
                    }
                }
                "svg" if cfg!(feature = "flamegraph") => config.svg = true,
                "verbose" => config.verbose = true,
                "svg" => {
                    return Err(Error::from(Repr::Config {
                        var,
                        item: item.to_string(),
                        reason: SVG_NEEDS.into(),
                        accepted: "",
                    }));
                }
                _ if KEYS.contains(&item) => {
                    return Err(bad(item, "needs a value (`key=value`)"));
                }
                _ => {
                    return Err(unknown(
                        item,
                        item,
                        "profile kind or option",
                        &[&kind_names(), FLAGS],
                    ));
                }
            },
            Some((key, value)) => match key.trim() {
                "freq" => {
                    let hz: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(item, "is not a whole number of Hz"))?;
                    if !(1..=Config::MAX_FREQUENCY).contains(&hz) {
                        return Err(bad(item, "is out of range"));
                    }
                    config.frequency = hz;
                }
                "heap_rate" => {
                    let bytes: u64 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(item, "is not a whole number of bytes"))?;
                    if bytes == 0 {
                        return Err(bad(item, "is out of range (1 records every allocation)"));
                    }
                    config.heap_rate = bytes;
                }
                "wall_freq" => {
                    let hz: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(item, "is not a whole number of Hz"))?;
                    if !(1..=Config::MAX_WALL_FREQUENCY).contains(&hz) {
                        return Err(bad(item, "is out of range"));
                    }
                    config.wall_frequency = hz;
                }
                "block_rate" => {
                    let ns: u64 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(item, "is not a whole number of nanoseconds"))?;
                    if ns == 0 {
                        return Err(bad(item, "is out of range (1 records every wait)"));
                    }
                    config.block_rate = ns;
                }
                "mutex_fraction" => {
                    let n: u64 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(item, "is not a whole number"))?;
                    if n == 0 {
                        return Err(bad(item, "is out of range (1 records every event)"));
                    }
                    config.mutex_fraction = n;
                }
                "dir" => {
                    if value.trim().is_empty() {
                        return Err(bad(item, "names no directory"));
                    }
                    config.dir = Some(PathBuf::from(value.trim()));
                }
                "engine" => {
                    config.engine = match value.trim() {
                        "auto" => Engine::Auto,
                        "perf" => Engine::Perf,
                        "timer" => Engine::Timer,
                        v => return Err(unknown(item, v, "engine", &[&["auto", "perf", "timer"]])),
                    }
                }
                "threads" => {
                    config.threads = match value.trim() {
                        "test" => Threads::Test,
                        "all" => Threads::All,
                        v => return Err(unknown(item, v, "thread selection", &[&["test", "all"]])),
                    }
                }
                k => return Err(unknown(item, k, "option", &[KEYS])),
            },
        }
    }
    if config.kinds.is_empty() {
        return Err(bad(text.trim(), "names no profile kind"));
    }
    Ok(Some(config))
}

impl fmt::Display for Config {
    /// The `PROFILE` value that parses back to this config.
    ///
    /// ```
    /// let c = profiled::Config::parse("cpu,freq=250").unwrap().unwrap();
    /// assert_eq!(c.to_string(), "cpu,freq=250");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        f.write_str(&kinds.join(","))?;
        if self.frequency != Config::DEFAULT_FREQUENCY {
            write!(f, ",freq={}", self.frequency)?;
        }
        if self.heap_rate != Config::DEFAULT_HEAP_RATE {
            write!(f, ",heap_rate={}", self.heap_rate)?;
        }
        if self.block_rate != Config::DEFAULT_BLOCK_RATE {
            write!(f, ",block_rate={}", self.block_rate)?;
        }
        if self.mutex_fraction != Config::DEFAULT_MUTEX_FRACTION {
            write!(f, ",mutex_fraction={}", self.mutex_fraction)?;
        }
        if self.wall_frequency != Config::DEFAULT_WALL_FREQUENCY {
            write!(f, ",wall_freq={}", self.wall_frequency)?;
        }
        if let Some(dir) = &self.dir {
            write!(f, ",dir={}", dir.display())?;
        }
        match self.engine {
            Engine::Auto => {}
            Engine::Perf => f.write_str(",engine=perf")?,
            Engine::Timer => f.write_str(",engine=timer")?,
        }
        if self.threads == Threads::All {
            f.write_str(",threads=all")?;
        }
        if self.svg {
            f.write_str(",svg")?;
        }
        if self.verbose {
            f.write_str(",verbose")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn off_when_empty() {
        assert_eq!(Config::parse("").unwrap(), None);
        assert_eq!(Config::parse(" , ").unwrap(), None);
    }

    #[test]
    fn defaults_and_options() {
        let c = Config::parse("cpu").unwrap().unwrap();
        assert_eq!(c, Config::default());
        let c = Config::parse("cpu, freq=250 ,dir=out/p,engine=perf,threads=all")
            .unwrap()
            .unwrap();
        assert_eq!(c.frequency, 250);
        assert_eq!(c.dir, Some(PathBuf::from("out/p")));
        assert_eq!(c.engine, Engine::Perf);
        assert_eq!(c.threads, Threads::All);
        assert_eq!(Config::parse(&c.to_string()).unwrap().unwrap(), c);
    }

    #[test]
    fn the_accepted_list_names_every_kind() {
        assert!(ACCEPTED.starts_with(&format!("kinds: {}; ", Kind::NAMES)));
    }

    #[test]
    fn kinds_in_order_once_each_and_the_heap_rate() {
        let c = Config::parse("heap,cpu,heap,allocs,heap_rate=1")
            .unwrap()
            .unwrap();
        assert_eq!(c.kinds(), [Kind::Heap, Kind::Cpu, Kind::Allocs]);
        assert_eq!(c.heap_rate, 1);
        assert!(c.wants(Kind::Allocs));
        assert_eq!(c.to_string(), "heap,cpu,allocs,heap_rate=1");
        assert_eq!(Config::parse(&c.to_string()).unwrap().unwrap(), c);
        let only_heap = Config::parse("heap").unwrap().unwrap();
        assert!(!only_heap.wants(Kind::Cpu));
        assert_eq!(only_heap.heap_rate, Config::DEFAULT_HEAP_RATE);
        for (text, reason) in [
            (
                "heap,heap_rate=0",
                "is out of range (1 records every allocation)",
            ),
            ("heap,heap_rate=1k", "is not a whole number of bytes"),
            ("heap_rate=4096", "names no profile kind"),
        ] {
            let msg = err(text);
            assert!(msg.contains(reason), "{text}: {msg}");
            assert!(msg.contains("heap_rate=<bytes, default 524288>"), "{msg}");
        }
        let wall = Config::parse("wall,wall_freq=250").unwrap().unwrap();
        assert_eq!(
            (wall.kinds(), wall.wall_frequency),
            (&[Kind::Wall][..], 250)
        );
        assert_eq!(Config::parse(&wall.to_string()).unwrap().unwrap(), wall);
        assert!(err("wall,wall_freq=0").contains("`wall_freq=0` is out of range"));
    }

    #[test]
    fn contention_kinds_and_their_rates() {
        let c = Config::parse("block,mutex,block_rate=10000,mutex_fraction=5")
            .unwrap()
            .unwrap();
        assert_eq!(c.kinds(), [Kind::Block, Kind::Mutex]);
        assert_eq!((c.block_rate, c.mutex_fraction), (10_000, 5));
        assert_eq!(Config::parse(&c.to_string()).unwrap().unwrap(), c);
        let plain = Config::parse("block").unwrap().unwrap();
        assert_eq!((plain.block_rate, plain.mutex_fraction), (1, 1));
        for (text, reason) in [
            (
                "block,block_rate=0",
                "is out of range (1 records every wait)",
            ),
            (
                "block,block_rate=1ms",
                "is not a whole number of nanoseconds",
            ),
            (
                "mutex,mutex_fraction=0",
                "is out of range (1 records every event)",
            ),
            ("mutex,mutex_fraction=-1", "is not a whole number"),
            ("mutex,mutex_fracton=2", "(did you mean `mutex_fraction`?)"),
        ] {
            let msg = err(text);
            assert!(msg.contains(reason), "{text}: {msg}");
            assert!(msg.contains("block_rate=<ns, default 1>"), "{msg}");
        }
    }

    #[test]
    fn bad_items_are_named() {
        for (text, item, reason) in [
            ("cpu,freq=0", "`freq=0`", "out of range"),
            ("cpu,freq=abc", "`freq=abc`", "not a whole number"),
            ("cpu,freq=1000000", "`freq=1000000`", "out of range"),
            (
                "cpux",
                "`cpux`",
                "not a known profile kind or option (did you mean `cpu`?)",
            ),
            ("cpu,color=red", "`color=red`", "not a known option"),
            ("cpu,frq=100", "`frq=100`", "(did you mean `freq`?)"),
            ("cpu,engine=pref", "`engine=pref`", "(did you mean `perf`?)"),
            ("cpu,threads=al", "`threads=al`", "(did you mean `all`?)"),
            ("cpu,freq", "`freq`", "needs a value"),
            ("freq=100", "`freq=100`", "names no profile kind"),
            ("cpu,dir=", "`dir=`", "names no directory"),
            ("hep", "`hep`", "(did you mean `heap`?)"),
        ] {
            let msg = err(text);
            assert!(msg.starts_with("PROFILE: "), "{msg}");
            assert!(msg.contains(item), "{msg}");
            assert!(msg.contains(reason), "{msg}");
            assert!(msg.contains("accepted: kinds: cpu"), "{msg}");
        }
    }

    fn env(vars: &[(&str, &str)]) -> Result<FromEnv, Error> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::read_env(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.into()))
    }

    #[test]
    fn profile_of_another_tool_is_ignored_with_a_notice() {
        for value in [
            "release",
            "dev",
            "debug",
            "bench",
            "prod",
            "test",
            "opt-level=3",
        ] {
            let got = env(&[("PROFILE", value)]).unwrap();
            assert_eq!(got.config, None, "{value}");
            let notice = got.ignored.expect("a notice");
            assert!(notice.contains(&format!("PROFILE={value}")), "{notice}");
            assert!(notice.contains("PROFILED=cpu"), "{notice}");
        }
        assert!(env(&[]).unwrap().ignored.is_none());
        assert!(env(&[("PROFILE", "  ")]).unwrap().config.is_none());
    }

    #[test]
    fn close_misspellings_in_profile_still_fail() {
        for value in ["cpuu", "cpu,release", "frq=100", "hep", "svgg", "cpu,dri=x"] {
            let e = env(&[("PROFILE", value)]).unwrap_err().to_string();
            assert!(e.starts_with("PROFILE: "), "{value}: {e}");
        }
        let e = env(&[("PROFILE", "cpuu")]).unwrap_err().to_string();
        assert!(e.contains("did you mean `cpu`?"), "{e}");
    }

    #[test]
    fn profiled_is_strict_and_wins() {
        let got = env(&[("PROFILED", "cpu,freq=250"), ("PROFILE", "release")]).unwrap();
        assert_eq!(got.config.unwrap().frequency, 250);
        assert_eq!(got.var, "PROFILED");
        let e = env(&[("PROFILED", "release"), ("PROFILE", "cpu")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("PROFILED: `release` is not a known"), "{e}");
        // Empty PROFILED leaves the decision to PROFILE.
        let got = env(&[("PROFILED", ""), ("PROFILE", "cpu")]).unwrap();
        assert_eq!(got.config, Some(Config::default()));
        assert_eq!(got.var, "PROFILE");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("cpu", "cpu"), 0);
        assert_eq!(edit_distance("cpuu", "cpu"), 1);
        assert_eq!(edit_distance("pcu", "cpu"), 1);
        assert!(edit_distance("release", "freq") > 2);
        assert_eq!(closest("dev", KEYS.iter().copied()), None);
        assert_eq!(closest("egnine", KEYS.iter().copied()), Some("engine"));
    }
}
