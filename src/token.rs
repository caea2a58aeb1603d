//! The SSRF token: where it comes from at start-up and how a request's header
//! is checked against it.
//!
//! The token never appears in a log line or an error message; only the name of
//! the variable it came from does.

use std::fmt;
use std::path::Path;

use secrets_manager_agent_core::env::{self, TokenFileError};
use subtle::{Choice, ConstantTimeEq};

/// The token every secret request must carry. `Debug` is redacted on purpose.
pub struct Token(Vec<u8>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[derive(Debug)]
pub enum TokenError {
    NoneSet {
        tried: Vec<String>,
    },
    File {
        var: String,
        path: String,
        reason: String,
    },
    Empty {
        var: String,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::NoneSet { tried } => write!(
                f,
                "no SSRF token found: set one of {} (a value `file:///path` reads the token from that file)",
                tried.join(", ")
            ),
            TokenError::File { var, path, reason } => {
                write!(f, "cannot read the token file {path} named by {var}: {reason}")
            }
            TokenError::Empty { var } => write!(f, "the token from {var} is empty"),
        }
    }
}

impl std::error::Error for TokenError {}

impl Token {
    /// The first variable of `vars` that is set (and not blank) wins.
    pub fn from_env(vars: &[String]) -> Result<(Token, String), TokenError> {
        Token::from_lookup(vars, env::raw)
    }

    fn from_lookup(
        vars: &[String],
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(Token, String), TokenError> {
        for var in vars {
            let Some(value) = lookup(var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            let token = match value.strip_prefix("file://") {
                Some(path) => match env::read_token_file(Path::new(path)) {
                    Ok(token) => token,
                    Err(TokenFileError::Empty { .. }) => {
                        return Err(TokenError::Empty { var: var.clone() })
                    }
                    Err(TokenFileError::Unreadable { path, reason }) => {
                        return Err(TokenError::File {
                            var: var.clone(),
                            path,
                            reason,
                        })
                    }
                },
                None => value,
            };
            return Ok((Token(token.into_bytes()), var.clone()));
        }
        Err(TokenError::NoneSet {
            tried: vars.to_vec(),
        })
    }

    /// The token's bytes, for the agent's own client (`probe`), which sends
    /// it in a header. Never to be logged.
    pub fn reveal(&self) -> &[u8] {
        &self.0
    }

    #[cfg(test)]
    pub fn new(value: &str) -> Token {
        Token(value.as_bytes().to_vec())
    }

    /// Compares in time that depends only on the candidate's length: no
    /// early exit on the first wrong byte, nor on a length mismatch (subtle's
    /// slice comparison alone would return at once there and so tell the
    /// token's length). A candidate of another length is compared with
    /// itself, the same number of byte steps, and fails on the lengths.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let same_length = (self.0.len() as u64).ct_eq(&(candidate.len() as u64));
        let reference = if self.0.len() == candidate.len() {
            self.0.as_slice()
        } else {
            candidate
        };
        bool::from(same_length & words_equal(reference, candidate))
    }
}

/// Whether two slices of one length are equal, in time that depends only
/// on the length: subtle's comparison, eight bytes at a time. A byte at a
/// time it was about 600 of the 9,500 instructions a cache hit then cost, for a
/// 64-digit token (callgrind).
fn words_equal(a: &[u8], b: &[u8]) -> Choice {
    let ((a_words, a_tail), (b_words, b_tail)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    a_words
        .iter()
        .zip(b_words)
        .fold(a_tail.ct_eq(b_tail), |same, (x, y)| {
            same & u64::from_ne_bytes(*x).ct_eq(&u64::from_ne_bytes(*y))
        })
}

/// A fresh token: 32 random bytes from the OS, as 64 lower-case hex digits.
pub fn generate() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_digits_and_differ() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn compares_exactly() {
        let t = Token::new("s3cret");
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3cret!"));
        assert!(!t.matches(b"S3cret"));
        assert!(!t.matches(b""));
        assert!(!t.matches(b"s3crets3cret"));
    }

    #[test]
    fn one_wrong_bit_anywhere_fails() {
        // Whole words of eight bytes and a tail, and a generated token.
        let generated = generate().unwrap();
        for value in ["s3cret", "0123456789abcdefghijk", generated.as_str()] {
            let t = Token::new(value);
            assert!(t.matches(value.as_bytes()));
            for i in 0..value.len() {
                for bit in 0..8 {
                    let mut candidate = value.as_bytes().to_vec();
                    candidate[i] ^= 1 << bit;
                    assert!(!t.matches(&candidate), "{value}: byte {i}, bit {bit}");
                }
            }
        }
    }

    #[test]
    fn first_set_variable_wins_and_blank_is_unset() {
        let vars = vec!["A".to_string(), "B".to_string()];
        let (t, var) = Token::from_lookup(&vars, |n| match n {
            "A" => Some("  ".into()),
            "B" => Some("tok".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(var, "B");
        assert!(t.matches(b"tok"));
    }

    #[test]
    fn reads_file_indirection_trimmed() {
        let dir = std::env::temp_dir().join(format!("sma-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "abc123\n").unwrap();
        let vars = vec!["T".to_string()];
        let value = format!("file://{}", file.display());
        let (t, _) = Token::from_lookup(&vars, |_| Some(value.clone())).unwrap();
        assert!(t.matches(b"abc123"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_sources_are_named() {
        let vars = vec!["AWS_TOKEN".to_string(), "OTHER".to_string()];
        let e = Token::from_lookup(&vars, |_| None).unwrap_err().to_string();
        assert!(e.contains("AWS_TOKEN, OTHER"), "{e}");
        let e = Token::from_lookup(&vars, |_| Some("file:///nonexistent/x".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/x") && e.contains("AWS_TOKEN"),
            "{e}"
        );
    }
}
