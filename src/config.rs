//! `PROFILE` environment variable -> [`Config`]. Pure: no I/O but reading the variable.

use std::fmt;
use std::path::PathBuf;

use crate::Error;

/// The environment variable that turns profiling on.
///
/// ```
/// assert_eq!(profiled::ENV_VAR, "PROFILE");
/// ```
pub const ENV_VAR: &str = "PROFILE";

/// Sampling rate used when `freq=` is not given, in Hz.
///
/// High enough that a 50 ms test gets about 50 samples; the engine weights every sample by the
/// CPU time that really elapsed, so totals stay right when the kernel delivers fewer.
///
/// ```
/// assert_eq!(profiled::Config::default().frequency, profiled::DEFAULT_FREQUENCY);
/// ```
pub const DEFAULT_FREQUENCY: u32 = 1000;

/// Highest accepted sampling rate, in Hz.
///
/// ```
/// let too_fast = format!("cpu,freq={}", profiled::MAX_FREQUENCY + 1);
/// assert!(profiled::Config::parse(&too_fast).is_err());
/// ```
pub const MAX_FREQUENCY: u32 = 10_000;

const ACCEPTED: &str = "kinds: cpu; options: freq=<1..=10000 Hz, default 1000>, dir=<path>, \
                        engine=<auto|perf|timer>, svg";

/// Which sampling source the CPU profiler uses.
///
/// ```
/// use profiled::{Config, Engine};
/// let config = Config::parse("cpu,engine=timer").unwrap().unwrap();
/// assert_eq!(config.engine, Engine::Timer);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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

/// What to profile and where to put it: the parsed form of `PROFILE`.
///
/// ```
/// use profiled::Config;
/// let config = Config::parse("cpu,freq=500,dir=/tmp/prof").unwrap().unwrap();
/// assert_eq!(config.frequency, 500);
/// assert_eq!(config.dir.as_deref(), Some(std::path::Path::new("/tmp/prof")));
/// assert!(Config::parse("").unwrap().is_none(), "empty means off");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Write CPU profiles.
    pub cpu: bool,
    /// Requested samples per CPU-second of each thread.
    pub frequency: u32,
    /// Base directory for profile files; `None` means `<cargo target dir>/profiles`.
    pub dir: Option<PathBuf>,
    /// Sampling source.
    pub engine: Engine,
    /// Also write an SVG flamegraph beside each profile (needs the `flamegraph` feature).
    pub svg: bool,
}

impl Default for Config {
    /// A CPU profile at [`DEFAULT_FREQUENCY`] into the default directory.
    ///
    /// ```
    /// assert!(profiled::Config::default().cpu);
    /// ```
    fn default() -> Self {
        Config {
            cpu: true,
            frequency: DEFAULT_FREQUENCY,
            dir: None,
            engine: Engine::Auto,
            svg: false,
        }
    }
}

impl Config {
    /// Reads and parses `PROFILE`. `Ok(None)` when it is unset or empty (profiling off).
    ///
    /// ```
    /// // In doctests PROFILE is normally unset.
    /// if std::env::var_os("PROFILE").is_none() {
    ///     assert!(profiled::Config::from_env().unwrap().is_none());
    /// }
    /// ```
    pub fn from_env() -> Result<Option<Config>, Error> {
        match std::env::var_os(ENV_VAR) {
            None => Ok(None),
            Some(value) => match value.to_str() {
                Some(text) => Config::parse(text),
                None => Err(Error::Config {
                    item: value.to_string_lossy().into_owned(),
                    reason: "is not valid UTF-8".into(),
                    accepted: ACCEPTED,
                }),
            },
        }
    }

    /// Parses the `PROFILE` grammar: comma-separated kinds and `key=value` options.
    /// `Ok(None)` for an empty or all-blank value.
    ///
    /// ```
    /// let err = profiled::Config::parse("cpu,freq=0").unwrap_err();
    /// assert!(err.to_string().contains("freq=0"));
    /// ```
    pub fn parse(text: &str) -> Result<Option<Config>, Error> {
        let items: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() {
            return Ok(None);
        }
        let bad = |item: &str, reason: &str| Error::Config {
            item: item.to_string(),
            reason: reason.to_string(),
            accepted: ACCEPTED,
        };
        let mut config = Config {
            cpu: false,
            ..Config::default()
        };
        for &item in &items {
            match item.split_once('=') {
                None => match item {
                    "cpu" => config.cpu = true,
                    "svg" if cfg!(feature = "flamegraph") => config.svg = true,
                    "svg" => {
                        return Err(bad(item, "needs profiled's `flamegraph` cargo feature"));
                    }
                    "heap" | "block" | "mutex" => {
                        return Err(bad(item, "is not implemented yet"));
                    }
                    _ => return Err(bad(item, "is not a known profile kind or option")),
                },
                Some((key, value)) => match key.trim() {
                    "freq" => {
                        let hz: u32 = value
                            .trim()
                            .parse()
                            .map_err(|_| bad(item, "is not a whole number of Hz"))?;
                        if !(1..=MAX_FREQUENCY).contains(&hz) {
                            return Err(bad(item, "is out of range"));
                        }
                        config.frequency = hz;
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
                            _ => return Err(bad(item, "is not a known engine")),
                        }
                    }
                    _ => return Err(bad(item, "is not a known option")),
                },
            }
        }
        if !config.cpu {
            return Err(bad(text.trim(), "names no profile kind"));
        }
        Ok(Some(config))
    }
}

impl fmt::Display for Config {
    /// The `PROFILE` value that parses back to this config.
    ///
    /// ```
    /// let c = profiled::Config::parse("cpu,freq=250").unwrap().unwrap();
    /// assert_eq!(c.to_string(), "cpu,freq=250");
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cpu")?;
        if self.frequency != DEFAULT_FREQUENCY {
            write!(f, ",freq={}", self.frequency)?;
        }
        if let Some(dir) = &self.dir {
            write!(f, ",dir={}", dir.display())?;
        }
        match self.engine {
            Engine::Auto => {}
            Engine::Perf => f.write_str(",engine=perf")?,
            Engine::Timer => f.write_str(",engine=timer")?,
        }
        if self.svg {
            f.write_str(",svg")?;
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
        let c = Config::parse("cpu, freq=250 ,dir=out/p,engine=perf")
            .unwrap()
            .unwrap();
        assert_eq!(c.frequency, 250);
        assert_eq!(c.dir, Some(PathBuf::from("out/p")));
        assert_eq!(c.engine, Engine::Perf);
        assert_eq!(Config::parse(&c.to_string()).unwrap().unwrap(), c);
    }

    #[test]
    fn bad_items_are_named() {
        for (text, item, reason) in [
            ("cpu,freq=0", "`freq=0`", "out of range"),
            ("cpu,freq=abc", "`freq=abc`", "not a whole number"),
            ("cpu,freq=1000000", "`freq=1000000`", "out of range"),
            ("cpux", "`cpux`", "not a known profile kind"),
            ("cpu,color=red", "`color=red`", "not a known option"),
            ("freq=100", "`freq=100`", "names no profile kind"),
            ("cpu,dir=", "`dir=`", "names no directory"),
        ] {
            let msg = err(text);
            assert!(msg.contains("PROFILE"), "{msg}");
            assert!(msg.contains(item), "{msg}");
            assert!(msg.contains(reason), "{msg}");
            assert!(msg.contains("accepted: kinds: cpu"), "{msg}");
        }
    }
}
