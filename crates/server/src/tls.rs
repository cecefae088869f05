//! TLS for the server: generating its certificate and the rustls configuration that serves
//! it. Only TLS 1.3 and 1.2 exist in rustls, and both are named explicitly here.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServerError;

/// A freshly generated key and the self-signed certificate for it, both PEM.
pub struct GeneratedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// A new ECDSA P-256 key.
pub fn generate_key() -> Result<KeyPair, ServerError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| ServerError::KeyGeneration(e.to_string()))
}

/// A self-signed certificate for `hostname`, `localhost` and `127.0.0.1`, valid 825 days
/// (the longest browsers accept); clients trust it through its pinned key.
pub fn self_signed(key: &KeyPair, hostname: &str) -> Result<GeneratedCert, ServerError> {
    let mut names = vec![hostname.to_owned()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let mut params = CertificateParams::new(names).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hostname);
    dn.push(DnType::OrganizationName, "Carekeep server");
    params.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(825);
    let cert = params.self_signed(key).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    Ok(GeneratedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// The RFC 7469 pin of a key: SHA-256 over its SubjectPublicKeyInfo.
pub fn pin_of(key: &KeyPair) -> carekeep_protocol::pins::Pin {
    carekeep_protocol::pins::Pin::from_spki_der(&key.subject_public_key_info())
}

/// The rustls configuration: TLS 1.3 and 1.2 only, the ring provider, HTTP/2 and 1.1.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, ServerError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ServerError::Tls(format!("private key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
