//! Percent-decoding and query-string splitting for request targets.

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in query
/// strings). A `%` not followed by two hex digits is kept as it is. Returns
/// `None` when the decoded bytes are not UTF-8.
pub fn percent_decode(input: &str, plus_is_space: bool) -> Option<String> {
    let bytes = input.as_bytes();
    if !bytes
        .iter()
        .any(|&b| b == b'%' || (plus_is_space && b == b'+'))
    {
        return Some(input.to_string());
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `application/x-www-form-urlencoded` body from pairs, escaping all but the
/// RFC 3986 unreserved characters (what STS's query protocol expects).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, key);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    out
}

fn percent_encode_into(out: &mut String, text: &str) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits `a=1&b=2` into decoded pairs. Empty pieces (`a=1&&b=2`) are skipped;
/// a key without `=` has an empty value. `Err` carries the raw piece that did
/// not decode to UTF-8.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for piece in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let decode = |s: &str| percent_decode(s, true).ok_or_else(|| piece.to_string());
        pairs.push((decode(k)?, decode(v)?));
    }
    Ok(pairs)
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
        assert_eq!(parse_query("x=%C3").unwrap_err(), "x=%C3");
    }
}
