//! The one way an id reaches a URL path: parsed first, so nothing in it can change the path.

use std::fmt;

/// An id the server gave (a record's, a device's, a document's), checked to hold only the
/// characters a server id may have: it can be put in a URL path as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpaqueId(String);

/// Why a text is not an [`OpaqueId`]; it never quotes the text, which may come from a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// Empty, or longer than [`OpaqueId::MAX_LEN`].
    #[error("an id is 1 to 128 characters long")]
    Length,
    /// A character other than `A–Z a–z 0–9 - _ .`, or a path segment of dots only.
    #[error("an id holds only letters, digits, '-', '_' and '.'")]
    Character,
}

impl OpaqueId {
    /// The longest id accepted: the server's tokens and FHIR ids (64) fit with room.
    pub const MAX_LEN: usize = 128;

    /// Checks `text`: 1 to [`Self::MAX_LEN`] of `A–Z a–z 0–9 - _ .`, and not `.` or `..`
    /// (which a URL would read as a step up the path).
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err(InvalidId::Length);
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            || text.bytes().all(|b| b == b'.')
        {
            return Err(InvalidId::Character);
        }
        Ok(Self(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OpaqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for OpaqueId {
    type Err = InvalidId;

    fn from_str(text: &str) -> Result<Self, InvalidId> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::{InvalidId, OpaqueId};

    #[test]
    fn server_ids_parse() {
        for id in ["a", "dev_1-X", "3f2a.9", "Patient", &"x".repeat(OpaqueId::MAX_LEN)] {
            assert_eq!(OpaqueId::parse(id).map(|i| i.to_string()), Ok(id.to_owned()));
        }
    }

    #[test]
    fn anything_that_could_change_a_path_is_refused() {
        assert_eq!(OpaqueId::parse(""), Err(InvalidId::Length));
        assert_eq!(OpaqueId::parse(&"x".repeat(OpaqueId::MAX_LEN + 1)), Err(InvalidId::Length));
        for id in [".", "..", "a/b", "../x", "a?b", "a#b", "a%2F", "a b", "é", "a\\b"] {
            assert_eq!(OpaqueId::parse(id), Err(InvalidId::Character), "{id}");
        }
    }
}
