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
mod config;
mod server;
mod text;
#[cfg(feature = "http-tls")]
mod tls;

pub use auth::{Authenticated, Credentials, RequireAuth};
pub use config::Config;
#[cfg(feature = "http-tls")]
pub use server::client_certificate;
pub use server::{Server, serve};
use text::{contention_text, heap_text, threads_text};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::error::Error;
use crate::kind::{Format, Trim, ValueType};

/// Go's default CPU profile length when `seconds` is absent, not a number, or not positive.
const DEFAULT_SECONDS: u64 = 30;
/// Longest body `symbol` accepts: far more addresses than any profile needs names for.
const MAX_SYMBOL_BODY: usize = 1 << 20;

/// The `/debug/pprof/` routes, to merge into the service's own axum app. The first call
/// (or [`serve`]'s) also starts the process's heap profile, which `heap` and `allocs` serve
/// from then on: Go's is always on, and one started at the first request would show
/// nothing yet. It needs [`crate::Alloc`]; without it those two endpoints say so.
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
