//! carekeep-core: the security core of Carekeep, with no GUI, testable headless. The app's
//! shell and the `carekeep` CLI are thin faces over it; every decision whether PHI may be
//! shown or kept is made here (DESIGN.md §1). What it does is `docs/core.md`.
//!
//! - [`keys`], [`keychain`], [`vault`]: the encrypted offline vault (DESIGN.md §2) — an
//!   SQLCipher cache opened with a random raw key that exists on disk only wrapped, under a
//!   device key in the OS keychain and under an Argon2id password key; unlock attempts and
//!   the total wipe.
//! - [`store`]: the FHIR R4 resources inside it, their search and lab trends, the outbox of
//!   writes made offline, the device's access log and downloaded documents.
//! - [`net`]: HTTPS only, certificate pinning on the validated path, the server's API.
//! - [`session`]: the lock, unlock and re-authentication rules over an injected [`clock`].
//! - [`account`]: all of it tied together for one signed-in person — sign-in, reads (logged),
//!   writes (queued), offline-first sync, documents, devices, export.
//! - [`error`]: one error type whose every variant says what the person can do next.
//!
//! Start at [`account::Account`] for the app's view, or at [`Vault`] for the cache alone.

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
pub use error::{Error, NextStep, Result};
pub use keychain::Keychain;
pub use keys::Password;
pub use vault::{DeviceId, Profile, UnlockPolicy, UserId, Vault, WipeReport};
