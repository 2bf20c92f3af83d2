//! The endpoints' and the server's settings.

#[cfg(feature = "http-tls")]
use std::path::PathBuf;

use super::Credentials;
#[cfg(feature = "http-tls")]
use super::tls;
use crate::config::{Config as ProfileConfig, Threads};
use crate::error::Error;

/// Settings of the endpoints and of [`serve`](super::serve)'s server.
///
/// ```
/// let config = profiled::http::Config::default().with_max_seconds(60);
/// assert_eq!(config.max_seconds(), 60);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    pub(super) max_seconds: u64,
    pub(super) profile: ProfileConfig,
    pub(super) credentials: Option<Credentials>,
    #[cfg(feature = "http-tls")]
    pub(super) tls: Option<tls::Tls>,
    #[cfg(feature = "http-tls")]
    pub(super) client_certificates: bool,
    pub(super) insecure_plaintext: bool,
}

impl Default for Config {
    /// At most 300 seconds per CPU profile, sampled at profiled's default rate; no TLS and
    /// no credentials, which [`serve`](super::serve) accepts on loopback addresses only.
    fn default() -> Self {
        Config {
            max_seconds: 300,
            profile: ProfileConfig::default().with_threads(Threads::All),
            credentials: None,
            #[cfg(feature = "http-tls")]
            tls: None,
            #[cfg(feature = "http-tls")]
            client_certificates: false,
            insecure_plaintext: false,
        }
    }
}

impl Config {
    /// The longest CPU profile a request may ask for; longer ones get Go's 400.
    ///
    /// ```
    /// assert_eq!(profiled::http::Config::default().max_seconds(), 300);
    /// ```
    pub fn max_seconds(&self) -> u64 {
        self.max_seconds
    }

    /// Sets [`max_seconds`](Self::max_seconds).
    ///
    /// ```
    /// let config = profiled::http::Config::default().with_max_seconds(10);
    /// assert_eq!(config.max_seconds(), 10);
    /// ```
    pub fn with_max_seconds(mut self, seconds: u64) -> Self {
        self.max_seconds = seconds;
        self
    }

    /// Sets the sampling rate of CPU profiles, in Hz (1 to [`MAX_FREQUENCY`](crate::Config::MAX_FREQUENCY)).
    ///
    /// ```
    /// let config = profiled::http::Config::default().with_frequency(250).unwrap();
    /// assert!(profiled::http::Config::default().with_frequency(0).is_err());
    /// ```
    pub fn with_frequency(mut self, hz: u32) -> Result<Self, Error> {
        self.profile = self.profile.with_frequency(hz)?;
        Ok(self)
    }

    /// Sets the sampling rate of the process's heap profile (`heap`, `allocs`): one
    /// allocation per `bytes` allocated on average, 512 KiB by default, 1 for every one.
    /// The process has one such profile, started by the first [`router`](super::router) or [`serve`](super::serve): that
    /// one's rate holds.
    ///
    /// ```
    /// let config = profiled::http::Config::default().with_heap_rate(64 * 1024).unwrap();
    /// assert!(profiled::http::Config::default().with_heap_rate(0).is_err());
    /// ```
    pub fn with_heap_rate(mut self, bytes: u64) -> Result<Self, Error> {
        self.profile = self.profile.with_heap_rate(bytes)?;
        Ok(self)
    }

    /// Requires these credentials (HTTP basic auth) of every request [`serve`](super::serve) answers.
    /// With TLS and no credentials set, [`serve`](super::serve) generates them.
    ///
    /// ```
    /// use profiled::http::{Config, Credentials};
    /// let config = Config::default().with_credentials(Credentials::new("ops", "token").unwrap());
    /// assert_eq!(config.credentials().unwrap().user(), "ops");
    /// ```
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The credentials set, if any.
    ///
    /// ```
    /// assert!(profiled::http::Config::default().credentials().is_none());
    /// ```
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Serves over TLS with a certificate of your own: a PEM certificate chain and its
    /// PEM private key, read when the server starts.
    ///
    /// ```
    /// let config = profiled::http::Config::default().with_tls_files("cert.pem", "key.pem");
    /// # drop(config);
    /// ```
    #[cfg(feature = "http-tls")]
    pub fn with_tls_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some(tls::Tls::Files {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Serves over TLS with a certificate profiled makes, signed by a CA of its own that it
    /// generates on the first start and keeps in `dir` (`ca.pem`, and `ca-key.pem` readable
    /// by its owner only). Clients trust that CA: `SSL_CERT_FILE=<dir>/ca.pem go tool pprof
    /// ...`. The certificate names localhost, the address served and `hosts` (names or IP
    /// addresses clients use to reach the server).
    ///
    /// ```
    /// let config = profiled::http::Config::default()
    ///     .with_generated_tls("/var/lib/myservice/pprof-ca", ["myservice.internal"]);
    /// # drop(config);
    /// ```
    #[cfg(feature = "http-tls")]
    pub fn with_generated_tls(
        mut self,
        dir: impl Into<PathBuf>,
        hosts: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.tls = Some(tls::Tls::Generated {
            dir: dir.into(),
            hosts: hosts.into_iter().map(Into::into).collect(),
            clients: self.client_certificates,
        });
        self
    }

    /// With [`with_generated_tls`](Self::with_generated_tls): also require a client
    /// certificate signed by the same CA (mutual TLS), for clients that can present one
    /// (curl, the standalone pprof, a scraper); make them with [`client_certificate`](super::client_certificate).
    /// `go tool pprof` cannot present one: servers it reads keep this off.
    ///
    /// ```
    /// let config = profiled::http::Config::default()
    ///     .with_generated_tls("/var/lib/myservice/pprof-ca", ["myservice.internal"])
    ///     .with_client_certificates(true);
    /// # drop(config);
    /// ```
    #[cfg(feature = "http-tls")]
    pub fn with_client_certificates(mut self, require: bool) -> Self {
        self.client_certificates = require;
        if let Some(tls::Tls::Generated { clients, .. }) = &mut self.tls {
            *clients = require;
        }
        self
    }

    /// Lets [`serve`](super::serve) answer plain HTTP without credentials on an address other than
    /// loopback. Anyone who can reach the port can then read the program's code and
    /// command line and make it spend CPU; [`serve`](super::serve) says so on stderr when it starts.
    ///
    /// ```
    /// let config = profiled::http::Config::default().insecure_plaintext_on_non_loopback(true);
    /// # drop(config);
    /// ```
    pub fn insecure_plaintext_on_non_loopback(mut self, allow: bool) -> Self {
        self.insecure_plaintext = allow;
        self
    }

    #[cfg(feature = "http-tls")]
    pub(super) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    #[cfg(not(feature = "http-tls"))]
    pub(super) fn has_tls(&self) -> bool {
        false
    }
}
