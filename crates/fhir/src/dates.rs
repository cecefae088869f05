//! FHIR `date`, `dateTime` and `instant` values: validation and a sortable form.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Month, OffsetDateTime, UtcOffset};

/// Normalises a FHIR `date` or `dateTime` to a key that sorts chronologically as text:
/// partial dates stay as they are (`2013`, `2013-04`, `2013-04-02`); date-times become UTC
/// with microseconds (`2013-04-02T08:30:10.000000Z`). `None` if the value is not a valid
/// FHIR date/dateTime (month 13, 30 February, a time without a zone, …).
pub fn sortable_date_time(value: &str) -> Option<String> {
    match value.split_once('T') {
        None => valid_partial_date(value).then(|| value.to_owned()),
        Some((date, _)) => {
            if date.len() != 10 {
                return None;
            }
            let parsed = OffsetDateTime::parse(value, &Rfc3339).ok()?;
            let utc = parsed.to_offset(UtcOffset::UTC);
            let fmt = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
            utc.format(&fmt).ok()
        }
    }
}

/// Whether `value` is a FHIR `instant` (a full date-time with seconds and a zone).
pub fn is_valid_instant(value: &str) -> bool {
    value.contains('T') && sortable_date_time(value).is_some()
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD`, with a real month and day.
fn valid_partial_date(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let number = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i32>().ok())
            .flatten()
    };
    let Some(year) = parts.first().and_then(|y| number(y, 4)) else { return false };
    match parts.len() {
        1 => true,
        2 => number(parts[1], 2)
            .and_then(|m| u8::try_from(m).ok())
            .and_then(|m| Month::try_from(m).ok())
            .is_some(),
        3 => {
            let month = number(parts[1], 2)
                .and_then(|m| u8::try_from(m).ok())
                .and_then(|m| Month::try_from(m).ok());
            let day = number(parts[2], 2).and_then(|d| u8::try_from(d).ok());
            matches!((month, day), (Some(m), Some(d)) if Date::from_calendar_date(year, m, d).is_ok())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_values_normalise_to_sortable_keys() {
        assert_eq!(sortable_date_time("2013").as_deref(), Some("2013"));
        assert_eq!(sortable_date_time("2013-04").as_deref(), Some("2013-04"));
        assert_eq!(sortable_date_time("2024-02-29").as_deref(), Some("2024-02-29"));
        assert_eq!(sortable_date_time("2013-04-02T09:30:10+01:00").as_deref(), Some("2013-04-02T08:30:10.000000Z"));
        assert_eq!(sortable_date_time("2013-04-02T23:30:10.5-02:00").as_deref(), Some("2013-04-03T01:30:10.500000Z"));
    }

    #[test]
    fn keys_sort_chronologically_across_zones_and_fractions() {
        let mut keys: Vec<String> =
            ["2020-01-01T10:00:10.5Z", "2020-01-01T10:00:10Z", "2020-01-01T11:00:00+02:00", "2019-12-31"]
                .iter()
                .map(|v| sortable_date_time(v).unwrap())
                .collect();
        keys.sort();
        assert_eq!(
            keys,
            ["2019-12-31", "2020-01-01T09:00:00.000000Z", "2020-01-01T10:00:10.000000Z", "2020-01-01T10:00:10.500000Z"]
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        for bad in [
            "2013-13",
            "2013-02-30",
            "2023-02-29",
            "13-01-01",
            "2013-1-01",
            "2013-04-02T10:00",
            "2013-04-02T10:00:00",
            "2013-04-02T25:00:00Z",
            "yesterday",
            "",
        ] {
            assert_eq!(sortable_date_time(bad), None, "{bad}");
        }
        assert!(is_valid_instant("2015-02-07T13:28:17.239+02:00"));
        assert!(!is_valid_instant("2015-02-07"));
    }
}
