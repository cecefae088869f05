//! Audit retention (HIPAA 164.316(b)(2) asks six years): completed months of the trail sealed
//! into signed archive files, so the live trail stays small while nothing in six years can
//! be edited undetected.
//!
//! `audit archive` checks each month's run of the chain before it seals it (a record altered
//! in the live trail is never laundered into an archive), writes `audit-archive/YYYY-MM.jsonl`
//! — the records, their checkpoints, and last a seal the server signs (the run's first and
//! last record, the hash before it, counts, the SHA-256 of the lines) — and only then, in one
//! transaction, notes the archive in audit.db and removes its records from the live trail.
//! `audit verify` then checks every archive and the live trail as one chain: an archive
//! edited, removed, replaced or reordered is named.
//!
//! An archive holds a contiguous run of the chain: from the first record not yet archived to
//! the last one before the first record stamped in the next month. Records from the trail's
//! remembered head on always stay live, so a server restarted after an archive run finds its
//! head where it left it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carekeep_protocol::audit::{AuditRecord, ChainHash, Checkpoint, require_checkpoints_in, verify_chain_from};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;

use super::trail::{CHECKPOINT_EVERY, VerifyError};
use crate::ServerError;
use crate::ids::hex;
use crate::store::Store;

/// What an archive's seal signature is over, before the seal's JSON.
const SEALED_AS: &[u8] = b"carekeep-audit-archive/v1\0";

/// The signed summary that ends an archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// The month the run's first record was stamped in (`YYYY-MM`).
    pub month: String,
    /// The run's first record.
    pub first_seq: u64,
    /// The hash of the record before it ([`ChainHash::GENESIS`] for the first).
    pub prev_hash: ChainHash,
    /// The run's last record.
    pub last_seq: u64,
    /// Its hash: where the next run (or the live trail) must continue from.
    pub last_hash: ChainHash,
    /// Checkpoints in the file.
    pub checkpoints: u64,
    /// SHA-256 (hex) of the file's lines before the seal.
    pub sha256: String,
}

/// One line of an archive file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Record(AuditRecord),
    Checkpoint(Checkpoint),
    Seal { seal: Seal, signature: String },
}

/// A month's run of the chain: its records, their checkpoints, the hash before it.
type Run = (Vec<AuditRecord>, Vec<Checkpoint>, ChainHash);

/// One archive, as audit.db remembers it.
struct Noted {
    first_seq: u64,
    file: String,
    last_hash: String,
    sha256: String,
}

/// Whether `name` is an archive's file name (`2026-10.0.jsonl`): a month, the run's first
/// record, nothing that could name a path elsewhere.
pub fn is_file_name(name: &str) -> bool {
    let mut parts = name.split('.');
    let (Some(month), Some(first), Some("jsonl"), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let month = month.as_bytes();
    month.len() == 7
        && month[4] == b'-'
        && month.iter().enumerate().all(|(i, b)| i == 4 || b.is_ascii_digit())
        && !first.is_empty()
        && first.bytes().all(|b| b.is_ascii_digit())
}

/// Notes read from audit.db, each checked to name a file in the archive folder.
fn noted(conn: &rusqlite::Connection) -> Result<Vec<Noted>, VerifyError> {
    let failed = |e: rusqlite::Error| VerifyError::Store(e.into());
    let noted: Vec<Noted> = conn
        .prepare("SELECT first_seq, file, last_hash, sha256 FROM audit.audit_archives ORDER BY first_seq")
        .map_err(failed)?
        .query_map([], |r| {
            Ok(Noted {
                first_seq: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(u64::MAX),
                file: r.get(1)?,
                last_hash: r.get(2)?,
                sha256: r.get(3)?,
            })
        })
        .map_err(failed)?
        .collect::<Result<_, _>>()
        .map_err(failed)?;
    if let Some(bad) = noted.iter().find(|n| !is_file_name(&n.file)) {
        return Err(VerifyError::Archive(format!("{}: the note names no file of the archive folder", bad.first_seq)));
    }
    Ok(noted)
}

/// Seals every month that ended more than `keep_months` months before `now` into `dir`
/// (created if needed), and removes the sealed records from the live trail. Returns the
/// seals written, oldest first.
pub fn archive(
    store: &Store,
    key: &SigningKey,
    dir: &Path,
    keep_months: u32,
    now: time::OffsetDateTime,
) -> Result<Vec<Seal>, ServerError> {
    // The whole trail first, archives and live through the signed head: a run is sealed
    // only if the chain holds on both sides of it (a forged tail of a month, relinked up
    // to its end, breaks only where the next month begins).
    super::trail::verify(store, &key.verifying_key(), dir, &[])
        .map_err(|e| ServerError::AuditBroken(format!("{e}; nothing was archived")))?;
    carekeep_private_files::create_dir(dir).map_err(ServerError::io("create", dir))?;
    owner_only(dir)?;
    let cutoff = month_of(now, keep_months);
    let mut written = Vec::new();
    loop {
        let Some((records, checkpoints, prev_hash)) = next_month(store, &key.verifying_key(), &cutoff)? else {
            return Ok(written);
        };
        let (first, last) = (&records[0], &records[records.len() - 1]);
        let month = first.event.recorded_at.get(..7).unwrap_or("0000-00").to_owned();
        let file = format!("{month}.{}.jsonl", first.seq);
        let mut body = Vec::new();
        for line in records
            .iter()
            .cloned()
            .map(Line::Record)
            .chain(checkpoints.iter().cloned().map(Line::Checkpoint))
        {
            serde_json::to_writer(&mut body, &line).map_err(|e| ServerError::Store(e.to_string()))?;
            body.push(b'\n');
        }
        let seal = Seal {
            month,
            first_seq: first.seq,
            prev_hash,
            last_seq: last.seq,
            last_hash: last.hash,
            checkpoints: checkpoints.len() as u64,
            sha256: hex(&Sha256::digest(&body)),
        };
        let signed = serde_json::to_vec(&seal).map_err(|e| ServerError::Store(e.to_string()))?;
        let signature = BASE64.encode(key.sign(&[SEALED_AS, &signed].concat()).to_bytes());
        serde_json::to_writer(&mut body, &Line::Seal { seal: seal.clone(), signature })
            .map_err(|e| ServerError::Store(e.to_string()))?;
        body.push(b'\n');
        let path = dir.join(&file);
        // A file of that name that audit.db does not note is what an interrupted run left.
        carekeep_private_files::replace(&path, &body).map_err(ServerError::io("write", &path))?;
        let (first_seq, last_seq) = (to_sql(seal.first_seq), to_sql(seal.last_seq));
        let mut conn = store.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO audit.audit_archives (first_seq, last_seq, file, last_hash, sha256)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![first_seq, last_seq, file, seal.last_hash.to_string(), hex(&Sha256::digest(&body))],
        )?;
        tx.execute("DELETE FROM audit.audit_log WHERE seq BETWEEN ?1 AND ?2", [first_seq, last_seq])?;
        tx.execute("DELETE FROM audit.audit_checkpoints WHERE seq BETWEEN ?1 AND ?2", [first_seq, last_seq])?;
        tx.commit()?;
        written.push(seal);
    }
}

/// The oldest live month's run, checked, if it ended before `cutoff` (`YYYY-MM`) and before
/// the trail's remembered head: its records, their checkpoints and the hash before it.
fn next_month(store: &Store, key: &VerifyingKey, cutoff: &str) -> Result<Option<Run>, ServerError> {
    let conn = store.lock();
    let Some((start, stamped)): Option<(i64, String)> = conn
        .query_row("SELECT seq, recorded_at FROM audit.audit_log ORDER BY seq LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?
    else {
        return Ok(None);
    };
    let month = stamped.get(..7).unwrap_or_default();
    if month >= cutoff {
        return Ok(None);
    }
    let head: Option<i64> = conn
        .query_row("SELECT checkpoint FROM main.audit_head WHERE id = 1", [], |r| r.get::<_, String>(0))
        .optional()?
        .and_then(|json| serde_json::from_str::<Checkpoint>(&json).ok())
        .and_then(|head| i64::try_from(head.seq).ok());
    // The run ends before the first record stamped in a later month; it must end before the
    // head (which stays live), or it is not complete yet.
    let end: Option<i64> = conn.query_row(
        "SELECT min(seq) FROM audit.audit_log WHERE seq > ?1 AND substr(recorded_at, 1, 7) > ?2",
        params![start, month],
        |r| r.get(0),
    )?;
    let (Some(end), Some(head)) = (end, head) else { return Ok(None) };
    if end > head {
        return Ok(None);
    }
    let records = conn
        .prepare("SELECT record FROM audit.audit_log WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")?
        .query_map([start, end], |r| r.get::<_, String>(0))?
        .map(|json| json.map_err(ServerError::from).and_then(|j| parse(&j)))
        .collect::<Result<Vec<AuditRecord>, _>>()?;
    let checkpoints = conn
        .prepare("SELECT checkpoint FROM audit.audit_checkpoints WHERE seq >= ?1 AND seq < ?2 ORDER BY seq")?
        .query_map([start, end], |r| r.get::<_, String>(0))?
        .map(|json| json.map_err(ServerError::from).and_then(|j| parse(&j)))
        .collect::<Result<Vec<Checkpoint>, _>>()?;
    let prev = match start {
        0 => ChainHash::GENESIS,
        _ => last_sealed(&conn)?.ok_or_else(|| {
            ServerError::AuditBroken(format!(
                "the live trail starts at #{start} but no archive holds the records before it"
            ))
        })?,
    };
    let first = u64::try_from(start).unwrap_or_default();
    let broken = |e| ServerError::AuditBroken(format!("{e}; nothing was archived"));
    verify_chain_from(first, prev, &records, &checkpoints, key).map_err(broken)?;
    require_checkpoints_in(first..first + records.len() as u64, &checkpoints, CHECKPOINT_EVERY).map_err(broken)?;
    Ok(Some((records, checkpoints, prev)))
}

/// The last archived record's hash, as audit.db noted it.
fn last_sealed(conn: &rusqlite::Connection) -> Result<Option<ChainHash>, ServerError> {
    let hash: Option<String> = conn
        .query_row("SELECT last_hash FROM audit.audit_archives ORDER BY first_seq DESC LIMIT 1", [], |r| r.get(0))
        .optional()?;
    hash.map(|h| {
        serde_json::from_value(serde_json::Value::String(h))
            .map_err(|_| ServerError::AuditBroken("the last archive is noted with a damaged hash".into()))
    })
    .transpose()
}

/// What the archives hold, checked: each file is the one audit.db noted (same SHA-256), its
/// seal signed by `key`, its run a valid chain continuing the one before. Calls `each` with
/// every record, in order. Returns where the live trail must continue: the next seq and the
/// hash before it.
pub(super) fn verify_archives(
    conn: &rusqlite::Connection,
    dir: &Path,
    key: &VerifyingKey,
    mut each: impl FnMut(&AuditRecord),
) -> Result<(u64, ChainHash, u64), VerifyError> {
    let noted = noted(conn)?;
    let (mut next, mut prev, mut checkpoints_seen) = (0_u64, ChainHash::GENESIS, 0_u64);
    for archive in noted {
        let bad = |why: &str| VerifyError::Archive(format!("{}: {why}", archive.file));
        if archive.first_seq != next {
            return Err(bad("it does not start where the archive before it ended"));
        }
        let path = dir.join(&archive.file);
        let bytes = std::fs::read(&path).map_err(|_| bad("it is missing; restore it from a backup"))?;
        if hex(&Sha256::digest(&bytes)) != archive.sha256 {
            return Err(bad("it is not the file that was sealed: it was edited or replaced"));
        }
        let (records, checkpoints, seal) = read_archive(&bytes, key).ok_or_else(|| bad("its seal does not hold"))?;
        if seal.first_seq != next || seal.prev_hash != prev || records.first().map(|r| r.seq) != Some(next) {
            return Err(bad("its run does not continue the chain"));
        }
        verify_chain_from(next, prev, &records, &checkpoints, key).map_err(VerifyError::Broken)?;
        let end = next + records.len() as u64;
        require_checkpoints_in(next..end, &checkpoints, CHECKPOINT_EVERY).map_err(VerifyError::Broken)?;
        let last = records.last().ok_or_else(|| bad("it is empty"))?;
        if last.seq != seal.last_seq || last.hash != seal.last_hash || last.hash.to_string() != archive.last_hash {
            return Err(bad("its seal, or audit.db's note of it, does not name its last record"));
        }
        records.iter().for_each(&mut each);
        (next, prev) = (end, last.hash);
        checkpoints_seen += checkpoints.len() as u64;
    }
    Ok((next, prev, checkpoints_seen))
}

/// An archive file's records, checkpoints and seal, if the seal is signed by `key` and its
/// hash covers every line before it.
fn read_archive(bytes: &[u8], key: &VerifyingKey) -> Option<(Vec<AuditRecord>, Vec<Checkpoint>, Seal)> {
    let (mut records, mut checkpoints) = (Vec::new(), Vec::new());
    let mut hashed = 0;
    for line in BufReader::new(bytes).lines() {
        let line = line.ok()?;
        match serde_json::from_str::<Line>(&line).ok()? {
            Line::Record(record) => records.push(record),
            Line::Checkpoint(checkpoint) => checkpoints.push(checkpoint),
            Line::Seal { seal, signature } => {
                let signature: [u8; 64] = BASE64.decode(signature).ok()?.try_into().ok()?;
                let signed = serde_json::to_vec(&seal).ok()?;
                key.verify_strict(&[SEALED_AS, &signed].concat(), &Signature::from_bytes(&signature))
                    .ok()?;
                let ends_here = hashed + line.len() + 1 == bytes.len();
                let covered = hex(&Sha256::digest(&bytes[..hashed])) == seal.sha256;
                return (ends_here && covered && seal.checkpoints == checkpoints.len() as u64).then_some((
                    records,
                    checkpoints,
                    seal,
                ));
            }
        }
        hashed += line.len() + 1;
    }
    None
}

/// "Who accessed this patient's record" across the retention period: the records naming
/// `patient` from `from` to `to` (inclusive), archived and live, oldest first. An archive
/// is read only if it is the file audit.db noted (its SHA-256); `audit verify` vouches for
/// the rest.
pub fn who_accessed(
    store: &Store,
    dir: &Path,
    patient: &str,
    from: time::OffsetDateTime,
    to: time::OffsetDateTime,
) -> Result<Vec<AuditRecord>, ServerError> {
    let within = |record: &AuditRecord| {
        record.event.patient.as_deref() == Some(patient)
            && time::OffsetDateTime::parse(&record.event.recorded_at, &Rfc3339).is_ok_and(|at| from <= at && at <= to)
    };
    let noted = noted(&store.read()).map_err(|e| ServerError::AuditBroken(e.to_string()))?;
    let mut out = Vec::new();
    for archive in noted {
        let path: PathBuf = dir.join(&archive.file);
        let bytes = std::fs::read(&path).map_err(ServerError::io("read", &path))?;
        if hex(&Sha256::digest(&bytes)) != archive.sha256 {
            return Err(ServerError::AuditBroken(format!(
                "the archive {} is not the file that was sealed; run `audit verify`",
                archive.file
            )));
        }
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(Line::Record(record)) = serde_json::from_slice::<Line>(line)
                && within(&record)
            {
                out.push(record);
            }
        }
    }
    // The live trail's text columns, narrowed to whole seconds either side, then exactly.
    let bound = |t: time::OffsetDateTime| t.to_offset(time::UtcOffset::UTC).format(&Rfc3339).unwrap_or_default();
    let (low, high) = (bound(from), bound(to));
    let low = low.get(..19).unwrap_or(&low).to_owned();
    let high = format!("{}~", high.get(..19).unwrap_or(&high));
    out.extend(super::trail::query(store, patient, &low, &high)?.into_iter().filter(within));
    Ok(out)
}

/// Makes `dir` owner-only, whatever mode it was created with.
fn owner_only(dir: &Path) -> Result<(), ServerError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(ServerError::io("protect", dir))?;
    }
    Ok(())
}

/// `YYYY-MM` of the month `back` months before `now`'s.
fn month_of(now: time::OffsetDateTime, back: u32) -> String {
    let months = i64::from(now.year()) * 12 + i64::from(u8::from(now.month())) - 1 - i64::from(back);
    format!("{:04}-{:02}", months.div_euclid(12), months.rem_euclid(12) + 1)
}

fn to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ServerError> {
    serde_json::from_str(json).map_err(|_| ServerError::AuditBroken("a live audit record is unreadable".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_names_cannot_point_elsewhere() {
        assert!(is_file_name("2026-10.0.jsonl"));
        assert!(is_file_name("2025-01.130.jsonl"));
        for bad in [
            "../2026-10.0.jsonl",
            "/etc/2026-10.0.jsonl",
            "2026-10.0.jsonl.bak",
            "2026-1.0.jsonl",
            "x026-10.0.jsonl",
            "2026-10..jsonl",
            "2026-10.0.json",
            "2026/10.0.jsonl",
        ] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn months_count_back_across_years() {
        let at = time::macros::datetime!(2026-02-15 12:00 UTC);
        assert_eq!(month_of(at, 0), "2026-02");
        assert_eq!(month_of(at, 1), "2026-01");
        assert_eq!(month_of(at, 2), "2025-12");
        assert_eq!(month_of(at, 14), "2024-12");
    }
}
