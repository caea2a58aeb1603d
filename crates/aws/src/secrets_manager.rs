//! The Secrets Manager operations the agent uses, GetSecretValue,
//! DescribeSecret and BatchGetSecretValue, over the JSON 1.1 protocol:
//! request bodies, the answer turned into the body the agent serves, and
//! which versions and stages a DescribeSecret answer says are still current
//! (the cache's revalidation). Read calls of an SDK client that the agent
//! passes through as they are go out here too (`read`, see `passthrough`).
//!
//! For the SDK-protocol surface, the served body turned back into
//! GetSecretValue's own answer ([`sdk_body`], on every cached SDK read), and
//! BatchGetSecretValue's answer assembled from such bodies ([`batch_body`]).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use zeroize::Zeroize;

use super::client::{Client, OnThrottle};
use super::error::{json_error, UpstreamError};
use super::passthrough::{self, ReadCall, Service};
use secrets_manager_agent_core::secret::SecretBytes;

/// What a client asked for: the cache key and the GetSecretValue input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretQuery {
    pub secret_id: String,
    pub version_id: Option<String>,
    pub version_stage: Option<String>,
}

/// A GetSecretValue answer, already rendered as the body the agent serves.
/// No `Debug`: the body holds the secret.
pub struct SecretValue {
    pub body: SecretBytes,
    pub version_id: String,
}

impl SecretValue {
    /// A second copy, for one value cached under two keys (not `Clone`, so
    /// copies of a secret are made on purpose only).
    pub fn copy(&self) -> SecretValue {
        SecretValue {
            body: SecretBytes::new(self.body.to_vec()),
            version_id: self.version_id.clone(),
        }
    }
}

/// The part of DescribeSecret the cache needs.
#[derive(Debug)]
pub struct Description {
    pub version_ids_to_stages: Option<HashMap<String, Vec<String>>>,
}

/// The stage a request without `versionId`/`versionStage` asks for.
const CURRENT: &str = "AWSCURRENT";

impl Description {
    /// Reads a DescribeSecret answer (public for the fuzz targets).
    pub fn parse(reply: &[u8]) -> Result<Description, UpstreamError> {
        let out: DescribeOutput = serde_json::from_slice(reply).map_err(|e| {
            UpstreamError::Response(format!("DescribeSecret answer: {}", json_error(&e)))
        })?;
        Ok(Description {
            version_ids_to_stages: out.version_ids_to_stages,
        })
    }

    /// Whether the version cached for `query` is still what GetSecretValue
    /// would return: a pinned version still exists (with the pinned stage, if
    /// any), or the cached version still carries the stage asked for.
    pub fn still_answers(&self, query: &SecretQuery, cached_version: &str) -> bool {
        let Some(versions) = &self.version_ids_to_stages else {
            return false;
        };
        let has_stage = |version: &str, stage: &str| {
            versions
                .get(version)
                .is_some_and(|stages| stages.iter().any(|s| s == stage))
        };
        match (&query.version_id, &query.version_stage) {
            (Some(id), None) => versions.contains_key(id),
            (Some(id), Some(stage)) => has_stage(id, stage),
            (None, stage) => has_stage(cached_version, stage.as_deref().unwrap_or(CURRENT)),
        }
    }
}

pub struct SecretsManager {
    client: Arc<Client>,
    endpoint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Input<'a> {
    secret_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_stage: Option<&'a str>,
}

/// Upstream's GetSecretValue output, and (with `CreatedDate` as a string) the
/// body AWS's agent serves: same keys, same order.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    #[serde(rename = "ARN")]
    arn: Option<String>,
    name: Option<String>,
    version_id: Option<String>,
    secret_string: Option<String>,
    secret_binary: Option<String>,
    version_stages: Option<Vec<String>>,
    created_date: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Served<'a> {
    #[serde(rename = "ARN", skip_serializing_if = "Option::is_none")]
    arn: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_string: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_binary: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_stages: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_date: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeOutput {
    version_ids_to_stages: Option<HashMap<String, Vec<String>>>,
}

impl SecretsManager {
    pub fn new(client: Arc<Client>, endpoint: String) -> SecretsManager {
        SecretsManager { client, endpoint }
    }

    pub fn get_secret_value(&self, query: &SecretQuery) -> Result<SecretValue, UpstreamError> {
        let input = Input {
            secret_id: &query.secret_id,
            version_id: query.version_id.as_deref(),
            version_stage: query.version_stage.as_deref(),
        };
        // The raw answer holds the secret too: overwritten once rendered.
        let reply = SecretBytes::new(self.call("GetSecretValue", &query.secret_id, &input)?);
        render(&reply)
    }

    pub fn describe_secret(&self, secret_id: &str) -> Result<Description, UpstreamError> {
        let input = Input {
            secret_id,
            version_id: None,
            version_stage: None,
        };
        let reply = self.call("DescribeSecret", secret_id, &input)?;
        Description::parse(&reply)
    }

    /// One BatchGetSecretValue call (prefetching): each value rendered as
    /// GetSecretValue's answer would be, the per-secret errors, the next page.
    pub fn batch_get_secret_value(
        &self,
        input: &BatchInput,
        on_throttle: OnThrottle,
    ) -> Result<BatchAnswer, UpstreamError> {
        let what = match &input.filters {
            Some(filters) => format!(
                "tag key {}",
                filters
                    .iter()
                    .flat_map(|f| f.values.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            None => format!("{} secret(s)", input.secret_id_list.len()),
        };
        let reply =
            SecretBytes::new(self.call_with(on_throttle, "BatchGetSecretValue", &what, input)?);
        BatchAnswer::parse(&reply)
    }

    /// The current values of `ids` with one BatchGetSecretValue call (at most
    /// [`BATCH`] IDs), each with the index of the ID it answers. An ID the
    /// answer does not cover (an `Errors` entry, absent, or ambiguous: see
    /// [`match_answers`]) has no value. A throttled call is not retried: the
    /// caller has the per-secret calls to fall back on.
    pub fn batch_get_current(
        &self,
        ids: &[&str],
    ) -> Result<Vec<(usize, SecretValue)>, UpstreamError> {
        let mut input = BatchInput::default();
        for id in ids {
            if !input.secret_id_list.iter().any(|listed| listed == id) {
                input.secret_id_list.push(id.to_string());
            }
        }
        let answer = self.batch_get_secret_value(&input, OnThrottle::Return)?;
        for error in &answer.errors {
            log::debug!(
                "BatchGetSecretValue could not read {}: {}",
                error.secret_id,
                error.code
            );
        }
        let found = match_answers(ids, &answer.values)
            .into_iter()
            .enumerate()
            .filter_map(|(at, value)| Some((at, answer.values[value?].value.copy())))
            .collect();
        Ok(found)
    }

    /// A read call passed through (`passthrough`): `input` (JSON) as its
    /// body, AWS's answer as it came. A Parameter Store call is refused.
    pub fn read(&self, call: ReadCall, input: &str) -> Result<SecretValue, UpstreamError> {
        passthrough::read(
            &self.client,
            &self.endpoint,
            Service::SecretsManager,
            call,
            input,
        )
    }

    fn call(
        &self,
        operation: &str,
        what: &str,
        input: &impl Serialize,
    ) -> Result<Vec<u8>, UpstreamError> {
        self.call_with(OnThrottle::Retry, operation, what, input)
    }

    fn call_with(
        &self,
        on_throttle: OnThrottle,
        operation: &str,
        what: &str,
        input: &impl Serialize,
    ) -> Result<Vec<u8>, UpstreamError> {
        let target = format!("secretsmanager.{operation}");
        self.client.json_call(
            on_throttle,
            "secretsmanager",
            &self.endpoint,
            &target,
            what,
            input,
        )
    }
}

/// For each requested ID, the index of the one answer that is that secret;
/// `None` if no answer is, or if several could be (an ID that is a name, and
/// another account's secret of that name asked for by ARN): such an ID is
/// better read alone than guessed.
pub fn match_answers(ids: &[&str], values: &[BatchValue]) -> Vec<Option<usize>> {
    ids.iter()
        .map(|id| {
            let mut answering = values
                .iter()
                .enumerate()
                .filter(|(_, value)| value.answers(id))
                .map(|(at, _)| at);
            match (answering.next(), answering.next()) {
                (Some(at), None) => Some(at),
                _ => None,
            }
        })
        .collect()
}

/// Upstream JSON → the agent's body. `CreatedDate` becomes a string holding the
/// number as Rust's `f64` Display prints it, as AWS's agent does. Public for
/// the fuzz targets.
pub fn render(reply: &[u8]) -> Result<SecretValue, UpstreamError> {
    let out: Output = serde_json::from_slice(reply).map_err(|e| {
        UpstreamError::Response(format!("GetSecretValue answer: {}", json_error(&e)))
    })?;
    render_output(&out)
}

/// One GetSecretValue output (or one element of BatchGetSecretValue's
/// `SecretValues`, which has the same fields) → the agent's body.
fn render_output(out: &Output) -> Result<SecretValue, UpstreamError> {
    let served = Served {
        arn: out.arn.as_deref(),
        name: out.name.as_deref(),
        version_id: out.version_id.as_deref(),
        secret_string: out.secret_string.as_deref(),
        secret_binary: out.secret_binary.as_deref(),
        version_stages: out.version_stages.as_deref(),
        created_date: out.created_date.map(|d| d.to_string()),
    };
    // Sized exactly, up front: the buffer never reallocates (a reallocation
    // would free a copy of the secret without overwriting it), and the cache
    // holds no spare bytes.
    let cannot =
        |e: serde_json::Error| UpstreamError::Internal(format!("cannot render secret: {e}"));
    let mut counter = ByteCounter(0);
    serde_json::to_writer(&mut counter, &served).map_err(cannot)?;
    let mut body = Vec::with_capacity(counter.0);
    serde_json::to_writer(&mut body, &served).map_err(cannot)?;
    Ok(SecretValue {
        body: SecretBytes::new(body),
        version_id: out.version_id.clone().unwrap_or_default(),
    })
}

/// How `render` writes `CreatedDate`'s member up to its string's opening
/// quote. It writes the member last, when the answer has a date.
const CREATED_DATE: &[u8] = br#""CreatedDate":"#;

/// A served GetSecretValue body (`render`'s) → GetSecretValue's answer as
/// AWS sends it, for SDK clients: the same members, `CreatedDate` a JSON
/// number again (`"CreatedDate":"1523477145.713"` →
/// `"CreatedDate":1523477145.713`). A body without a date is returned as it
/// is. Sized exactly: the output holds the secret too. Members that `render`
/// does not keep (null ones, any AWS adds later) are not there: an SDK reads
/// them as absent.
///
/// It runs on every cached SDK read, so it works on the bytes, without a
/// parse, relying on what `render` writes:
///
/// - `CreatedDate` comes last, so a body with a date ends with
///   `"CreatedDate":"TEXT"}`, and dropping TEXT's two quotes is all there is
///   to do.
/// - TEXT is an `f64` as Rust's `Display` prints it: an optional `-`, digits,
///   optionally a `.` and more digits. `Display` never writes an exponent,
///   and never `inf` or `NaN` here (serde_json reads no non-finite number);
///   it writes the shortest digits that read back as the same `f64`. So TEXT
///   is a JSON number, and an SDK reads it as the date AWS sent, though
///   perhaps spelled otherwise (`1.795900097E9` comes back as `1795900097`).
///   The shape is checked anyway (`is_display_number`).
///
/// Nothing inside a secret (or a name) can pass for that ending, because in
/// a JSON string every `"` is escaped as `\"`. Read from the end: the final
/// `"}` closes the body's last string value and the body. Before it, TEXT
/// holds no `"`, so the `"` in front of TEXT is that string's opening quote
/// if it is not preceded by a backslash, and here it is preceded by `:`,
/// which is then the separator of the last member. The `"` in front of that
/// `:` closes the member's name; the name's opening `"` is preceded by `,`
/// or `{`, so it too is unescaped, and the name is `CreatedDate`. Text of a
/// secret would have `\` in front of each of those quotes.
pub fn sdk_body(served: &[u8]) -> SecretBytes {
    let Some((head, number)) = split_created_date(served) else {
        return SecretBytes::new(served.to_vec());
    };
    let mut body = Vec::with_capacity(head.len() + number.len() + 1);
    body.extend_from_slice(head);
    body.extend_from_slice(number);
    body.push(b'}');
    SecretBytes::new(body)
}

/// A body ending `"CreatedDate":"TEXT"}` (see [`sdk_body`]) → the body up to
/// and including `"CreatedDate":`, and TEXT.
fn split_created_date(served: &[u8]) -> Option<(&[u8], &[u8])> {
    let inner = served.strip_suffix(b"\"}")?;
    let start = inner
        .iter()
        .rposition(|b| !matches!(b, b'0'..=b'9' | b'.' | b'-'))?
        + 1;
    let (before, number) = inner.split_at(start);
    let head = before.strip_suffix(b"\"")?;
    let outside = head.strip_suffix(CREATED_DATE)?;
    (matches!(outside.last(), Some(b',' | b'{')) && is_display_number(number))
        .then_some((head, number))
}

/// Whether `text` is a number as `f64`'s `Display` writes a finite one:
/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, which is a JSON number.
fn is_display_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let (int, fraction) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], Some(&digits[dot + 1..])),
        None => (digits, None),
    };
    let all_digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    all_digits(int) && (int.len() == 1 || int[0] != b'0') && fraction.is_none_or(all_digits)
}

/// The most secret IDs one BatchGetSecretValue call takes.
pub const BATCH: usize = 20;

/// BatchGetSecretValue's input: secret IDs (at most [`BATCH`]) or filters
/// with pages.
#[derive(Serialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct BatchInput {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_id_list: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<Filter>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_results: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

impl BatchInput {
    /// Secrets carrying the tag key `key`, one page.
    pub fn tag_key(key: &str, max_results: u32, next_token: Option<String>) -> BatchInput {
        BatchInput {
            filters: Some(vec![Filter {
                key: "tag-key".into(),
                values: vec![key.into()],
            }]),
            max_results: Some(max_results),
            next_token,
            ..BatchInput::default()
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Filter {
    pub key: String,
    pub values: Vec<String>,
}

/// One secret of a BatchGetSecretValue answer, rendered.
pub struct BatchValue {
    pub name: Option<String>,
    pub arn: Option<String>,
    pub value: SecretValue,
}

impl BatchValue {
    /// Whether this is the secret a request names by `id`: an ARN names it
    /// by its full ARN or its ARN without the 6-character suffix Secrets
    /// Manager adds (a partial ARN); anything else by its name (a name
    /// cannot start with `arn:`, which holds a colon).
    pub fn answers(&self, id: &str) -> bool {
        if !id.starts_with("arn:") {
            return self.name.as_deref() == Some(id);
        }
        self.arn.as_deref().is_some_and(|arn| {
            arn == id
                || arn
                    .strip_prefix(id)
                    .is_some_and(|rest| rest.len() == 7 && rest.starts_with('-'))
        })
    }
}

/// A secret the batch could not read, as upstream names it (no value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    pub secret_id: String,
    pub code: String,
    pub message: String,
}

/// A BatchGetSecretValue answer.
pub struct BatchAnswer {
    pub values: Vec<BatchValue>,
    pub errors: Vec<BatchError>,
    pub next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchOutput {
    #[serde(default)]
    secret_values: Vec<Output>,
    #[serde(default)]
    errors: Vec<BatchErrorOutput>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchErrorOutput {
    secret_id: Option<String>,
    error_code: Option<String>,
    message: Option<String>,
}

impl BatchAnswer {
    /// Reads a BatchGetSecretValue answer; each value is rendered exactly as
    /// `render` renders a GetSecretValue answer.
    pub fn parse(reply: &[u8]) -> Result<BatchAnswer, UpstreamError> {
        let out: BatchOutput = serde_json::from_slice(reply).map_err(|e| {
            UpstreamError::Response(format!("BatchGetSecretValue answer: {}", json_error(&e)))
        })?;
        let mut values = Vec::with_capacity(out.secret_values.len());
        for element in &out.secret_values {
            values.push(BatchValue {
                name: element.name.clone(),
                arn: element.arn.clone(),
                value: render_output(element)?,
            });
        }
        let errors = out
            .errors
            .into_iter()
            .map(|e| BatchError {
                secret_id: e.secret_id.unwrap_or_default(),
                code: e.error_code.unwrap_or_default(),
                message: e.message.unwrap_or_default(),
            })
            .collect();
        Ok(BatchAnswer {
            values,
            errors,
            next_token: out.next_token,
        })
    }
}

/// BatchGetSecretValue's answer for an SDK client that listed its secrets
/// (`SecretIdList`), assembled by the SDK-protocol surface from the cache:
/// `{"SecretValues":[..],"Errors":[..]}`, `values` being each secret's
/// GetSecretValue answer ([`sdk_body`]), written as given, and `errors` the
/// IDs it could not read. Sized exactly: it holds the secrets.
pub fn batch_body(values: &[&[u8]], errors: &[BatchError]) -> SecretBytes {
    const HEAD: &[u8] = br#"{"SecretValues":["#;
    const MIDDLE: &[u8] = br#"],"Errors":"#;
    let entries: Vec<ErrorEntry> = errors
        .iter()
        .map(|e| ErrorEntry {
            secret_id: &e.secret_id,
            error_code: &e.code,
            message: &e.message,
        })
        .collect();
    // Strings only: encoding them cannot fail. Not secret: IDs and AWS's
    // error texts.
    let errors = serde_json::to_vec(&entries).unwrap_or_else(|_| b"[]".to_vec());
    super::assemble::object(HEAD, values, MIDDLE, &errors)
}

/// One element of BatchGetSecretValue's `Errors`, as AWS writes it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorEntry<'a> {
    secret_id: &'a str,
    error_code: &'a str,
    message: &'a str,
}

/// A writer that only counts what it is given.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.secret_string.zeroize();
        self.secret_binary.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_in_agent_order_with_string_date() {
        let upstream =
            br#"{"CreatedDate":1.795900097E9,"Name":"MyTest","VersionStages":["AWSCURRENT"],
            "SecretString":"{\"user\":\"admin\"}","VersionId":"v1",
            "ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-tKAqXa"}"#;
        let v = render(upstream).unwrap();
        assert_eq!(
            String::from_utf8(v.body.to_vec()).unwrap(),
            r#"{"ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-tKAqXa","Name":"MyTest","VersionId":"v1","SecretString":"{\"user\":\"admin\"}","VersionStages":["AWSCURRENT"],"CreatedDate":"1795900097"}"#
        );
        assert_eq!(v.version_id, "v1");
        assert_eq!(v.body.spare_capacity(), 0, "the cache keeps no spare bytes");
    }

    #[test]
    fn binary_and_fractional_dates() {
        let v =
            render(br#"{"Name":"b","SecretBinary":"AAEC","CreatedDate":1523477145.713}"#).unwrap();
        assert_eq!(
            String::from_utf8(v.body.to_vec()).unwrap(),
            r#"{"Name":"b","SecretBinary":"AAEC","CreatedDate":"1523477145.713"}"#
        );
    }

    /// `upstream` rendered as the agent serves it, then turned back for an
    /// SDK.
    fn sdk(upstream: &str) -> String {
        let served = render(upstream.as_bytes()).unwrap();
        let body = sdk_body(&served.body);
        assert_eq!(body.spare_capacity(), 0, "sized exactly");
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap()
    }

    const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-tKAqXa";

    #[test]
    fn sdk_bodies_are_the_upstream_answer() {
        let upstream = format!(
            r#"{{"CreatedDate":1523477145.713,"Name":"MyTest","VersionStages":["AWSPREVIOUS","AWSCURRENT"],
            "SecretString":"{{\"user\":\"admin\"}}","VersionId":"v1","ARN":"{SECRET_ARN}"}}"#
        );
        let served = render(upstream.as_bytes()).unwrap();
        assert!(served
            .body
            .ends_with(br#","CreatedDate":"1523477145.713"}"#));
        let body = sdk(&upstream);
        assert_eq!(
            body,
            format!(
                r#"{{"ARN":"{SECRET_ARN}","Name":"MyTest","VersionId":"v1","SecretString":"{{\"user\":\"admin\"}}","VersionStages":["AWSPREVIOUS","AWSCURRENT"],"CreatedDate":1523477145.713}}"#
            )
        );
        assert_eq!(
            json(&body),
            json(&upstream),
            "the upstream answer, reordered"
        );
    }

    #[test]
    fn sdk_dates_are_the_numbers_aws_sent() {
        for date in [
            "1.795900097E9",
            "1523477145.713",
            "0",
            "-0.0",
            "-1.5",
            "1e300",
            "5e-324",
            "1.7976931348623157e308",
            "123456789.123456789",
        ] {
            let upstream = format!(r#"{{"Name":"n","SecretString":"s","CreatedDate":{date}}}"#);
            let body = sdk(&upstream);
            let number = body
                .strip_prefix(r#"{"Name":"n","SecretString":"s","CreatedDate":"#)
                .and_then(|rest| rest.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{body}"));
            assert!(is_display_number(number.as_bytes()), "{number}");
            // Valid JSON, and the very `f64` that was sent, by a correctly
            // rounding parser. (serde_json's own, without its
            // `float_roundtrip` feature, overflows on the 309 digits of
            // f64::MAX; AWS's dates are ten digits.)
            serde_json::from_str::<serde::de::IgnoredAny>(&body).unwrap();
            let sent: f64 = date.parse().unwrap();
            assert_eq!(number.parse::<f64>().map(f64::to_bits), Ok(sent.to_bits()));
        }
        let body = sdk(r#"{"CreatedDate":1.795900097E9}"#);
        assert_eq!(body, r#"{"CreatedDate":1795900097}"#);
        assert_eq!(json(&body)["CreatedDate"].as_f64(), Some(1.795900097E9));
    }

    #[test]
    fn secret_text_never_passes_for_the_date() {
        // Secrets that end with, or hold, what the date looks like: their
        // quotes are escaped, so only the real member is turned back.
        for secret in [
            r#"x","CreatedDate":"1523477145"#,
            r#"{"CreatedDate":"1523477145.713"}"#,
            r#"\"CreatedDate\":\"15"#,
            r#"\\","CreatedDate":"15"#,
            "\"CreatedDate\":\"",
            "1523477145.713",
        ] {
            let string = serde_json::to_string(secret).unwrap();
            let without = format!(r#"{{"Name":"n","SecretString":{string}}}"#);
            let served = render(without.as_bytes()).unwrap();
            assert_eq!(
                sdk(&without).as_bytes(),
                &*served.body,
                "{secret}: unchanged"
            );
            assert_eq!(json(&sdk(&without))["SecretString"], secret);

            let with = format!(r#"{{"Name":"n","SecretString":{string},"CreatedDate":1.5}}"#);
            let body = sdk(&with);
            assert_eq!(json(&body), json(&with), "{secret}");
            assert!(body.ends_with(r#","CreatedDate":1.5}"#), "{body}");
        }
    }

    #[test]
    fn binary_secrets_and_bodies_without_a_date() {
        assert_eq!(
            sdk(r#"{"Name":"b","SecretBinary":"AAEC","CreatedDate":1523477145.713}"#),
            r#"{"Name":"b","SecretBinary":"AAEC","CreatedDate":1523477145.713}"#
        );
        assert_eq!(
            sdk(r#"{"Name":"b","SecretBinary":"MTIz","VersionStages":["AWSCURRENT"]}"#),
            r#"{"Name":"b","SecretBinary":"MTIz","VersionStages":["AWSCURRENT"]}"#
        );
        assert_eq!(
            sdk(r#"{"SecretBinary":"MTIz"}"#),
            r#"{"SecretBinary":"MTIz"}"#
        );
        assert_eq!(sdk("{}"), "{}");
        // Not `render`'s shape: left as it is.
        for body in [
            &br#"{"CreatedDate":""}"#[..],
            br#"{"CreatedDate":"01"}"#,
            br#"{"CreatedDate":"1."}"#,
            br#"{"CreatedDate":"1.2.3"}"#,
            br#"{"CreatedDate":"--1"}"#,
            br#"{"XCreatedDate":"1"}"#,
            br#"{"a":"\"CreatedDate\":"1"}"#,
            br#""}"#,
            b"",
        ] {
            assert_eq!(&*sdk_body(body), body, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            &*sdk_body(br#"{"CreatedDate":"-0"}"#),
            br#"{"CreatedDate":-0}"#
        );
    }

    #[test]
    fn batch_bodies_are_batch_get_secret_values_answer() {
        let elements = [
            format!(
                r#"{{"ARN":"{SECRET_ARN}","Name":"MyTest","VersionId":"v1","SecretString":"s\"1","VersionStages":["AWSCURRENT"],"CreatedDate":1.5}}"#
            ),
            r#"{"Name":"b","SecretBinary":"AAEC","CreatedDate":1523477145.713}"#.to_string(),
        ];
        let upstream = format!(
            r#"{{"SecretValues":[{}],"Errors":[{{"SecretId":"gone\"","ErrorCode":"ResourceNotFoundException","Message":"Secrets Manager can't find the specified secret."}}]}}"#,
            elements.join(",")
        );
        // From the cache: each value as served, turned back, then assembled.
        let answer = BatchAnswer::parse(upstream.as_bytes()).unwrap();
        let sdk_bodies: Vec<SecretBytes> = answer
            .values
            .iter()
            .map(|v| sdk_body(&v.value.body))
            .collect();
        let values: Vec<&[u8]> = sdk_bodies.iter().map(|b| &**b).collect();
        let body = batch_body(&values, &answer.errors);
        assert_eq!(body.spare_capacity(), 0, "sized exactly");
        let text = std::str::from_utf8(&body).unwrap();
        assert_eq!(text, upstream);
        assert_eq!(json(text), json(&upstream));

        let empty = batch_body(&[], &[]);
        assert_eq!(&*empty, br#"{"SecretValues":[],"Errors":[]}"#);
        assert_eq!(empty.spare_capacity(), 0);
        let one = batch_body(&[b"{}"], &[]);
        assert_eq!(&*one, br#"{"SecretValues":[{}],"Errors":[]}"#);
        assert_eq!(one.spare_capacity(), 0);
    }

    #[test]
    fn batch_elements_render_as_get_secret_value_does() {
        let element = r#"{"CreatedDate":1.795900097E9,"Name":"MyTest","VersionStages":["AWSCURRENT"],
            "SecretString":"{\"user\":\"admin\"}","VersionId":"v1",
            "ARN":"arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-tKAqXa"}"#;
        let batch = format!(
            r#"{{"SecretValues":[{element}],"Errors":[{{"SecretId":"gone","ErrorCode":"ResourceNotFoundException","Message":"no such secret"}}],"NextToken":"t2"}}"#
        );
        let answer = BatchAnswer::parse(batch.as_bytes()).unwrap();
        let single = render(element.as_bytes()).unwrap();
        assert_eq!(answer.values.len(), 1);
        let got = &answer.values[0];
        assert_eq!(got.value.body.to_vec(), single.body.to_vec());
        assert_eq!(got.value.version_id, "v1");
        assert_eq!(got.name.as_deref(), Some("MyTest"));
        assert_eq!(
            got.arn.as_deref(),
            Some("arn:aws:secretsmanager:us-east-1:123456789012:secret:MyTest-tKAqXa")
        );
        assert_eq!(
            answer.errors,
            [BatchError {
                secret_id: "gone".into(),
                code: "ResourceNotFoundException".into(),
                message: "no such secret".into(),
            }]
        );
        assert_eq!(answer.next_token.as_deref(), Some("t2"));
        let empty = BatchAnswer::parse(b"{}").unwrap();
        assert!(empty.values.is_empty() && empty.errors.is_empty() && empty.next_token.is_none());
    }

    fn batch_value(name: &str, account: &str) -> BatchValue {
        BatchValue {
            name: Some(name.into()),
            arn: Some(format!(
                "arn:aws:secretsmanager:us-east-1:{account}:secret:{name}-AbCdEf"
            )),
            value: SecretValue {
                body: SecretBytes::new(name.as_bytes().to_vec()),
                version_id: "v".into(),
            },
        }
    }

    #[test]
    fn answers_match_by_name_or_by_arn_and_never_guess() {
        let own = batch_value("prod/db", "111111111111");
        let other = batch_value("prod/db", "222222222222");
        let api = batch_value("api", "111111111111");
        let full = "arn:aws:secretsmanager:us-east-1:222222222222:secret:prod/db-AbCdEf";
        let partial = "arn:aws:secretsmanager:us-east-1:222222222222:secret:prod/db";
        assert!(own.answers("prod/db") && !own.answers(full) && !own.answers(partial));
        assert!(other.answers(full) && other.answers(partial));
        assert!(!other.answers("arn:aws:secretsmanager:us-east-1:222222222222:secret:prod"));
        // One answer for an ID: matched. A name both answers carry: left out.
        let values = [api, other];
        assert_eq!(
            match_answers(&["api", full, "missing"], &values),
            vec![Some(0), Some(1), None]
        );
        let values = [own, batch_value("prod/db", "222222222222")];
        assert_eq!(
            match_answers(&["prod/db", partial], &values),
            vec![None, Some(1)],
            "the name is ambiguous, the ARN is not"
        );
    }

    #[test]
    fn batch_inputs_encode_as_the_api_expects() {
        let ids = BatchInput {
            secret_id_list: vec!["a".into(), "b".into()],
            ..BatchInput::default()
        };
        assert_eq!(
            serde_json::to_string(&ids).unwrap(),
            r#"{"SecretIdList":["a","b"]}"#
        );
        assert_eq!(
            serde_json::to_string(&BatchInput::tag_key("team", 20, Some("t".into()))).unwrap(),
            r#"{"Filters":[{"Key":"tag-key","Values":["team"]}],"MaxResults":20,"NextToken":"t"}"#
        );
    }

    #[test]
    fn garbage_is_a_response_error() {
        assert!(matches!(render(b"<html>"), Err(UpstreamError::Response(_))));
        // A secret of the wrong type must not end up in the error (and the log).
        let e = render(br#"{"Name":"n","SecretString":987654321}"#)
            .err()
            .unwrap();
        assert!(!e.to_string().contains("987654321"), "{e}");
    }

    #[test]
    fn version_requests_check_existence_and_stage() {
        let versions = HashMap::from([
            ("v1".to_string(), vec!["AWSPREVIOUS".to_string()]),
            ("v2".to_string(), vec![CURRENT.to_string()]),
        ]);
        let d = Description {
            version_ids_to_stages: Some(versions),
        };
        let q = |id: Option<&str>, stage: Option<&str>| SecretQuery {
            secret_id: "s".into(),
            version_id: id.map(Into::into),
            version_stage: stage.map(Into::into),
        };
        assert!(d.still_answers(&q(Some("v1"), None), "v1"));
        assert!(!d.still_answers(&q(Some("v3"), None), "v3"));
        assert!(d.still_answers(&q(None, Some("AWSPREVIOUS")), "v1"));
        assert!(!d.still_answers(&q(None, None), "v1"));
        assert!(d.still_answers(&q(None, None), "v2"));
        assert!(!d.still_answers(&q(Some("v1"), Some(CURRENT)), "v1"));
        let unknown = Description {
            version_ids_to_stages: None,
        };
        assert!(!unknown.still_answers(&q(None, None), "v2"));
    }
}
