//! [`serve`]: the endpoints on a thread and runtime of their own, with TLS and
//! credentials off loopback, and the `go tool pprof` command line it prints.

use std::net::{SocketAddr, TcpListener as StdListener, ToSocketAddrs};
#[cfg(feature = "http-tls")]
use std::path::PathBuf;

use super::auth::TokenFile;
#[cfg(feature = "http-tls")]
use super::tls;
use super::{Config, RequireAuth, router};
use crate::error::{Error, Repr};

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
