//! Read calls passed through to AWS: the operations that the agent's
//! SDK-protocol surface (an unmodified SDK whose endpoint is the agent)
//! serves from the cache but has no rendering of its own for
//! (DescribeSecret, BatchGetSecretValue with filters, GetParametersByPath).
//!
//! The cache keys such a call by [`ReadCall`] and its input, which the
//! surface has already turned into canonical JSON. That input is the body of
//! the call, sent as it is; AWS's answer comes back byte for byte, because it
//! is served to the SDK exactly as AWS sent it. The only check is that it is
//! one JSON object (a proxy's HTML page is no answer to pass on).
//!
//! Inputs hold IDs, paths, tag filters and page tokens, never values, so they
//! may be logged. Answers may hold values (BatchGetSecretValue's
//! `SecretValues`, GetParametersByPath's decrypted SecureStrings): they stay
//! in `SecretBytes`, sized exactly, and are never parsed into strings.

use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::client::{Client, OnThrottle};
use super::error::{json_error, UpstreamError};
use super::secrets_manager::SecretValue;
use secrets_manager_agent_core::secret::SecretBytes;

/// A read operation served by passthrough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadCall {
    DescribeSecret,
    BatchGetSecretValue,
    GetParametersByPath,
}

/// The service a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    SecretsManager,
    Ssm,
}

impl Service {
    /// The name SigV4 signs for (the credential scope's service).
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::SecretsManager => "secretsmanager",
            Service::Ssm => "ssm",
        }
    }
}

impl ReadCall {
    /// Every read call, for the surface's table of targets.
    pub const ALL: [ReadCall; 3] = [
        ReadCall::DescribeSecret,
        ReadCall::BatchGetSecretValue,
        ReadCall::GetParametersByPath,
    ];

    pub fn service(self) -> Service {
        match self {
            ReadCall::DescribeSecret | ReadCall::BatchGetSecretValue => Service::SecretsManager,
            ReadCall::GetParametersByPath => Service::Ssm,
        }
    }

    /// `secretsmanager` or `ssm`.
    pub fn signing_name(self) -> &'static str {
        self.service().signing_name()
    }

    /// The operation's name (`DescribeSecret`), as the metrics and log lines
    /// name it.
    pub fn operation(self) -> &'static str {
        match self {
            ReadCall::DescribeSecret => "DescribeSecret",
            ReadCall::BatchGetSecretValue => "BatchGetSecretValue",
            ReadCall::GetParametersByPath => "GetParametersByPath",
        }
    }

    /// The `X-Amz-Target` header of the call (`secretsmanager.DescribeSecret`).
    pub fn target(self) -> &'static str {
        match self {
            ReadCall::DescribeSecret => "secretsmanager.DescribeSecret",
            ReadCall::BatchGetSecretValue => "secretsmanager.BatchGetSecretValue",
            ReadCall::GetParametersByPath => "AmazonSSM.GetParametersByPath",
        }
    }

    /// The call an `X-Amz-Target` names, if it is one of these (exact
    /// match, as the SDKs send it).
    pub fn from_target(target: &str) -> Option<ReadCall> {
        ReadCall::ALL
            .into_iter()
            .find(|call| call.target() == target)
    }
}

/// The operation's name.
impl fmt::Display for ReadCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.operation())
    }
}

/// Sends `call` with `input` (JSON) as its body to `service`'s `endpoint`,
/// and returns AWS's answer as it came ([`answer`]). A call of another
/// service is refused: it would be signed for the wrong one.
pub(crate) fn read(
    client: &Client,
    endpoint: &str,
    service: Service,
    call: ReadCall,
    input: &str,
) -> Result<SecretValue, UpstreamError> {
    if call.service() != service {
        return Err(UpstreamError::Internal(format!(
            "{call} is not a call of {}",
            service.signing_name()
        )));
    }
    let reply = SecretBytes::new(client.json_call_raw(
        OnThrottle::Retry,
        call.signing_name(),
        endpoint,
        call.target(),
        input,
        input.as_bytes(),
    )?);
    answer(call, &reply)
}

/// AWS's answer to `call`, checked to be one JSON object and copied into a
/// buffer of exactly its size (the cache keeps no spare bytes; the caller
/// overwrites the reply it read). `version_id` is empty: these answers have
/// no version to revalidate. Public for the fuzz targets.
pub fn answer(call: ReadCall, reply: &[u8]) -> Result<SecretValue, UpstreamError> {
    let unusable = |why: String| UpstreamError::Response(format!("{call} answer: {why}"));
    // UTF-8 checked for the whole answer, not only for what serde reads:
    // it skips the members unread.
    let text = std::str::from_utf8(reply).map_err(|_| unusable("not UTF-8".into()))?;
    serde_json::from_str::<Object>(text).map_err(|e| unusable(json_error(&e)))?;
    Ok(SecretValue {
        body: SecretBytes::new(reply.to_vec()),
        version_id: String::new(),
    })
}

/// One JSON object, its members skipped unread (nothing of a secret is
/// copied out of the answer to check it).
struct Object;

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        d.deserialize_map(ObjectVisitor)
    }
}

struct ObjectVisitor;

impl<'de> Visitor<'de> for ObjectVisitor {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_names_its_service_and_target() {
        let table: Vec<_> = ReadCall::ALL
            .iter()
            .map(|c| (c.operation(), c.signing_name(), c.target()))
            .collect();
        assert_eq!(
            table,
            [
                (
                    "DescribeSecret",
                    "secretsmanager",
                    "secretsmanager.DescribeSecret"
                ),
                (
                    "BatchGetSecretValue",
                    "secretsmanager",
                    "secretsmanager.BatchGetSecretValue"
                ),
                (
                    "GetParametersByPath",
                    "ssm",
                    "AmazonSSM.GetParametersByPath"
                ),
            ]
        );
        for call in ReadCall::ALL {
            assert_eq!(ReadCall::from_target(call.target()), Some(call));
            assert!(call.target().ends_with(&format!(".{call}")));
        }
        for other in [
            "secretsmanager.GetSecretValue",
            "AmazonSSM.GetParameter",
            "secretsmanager.describesecret",
            "AmazonSSM.DescribeSecret",
            "DescribeSecret",
            "",
        ] {
            assert_eq!(ReadCall::from_target(other), None, "{other}");
        }
    }

    #[test]
    fn answers_are_kept_byte_for_byte() {
        // Whitespace, member order, number spelling, escapes: all as sent.
        let reply = br#"{ "SecretValues" : [{"Name":"a","SecretString":"s\u00e9cr\"t","CreatedDate":1.7E9}],
            "Errors":[], "NextToken":null, "Future":{"x":[1e999]} }"#;
        let value = answer(ReadCall::BatchGetSecretValue, reply).unwrap();
        assert_eq!(&*value.body, &reply[..]);
        assert_eq!(value.version_id, "");
        assert_eq!(
            value.body.spare_capacity(),
            0,
            "the cache keeps no spare bytes"
        );
        assert_eq!(
            &*answer(ReadCall::DescribeSecret, b"{}").unwrap().body,
            b"{}"
        );
    }

    #[test]
    fn only_one_json_object_is_an_answer() {
        for reply in [
            &b"<html>bad gateway</html>"[..],
            b"",
            b"[]",
            b"\"s3cret\"",
            b"{\"Parameters\":[]} {}",
            b"{\"Parameters\":[}",
            b"{\"Parameters\":[\"\xff\"]}",
            b"{\"Parameters\":[{\"Value\":\"s3cret\x01\"}]}",
        ] {
            match answer(ReadCall::GetParametersByPath, reply) {
                Err(UpstreamError::Response(why)) => {
                    assert!(why.starts_with("GetParametersByPath answer: "), "{why}");
                    assert!(
                        !why.contains("s3cret"),
                        "the error quotes the answer: {why}"
                    );
                }
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(reply)),
            }
        }
    }
}
