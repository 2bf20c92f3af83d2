//! `/debug/pprof/` for running services: the endpoints Go's net/http/pprof serves, with its
//! parameters, content types, status codes and error texts, so that the unmodified
//! `go tool pprof http://host:port/debug/pprof/profile` reads them.
//!
//! Two ways in: [`router`] to merge into an axum app the service already serves, and
//! [`serve`] for a program without an HTTP server (its own thread and runtime).
//!
//! | path | serves |
//! | --- | --- |
//! | `/debug/pprof/` | an HTML index of what is here |
//! | `/debug/pprof/profile?seconds=N` | a CPU profile of every thread of the process, N seconds (default 30) |
//! | `/debug/pprof/symbol` | function names for `+`-separated addresses (GET query or POST body) |
//! | `/debug/pprof/cmdline` | the command line, arguments separated by NUL bytes |
//! | `/debug/pprof/threads` | every thread's current stack: a profile, or text with `debug=1` |
//! | `/debug/pprof/heap` | sampled allocations since the router was made, `inuse_space` by default; `?seconds=N` for what changed over N seconds, `debug=1` for Go's text (needs [`crate::Alloc`]) |
//! | `/debug/pprof/allocs` | the same, `alloc_space` by default |
//! | `/debug/pprof/block` | waits for [`crate::sync`] locks and condition variables, once [`set_block_profile_rate`](crate::sync::set_block_profile_rate) turned it on; `?seconds=N`, `debug=1` as for `heap` |
//! | `/debug/pprof/mutex` | unlocks of [`crate::sync`] locks that kept others waiting, once [`set_mutex_profile_fraction`](crate::sync::set_mutex_profile_fraction) turned it on; `?seconds=N`, `debug=1` |
//! | anything else under `/debug/pprof/` | 404 `Unknown profile`, as Go answers |
//!
//! Errors are `text/plain` with `X-Go-Pprof: 1`, which is what makes `go tool pprof` print
//! the server's message; every response carries `X-Content-Type-Options: nosniff`.

#![forbid(unsafe_code)]

mod auth;
#[cfg(feature = "http-tls")]
mod tls;

pub use auth::{Authenticated, Credentials, RequireAuth};

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::config::{Config as ProfileConfig, Threads};
use crate::error::{Error, Repr};
use crate::kind::{Format, Trim, ValueType};

/// Go's default CPU profile length when `seconds` is absent, not a number, or not positive.
const DEFAULT_SECONDS: u64 = 30;
/// Longest body `symbol` accepts: far more addresses than any profile needs names for.
const MAX_SYMBOL_BODY: usize = 1 << 20;

/// Settings of the endpoints and of [`serve`]'s server.
///
/// ```
/// let config = profiled::http::Config::default().with_max_seconds(60);
/// assert_eq!(config.max_seconds(), 60);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    max_seconds: u64,
    profile: ProfileConfig,
    credentials: Option<Credentials>,
    #[cfg(feature = "http-tls")]
    tls: Option<tls::Tls>,
    #[cfg(feature = "http-tls")]
    client_certificates: bool,
    insecure_plaintext: bool,
}

impl Default for Config {
    /// At most 300 seconds per CPU profile, sampled at profiled's default rate; no TLS and
    /// no credentials, which [`serve`] accepts on loopback addresses only.
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
    /// The process has one such profile, started by the first [`router`] or [`serve`]: that
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

    /// Requires these credentials (HTTP basic auth) of every request [`serve`] answers.
    /// With TLS and no credentials set, [`serve`] generates them.
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
    /// (curl, the standalone pprof, a scraper); make them with [`client_certificate`].
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

    /// Lets [`serve`] answer plain HTTP without credentials on an address other than
    /// loopback. Anyone who can reach the port can then read the program's code and
    /// command line and make it spend CPU; [`serve`] says so on stderr when it starts.
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
    fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    #[cfg(not(feature = "http-tls"))]
    fn has_tls(&self) -> bool {
        false
    }
}

/// The `/debug/pprof/` routes, to merge into the service's own axum app.
///
/// ```
/// let app: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|| async { "hello" }))
///     .merge(profiled::http::router(&profiled::http::Config::default()));
/// # drop(app);
/// ```
pub fn router(config: &Config) -> Router {
    let _ = service_heap(config.profile.heap_rate);
    let state = Arc::new(config.clone());
    Router::new()
        .route(
            "/debug/pprof",
            get(|| async { Redirect::permanent("/debug/pprof/") }),
        )
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/profile", get(profile))
        .route("/debug/pprof/symbol", get(symbol).post(symbol))
        .route("/debug/pprof/cmdline", get(cmdline))
        .route("/debug/pprof/threads", get(threads))
        .route(
            "/debug/pprof/heap",
            get(|state, query| heap(state, query, crate::Kind::Heap)),
        )
        .route(
            "/debug/pprof/allocs",
            get(|state, query| heap(state, query, crate::Kind::Allocs)),
        )
        .route(
            "/debug/pprof/block",
            get(|state, query| contention(state, query, crate::Kind::Block)),
        )
        .route(
            "/debug/pprof/mutex",
            get(|state, query| contention(state, query, crate::Kind::Mutex)),
        )
        .route("/debug/pprof/{*name}", get(unknown))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_SYMBOL_BODY))
        .layer(axum::middleware::map_response(nosniff))
        .with_state(state)
}

async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error as net/http/pprof sends it: text, `X-Go-Pprof: 1`, no attachment.
pub(crate) fn go_error(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::HeaderName::from_static("x-go-pprof"), "1"),
        ],
        format!("{text}\n"),
    )
        .into_response()
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// The query's value of `key`, as Go's `r.FormValue` finds it (the first one).
fn param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// One CPU profile at a time, as Go allows.
static PROFILING: AtomicBool = AtomicBool::new(false);

struct Busy;

impl Busy {
    fn take() -> Option<Busy> {
        (!PROFILING.swap(true, Ordering::AcqRel)).then_some(Busy)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        PROFILING.store(false, Ordering::Release);
    }
}

async fn profile(State(config): State<Arc<Config>>, RawQuery(query): RawQuery) -> Response {
    let seconds = param(query.as_deref(), "seconds")
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| u64::try_from(s).ok())
        .filter(|&s| s > 0)
        .unwrap_or(DEFAULT_SECONDS);
    if seconds > config.max_seconds {
        return go_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "profile duration exceeds server's WriteTimeout (profiled's maximum is {} seconds)",
                config.max_seconds
            ),
        );
    }
    let Some(busy) = Busy::take() else {
        return go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Could not enable CPU profiling: cpu profiling already in use",
        );
    };
    // Starting opens an event per thread of the process: off the async threads.
    let settings = config.profile.clone();
    let started =
        tokio::task::spawn_blocking(move || crate::Profile::start_shared("profile", &settings))
            .await;
    let profile = match started {
        Ok(Ok(profile)) => profile,
        Err(_) => {
            return go_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Could not enable CPU profiling",
            );
        }
        Ok(Err(e)) => {
            return go_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("Could not enable CPU profiling: {e}"),
            );
        }
    };
    // A client that goes away drops this future: the profile and the busy flag go with it.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let finished = tokio::task::spawn_blocking(move || {
        let report = profile.finish();
        drop(busy);
        report.map(|reports| {
            let gz = reports.first().map(|r| r.pprof_gz().to_vec());
            attachment("profile", gz.unwrap_or_default())
        })
    })
    .await;
    collected(finished)
}

/// A profile as net/http/pprof sends one: gzipped protobuf, an attachment named `name`.
fn attachment(name: &str, gz: Vec<u8>) -> Response {
    let disposition = format!("attachment; filename=\"{name}\"");
    let mut response = (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from(gz),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// What a collection on the blocking pool came to, answered as Go's handlers do.
fn collected(outcome: Result<Result<Response, Error>, tokio::task::JoinError>) -> Response {
    match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("failed to collect profile: {e}"),
        ),
        Err(_) => go_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failed to collect profile",
        ),
    }
}

/// Go's `symbol`: `num_symbols: 1`, then `0x<addr> <function>` for each address that names
/// one. Addresses are `+`-separated, parsed as Go's `strconv.ParseUint(s, 0, 64)` does.
async fn symbol(method: Method, RawQuery(query): RawQuery, body: Bytes) -> Response {
    let input = if method == Method::POST {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        query.unwrap_or_default()
    };
    let addrs: Vec<u64> = input.split('+').filter_map(parse_uint).collect();
    let names = tokio::task::spawn_blocking(move || {
        crate::symbolize::with(|sym| {
            let mut out = String::new();
            for addr in addrs {
                // Only addresses in a loaded object: nothing else has a name, and the
                // symbolizer's cache should not fill with whatever a client sends.
                if !sym.modules.iter().any(|m| m.text.contains(&addr)) {
                    continue;
                }
                if let Some(line) = sym.resolve(addr, false).lines.last() {
                    out.push_str(&format!("{addr:#x} {}\n", line.function));
                }
            }
            out
        })
    })
    .await
    .unwrap_or_default();
    text(format!("num_symbols: 1\n{names}"))
}

/// `strconv.ParseUint(s, 0, 64)`: `0x` hexadecimal, `0o`/`0` octal, `0b` binary, else decimal.
fn parse_uint(s: &str) -> Option<u64> {
    let s = s.trim();
    let lower = s.to_ascii_lowercase();
    let (digits, radix) = if let Some(hex) = lower.strip_prefix("0x") {
        (hex, 16)
    } else if let Some(bin) = lower.strip_prefix("0b") {
        (bin, 2)
    } else if let Some(oct) = lower.strip_prefix("0o") {
        (oct, 8)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (&lower[1..], 8)
    } else {
        (lower.as_str(), 10)
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() || digits.starts_with('+') {
        return None;
    }
    u64::from_str_radix(&digits, radix).ok()
}

/// Every thread's current stack: a pprof profile with one sample per thread, or with
/// `debug=1` (or more) text, one block per thread as Go's `goroutine?debug=2` prints them.
async fn threads(RawQuery(query): RawQuery) -> Response {
    if param(query.as_deref(), "seconds").is_some() {
        return go_error(
            StatusCode::BAD_REQUEST,
            "\"seconds\" parameter is not supported for this profile type",
        );
    }
    let debug = param(query.as_deref(), "debug")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(0);
    let started = std::time::SystemTime::now();
    let dumped = tokio::task::spawn_blocking(move || {
        crate::sampler::thread_stacks().map(|stacks| {
            if debug > 0 {
                text(threads_text(&stacks))
            } else {
                attachment("threads", threads_profile(&stacks, started))
            }
        })
    })
    .await;
    collected(dumped)
}

/// One sample per thread that answered, with its stack, `thread`/`tid` labels and value 1.
fn threads_profile(
    stacks: &[crate::sampler::ThreadStack],
    started: std::time::SystemTime,
) -> Vec<u8> {
    let rows = stacks
        .iter()
        .filter_map(|(thread, stack)| {
            Some(crate::kind::Row {
                thread: Some(thread),
                stack: stack.as_deref()?,
                values: vec![1],
                num_labels: vec![],
                str_labels: Vec::new(),
            })
        })
        .collect();
    let samples = crate::kind::Samples {
        format: &THREADS,
        rows,
        placeholders: Vec::new(),
        period: 1,
        start: started,
        duration: Duration::ZERO,
    };
    let comments = [format!(
        "profiled: threads of process {}",
        std::process::id()
    )];
    crate::report::pprof(&samples, &comments)
}

/// Every thread's stack at one moment, one sample per thread (Go's `goroutine` profile):
/// served by `/debug/pprof/threads`, not a per-test kind.
pub(crate) const THREADS: Format = Format {
    name: "threads",
    sample_types: &[ValueType {
        kind: "threads",
        unit: "count",
    }],
    period_type: ValueType {
        kind: "threads",
        unit: "count",
    },
    main: 0,
    default: 0,
    folded_divisor: 1,
    trim: Trim::NONE,
    headline: |f| format!("threads {}", f.count),
};

/// Each thread as Go prints a goroutine: a header line, then each frame's function and, on
/// the next line after a tab, its file and line, innermost first.
fn threads_text(stacks: &[crate::sampler::ThreadStack]) -> String {
    let mut out = String::new();
    crate::symbolize::with(|sym| {
        for (thread, stack) in stacks {
            let name = thread.name();
            match stack {
                None => out.push_str(&format!(
                    "thread {} \"{name}\" [no answer: it blocks SIGPROF or did not run within \
                     a second]:\n\n",
                    thread.tid
                )),
                Some(stack) => {
                    out.push_str(&format!("thread {} \"{name}\":\n", thread.tid));
                    for (depth, &addr) in stack.iter().enumerate() {
                        if addr == crate::stack::TRUNCATED {
                            out.push_str("...\n\t(frames left out)\n");
                            continue;
                        }
                        for line in sym.resolve(addr, depth > 0).lines.iter() {
                            out.push_str(&format!("{}\n", line.function));
                            match (line.file.is_empty(), line.line) {
                                (true, _) => out.push_str(&format!("\t{addr:#x}\n")),
                                (false, 0) => out.push_str(&format!("\t{}\n", line.file)),
                                (false, n) => out.push_str(&format!("\t{}:{n}\n", line.file)),
                            }
                        }
                    }
                    out.push('\n');
                }
            }
        }
    });
    out
}

/// The process's heap profile behind `heap` and `allocs`: every thread, from the first
/// router on, for the life of the process (Go's is always on). An error when the program's
/// global allocator is not `profiled::Alloc`.
fn service_heap(rate: u64) -> &'static Result<crate::heap::Session, String> {
    SERVICE_HEAP.get_or_init(|| crate::heap::Session::start(rate, true).map_err(|e| e.to_string()))
}

static SERVICE_HEAP: std::sync::OnceLock<Result<crate::heap::Session, String>> =
    std::sync::OnceLock::new();

/// Why `heap` and `allocs` cannot be served, once a router has tried to start them.
fn heap_unavailable() -> Option<&'static str> {
    SERVICE_HEAP.get()?.as_ref().err().map(String::as_str)
}

/// Go's `heap` and `allocs` handlers: the profile so far, or with `seconds` what changed
/// over that many seconds; `debug=1` for the legacy text format.
async fn heap(
    State(config): State<Arc<Config>>,
    RawQuery(query): RawQuery,
    kind: crate::Kind,
) -> Response {
    let rate = config.profile.heap_rate;
    snapshot_endpoint(&config, query, kind, move || match service_heap(rate) {
        Ok(session) => Ok(session.snapshot()),
        Err(e) => Err(e.clone()),
    })
    .await
}

/// A process-wide recording that Go's snapshot endpoints serve (heap, allocs, block,
/// mutex): whole, as what changed over `?seconds=N`, or as Go's legacy text (`debug=1`).
trait Snapshot: crate::kind::Recorded + Send + 'static {
    /// What was recorded after `earlier`, a snapshot of the same recording.
    fn since(self, earlier: &Self) -> Self;
    /// Go's legacy text for `kind`.
    fn text(&self, kind: crate::Kind) -> String;
}

impl Snapshot for crate::heap::Recorded {
    fn since(self, earlier: &Self) -> Self {
        crate::heap::Recorded::since(self, earlier)
    }
    fn text(&self, kind: crate::Kind) -> String {
        let _ = kind; // heap and allocs print the same text, as Go's
        heap_text(self)
    }
}

impl Snapshot for crate::contention::Recorded {
    fn since(self, earlier: &Self) -> Self {
        crate::contention::Recorded::since(self, earlier)
    }
    fn text(&self, kind: crate::Kind) -> String {
        contention_text(self, kind)
    }
}

/// Serves a snapshot endpoint from `take`, which snapshots the recording (or says why
/// there is none: a 500 with its text).
async fn snapshot_endpoint<R: Snapshot>(
    config: &Config,
    query: Option<String>,
    kind: crate::Kind,
    take: impl Fn() -> Result<R, String> + Send + 'static,
) -> Response {
    let (debug, seconds) = match snapshot_params(query.as_deref(), config) {
        Ok(params) => params,
        Err(response) => return response,
    };
    let before = match seconds {
        Some(s) => {
            let before = match take() {
                Ok(before) => before,
                Err(e) => return go_error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            };
            tokio::time::sleep(Duration::from_secs(s)).await;
            Some(before)
        }
        None => None,
    };
    let name = kind.name();
    let made = tokio::task::spawn_blocking(move || {
        let now = match take() {
            Ok(now) => now,
            Err(e) => return Ok(go_error(StatusCode::INTERNAL_SERVER_ERROR, &e)),
        };
        let recorded = match &before {
            Some(before) => now.since(before),
            None => now,
        };
        Ok(if debug > 0 {
            text(recorded.text(kind))
        } else {
            let label = match seconds {
                Some(s) => format!("{name}: what changed over {s} seconds"),
                None => format!("{name} of process {}", std::process::id()),
            };
            attachment(
                name,
                crate::Report::new(&label, kind, recorded.finished(kind))
                    .pprof_gz()
                    .to_vec(),
            )
        })
    })
    .await;
    collected(made)
}

/// The `debug` and `seconds` parameters of Go's snapshot profiles (heap, allocs, block,
/// mutex), or the error response Go gives.
#[allow(clippy::result_large_err)]
fn snapshot_params(query: Option<&str>, config: &Config) -> Result<(i64, Option<u64>), Response> {
    let debug = param(query, "debug")
        .and_then(|d| d.parse::<i64>().ok())
        .unwrap_or(0);
    let seconds = match param(query, "seconds") {
        None => None,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            _ => {
                return Err(go_error(
                    StatusCode::BAD_REQUEST,
                    "invalid value for \"seconds\" - must be a positive integer",
                ));
            }
        },
    };
    if seconds.is_some() && debug != 0 {
        return Err(go_error(
            StatusCode::BAD_REQUEST,
            "seconds and debug params are incompatible",
        ));
    }
    if seconds.is_some_and(|s| s > config.max_seconds) {
        return Err(go_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "profile duration exceeds server's WriteTimeout (profiled's maximum is {} seconds)",
                config.max_seconds
            ),
        ));
    }
    Ok((debug, seconds))
}

/// Go's `block` and `mutex` handlers: the profile so far, or with `seconds` what changed
/// over that many seconds; `debug=1` for the legacy text format.
async fn contention(
    State(config): State<Arc<Config>>,
    RawQuery(query): RawQuery,
    kind: crate::Kind,
) -> Response {
    snapshot_endpoint(&config, query, kind, crate::contention::process_snapshot).await
}

/// Go's legacy text block and mutex profiles (`debug=1`): `--- contention:` (or
/// `--- mutex:`), the clock rate (nanoseconds here, so a cycle is a nanosecond), then each
/// stack's delay and count, its addresses, and one `#` line per frame.
fn contention_text(recorded: &crate::contention::Recorded, kind: crate::Kind) -> String {
    let mutex = kind == crate::Kind::Mutex;
    let format = if mutex {
        &crate::contention::MUTEX
    } else {
        &crate::contention::BLOCK
    };
    let (buckets, header) = if mutex {
        // The values are already scaled up: a period of 1 leaves them as they are.
        (
            &recorded.mutex,
            "--- mutex:\ncycles/second=1000000000\nsampling period=1\n",
        )
    } else {
        (
            &recorded.block,
            "--- contention:\ncycles/second=1000000000\n",
        )
    };
    let mut out = header.to_string();
    crate::symbolize::with(|sym| {
        for b in buckets {
            let head = format!("{} {}", b.delay, b.count.round() as i64);
            stack_text(&mut out, sym, &head, &b.stack, format);
        }
    });
    out
}

/// One record of Go's legacy text formats: `head @ addresses`, then a `#` line per frame
/// (the kind's own leading frames left out, as in its protobuf profile), then a blank line.
fn stack_text(
    out: &mut String,
    sym: &mut crate::symbolize::Symbolizer,
    head: &str,
    stack: &[u64],
    format: &crate::kind::Format,
) {
    let mut frames = Vec::new();
    let mut trimming = true;
    for (depth, &addr) in stack.iter().enumerate() {
        let resolved = sym.resolve(addr, depth > 0);
        if trimming
            && resolved
                .lines
                .iter()
                .all(|l| format.trims(&l.function, &l.file))
        {
            continue;
        }
        trimming = false;
        frames.push((addr, resolved));
    }
    out.push_str(head);
    out.push_str(" @");
    for (addr, _) in &frames {
        out.push_str(&format!(" {addr:#x}"));
    }
    out.push('\n');
    for (addr, resolved) in &frames {
        for line in resolved.lines.iter() {
            out.push_str(&format!(
                "#\t{addr:#x}\t{}+0x0\t{}:{}\n",
                line.function, line.file, line.line
            ));
        }
    }
    out.push('\n');
}

/// Go's legacy text heap profile (`debug=1`): a header with the totals and the sampling
/// rate, then each (stack, size) with its raw sampled counts (`in use: bytes [allocated:
/// bytes]`), its addresses, and one `#` line per frame. `go tool pprof` reads it, unbiasing
/// with the header's rate, and names the addresses through `/debug/pprof/symbol`.
fn heap_text(recorded: &crate::heap::Recorded) -> String {
    let size = |b: &crate::heap::Bucket, n: i64| n.saturating_mul(b.size as i64);
    let live = |b: &crate::heap::Bucket| b.allocs.saturating_sub(b.frees);
    let (mut inuse, mut inuse_bytes, mut allocs, mut alloc_bytes) = (0i64, 0i64, 0i64, 0i64);
    for b in &recorded.buckets {
        inuse += live(b);
        inuse_bytes += size(b, live(b));
        allocs += b.allocs;
        alloc_bytes += size(b, b.allocs);
    }
    let mut out = format!(
        "heap profile: {inuse}: {inuse_bytes} [{allocs}: {alloc_bytes}] @ heap/{}\n",
        recorded.rate.saturating_mul(2)
    );
    crate::symbolize::with(|sym| {
        for b in &recorded.buckets {
            let head = format!(
                "{}: {} [{}: {}]",
                live(b),
                size(b, live(b)),
                b.allocs,
                size(b, b.allocs)
            );
            stack_text(&mut out, sym, &head, &b.stack, &crate::heap::HEAP);
        }
    });
    out
}

async fn cmdline() -> Response {
    text(std::env::args().collect::<Vec<_>>().join("\0"))
}

async fn unknown() -> Response {
    go_error(StatusCode::NOT_FOUND, "Unknown profile")
}

async fn index() -> Response {
    const ENTRIES: &[(&str, &str)] = &[
        (
            "cmdline",
            "The command line invocation of the current program",
        ),
        (
            "profile",
            "CPU profile of every thread of the process. You can specify the duration in the \
             seconds GET parameter. After you get the profile file, use the go tool pprof \
             command to investigate the profile.",
        ),
        (
            "symbol",
            "Function names for program counters: go tool pprof asks it for addresses a \
             profile does not name (profiled's profiles name them all).",
        ),
        (
            "threads",
            "Stack traces of all current threads. Use debug=1 for text, one block per \
             thread as Go prints goroutines.",
        ),
        (
            "allocs",
            "A sampling of all past memory allocations (needs profiled::Alloc as the global \
             allocator)",
        ),
        (
            "block",
            "Stack traces that led to blocking on profiled::sync locks and condition \
             variables (turned on by profiled::http::set_block_profile_rate)",
        ),
        (
            "heap",
            "A sampling of memory allocations of live objects. You can specify the gc GET \
             parameter to run GC before taking the heap sample (ignored: Rust has no GC).",
        ),
        (
            "mutex",
            "Stack traces of holders of contended profiled::sync locks (turned on by \
             profiled::http::set_mutex_profile_fraction)",
        ),
    ];
    let mut html = String::from(
        "<html>\n<head>\n<title>/debug/pprof/</title>\n</head>\n<body>\n/debug/pprof/\n<br>\n\
         <p>Served by profiled: read these with go tool pprof, e.g. \
         <code>go tool pprof http://HOST/debug/pprof/profile?seconds=30</code></p>\n\
         Types of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n",
    );
    // Counts as Go shows them, where there is something to count. Without profiled's
    // allocator wrapper, heap and allocs can only answer with an error: not listed as
    // profiles, but said why below, so that nobody follows a link to a 500.
    let threads = crate::sys::thread_ids().map(|t| t.len()).ok();
    let unavailable = heap_unavailable();
    let served = |name: &str| !(unavailable.is_some() && matches!(name, "heap" | "allocs"));
    for (name, _) in ENTRIES.iter().filter(|(name, _)| served(name)) {
        let (count, link) = match (*name, threads) {
            ("threads", Some(n)) => (n.to_string(), "threads?debug=1"),
            _ => (String::new(), *name),
        };
        html.push_str(&format!(
            "<tr><td>{count}</td><td><a href='{link}'>{name}</a></td></tr>\n"
        ));
    }
    html.push_str("</table>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n");
    for (name, what) in ENTRIES.iter().filter(|(name, _)| served(name)) {
        html.push_str(&format!(
            "<li><div class=profile-name>{name}: </div> {what}</li>\n"
        ));
    }
    if let Some(why) = unavailable {
        html.push_str(&format!(
            "<li><div class=profile-name>heap, allocs: </div> not served: {}</li>\n",
            escape_html(why)
        ));
    }
    html.push_str("</ul>\n</p>\n</body>\n</html>\n");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// `text` safe inside HTML.
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A `/debug/pprof/` server on its own thread, from [`serve`]. Dropping it (or [`stop`])
/// shuts the server down.
///
/// [`stop`]: Server::stop
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    command: String,
    token: Option<TokenFile>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// The address the server listens on (with the port the system chose, for port 0).
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
    /// assert!(server.local_addr().ip().is_loopback());
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shell command that reads a CPU profile from this server, as printed when it
    /// started. It never holds the token: generated credentials' token is read from
    /// [`token_file`](Self::token_file) (`$(cat FILE)`), your own from `$PPROF_TOKEN`.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
    /// assert!(server.pprof_command().starts_with("go tool pprof \"http://127.0.0.1:"));
    /// # }
    /// ```
    pub fn pprof_command(&self) -> &str {
        &self.command
    }

    /// The file that holds the token of credentials [`serve`] generated (TLS without
    /// [`Config::with_credentials`]), readable by its owner only: `token` beside a generated
    /// CA, kept across restarts, or a file in a private directory removed when the server
    /// stops. `None` when there are no generated credentials.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
    /// assert!(server.token_file().is_none()); // no TLS: no generated credentials
    /// # }
    /// ```
    pub fn token_file(&self) -> Option<&std::path::Path> {
        self.token.as_ref().map(|t| t.path.as_path())
    }

    /// Stops serving and waits for the server's thread to end. A CPU profile in progress
    /// is abandoned.
    ///
    /// ```
    /// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
    /// let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
    /// server.stop();
    /// # }
    /// ```
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Serves `/debug/pprof/` on `addr` from a thread of its own, for programs without an HTTP
/// server, and prints the `go tool pprof` line that reads it.
///
/// On loopback addresses plain HTTP is accepted. Any other address needs TLS
/// ([`Config::with_generated_tls`] or [`Config::with_tls_files`], feature `http-tls`) and
/// credentials (set, or generated when TLS is on), or the loudly named
/// [`Config::insecure_plaintext_on_non_loopback`].
///
/// ```
/// # #[cfg(all(target_os = "linux", target_arch = "x86_64"))] {
/// let server = profiled::http::serve("127.0.0.1:0", profiled::http::Config::default()).unwrap();
/// println!("{}", server.pprof_command());
/// # }
/// ```
pub fn serve(
    addr: impl ToSocketAddrs,
    #[cfg_attr(not(feature = "http-tls"), allow(unused_mut))] mut config: Config,
) -> Result<Server, Error> {
    let refuse = |what: String| Error::from(Repr::Serve { what, source: None });
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| {
            Error::from(Repr::Serve {
                what: "the address to serve /debug/pprof/ on".into(),
                source: Some(e),
            })
        })?
        .collect();
    let exposed = addrs.iter().find(|a| !a.ip().is_loopback()).copied();
    #[cfg(feature = "http-tls")]
    if config.client_certificates && !matches!(config.tls, Some(tls::Tls::Generated { .. })) {
        return Err(refuse(
            "client certificates need a CA to check them against: accepted with \
             Config::with_generated_tls (whose CA signs them), not with your own certificate \
             files or without TLS"
                .into(),
        ));
    }
    // Generated credentials' token goes to a file only its owner reads; the line printed
    // reads it from there, so that the token never lands in the service's logs.
    #[cfg(feature = "http-tls")]
    let token = match (&config.tls, &config.credentials) {
        (Some(tls), None) => {
            let (credentials, file) = tls::generated_credentials(tls)?;
            config.credentials = Some(credentials);
            Some(file)
        }
        _ => None,
    };
    #[cfg(not(feature = "http-tls"))]
    let token: Option<TokenFile> = None;
    if let Some(open) = exposed {
        let secured = config.has_tls() && config.credentials.is_some();
        if !secured && !config.insecure_plaintext {
            return Err(refuse(format!(
                "refusing to serve /debug/pprof/ on {open} without TLS and credentials: the \
                 endpoints show the program's code and command line and make it spend CPU; \
                 accepted: a loopback address (127.0.0.1, [::1]), or TLS \
                 (Config::with_generated_tls or Config::with_tls_files, cargo feature \
                 `http-tls`) with credentials (Config::with_credentials, generated when \
                 unset), or Config::insecure_plaintext_on_non_loopback(true)"
            )));
        }
        if !secured {
            crate::output::notice(&format!(
                "warning: /debug/pprof/ is served on {open} in plain HTTP{}: anyone who can \
                 reach the port can read the program's code and make it spend CPU \
                 (insecure_plaintext_on_non_loopback)",
                if config.credentials.is_some() {
                    ", credentials readable on the wire"
                } else {
                    " without credentials"
                }
            ));
        }
    }
    let failed = |what: String| {
        move |e| {
            Error::from(Repr::Serve {
                what,
                source: Some(e),
            })
        }
    };
    let listener = StdListener::bind(&addrs[..])
        .map_err(failed(format!("cannot listen on {}", describe(&addrs))))?;
    let local = listener
        .local_addr()
        .map_err(failed("cannot read the listening address".into()))?;
    listener
        .set_nonblocking(true)
        .map_err(failed("cannot make the listener non-blocking".into()))?;
    #[cfg(feature = "http-tls")]
    let acceptor = match &config.tls {
        Some(tls) => Some(tls::acceptor(tls, local)?),
        None => None,
    };
    let mut app = router(&config);
    if let Some(credentials) = &config.credentials {
        app = app.layer(RequireAuth::new(credentials));
    }
    let command = pprof_command(&config, local, token.as_ref().map(|t| t.path.as_path()));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("profiled-http".into())
        .spawn(move || {
            crate::membership::own_thread();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    crate::output::notice(&format!("cannot start the /debug/pprof/ server: {e}"));
                    return;
                }
            };
            // Stopping drops the server and then the runtime, which cancels every
            // connection's task: a profile in progress is abandoned, not waited for.
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(e) => {
                        crate::output::notice(&format!("the /debug/pprof/ server stopped: {e}"));
                        return;
                    }
                };
                #[cfg(feature = "http-tls")]
                let serving = async move {
                    match acceptor {
                        Some(acceptor) => match tls::TlsListener::new(listener, acceptor) {
                            Ok(tls) => axum::serve(tls, app).await,
                            Err(e) => Err(e),
                        },
                        None => axum::serve(listener, app).await,
                    }
                };
                #[cfg(not(feature = "http-tls"))]
                let serving = async move { axum::serve(listener, app).await };
                tokio::select! {
                    served = serving => {
                        if let Err(e) = served {
                            crate::output::notice(&format!("the /debug/pprof/ server stopped: {e}"));
                        }
                    }
                    _ = rx => {}
                }
            });
        })
        .map_err(failed(
            "cannot start the /debug/pprof/ server's thread".into(),
        ))?;
    crate::output::notice(&format!(
        "/debug/pprof/ served on {local}; read it with: {command}{}",
        other_names(&config, local)
    ));
    Ok(Server {
        addr: local,
        command,
        token,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

/// Makes a client certificate for [`Config::with_client_certificates`]: signed by the CA in
/// `dir` (the one [`Config::with_generated_tls`] keeps there; made if absent), written there
/// as `<name>.pem` with its key `<name>-key.pem` (readable by the owner only). Returns the
/// two paths, for `curl --cacert <dir>/ca.pem --cert <name>.pem --key <name>-key.pem ...`.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let (cert, key) = profiled::http::client_certificate(dir.path(), "scraper").unwrap();
/// assert!(cert.ends_with("scraper.pem") && key.ends_with("scraper-key.pem"));
/// ```
#[cfg(feature = "http-tls")]
pub fn client_certificate(
    dir: impl AsRef<std::path::Path>,
    name: &str,
) -> Result<(PathBuf, PathBuf), Error> {
    tls::client_certificate(dir.as_ref(), name)
}

/// Where generated credentials' token is kept: the operator reads it there.
#[derive(Debug)]
struct TokenFile {
    path: PathBuf,
    /// A private directory of the server's own, removed with it (TLS with the user's own
    /// certificate files: no directory of profiled's to keep the token in).
    #[cfg_attr(not(feature = "http-tls"), allow(dead_code))]
    _dir: Option<tempfile::TempDir>,
}

/// The line to paste: `[SSL_CERT_FILE=<ca.pem>] go tool pprof "<url of a CPU profile>"`.
/// The host is the address served on (localhost for all of them), which the generated
/// certificate always names and which resolves wherever the line is pasted on this machine.
/// The token is never in it: read from `token` (generated), or from `$PPROF_TOKEN` for
/// credentials of the user's own.
fn pprof_command(config: &Config, addr: SocketAddr, token: Option<&std::path::Path>) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    #[cfg(feature = "http-tls")]
    let (scheme, trust) = match &config.tls {
        Some(tls::Tls::Generated { dir, .. }) => (
            "https",
            format!(
                "SSL_CERT_FILE={} ",
                crate::output::display_path(&dir.join(tls::CA_CERT))
            ),
        ),
        Some(tls::Tls::Files { .. }) => ("https", String::new()),
        None => ("http", String::new()),
    };
    #[cfg(not(feature = "http-tls"))]
    let (scheme, trust) = ("http", String::new());
    let user = match (&config.credentials, token) {
        (Some(c), Some(path)) => format!(
            "{}:$(cat '{}')@",
            c.user(),
            crate::output::display_path(path)
        ),
        (Some(c), None) => format!("{}:$PPROF_TOKEN@", c.user()),
        (None, _) => String::new(),
    };
    format!(
        "{trust}go tool pprof \"{scheme}://{user}{host}:{}/debug/pprof/profile?seconds=30\"",
        addr.port()
    )
}

/// The generated certificate's other names, for reading the endpoint from elsewhere.
fn other_names(config: &Config, addr: SocketAddr) -> String {
    #[cfg(feature = "http-tls")]
    if let Some(tls::Tls::Generated { hosts, .. }) = &config.tls {
        let served = addr.ip().to_string();
        let others: Vec<&str> = hosts
            .iter()
            .map(String::as_str)
            .filter(|h| *h != served && *h != "localhost")
            .collect();
        if !others.is_empty() {
            return format!(
                " (its certificate also names {}: one of those in place of the host reads \
                 it from elsewhere)",
                others.join(", ")
            );
        }
    }
    let _ = (config, addr);
    String::new()
}

fn describe(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_as_go_parses_them() {
        assert_eq!(parse_uint("0x1f"), Some(0x1f));
        assert_eq!(parse_uint("0X1F"), Some(0x1f));
        assert_eq!(parse_uint("31"), Some(31));
        assert_eq!(parse_uint("017"), Some(0o17));
        assert_eq!(parse_uint("0b11"), Some(3));
        assert_eq!(parse_uint("0"), Some(0));
        assert_eq!(parse_uint(""), None);
        assert_eq!(parse_uint("0x"), None);
        assert_eq!(parse_uint("-1"), None);
        assert_eq!(parse_uint("0x+1"), None);
        assert_eq!(parse_uint("18446744073709551616"), None);
        assert_eq!(parse_uint("zz"), None);
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            param(Some("a=1&seconds=5"), "seconds").as_deref(),
            Some("5")
        );
        assert_eq!(param(Some("seconds=%35"), "seconds").as_deref(), Some("5"));
        assert_eq!(param(None, "seconds"), None);
        assert_eq!(param(Some("seconds"), "seconds").as_deref(), Some(""));
    }
}
