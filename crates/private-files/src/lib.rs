//! Directories and files only their owner can open: keys, vaults, exports and demo
//! passwords are written through these so no copy of the rule drifts from another.
//!
//! On Unix a directory is created with mode `0700` and a file with `0600` (both before the
//! process's umask, which can only narrow them). Elsewhere the OS has no such mode bits at
//! creation; the files are created as the OS does by default (on Windows, inheriting the
//! per-user profile's access list). The modes apply to what these functions create: an
//! existing directory keeps its mode, and a file reopened with [`create`] or [`append`]
//! keeps the mode it was first created with.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The mode of a directory these functions create on Unix: owner only.
pub const DIR_MODE: u32 = 0o700;
/// The mode of a file these functions create on Unix: owner read and write only.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents, each new one owner-only. An existing directory is
/// fine (and keeps its mode): a profile or data directory is opened again on every run.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// Creates `path` owner-only for writing, or truncates it if it exists: for a file that is
/// rewritten whole (a temporary file before its rename, the demo's settings).
pub fn create(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    open(&options, path)
}

/// Creates `path` owner-only for writing, failing with [`io::ErrorKind::AlreadyExists`] if
/// anything is there: a key or an export must never silently replace what was.
pub fn create_new(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    open(&options, path)
}

/// Opens `path` for appending, creating it owner-only: for a queue that grows a line at a
/// time (the audit records waiting for upload).
pub fn append(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    open(&options, path)
}

/// Writes `bytes` to `path` ([`create`]: truncating), synced to disk before returning.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes `bytes` to a new file at `path` ([`create_new`]: never over an existing one),
/// synced to disk before returning.
pub fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_new(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content,
/// never a mix: written to a new `PATH.tmp` (owner-only, synced; one a crash left behind
/// is removed first, so its mode is not inherited), renamed over `path`, and the directory
/// synced so the rename itself survives a power cut. On failure the temporary file is
/// removed and `path` is as it was.
pub fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let aside = aside_of(path);
    let _ = std::fs::remove_file(&aside);
    let result = write_new(&aside, bytes)
        .and_then(|()| std::fs::rename(&aside, path))
        .and_then(|()| match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
            _ => sync_dir(Path::new(".")),
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    result
}

/// Makes a rename inside `dir` durable: on Unix the directory entry itself must be synced;
/// elsewhere the rename is durable once it returns.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// `path` with `.tmp` added to its name, where [`replace`] writes before the rename.
fn aside_of(path: &Path) -> PathBuf {
    let mut aside = path.as_os_str().to_owned();
    aside.push(".tmp");
    PathBuf::from(aside)
}

fn open(options: &OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    let options = {
        let mut options = options.clone();
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
        options
    };
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("carekeep-private-files-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_dir_makes_every_new_level_owner_only_and_accepts_an_existing_one() {
        let scratch = Scratch::new("dir");
        let nested = scratch.0.join("a").join("b");
        create_dir(&nested).unwrap();
        create_dir(&nested).unwrap();
        assert!(nested.is_dir());
        #[cfg(unix)]
        {
            assert_eq!(mode(&scratch.0.join("a")), DIR_MODE);
            assert_eq!(mode(&nested), DIR_MODE);
        }
    }

    #[test]
    fn create_truncates_and_the_file_is_owner_only() {
        let scratch = Scratch::new("create");
        let path = scratch.0.join("settings.json");
        write(&path, b"a longer first version").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        assert_eq!(mode(&path), FILE_MODE);
    }

    #[test]
    fn create_new_never_overwrites() {
        let scratch = Scratch::new("new");
        let path = scratch.0.join("master.key");
        write_new(&path, b"first").unwrap();
        let refused = write_new(&path, b"second").unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        #[cfg(unix)]
        assert_eq!(mode(&path), FILE_MODE);
    }

    #[test]
    fn append_adds_to_the_end_and_creates_owner_only() {
        let scratch = Scratch::new("append");
        let path = scratch.0.join("queue");
        append(&path).unwrap().write_all(b"one\n").unwrap();
        append(&path).unwrap().write_all(b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        #[cfg(unix)]
        assert_eq!(mode(&path), FILE_MODE);
    }

    #[test]
    fn replace_swaps_the_content_whole_and_leaves_nothing_aside() {
        let scratch = Scratch::new("replace");
        let path = scratch.0.join("key.pem");
        std::fs::write(&path, b"old").unwrap();
        replace(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!aside_of(&path).exists());
        // The replacement is a new file: owner-only even where the old one was not.
        #[cfg(unix)]
        assert_eq!(mode(&path), FILE_MODE);
    }

    #[test]
    fn a_failed_replace_leaves_the_file_as_it_was_and_no_temporary() {
        let scratch = Scratch::new("replace-fails");
        // A directory where the file should be: the rename over it fails.
        let path = scratch.0.join("cert.pem");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"kept").unwrap();
        assert!(replace(&path, b"new").is_err());
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");
        assert!(!aside_of(&path).exists());
    }

    #[test]
    fn a_stale_temporary_is_overwritten_not_trusted() {
        let scratch = Scratch::new("stale");
        let path = scratch.0.join("vault.keys");
        std::fs::write(aside_of(&path), b"left by a crash, much longer than the new content").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(aside_of(&path), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        replace(&path, b"fresh").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"fresh");
        #[cfg(unix)]
        assert_eq!(mode(&path), FILE_MODE);
    }
}
