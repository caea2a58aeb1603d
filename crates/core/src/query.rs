//! Percent-decoding and query-string splitting for request targets, and the
//! form encoding of STS request bodies.
//!
//! The escapes themselves are handled by `percent-encoding`, which the HTTP
//! stack already compiles in; this module adds the rules it leaves to callers:
//! `+` as a space in query strings, and strict UTF-8 for the decoded bytes.

use std::borrow::Cow;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but the RFC 3986 unreserved characters is escaped, which is what
/// STS's query protocol signs and expects.
const FORM_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in query
/// strings). A `%` not followed by two hex digits is kept as it is. Returns
/// `None` when the decoded bytes are not UTF-8.
pub fn percent_decode(input: &str, plus_is_space: bool) -> Option<String> {
    decode(input, plus_is_space).map(Cow::into_owned)
}

/// [`percent_decode`], borrowing the input when it holds no escape: most
/// secret ids and query values, which then cost no copy.
fn decode(input: &str, plus_is_space: bool) -> Option<Cow<'_, str>> {
    if !input
        .bytes()
        .any(|b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(Cow::Borrowed(input));
    }
    // Decoding never grows the input, so this is the only allocation.
    let mut out = Vec::with_capacity(input.len());
    // The crate knows nothing of `+`. Splitting on it before decoding keeps an
    // escaped `%2B` a plus, and no escape can span a `+` (not a hex digit).
    for (i, part) in input.split(|c| plus_is_space && c == '+').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        out.extend(percent_decode_str(part));
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `application/x-www-form-urlencoded` body from pairs, escaping all but the
/// RFC 3986 unreserved characters with upper-case hex.
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(key, FORM_ESCAPED));
        out.push('=');
        out.extend(utf8_percent_encode(value, FORM_ESCAPED));
    }
    out
}

/// A query's key and value, decoded.
pub type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);

/// The first piece of a query (`key=value`, as sent) that does not decode: a
/// `%` not followed by two hex digits, or escapes that are not UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndecodablePiece(pub String);

impl std::fmt::Display for UndecodablePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot decode `{}` in the query: percent-encode it as UTF-8 (%XX)",
            self.0
        )
    }
}

impl std::error::Error for UndecodablePiece {}

/// Splits `a=1&b=2` into decoded pairs. Empty pieces (`a=1&&b=2`) are skipped;
/// a key without `=` has an empty value. `Err` carries the first raw piece
/// that did not decode to UTF-8 ([`UndecodablePiece`]): the whole query is checked before any pair
/// is given out. Pairs without escapes borrow the query: a cache hit's
/// query then costs no allocation (there were three, with the vector, about
/// a tenth of a hit's instructions under callgrind).
pub fn query_pairs(query: &str) -> Result<impl Iterator<Item = Pair<'_>>, UndecodablePiece> {
    let decoded = query.split('&').filter(|p| !p.is_empty()).map(|piece| {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        (piece, decode(k, true), decode(v, true))
    });
    if let Some((piece, ..)) = decoded.clone().find(|(_, k, v)| k.is_none() || v.is_none()) {
        return Err(UndecodablePiece(piece.to_string()));
    }
    // Every piece decoded above: none is dropped here.
    Ok(decoded.filter_map(|(_, k, v)| Some((k?, v?))))
}

/// [`query_pairs`], owned, for callers that keep the pairs.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, UndecodablePiece> {
    Ok(query_pairs(query)?
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(
            percent_decode("prod%2Fdb%2fpass", false).unwrap(),
            "prod/db/pass"
        );
        assert_eq!(percent_decode("a+b%20c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("%E2%9C%93", false).unwrap(), "\u{2713}");
        assert_eq!(percent_decode("100%", false).unwrap(), "100%");
        assert_eq!(percent_decode("%zz%4", false).unwrap(), "%zz%4");
        assert_eq!(percent_decode("%FF", false), None);
    }

    #[test]
    fn plus_rule_is_ours_not_the_decoders() {
        // An escaped plus stays a plus in query mode; only a bare one is a space.
        assert_eq!(percent_decode("a%2Bb+c", true).unwrap(), "a+b c");
        assert_eq!(percent_decode("a%2bb+c", false).unwrap(), "a+b+c");
        // A `+` never completes an escape, in either mode.
        assert_eq!(percent_decode("%+41%4+", true).unwrap(), "% 41%4 ");
        assert_eq!(percent_decode("%+41%4+", false).unwrap(), "%+41%4+");
        // Strict UTF-8 across the pieces the pluses split: no lossy repair.
        assert_eq!(percent_decode("%C3+%A9", true), None);
        assert_eq!(percent_decode("%C3%A9+", true).unwrap(), "\u{e9} ");
    }

    #[test]
    fn form_encoding_round_trips() {
        let body = form_encode(&[
            ("Action", "AssumeRole"),
            ("RoleArn", "arn:aws:iam::1:role/a b+c"),
        ]);
        assert_eq!(
            body,
            "Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fa%20b%2Bc"
        );
        let back = parse_query(&body).unwrap();
        assert_eq!(back[1].1, "arn:aws:iam::1:role/a b+c");
    }

    #[test]
    fn form_encoding_escapes_with_upper_case_hex() {
        assert_eq!(
            form_encode(&[("k", "AZaz09-_.~ \u{e9}/*\n")]),
            "k=AZaz09-_.~%20%C3%A9%2F%2A%0A"
        );
        assert_eq!(form_encode(&[("", "")]), "=");
        assert_eq!(form_encode(&[]), "");
    }

    #[test]
    fn pairs_without_escapes_borrow_the_query() {
        let pairs: Vec<Pair> = query_pairs("secretId=hot&versionStage=AWS+PREVIOUS")
            .unwrap()
            .collect();
        assert!(matches!(
            pairs[0],
            (Cow::Borrowed("secretId"), Cow::Borrowed("hot"))
        ));
        assert!(matches!(&pairs[1].1, Cow::Owned(v) if v == "AWS PREVIOUS"));
        // A bad piece anywhere fails the query before any pair is given.
        assert_eq!(query_pairs("a=1&x=%C3&b=2").err().unwrap().0, "x=%C3");
    }

    #[test]
    fn splits_queries() {
        assert_eq!(
            parse_query("secretId=a%2Fb&versionStage=AWS+PREVIOUS&&flag").unwrap(),
            vec![
                ("secretId".to_string(), "a/b".to_string()),
                ("versionStage".to_string(), "AWS PREVIOUS".to_string()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert_eq!(parse_query("").unwrap(), vec![]);
        assert_eq!(parse_query("x=%C3").unwrap_err().0, "x=%C3");
    }
}
