//! Everything the agent does with the bytes of an upstream answer (AWS, or a
//! hostile proxy or endpoint in its place): the status classification, error
//! documents, GetSecretValue, DescribeSecret and GetParameter answers (and
//! their bodies for SDK clients), answers of read calls passed through, STS answers, the
//! credentials JSON of the container endpoint, IMDS and `credential_process`,
//! and the expiry timestamps in them.
//!
//! Input: bytes 0-1 the HTTP status (big-endian), byte 2 picks the parser
//! (its low 3 bits; with 7, bit 5 picks a read call passed through and bit
//! 4 GetParameter over the timestamps) and, for error answers, whether a
//! retry hint comes with it (bit 3); the rest is the body. For `service_error` with a header, the
//! body's first line is the `x-amzn-errortype` value.
//!
//! In the answers that carry secrets (GetSecretValue, STS credentials,
//! credentials JSON) each `$` of the body becomes a distinct marker, 17
//! digits, so that it reads as a JSON string's text, a JSON number or XML
//! text: a secret built from markers is recognisable in any error message.
//! The markers derive from a hash of the input, so the fuzzer cannot learn
//! one and write it (or a JSON `\u` escape of it) into another field.
#![no_main]

use std::fmt;
use std::sync::Once;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use secrets_manager_agent::api;
use secrets_manager_agent_aws::error::{service_error, xml_element, UpstreamError};
use secrets_manager_agent_aws::identity::Credentials;
use secrets_manager_agent_aws::passthrough::{self, ReadCall};
use secrets_manager_agent_aws::secrets_manager::{render, sdk_body, Description};
use secrets_manager_agent_aws::{ssm, sts};
use secrets_manager_agent_aws::transport::Answer;
use secrets_manager_agent_aws::SecretQuery;
use secrets_manager_agent_aws::credentials::json::from_json;
use secrets_manager_agent_core::iso8601;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The served body's keys, in the order AWS's agent writes them: also the
/// order of the fields of GetSecretValue's output.
const SERVED_KEYS: [&str; 7] = [
    "ARN",
    "Name",
    "VersionId",
    "SecretString",
    "SecretBinary",
    "VersionStages",
    "CreatedDate",
];

/// The fields of the credentials JSON: name and place in the struct.
const CREDENTIAL_FIELDS: [(&str, usize); 7] = [
    ("Code", 0),
    ("Message", 1),
    ("AccessKeyId", 2),
    ("SecretAccessKey", 3),
    ("Token", 4),
    ("SessionToken", 4),
    ("Expiration", 5),
];
const SECRET_ACCESS_KEY: usize = 3;
const TOKEN: usize = 4;
const EXPIRATION: usize = 5;

const SOURCE: &str = "fuzz";

fuzz_target!(|data: &[u8]| {
    static SWEEP: Once = Once::new();
    SWEEP.call_once(|| (0..=u16::MAX).for_each(check_status));

    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let status = u16::from_be_bytes([byte(0), byte(1)]);
    let mode = byte(2);
    let body = data.get(3..).unwrap_or_default();
    check_status(status);

    match mode & 7 {
        0 | 1 => {
            let retry_after = (mode & 8 != 0).then(|| Duration::from_millis(u64::from(status)));
            let (header, body) = if mode & 7 == 1 {
                let line = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
                let header = String::from_utf8_lossy(&body[..line]).into_owned();
                (Some(header), body.get(line + 1..).unwrap_or_default())
            } else {
                (None, body)
            };
            check_service_error(status, header.as_deref(), retry_after, body);
        }
        2 => {
            let (body, markers) = with_markers(body);
            check_render(&body, &markers);
        }
        3 => check_describe(body),
        4 => {
            let (body, markers) = with_markers(body);
            check_sts_credentials(&body, &markers);
        }
        5 => check_caller_arn(body),
        6 => {
            let (body, markers) = with_markers(body);
            check_json_credentials(&body, &markers);
        }
        _ if mode & 32 != 0 => {
            let (body, markers) = with_markers(body);
            let call = ReadCall::ALL[usize::from(mode >> 6) % ReadCall::ALL.len()];
            check_passthrough(call, &body, &markers);
        }
        _ if mode & 16 != 0 => {
            let (body, markers) = with_markers(body);
            check_parameter(&body, &markers);
        }
        _ => check_timestamp(&String::from_utf8_lossy(body)),
    }
});

/// GetParameter's answer: served as `{"Parameter":<as sent>,"ResultMetadata":{}}`,
/// the `Parameter` unchanged; an unusable answer is a response error that
/// quotes none of it (a decrypted SecureString is in there).
fn check_parameter(body: &[u8], markers: &[String]) {
    let value = match ssm::render(body) {
        Ok(value) => value,
        Err(e) => {
            assert!(matches!(e, UpstreamError::Response(_)), "{e:?}");
            let text = e.to_string();
            for m in markers {
                assert!(!text.contains(m.as_str()), "error quotes the answer: {text}");
            }
            return;
        }
    };
    let served = serde_json::from_slice::<InOrder>(&value.body)
        .unwrap_or_else(|e| panic!("served body is not a JSON object: {e}"))
        .0;
    let keys: Vec<&str> = served.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Parameter", "ResultMetadata"]);
    assert_eq!(served[1].1, serde_json::json!({}));
    assert!(served[0].1.is_object(), "Parameter is an object");
    let input: Value = serde_json::from_slice(body).expect("render read JSON");
    assert_eq!(served[0].1, input["Parameter"], "Parameter changed");
    // For SDK clients: GetParameter's answer, the `Parameter` as sent.
    let sdk = ssm::sdk_body(&value.body);
    let expected = [br#"{"Parameter":"#, raw_parameter(&value.body), &b"}"[..]].concat();
    assert_eq!(&*sdk, &expected[..]);
    let sdk = serde_json::from_slice::<InOrder>(&sdk)
        .expect("sdk body is JSON")
        .0;
    assert_eq!(sdk.len(), 1);
    assert_eq!(sdk[0].1, input["Parameter"], "Parameter changed for SDKs");
    match &input["Parameter"]["Version"] {
        Value::Null => assert_eq!(value.version_id, ""),
        version => assert_eq!(value.version_id, version.to_string()),
    }
}

/// The `Parameter` of a served body, as it is written there.
fn raw_parameter(served: &[u8]) -> &[u8] {
    served
        .strip_prefix(br#"{"Parameter":"#)
        .and_then(|rest| rest.strip_suffix(br#","ResultMetadata":{}}"#))
        .expect("served as {\"Parameter\":..,\"ResultMetadata\":{}}")
}

/// A read call passed through: a JSON object is kept byte for byte,
/// anything else is a response error that quotes none of it.
fn check_passthrough(call: ReadCall, body: &[u8], markers: &[String]) {
    match passthrough::answer(call, body) {
        Ok(value) => {
            assert_eq!(&*value.body, body, "answer changed");
            assert_eq!(value.version_id, "");
            assert_eq!(value.body.spare_capacity(), 0);
            let text = std::str::from_utf8(body).expect("answer is UTF-8");
            serde_json::from_str::<IgnoredAny>(text).expect("answer is JSON");
            assert_eq!(text.trim_start().as_bytes().first(), Some(&b'{'));
        }
        Err(e) => {
            assert!(matches!(e, UpstreamError::Response(_)), "{e:?}");
            let text = e.to_string();
            for m in markers {
                assert!(
                    !text.contains(m.as_str()),
                    "error quotes the answer: {text}"
                );
            }
        }
    }
}

/// Exactly one class per status: 200 success, 4xx/5xx an error document,
/// anything else unexpected.
fn check_status(status: u16) {
    let class = Answer::of(status);
    let expected = match status {
        200 => Answer::Success,
        400..=599 => Answer::Error,
        _ => Answer::Unexpected,
    };
    assert_eq!(class, expected, "status {status}");
}

/// `x-amzn-errortype` as the agent reads it: what follows the last `#`, up
/// to the first `:`, trimmed.
fn clean_code(raw: &str) -> &str {
    let after_hash = raw.rsplit('#').next().unwrap_or(raw);
    after_hash.split(':').next().unwrap_or("").trim()
}

fn check_service_error(
    status: u16,
    header: Option<&str>,
    retry_after: Option<Duration>,
    body: &[u8],
) {
    let e = service_error(status, header, retry_after, body);
    let UpstreamError::Service {
        status: got_status,
        code,
        message,
        retry_after: got_retry,
    } = &e
    else {
        panic!("service_error gave {e:?}");
    };
    assert_eq!(*got_status, status);
    assert_eq!(*got_retry, retry_after);
    assert!(!code.is_empty(), "empty code");
    assert!(!code.contains(['#', ':']), "code {code:?} not cleaned");
    assert_eq!(code.trim(), code, "code {code:?} not trimmed");
    if let Some(h) = header.map(clean_code).filter(|c| !c.is_empty()) {
        assert_eq!(code, h, "the header's code wins");
    }

    // What the agent's client gets for it: JSON with both strings.
    let response = api::upstream_error(&e);
    assert_eq!(response.status, status);
    let json: Value = serde_json::from_slice(response.body.as_bytes())
        .unwrap_or_else(|err| panic!("upstream_error body is not JSON: {err}"));
    assert_eq!(json["__type"].as_str(), Some(code.as_str()), "{json}");
    assert_eq!(json["message"].as_str(), Some(message.as_str()), "{json}");
}

/// Replaces each `$` with its own marker: 17 digits from a hash of the body
/// and the marker's number (a leading 9: a JSON number has no leading 0).
fn with_markers(body: &[u8]) -> (Vec<u8>, Vec<String>) {
    // FNV-1a, then SplitMix64 per marker.
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mix = |i: u64| {
        let mut z = hash.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = Vec::with_capacity(body.len());
    let mut markers = Vec::new();
    for &b in body {
        if b == b'$' {
            let marker = format!(
                "9{:016}",
                mix(markers.len() as u64) % 10_000_000_000_000_000
            );
            out.extend_from_slice(marker.as_bytes());
            markers.push(marker);
        } else {
            out.push(b);
        }
    }
    (out, markers)
}

/// The markers that `secret` holds and `text` shows.
fn leaked<'a>(markers: &'a [String], secret: &str, text: &str) -> Vec<&'a str> {
    markers
        .iter()
        .filter(|m| secret.contains(m.as_str()) && text.contains(m.as_str()))
        .map(String::as_str)
        .collect()
}

/// The named fields of a JSON document, read as the agent's derived structs
/// read it: an object by key or an array by position (exactly one element per
/// field), members of other names skipped unread (`IgnoredAny`: a skipped
/// string may hold invalid UTF-8, a skipped number may be out of range, so
/// `Value` cannot read the whole document). `fields` maps each name to its
/// place; `None` if the document is not such a struct.
fn struct_fields(body: &[u8], fields: &[(&str, usize)]) -> Option<Vec<Option<Value>>> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let out = Fields(fields).deserialize(&mut de).ok()?;
    de.end().ok()?;
    out
}

struct Fields<'a>(&'a [(&'a str, usize)]);

impl Fields<'_> {
    fn len(&self) -> usize {
        self.0.iter().map(|(_, i)| i + 1).max().unwrap_or(0)
    }
}

impl<'de> DeserializeSeed<'de> for Fields<'_> {
    type Value = Option<Vec<Option<Value>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Fields<'_> {
    type Value = Option<Vec<Option<Value>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a struct")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = vec![None; self.len()];
        while let Some(key) = map.next_key::<String>()? {
            match self.0.iter().find(|(name, _)| *name == key) {
                Some(&(_, i)) => out[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(out))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let len = self.len();
        let mut out = Vec::new();
        while out.len() < len {
            match seq.next_element::<Value>()? {
                Some(v) => out.push(Some(v)),
                None => return Ok(None),
            }
        }
        let extra = seq.next_element::<IgnoredAny>()?.is_some();
        Ok((!extra).then_some(out))
    }
}

/// A JSON object's members in document order (serde_json's `Value` sorts them).
struct InOrder(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for InOrder {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = InOrder;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InOrder, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(InOrder(members))
            }
        }
        d.deserialize_map(V)
    }
}

fn check_render(body: &[u8], markers: &[String]) {
    let value = match render(body) {
        Ok(value) => value,
        Err(e) => {
            assert!(matches!(e, UpstreamError::Response(_)), "{e:?}");
            // The answer holds the secret: its error quotes none of it.
            let text = e.to_string();
            for m in markers {
                assert!(
                    !text.contains(m.as_str()),
                    "error quotes the answer: {text}"
                );
            }
            return;
        }
    };
    let served = serde_json::from_slice::<InOrder>(&value.body)
        .unwrap_or_else(|e| panic!("served body is not a JSON object: {e}"))
        .0;

    // Keys: those of the answer that are not null, in the agent's order.
    let places: Vec<(&str, usize)> = SERVED_KEYS.iter().copied().zip(0..).collect();
    let fields = struct_fields(body, &places).expect("render read a struct");
    let expected: Vec<&str> = SERVED_KEYS
        .iter()
        .zip(&fields)
        .filter(|(_, v)| v.as_ref().is_some_and(|v| !v.is_null()))
        .map(|(k, _)| *k)
        .collect();
    let keys: Vec<&str> = served.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, expected, "served keys");

    for ((key, out), input) in served
        .iter()
        .zip(fields.iter().flatten().filter(|v| !v.is_null()))
    {
        if key == "CreatedDate" {
            let Value::String(date) = out else {
                panic!("CreatedDate served as {out}");
            };
            let date: f64 = date.parse().expect("CreatedDate is a number");
            assert!(date.is_finite());
            assert_eq!(Some(date), input.as_f64(), "CreatedDate changed");
        } else {
            assert_eq!(out, input, "{key} changed");
        }
    }
    let version_id = fields[2]
        .as_ref()
        .and_then(Value::as_str)
        .unwrap_or_default();
    assert_eq!(value.version_id, version_id);

    // For SDK clients: the same body, `CreatedDate` a JSON number again
    // (checked for JSON without serde_json's range limit: f64::MAX written
    // out in digits overflows its default parser).
    let sdk = sdk_body(&value.body);
    serde_json::from_slice::<IgnoredAny>(&sdk).expect("sdk body is JSON");
    match served.last() {
        Some((key, Value::String(date))) if key == "CreatedDate" => {
            let quoted = format!("\"{date}\"}}");
            let head = value
                .body
                .strip_suffix(quoted.as_bytes())
                .expect("CreatedDate is last");
            assert_eq!(&sdk[..head.len()], head, "members before the date changed");
            assert_eq!(&sdk[head.len()..], format!("{date}}}").as_bytes());
        }
        _ => assert_eq!(&*sdk, &*value.body, "no date: unchanged"),
    }
}

fn check_describe(body: &[u8]) {
    let description = match Description::parse(body) {
        Ok(d) => d,
        Err(e) => {
            assert!(matches!(e, UpstreamError::Response(_)), "{e:?}");
            return;
        }
    };
    let fields = struct_fields(body, &[("VersionIdsToStages", 0)]).expect("parse read a struct");
    let versions = fields[0].as_ref().and_then(Value::as_object);
    assert_eq!(
        versions.is_some(),
        description.version_ids_to_stages.is_some()
    );

    // The answer's own versions and stages, and a few that AWS uses.
    let mut names: Vec<String> = ["AWSCURRENT", "AWSPREVIOUS", "v1"]
        .map(String::from)
        .to_vec();
    if let Some((id, stages)) = versions.and_then(|v| v.iter().next()) {
        names.push(id.clone());
        if let Some(stage) = stages.get(0).and_then(Value::as_str) {
            names.push(stage.to_string());
        }
    }
    let has_stage = |version: &str, stage: &str| {
        versions
            .and_then(|v| v.get(version))
            .and_then(Value::as_array)
            .is_some_and(|stages| stages.iter().any(|s| s.as_str() == Some(stage)))
    };
    let options = || std::iter::once(None).chain(names.iter().map(|n| Some(n.as_str())));
    for version_id in options() {
        for version_stage in options() {
            let query = SecretQuery {
                secret_id: "s".into(),
                version_id: version_id.map(String::from),
                version_stage: version_stage.map(String::from),
            };
            for cached in &names {
                // The rule of `still_answers`' doc comment.
                let expected = versions.is_some()
                    && match (version_id, version_stage) {
                        (Some(id), None) => versions.is_some_and(|v| v.contains_key(id)),
                        (Some(id), Some(stage)) => has_stage(id, stage),
                        (None, stage) => has_stage(cached, stage.unwrap_or("AWSCURRENT")),
                    };
                assert_eq!(
                    description.still_answers(&query, cached),
                    expected,
                    "{query:?} cached {cached:?}"
                );
            }
        }
    }
}

/// Credentials that a parser accepted: both keys there, the secret parts
/// not in `Debug`.
fn check_credentials(c: &Credentials, secrets: &[&str], markers: &[String]) {
    assert!(!c.access_key_id.is_empty(), "empty AccessKeyId");
    assert!(!c.secret_access_key.is_empty(), "empty SecretAccessKey");
    assert_eq!(c.source, SOURCE);
    if let Some(expiry) = c.expiry {
        assert!(expiry >= UNIX_EPOCH);
    }
    let debug = format!("{c:?}");
    for secret in secrets {
        let shown = leaked(markers, secret, &debug);
        assert!(
            shown.is_empty(),
            "Debug shows {shown:?} of a secret: {debug}"
        );
    }
}

fn check_sts_credentials(body: &[u8], markers: &[String]) {
    // Where the parser finds the secret parts, by the same element rule.
    let text = String::from_utf8_lossy(body);
    let element = xml_element(&text, "Credentials");
    let secret = |name| element.as_deref().and_then(|c| xml_element(c, name));
    let secrets: Vec<String> = ["SecretAccessKey", "SessionToken"]
        .into_iter()
        .filter_map(secret)
        .collect();
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    match sts::from_xml(body, SOURCE) {
        Ok(c) => {
            assert_eq!(
                Some(&c.secret_access_key),
                secret("SecretAccessKey").as_ref()
            );
            check_credentials(&c, &secrets, markers);
        }
        Err(why) => check_error_hides(&why.to_string(), &secrets, markers),
    }
}

fn check_json_credentials(body: &[u8], markers: &[String]) {
    let fields = struct_fields(body, &CREDENTIAL_FIELDS);
    let field = |i: usize| fields.as_ref()?[i].as_ref()?.as_str();
    let secrets: Vec<&str> = [SECRET_ACCESS_KEY, TOKEN]
        .into_iter()
        .filter_map(field)
        .collect();
    match from_json(body, SOURCE) {
        Ok(c) => {
            assert_eq!(Some(c.secret_access_key.as_str()), field(SECRET_ACCESS_KEY));
            // An expiry that is there is read, never taken for "no expiry".
            if field(EXPIRATION).is_some() {
                assert!(c.expiry.is_some(), "Expiration dropped");
            }
            check_credentials(&c, &secrets, markers);
        }
        Err(why) => {
            let why = why.to_string();
            if fields.is_none() {
                // Not the JSON shape: the message says where, and quotes nothing.
                for m in markers {
                    assert!(!why.contains(m.as_str()), "error quotes the answer: {why}");
                }
            }
            check_error_hides(&why, &secrets, markers);
        }
    }
}

/// A credentials error (it reaches the log) quotes no secret part.
fn check_error_hides(why: &str, secrets: &[&str], markers: &[String]) {
    assert!(!why.is_empty());
    for secret in secrets {
        let shown = leaked(markers, secret, why);
        assert!(
            shown.is_empty(),
            "error quotes {shown:?} of a secret: {why}"
        );
    }
}

fn check_caller_arn(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    match sts::caller_arn(body) {
        Ok(arn) => {
            assert_eq!(Some(&arn), xml_element(&text, "Arn").as_ref());
            assert_eq!(arn.trim(), arn, "ARN not trimmed");
        }
        Err(e) => {
            assert!(matches!(e, UpstreamError::Response(_)), "{e:?}");
            assert_eq!(xml_element(&text, "Arn"), None);
        }
    }
}

/// 10000-01-01T00:00:00Z: `format` writes later times with a five-digit year,
/// which RFC 3339 (and so `parse`) does not read.
const YEAR_10000: Duration = Duration::from_secs(253_402_300_800);

fn check_timestamp(text: &str) {
    let Some(t) = iso8601::parse(text) else {
        return;
    };
    let since = t.duration_since(UNIX_EPOCH).expect("never before 1970");
    let formatted = iso8601::format(t);
    if since >= YEAR_10000 {
        assert_eq!(iso8601::parse(&formatted), None, "{formatted}");
        return;
    }
    // `format` keeps milliseconds: the round trip lands on t cut to them.
    let millis = Duration::new(since.as_secs(), since.subsec_millis() * 1_000_000);
    let again = iso8601::parse(&formatted);
    assert_eq!(again, Some(UNIX_EPOCH + millis), "{text:?} -> {formatted}");
    assert_eq!(
        again.map(iso8601::format).as_deref(),
        Some(formatted.as_str())
    );
}
