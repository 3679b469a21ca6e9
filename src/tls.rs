//! TLS 1.3 on the listener and on TCP paths (rustls with the *ring*
//! provider; TLS 1.2 and older are never negotiated).
//!
//! Why a module of its own: the configuration (`[Tls]`), the listener, the
//! upstream probe and TCP paths all need the same three things, and each
//! must get them the same way: certificates and keys read from PEM files
//! once, at configuration load (so a bad file is a configuration error, not
//! a failure at the first connection); a server or client configuration
//! built from them; and what a finished handshake tells the session layer
//! ([`ChannelBinding`]): a keying-material exporter (RFC 8446 §7.5) that
//! binds a merge cookie to the one connection it was sent on, and the
//! fingerprint of the peer's client certificate.
//!
//! ALPN: ESI clients and the upstream probe speak `h2`; RESI TCP paths
//! offer `resi/1`. The listener accepts both and still tells them apart by
//! their first bytes (inside TLS), so a client that sends no ALPN works.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hmac::{Hmac, Mac};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// ALPN of HTTP/2 (ESI clients, the upstream probe).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of a RESI TCP path.
pub const ALPN_RESI: &[u8] = b"resi/1";
/// Exporter label of the merge binding (RFC 8446 §7.5; no context).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-resi-merge";
/// Length of the exporter output and of a binding.
pub const BINDING_LEN: usize = 32;

/// SHA-256 of a certificate's DER encoding.
pub type CertFingerprint = [u8; 32];

/// Why TLS material could not be loaded or combined. Messages are written
/// to follow `[Tls] Key: `.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path:?}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path:?} is not usable PEM: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{path:?} holds no {what} (expected a PEM block \"-----BEGIN {what}-----\")")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{0}")]
    Invalid(String),
}

/// Which `[Tls]` key a [`TlsError`] from [`TlsSettings::load`] is about.
#[derive(Debug)]
pub struct KeyedTlsError {
    pub key: &'static str,
    pub error: TlsError,
}

/// The `[Tls]` section as written: file names and the server name.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// `Cert`: this gateway's certificate chain (PEM, leaf first).
    pub cert: Option<PathBuf>,
    /// `Key`: the private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// `ClientCa`: the listener requires client certificates signed by it.
    pub client_ca: Option<PathBuf>,
    /// `UpstreamCa`: TLS to `[Tcp] Address`, verified against this CA.
    pub upstream_ca: Option<PathBuf>,
    /// `ServerName`: the name checked in the upstream's certificate
    /// (default: the host of each address).
    pub server_name: Option<String>,
    /// `PlainListen`: keep `[Tcp] Listen` plain even with `cert`, which is
    /// then only presented as client certificate upstream (a client
    /// gateway in front of local ESI clients).
    pub plain_listen: bool,
}

/// `[Tls]`, loaded: what the listener serves and how the upstream is dialled.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub files: TlsFiles,
    /// TLS on `[Tcp] Listen` (when `Cert` and `Key` are given).
    pub listener: Option<Arc<ServerConfig>>,
    /// TLS to `[Tcp] Address` (when `UpstreamCa` is given).
    pub upstream: Option<UpstreamTls>,
}

impl TlsSettings {
    /// Reads and checks every file `files` names and builds the rustls
    /// configurations. Errors say which key is at fault.
    pub fn load(files: TlsFiles) -> Result<TlsSettings, KeyedTlsError> {
        let identity = load_identity(&files)?;
        let listener = build_listener(&files, identity.as_ref())?;
        let upstream = build_upstream(&files, identity.as_ref())?;
        Ok(TlsSettings { files, listener, upstream })
    }
}

fn keyed(key: &'static str) -> impl Fn(TlsError) -> KeyedTlsError {
    move |error| KeyedTlsError { key, error }
}

fn invalid(key: &'static str, message: impl Into<String>) -> KeyedTlsError {
    KeyedTlsError { key, error: TlsError::Invalid(message.into()) }
}

/// `Cert` and `Key`, both or neither; the key must be the certificate's.
fn load_identity(files: &TlsFiles) -> Result<Option<Identity>, KeyedTlsError> {
    let (cert, key) = match (&files.cert, &files.key) {
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => return Err(invalid("Key", "missing: [Tls] Cert is given without its key")),
        (None, Some(_)) => return Err(invalid("Cert", "missing: [Tls] Key is given without its certificate")),
        (None, None) => return Ok(None),
    };
    let id = Identity { certs: load_certs(cert).map_err(keyed("Cert"))?, key: load_key(key).map_err(keyed("Key"))? };
    rustls::sign::CertifiedKey::from_der(id.certs.clone(), id.key.clone_key(), &provider())
        .map_err(|e| invalid("Cert", format!("the certificate and key do not go together: {e}")))?;
    Ok(Some(id))
}

/// The listener's configuration: with `Cert` unless `PlainListen`.
fn build_listener(files: &TlsFiles, id: Option<&Identity>) -> Result<Option<Arc<ServerConfig>>, KeyedTlsError> {
    let client_ca = files.client_ca.as_deref().map(load_certs).transpose().map_err(keyed("ClientCa"))?;
    match (id, client_ca) {
        (Some(_), Some(_)) if files.plain_listen => {
            Err(invalid("ClientCa", "needs a TLS listener, but [Tls] PlainListen is true"))
        }
        (Some(_), None) if files.plain_listen => Ok(None),
        (Some(id), ca) => server_config(id, ca.as_deref()).map(Some).map_err(keyed("Cert")),
        (None, Some(_)) => Err(invalid(
            "ClientCa",
            "needs [Tls] Cert and Key (client certificates are asked for by a TLS listener)",
        )),
        (None, None) => Ok(None),
    }
}

/// TLS to the upstream: with `UpstreamCa`, checking `ServerName`.
fn build_upstream(files: &TlsFiles, id: Option<&Identity>) -> Result<Option<UpstreamTls>, KeyedTlsError> {
    let server_name = match &files.server_name {
        Some(name) => Some(
            ServerName::try_from(name.clone())
                .map_err(|_| invalid("ServerName", format!("{name:?} is not a DNS name or IP address")))?,
        ),
        None => None,
    };
    match &files.upstream_ca {
        Some(path) => {
            let ca = load_certs(path).map_err(keyed("UpstreamCa"))?;
            UpstreamTls::new(&ca, id, server_name).map(Some).map_err(keyed("UpstreamCa"))
        }
        None if server_name.is_some() => Err(invalid(
            "ServerName",
            "needs [Tls] UpstreamCa (the server name is checked in the upstream's certificate)",
        )),
        None => Ok(None),
    }
}

/// A certificate chain and its key.
struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.to_path_buf(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { path: path.to_path_buf(), what: "CERTIFICATE" });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty { path: path.to_path_buf(), what: "PRIVATE KEY" },
        e => TlsError::Pem { path: path.to_path_buf(), message: e.to_string() },
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| TlsError::Invalid(format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The listener's configuration: TLS 1.3, ALPN `h2` and `resi/1`, client
/// certificates required when `client_ca` is given.
fn server_config(id: &Identity, client_ca: Option<&[CertificateDer<'static>]>) -> Result<Arc<ServerConfig>, TlsError> {
    let rustls_err = |e: rustls::Error| TlsError::Invalid(e.to_string());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_err)?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                .build()
                .map_err(|e| TlsError::Invalid(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder
        .with_single_cert(id.certs.clone(), id.key.clone_key())
        .map_err(|e| TlsError::Invalid(format!("the certificate and key do not go together: {e}")))?;
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_RESI.to_vec()];
    Ok(Arc::new(cfg))
}

/// Which protocol a TLS connection to the upstream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    H2,
    Resi,
}

/// How this hop dials its upstream over TLS: the CA it trusts, the client
/// certificate it presents (if any) and the name it checks.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    h2: Arc<ClientConfig>,
    resi: Arc<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    fn new(
        ca: &[CertificateDer<'static>],
        id: Option<&Identity>,
        server_name: Option<ServerName<'static>>,
    ) -> Result<UpstreamTls, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Invalid(e.to_string()))?
            .with_root_certificates(roots(ca)?);
        let base = match id {
            Some(id) => builder
                .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
                .map_err(|e| TlsError::Invalid(format!("the certificate and key do not go together: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        let with_alpn = |alpn: &[u8]| {
            let mut c = base.clone();
            c.alpn_protocols = vec![alpn.to_vec()];
            Arc::new(c)
        };
        Ok(UpstreamTls { h2: with_alpn(ALPN_H2), resi: with_alpn(ALPN_RESI), server_name })
    }

    /// The name checked in the certificate of `addr` (`host:port`):
    /// `ServerName` if configured, else the host.
    pub fn server_name_for(&self, addr: &str) -> std::io::Result<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ServerName::IpAddress(ip.into()));
        }
        ServerName::try_from(host.to_string())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{host:?} is not a valid server name")))
    }

    /// Runs the client handshake on `tcp`, connected to `addr`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: &str,
        alpn: Alpn,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let cfg = match alpn {
            Alpn::H2 => self.h2.clone(),
            Alpn::Resi => self.resi.clone(),
        };
        let name = self.server_name_for(addr)?;
        tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await
    }
}

/// Implements `AsyncWrite` for a wrapper `$ty<S> { inner: S, .. }` that
/// only changes how it reads: every write goes to `inner`.
macro_rules! write_through {
    ($ty:ident) => {
        impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $ty<S> {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.inner.is_write_vectored()
            }

            fn poll_flush(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

/// A client stream that reports how its first read went (`Ok` once the
/// server sent bytes). In TLS 1.3 a server that refuses the client
/// certificate says so only after the client's side of the handshake is
/// done, with an alert that arrives on the first read; the HTTP/2 client
/// reads the server's SETTINGS first, so waiting for this report turns
/// such a refusal into a connect error.
pub struct FirstRead<S> {
    inner: S,
    report: Option<oneshot::Sender<Result<(), String>>>,
}

impl<S> FirstRead<S> {
    /// The wrapped stream and where its first read's outcome arrives.
    pub fn new(inner: S) -> (FirstRead<S>, oneshot::Receiver<Result<(), String>>) {
        let (tx, rx) = oneshot::channel();
        (FirstRead { inner, report: Some(tx) }, rx)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstRead<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(result) = &polled {
            let outcome = match result {
                Ok(()) if buf.filled().len() > before => Ok(()),
                Ok(()) => Err("the server closed the connection".to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Some(report) = self.report.take() {
                let _ = report.send(outcome);
            }
        }
        polled
    }
}

write_through!(FirstRead);

/// What one transport connection tells the session layer about itself.
/// Empty for plain TCP and NKN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelBinding {
    /// The connection's exporter ([`EXPORTER_LABEL`], no context, 32 bytes).
    pub exporter: Option<[u8; BINDING_LEN]>,
    /// SHA-256 of the peer's (client) certificate, when it presented one.
    pub peer_certificate: Option<CertFingerprint>,
}

impl ChannelBinding {
    /// The binding of an established TLS connection (either side).
    pub fn of<D>(conn: &rustls::ConnectionCommon<D>) -> ChannelBinding {
        let exporter = conn.export_keying_material([0u8; BINDING_LEN], EXPORTER_LABEL, None).ok();
        let peer_certificate = conn.peer_certificates().and_then(|c| c.first()).map(|c| fingerprint(c));
        ChannelBinding { exporter, peer_certificate }
    }
}

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert: &CertificateDer<'_>) -> CertFingerprint {
    Sha256::digest(cert.as_ref()).into()
}

/// The `binding` of a merge sent on a connection with `exporter`:
/// HMAC-SHA256 with the cookie as key over the exporter output.
pub fn merge_binding(cookie: &[u8], exporter: &[u8; BINDING_LEN]) -> [u8; BINDING_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie).expect("HMAC takes keys of any length");
    mac.update(exporter);
    mac.finalize().into_bytes().into()
}

/// Whether `binding` is the right one for `cookie` on this connection
/// (constant time).
pub fn binding_matches(cookie: &[u8], exporter: &[u8; BINDING_LEN], binding: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(cookie).expect("HMAC takes keys of any length");
    mac.update(exporter);
    mac.verify_slice(binding).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_depends_on_cookie_and_exporter() {
        let (e1, e2) = ([1u8; 32], [2u8; 32]);
        let b = merge_binding(b"cookie", &e1);
        assert!(binding_matches(b"cookie", &e1, &b));
        assert!(!binding_matches(b"cookie", &e2, &b));
        assert!(!binding_matches(b"other", &e1, &b));
        assert!(!binding_matches(b"cookie", &e1, &b[..31]));
    }

    #[test]
    fn server_name_defaults_to_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["ca".into()]).unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let tls = UpstreamTls::new(&load_certs(&path).unwrap(), None, None).unwrap();
        assert_eq!(tls.server_name_for("localhost:4001").unwrap(), ServerName::try_from("localhost").unwrap());
        assert!(matches!(tls.server_name_for("127.0.0.1:1").unwrap(), ServerName::IpAddress(_)));
        assert!(matches!(tls.server_name_for("[::1]:1").unwrap(), ServerName::IpAddress(_)));
    }

    #[test]
    fn unreadable_and_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("x.pem");
        let e = load_certs(&missing).unwrap_err().to_string();
        assert!(e.starts_with("cannot read") && e.contains("x.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "hello\n").unwrap();
        assert!(load_certs(&empty).unwrap_err().to_string().contains("no CERTIFICATE"));
        assert!(load_key(&empty).unwrap_err().to_string().contains("no PRIVATE KEY"));
    }
}
