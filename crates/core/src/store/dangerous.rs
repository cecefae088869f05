//! Things that are unsafe for PHI and exist for measurement only.
//!
//! Like rustls' `dangerous()`: the name is the warning. Nothing in the app may use this.

use std::path::Path;

use rusqlite::Connection;

use super::Store;
use crate::Result;

/// An **unencrypted** SQLite database with the vault's exact schema and pragmas, for the
/// benchmarks that compare SQLCipher against plain SQLite on the same workload
/// (DESIGN.md §8). Never store real records in it.
pub struct PlaintextBaseline {
    conn: Connection,
}

impl PlaintextBaseline {
    /// Creates the baseline database at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        Ok(Self { conn: crate::vault::create_unencrypted(path)? })
    }

    /// Opens an existing baseline database (the plain counterpart of an unlock).
    pub fn open(path: &Path) -> Result<Self> {
        Self::create(path)
    }

    /// The same store API over the plaintext database.
    pub fn store(&mut self) -> Store<'_> {
        Store::new(&mut self.conn)
    }
}
