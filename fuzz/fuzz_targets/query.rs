//! `percent_decode`, `parse_query` and the parameter route's query parser on
//! arbitrary input: never panic, and what they return holds what their doc
//! comments promise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secrets_manager_agent::api::parse_parameter;
use secrets_manager_agent_aws::ssm::Selector;
use secrets_manager_agent_cache::Key;
use secrets_manager_agent_core::query::{form_encode, parse_query, percent_decode, UndecodablePiece};

fuzz_target!(|data: &[u8]| {
    // Request targets reach the decoder as &str (httparse checks the bytes);
    // non-UTF-8 input is decoded lossily so those bytes still get exercised.
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();

    for plus_is_space in [false, true] {
        let decoded = percent_decode(text, plus_is_space);
        let special = |c: char| c == '%' || (plus_is_space && c == '+');
        if !text.contains(special) {
            assert_eq!(decoded.as_deref(), Some(text), "identity without escapes");
        }
        if let Some(d) = &decoded {
            // Each escape shrinks three bytes to one; nothing ever grows.
            assert!(d.len() <= text.len());
            if !plus_is_space {
                // The encoder's output decodes back to what it was given.
                let again = form_encode(&[(d.as_str(), "")]);
                let again = again.strip_suffix('=').expect("pair ends in '='");
                assert_eq!(percent_decode(again, false).as_deref(), Some(d.as_str()));
            }
        }
    }

    // The parameter route's query: an accepted one names a parameter, and a
    // version it selects is a real one (versions start at 1).
    if let Ok(secrets_manager_agent::api::Asked { key, .. }) = parse_parameter(text) {
        let Key::Parameter { query, role } = key else {
            panic!("the parameter route made a secret key");
        };
        assert!(!query.name.is_empty());
        assert!(!matches!(query.selector, Some(Selector::Version(0))));
        assert!(role.is_none_or(|r| r.starts_with("arn:")));
    }

    match parse_query(text) {
        Ok(pairs) => {
            let pieces = text.split('&').filter(|p| !p.is_empty()).count();
            assert_eq!(pairs.len(), pieces, "one pair per non-empty piece");
            // Encoding the pairs and parsing them again gives the same pairs.
            let borrowed: Vec<(&str, &str)> = pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let encoded = form_encode(&borrowed);
            assert_eq!(parse_query(&encoded).as_ref(), Ok(&pairs), "{encoded:?}");
        }
        Err(UndecodablePiece(piece)) => {
            // The error names a raw piece of the input that failed to decode.
            assert!(text.split('&').any(|p| p == piece), "{piece:?} not a piece");
            let (k, v) = piece.split_once('=').unwrap_or((&piece, ""));
            assert!(percent_decode(k, true).is_none() || percent_decode(v, true).is_none());
        }
    }
});
