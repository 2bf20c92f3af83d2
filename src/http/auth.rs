//! HTTP basic auth for the endpoints: what `go tool pprof` sends from a URL's
//! `https://user:token@host/...`, the one credential it can present.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::error::{Error, Repr};

/// A user name and token that requests must present, with HTTP basic auth.
///
/// ```
/// let generated = profiled::http::Credentials::generate();
/// assert_eq!(generated.user(), "pprof");
/// assert_eq!(generated.token().len(), 64);
/// let own = profiled::http::Credentials::new("ops", "s3cret-token").unwrap();
/// assert!(profiled::http::Credentials::new("a:b", "t").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    token: String,
}

impl Credentials {
    /// Credentials of your own. The user may not contain `:` (basic auth's separator);
    /// neither may be empty or contain control characters or spaces, which do not survive
    /// a URL.
    ///
    /// ```
    /// let c = profiled::http::Credentials::new("ops", "token").unwrap();
    /// assert_eq!(c.user(), "ops");
    /// ```
    pub fn new(user: impl Into<String>, token: impl Into<String>) -> Result<Credentials, Error> {
        let (user, token) = (user.into(), token.into());
        let bad = |what: &str| {
            Error::from(Repr::Serve {
                what: format!(
                    "credentials: {what}; accepted: a non-empty user without `:` and a non-empty \
                 token, both printable ASCII without spaces"
                ),
                source: None,
            })
        };
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if user.is_empty() || user.contains(':') || !printable(&user) {
            return Err(bad(&format!("the user {user:?} cannot be used")));
        }
        if token.is_empty() || !printable(&token) {
            return Err(bad(
                "the token is empty or has characters other than printable ASCII",
            ));
        }
        Ok(Credentials { user, token })
    }

    /// User `pprof` and a token of 256 random bits (64 hexadecimal digits) from the
    /// operating system's generator.
    ///
    /// ```
    /// let (a, b) = (profiled::http::Credentials::generate(), profiled::http::Credentials::generate());
    /// assert_ne!(a.token(), b.token());
    /// ```
    pub fn generate() -> Credentials {
        let mut bytes = [0u8; 32];
        // The OS generator failing leaves no safe token to make: say so rather than serve
        // with a guessable one.
        if let Err(e) = getrandom::fill(&mut bytes) {
            panic!("profiled: the operating system's random generator failed: {e}");
        }
        Credentials {
            user: "pprof".into(),
            token: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The user name.
    ///
    /// ```
    /// assert_eq!(profiled::http::Credentials::new("ops", "t").unwrap().user(), "ops");
    /// ```
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The token (the basic-auth password).
    ///
    /// ```
    /// assert_eq!(profiled::http::Credentials::new("ops", "t").unwrap().token(), "t");
    /// ```
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The `Authorization` header value a client with these credentials sends.
    fn header(&self) -> Vec<u8> {
        let pair = format!("{}:{}", self.user, self.token);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        format!("Basic {encoded}").into_bytes()
    }
}

impl fmt::Debug for Credentials {
    /// The token stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A tower layer that lets through only requests with the given credentials (HTTP basic
/// auth) and answers every other one with `401 Unauthorized`, `X-Go-Pprof: 1` and a short
/// text, before anything behind it runs. The comparison takes the same time whatever
/// part of the header is wrong.
///
/// ```
/// use profiled::http::{router, Config, Credentials, RequireAuth};
/// let credentials = Credentials::generate();
/// let app: axum::Router = router(&Config::default()).layer(RequireAuth::new(&credentials));
/// # drop(app);
/// ```
#[derive(Clone)]
pub struct RequireAuth {
    expected: Arc<[u8]>,
}

impl RequireAuth {
    /// Requires `credentials`.
    ///
    /// ```
    /// let layer = profiled::http::RequireAuth::new(&profiled::http::Credentials::generate());
    /// # drop(layer);
    /// ```
    pub fn new(credentials: &Credentials) -> RequireAuth {
        RequireAuth {
            expected: credentials.header().into(),
        }
    }

    fn allows(&self, value: Option<&[u8]>) -> bool {
        // Slices of different lengths compare unequal at once; the expected length is no
        // secret (the token's length is fixed), the contents are compared in constant time.
        bool::from(value.unwrap_or_default().ct_eq(&self.expected))
    }
}

impl fmt::Debug for RequireAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireAuth").finish_non_exhaustive()
    }
}

impl<S> tower_layer::Layer<S> for RequireAuth {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.clone(),
        }
    }
}

/// The service [`RequireAuth`] wraps around another.
#[derive(Clone, Debug)]
pub struct Authenticated<S> {
    inner: S,
    auth: RequireAuth,
}

impl<S, B> tower_service::Service<Request<B>> for Authenticated<S>
where
    S: tower_service::Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if self.auth.allows(presented) {
            Box::pin(self.inner.call(request))
        } else {
            Box::pin(std::future::ready(Ok(unauthorized())))
        }
    }
}

fn unauthorized() -> Response {
    let mut response = super::go_error(StatusCode::UNAUTHORIZED, "Unauthorized");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"pprof\""),
    );
    response.headers_mut().insert(
        "x-content-type-options",
        header::HeaderValue::from_static("nosniff"),
    );
    response.into_response()
}

/// Where generated credentials' token is kept: the operator reads it there.
#[derive(Debug)]
pub(super) struct TokenFile {
    pub(super) path: PathBuf,
    /// A private directory of the server's own, removed with it (TLS with the user's own
    /// certificate files: no directory of profiled's to keep the token in).
    #[cfg_attr(not(feature = "http-tls"), allow(dead_code))]
    pub(super) _dir: Option<tempfile::TempDir>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_header_is_allowed() {
        let c = Credentials::new("pprof", "token").unwrap();
        let auth = RequireAuth::new(&c);
        // base64("pprof:token")
        assert!(auth.allows(Some(b"Basic cHByb2Y6dG9rZW4=")));
        assert!(!auth.allows(Some(b"Basic cHByb2Y6dG9rZW5=")));
        assert!(!auth.allows(Some(b"Basic cHByb2Y6dG9rZW4")));
        assert!(!auth.allows(Some(b"basic cHByb2Y6dG9rZW4=")));
        assert!(!auth.allows(Some(b"")));
        assert!(!auth.allows(None));
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let c = Credentials::new("pprof", "hunter2hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn generated_tokens_are_256_bits_of_hex() {
        let c = Credentials::generate();
        assert_eq!(c.token().len(), 64);
        assert!(c.token().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
