//! TLS client configuration for `rediss://` targets (rustls with the `ring` provider, so no C
//! toolchain is needed): CA from `tls.ca_file` or the system store, optional client
//! certificate, and `insecure = true` to skip verification (logged loudly at startup).

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsSettings;

/// A ready connector and the name to verify.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// Why the TLS settings cannot be used; reported as a configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Builds the connector for `host` from the target's TLS settings.
pub fn build(settings: Option<&TlsSettings>, host: &str) -> Result<Tls, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Invalid(e.to_string()))?;
    let insecure = settings.is_some_and(|s| s.insecure);
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match settings.and_then(|s| s.ca_file.as_deref()) {
            Some(path) => {
                for cert in read_certs(path, "tls.ca_file")? {
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::Invalid(format!("tls.ca_file: {e}")))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let client_cert = settings.and_then(|s| s.cert_file.as_deref().zip(s.key_file.as_deref()));
    let config = match client_cert {
        Some((cert, key)) => {
            let certs = read_certs(cert, "tls.cert_file")?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsError::Invalid(format!("tls.key_file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Invalid(format!("tls client certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    let name = settings
        .and_then(|s| s.server_name.clone())
        .unwrap_or_else(|| host.to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| TlsError::Invalid(format!("tls.server_name {name:?} is not a valid name")))?;
    Ok(Tls {
        connector: TlsConnector::from(Arc::new(config)),
        server_name,
    })
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |e: std::io::Error| TlsError::Read {
        what,
        path: path.display().to_string(),
        source: e,
    };
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(std::io::Error::other(e.to_string())))?;
    let certs: Result<Vec<_>, _> = iter.collect();
    let certs = certs.map_err(|e| TlsError::Invalid(format!("{what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{what} {}: no certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

/// Accepts any server certificate (`tls.insecure = true`); signatures are still checked so
/// the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
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
