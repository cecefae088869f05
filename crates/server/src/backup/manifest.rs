//! What a backup says about itself, signed by the server that made it: which server, when,
//! what it held (counts and the audit trail's signed head), and each file's length and
//! SHA-256. It comes first inside the envelope, so a restore knows whose backup it is before
//! it writes a byte.

use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carekeep_protocol::audit::Checkpoint;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::BackupError;

/// The manifest format this server writes and reads.
pub const FORMAT: u32 = 1;

/// The largest manifest a restore reads (a real one is a few hundred bytes).
const MAX_MANIFEST: u32 = 64 * 1024;

/// What the signature is over, before the manifest's bytes: a signature made for anything
/// else with the same key (a policy, a checkpoint) is never a manifest's.
const SIGNED_AS: &[u8] = b"carekeep-backup/v1 manifest\0";

/// A backup's description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The server's audit signing key (base64): the server the backup is of.
    pub server: String,
    /// The backup key's public half it was sealed to (base64): a backup re-sealed to
    /// another key by whoever opened it is refused.
    pub recipient: String,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// The store's schema version at the snapshot.
    pub schema_version: i64,
    /// What the snapshot held.
    pub counts: Counts,
    /// The audit trail's last record at the snapshot, signed as its head; `None` for an
    /// empty trail.
    pub audit_head: Option<Checkpoint>,
    /// The files, in the order they follow the manifest.
    pub files: Vec<FileEntry>,
}

/// Rows the snapshot held, which a restore must find again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counts {
    /// Clinics.
    pub tenants: u64,
    /// Accounts.
    pub users: u64,
    /// Signed-in devices (revoked ones included).
    pub devices: u64,
    /// FHIR resources, current versions.
    pub resources: u64,
    /// Stored documents.
    pub documents: u64,
    /// Audit records in the trail.
    pub audit_records: u64,
}

/// One file of the data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path inside the data directory (`/`-separated).
    pub name: String,
    /// Its length.
    pub bytes: u64,
    /// Its SHA-256 (hex).
    pub sha256: String,
}

impl Manifest {
    /// The server key it names.
    pub fn server_key(&self) -> Option<VerifyingKey> {
        let bytes: [u8; 32] = BASE64.decode(&self.server).ok()?.try_into().ok()?;
        VerifyingKey::from_bytes(&bytes).ok()
    }

    /// Writes the manifest and its signature by `key`.
    pub fn write_signed(&self, key: &SigningKey, out: &mut impl Write) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let signature = key.sign(&[SIGNED_AS, &json].concat());
        let len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&json)?;
        out.write_all(&signature.to_bytes())
    }

    /// Reads a manifest and checks it was signed by `expected`, the server the backup key
    /// belongs to.
    pub fn read_signed(input: &mut impl Read, expected: &VerifyingKey) -> Result<Self, BackupError> {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(BackupError::read)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_MANIFEST {
            return Err(BackupError::Unreadable("its manifest is implausibly large"));
        }
        let mut json = vec![0u8; len as usize];
        input.read_exact(&mut json).map_err(BackupError::read)?;
        let mut signature = [0u8; 64];
        input.read_exact(&mut signature).map_err(BackupError::read)?;
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|_| BackupError::Unreadable("its manifest is not one"))?;
        if manifest.server_key() != Some(*expected) {
            return Err(BackupError::OtherServer);
        }
        expected
            .verify_strict(&[SIGNED_AS, &json].concat(), &Signature::from_bytes(&signature))
            .map_err(|_| BackupError::Forged)?;
        if manifest.format != FORMAT {
            return Err(BackupError::Unreadable("it is of a format this server does not know"));
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(key: &SigningKey) -> Manifest {
        Manifest {
            format: FORMAT,
            server: BASE64.encode(key.verifying_key().as_bytes()),
            recipient: BASE64.encode([5; 32]),
            created_at: "2026-11-30T00:00:00Z".into(),
            schema_version: 1,
            counts: Counts { tenants: 1, users: 2, devices: 0, resources: 3, documents: 0, audit_records: 4 },
            audit_head: None,
            files: vec![FileEntry { name: "store.db".into(), bytes: 3, sha256: "00".into() }],
        }
    }

    #[test]
    fn a_signed_manifest_reads_back_only_for_its_server() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let mut bytes = Vec::new();
        manifest(&key).write_signed(&key, &mut bytes).unwrap();
        assert_eq!(Manifest::read_signed(&mut bytes.as_slice(), &key.verifying_key()).unwrap(), manifest(&key));
        let other = SigningKey::from_bytes(&[2; 32]).verifying_key();
        assert!(matches!(Manifest::read_signed(&mut bytes.as_slice(), &other), Err(BackupError::OtherServer)));
    }

    #[test]
    fn a_manifest_changed_after_signing_or_signed_by_another_key_is_forged() {
        let key = SigningKey::from_bytes(&[1; 32]);
        // Another key signs a manifest that names this server.
        let mut bytes = Vec::new();
        manifest(&key)
            .write_signed(&SigningKey::from_bytes(&[3; 32]), &mut bytes)
            .unwrap();
        assert!(matches!(Manifest::read_signed(&mut bytes.as_slice(), &key.verifying_key()), Err(BackupError::Forged)));
        // A count changed after signing.
        let mut bytes = Vec::new();
        manifest(&key).write_signed(&key, &mut bytes).unwrap();
        let mut edited = bytes.clone();
        let at = edited.windows(13).position(|w| w == b"\"resources\":3").unwrap();
        edited[at + 12] = b'9';
        assert!(matches!(
            Manifest::read_signed(&mut edited.as_slice(), &key.verifying_key()),
            Err(BackupError::Forged)
        ));
    }
}
