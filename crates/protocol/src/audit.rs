//! The audit trail's record and its hash-chain rule (DESIGN.md §6).
//!
//! Each record's hash is SHA-256 over a domain tag, its sequence number, the previous
//! record's hash and a canonical, length-prefixed encoding of the event. Editing, deleting,
//! inserting or reordering a record therefore breaks the chain at that record. An attacker
//! who can rewrite the store could recompute every later hash, so the server also signs
//! periodic [`Checkpoint`]s (Ed25519) over a record's hash: a rewrite reaching back past a
//! checkpoint breaks its signature check. Records after the newest checkpoint are protected
//! by the chain alone until the next one is signed.
//!
//! Events hold no PHI: ids are opaque and there is no free-text field.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const RECORD_TAG: &[u8] = b"carekeep.audit.record.v1\0";
const CHECKPOINT_TAG: &[u8] = b"carekeep.audit.checkpoint.v1\0";
const HEAD_TAG: &[u8] = b"carekeep.audit.head.v1\0";

/// A SHA-256 chain hash, shown and serialized as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The `prev_hash` of the first record.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected 64 hex digits");
        if text.len() != 64 || !text.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// How the audited request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed and done.
    Success,
    /// Refused by authentication or authorization.
    Denied,
    /// Allowed but failed (invalid input, conflict, server error).
    Failed,
}

/// Who did what to which record, when and from where. Never the record's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When the chain's keeper appended it (RFC 3339, UTC).
    pub recorded_at: String,
    /// For events a device recorded offline: when they happened, by the device's clock.
    pub occurred_at: Option<String>,
    /// Tenant (clinic) id.
    pub tenant: String,
    /// Acting user id, if known.
    pub user: Option<String>,
    /// Acting user's role.
    pub role: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Client IP address.
    pub ip: Option<String>,
    /// What was done, e.g. `read`, `search`, `create`, `login`, `unlock`, `wipe`.
    pub action: String,
    /// FHIR resource type touched.
    pub resource_type: Option<String>,
    /// FHIR resource id touched (opaque).
    pub resource_id: Option<String>,
    /// Patient whose compartment was touched (opaque id).
    pub patient: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Access outside the care team under break-glass: listed for review.
    pub break_glass: bool,
}

impl AuditEvent {
    /// The canonical bytes hashed into the chain: every field in a fixed order, each
    /// length-prefixed (absent ≠ empty), so no two different events encode alike.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let text = |out: &mut Vec<u8>, value: Option<&str>| match value {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
        };
        text(&mut out, Some(&self.recorded_at));
        text(&mut out, self.occurred_at.as_deref());
        text(&mut out, Some(&self.tenant));
        text(&mut out, self.user.as_deref());
        text(&mut out, self.role.as_deref());
        text(&mut out, self.device.as_deref());
        text(&mut out, self.ip.as_deref());
        text(&mut out, Some(&self.action));
        text(&mut out, self.resource_type.as_deref());
        text(&mut out, self.resource_id.as_deref());
        text(&mut out, self.patient.as_deref());
        out.push(match self.outcome {
            Outcome::Success => 0,
            Outcome::Denied => 1,
            Outcome::Failed => 2,
        });
        out.push(u8::from(self.break_glass));
        out
    }
}

/// An event in its place in a chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain, from 0 without gaps.
    pub seq: u64,
    /// The previous record's hash ([`ChainHash::GENESIS`] for the first).
    pub prev_hash: ChainHash,
    /// What happened.
    pub event: AuditEvent,
    /// This record's hash.
    pub hash: ChainHash,
}

impl AuditRecord {
    /// The record that follows `prev` (or starts a chain) with `event`.
    pub fn append(prev: Option<&AuditRecord>, event: AuditEvent) -> Self {
        let (seq, prev_hash) = prev.map_or((0, ChainHash::GENESIS), |p| (p.seq + 1, p.hash));
        let hash = Self::compute_hash(seq, &prev_hash, &event);
        Self { seq, prev_hash, event, hash }
    }

    /// The chain rule: SHA-256(tag ‖ seq ‖ prev_hash ‖ canonical event).
    pub fn compute_hash(seq: u64, prev_hash: &ChainHash, event: &AuditEvent) -> ChainHash {
        let mut hasher = Sha256::new();
        hasher.update(RECORD_TAG);
        hasher.update(seq.to_be_bytes());
        hasher.update(prev_hash.0);
        hasher.update(event.canonical_bytes());
        ChainHash(hasher.finalize().into())
    }
}

/// A signed statement that record `seq` of the chain had hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The record signed over.
    pub seq: u64,
    /// Its hash.
    pub hash: ChainHash,
    /// Ed25519 signature over the tag, `seq` and `hash` (base64).
    pub signature: String,
}

impl Checkpoint {
    /// Signs `record` as a checkpoint of its chain.
    pub fn sign(record: &AuditRecord, key: &SigningKey) -> Self {
        Self::sign_tagged(CHECKPOINT_TAG, record, key)
    }

    /// Whether `key` signed this checkpoint.
    pub fn verifies(&self, key: &VerifyingKey) -> bool {
        self.verifies_tagged(CHECKPOINT_TAG, key)
    }

    /// Signs `record` as the chain's head, as its keeper remembers it outside the chain.
    /// Signed under its own tag: a checkpoint (of which the chain keeps many, old ones
    /// included) is never a valid head, so the head cannot be moved back to one.
    pub fn sign_head(record: &AuditRecord, key: &SigningKey) -> Self {
        Self::sign_tagged(HEAD_TAG, record, key)
    }

    /// Whether `key` signed this as a head ([`Checkpoint::sign_head`]).
    pub fn verifies_as_head(&self, key: &VerifyingKey) -> bool {
        self.verifies_tagged(HEAD_TAG, key)
    }

    fn sign_tagged(tag: &[u8], record: &AuditRecord, key: &SigningKey) -> Self {
        let signature = key.sign(&checkpoint_message(tag, record.seq, &record.hash));
        Self { seq: record.seq, hash: record.hash, signature: STANDARD.encode(signature.to_bytes()) }
    }

    fn verifies_tagged(&self, tag: &[u8], key: &VerifyingKey) -> bool {
        let Ok(bytes) = STANDARD.decode(&self.signature) else { return false };
        let Ok(signature) = Signature::from_slice(&bytes) else { return false };
        key.verify(&checkpoint_message(tag, self.seq, &self.hash), &signature).is_ok()
    }
}

fn checkpoint_message(tag: &[u8], seq: u64, hash: &ChainHash) -> Vec<u8> {
    let mut message = tag.to_vec();
    message.extend_from_slice(&seq.to_be_bytes());
    message.extend_from_slice(&hash.0);
    message
}

/// What is wrong with a chain, naming the first record that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A record is missing, inserted or out of order at this position.
    #[error("record #{position}: out of sequence (found #{found}): a record was deleted, inserted or moved")]
    Sequence {
        /// Position in the list (the seq it should have).
        position: u64,
        /// The seq it has.
        found: u64,
    },
    /// The record does not point at its predecessor.
    #[error("record #{0}: does not follow the record before it")]
    BrokenLink(u64),
    /// The record's content does not match its hash.
    #[error("record #{0}: its content was changed")]
    ContentChanged(u64),
    /// A checkpoint's signature does not verify.
    #[error("checkpoint at record #{0}: the signature is not the server's")]
    BadCheckpoint(u64),
    /// A signed checkpoint disagrees with the chain: records from `from` on were rewritten.
    #[error("records #{from} to #{checkpoint}: rewritten since the checkpoint at #{checkpoint} was signed")]
    Rewritten {
        /// The first record not vouched for by an earlier, intact checkpoint.
        from: u64,
        /// The checkpoint that no longer matches.
        checkpoint: u64,
    },
    /// The chain keeper signs a checkpoint every so many records; this one is gone, so
    /// nothing vouches for the records before it (a rewrite that deleted the checkpoints).
    #[error("the signed checkpoint at record #{0} is missing: the records before it may have been rewritten")]
    MissingCheckpoint(u64),
    /// A checkpoint names a record the chain no longer has: its tail was cut off.
    #[error("the chain ends at record #{len} but a checkpoint vouches for record #{checkpoint}: records were removed")]
    Truncated {
        /// Number of records present.
        len: u64,
        /// The checkpoint beyond the end.
        checkpoint: u64,
    },
}

impl ChainError {
    /// The first record that cannot be trusted.
    pub fn first_bad(&self) -> u64 {
        match *self {
            ChainError::Sequence { position, .. } => position,
            ChainError::BrokenLink(seq)
            | ChainError::ContentChanged(seq)
            | ChainError::BadCheckpoint(seq)
            | ChainError::MissingCheckpoint(seq) => seq,
            ChainError::Rewritten { from, .. } => from,
            ChainError::Truncated { len, .. } => len,
        }
    }
}

/// Verifies a whole chain from its first record, and every checkpoint against it and `key`.
/// Returns the earliest problem.
pub fn verify_chain(records: &[AuditRecord], checkpoints: &[Checkpoint], key: &VerifyingKey) -> Result<(), ChainError> {
    verify_chain_from(0, ChainHash::GENESIS, records, checkpoints, key)
}

/// [`verify_chain`] for a run of a chain that starts at record `first`, whose predecessor had
/// hash `prev` (a sealed archive, or the live part of a trail after its archives).
/// `checkpoints` are those of the run's records.
pub fn verify_chain_from(
    first: u64,
    prev: ChainHash,
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    key: &VerifyingKey,
) -> Result<(), ChainError> {
    let mut found = verify_links(first, prev, records).err();
    let mut checkpoints: Vec<&Checkpoint> = checkpoints.iter().collect();
    checkpoints.sort_by_key(|c| c.seq);
    let mut vouched_up_to: Option<u64> = None;
    for checkpoint in checkpoints {
        let problem = if checkpoint.verifies(key) {
            let at = checkpoint.seq.checked_sub(first).and_then(|i| usize::try_from(i).ok());
            match at.and_then(|i| records.get(i)) {
                None => Some(ChainError::Truncated { len: first + records.len() as u64, checkpoint: checkpoint.seq }),
                Some(record) if record.hash != checkpoint.hash || record.seq != checkpoint.seq => {
                    Some(ChainError::Rewritten {
                        from: vouched_up_to.map_or(first, |v| v + 1),
                        checkpoint: checkpoint.seq,
                    })
                }
                Some(_) => None,
            }
        } else {
            Some(ChainError::BadCheckpoint(checkpoint.seq))
        };
        match problem {
            Some(p) => {
                if found.as_ref().is_none_or(|f| p.first_bad() < f.first_bad()) {
                    found = Some(p);
                }
                break;
            }
            None => vouched_up_to = Some(checkpoint.seq),
        }
    }
    found.map_or(Ok(()), Err)
}

/// Requires a checkpoint at every `every`-th record of a chain of `len` records (at seq
/// `every - 1`, `2 × every - 1`, …): a keeper that signs on that rule leaves none out, so a
/// missing one means the checkpoints were deleted with a rewrite. Returns the first gap.
pub fn require_checkpoints(len: u64, checkpoints: &[Checkpoint], every: u64) -> Result<(), ChainError> {
    require_checkpoints_in(0..len, checkpoints, every)
}

/// [`require_checkpoints`] for the records `seqs` of a chain (a run of it).
pub fn require_checkpoints_in(
    seqs: std::ops::Range<u64>,
    checkpoints: &[Checkpoint],
    every: u64,
) -> Result<(), ChainError> {
    let every = every.max(1);
    let signed: std::collections::HashSet<u64> = checkpoints.iter().map(|c| c.seq).collect();
    let missing = seqs
        .filter(|seq| (seq + 1).is_multiple_of(every))
        .find(|seq| !signed.contains(seq));
    missing.map_or(Ok(()), |seq| Err(ChainError::MissingCheckpoint(seq)))
}

/// The links alone: sequence, previous hash, content hash.
fn verify_links(first: u64, mut prev: ChainHash, records: &[AuditRecord]) -> Result<(), ChainError> {
    for (position, record) in (first..).zip(records) {
        if record.seq != position {
            return Err(ChainError::Sequence { position, found: record.seq });
        }
        if record.prev_hash != prev {
            return Err(ChainError::BrokenLink(position));
        }
        if AuditRecord::compute_hash(record.seq, &record.prev_hash, &record.event) != record.hash {
            return Err(ChainError::ContentChanged(position));
        }
        prev = record.hash;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            recorded_at: format!("2026-11-22T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
            occurred_at: i.is_multiple_of(5).then(|| "2026-11-21T08:00:00Z".to_owned()),
            tenant: "clinic-1".into(),
            user: Some(format!("user-{}", i % 3)),
            role: Some("clinician".into()),
            device: Some("device-9".into()),
            ip: Some("127.0.0.1".into()),
            action: if i.is_multiple_of(2) { "read" } else { "search" }.into(),
            resource_type: Some("Observation".into()),
            resource_id: Some(format!("obs-{i}")),
            patient: Some(format!("pat-{}", i % 4)),
            outcome: Outcome::Success,
            break_glass: i.is_multiple_of(7),
        }
    }

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut records: Vec<AuditRecord> = Vec::new();
        for i in 0..n {
            let next = AuditRecord::append(records.last(), event(i));
            records.push(next);
        }
        records
    }

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[42; 32])
    }

    #[test]
    fn a_chain_verifies_in_runs_each_from_its_predecessor() {
        let records = chain(250);
        let checkpoints: Vec<Checkpoint> = records
            .iter()
            .filter(|r| (r.seq + 1) % 100 == 0)
            .map(|r| Checkpoint::sign(r, &key()))
            .collect();
        let (early, late) = records.split_at(100);
        let (early_cp, late_cp) = checkpoints.split_at(1);
        let vk = key().verifying_key();
        verify_chain_from(0, ChainHash::GENESIS, early, early_cp, &vk).unwrap();
        verify_chain_from(100, early[99].hash, late, late_cp, &vk).unwrap();
        require_checkpoints_in(100..250, late_cp, 100).unwrap();
        // The late run after another predecessor, or its first record dropped.
        assert_eq!(verify_chain_from(100, early[98].hash, late, late_cp, &vk), Err(ChainError::BrokenLink(100)));
        assert_eq!(
            verify_chain_from(100, early[99].hash, &late[1..], late_cp, &vk),
            Err(ChainError::Sequence { position: 100, found: 101 })
        );
        assert_eq!(require_checkpoints_in(100..250, &[], 100), Err(ChainError::MissingCheckpoint(199)));
    }

    /// Recomputes every link from `from` on, as an attacker with write access would.
    fn relink(records: &mut [AuditRecord], from: usize) {
        for i in from..records.len() {
            let prev = if i == 0 { ChainHash::GENESIS } else { records[i - 1].hash };
            records[i].seq = i as u64;
            records[i].prev_hash = prev;
            records[i].hash = AuditRecord::compute_hash(records[i].seq, &prev, &records[i].event);
        }
    }

    #[test]
    fn an_intact_chain_with_checkpoints_verifies() {
        let records = chain(50);
        let checkpoints = [Checkpoint::sign(&records[19], &key()), Checkpoint::sign(&records[49], &key())];
        verify_chain(&records, &checkpoints, &key().verifying_key()).unwrap();
        verify_chain(&[], &[], &key().verifying_key()).unwrap();
    }

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = event(1);
        a.ip = None;
        let mut b = event(1);
        b.ip = Some(String::new());
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn a_forged_checkpoint_or_a_truncated_tail_is_detected() {
        let records = chain(30);
        let mut forged = Checkpoint::sign(&records[10], &key());
        forged.signature = Checkpoint::sign(&records[10], &SigningKey::from_bytes(&[1; 32])).signature;
        assert_eq!(verify_chain(&records, &[forged], &key().verifying_key()), Err(ChainError::BadCheckpoint(10)));
        let cp = Checkpoint::sign(&records[29], &key());
        let err = verify_chain(&records[..25], &[cp], &key().verifying_key()).unwrap_err();
        assert_eq!(err, ChainError::Truncated { len: 25, checkpoint: 29 });
        assert_eq!(err.first_bad(), 25);
    }

    #[test]
    fn a_checkpoint_is_no_head_and_a_head_no_checkpoint() {
        let records = chain(3);
        let checkpoint = Checkpoint::sign(&records[2], &key());
        let head = Checkpoint::sign_head(&records[2], &key());
        assert!(checkpoint.verifies(&key().verifying_key()) && !checkpoint.verifies_as_head(&key().verifying_key()));
        assert!(head.verifies_as_head(&key().verifying_key()) && !head.verifies(&key().verifying_key()));
    }

    #[test]
    fn every_checkpoint_the_rule_asks_for_must_be_there() {
        let records = chain(30);
        let all: Vec<Checkpoint> = [9, 19, 29].iter().map(|&i| Checkpoint::sign(&records[i], &key())).collect();
        assert_eq!(require_checkpoints(30, &all, 10), Ok(()));
        assert_eq!(require_checkpoints(29, &all[..2], 10), Ok(()), "the 30th record has not come yet");
        assert_eq!(require_checkpoints(30, &all[..2], 10), Err(ChainError::MissingCheckpoint(29)));
        assert_eq!(require_checkpoints(30, &[], 10), Err(ChainError::MissingCheckpoint(9)));
        assert_eq!(require_checkpoints(9, &[], 10), Ok(()));
    }

    #[test]
    fn hashes_serialize_as_hex() {
        let records = chain(2);
        let json = serde_json::to_string(&records[1]).unwrap();
        assert!(json.contains(&format!("\"prev_hash\":\"{}\"", records[0].hash)));
        assert_eq!(serde_json::from_str::<AuditRecord>(&json).unwrap(), records[1]);
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        Edit,
        Delete,
        Insert,
        Swap,
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![Just(Tamper::Edit), Just(Tamper::Delete), Just(Tamper::Insert), Just(Tamper::Swap)]
    }

    /// Applies `how` at `at` (never at the very end); returns the first position the chain
    /// alone can show to be wrong.
    fn apply(records: &mut Vec<AuditRecord>, how: &Tamper, at: usize) -> usize {
        match how {
            Tamper::Edit => {
                records[at].event.patient = Some("pat-forged".into());
                at
            }
            Tamper::Delete => {
                records.remove(at);
                at
            }
            Tamper::Insert => {
                // A forged record that links correctly to its predecessor is a valid
                // continuation; the genuine record after it is the one that no longer fits.
                let forged = AuditRecord::append(Some(&records[at]), event(9999));
                records.insert(at + 1, forged);
                at + 2
            }
            Tamper::Swap => {
                let j = if at + 1 < records.len() { at + 1 } else { at - 1 };
                records.swap(at, j);
                at.min(j)
            }
        }
    }

    proptest! {
        /// Naive tampering: the chain itself names the first bad record.
        #[test]
        fn any_edit_delete_insert_or_reorder_is_detected_at_its_place(how in tamper(), at in 0usize..39) {
            let mut records = chain(40);
            let first = apply(&mut records, &how, at);
            let err = verify_chain(&records, &[], &key().verifying_key()).unwrap_err();
            prop_assert_eq!(err.first_bad(), first as u64, "{:?}", err);
        }

        /// Tampering that recomputes every later hash: a signed checkpoint after it catches it.
        #[test]
        fn a_relinked_rewrite_is_caught_by_the_next_checkpoint(how in tamper(), at in 0usize..30) {
            let original = chain(40);
            let checkpoints = [Checkpoint::sign(&original[9], &key()), Checkpoint::sign(&original[34], &key())];
            let mut records = original.clone();
            apply(&mut records, &how, at);
            relink(&mut records, at);
            let changed = original.iter().zip(&records).position(|(a, b)| a != b).unwrap();
            let err = verify_chain(&records, &checkpoints, &key().verifying_key()).unwrap_err();
            // The error names a record at or before the first changed one …
            prop_assert!(err.first_bad() <= changed as u64, "{:?} vs {}", err, changed);
            // … and after the last checkpoint that still holds.
            let intact = if changed > 9 { 10 } else { 0 };
            prop_assert!(err.first_bad() >= intact, "{:?}", err);
        }
    }
}
