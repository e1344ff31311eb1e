//! TLS for the server: rustls (with the ring provider, and no other),
//! HTTP/2 negotiated through ALPN, optional client certificates (mutual
//! TLS), and new certificates without a restart.
//!
//! A [`TlsConfig`] reads a certificate chain, its key and, for mutual TLS,
//! the CA that signs client certificates, from PEM files.
//! [`reload`](TlsConfig::reload) reads them again and swaps the new material
//! in for new connections; open connections and calls in flight keep what
//! they started with. A reload that fails (a file that cannot be read, a bad
//! PEM, a key that does not match the certificate) changes nothing.
//! `errmap serve` reloads on SIGHUP.
//!
//! With mutual TLS, the verified client's identity reaches handlers as a
//! [`PeerInfo`] in the request extensions.
//!
//! ```no_run
//! use errmap_server::{server::{ErrmapServer, ServerConfig}, tls::TlsConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = TlsConfig::from_files("server.pem", "server.key", Some("clients-ca.pem"))?;
//! let mut config = ServerConfig::default();
//! config.tls = Some(tls.clone());
//! // On SIGHUP, or when the files change: tls.reload()?
//! let listener = errmap_server::server::bind(config.addr).await?;
//! ErrmapServer::new(config).serve(listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        RootCertStore,
    },
    TlsAcceptor,
};
use tonic::transport::server::TcpConnectInfo;

/// Why TLS material could not be loaded. The message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{file}: {reason}")]
    Pem {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the material (a key that does not match the
    /// certificate, say).
    #[error("{what}: {source}")]
    Rustls {
        /// What was being built.
        what: String,
        /// rustls's complaint.
        source: rustls::Error,
    },
    /// The client CA cannot verify client certificates.
    #[error("{file}: {reason}")]
    ClientCa {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The files a [`TlsConfig`] reads, and reads again on reload.
#[derive(Debug, Clone)]
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// The server's TLS material, swappable while it serves; cheap to clone
/// (clones share the material).
#[derive(Clone)]
pub struct TlsConfig {
    files: Arc<TlsFiles>,
    current: crate::reload::Reloadable<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .field("client_ca", &self.files.client_ca)
            .finish()
    }
}

fn pem_error(file: &Path, error: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        file: file.to_owned(),
        reason: error.to_string(),
    }
}

fn certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(file, e))?;
    if certs.is_empty() {
        return Err(pem_error(file, "no CERTIFICATE in the file"));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls {
            what: "protocol versions".to_owned(),
            source,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    file: ca.clone(),
                    reason: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    file: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Rustls {
            what: format!("{} with {}", files.cert.display(), files.key.display()),
            source,
        })?;
    // h2 first; http/1.1 for browsers' gRPC-Web over HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl TlsConfig {
    /// Reads a certificate chain and its key (PEM), and, for mutual TLS,
    /// the CA that signs the client certificates.
    pub fn from_files(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        client_ca: Option<impl Into<PathBuf>>,
    ) -> Result<Self, TlsError> {
        let files = TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: client_ca.map(Into::into),
        };
        let config = build(&files)?;
        Ok(Self {
            files: Arc::new(files),
            current: crate::reload::Reloadable::new(config),
        })
    }

    /// Reads the files again; on success new connections use the new
    /// material, on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.current.store(build(&self.files)?);
        Ok(())
    }

    /// Whether client certificates are required.
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the current material.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load())
    }
}

/// A verified client certificate's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject, e.g. `CN=billing`.
    pub subject: String,
    /// The subject alternative names: DNS names, IP addresses, URIs and
    /// emails, as text.
    pub sans: Vec<String>,
    /// The certificate, DER-encoded.
    pub certificate: CertificateDer<'static>,
}

impl PeerIdentity {
    /// The identity in a DER certificate, or `None` if it does not parse.
    pub fn from_der(der: &CertificateDer<'static>) -> Option<Self> {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(n) => sans.push(format!("DNS:{n}")),
                    GeneralName::RFC822Name(n) => sans.push(format!("email:{n}")),
                    GeneralName::URI(n) => sans.push(format!("URI:{n}")),
                    GeneralName::IPAddress(ip) => match ip.len() {
                        4 => sans.push(format!(
                            "IP:{}",
                            std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])
                        )),
                        16 => {
                            let mut octets = [0u8; 16];
                            octets.copy_from_slice(ip);
                            sans.push(format!("IP:{}", std::net::Ipv6Addr::from(octets)));
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
        Some(Self {
            subject: cert.subject().to_string(),
            sans,
            certificate: der.clone(),
        })
    }
}

/// What the server knows of a connection, in every request's extensions
/// (`request.extensions().get::<PeerInfo>()`): the addresses and, with
/// mutual TLS, the client's verified identity.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The local and remote addresses.
    pub tcp: TcpConnectInfo,
    /// The client certificate's identity, with mutual TLS.
    pub identity: Option<Arc<PeerIdentity>>,
}

impl PeerInfo {
    /// The peer's address.
    pub fn remote_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp.remote_addr()
    }
}
