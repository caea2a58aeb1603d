//! What the agent reads from its surroundings: environment variables and
//! numeric tuning knobs within a range (at start), and small token files (at
//! start, and again at every use where the token rotates).
//!
//! One place for these rules so every variable behaves the same way: values
//! are trimmed and a blank value counts as unset (a `VAR=` left in a unit
//! file or a Kubernetes manifest means "not set", not "empty string").

use std::fmt;
use std::ops::RangeInclusive;
use std::path::Path;

/// An environment variable, trimmed; blank counts as unset.
pub fn var(name: &str) -> Option<String> {
    trimmed(std::env::var(name).ok())
}

/// An environment variable exactly as set (blank still counts as unset), for
/// values where every byte counts, like the SSRF token.
pub fn raw(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A boolean variable: `true` in any case; anything else or unset is false.
pub fn flag(name: &str) -> bool {
    var(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn trimmed(value: Option<String>) -> Option<String> {
    value
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A variable that is set but does not hold what it must.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidVar {
    pub name: String,
    pub value: String,
    /// What would be accepted, e.g. "milliseconds from 1 to 600000".
    pub expected: String,
}

impl fmt::Display for InvalidVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={} is not valid: expected {}",
            self.name, self.value, self.expected
        )
    }
}

impl std::error::Error for InvalidVar {}

/// A whole number of `unit`s from `get(name)`, within `range`; `default` when unset.
pub fn number_in(
    get: impl Fn(&str) -> Option<String>,
    name: &str,
    default: u64,
    range: RangeInclusive<u64>,
    unit: &str,
) -> Result<u64, InvalidVar> {
    let Some(value) = trimmed(get(name)) else {
        return Ok(default);
    };
    match value.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(InvalidVar {
            name: name.to_string(),
            value,
            expected: format!("{unit} from {} to {}", range.start(), range.end()),
        }),
    }
}

/// Why a token file gave no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFileError {
    Unreadable { path: String, reason: String },
    Empty { path: String },
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFileError::Unreadable { path, reason } => {
                write!(f, "cannot read {path}: {reason}")
            }
            TokenFileError::Empty { path } => write!(f, "{path} is empty"),
        }
    }
}

impl std::error::Error for TokenFileError {}

/// The contents of a token file, trimmed (tools that write them end them
/// with a newline). Read again at each use by callers whose token rotates.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| TokenFileError::Unreadable {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(token.to_string())
}

/// An environment made of `pairs`, for tests of code that takes a lookup
/// (public for the tests of the crates above).
pub fn fake(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_within_a_range() {
        let get = fake(&[("A", " 250 "), ("B", "0"), ("C", "lots"), ("D", "  ")]);
        assert_eq!(
            number_in(&get, "A", 7, 1..=600_000, "milliseconds"),
            Ok(250)
        );
        assert_eq!(
            number_in(&get, "D", 7, 1..=10, "seconds"),
            Ok(7),
            "blank is unset"
        );
        assert_eq!(number_in(&get, "Z", 7, 1..=10, "seconds"), Ok(7));
        let e = number_in(&get, "B", 7, 1..=600_000, "milliseconds").unwrap_err();
        assert_eq!(
            e.to_string(),
            "B=0 is not valid: expected milliseconds from 1 to 600000"
        );
        assert!(number_in(&get, "C", 7, 0..=10, "seconds").is_err());
    }

    #[test]
    fn token_files_are_trimmed_and_must_hold_a_token() {
        let dir = std::env::temp_dir().join(format!("sma-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  abc123\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap(), "abc123");
        std::fs::write(&file, "\n \n").unwrap();
        assert!(matches!(
            read_token_file(&file),
            Err(TokenFileError::Empty { .. })
        ));
        let missing = dir.join("missing");
        let e = read_token_file(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read {}", missing.display())),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
