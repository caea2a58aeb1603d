//! RFC 3339 / ISO-8601 UTC timestamps: formatting for log lines and parsing
//! the `Expiration` of temporary credentials.
//!
//! Uses `time` (already in the binary through aws-smithy-types) rather than
//! that crate's `DateTime`, which refuses a space separator and trims the
//! fraction, while log lines need a fixed width.

use std::borrow::Cow;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Seconds in 400 Gregorian years, after which the calendar repeats. `time`
/// stops at year 9999; folding whole cycles out first keeps any `SystemTime`
/// formattable instead of panicking.
const SECS_PER_400_YEARS: u64 = 146_097 * 86_400;

/// `2026-11-28T21:08:17.123Z`: always three fraction digits, so log columns
/// line up. Times before 1970 show as the epoch.
pub fn format(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let cycles = since.as_secs() / SECS_PER_400_YEARS;
    let within = Duration::new(since.as_secs() % SECS_PER_400_YEARS, since.subsec_nanos());
    // Less than 400 years past 1970: well inside `time`'s range.
    let dt = OffsetDateTime::UNIX_EPOCH + within;
    let year = i64::from(dt.year()) + 400 * cycles as i64;
    let mut out = String::with_capacity(24);
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.millisecond()
    );
    out
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)` (a space may stand for `T`).
/// Times before 1970 give `None`.
pub fn parse(text: &str) -> Option<SystemTime> {
    let text = normalize_separator(text.trim())?;
    let dt = OffsetDateTime::parse(&text, &Rfc3339).ok()?;
    let secs = u64::try_from(dt.unix_timestamp()).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, dt.nanosecond()))
}

/// `time` takes any byte between date and time, so the separator is checked
/// here: `T`, `t`, or a space, which is rewritten to the `T` RFC 3339 names.
fn normalize_separator(text: &str) -> Option<Cow<'_, str>> {
    match text.as_bytes().get(10)? {
        b'T' | b't' => Some(Cow::Borrowed(text)),
        // Byte 10 is ASCII, so both slices fall on character boundaries.
        b' ' => Some(Cow::Owned(format!("{}T{}", &text[..10], &text[11..]))),
        _ => None,
    }
}

/// A timestamp field that holds no ISO-8601 time: which field, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTimestamp {
    pub field: String,
    pub text: String,
}

impl std::fmt::Display for BadTimestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} `{}` is not an ISO-8601 time", self.field, self.text)
    }
}

impl std::error::Error for BadTimestamp {}

/// An optional timestamp field of an answer (credential `Expiration`): absent
/// is `None`, present but unreadable is an error naming `field`, so that an
/// expiry nobody can read never turns into "never expires".
pub fn parse_field(field: &str, text: Option<&str>) -> Result<Option<SystemTime>, BadTimestamp> {
    text.map(|text| {
        parse(text).ok_or_else(|| BadTimestamp {
            field: field.to_string(),
            text: text.to_string(),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_900_097_123);
        assert_eq!(format(t), "2026-11-28T21:08:17.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&format(leap)[..10], "2000-02-29");
    }

    #[test]
    fn parses_what_aws_sends() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_900_097);
        assert_eq!(parse("2026-11-28T21:08:17Z"), Some(t));
        assert_eq!(parse("2026-11-28T21:08:17.000Z"), Some(t));
        assert_eq!(parse("2026-11-28T22:08:17+01:00"), Some(t));
        assert_eq!(parse("2026-11-28T20:08:17-01:00"), Some(t));
        assert_eq!(parse("2026-11-28 21:08:17Z"), Some(t));
        assert_eq!(
            parse("2026-11-28T21:08:17.5Z"),
            Some(t + Duration::from_millis(500))
        );
        for day in 0..3000 {
            let t = UNIX_EPOCH + Duration::from_secs(day * 86_400 * 7 + 12_345);
            assert_eq!(parse(&format(t)), Some(t), "{}", format(t));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2026-11-28",
            "2026-11-28T21:08:17",
            "2026-13-28T21:08:17Z",
            "2026-11-28T25:08:17Z",
            "2026-11-28T21:08:17.Z",
            "2026-11-28T21:08:17+0100",
            "yesterday",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn checks_the_separator_itself() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_900_097);
        assert_eq!(parse("2026-11-28t21:08:17z"), Some(t));
        assert_eq!(parse(" 2026-11-28 21:08:17Z\n"), Some(t));
        for bad in [
            "2026-11-28X21:08:17Z",
            "2026-11-28_21:08:17Z",
            "2026-11-28\u{e9}21:08:17Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn applies_offsets_and_fractions() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_900_097);
        assert_eq!(
            parse("2026-11-29T06:38:17.25+09:30"),
            Some(t + Duration::from_millis(250))
        );
        assert_eq!(parse("2026-11-28T21:08:17-00:00"), Some(t));
        // Digits past nanoseconds are dropped, not rounded.
        assert_eq!(
            parse("2026-11-28T21:08:17.1234567899Z"),
            Some(t + Duration::from_nanos(123_456_789))
        );
        // An offset that lands before 1970 is refused like any earlier time.
        assert_eq!(parse("1970-01-01T00:30:00+01:00"), None);
        assert_eq!(parse("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
    }

    #[test]
    fn calendar_and_offset_ranges_are_checked() {
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-09-31T00:00:00Z",
            "2026-11-28T21:08:17+24:00",
            "2026-11-28T21:08:17+01:60",
            "2026-11-28T21:08:60Z",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert!(parse("2024-02-29T00:00:00Z").is_some());
        // A real leap second reads as the last instant before the next second.
        let next = UNIX_EPOCH + Duration::from_secs(1_483_228_800); // 2017-01-01
        assert_eq!(
            parse("2016-12-31T23:59:60Z"),
            Some(next - Duration::from_nanos(1))
        );
    }

    #[test]
    fn epoch_and_far_future_round_trip() {
        assert_eq!(parse(&format(UNIX_EPOCH)), Some(UNIX_EPOCH));
        let last = "9999-12-31T23:59:59.999Z";
        let t = parse(last).unwrap();
        assert_eq!(format(t), last);
        assert_eq!(parse(&format(t)), Some(t));
        // Before 1970 formats as the epoch, as it always has.
        assert_eq!(
            format(UNIX_EPOCH - Duration::from_secs(1)),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn formats_past_year_9999_without_panicking() {
        // A negative offset can put a parsed expiry past 9999 in UTC.
        let t = parse("9999-12-31T23:59:59-23:59").unwrap();
        assert_eq!(format(t), "10000-01-01T23:58:59.000Z");
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
        assert!(format(far).ends_with('Z'));
    }
}
