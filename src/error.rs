//! [`Error`]: everything that can go wrong, at the bottom of the crate's layers (every other
//! module may use it; it uses none of them).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while profiling: what kind of failure ([`Error::kind`]),
/// what the message says (`Display`), and, where one caused it, the OS error
/// (`std::error::Error::source`).
///
/// ```
/// use profiled::ErrorKind;
/// let err = profiled::Config::parse("cpu,freq=abc").unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Config);
/// assert_eq!(err.item(), Some("freq=abc"));
/// assert!(err.to_string().contains("accepted: kinds: cpu"));
/// ```
pub struct Error(Box<Repr>);

/// What kind of failure an [`Error`] is.
///
/// ```
/// let err = profiled::Config::parse("cpu,freq=0").unwrap_err();
/// assert_eq!(err.kind(), profiled::ErrorKind::Config);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `PROFILE` (or a [`Config`](crate::Config) string or setter) holds an item profiled
    /// does not accept.
    Config,
    /// Profiling cannot run here (platform, or the process refused the set-up).
    Unsupported,
    /// The kernel refused to start a sampling source.
    Sampler,
    /// Writing a profile failed.
    Io,
    /// This thread is already collecting a profile.
    AlreadyProfiling,
    /// More profiles are open at once than the engine has slots for.
    TooManyProfiles,
    /// The `/debug/pprof/` server cannot start (feature `http`).
    Serve,
}

/// What an [`Error`] holds.
#[derive(Debug)]
pub(crate) enum Repr {
    /// `PROFILE` (or a [`Config`](crate::Config) string) holds an item we don't accept.
    Config {
        /// The variable (`PROFILE` or `PROFILED`) the item came from.
        var: &'static str,
        /// The offending item, as written.
        item: String,
        /// What is wrong with it.
        reason: String,
        /// What is accepted; empty where the reason says what to do instead.
        accepted: &'static str,
    },
    /// Profiling cannot run here (platform, or the process refused the set-up).
    Unsupported {
        /// Why.
        what: String,
    },
    /// The kernel refused to start a sampling source.
    Sampler {
        /// Which call failed.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Writing a profile failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// To which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// This thread is already collecting a profile.
    AlreadyProfiling,
    /// More profiles are open at once than the engine has slots for.
    #[cfg_attr(
        not(all(target_os = "linux", target_arch = "x86_64", not(profiled_unsupported))),
        allow(dead_code)
    )]
    TooManyProfiles {
        /// The number of slots.
        limit: usize,
    },
    /// The `/debug/pprof/` server cannot start (feature `http`).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Serve {
        /// What was refused or failed, and what would be accepted.
        what: String,
        /// The OS error, if one caused it.
        source: Option<std::io::Error>,
    },
}

impl Error {
    /// What kind of failure it is.
    ///
    /// ```
    /// let err = profiled::Config::parse("cpu,heap_rate=0").unwrap_err();
    /// assert_eq!(err.kind(), profiled::ErrorKind::Config);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match &*self.0 {
            Repr::Config { .. } => ErrorKind::Config,
            Repr::Unsupported { .. } => ErrorKind::Unsupported,
            Repr::Sampler { .. } => ErrorKind::Sampler,
            Repr::Io { .. } => ErrorKind::Io,
            Repr::AlreadyProfiling => ErrorKind::AlreadyProfiling,
            Repr::TooManyProfiles { .. } => ErrorKind::TooManyProfiles,
            Repr::Serve { .. } => ErrorKind::Serve,
        }
    }

    /// For a configuration error, the offending item as written (empty when the whole
    /// value names no kind).
    ///
    /// ```
    /// let err = profiled::Config::parse("cpu,engine=pref").unwrap_err();
    /// assert_eq!(err.item(), Some("engine=pref"));
    /// ```
    pub fn item(&self) -> Option<&str> {
        match &*self.0 {
            Repr::Config { item, .. } => Some(item),
            _ => None,
        }
    }

    /// For a configuration error, what is accepted instead (`None` where the message says
    /// what to do).
    ///
    /// ```
    /// let err = profiled::Config::parse("cpu,freq=0").unwrap_err();
    /// assert!(err.accepted().unwrap().contains("freq=<1..=10000 Hz"));
    /// ```
    pub fn accepted(&self) -> Option<&'static str> {
        match &*self.0 {
            Repr::Config { accepted, .. } if !accepted.is_empty() => Some(accepted),
            _ => None,
        }
    }

    /// For a failed write, the path that could not be created or written.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let report = profiled::Profile::start("p", &profiled::Config::default())
    ///     .unwrap()
    ///     .finish()
    ///     .unwrap()
    ///     .remove(0);
    /// let err = report.write(std::path::Path::new("/proc/no/such/p.pb.gz")).unwrap_err();
    /// assert_eq!(err.kind(), profiled::ErrorKind::Io);
    /// assert!(err.path().unwrap().starts_with("/proc/no"));
    /// # }
    /// ```
    pub fn path(&self) -> Option<&std::path::Path> {
        match &*self.0 {
            Repr::Io { path, .. } => Some(path),
            _ => None,
        }
    }
}

impl From<Repr> for Error {
    fn from(repr: Repr) -> Error {
        Error(Box::new(repr))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Repr::Config {
                var,
                item,
                reason,
                accepted,
            } => {
                write!(f, "{var}: `{item}` {reason}")?;
                if !accepted.is_empty() {
                    write!(f, "; accepted: {accepted}")?;
                }
                Ok(())
            }
            Repr::Unsupported { what } => f.write_str(what),
            Repr::Sampler { what, source } => write!(f, "{what} failed: {source}"),
            Repr::Io {
                action,
                path,
                source,
            } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
            Repr::AlreadyProfiling => f.write_str("this thread is already collecting a profile"),
            Repr::TooManyProfiles { limit } => {
                write!(f, "more than {limit} profiles open at once")
            }
            Repr::Serve { what, source } => match source {
                Some(source) => write!(f, "{what}: {source}"),
                None => f.write_str(what),
            },
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            Repr::Sampler { source, .. } | Repr::Io { source, .. } => Some(source),
            Repr::Serve {
                source: Some(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}
