//! TLS for the standalone server: the user's own certificate, or one signed by a private CA
//! that profiled makes once and keeps, which `go tool pprof` trusts through Go's
//! `SSL_CERT_FILE` variable.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::auth::{Credentials, TokenFile};
use crate::error::{Error, Repr};

/// Where the server's certificate comes from.
#[derive(Clone, Debug)]
pub(crate) enum Tls {
    /// PEM files of the user's own: the certificate chain and its private key.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate profiled signs with its CA, kept in `dir` (`ca.pem`, `ca-key.pem`),
    /// for these host names and addresses besides localhost and the bound address; with
    /// `clients`, clients must present a certificate from the same CA (mutual TLS).
    Generated {
        dir: PathBuf,
        hosts: Vec<String>,
        clients: bool,
    },
}

/// The CA's files in its directory.
pub(crate) const CA_CERT: &str = "ca.pem";
/// Generated credentials' token, beside the CA (owner-only, like its key).
pub(crate) const TOKEN: &str = "token";
const CA_KEY: &str = "ca-key.pem";
/// A handshake that takes longer is dropped, so a client that stalls holds nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> Error {
    let what = what.into();
    move |e| {
        Error::from(Repr::Serve {
            what: format!("{what}: {e}"),
            source: None,
        })
    }
}

fn io_failed(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| {
        Error::from(Repr::Serve {
            what,
            source: Some(e),
        })
    }
}

/// Credentials for a TLS server that was given none, and the file their token is in: beside
/// a generated CA ([`kept_token`]), or, with the user's own certificate files, in a private
/// directory of the server's own, removed when it stops.
pub(crate) fn generated_credentials(tls: &Tls) -> Result<(Credentials, TokenFile), Error> {
    match tls {
        Tls::Generated { dir, .. } => {
            let (credentials, path) = kept_token(dir)?;
            Ok((credentials, TokenFile { path, _dir: None }))
        }
        Tls::Files { .. } => {
            // tempfile makes the directory 0700.
            let dir = tempfile::Builder::new()
                .prefix("profiled-pprof-")
                .tempdir()
                .map_err(io_failed("cannot make a directory for the token"))?;
            let path = dir.path().join(TOKEN);
            let credentials = new_token(&path)?;
            Ok((
                credentials,
                TokenFile {
                    path,
                    _dir: Some(dir),
                },
            ))
        }
    }
}

/// Generated credentials for a server whose CA is kept in `dir`: their token is kept in
/// `dir/token`, readable by the owner only, made on the first start and read back on later
/// ones, so that the operator and scrapers read it from there (never from the logs) and
/// keep working across restarts. Returns them and the file.
fn kept_token(dir: &Path) -> Result<(Credentials, PathBuf), Error> {
    let path = dir.join(TOKEN);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let credentials = Credentials::new("pprof", text.trim()).map_err(|e| Error::from(Repr::Serve {
                what: format!(
                    "the token file {} holds no usable token ({e}); remove it to have a new one \
                     made",
                    path.display()
                ),
                source: None,
            }))?;
            Ok((credentials, path))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((new_token(&path)?, path)),
        Err(e) => Err(Error::from(Repr::Serve {
            what: format!("cannot read the token file {}", path.display()),
            source: Some(e),
        })),
    }
}

/// New credentials, their token written to `path` through a temporary file (created 0600)
/// renamed into place: readable by the owner only, never half-written.
fn new_token(path: &Path) -> Result<Credentials, Error> {
    let credentials = Credentials::generate();
    crate::output::write_atomic(path, format!("{}\n", credentials.token()).as_bytes())?;
    Ok(credentials)
}

/// The CA's parameters: the same on every start, so a key read back from `ca-key.pem`
/// signs certificates that chain to the `ca.pem` made on the first start.
fn ca_params() -> Result<CertificateParams, Error> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(failed("cannot describe the CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "profiled /debug/pprof CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    Ok(params)
}

/// The CA in `dir`, made (and written, private key `0600`) if it is not there yet.
fn load_or_create_ca(dir: &Path) -> Result<Issuer<'static, KeyPair>, Error> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if cert_path.is_file() && key_path.is_file() {
        let pem = std::fs::read_to_string(&key_path).map_err(io_failed(format!(
            "cannot read the CA key {}",
            key_path.display()
        )))?;
        let key = KeyPair::from_pem(&pem).map_err(failed(format!(
            "cannot use the CA key {}",
            key_path.display()
        )))?;
        return Ok(Issuer::new(ca_params()?, key));
    }
    std::fs::create_dir_all(dir).map_err(io_failed(format!(
        "cannot create the CA directory {}",
        dir.display()
    )))?;
    let key = KeyPair::generate().map_err(failed("cannot generate the CA key"))?;
    let params = ca_params()?;
    let cert = params
        .self_signed(&key)
        .map_err(failed("cannot sign the CA certificate"))?;
    // Written through a temporary file, which is created 0600, and renamed into place:
    // the key is never readable by others, and never half-written.
    crate::output::write_atomic(&key_path, key.serialize_pem().as_bytes())?;
    crate::output::write_atomic(&cert_path, cert.pem().as_bytes())?;
    Ok(Issuer::new(params, key))
}

/// A certificate for one year, for `names` (DNS names or IP addresses; none for a client),
/// with common name `common` and extended usage `usage`, signed by `issuer`; and its key.
fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
    common: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(rcgen::Certificate, KeyPair), Error> {
    let mut params =
        CertificateParams::new(names).map_err(failed("cannot use the names for a certificate"))?;
    params.distinguished_name.push(DnType::CommonName, common);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(365);
    let key = KeyPair::generate().map_err(failed("cannot generate a key"))?;
    let cert = params
        .signed_by(&key, issuer)
        .map_err(failed("cannot sign a certificate"))?;
    Ok((cert, key))
}

/// A server certificate for `names` signed by `issuer`.
fn server_cert(
    issuer: &Issuer<'static, KeyPair>,
    names: Vec<String>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let (cert, key) = leaf(
        issuer,
        names,
        "profiled /debug/pprof server",
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((vec![cert.der().clone()], key))
}

/// Signs a client certificate named `name` with the CA in `dir` (made if absent) and writes
/// it and its key (readable by the owner only) there: `<name>.pem`, `<name>-key.pem`.
pub(crate) fn client_certificate(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf), Error> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::from(Repr::Serve {
            what: format!(
                "client certificate name {name:?}: accepted: letters, digits, `-` and `_` \
                 (it names the files)"
            ),
            source: None,
        }));
    }
    let issuer = load_or_create_ca(dir)?;
    let (cert, key) = leaf(
        &issuer,
        Vec::new(),
        name,
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    crate::output::write_atomic(&key_path, key.serialize_pem().as_bytes())?;
    crate::output::write_atomic(&cert_path, cert.pem().as_bytes())?;
    Ok((cert_path, key_path))
}

/// The names a generated certificate covers: localhost, the bound address, and the user's.
fn names(addr: SocketAddr, hosts: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if !addr.ip().is_unspecified() {
        names.push(addr.ip().to_string());
    }
    names.extend(hosts.iter().cloned());
    names.sort();
    names.dedup();
    names
}

/// The server's TLS settings for `tls`, served at `addr`.
pub(crate) fn acceptor(tls: &Tls, addr: SocketAddr) -> Result<TlsAcceptor, Error> {
    let (chain, key) = match tls {
        Tls::Files { cert, key } => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::from(Repr::Serve {
                        what: format!("cannot read the certificate chain {}: {e}", cert.display()),
                        source: None,
                    })
                })?;
            let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::from(Repr::Serve {
                    what: format!("cannot read the private key {}: {e}", key.display()),
                    source: None,
                })
            })?;
            (chain, private)
        }
        Tls::Generated { dir, hosts, .. } => {
            let issuer = load_or_create_ca(dir)?;
            server_cert(&issuer, names(addr, hosts))?
        }
    };
    // ring's provider, chosen because it builds with a C compiler alone (aws-lc-rs adds
    // minutes of build and, off Linux, NASM). rustls 0.23.48 deprecated it for lacking
    // post-quantum key exchange: clients that offer X25519MLKEM768 (Go 1.24+) settle on
    // X25519 with it, the key exchange most TLS still uses. Taken
    // explicitly, never as the process's default provider: that would be a side effect on
    // the program's own TLS.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls_error = |e: &dyn std::fmt::Display| {
        Error::from(Repr::Serve {
            what: format!("cannot set up TLS: {e}"),
            source: None,
        })
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(&e))?;
    let builder = match tls {
        Tls::Generated {
            dir, clients: true, ..
        } => {
            let mut roots = rustls::RootCertStore::empty();
            let ca = CertificateDer::from_pem_file(dir.join(CA_CERT)).map_err(|e| tls_error(&e))?;
            roots.add(ca).map_err(|e| tls_error(&e))?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| tls_error(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepted connections after their handshakes, for `axum::serve`. Handshakes run on tasks
/// of their own, so a client that stalls in one delays nobody else.
pub(crate) struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else {
                    // Out of file descriptors and the like: wait rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    if let Ok(Ok(stream)) = handshake.await {
                        let _ = tx.send((stream, peer)).await;
                    }
                });
            }
        });
        Ok(TlsListener { accepted, addr })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accepting task only ends once the server is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let tls = Tls::Generated {
            dir: dir.path().to_path_buf(),
            hosts: vec!["pprof.example".into()],
            clients: false,
        };
        acceptor(&tls, addr).unwrap();
        let first = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let key = std::fs::read(dir.path().join(CA_KEY)).unwrap();
        acceptor(&tls, addr).unwrap();
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), first);
        assert_eq!(std::fs::read(dir.path().join(CA_KEY)).unwrap(), key);
    }

    #[test]
    fn names_cover_localhost_the_address_and_the_users_hosts() {
        let addr: SocketAddr = "10.1.2.3:6060".parse().unwrap();
        let got = names(addr, &["pprof.example".into()]);
        for want in ["localhost", "127.0.0.1", "::1", "10.1.2.3", "pprof.example"] {
            assert!(got.iter().any(|n| n == want), "{want} in {got:?}");
        }
        let any: SocketAddr = "0.0.0.0:6060".parse().unwrap();
        assert!(!names(any, &[]).iter().any(|n| n == "0.0.0.0"));
    }
}
