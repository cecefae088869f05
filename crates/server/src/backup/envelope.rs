//! The sealed envelope a backup travels in: encrypted to an X25519 recipient whose private
//! half is kept offline, so the machine that makes backups cannot read them, and authenticated
//! chunk by chunk so an altered, reordered, cut-short or extended file is refused.
//!
//! The construction is age's (age-encryption.org/v1): a random file key, wrapped for the
//! recipient by an ephemeral X25519 exchange through HKDF-SHA-256; the payload in 64 KiB
//! chunks, each sealed under a key derived from the file key and the header, with a nonce of
//! an 11-byte counter and a last-chunk flag (the STREAM construction). The `age` crate itself
//! would bring a hundred crates (localisation, plugins) into the server; this is the same
//! design in the server's own AEAD (AES-256-GCM) on the primitives already in its tree.
//!
//! ```text
//! "carekeep-backup/v1\n"                      19 bytes
//! SHA-256 of the recipient's public key       32   which key opens it
//! ephemeral X25519 public key                 32
//! file key sealed for the recipient           48   AES-256-GCM, key from HKDF(shared secret)
//! chunks: 64 KiB + 16 each, the last shorter  (an empty last chunk when the payload fills
//!                                              whole chunks, so the last is always short)
//! ```

use std::io::{self, Read, Write};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// The envelope's first bytes.
const MAGIC: &[u8; 19] = b"carekeep-backup/v1\n";
/// Plaintext bytes per chunk.
const CHUNK: usize = 64 * 1024;
/// AES-GCM's tag.
const TAG: usize = 16;
/// Magic, recipient hash, ephemeral key, sealed file key.
const HEADER: usize = MAGIC.len() + 32 + 32 + 32 + TAG;

/// Why an envelope could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The file does not start like a backup.
    #[error("this is not a Carekeep backup (or its first bytes were damaged)")]
    NotABackup,
    /// The file was sealed for another backup key.
    #[error("this backup was made for another backup key; use the key file that belongs to it")]
    OtherKey,
    /// A chunk failed its check: the file was altered, or chunks were moved.
    #[error("the backup file was altered or damaged; use another copy")]
    Altered,
    /// The file ends before its last chunk, or bytes were changed in or added to the last
    /// chunk (the three cannot be told apart).
    #[error("the backup file is cut short (an interrupted copy?) or its end was altered; use a complete copy")]
    Truncated,
    /// The payload goes on after what it was expected to hold.
    #[error("the backup holds more than its manifest lists: it was altered; use another copy")]
    Extended,
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<EnvelopeError> for io::Error {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

impl EnvelopeError {
    /// The envelope's own error inside an `io::Error` that passed through a reader, if it
    /// is one.
    pub fn from_io(e: io::Error) -> Self {
        if !e
            .get_ref()
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<EnvelopeError>)
        {
            return Self::Io(e);
        }
        match e
            .into_inner()
            .map(<dyn std::error::Error + Send + Sync>::downcast::<EnvelopeError>)
        {
            Some(Ok(own)) => *own,
            _ => Self::Altered,
        }
    }
}

/// The public half of a backup key: what a server seals its backups to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Recipient(PublicKey);

/// The private half: opens backups. Kept offline; wiped from memory when dropped.
pub struct Identity(StaticSecret);

impl Identity {
    /// A new random key pair.
    pub fn generate() -> io::Result<Self> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self(StaticSecret::from(*bytes)))
    }

    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// Its 32 bytes, for the key file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public half.
    pub fn recipient(&self) -> Recipient {
        Recipient(PublicKey::from(&self.0))
    }
}

impl Recipient {
    /// The key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(PublicKey::from(bytes))
    }

    /// Its 32 bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        self.0.to_bytes()
    }

    fn fingerprint(self) -> [u8; 32] {
        Sha256::new_with_prefix(b"carekeep-backup/v1 recipient\0")
            .chain_update(self.0.as_bytes())
            .finalize()
            .into()
    }
}

/// The key that wraps the file key, from the exchange's shared secret.
fn wrapping_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(b"carekeep-backup/v1 file key", key.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    key
}

/// The payload key, from the file key and the whole header (so no header byte can change).
fn payload_cipher(file_key: &[u8; 32], header: &[u8]) -> Aes256Gcm {
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(header), file_key)
        .expand(b"carekeep-backup/v1 payload", key.as_mut_slice())
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    Aes256Gcm::new(key.as_slice().into())
}

/// Chunk `counter`'s nonce: the counter, big-endian, then 1 for the last chunk.
fn nonce(counter: u64, last: bool) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut nonce = [0u8; 12];
    nonce[3..11].copy_from_slice(&counter.to_be_bytes());
    nonce[11] = u8::from(last);
    *Nonce::from_slice(&nonce)
}

/// Seals what is written to it for one recipient; [`SealWriter::finish`] writes the last
/// chunk (dropped without it, the envelope is incomplete and will be refused).
pub struct SealWriter<W: Write> {
    out: W,
    cipher: Aes256Gcm,
    buffer: Zeroizing<Vec<u8>>,
    counter: u64,
}

impl<W: Write> SealWriter<W> {
    /// Writes the header to `out` and starts the payload.
    pub fn new(recipient: Recipient, mut out: W) -> io::Result<Self> {
        let ephemeral = Identity::generate()?;
        let ephemeral_public = ephemeral.recipient().to_bytes();
        let shared = ephemeral.0.diffie_hellman(&recipient.0);
        if !shared.was_contributory() {
            return Err(io::Error::other("the backup key's public half is not a usable key"));
        }
        let shared = Zeroizing::new(shared.to_bytes());
        let mut file_key = Zeroizing::new([0u8; 32]);
        getrandom::fill(file_key.as_mut_slice()).map_err(|e| io::Error::other(e.to_string()))?;
        let wrap = wrapping_key(&shared, &ephemeral_public, &recipient.to_bytes());
        // The wrapping key is used once (its ephemeral key is new), so a fixed nonce is safe.
        let sealed_key = Aes256Gcm::new(wrap.as_slice().into())
            .encrypt(&Nonce::default(), file_key.as_slice())
            .map_err(|_| io::Error::other("sealing the file key failed"))?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&recipient.fingerprint());
        header.extend_from_slice(&ephemeral_public);
        header.extend_from_slice(&sealed_key);
        out.write_all(&header)?;
        let cipher = payload_cipher(&file_key, &header);
        Ok(Self { out, cipher, buffer: Zeroizing::new(Vec::with_capacity(CHUNK)), counter: 0 })
    }

    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let sealed = self
            .cipher
            .encrypt(&nonce(self.counter, last), Payload { msg: &self.buffer, aad: b"" })
            .map_err(|_| io::Error::other("sealing a chunk failed"))?;
        self.out.write_all(&sealed)?;
        self.buffer.clear();
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("backup too large"))?;
        Ok(())
    }

    /// Seals the last chunk and returns the output, flushed.
    pub fn finish(mut self) -> io::Result<W> {
        if self.buffer.len() == CHUNK {
            self.seal_chunk(false)?;
        }
        self.seal_chunk(true)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, mut data: &[u8]) -> io::Result<usize> {
        let written = data.len();
        while !data.is_empty() {
            // A full buffer is sealed only when more follows: the last chunk is always short.
            if self.buffer.len() == CHUNK {
                self.seal_chunk(false)?;
            }
            let take = (CHUNK - self.buffer.len()).min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Opens an envelope chunk by chunk: every byte it yields has passed its chunk's check, and
/// reaching the end proves nothing was cut off or added. Errors are [`EnvelopeError`]s
/// inside `io::Error` ([`EnvelopeError::from_io`] gets them back).
pub struct OpenReader<R: Read> {
    input: R,
    cipher: Aes256Gcm,
    plain: Zeroizing<Vec<u8>>,
    at: usize,
    counter: u64,
    done: bool,
}

impl<R: Read> OpenReader<R> {
    /// Reads the header from `input` and unwraps the file key with `identity`.
    pub fn new(identity: &Identity, mut input: R) -> Result<Self, EnvelopeError> {
        let mut header = [0u8; HEADER];
        match read_full(&mut input, &mut header)? {
            n if n < MAGIC.len() || header[..MAGIC.len()] != MAGIC[..] => return Err(EnvelopeError::NotABackup),
            HEADER => {}
            _ => return Err(EnvelopeError::Truncated),
        }
        let (fingerprint, rest) = header[MAGIC.len()..].split_at(32);
        let (ephemeral, sealed_key) = rest.split_at(32);
        let recipient = identity.recipient();
        if fingerprint != recipient.fingerprint() {
            return Err(EnvelopeError::OtherKey);
        }
        let ephemeral: [u8; 32] = ephemeral.try_into().expect("32 bytes");
        // A low-order ephemeral key makes the shared secret all zeros, known to anyone.
        let shared = identity.0.diffie_hellman(&PublicKey::from(ephemeral));
        if !shared.was_contributory() {
            return Err(EnvelopeError::Altered);
        }
        let shared = Zeroizing::new(shared.to_bytes());
        let wrap = wrapping_key(&shared, &ephemeral, &recipient.to_bytes());
        let file_key = Aes256Gcm::new(wrap.as_slice().into())
            .decrypt(&Nonce::default(), sealed_key)
            .map(Zeroizing::new)
            .map_err(|_| EnvelopeError::Altered)?;
        let file_key: &[u8; 32] = file_key.as_slice().try_into().map_err(|_| EnvelopeError::Altered)?;
        Ok(Self {
            input,
            cipher: payload_cipher(file_key, &header),
            plain: Zeroizing::new(Vec::new()),
            at: 0,
            counter: 0,
            done: false,
        })
    }

    fn next_chunk(&mut self) -> Result<(), EnvelopeError> {
        let mut sealed = vec![0u8; CHUNK + TAG];
        let n = read_full(&mut self.input, &mut sealed)?;
        let last = n < CHUNK + TAG;
        if n < TAG {
            return Err(EnvelopeError::Truncated);
        }
        let plain = self
            .cipher
            .decrypt(&nonce(self.counter, last), Payload { msg: &sealed[..n], aad: b"" })
            .map_err(|_| if last { EnvelopeError::Truncated } else { EnvelopeError::Altered })?;
        // Bytes added after the last chunk join it, and it then fails its check.
        self.done = last;
        self.plain = Zeroizing::new(plain);
        self.at = 0;
        self.counter += 1;
        Ok(())
    }

    /// Reads to the end, proving the envelope whole; fails if payload bytes were left.
    pub fn finish(mut self) -> Result<(), EnvelopeError> {
        let mut rest = [0u8; 1];
        if self.read(&mut rest).map_err(EnvelopeError::from_io)? != 0 {
            return Err(EnvelopeError::Extended);
        }
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(identity: &Identity, payload: &[u8]) -> Vec<u8> {
        let mut writer = SealWriter::new(identity.recipient(), Vec::new()).unwrap();
        writer.write_all(payload).unwrap();
        writer.finish().unwrap()
    }

    fn open(identity: &Identity, sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        let mut reader = OpenReader::new(identity, sealed)?;
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map_err(EnvelopeError::from_io)?;
        reader.finish()?;
        Ok(out)
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect()
    }

    #[test]
    fn round_trips_every_length_around_the_chunk_size() {
        let identity = Identity::generate().unwrap();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 7] {
            let sealed = seal(&identity, &payload(len));
            // Whole chunks, then a short last one (empty when the payload fills them).
            assert_eq!(sealed.len(), HEADER + len + (len / CHUNK + 1) * TAG, "length {len}");
            assert_eq!(open(&identity, &sealed).unwrap(), payload(len), "length {len}");
        }
    }

    #[test]
    fn the_same_payload_seals_differently_each_time() {
        let identity = Identity::generate().unwrap();
        assert_ne!(seal(&identity, b"same"), seal(&identity, b"same"));
    }

    #[test]
    fn another_key_is_named_as_such() {
        let sealed = seal(&Identity::generate().unwrap(), b"records");
        assert!(matches!(open(&Identity::generate().unwrap(), &sealed), Err(EnvelopeError::OtherKey)));
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let identity = Identity::generate().unwrap();
        let sealed = seal(&identity, &payload(2 * CHUNK + 100));
        // Every header byte, and bytes in each chunk (first, middle, last, tags).
        let places = (0..HEADER).chain([HEADER, HEADER + CHUNK, HEADER + CHUNK + TAG + 5, sealed.len() - 1]);
        for at in places {
            let mut altered = sealed.clone();
            altered[at] ^= 0x40;
            assert!(open(&identity, &altered).is_err(), "byte {at} changed unnoticed");
        }
    }

    #[test]
    fn cut_short_anywhere_is_refused_even_at_a_chunk_boundary() {
        let identity = Identity::generate().unwrap();
        let sealed = seal(&identity, &payload(3 * CHUNK + 10));
        let boundary = HEADER + 2 * (CHUNK + TAG);
        for len in [0, 10, HEADER, HEADER + 1, HEADER + CHUNK + TAG, boundary, boundary + 1, sealed.len() - 1] {
            let cut = &sealed[..len];
            assert!(open(&identity, cut).is_err(), "cut to {len} bytes was accepted");
        }
        assert!(matches!(open(&identity, &sealed[..boundary]), Err(EnvelopeError::Truncated)));
    }

    #[test]
    fn chunks_moved_dropped_or_added_are_refused() {
        let identity = Identity::generate().unwrap();
        let sealed = seal(&identity, &payload(3 * CHUNK + 10));
        let chunk = |i: usize| &sealed[HEADER + i * (CHUNK + TAG)..HEADER + (i + 1) * (CHUNK + TAG)];
        let tail = &sealed[HEADER + 3 * (CHUNK + TAG)..];
        let header = &sealed[..HEADER];
        let swapped = [header, chunk(1), chunk(0), chunk(2), tail].concat();
        let dropped = [header, chunk(0), chunk(2), tail].concat();
        let repeated = [header, chunk(0), chunk(0), chunk(1), chunk(2), tail].concat();
        for (what, file) in [("swapped", swapped), ("dropped", dropped), ("repeated", repeated)] {
            assert!(open(&identity, &file).is_err(), "{what} chunks were accepted");
        }
        let extended = [&sealed[..], b"more"].concat();
        assert!(matches!(open(&identity, &extended), Err(EnvelopeError::Truncated)));
    }

    #[test]
    fn a_low_order_ephemeral_key_is_refused() {
        let identity = Identity::generate().unwrap();
        let mut sealed = seal(&identity, b"records");
        // The identity point: every shared secret with it is zero.
        sealed[MAGIC.len() + 32..MAGIC.len() + 64].copy_from_slice(&[0; 32]);
        assert!(matches!(open(&identity, &sealed), Err(EnvelopeError::Altered)));
    }

    #[test]
    fn a_file_that_is_not_a_backup_says_so() {
        let identity = Identity::generate().unwrap();
        assert!(matches!(open(&identity, b"SQLite format 3\0"), Err(EnvelopeError::NotABackup)));
        assert!(matches!(open(&identity, b""), Err(EnvelopeError::NotABackup)));
    }
}
