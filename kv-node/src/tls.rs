//! TLS for client and peer traffic (SECURITY.md): the rustls configurations
//! built from `--tls-cert`, `--tls-key` and `--tls-ca`. The accept loop
//! that serves them (warp 0.4 has no TLS of its own) is `accept.rs`.
//!
//! Every node serves with its certificate and, as a peer client, trusts
//! only the CA of `--tls-ca`. With `--tls-client-auth` the server also
//! requires a client certificate signed by that CA, and the peer client
//! presents the node's own certificate. Crypto is rustls's `ring` provider:
//! pure Rust and assembly, no C library build.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} holds no PEM certificate")]
    NoCertificate { what: String },
    #[error("{what} holds no PEM private key: {reason}")]
    NoKey { what: String, reason: String },
    #[error("{what}: {reason}")]
    BadCertificate { what: String, reason: String },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("--tls-cert, --tls-key and --tls-ca go together; missing: {0}")]
    Incomplete(&'static str),
    #[error("--tls-client-auth needs --tls-cert, --tls-key and --tls-ca")]
    ClientAuthWithoutTls,
}

/// The server and peer-client configurations of a node.
#[derive(Clone, Debug)]
pub struct TlsSetup {
    pub server: Arc<ServerConfig>,
    /// For peer traffic: trusts the cluster CA only.
    pub client: Arc<ClientConfig>,
    /// Clients (peers included) must present a certificate the CA signed.
    pub client_auth: bool,
}

/// The one crypto provider used everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSetup {
    /// Reads the PEM files given by the flags; `None` when no TLS flag is
    /// given (plain HTTP).
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
        client_auth: bool,
    ) -> Result<Option<TlsSetup>, TlsError> {
        let (cert, key, ca) = match (cert, key, ca) {
            (None, None, None) if client_auth => return Err(TlsError::ClientAuthWithoutTls),
            (None, None, None) => return Ok(None),
            (None, _, _) => return Err(TlsError::Incomplete("--tls-cert")),
            (_, None, _) => return Err(TlsError::Incomplete("--tls-key")),
            (_, _, None) => return Err(TlsError::Incomplete("--tls-ca")),
            (Some(cert), Some(key), Some(ca)) => {
                crate::secret_file::warn_if_exposed(key, "the TLS private key (--tls-key)");
                (read(cert)?, read(key)?, read(ca)?)
            }
        };
        TlsSetup::from_pem(&cert, &key, &ca, client_auth).map(Some)
    }

    /// Builds both configurations from PEM text.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
        client_auth: bool,
    ) -> Result<TlsSetup, TlsError> {
        let certs = certificates(cert_pem, "--tls-cert")?;
        let key = private_key(key_pem, "--tls-key")?;
        let roots = Arc::new(root_store(ca_pem)?);
        let verifier = if client_auth {
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build()?
        } else {
            WebPkiClientVerifier::no_client_auth()
        };
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let identity = client_auth.then_some((certs, key));
        let client = client_config_for(roots, identity)?;
        Ok(TlsSetup {
            server: Arc::new(server),
            client: Arc::new(client),
            client_auth,
        })
    }
}

/// A client configuration trusting the CA in `ca_pem`, presenting
/// `identity` (certificate chain and key, PEM) when given. Used by tests
/// and tools that talk to a TLS node.
pub fn client_config(
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Result<ClientConfig, TlsError> {
    let identity = identity
        .map(|(cert, key)| {
            Ok::<_, TlsError>((
                certificates(cert, "client certificate")?,
                private_key(key, "client key")?,
            ))
        })
        .transpose()?;
    client_config_for(Arc::new(root_store(ca_pem)?), identity)
}

fn client_config_for(
    roots: Arc<RootCertStore>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    // No ALPN here: the hyper-rustls connector sets it (and refuses a
    // configuration that already has it).
    Ok(match identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key)?,
        None => builder.with_no_client_auth(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::NoKey {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn root_store(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem, "--tls-ca")? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            what: "--tls-ca".into(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}
