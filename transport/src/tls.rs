//! TLS material: certificate and key files read and checked once, at start, with errors that
//! name the file and the fix; then handed to each transport in the form it needs (tonic's
//! TLS configs for gRPC, rustls configs for QUIC). Both use rustls with the ring provider.
//!
//! Nothing here downgrades: a client given root certificates only ever speaks TLS, and a
//! QUIC client accepts an unverified certificate only when it was told `--insecure`.

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
#[cfg(feature = "quic")]
use {
    rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    rustls::pki_types::ServerName,
    rustls::server::WebPkiClientVerifier,
    rustls::{DigitallySignedStruct, SignatureScheme},
};

/// Installs ring as the process's rustls crypto provider. Call once at the start of every
/// binary (later calls do nothing): with no provider installed, or two, rustls panics.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error means another provider is already installed; ring is the only one in
        // our dependency graph, so that one is ring too.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Why TLS material could not be used. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, no permission).
    #[error("cannot read the {what} {}: {reason}", path.display())]
    Read {
        /// What the file is, for the message (e.g. "CA certificate").
        what: &'static str,
        /// The path as it was given.
        path: PathBuf,
        /// The I/O error, worded for a user.
        reason: String,
    },
    /// A file meant to hold certificates holds no PEM certificate block.
    #[error(
        "the {what} {} holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block): pass the certificate file, not a key or a CSR",
        path.display()
    )]
    NoCertificate {
        /// What the file is, for the message.
        what: &'static str,
        /// The path as it was given.
        path: PathBuf,
    },
    /// The key file holds no PEM private key block.
    #[error(
        "the key file {} holds no PEM private key ('-----BEGIN PRIVATE KEY-----', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY'): pass the private key of the certificate",
        path.display()
    )]
    NoKey {
        /// The key file as it was given.
        path: PathBuf,
    },
    /// The key file holds a private key block that cannot be parsed.
    #[error("the key file {}: {reason}", path.display())]
    BadKey {
        /// The key file as it was given.
        path: PathBuf,
        /// What the PEM parser objected to.
        reason: String,
    },
    /// Certificate and key were both read but are not a pair.
    #[error(
        "the private key {} does not belong to the certificate {}: pass the key that was generated with that certificate",
        key.display(), cert.display()
    )]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file that does not match it.
        key: PathBuf,
    },
    /// A certificate that is not valid PEM or DER, or not usable as a CA root.
    #[error("the certificate {} cannot be used: {reason}", path.display())]
    BadCertificate {
        /// The certificate file as it was given.
        path: PathBuf,
        /// What rustls or webpki objected to.
        reason: String,
    },
    /// The server's own certificate does not chain to the CA it was told to use, so its
    /// clients would refuse it: caught at start rather than at every handshake.
    #[error(
        "the certificate {} is not valid under the CA {}: {reason}; issue a new one signed by that CA (e.g. with 'flwr keygen')",
        cert.display(), ca.display()
    )]
    NotTrusted {
        /// The server's certificate file.
        cert: PathBuf,
        /// The CA certificate file it was checked against.
        ca: PathBuf,
        /// Why webpki refused the chain (expired, wrong issuer, wrong usage, ...).
        reason: String,
    },
    /// A client told to trust the platform's CA certificates found none it could use.
    #[error(
        "no CA certificates in the platform's trust store ({0}): set SSL_CERT_FILE to a PEM bundle of CA certificates, or give the CA that signed the SuperLink's certificate (root-certificates in pyproject.toml, --root-certificates for flower-supernode)"
    )]
    NoPlatformRoots(String),
    /// rustls refused to build a configuration from material that did load (rare: an
    /// unsupported key type or protocol set), or a certificate could not be generated.
    #[error("cannot make a TLS configuration: {0}")]
    Config(String),
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: crate::transport_error::io_reason(&e),
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: format!("not valid PEM ({e})"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        e => TlsError::BadKey {
            path: path.to_path_buf(),
            reason: format!("not valid PEM ({e})"),
        },
    })
}

fn root_store(path: &Path, certs: &[CertificateDer<'static>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert.clone())
            .map_err(|e| TlsError::BadCertificate {
                path: path.to_path_buf(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
    }
    Ok(roots)
}

/// A CA bundle: the roots a side trusts.
#[derive(Clone)]
struct Roots {
    path: PathBuf,
    pem: Arc<[u8]>,
    store: Arc<RootCertStore>,
}

impl Roots {
    fn load(what: &'static str, path: &Path) -> Result<Roots, TlsError> {
        let pem = read(what, path)?;
        let certs = certificates(what, path, &pem)?;
        let store = root_store(path, &certs)?;
        Ok(Roots {
            path: path.to_path_buf(),
            pem: pem.into(),
            store: Arc::new(store),
        })
    }
}

/// A certificate chain with its private key, checked to belong together.
#[derive(Clone)]
struct Identity {
    cert_path: PathBuf,
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    certs: Vec<CertificateDer<'static>>,
    /// For QUIC's rustls configs (tonic takes the PEM).
    #[cfg(feature = "quic")]
    key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    fn load(cert_path: &Path, key_path: &Path) -> Result<Identity, TlsError> {
        let cert_pem = read("certificate", cert_path)?;
        let certs = certificates("certificate", cert_path, &cert_pem)?;
        let key_pem = read("private key", key_path)?;
        let key = private_key(key_path, &key_pem)?;
        match CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider()) {
            Ok(_) => {}
            Err(rustls::Error::InconsistentKeys(_)) => {
                return Err(TlsError::KeyMismatch {
                    cert: cert_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                });
            }
            Err(e) => {
                return Err(TlsError::BadKey {
                    path: key_path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        }
        // The end-entity certificate must at least parse (expiry is checked against a CA).
        ParsedCertificate::try_from(&certs[0]).map_err(|e| TlsError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Identity {
            cert_path: cert_path.to_path_buf(),
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            certs,
            #[cfg(feature = "quic")]
            key: Arc::new(key),
        })
    }

    /// Checks that the chain is signed by `roots` and valid now (not expired, not yet
    /// valid), so a wrong or stale file fails at start instead of at every handshake.
    fn check_against(&self, roots: &Roots) -> Result<(), TlsError> {
        let not_trusted = |reason: String| TlsError::NotTrusted {
            cert: self.cert_path.clone(),
            ca: roots.path.clone(),
            reason,
        };
        let parsed =
            ParsedCertificate::try_from(&self.certs[0]).map_err(|e| not_trusted(e.to_string()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots.store,
            &self.certs[1..],
            UnixTime::now(),
            provider().signature_verification_algorithms.all,
        )
        .map_err(|e| not_trusted(certificate_problem(&e)))
    }

    #[cfg(feature = "quic")]
    fn certified_key(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (self.certs.clone(), self.key.clone_key())
    }
}

/// A readable reason for a certificate rejected by rustls.
pub(crate) fn certificate_problem(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "it has expired".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "it is not valid yet (check the clock)".into()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "it is not signed by this CA".into(),
        rustls::Error::InvalidCertificate(C::BadSignature) => {
            "it is not signed by this CA (its signature does not verify)".into()
        }
        e => e.to_string(),
    }
}

/// The SuperLink's side of TLS: its certificate and key, and, for mutual TLS, the CA that
/// SuperNodes' client certificates must be signed by.
#[cfg(feature = "server")]
#[derive(Clone)]
pub struct ServerTls {
    identity: Identity,
    client_roots: Option<Roots>,
}

#[cfg(feature = "server")]
impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("certificate", &self.identity.cert_path)
            .field("client_ca", &self.client_roots.as_ref().map(|r| &r.path))
            .finish()
    }
}

/// What an ephemeral certificate is called in messages (it has no file).
#[cfg(feature = "quic")]
const EPHEMERAL: &str = "(ephemeral self-signed certificate)";

#[cfg(feature = "server")]
impl ServerTls {
    /// Reads `--ssl-certfile` and `--ssl-keyfile`, checks that they belong together and,
    /// when `ca` (`--ssl-ca-certfile`) is given, that the certificate is signed by it and
    /// valid now.
    ///
    /// # Errors
    /// [`TlsError`] naming the file: unreadable, not PEM, no certificate or key in it, a key
    /// of another certificate, a certificate the CA did not sign or that has expired.
    pub fn from_files(cert: &Path, key: &Path, ca: Option<&Path>) -> Result<ServerTls, TlsError> {
        let identity = Identity::load(cert, key)?;
        if let Some(ca) = ca {
            identity.check_against(&Roots::load("CA certificate", ca)?)?;
        }
        Ok(ServerTls {
            identity,
            client_roots: None,
        })
    }

    /// A fresh self-signed certificate, trusted by nobody: what QUIC (always TLS 1.3) uses
    /// when the SuperLink runs `--insecure`. Only clients also told `--insecure` accept it.
    ///
    /// # Errors
    /// [`TlsError::Config`] if the key cannot be generated.
    #[cfg(feature = "quic")]
    pub fn ephemeral() -> Result<ServerTls, TlsError> {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .map_err(|e| TlsError::Config(format!("cannot generate a certificate: {e}")))?;
        let cert_pem = generated.cert.pem();
        let key_pem = generated.signing_key.serialize_pem();
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        Ok(ServerTls {
            identity: Identity {
                cert_path: PathBuf::from(EPHEMERAL),
                cert_pem: cert_pem.into_bytes().into(),
                key_pem: key_pem.into_bytes().into(),
                certs: vec![cert],
                key: Arc::new(key),
            },
            client_roots: None,
        })
    }

    /// The secret a QUIC endpoint derives its stateless-reset tokens from, the same at every
    /// start with the same key (see `quic::reset_key`). With a key from files it is a hash of
    /// the private key, so only this server can end its clients' connections; with the
    /// ephemeral certificate of `--insecure` (a new key each start) it is a fixed label,
    /// which promises nothing more than `--insecure` does.
    #[cfg(feature = "quic")]
    pub(crate) fn reset_secret(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"floret quic stateless reset v1\0");
        if !self.is_ephemeral() {
            h.update(&self.identity.key_pem[..]);
        }
        h.finalize().into()
    }

    #[cfg(feature = "quic")]
    fn is_ephemeral(&self) -> bool {
        self.identity.cert_path == Path::new(EPHEMERAL)
    }

    /// Mutual TLS: clients must present a certificate signed by the CA in `ca`.
    ///
    /// # Errors
    /// [`TlsError`] when `ca` cannot be read or holds no usable CA certificate.
    pub fn require_client_certificates(mut self, ca: &Path) -> Result<ServerTls, TlsError> {
        self.client_roots = Some(Roots::load("client CA certificate", ca)?);
        Ok(self)
    }

    /// Whether clients must present certificates.
    pub fn is_mutual(&self) -> bool {
        self.client_roots.is_some()
    }

    /// The same certificate without mutual TLS (the Control API: the `flwr` CLI has no
    /// client certificate).
    #[must_use]
    pub fn without_client_certificates(&self) -> ServerTls {
        ServerTls {
            identity: self.identity.clone(),
            client_roots: None,
        }
    }

    pub(crate) fn tonic(&self) -> tonic::transport::ServerTlsConfig {
        let identity =
            tonic::transport::Identity::from_pem(&*self.identity.cert_pem, &*self.identity.key_pem);
        let config = tonic::transport::ServerTlsConfig::new().identity(identity);
        match &self.client_roots {
            Some(roots) => {
                config.client_ca_root(tonic::transport::Certificate::from_pem(&*roots.pem))
            }
            None => config,
        }
    }

    #[cfg(feature = "quic")]
    pub(crate) fn rustls(&self, alpn: &[u8]) -> Result<rustls::ServerConfig, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_roots {
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.store.clone(), provider())
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?,
            ),
            None => builder.with_no_client_auth(),
        };
        let (certs, key) = self.identity.certified_key();
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

/// A client's side of TLS: the CA certificates it trusts (`--root-certificates`, a
/// federation's `root-certificates`, else the platform's trust store) and, for mutual TLS,
/// its own certificate.
#[derive(Clone)]
pub struct ClientTls {
    /// The CA file trusted; `None` for the platform's trust store.
    roots_file: Option<PathBuf>,
    store: Arc<RootCertStore>,
    identity: Option<Identity>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("root_certificates", &self.roots_file)
            .field("certificate", &self.identity.as_ref().map(|i| &i.cert_path))
            .finish()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `path` (PEM).
    ///
    /// # Errors
    /// [`TlsError`] naming the file when it cannot be read or holds no certificate.
    pub fn from_root_certificates(path: &Path) -> Result<ClientTls, TlsError> {
        let roots = Roots::load("root certificates file", path)?;
        Ok(ClientTls {
            roots_file: Some(roots.path),
            store: roots.store,
            identity: None,
        })
    }

    /// Trusts the platform's CA certificates: the bundle `SSL_CERT_FILE` and the directory
    /// `SSL_CERT_DIR` name when set, else the system's (`/etc/ssl/certs` and the like).
    /// This is what Flower does for a federation with neither `root-certificates` nor
    /// `insecure`, and for `flower-supernode` with neither flag: a SuperLink with a
    /// certificate from a public CA needs no CA file.
    ///
    /// # Errors
    /// [`TlsError::NoPlatformRoots`] when no usable CA certificate is found;
    /// [`TlsError::Config`] in a build without the `platform-roots` feature.
    pub fn from_platform() -> Result<ClientTls, TlsError> {
        #[cfg(feature = "platform-roots")]
        {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (added, _unusable) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let reason = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), ToString::to_string);
                return Err(TlsError::NoPlatformRoots(reason));
            }
            Ok(ClientTls {
                roots_file: None,
                store: Arc::new(store),
                identity: None,
            })
        }
        #[cfg(not(feature = "platform-roots"))]
        Err(TlsError::Config(crate::not_built(
            "platform trust store",
            "platform-roots",
        )))
    }

    /// Presents `cert` (with `key`) to servers that ask for a client certificate.
    ///
    /// # Errors
    /// As [`ServerTls::from_files`] for the pair.
    pub fn with_client_certificate(
        mut self,
        cert: &Path,
        key: &Path,
    ) -> Result<ClientTls, TlsError> {
        self.identity = Some(Identity::load(cert, key)?);
        Ok(self)
    }

    /// What it trusts, for logs: the root certificates file, or the platform's store.
    pub fn trusted(&self) -> String {
        match &self.roots_file {
            Some(path) => path.display().to_string(),
            None => "the platform's trust store".into(),
        }
    }

    pub(crate) fn tonic(&self) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .trust_anchors(self.store.roots.iter().cloned());
        match &self.identity {
            Some(id) => config.identity(tonic::transport::Identity::from_pem(
                &*id.cert_pem,
                &*id.key_pem,
            )),
            None => config,
        }
    }

    #[cfg(feature = "quic")]
    pub(crate) fn rustls(&self, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.store.clone());
        let mut config = match &self.identity {
            Some(id) => {
                let (certs, key) = id.certified_key();
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| TlsError::Config(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

/// A QUIC client config for `--insecure`: still TLS 1.3 and still checks that the server
/// holds the key of the certificate it shows, but trusts any certificate.
#[cfg(feature = "quic")]
pub(crate) fn insecure_rustls(alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// See [`insecure_rustls`].
#[cfg(feature = "quic")]
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

#[cfg(feature = "quic")]
impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
