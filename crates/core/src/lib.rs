//! carekeep-core: the security core of Carekeep, with no GUI, testable headless.
//!
//! What lives here (DESIGN.md §2): the encrypted offline vault — an SQLCipher cache opened
//! with a random raw key that exists on disk only wrapped, once under a device key held by
//! the OS keychain and once under an Argon2id password key — and the FHIR R4 resource store
//! and outbox inside it.
//!
//! Start at [`Vault`]: create one with [`Vault::create`], reopen it locked with
//! [`Vault::open`], unlock it, then reach the data through [`Vault::store`].

pub mod account;
pub mod clock;
pub mod error;
pub mod keychain;
pub mod keys;
pub mod net;
mod platform;
pub mod session;

/// The platform's presence check (re-exported: the account takes one to unlock).
pub use carekeep_presence as presence;
pub mod store;
pub mod vault;

pub use clock::{Clock, SystemClock};
pub use error::{Error, Result};
pub use keychain::Keychain;
pub use keys::Password;
pub use vault::{DeviceId, Profile, UnlockPolicy, UserId, Vault, WipeReport};
