//! TLS for `https://` endpoints: the rustls client configuration built from
//! `--cacert`, `--cert` and `--key`, and plain words for the ways a
//! handshake fails (unknown CA, name mismatch, missing client certificate).
//!
//! Crypto is rustls's `ring` provider, passed explicitly (no process-wide
//! default is installed), so no C library is built.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where roots are looked for when `--cacert` is not given, as OpenSSL
/// does: `$SSL_CERT_FILE`, then the bundles of the common distributions.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The TLS files given on the command line.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    /// PEM bundle of the CAs that sign the nodes' certificates.
    pub cacert: Option<PathBuf>,
    /// PEM client certificate (chain), for nodes run with `--tls-client-auth`.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// What a handshake failure is reported against.
#[derive(Clone, Debug)]
pub struct TlsSummary {
    /// `--cacert ca.pem` or `the system CA bundle /etc/...`.
    pub roots: String,
    /// Whether a client certificate is presented.
    pub client_certificate: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The client configuration, and what to name in error messages.
pub fn client_config(files: &TlsFiles) -> Result<(ClientConfig, TlsSummary), String> {
    let mut roots = RootCertStore::empty();
    let summary_roots = match &files.cacert {
        Some(path) => {
            let what = format!("--cacert {}", path.display());
            for cert in certificates(&read(path, "--cacert")?, &what)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{what}: not a usable CA certificate: {e}"))?;
            }
            what
        }
        None => {
            let bundle = std::env::var_os("SSL_CERT_FILE")
                .map(PathBuf::from)
                .into_iter()
                .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from))
                .find(|p| p.is_file());
            match bundle {
                Some(path) => {
                    let pem = read(&path, "the system CA bundle")?;
                    let certs = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok);
                    // Bundles hold a few odd certificates: keep the usable ones.
                    roots.add_parsable_certificates(certs);
                    format!("the system CA bundle {} (no --cacert)", path.display())
                }
                None => "no CA at all (no --cacert, no system CA bundle)".to_string(),
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration refused: {e}"))?
        .with_root_certificates(roots);
    // No ALPN here: the hyper-rustls connector sets it.
    let config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            let what = format!("--cert {}", cert.display());
            let chain = certificates(&read(cert, "--cert")?, &what)?;
            let key_pem = read(key, "--key")?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                format!(
                    "--key {} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("--cert and --key do not go together: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("--cert and --key go together".to_string()),
    };
    let summary = TlsSummary {
        roots: summary_roots,
        client_certificate: files.cert.is_some(),
    };
    Ok((config, summary))
}

/// The first rustls error in `error`'s chain. `io::Error` hides the error
/// it wraps from `source()` (and connectors wrap io errors in io errors), so
/// the walk goes into each wrapped error.
pub fn find_rustls_error<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    // Bounded: a chain is a few levels deep.
    for _ in 0..32 {
        let e = current?;
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        current = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// What failed in a handshake, in words: `certificate error: unknown CA
/// (...)`. `summary` says which roots and whether a client certificate
/// was presented.
pub fn explain(error: &rustls::Error, summary: &TlsSummary) -> String {
    let roots = &summary.roots;
    match error {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer => format!(
                "certificate error: unknown CA: the server's certificate is not signed by a CA \
                 in {roots}"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "certificate error: name mismatch: the server's certificate does not name \
                     the endpoint's host ({e:?}); use a host or IP its subject alternative \
                     names list"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate error: the server's certificate has expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate error: the server's certificate is not valid yet (check the clock)"
                    .to_string()
            }
            other => format!("certificate error: the server's certificate is invalid: {other:?}"),
        },
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired | AlertDescription::HandshakeFailure
                if !summary.client_certificate =>
            {
                format!(
                    "certificate error: missing client certificate: the server requires one \
                     (alert {alert:?}); give --cert and --key"
                )
            }
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::DecryptError
            | AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure => format!(
                "certificate error: the server refused the client certificate (alert {alert:?}); \
                 is --cert signed by the cluster's CA?"
            ),
            other => format!("TLS error: the server sent alert {other:?}"),
        },
        rustls::Error::InvalidMessage(_) => "TLS error: the endpoint does not speak TLS \
             (is it an http:// endpoint?)"
            .to_string(),
        other => format!("TLS error: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(client_certificate: bool) -> TlsSummary {
        TlsSummary {
            roots: "--cacert ca.pem".into(),
            client_certificate,
        }
    }

    #[test]
    fn handshake_failures_are_named() {
        let unknown = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let text = explain(&unknown, &summary(false));
        assert!(text.contains("unknown CA"), "{text}");
        assert!(text.contains("--cacert ca.pem"), "{text}");
        let name = rustls::Error::InvalidCertificate(CertificateError::NotValidForName);
        assert!(explain(&name, &summary(false)).contains("name mismatch"));
        let required = rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        assert!(explain(&required, &summary(false)).contains("missing client certificate"));
        let refused = rustls::Error::AlertReceived(AlertDescription::UnknownCA);
        assert!(explain(&refused, &summary(true)).contains("refused the client certificate"));
    }

    #[test]
    fn a_rustls_error_is_found_inside_an_io_error() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let found = find_rustls_error(&io).expect("found");
        assert!(matches!(found, rustls::Error::InvalidCertificate(_)));
        let twice = std::io::Error::other(io);
        assert!(find_rustls_error(&twice).is_some());
        let plain = std::io::Error::other("no");
        assert!(find_rustls_error(&plain).is_none());
    }

    #[test]
    fn missing_files_and_half_identities_are_refused() {
        let missing = TlsFiles {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..TlsFiles::default()
        };
        let error = client_config(&missing).unwrap_err();
        assert!(error.contains("cannot read --cacert"), "{error}");
        let half = TlsFiles {
            cert: Some("/nonexistent/c.pem".into()),
            ..TlsFiles::default()
        };
        assert!(client_config(&half).is_err());
    }
}
