//! The network (DESIGN.md §4): HTTPS only, TLS 1.2 or newer, certificate pinning, and the
//! server's sign-in API.
//!
//! There is one way to reach a server: [`ServerUrl`] (which refuses anything but `https://`
//! before a socket opens) and a [`PinSet`] go into [`Server::connect`], which builds a
//! reqwest client on rustls with the [`pinning::PinnedVerifier`]. There is no code path
//! for plain HTTP and none that skips the pins.

pub mod api;
pub mod pinning;

use std::sync::Arc;

use carekeep_protocol::pins::PinSet;
use rustls::RootCertStore;

pub use api::{
    Challenge, DOCUMENT_LIMIT, InvalidId, OpaqueId, Page, Pushed, REQUEST_TIMEOUT, Server, Tokens, VerifiedPolicy,
};

use crate::error::ConnectionError;
use crate::{Error, Result};

/// A server address that is HTTPS, with a host, and nothing after the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(reqwest::Url);

impl ServerUrl {
    /// Parses `text`; refuses `http://` and every other scheme, user info, queries and
    /// fragments.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |problem| Error::InvalidArgument { what: "server address", problem };
        let url = reqwest::Url::parse(text.trim()).map_err(|_| bad("expected https://host[:port]"))?;
        if url.scheme() != "https" {
            return Err(Error::Connection(ConnectionError::InsecureUrl));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("it names no host"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("only https://host[:port][/path] is accepted"));
        }
        Ok(Self(url))
    }

    /// `path` (starting with `/`) under this server.
    fn join(&self, path: &str) -> reqwest::Url {
        let mut url = self.0.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{path}"));
        url
    }

    /// The address as text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

/// Which certificate authorities a server's chain may lead to (pins apply either way).
#[derive(Debug, Clone)]
pub enum Roots {
    /// The operating system's trust store.
    System,
    /// These roots only: an enterprise CA, or a test's own CA.
    Only(RootCertStore),
}

impl Roots {
    fn load(self) -> RootCertStore {
        match self {
            Roots::Only(roots) => roots,
            Roots::System => {
                let mut roots = RootCertStore::empty();
                // Unreadable system certificates are skipped; a self-hosted server needs none.
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                roots
            }
        }
    }
}

/// The HTTPS client: rustls, TLS 1.3 and 1.2 only, the pinned verifier, no redirects (a
/// redirect could only lead somewhere the pins were not meant for), short timeouts.
fn client(pins: PinSet, roots: Roots) -> Result<reqwest::Client> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = pinning::PinnedVerifier::new(pins, roots.load(), provider.clone())
        .map_err(|_| Error::Connection(ConnectionError::TlsRefused))?;
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| Error::Connection(ConnectionError::TlsRefused))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|_| Error::Connection(ConnectionError::TlsRefused))
}

/// What a failed request means for the person: a pin mismatch, a TLS refusal, or a server
/// that cannot be reached. Walks the error's causes (rustls errors arrive inside I/O errors).
pub(crate) fn classify(error: &reqwest::Error) -> Error {
    if error.is_timeout() {
        return Error::Connection(ConnectionError::ServerTimeout);
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))
                    if other.0.downcast_ref::<pinning::PinMismatch>().is_some() =>
                {
                    Error::Connection(ConnectionError::PinMismatch)
                }
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired) => {
                    Error::Connection(ConnectionError::CertificateExpired)
                }
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
                ) => Error::Connection(ConnectionError::CertificateNameMismatch),
                _ => Error::Connection(ConnectionError::TlsRefused),
            };
        }
        // An I/O error's `source` skips the error it wraps; look inside it instead.
        cause = match current.downcast_ref::<std::io::Error>().and_then(std::io::Error::get_ref) {
            Some(inner) => Some(inner as _),
            None => current.source(),
        };
    }
    Error::Connection(ConnectionError::ServerUnreachable)
}
