//! [`Error`]: everything that can go wrong, at the bottom of the crate's layers (every other
//! module may use it; it uses none of them).

#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while profiling.
///
/// ```
/// let err = profiled::Config::parse("cpu,freq=abc").unwrap_err();
/// assert!(matches!(err, profiled::Error::Config { .. }));
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
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
    TooManyProfiles {
        /// The number of slots.
        limit: usize,
    },
    /// The `/debug/pprof/` server cannot start (feature `http`).
    Serve {
        /// What was refused or failed, and what would be accepted.
        what: String,
        /// The OS error, if one caused it.
        source: Option<std::io::Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
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
            Error::Unsupported { what } => f.write_str(what),
            Error::Sampler { what, source } => write!(f, "{what} failed: {source}"),
            Error::Io {
                action,
                path,
                source,
            } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
            Error::AlreadyProfiling => f.write_str("this thread is already collecting a profile"),
            Error::TooManyProfiles { limit } => {
                write!(f, "more than {limit} profiles open at once")
            }
            Error::Serve { what, source } => match source {
                Some(source) => write!(f, "{what}: {source}"),
                None => f.write_str(what),
            },
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sampler { source, .. } | Error::Io { source, .. } => Some(source),
            Error::Serve {
                source: Some(source),
                ..
            } => Some(source),
            _ => None,
        }
    }
}
