//! carekeep-server: the reference backend the Carekeep app pins and syncs with
//! (DESIGN.md §6).
//!
//! Built so far: the data directory ([`datadir`]: master key, TLS key and certificate, an
//! offline backup key, the Ed25519 signing key, and the pin set derived from them) and the
//! HTTPS-only listener ([`tls`], [`http`]: TLS 1.2/1.3 through rustls, security headers,
//! body limit, the FHIR CapabilityStatement), the encrypted [`store`], tenants and users
//! ([`admin`]), and sign-in with password and TOTP ([`auth`]).

pub mod address;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod datadir;
pub mod error;
pub mod http;
pub mod ids;
pub mod import;
pub mod keys;
pub mod records;
pub mod seed;
pub mod store;
pub mod tls;

pub use datadir::DataDir;
pub use error::ServerError;

/// The wall clock in Unix seconds, for the handlers and commands; the rules themselves take
/// time as a parameter so tests can set it.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
