//! TLS material: a fresh self-signed CA and a `localhost`/`127.0.0.1` server certificate it signs.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

pub(super) struct TlsMaterial {
    pub(super) ca_pem: String,
    pub(super) server_config: Arc<rustls::ServerConfig>,
}

pub(super) fn generate() -> Result<TlsMaterial, String> {
    fn describe(what: &'static str) -> impl Fn(rcgen::Error) -> String {
        move |error| format!("{what}: {error}")
    }
    let ca_key = KeyPair::generate().map_err(describe("CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(describe("CA params"))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "fake exchange test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(describe("CA certificate"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(describe("server key"))?;
    let mut server_params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .map_err(describe("server params"))?;
    server_params.distinguished_name.push(DnType::CommonName, "localhost");
    let server_cert = server_params.signed_by(&server_key, &issuer).map_err(describe("server certificate"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS versions: {error}"))?
        .with_no_client_auth()
        .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
        .map_err(|error| format!("TLS server config: {error}"))?;
    Ok(TlsMaterial { ca_pem: ca_cert.pem(), server_config: Arc::new(server_config) })
}
