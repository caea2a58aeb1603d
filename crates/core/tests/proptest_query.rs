//! Property tests for percent-decoding and query parsing (`query`):
//! round trips through every encoding a client may use, and the rules that
//! tell path mode (`+` is a plus) from query mode (`+` is a space).

use proptest::prelude::*;
use secrets_manager_agent_core::query::{form_encode, parse_query, percent_decode};

/// RFC 3986 reserved characters, plus `%` itself and the space: what a client
/// must escape and nothing more.
const RESERVED: &str = ":/?#[]@!$&'()*+,;=% ";

/// Every byte as `%XX`, with upper- or lower-case hex chosen per escape.
fn encode_all(text: &str, lower: &[bool]) -> String {
    text.bytes()
        .enumerate()
        .map(|(i, b)| {
            if lower.get(i % lower.len().max(1)).copied().unwrap_or(false) {
                format!("%{b:02x}")
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Only the reserved characters escaped; everything else (Unicode included)
/// left as it is, as browsers and curl do for paths.
fn encode_reserved(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if RESERVED.contains(c) {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Arbitrary Unicode with the characters the decoder treats specially made
/// common, so escapes, pluses and separators show up in most cases.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            1 => prop::sample::select(vec!['%', '+', '&', '=', ' ', '/', '?', '#', '2', 'B', 'f']),
        ],
        0..24,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(), text()), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_byte_escaped_decodes_to_the_original(
        s in text(),
        lower in prop::collection::vec(any::<bool>(), 1..8),
    ) {
        let encoded = encode_all(&s, &lower);
        prop_assert_eq!(percent_decode(&encoded, false), Some(s.clone()));
        // Nothing but escapes: query mode decodes it the same way.
        prop_assert_eq!(percent_decode(&encoded, true), Some(s.clone()));
    }

    #[test]
    fn reserved_escaped_decodes_to_the_original(s in text()) {
        let encoded = encode_reserved(&s);
        prop_assert_eq!(percent_decode(&encoded, false), Some(s.clone()));
        // `+` was escaped too, so query mode agrees.
        prop_assert_eq!(percent_decode(&encoded, true), Some(s.clone()));
    }

    #[test]
    fn plus_is_a_space_only_in_query_mode(s in text()) {
        let s = s.replace('%', "");
        prop_assert_eq!(percent_decode(&s, false), Some(s.clone()));
        let spaced = s.replace('+', " ");
        prop_assert_eq!(percent_decode(&s, true), Some(spaced.clone()));
        // With an escape present too (no fast path): path mode keeps the pluses.
        prop_assert_eq!(percent_decode(&format!("{s}%41"), false), Some(format!("{s}A")));
        prop_assert_eq!(percent_decode(&format!("%41{s}"), true), Some(format!("A{spaced}")));
        // An escaped plus is a plus in both modes.
        let escaped = s.replace('+', "%2B");
        prop_assert_eq!(percent_decode(&escaped, true), Some(s.clone()));
        prop_assert_eq!(percent_decode(&escaped, false), Some(s.clone()));
    }

    #[test]
    fn identity_without_percent_or_plus(s in text(), plus_is_space in any::<bool>()) {
        let s: String = s.chars().filter(|c| *c != '%' && *c != '+').collect();
        prop_assert_eq!(percent_decode(&s, plus_is_space), Some(s.clone()));
    }

    #[test]
    fn a_percent_without_two_hex_digits_is_kept(s in text(), tail in "[g-zG-Z]?") {
        // `%` then at most one character that is not a hex digit.
        let s = s.replace(['%', '+'], "");
        let input = format!("{s}%{tail}");
        prop_assert_eq!(percent_decode(&input, false), Some(input.clone()));
    }

    #[test]
    fn form_encode_then_parse_query_round_trips(pairs in pairs()) {
        let borrowed: Vec<(&str, &str)> =
            pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let encoded = form_encode(&borrowed);
        // The encoder leaves only unreserved characters and its separators.
        prop_assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%&=".contains(&b)));
        prop_assert_eq!(parse_query(&encoded), Ok(pairs));
    }

    #[test]
    fn valid_pairs_never_parse_to_empty_keys(
        pairs in prop::collection::vec((text(), text()), 0..6),
        extra_amps in prop::collection::vec(0usize..3, 6),
        reserved_only in any::<bool>(),
    ) {
        let pairs: Vec<(String, String)> =
            pairs.into_iter().filter(|(k, _)| !k.is_empty()).collect();
        // Pieces joined by one or more `&` (empty pieces are skipped), each
        // escaped either minimally or with the form encoder.
        let mut query = String::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            query.push_str(&"&".repeat(extra_amps[i]));
            if i > 0 {
                query.push('&');
            }
            if reserved_only {
                query.push_str(&format!("{}={}", encode_reserved(k), encode_reserved(v)));
            } else {
                query.push_str(&form_encode(&[(k.as_str(), v.as_str())]));
            }
        }
        let parsed = parse_query(&query).expect("valid pairs decode");
        prop_assert!(parsed.iter().all(|(k, _)| !k.is_empty()), "{:?} -> {:?}", query, parsed);
        prop_assert_eq!(parsed, pairs);
    }

    #[test]
    fn parse_query_never_panics(s in text()) {
        let _ = parse_query(&s);
        let _ = percent_decode(&s, true);
        let _ = percent_decode(&s, false);
    }
}

#[test]
fn invalid_utf8_escapes_are_refused() {
    assert_eq!(percent_decode("%FF", false), None);
    assert_eq!(percent_decode("%C3", true), None);
    assert_eq!(parse_query("ok=1&x=%C3").unwrap_err().0, "x=%C3");
}
