//! Encrypted backups that are proven to restore (HIPAA 164.308(a)(7): a data backup plan,
//! disaster recovery, tested restores).
//!
//! A backup is the whole data directory as it stood at one instant: both SQLCipher files,
//! copied with SQLite's online backup API while the server keeps serving
//! ([`crate::store::snapshot`]), and the keys and certificate a new machine needs to serve
//! as this server (clients have pinned its TLS key). It travels in an [`envelope`] sealed to
//! a backup key whose private half is kept offline: the machine that makes backups cannot
//! read them, and neither can whoever stores them. Inside, a [`Manifest`] signed by the
//! server says whose backup it is and what it held.
//!
//! - `backup key --data DIR --out KEYFILE` makes the backup key: KEYFILE (to keep offline)
//!   holds its private half and the server it belongs to; DIR keeps only the public half.
//! - `backup --data DIR --out FILE` writes one backup.
//! - `restore --from FILE --key KEYFILE --data NEWDIR` refuses a file that was altered, cut
//!   short, made for another key or of another server; writes NEWDIR; and proves the result:
//!   the store opens, holds what the manifest counted, and its audit trail verifies and ends
//!   at the manifest's signed head.
//! - `backup verify FILE --key KEYFILE` does all of that in a temporary directory and
//!   removes it.

pub mod envelope;
pub mod manifest;

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carekeep_protocol::audit::{AuditRecord, Checkpoint};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use zeroize::Zeroizing;

pub use envelope::{EnvelopeError, Identity, Recipient};
pub use manifest::{Counts, FileEntry, Manifest};

use crate::ids::hex;
use crate::{DataDir, ServerError};

/// The files of a data directory a backup carries, as the manifest names them. The
/// certificate and keys come along because clients have pinned them: a restored server
/// must be the same server; the backup recipient, so it goes on backing up to the same key.
const FILES: [&str; 8] = [
    "master.key",
    "signing.key",
    "tls/cert.pem",
    "tls/key.pem",
    "tls/backup-key.pem",
    "backup-recipient",
    "store.db",
    "audit.db",
];

/// The one file a data directory may be without: the TLS backup key, once moved offline.
const OPTIONAL: [&str; 1] = ["tls/backup-key.pem"];

/// Why a backup could not be made, checked or restored. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The server has no backup key to seal to.
    #[error(
        "this server has no backup key yet: run `carekeep-server backup key --data DIR --out KEYFILE`, then keep \
         KEYFILE offline"
    )]
    NoBackupKey,
    /// The key file cannot be used.
    #[error("{} is not a Carekeep backup key file ({why}); use the file `backup key` wrote", .path.display())]
    BadKeyFile {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The envelope was refused.
    #[error("{0}")]
    Envelope(#[from] EnvelopeError),
    /// The backup names another server than the key's.
    #[error("this backup is of another server than the one this backup key belongs to; use that server's key")]
    OtherServer,
    /// The manifest's signature does not hold.
    #[error("this backup's manifest is not signed by the server it names: it was forged; use another copy")]
    Forged,
    /// The backup was made for another backup key and sealed again to this one.
    #[error(
        "this backup was made for another backup key and sealed again to this one: it may be an old state passed \
         off as new; use a backup made for this key"
    )]
    Resealed,
    /// The restore target is a symbolic link.
    #[error("{} is a symbolic link: restore into a real, new or empty directory", .0.display())]
    TargetIsLink(PathBuf),
    /// The (authentic) contents cannot be used.
    #[error("this backup cannot be read: {0}")]
    Unreadable(&'static str),
    /// What was restored differs from what the manifest promised.
    #[error("the restored copy does not match the backup's manifest ({0}); use another copy")]
    Mismatch(String),
    /// The output file exists.
    #[error("{} already exists: a backup never replaces another; choose a new name", .0.display())]
    OutExists(PathBuf),
    /// The restore target holds something.
    #[error("{} is not empty: restore into a new or empty directory", .0.display())]
    TargetNotEmpty(PathBuf),
}

impl BackupError {
    /// An error reading through the envelope: its own refusal, or a payload that ends early.
    fn read(e: io::Error) -> Self {
        match EnvelopeError::from_io(e) {
            EnvelopeError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => Self::Unreadable("it ends early"),
            other => Self::Envelope(other),
        }
    }
}

/// The offline half of a backup key, with the server whose backups it opens.
pub struct BackupKey {
    server: VerifyingKey,
    identity: Identity,
}

impl BackupKey {
    /// Reads a key file `backup key` wrote.
    pub fn read(path: &Path) -> Result<Self, ServerError> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(ServerError::io("read", path))?);
        let bad = |why| ServerError::from(BackupError::BadKeyFile { path: path.to_path_buf(), why });
        let server: [u8; 32] = field(&text, "server").ok_or_else(|| bad("no server line"))?;
        let secret: Zeroizing<[u8; 32]> = Zeroizing::new(field(&text, "secret").ok_or_else(|| bad("no secret line"))?);
        let recipient: [u8; 32] = field(&text, "recipient").ok_or_else(|| bad("no recipient line"))?;
        let identity = Identity::from_bytes(*secret);
        if identity.recipient().to_bytes() != recipient {
            return Err(bad("its secret and recipient lines do not belong together"));
        }
        let server = VerifyingKey::from_bytes(&server).map_err(|_| bad("its server line is not a key"))?;
        Ok(Self { server, identity })
    }
}

/// Makes the backup key of the server in `dir`: its private half, with the server it belongs
/// to, in `key_out` (a new file, owner-only: move it offline), its public half in the data
/// directory. Backups made from then on are sealed to it; a key made before keeps opening
/// the backups made before.
pub fn create_key(dir: &DataDir, key_out: &Path) -> Result<Recipient, ServerError> {
    let identity = Identity::generate().map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
    let recipient = identity.recipient();
    let server = BASE64.encode(dir.signing_key()?.verifying_key().as_bytes());
    let key_file = Zeroizing::new(format!(
        "# Carekeep backup key. Keep this file offline: it opens the backups of the server below.\n\
         server: {server}\nrecipient: {}\nsecret: {}\n",
        BASE64.encode(recipient.to_bytes()),
        BASE64.encode(identity.to_bytes().as_slice()),
    ));
    carekeep_private_files::write_new(key_out, key_file.as_bytes()).map_err(ServerError::io("write", key_out))?;
    let public = format!(
        "# The key this server's backups are sealed to; its private half is kept offline.\nrecipient: {}\n",
        BASE64.encode(recipient.to_bytes())
    );
    let path = dir.backup_recipient_path();
    carekeep_private_files::replace(&path, public.as_bytes()).map_err(ServerError::io("replace", &path))?;
    Ok(recipient)
}

/// Writes a backup of the server in `dir` to `out` (a new file), while it may be serving.
/// The file appears whole or not at all.
pub fn create(dir: &DataDir, out: &Path) -> Result<Manifest, ServerError> {
    let recipient = read_recipient(dir)?;
    if out.exists() {
        return Err(BackupError::OutExists(out.to_path_buf()).into());
    }
    let staging = Staging::beside(out, "partial")?;
    let signing = dir.signing_key()?;
    let snapshot = (staging.path.join("store.db"), staging.path.join("audit.db"));
    let facts = crate::store::snapshot(
        &dir.store_path(),
        &dir.audit_path(),
        &dir.master_key()?,
        (&snapshot.0, &snapshot.1),
        read_facts,
    )?;
    let mut sources = vec![
        ("master.key", dir.master_key_path()),
        ("signing.key", dir.signing_key_path()),
        ("tls/cert.pem", dir.cert_path()),
        ("tls/key.pem", dir.key_path()),
    ];
    if dir.backup_key_path().exists() {
        sources.push(("tls/backup-key.pem", dir.backup_key_path()));
    }
    sources.push(("backup-recipient", dir.backup_recipient_path()));
    sources.extend([("store.db", snapshot.0), ("audit.db", snapshot.1)]);
    let mut sources: Vec<(String, PathBuf)> = sources.into_iter().map(|(name, path)| (name.to_owned(), path)).collect();
    // Listed after the snapshot: an archive audit.db notes was on disk before it was noted.
    sources.extend(archive_files(&dir.archive_path())?);
    // Each file is copied once, then hashed and sealed from the copy: a key rotated while
    // the backup runs cannot make the hash and the sealed bytes differ.
    for (n, (_, path)) in sources
        .iter_mut()
        .enumerate()
        .filter(|(_, (name, _))| !matches!(name.as_str(), "store.db" | "audit.db"))
    {
        let copy = staging.path.join(format!("file-{n}"));
        std::fs::copy(&*path, &copy).map_err(ServerError::io("read", path))?;
        *path = copy;
    }
    let files = sources
        .iter()
        .map(|(name, path)| {
            let (bytes, sha256) = digest(path)?;
            Ok(FileEntry { name: name.clone(), bytes, sha256 })
        })
        .collect::<Result<Vec<_>, ServerError>>()?;
    let manifest = Manifest {
        format: manifest::FORMAT,
        server: BASE64.encode(signing.verifying_key().as_bytes()),
        recipient: BASE64.encode(recipient.to_bytes()),
        created_at: time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
        schema_version: facts.schema_version,
        counts: facts.counts,
        audit_head: facts.last.map(|last| Checkpoint::sign_head(&last, &signing)),
        files,
    };

    let partial = staging.path.join("backup");
    let write = |e: io::Error| ServerError::io("write", out)(e);
    let file = carekeep_private_files::create_new(&partial).map_err(write)?;
    let mut sealed = envelope::SealWriter::new(recipient, BufWriter::new(file)).map_err(write)?;
    manifest.write_signed(&signing, &mut sealed).map_err(write)?;
    for ((_, path), entry) in sources.iter().zip(&manifest.files) {
        let copied =
            io::copy(&mut File::open(path).map_err(ServerError::io("read", path))?.take(entry.bytes), &mut sealed)
                .map_err(write)?;
        if copied != entry.bytes {
            return Err(ServerError::Store(format!("{} changed while it was backed up", path.display())));
        }
    }
    let file = sealed
        .finish()
        .and_then(|buffered| buffered.into_inner().map_err(io::IntoInnerError::into_error));
    file.and_then(|file| file.sync_all()).map_err(write)?;
    // A hard link never replaces an existing file: the backup appears whole, under its name.
    std::fs::hard_link(&partial, out).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => BackupError::OutExists(out.to_path_buf()).into(),
        _ => write(e),
    })?;
    carekeep_private_files::sync_dir(&parent_of(out)).map_err(write)?;
    Ok(manifest)
}

/// Restores the backup `from` into `target` (new, or an empty directory) and proves it:
/// nothing is left in `target` unless the store opens, holds what the manifest counted, and
/// its audit trail verifies up to the manifest's signed head.
pub fn restore(from: &Path, key: &BackupKey, target: &Path) -> Result<Manifest, ServerError> {
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(BackupError::TargetIsLink(target.to_path_buf()).into()),
        Ok(meta)
            if !meta.is_dir()
                || std::fs::read_dir(target)
                    .map_err(ServerError::io("read", target))?
                    .next()
                    .is_some() =>
        {
            return Err(BackupError::TargetNotEmpty(target.to_path_buf()).into());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServerError::io("read", target)(e)),
    }
    // Unpacked and proven beside the target, then renamed into place: a refused or
    // interrupted restore leaves nothing that looks like a data directory.
    let staging = Staging::beside(target, "restoring")?;
    let manifest = unpack(from, key, &staging.path)?;
    prove(&staging.path, key, &manifest)?;
    std::fs::rename(&staging.path, target).map_err(ServerError::io("create", target))?;
    carekeep_private_files::sync_dir(&parent_of(target)).map_err(ServerError::io("sync", target))?;
    Ok(manifest)
}

/// Checks the backup `from` as [`restore`] would, in a temporary directory it removes
/// (and removes what a killed check left there more than an hour ago).
pub fn verify(from: &Path, key: &BackupKey) -> Result<Manifest, ServerError> {
    let temp = std::env::temp_dir();
    sweep(&temp, "carekeep-backup.verify-");
    let scratch = Staging::beside(&temp.join("carekeep-backup"), "verify")?;
    restore(from, key, &scratch.path)
}

/// Removes directories in `dir` named `prefix…` that were last changed over an hour ago.
fn sweep(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|changed| changed.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if stale && entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Reads the envelope into `target`, each file checked against the manifest.
fn unpack(from: &Path, key: &BackupKey, target: &Path) -> Result<Manifest, ServerError> {
    let input = BufReader::new(File::open(from).map_err(ServerError::io("read", from))?);
    let mut reader = envelope::OpenReader::new(&key.identity, input).map_err(BackupError::Envelope)?;
    let manifest = Manifest::read_signed(&mut reader, &key.server)?;
    if manifest.recipient != BASE64.encode(key.identity.recipient().to_bytes()) {
        return Err(BackupError::Resealed.into());
    }
    check_names(&manifest.files)?;
    for sub in ["tls", ARCHIVES] {
        carekeep_private_files::create_dir(&target.join(sub)).map_err(ServerError::io("create", target))?;
    }
    for entry in &manifest.files {
        let path = target.join(&entry.name);
        let file = carekeep_private_files::create_new(&path).map_err(ServerError::io("write", &path))?;
        let mut out = Hashing { inner: BufWriter::new(file), hash: Sha256::new() };
        copy_exact(&mut reader, &mut out, entry.bytes, &path)?;
        if hex(&out.hash.finalize()) != entry.sha256 {
            return Err(BackupError::Mismatch(format!("{} differs from its checksum", entry.name)).into());
        }
        let file = out
            .inner
            .into_inner()
            .map_err(|e| ServerError::io("write", &path)(e.into_error()))?;
        file.sync_all().map_err(ServerError::io("write", &path))?;
    }
    reader.finish().map_err(BackupError::Envelope)?;
    for dir in [target.join("tls"), target.join(ARCHIVES), target.to_path_buf()] {
        carekeep_private_files::sync_dir(&dir).map_err(ServerError::io("sync", &dir))?;
    }
    Ok(manifest)
}

/// Opens what was restored and checks it against the manifest.
fn prove(target: &Path, key: &BackupKey, manifest: &Manifest) -> Result<(), ServerError> {
    let mismatch = |what: String| ServerError::from(BackupError::Mismatch(what));
    let seed: [u8; 32] = std::fs::read(target.join("signing.key"))
        .map_err(ServerError::io("read", target))?
        .try_into()
        .map_err(|_| mismatch("its signing key is damaged".into()))?;
    if SigningKey::from_bytes(&seed).verifying_key() != key.server {
        return Err(mismatch("its signing key is not the server's".into()));
    }
    let master = Zeroizing::new(std::fs::read(target.join("master.key")).map_err(ServerError::io("read", target))?);
    let store = crate::store::Store::open(&target.join("store.db"), &target.join("audit.db"), &master)?;
    let facts = read_facts(&store.read())?;
    // Compared with the version the files had before this binary migrated them: a backup
    // made by an older release restores into a newer one.
    if facts.counts != manifest.counts || store.found_version() != manifest.schema_version {
        return Err(mismatch(format!("it holds {:?}, the manifest counted {:?}", facts.counts, manifest.counts)));
    }
    match (&manifest.audit_head, &facts.last) {
        (None, None) => {}
        (Some(head), Some(last))
            if head.seq == last.seq && head.hash == last.hash && head.verifies_as_head(&key.server) => {}
        _ => return Err(mismatch("its audit trail does not end at the signed head".into())),
    }
    crate::audit::verify(&store, &key.server, &target.join(ARCHIVES), &[])
        .map_err(|e| ServerError::AuditBroken(e.to_string()))?;
    Ok(())
}

/// The sealed audit archives in `dir`, as (name in a backup, path), sorted.
fn archive_files(dir: &Path) -> Result<Vec<(String, PathBuf)>, ServerError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ServerError::io("read", dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let name = entry
            .map_err(ServerError::io("read", dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let in_backup = format!("{ARCHIVES}/{name}");
        if is_archive_name(&in_backup) {
            files.push((in_backup, dir.join(name)));
        }
    }
    files.sort();
    Ok(files)
}

/// The folder of sealed audit archives, as a backup names it.
const ARCHIVES: &str = "audit-archive";

/// `audit-archive/` and an archive's file name: nothing that could climb out.
fn is_archive_name(name: &str) -> bool {
    name.strip_prefix(ARCHIVES)
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(crate::audit::archive::is_file_name)
}

/// Every name is one a data directory has, none twice, and the required ones are there.
fn check_names(files: &[FileEntry]) -> Result<(), BackupError> {
    let mut seen = std::collections::HashSet::new();
    for entry in files {
        let known = FILES.contains(&entry.name.as_str()) || is_archive_name(&entry.name);
        if !known || !seen.insert(entry.name.as_str()) {
            return Err(BackupError::Unreadable("it lists a file a data directory does not have"));
        }
    }
    if FILES
        .iter()
        .filter(|name| !OPTIONAL.contains(name))
        .any(|name| !seen.contains(name))
    {
        return Err(BackupError::Unreadable("a file of the data directory is missing from it"));
    }
    Ok(())
}

/// What a snapshot held, read inside it.
struct Facts {
    counts: Counts,
    last: Option<AuditRecord>,
    schema_version: i64,
}

fn read_facts(conn: &Connection) -> Result<Facts, ServerError> {
    let counts = conn.query_row(
        "SELECT (SELECT count(*) FROM main.tenants), (SELECT count(*) FROM main.users),
                (SELECT count(*) FROM main.devices), (SELECT count(*) FROM main.resources),
                (SELECT count(*) FROM main.documents), (SELECT count(*) FROM audit.audit_log)",
        [],
        |r| {
            Ok(Counts {
                tenants: r.get(0)?,
                users: r.get(1)?,
                devices: r.get(2)?,
                resources: r.get(3)?,
                documents: r.get(4)?,
                audit_records: r.get(5)?,
            })
        },
    )?;
    let last = crate::audit::trail::last_record(conn)?;
    let schema_version = crate::store::schema_version(conn)?;
    Ok(Facts { counts, last, schema_version })
}

fn read_recipient(dir: &DataDir) -> Result<Recipient, ServerError> {
    let path = dir.backup_recipient_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BackupError::NoBackupKey.into()),
        Err(e) => return Err(ServerError::io("read", &path)(e)),
    };
    field(&text, "recipient")
        .map(Recipient::from_bytes)
        .ok_or(ServerError::BadKeyMaterial(path))
}

/// The 32 bytes of a `name: base64` line.
fn field(text: &str, name: &str) -> Option<[u8; 32]> {
    let value = text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))?;
    BASE64.decode(value.trim()).ok()?.try_into().ok()
}

/// Copies exactly `len` bytes of the envelope to `out` (the file at `path`), telling a
/// refused envelope from a failed disk.
fn copy_exact(reader: &mut impl Read, out: &mut impl Write, len: u64, path: &Path) -> Result<(), ServerError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => return Err(BackupError::Unreadable("it ends inside a file").into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BackupError::read(e).into()),
        };
        out.write_all(&buf[..n]).map_err(ServerError::io("write", path))?;
        left -= n as u64;
    }
    Ok(())
}

/// A file's length and SHA-256 (hex).
fn digest(path: &Path) -> Result<(u64, String), ServerError> {
    let mut hashing = Hashing { inner: io::sink(), hash: Sha256::new() };
    let bytes = io::copy(&mut File::open(path).map_err(ServerError::io("read", path))?, &mut hashing)
        .map_err(ServerError::io("read", path))?;
    Ok((bytes, hex(&hashing.hash.finalize())))
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A private working directory beside a backup being written (the snapshot, copies of the
/// other files, the envelope before it gets its name) or a restore (the data directory
/// before it is proven), removed when dropped.
struct Staging {
    path: PathBuf,
}

impl Staging {
    /// `NAME.WHAT-RANDOM` beside `path`.
    fn beside(path: &Path, what: &str) -> Result<Self, ServerError> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| ServerError::KeyGeneration(e.to_string()))?;
        let mut name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        name.push('.');
        name.push_str(what);
        name.push('-');
        crate::ids::push_hex(&mut name, &random);
        let path = parent_of(path).join(name);
        carekeep_private_files::create_dir(&path).map_err(ServerError::io("create", &path))?;
        Ok(Self { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
