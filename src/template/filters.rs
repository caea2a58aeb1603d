//! The filters config files need, beside minijinja's built-in ones:
//! `json` (a JSON string), `shell_quote` (one POSIX shell word), `dotenv`
//! (a JSON secret as `KEY="value"` lines), `base64` and `b64decode`.
//!
//! `dotenv` writes what systemd's `EnvironmentFile=` reads back unchanged:
//! each value in double quotes, with `\`, `"`, `$` and `` ` `` escaped by a
//! backslash, and a line break kept inside the quotes (systemd joins such a
//! value's lines). Keys must be shell variable names; a secret that is not
//! one JSON object of them is an error, not a file nobody can read.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use minijinja::{Environment, Error, ErrorKind};
use serde_json::value::RawValue;

pub fn add(env: &mut Environment) {
    env.add_filter("json", json);
    env.add_filter("shell_quote", shell_quote);
    env.add_filter("dotenv", dotenv);
    env.add_filter("base64", |text: String| {
        base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
    });
    env.add_filter("b64decode", b64decode);
}

fn invalid(why: impl Into<Cow<'static, str>>) -> Error {
    Error::new(ErrorKind::InvalidOperation, why)
}

fn json(text: String) -> Result<String, Error> {
    serde_json::to_string(&text).map_err(|e| invalid(e.to_string()))
}

fn shell_quote(text: String) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn b64decode(text: String) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim().as_bytes())
        .map_err(|_| invalid("b64decode: the text is not base64"))?;
    String::from_utf8(bytes).map_err(|_| invalid("b64decode: the decoded bytes are not UTF-8 text"))
}

fn dotenv(text: String) -> Result<String, Error> {
    // Sorted by key: a file whose bytes do not move when AWS reorders keys.
    let object: BTreeMap<Cow<str>, &RawValue> = serde_json::from_str(&text)
        .map_err(|_| invalid("dotenv: the value is not a JSON object"))?;
    let mut out = String::with_capacity(text.len() + 8 * object.len());
    for (key, raw) in object {
        let name_ok = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(invalid(format!(
                "dotenv: the key {key:?} is not a variable name (letters, digits, _)"
            )));
        }
        let raw = raw.get();
        let value: Cow<str> = if raw.starts_with('"') {
            serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?
        } else {
            Cow::Borrowed(raw)
        };
        out.push_str(&key);
        out.push_str("=\"");
        for c in value.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push_str("\"\n");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_escapes_what_systemd_would_expand() {
        let text = r#"{"B":"a$b`c\\d\"e","A":"line1\nline2","N":null,"_x1":[1]}"#.to_string();
        assert_eq!(
            dotenv(text).unwrap(),
            "A=\"line1\nline2\"\nB=\"a\\$b\\`c\\\\d\\\"e\"\nN=\"null\"\n_x1=\"[1]\"\n"
        );
        for bad in [
            r#"{"1A":"x"}"#,
            r#"{"A-B":"x"}"#,
            r#"{"":"x"}"#,
            "[1]",
            "plain",
        ] {
            let e = dotenv(bad.to_string()).unwrap_err();
            assert!(e.to_string().contains("dotenv"), "{bad}: {e}");
        }
    }

    #[test]
    fn shell_words() {
        assert_eq!(shell_quote("a b".into()), "'a b'");
        assert_eq!(shell_quote("it's".into()), r"'it'\''s'");
        assert_eq!(shell_quote(String::new()), "''");
        assert!(b64decode("!!".into()).is_err());
        assert!(b64decode("/w==".into()).is_err(), "not UTF-8");
    }
}
