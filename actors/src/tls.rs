//! The rustls client configuration shared by the WebSocket and REST clients.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile { path: String, source: rustls::pki_types::pem::Error },
    #[error("CA file {path} holds no usable certificate: {source}")]
    CaCert { path: String, source: rustls::Error },
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting the Mozilla roots, plus the certificates in `extra_ca` (PEM) if given, such as
/// a test exchange's self-signed CA.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let shown = path.display().to_string();
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|source| TlsError::CaFile { path: shown.clone(), source })?
        {
            let cert = cert.map_err(|source| TlsError::CaFile { path: shown.clone(), source })?;
            roots.add(cert).map_err(|source| TlsError::CaCert { path: shown.clone(), source })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
