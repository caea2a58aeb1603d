//! The AWS shared config/credentials file format: `[section]` headers and
//! `key = value` lines, `#`/`;` comments. Indented lines continue a nested
//! block (e.g. `s3 =` settings) and are skipped: the agent never needs them.
//! Also the one rule both profiles and `credentials_file_path` apply to a
//! section: which keys make static credentials.

use std::collections::HashMap;
use std::fmt;

use crate::identity::Credentials;

pub type Section = HashMap<String, String>;
pub type Sections = HashMap<String, Section>;

/// `aws_access_key_id` and `aws_secret_access_key` (both non-empty), with
/// `aws_session_token` when set; `None` when either key is missing or empty.
pub fn static_keys(section: &Section, source: &str) -> Option<Credentials> {
    let get = |key: &str| section.get(key).filter(|v| !v.is_empty()).cloned();
    Some(Credentials {
        access_key_id: get("aws_access_key_id")?,
        secret_access_key: get("aws_secret_access_key")?,
        session_token: get("aws_session_token"),
        expiry: None,
        source: source.to_string(),
    })
}

/// The first line that is neither a section, a setting, a comment nor blank
/// (numbered from 1), and what it looks like instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IniError {
    UnclosedSection(usize),
    NotASetting(usize),
    OutsideSection(usize),
}

impl fmt::Display for IniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IniError::UnclosedSection(n) => {
                write!(f, "line {n}: unclosed section header (close it with `]`)")
            }
            IniError::NotASetting(n) => write!(f, "line {n}: expected `key = value`"),
            IniError::OutsideSection(n) => write!(
                f,
                "line {n}: setting outside a [section] (add a section header above it)"
            ),
        }
    }
}

impl std::error::Error for IniError {}

/// Why a credentials or config file was not read: the file system refused,
/// or the text is not INI.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    Syntax(IniError),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Syntax(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

/// The sections of the file at `path`; `None` when there is no such file.
pub fn read_file(path: &std::path::Path) -> Result<Option<Sections>, ReadError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map(Some).map_err(ReadError::Syntax),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Parses `text`; `Err` names the first line that is neither a section, a
/// setting, a comment nor blank.
pub fn parse(text: &str) -> Result<Sections, IniError> {
    let mut sections = Sections::new();
    let mut current: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) && current.is_some() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or(IniError::UnclosedSection(n + 1))?;
            let name = name.trim().to_string();
            sections.entry(name.clone()).or_default();
            current = Some(name);
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(IniError::NotASetting(n + 1))?;
        let section = current.as_ref().ok_or(IniError::OutsideSection(n + 1))?;
        let value = strip_comment(value.trim());
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_ascii_lowercase(), value.to_string());
    }
    Ok(sections)
}

/// `value ; comment` → `value` (a comment needs whitespace before it).
fn strip_comment(value: &str) -> &str {
    let cut = value
        .char_indices()
        .find(|&(i, c)| (c == '#' || c == ';') && value[..i].ends_with([' ', '\t']))
        .map(|(i, _)| i);
    match cut {
        Some(i) => value[..i].trim_end(),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_keys_and_comments() {
        let s = parse(
            "# top\n[default]\naws_access_key_id = AKID\nAWS_Secret_Access_Key=sec ; note\n\n[profile dev]\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 10\n",
        )
        .unwrap();
        assert_eq!(s["default"]["aws_access_key_id"], "AKID");
        assert_eq!(s["default"]["aws_secret_access_key"], "sec");
        assert_eq!(s["profile dev"]["region"], "eu-west-1");
        assert!(!s["profile dev"].contains_key("max_concurrent_requests"));
    }

    #[test]
    fn static_keys_need_both_non_empty_keys() {
        let s = parse("[a]\naws_access_key_id = A\naws_secret_access_key = S\naws_session_token = T\n[b]\naws_access_key_id = A\naws_secret_access_key =\n").unwrap();
        let c = static_keys(&s["a"], "profile a").unwrap();
        assert_eq!(
            (
                c.access_key_id.as_str(),
                c.secret_access_key.as_str(),
                c.session_token.as_deref()
            ),
            ("A", "S", Some("T"))
        );
        assert_eq!(c.source, "profile a");
        assert!(static_keys(&s["b"], "profile b").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse("[default\n"), Err(IniError::UnclosedSection(1)));
        assert_eq!(parse("key = v\n"), Err(IniError::OutsideSection(1)));
        assert_eq!(parse("[a]\njunk\n"), Err(IniError::NotASetting(2)));
        assert_eq!(
            IniError::NotASetting(2).to_string(),
            "line 2: expected `key = value`"
        );
    }
}
