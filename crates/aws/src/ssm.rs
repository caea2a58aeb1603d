//! Parameter Store's GetParameter over the JSON 1.1 protocol: the request body
//! (a version or label rides on the name as SSM's `NAME:SELECTOR`), and the
//! answer turned into the body AWS's Parameters and Secrets Lambda Extension
//! serves: GetParameter's own JSON with an empty `ResultMetadata` added.
//!
//! The `Parameter` object is passed on byte for byte (a borrowed raw JSON
//! value), so every field AWS sends today or adds later reaches the client,
//! and a decrypted SecureString exists only in the reply buffer and the
//! served body, both overwritten when dropped. For an SDK client the served
//! body goes back to GetParameter's own answer, `ResultMetadata` dropped
//! ([`sdk_body`]). Parameter Store calls that an SDK client makes and the
//! agent passes through as they are go out here too (`read`, see
//! `passthrough`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::{Client, OnThrottle};
use super::error::{json_error, UpstreamError};
use super::passthrough::{self, ReadCall, Service};
use super::secrets_manager::SecretValue;
use secrets_manager_agent_core::secret::SecretBytes;

/// What a client asked for: the cache key and the GetParameter input.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParameterQuery {
    /// A name (`/app/db/host`), an ARN, or
    /// `/aws/reference/secretsmanager/ID` (a secret read through SSM).
    pub name: String,
    pub selector: Option<Selector>,
    pub with_decryption: bool,
}

/// Which version of a parameter: by number or by label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    Version(u64),
    Label(String),
}

impl ParameterQuery {
    /// GetParameter's `Name`: the name with its selector appended.
    fn selected_name(&self) -> String {
        match &self.selector {
            None => self.name.clone(),
            Some(Selector::Version(v)) => format!("{}:{v}", self.name),
            Some(Selector::Label(l)) => format!("{}:{l}", self.name),
        }
    }
}

/// Parameter Store as one identity: a signed client and its endpoint.
pub struct Ssm {
    client: Arc<Client>,
    endpoint: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Input<'a> {
    name: &'a str,
    with_decryption: bool,
}

impl Ssm {
    pub fn new(client: Arc<Client>, endpoint: String) -> Ssm {
        Ssm { client, endpoint }
    }

    pub fn get_parameter(&self, query: &ParameterQuery) -> Result<SecretValue, UpstreamError> {
        let name = query.selected_name();
        let input = Input {
            name: &name,
            with_decryption: query.with_decryption,
        };
        let reply = SecretBytes::new(self.client.json_call(
            OnThrottle::Retry,
            "ssm",
            &self.endpoint,
            "AmazonSSM.GetParameter",
            &name,
            &input,
        )?);
        render(&reply)
    }

    /// A read call passed through (`passthrough`): `input` (JSON) as its
    /// body, AWS's answer as it came. A Secrets Manager call is refused.
    pub fn read(&self, call: ReadCall, input: &str) -> Result<SecretValue, UpstreamError> {
        passthrough::read(&self.client, &self.endpoint, Service::Ssm, call, input)
    }
}

#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(rename = "Parameter", borrow)]
    parameter: &'a RawValue,
}

/// The one field the cache needs; the rest is passed on unread.
#[derive(Deserialize)]
struct Version {
    #[serde(rename = "Version")]
    version: Option<u64>,
}

const HEAD: &[u8] = br#"{"Parameter":"#;
const TAIL: &[u8] = br#","ResultMetadata":{}}"#;

/// GetParameter's answer → the body served, and the parameter's version as
/// the cache's version ID. Public for the fuzz targets.
pub fn render(reply: &[u8]) -> Result<SecretValue, UpstreamError> {
    let unusable = |e: serde_json::Error| {
        UpstreamError::Response(format!("GetParameter answer: {}", json_error(&e)))
    };
    let out: Reply = serde_json::from_slice(reply).map_err(unusable)?;
    let raw = out.parameter.get().as_bytes();
    let version: Version = serde_json::from_slice(raw).map_err(unusable)?;
    // Sized exactly, up front: no reallocation leaves a copy behind.
    let mut body = Vec::with_capacity(HEAD.len() + raw.len() + TAIL.len());
    body.extend_from_slice(HEAD);
    body.extend_from_slice(raw);
    body.extend_from_slice(TAIL);
    Ok(SecretValue {
        body: SecretBytes::new(body),
        version_id: version.version.map(|v| v.to_string()).unwrap_or_default(),
    })
}

/// A served body (`render`'s) → GetParameter's answer as AWS sends it, for
/// SDK clients: `{"Parameter":{..}}`, the `Parameter` as it came, without
/// the `ResultMetadata` that AWS's extension adds. A body not of `render`'s
/// shape is returned as it is. Sized exactly: the output holds the value.
pub fn sdk_body(served: &[u8]) -> SecretBytes {
    let Some(head) = served
        .strip_suffix(TAIL)
        .filter(|head| head.starts_with(HEAD))
    else {
        return SecretBytes::new(served.to_vec());
    };
    let mut body = Vec::with_capacity(head.len() + 1);
    body.extend_from_slice(head);
    body.push(b'}');
    SecretBytes::new(body)
}

/// GetParameters' answer for an SDK client, assembled from the cache:
/// `{"Parameters":[..],"InvalidParameters":[..]}`, `found` being served
/// bodies ([`render`]'s; their `Parameter` objects are written as they are)
/// and `invalid` the names Parameter Store does not have. Sized exactly: it
/// holds the values.
pub fn parameters_body(found: &[&[u8]], invalid: &[&str]) -> SecretBytes {
    const HEAD: &[u8] = br#"{"Parameters":["#;
    const MIDDLE: &[u8] = br#"],"InvalidParameters":"#;
    let objects: Vec<&[u8]> = found
        .iter()
        .map(|served| {
            served
                .strip_prefix(self::HEAD)
                .and_then(|rest| rest.strip_suffix(TAIL))
                .unwrap_or(served)
        })
        .collect();
    // Names only: encoding strings cannot fail.
    let invalid = serde_json::to_vec(invalid).unwrap_or_else(|_| b"[]".to_vec());
    super::assemble::object(HEAD, &objects, MIDDLE, &invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_parameters_answer_from_served_bodies() {
        let a = render(br#"{"Parameter":{"Name":"/a","Value":"x\"y","Version":2}}"#).unwrap();
        let b = render(br#"{"Parameter":{"Name":"/b","Value":"z","Version":1}}"#).unwrap();
        let body = parameters_body(&[&a.body, &b.body], &["/missing", "/q\"uote"]);
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["Parameters"][0]["Value"], "x\"y");
        assert_eq!(doc["Parameters"][1]["Name"], "/b");
        assert_eq!(doc["InvalidParameters"][1], "/q\"uote");
        assert_eq!(
            &parameters_body(&[], &[])[..],
            br#"{"Parameters":[],"InvalidParameters":[]}"#
        );
    }

    fn query(selector: Option<Selector>) -> ParameterQuery {
        ParameterQuery {
            name: "/app/db".into(),
            selector,
            with_decryption: false,
        }
    }

    #[test]
    fn the_selector_rides_on_the_name() {
        assert_eq!(query(None).selected_name(), "/app/db");
        assert_eq!(
            query(Some(Selector::Version(3))).selected_name(),
            "/app/db:3"
        );
        assert_eq!(
            query(Some(Selector::Label("prod".into()))).selected_name(),
            "/app/db:prod"
        );
        let input = Input {
            name: "/app/db:3",
            with_decryption: true,
        };
        assert_eq!(
            serde_json::to_string(&input).unwrap(),
            r#"{"Name":"/app/db:3","WithDecryption":true}"#
        );
    }

    #[test]
    fn every_field_is_passed_on_as_sent() {
        let reply = br#"{"Parameter":{"ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db","DataType":"text","LastModifiedDate":1.7E9,"Name":"/app/db","Selector":":3","Type":"SecureString","Value":"s3cr\"t","Version":3,"Future":[1,{"x":null}]}}"#;
        let value = render(reply).unwrap();
        assert_eq!(value.version_id, "3");
        let body = std::str::from_utf8(&value.body).unwrap();
        assert_eq!(
            body,
            r#"{"Parameter":{"ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db","DataType":"text","LastModifiedDate":1.7E9,"Name":"/app/db","Selector":":3","Type":"SecureString","Value":"s3cr\"t","Version":3,"Future":[1,{"x":null}]},"ResultMetadata":{}}"#
        );
        let doc: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(doc["Parameter"]["Value"], "s3cr\"t");
    }

    #[test]
    fn sdk_bodies_are_get_parameters_answer() {
        let reply = br#"{"Parameter":{"ARN":"arn:aws:ssm:us-east-1:123456789012:parameter/app/db","Name":"/app/db","Type":"SecureString","Value":"s3cr\"t,\"ResultMetadata\":{}}","Version":3}}"#;
        let served = render(reply).unwrap();
        let body = sdk_body(&served.body);
        assert_eq!(&*body, &reply[..]);
        assert_eq!(body.spare_capacity(), 0, "sized exactly");
        // Not `render`'s shape: left as it is.
        for other in [
            &b"{}"[..],
            br#"{"ResultMetadata":{}}"#,
            br#"{"Other":1,"ResultMetadata":{}}"#,
            b"",
        ] {
            assert_eq!(&*sdk_body(other), other);
        }
    }

    #[test]
    fn unusable_answers_are_response_errors() {
        for reply in [
            &b"not json"[..],
            b"{}",
            b"[1]",
            br#"{"Parameter":"text"}"#,
            br#"{"Parameter":{"Version":"three"}}"#,
            br#"{"Parameter":{"Version":1}"#,
        ] {
            match render(reply) {
                Err(UpstreamError::Response(why)) => {
                    assert!(why.starts_with("GetParameter answer: "), "{why}")
                }
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(reply)),
            }
        }
        let no_version = render(br#"{"Parameter":{"Name":"n"}}"#).unwrap();
        assert_eq!(no_version.version_id, "");
    }
}
