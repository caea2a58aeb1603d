//! The SDK protocol's answers, as the services send them: the JSON body with
//! `Content-Type: application/x-amz-json-1.1` and an `x-amzn-RequestId`,
//! and errors with the status, `{"__type","message"}` and the
//! `X-Amzn-Errortype` header that SDKs pick the exception from.
//!
//! A cached secret or parameter is kept as the GET routes serve it; here it
//! becomes the service's own answer again (`CreatedDate` a number, no
//! `ResultMetadata`), and several become one batch answer. Bodies that hold
//! values are `SecretBytes`, sized once and overwritten when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use super::super::{error_body, error_parts};
use secrets_manager_agent_aws::secrets_manager::{self, BatchError};
use secrets_manager_agent_aws::{ssm, UpstreamError};
use secrets_manager_agent_cache::{Key, Served};
use secrets_manager_agent_core::metrics;
use secrets_manager_agent_http::http::{Response, ResponseBody};

pub const AWS_JSON: &str = "application/x-amz-json-1.1";

/// A response in the SDK protocol: `body` with the request ID, and the
/// error type for an error.
pub fn aws_json(status: u16, body: ResponseBody, error_type: Option<&str>) -> Response {
    let mut headers = Vec::with_capacity(2);
    headers.push(("x-amzn-RequestId", request_id()));
    if let Some(code) = error_type {
        // A code comes from AWS's answer (or whatever answered at its
        // endpoint): only the characters codes are made of reach a header.
        let code: String = code
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '#' | '-'))
            .take(128)
            .collect();
        headers.push(("X-Amzn-Errortype", code));
    }
    let mut response = Response::new(status, AWS_JSON, body);
    response.headers = headers;
    response
}

/// An error in the SDK protocol.
pub fn aws_error(status: u16, code: &str, message: &str) -> Response {
    aws_json(
        status,
        ResponseBody::Owned(error_body(code, Some(message))),
        Some(code),
    )
}

/// A failed upstream call as the SDK protocol tells it: AWS's own answers
/// keep their status and code; the agent's own failures get the same status
/// and code as on the GET routes (a 5xx an SDK retries).
fn upstream(e: &UpstreamError) -> Response {
    let (status, code, message) = error_parts(e);
    // SDKs show the message: AWS's words for a failure the agent does not
    // describe (its details stay in the agent's log).
    let message = message.as_deref().unwrap_or(
        "The request processing has failed because of an unknown error, exception or failure.",
    );
    aws_json(
        status,
        ResponseBody::Owned(error_body(code, Some(message))),
        Some(code),
    )
}

/// A unique ID per answer, shaped as AWS's (8-4-4-4-12 hex digits): a
/// random prefix for this process and a counter. Written by hand: `format!`
/// was a fifth of an SDK hit's instructions.
fn request_id() -> String {
    static PREFIX: OnceLock<u128> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        // Two draws of 52 random bits make the 80 the prefix takes.
        let draw = || (secrets_manager_agent_core::random::unit() * (1u64 << 52) as f64) as u128;
        ((draw() << 40) ^ draw()) & ((1 << 80) - 1)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 20 hex digits of prefix, 12 of counter, dashes where AWS puts them.
    let digits = (prefix << 48) | u128::from(n & 0xffff_ffff_ffff);
    let mut out = [0u8; 36];
    let mut shift = 128;
    for (at, byte) in out.iter_mut().enumerate() {
        if matches!(at, 8 | 13 | 18 | 23) {
            *byte = b'-';
            continue;
        }
        shift -= 4;
        *byte = b"0123456789abcdef"[((digits >> shift) & 0xf) as usize];
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The answer to a request for one key: the service's own body.
pub fn single(key: &Key, served: Served, from_memory: bool, started: Instant) -> Response {
    metrics::answer(from_memory, started.elapsed());
    match served {
        Ok(body) => {
            let body = match key {
                Key::Secret { .. } => {
                    ResponseBody::Shared(Arc::new(secrets_manager::sdk_body(&body)))
                }
                Key::Parameter { .. } => ResponseBody::Shared(Arc::new(ssm::sdk_body(&body))),
                // Kept as AWS sent it.
                Key::Call { .. } => ResponseBody::Shared(body),
            };
            aws_json(200, body, None)
        }
        Err(e) => {
            log::warn!("SDK request for {key} failed: {e}");
            upstream(&e)
        }
    }
}

/// BatchGetSecretValue by IDs: the values found, and an `Errors` entry for
/// each ID AWS refused. A failure that is not AWS's answer about one secret
/// (a timeout, no credentials) fails the whole call, as it would have.
pub fn secrets(results: Vec<(Key, Served)>) -> Response {
    let mut values = Vec::with_capacity(results.len());
    let mut errors = Vec::new();
    for (key, served) in results {
        let Key::Secret { query, .. } = &key else {
            continue;
        };
        match served {
            Ok(body) => values.push(secrets_manager::sdk_body(&body)),
            Err(UpstreamError::Service { code, message, .. }) => errors.push(BatchError {
                secret_id: query.secret_id.clone(),
                code,
                message,
            }),
            Err(e) => {
                log::warn!("SDK BatchGetSecretValue for {key} failed: {e}");
                return upstream(&e);
            }
        }
    }
    let values: Vec<&[u8]> = values.iter().map(|v| &v[..]).collect();
    let body = secrets_manager::batch_body(&values, &errors);
    aws_json(200, ResponseBody::Shared(Arc::new(body)), None)
}

/// GetParameters: the parameters found, and the names Parameter Store does
/// not have in `InvalidParameters` (a 200, as the service answers).
pub fn parameters(results: Vec<(Key, Served)>) -> Response {
    let mut found = Vec::with_capacity(results.len());
    let mut invalid = Vec::new();
    for (key, served) in &results {
        let Key::Parameter { query, .. } = key else {
            continue;
        };
        match served {
            Ok(body) => found.push(&body[..]),
            Err(UpstreamError::Service { code, .. }) if code == "ParameterNotFound" => {
                invalid.push(query.name.as_str())
            }
            Err(e) => {
                log::warn!("SDK GetParameters for {key} failed: {e}");
                return upstream(e);
            }
        }
    }
    let body = ssm::parameters_body(&found, &invalid);
    aws_json(200, ResponseBody::Shared(Arc::new(body)), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_code_cannot_break_the_head() {
        let response = aws_error(400, "Bad\r\nSet-Cookie: x=1", "m");
        let header = response
            .headers
            .iter()
            .find(|(n, _)| *n == "X-Amzn-Errortype")
            .map(|(_, v)| v.as_str());
        assert_eq!(header, Some("BadSet-Cookie:x1"), "no CR, LF or space");
        let ok = aws_error(400, "com.amazonaws#ResourceNotFoundException:x", "m");
        assert!(ok
            .headers
            .iter()
            .any(|(_, v)| v == "com.amazonaws#ResourceNotFoundException:x"));
    }

    #[test]
    fn request_ids_differ() {
        let (a, b) = (request_id(), request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
    }
}
