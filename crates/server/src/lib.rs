//! carekeep-server: the reference backend the Carekeep app pins and syncs with
//! (DESIGN.md §6). What it does, route by route, is `docs/server-api.md`; this is the map of
//! the code.
//!
//! - Keys and files: [`datadir`] (the data directory: master key, TLS keys, the signing key,
//!   the pin set), [`keys`] (keys derived from the master key), [`tls`] (rustls, TLS 1.2/1.3).
//! - The store: [`store`] (the SQLCipher files, migrations, one writer and pooled readers),
//!   [`admin`] (tenants and users, behind the command line), [`ids`] (opaque ids).
//! - Who is asking: [`auth`] (password, TOTP, tokens, devices, throttling), [`address`]
//!   (the networks that rate limits count by).
//! - What they may see: [`records`] (FHIR resources, the access table, validation, search,
//!   documents, idempotency, transaction Bundles, export), [`import`] (a clinic's records
//!   in), [`seed`] (the demo tenant).
//! - What happened: [`audit`] (the hash-chained trail and the devices' uploads).
//! - Surviving a dead disk: [`backup`] (encrypted, signed backups and proven restores).
//! - The wire: [`http`] (the listener, its connection limits, one module per group of
//!   routes, and the errors they answer with), [`error`] (the server's own failures).

pub mod address;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod datadir;
pub mod error;
pub mod http;
pub mod ids;
pub mod import;
pub mod keys;
pub mod pg;
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
