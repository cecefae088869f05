//! Certificate pinning (DESIGN.md §4) as a rustls verifier.
//!
//! A server is accepted when, after normal validation, one of the keys of the *validated*
//! chain is in the pin set:
//!
//! - a certificate that chains to a trusted root (the system's, or an enterprise CA the
//!   caller adds) must still carry a pinned key in the path that validation built — its
//!   leaf, an intermediate of that path, or the root it ends at. A CA that issues a
//!   certificate for the same hostname to someone else is not enough, and neither is that
//!   certificate sent together with the genuine (pinned) intermediate: a certificate the
//!   server merely sent, outside the path, proves nothing (Android's network security
//!   configuration checks the same "clean chain");
//! - a self-hosted server's self-signed certificate has no root to chain to: its pinned key
//!   is then the trust anchor, and the certificate is validated against itself, so the
//!   hostname and the validity dates are still checked.
//!
//! Anything else fails closed with [`PinMismatch`], which `net::classify` turns into
//! [`ConnectionError::PinMismatch`](crate::error::ConnectionError::PinMismatch). An expired
//! pin set is still enforced — pinning never fails open — and the app shows it as expired
//! until a fresh set arrives with the signed policy.

use std::sync::Arc;

use carekeep_protocol::pins::{Pin, PinSet};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use webpki::{EndEntityCert, KeyUsage, VerifiedPath};

/// The chain the server presented holds no pinned key: the connection may be intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server's certificate holds none of the pinned keys")]
pub struct PinMismatch;

/// Validates a server's chain, then requires a pinned key in the validated path.
#[derive(Debug)]
pub struct PinnedVerifier {
    pins: PinSet,
    /// `None` when no root is trusted at all (only self-hosted servers can be reached).
    roots: Option<Arc<WebPkiServerVerifier>>,
    /// The same roots, for building the path the pins are checked against.
    anchors: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// A verifier trusting `roots` for chain validation and requiring one of `pins`.
    pub fn new(pins: PinSet, roots: RootCertStore, provider: Arc<CryptoProvider>) -> Result<Self, rustls::Error> {
        let verifier = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
                    .build()
                    .map_err(|e| rustls::Error::General(e.to_string()))?,
            )
        };
        Ok(Self { pins, roots: verifier, anchors: roots, provider })
    }

    fn pinned(&self, cert: &CertificateDer<'_>) -> bool {
        spki_pin(cert).is_some_and(|pin| self.pins.contains(&pin))
    }

    /// Whether a path from `end_entity` to one of the trusted roots, built by webpki from
    /// the certificates the server sent, holds a pinned key. Path building tries every
    /// candidate path and keeps one the check accepts, so a pinned certificate counts only
    /// where it really vouches for the leaf. Called once standard validation has passed.
    fn pinned_path(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let Ok(leaf) = EndEntityCert::try_from(end_entity) else { return false };
        let holds_pin = |path: &VerifiedPath<'_>| -> Result<(), webpki::Error> {
            let mut keys = std::iter::once(path.end_entity().subject_public_key_info())
                .chain(path.intermediate_certificates().map(webpki::Cert::subject_public_key_info))
                .chain(std::iter::once(webpki::spki_for_anchor(path.anchor())));
            if keys.any(|spki| self.pins.contains(&Pin::from_spki_der(spki.as_ref()))) {
                Ok(())
            } else {
                // Any error will do: it only makes webpki try the next candidate path.
                Err(webpki::Error::UnknownIssuer)
            }
        };
        leaf.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.anchors.roots,
            intermediates,
            now,
            KeyUsage::server_auth(),
            None,
            Some(&holds_pin),
        )
        .is_ok()
    }

    /// A self-signed leaf whose key is pinned, validated against itself as the anchor.
    fn verify_self_hosted(
        &self,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut anchor = RootCertStore::empty();
        anchor.add(end_entity.clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(anchor), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)
    }
}

fn mismatch() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch))))
}

/// The pin of a certificate's public key, if the certificate parses.
pub fn spki_pin(cert: &CertificateDer<'_>) -> Option<Pin> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(Pin::from_spki_der(parsed.tbs_certificate.subject_pki.raw))
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let unknown_issuer = || Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        let chained = match &self.roots {
            Some(roots) => roots.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => unknown_issuer(),
        };
        match chained {
            Ok(verified) => {
                if self.pinned_path(end_entity, intermediates, now) {
                    Ok(verified)
                } else {
                    Err(mismatch())
                }
            }
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) if self.pinned(end_entity) => {
                self.verify_self_hosted(end_entity, server_name, ocsp, now)
            }
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => Err(mismatch()),
            Err(other) => Err(other),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
