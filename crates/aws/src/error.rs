//! What can go wrong talking to AWS: the error every AWS call returns, which
//! failures are worth a retry, and reading AWS's error answers (JSON, XML, or
//! whatever a proxy sends). How a failure is told to the agent's own client
//! is the HTTP surface's decision (`api`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamError {
    /// AWS answered with a non-2xx status.
    Service {
        status: u16,
        code: String,
        message: String,
        /// The server's `x-amz-retry-after` hint: how long to wait before
        /// trying again.
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout (connect or whole call).
    Timeout,
    /// Could not connect, or the connection broke while reading.
    Connection(String),
    /// The TLS handshake failed (e.g. an unknown issuer): answered like a
    /// connection failure, but not worth a retry.
    Tls(String),
    /// An answer arrived that could not be understood.
    Response(String),
    /// An HTTP status no AWS API answers with (a redirect, 1xx, 304, an
    /// unknown 2xx, a status over 599): never followed, never passed on.
    UnexpectedStatus(u16),
    /// No credentials to sign with.
    Credentials(String),
    /// Anything else (e.g. the request could not be signed).
    Internal(String),
    /// The agent refused the request before calling AWS (a role beyond
    /// `max_roles`): told to the client as `400` with this code and message.
    Refused { code: &'static str, message: String },
}

impl UpstreamError {
    /// An AWS error answer without a retry hint.
    pub fn service(status: u16, code: &str, message: &str) -> UpstreamError {
        UpstreamError::Service {
            status,
            code: code.to_string(),
            message: message.to_string(),
            retry_after: None,
        }
    }

    /// How long the server asked us to wait before a retry, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            UpstreamError::Service { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The upstream refused the call's rate (a throttling code or 429): other
    /// operations, with quotas of their own, may still go through.
    pub fn is_throttling(&self) -> bool {
        match self {
            UpstreamError::Service { status, code, .. } => {
                *status == 429 || THROTTLING_CODES.contains(&code.as_str())
            }
            _ => false,
        }
    }

    /// Failures that a later attempt may not see: the ones worth a retry, and the
    /// ones for which a cached value may be served instead.
    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Timeout | UpstreamError::Connection(_) => true,
            UpstreamError::Service { status, code, .. } => {
                *status >= 500
                    || *status == 429
                    || TRANSIENT_CODES.contains(&code.as_str())
                    || THROTTLING_CODES.contains(&code.as_str())
            }
            UpstreamError::Response(_)
            | UpstreamError::UnexpectedStatus(_)
            | UpstreamError::Tls(_)
            | UpstreamError::Credentials(_)
            | UpstreamError::Internal(_)
            | UpstreamError::Refused { .. } => false,
        }
    }
}

const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
    "InternalFailure",
    "InternalServiceError",
    "ServiceUnavailable",
];

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
];

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Service {
                status,
                code,
                message,
                ..
            } => write!(f, "AWS answered {status} {code}: {message}"),
            UpstreamError::Timeout => f.write_str("AWS did not answer in time"),
            UpstreamError::Connection(why) => write!(f, "connection to AWS failed: {why}"),
            UpstreamError::Tls(why) => write!(
                f,
                "TLS handshake with AWS failed: {why} (behind a TLS-inspecting proxy? set AWS_CA_BUNDLE)"
            ),
            UpstreamError::Response(why) => write!(f, "unreadable answer from AWS: {why}"),
            UpstreamError::UnexpectedStatus(status) => write!(
                f,
                "the endpoint answered HTTP status {status}, which no AWS API sends (a redirect or a misbehaving proxy?); it is not followed"
            ),
            UpstreamError::Credentials(why) => f.write_str(why),
            UpstreamError::Internal(why) => write!(f, "internal error: {why}"),
            UpstreamError::Refused { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for UpstreamError {}

/// The members of a JSON error document that say what went wrong: the AWS
/// JSON protocols send `__type` and `message`, other services and proxies
/// `code`, `Code`, `Message` or `errorMessage`. Each is kept as written, so
/// that a member of another type is skipped (as if absent) rather than making
/// the whole document unreadable.
#[derive(Deserialize, Default)]
struct JsonError<'a> {
    #[serde(rename = "__type", borrow)]
    type_name: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(rename = "Code", borrow)]
    code_capitalised: Option<&'a RawValue>,
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(rename = "Message", borrow)]
    message_capitalised: Option<&'a RawValue>,
    #[serde(rename = "errorMessage", borrow)]
    error_message: Option<&'a RawValue>,
}

/// The first of `members` that is a JSON string, unescaped.
fn first_string(members: &[Option<&RawValue>]) -> Option<String> {
    members
        .iter()
        .flatten()
        .find_map(|raw| serde_json::from_str(raw.get()).ok())
}

/// Builds a `Service` error from a non-2xx answer. JSON bodies (the AWS JSON
/// protocols) give `__type`/`message`; XML bodies (STS, proxies, some emulators)
/// give `<Code>`/`<Message>`; anything else keeps the status as `UnknownError`.
pub fn service_error(
    status: u16,
    error_type_header: Option<&str>,
    retry_after: Option<Duration>,
    body: &[u8],
) -> UpstreamError {
    // Not one JSON object (a duplicated member included): no JSON members.
    let json: JsonError = serde_json::from_slice(body).unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    let code = error_type_header
        .map(str::to_string)
        .or_else(|| first_string(&[json.type_name, json.code, json.code_capitalised]))
        .or_else(|| xml_element(&text, "Code"))
        .map(|c| clean_code(&c))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "UnknownError".to_string());
    let message = first_string(&[json.message, json.message_capitalised, json.error_message])
        .or_else(|| xml_element(&text, "Message"))
        .unwrap_or_default();
    UpstreamError::Service {
        status,
        code,
        message,
        retry_after,
    }
}

/// Where a JSON document went wrong, without serde's detail: its messages
/// quote the offending value ("invalid type: integer `123`"), and in a secret
/// or credentials answer that value may be the secret.
pub fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of an unexpected shape",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} (line {}, column {})", e.line(), e.column())
}

/// `aws.protocol#ResourceNotFoundException:http://...` → `ResourceNotFoundException`.
fn clean_code(raw: &str) -> String {
    let after_hash = raw.rsplit('#').next().unwrap_or(raw);
    after_hash
        .split(':')
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The text of the first `<name>...</name>`, entity-decoded. Enough for AWS's
/// flat error documents; not a general XML parser.
pub fn xml_element(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(xml_unescape(text[start..start + len].trim()))
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_members_of_other_types_are_skipped() {
        let e = service_error(
            400,
            None,
            None,
            br#"{"__type":7,"code":"Bad\"Thing","message":null,"Message":"m\u00e9","x":[1e999]}"#,
        );
        assert_eq!(e, UpstreamError::service(400, "Bad\"Thing", "m\u{e9}"));
        // Not one JSON object: the XML rule, then `UnknownError`.
        for body in [
            "[1]",
            "\"a\"",
            "{\"code\":\"A\"} x",
            "{\"code\":",
            "{\"code\":\"A\",\"code\":\"B\"}",
            "",
        ] {
            assert_eq!(
                service_error(500, None, None, body.as_bytes()),
                UpstreamError::service(500, "UnknownError", ""),
                "{body}"
            );
        }
    }

    #[test]
    fn json_errors_keep_status_code_and_message() {
        let e = service_error(
            400,
            None,
            None,
            br#"{"__type":"com.amazonaws#ResourceNotFoundException","message":"Secrets Manager can't find \"x\""}"#,
        );
        assert_eq!(
            e,
            UpstreamError::service(
                400,
                "ResourceNotFoundException",
                "Secrets Manager can't find \"x\""
            )
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn header_code_wins_and_suffix_is_dropped() {
        let e = service_error(
            400,
            Some("ThrottlingException:http://internal"),
            None,
            br#"{"Message":"slow down"}"#,
        );
        assert_eq!(
            e,
            UpstreamError::service(400, "ThrottlingException", "slow down")
        );
        assert!(e.is_transient() && e.is_throttling());
        assert!(UpstreamError::service(429, "", "").is_throttling());
        assert!(!UpstreamError::service(503, "ServiceUnavailable", "").is_throttling());
        assert!(!UpstreamError::Timeout.is_throttling());
    }

    #[test]
    fn xml_and_html_bodies_still_give_a_code() {
        let e = service_error(
            403,
            None,
            None,
            b"<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code><Message>a &amp; b</Message></Error></ErrorResponse>",
        );
        assert_eq!(
            e,
            UpstreamError::service(403, "SignatureDoesNotMatch", "a & b")
        );

        let e = service_error(502, None, None, b"<html><body>Bad gateway</body></html>");
        assert_eq!(e, UpstreamError::service(502, "UnknownError", ""));
        assert!(e.is_transient());
    }

    #[test]
    fn the_retry_hint_is_kept() {
        let hint = Some(Duration::from_millis(1500));
        let e = service_error(503, None, hint, b"{}");
        assert_eq!(e.retry_after(), hint);
        assert_eq!(UpstreamError::Timeout.retry_after(), None);
    }

    #[test]
    fn json_errors_never_quote_values() {
        let e = serde_json::from_str::<Vec<String>>(r#"[12345678]"#).unwrap_err();
        assert!(e.to_string().contains("12345678"), "serde quotes it");
        let ours = json_error(&e);
        assert!(!ours.contains("12345678"), "{ours}");
        assert!(ours.contains("unexpected shape"), "{ours}");
    }
}
