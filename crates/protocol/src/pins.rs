//! Certificate pinning data (DESIGN.md §4): SPKI SHA-256 pins in RFC 7469 form, in sets of at
//! least two (one a backup key not in the live chain) with an expiry date.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::Date;

/// Why a pin or pin set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// Not base64 of 32 bytes.
    #[error("not a pin: expected the base64 SHA-256 of a public key (44 characters)")]
    Malformed,
    /// Fewer than two distinct pins: a key rotation would lock every client out.
    #[error("a pin set needs at least two different pins (the live key and a backup key)")]
    TooFewPins,
}

/// The SHA-256 of a certificate's DER SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin([u8; 32]);

impl Pin {
    /// The pin of a public key, from its DER-encoded SubjectPublicKeyInfo.
    pub fn from_spki_der(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// Parses the base64 form (`pin-sha256` value of RFC 7469).
    pub fn parse(base64: &str) -> Result<Self, PinError> {
        let bytes = STANDARD.decode(base64.trim()).map_err(|_| PinError::Malformed)?;
        Ok(Self(bytes.try_into().map_err(|_| PinError::Malformed)?))
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

impl Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pin::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// At least two distinct pins and the date after which the set is no longer current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinSet {
    pins: Vec<Pin>,
    #[serde(with = "iso_date")]
    expires: Date,
}

impl PinSet {
    /// A pin set; refused with fewer than two distinct pins (as TrustKit does).
    pub fn new(pins: Vec<Pin>, expires: Date) -> Result<Self, PinError> {
        let mut distinct = pins.clone();
        distinct.sort_by_key(|p| p.0);
        distinct.dedup();
        if distinct.len() < 2 {
            return Err(PinError::TooFewPins);
        }
        Ok(Self { pins, expires })
    }

    /// The pins, in the order given (live key first by convention).
    pub fn pins(&self) -> &[Pin] {
        &self.pins
    }

    /// The last day the set is current.
    pub fn expires(&self) -> Date {
        self.expires
    }

    /// Whether `pin` is one of the set's.
    pub fn contains(&self, pin: &Pin) -> bool {
        self.pins.contains(pin)
    }

    /// Whether the set has expired on `today`.
    pub fn is_expired(&self, today: Date) -> bool {
        today > self.expires
    }
}

impl<'de> Deserialize<'de> for PinSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            pins: Vec<Pin>,
            #[serde(with = "iso_date")]
            expires: Date,
        }
        let raw = Raw::deserialize(d)?;
        PinSet::new(raw.pins, raw.expires).map_err(serde::de::Error::custom)
    }
}

/// `YYYY-MM-DD` for [`Date`] fields.
mod iso_date {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::Date;
    use time::macros::format_description;

    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = format_description!("[year]-[month]-[day]");

    #[expect(clippy::trivially_copy_pass_by_ref, reason = "serde's `with` passes a reference")]
    pub fn serialize<S: Serializer>(date: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&date.format(FORMAT).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let text = String::deserialize(d)?;
        Date::parse(&text, FORMAT).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn pin_of_a_key_round_trips_through_base64() {
        let pin = Pin::from_spki_der(b"not really DER, but bytes are bytes");
        let text = pin.to_string();
        assert_eq!(text.len(), 44);
        assert_eq!(Pin::parse(&text).unwrap(), pin);
        assert_eq!(Pin::parse("too short"), Err(PinError::Malformed));
        assert_eq!(Pin::parse(&STANDARD.encode([0u8; 31])), Err(PinError::Malformed));
    }

    #[test]
    fn a_set_of_one_is_refused() {
        let a = Pin::from_spki_der(b"a");
        let b = Pin::from_spki_der(b"b");
        assert_eq!(PinSet::new(vec![a], date!(2030 - 01 - 01)), Err(PinError::TooFewPins));
        assert_eq!(PinSet::new(vec![a, a], date!(2030 - 01 - 01)), Err(PinError::TooFewPins));
        let set = PinSet::new(vec![a, b], date!(2030 - 01 - 01)).unwrap();
        assert!(set.contains(&b) && !set.contains(&Pin::from_spki_der(b"c")));
        assert!(!set.is_expired(date!(2030 - 01 - 01)));
        assert!(set.is_expired(date!(2030 - 01 - 02)));
    }

    #[test]
    fn serde_checks_the_set_too() {
        let a = Pin::from_spki_der(b"a");
        let b = Pin::from_spki_der(b"b");
        let set = PinSet::new(vec![a, b], date!(2027 - 06 - 30)).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        assert!(json.contains(r#""expires":"2027-06-30""#));
        assert_eq!(serde_json::from_str::<PinSet>(&json).unwrap(), set);
        let one = format!(r#"{{"pins":["{a}"],"expires":"2027-06-30"}}"#);
        assert!(serde_json::from_str::<PinSet>(&one).is_err());
    }
}
