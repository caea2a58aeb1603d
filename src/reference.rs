//! How users name a secret or a parameter outside the HTTP API (`exec
//! --env NAME=REF`, templates), in the forms they already write, and how one
//! value is picked out of what the cache serves:
//!
//! - `ID`: a secret by name or ARN, its current version;
//! - `ID#KEY`: one top-level key of a secret that is a JSON object (secret
//!   names hold no `#`);
//! - ECS's `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME:KEY:STAGE:VERSION-ID`,
//!   where the last three may be empty;
//! - `ssm:NAME`: a Parameter Store parameter (a `NAME:VERSION` or
//!   `NAME:LABEL` selector stays on the name), SecureStrings decrypted.
//!
//! Pure: a reference becomes a cache key and an optional JSON key before
//! anything is fetched, so a typo stops a start before any call to AWS.
//! [`pick`] takes one value out of a served body (also the GET routes'
//! `jsonKey`, docs/http-api.md).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use secrets_manager_agent_aws::ssm::ParameterQuery;
use secrets_manager_agent_aws::SecretQuery;
use secrets_manager_agent_cache::Key;
use secrets_manager_agent_core::secret::SecretBytes;

/// A parsed reference: what to ask the cache for, and which key of the
/// secret's JSON to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub key: Key,
    pub json_key: Option<String>,
}

/// Why a reference is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReference {
    pub reference: String,
    pub why: &'static str,
}

impl fmt::Display for BadReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a reference: {}; write ID, ID#KEY, ssm:NAME, or ECS's \
             arn:...:secret:NAME:KEY:STAGE:VERSION-ID",
            self.reference, self.why
        )
    }
}

impl std::error::Error for BadReference {}

impl Reference {
    pub fn parse(text: &str) -> Result<Reference, BadReference> {
        let bad = |why| BadReference {
            reference: text.to_string(),
            why,
        };
        if let Some(name) = text.strip_prefix("ssm:") {
            if name.is_empty() {
                return Err(bad("no parameter name after ssm:"));
            }
            return Ok(Reference {
                key: Key::Parameter {
                    query: ParameterQuery {
                        name: name.to_string(),
                        selector: None,
                        with_decryption: true,
                    },
                    role: None,
                },
                json_key: None,
            });
        }
        if text.starts_with("arn:") {
            return ecs_arn(text).ok_or_else(|| {
                bad("an ARN of 7 fields (a secret) or 10 (ECS's form) with a secret name")
            });
        }
        let (id, json_key) = match text.split_once('#') {
            Some((_, "")) => return Err(bad("an empty JSON key after #")),
            Some((id, key)) => (id, Some(key.to_string())),
            None => (text, None),
        };
        if id.is_empty() {
            return Err(bad("no secret ID"));
        }
        Ok(Reference {
            key: secret(id, None, None),
            json_key,
        })
    }
}

/// One value picked out of a served body.
pub enum Picked {
    /// A string: the secret's `SecretString`, a parameter's `Value`, or a
    /// JSON key holding a string, unescaped.
    Text(SecretBytes),
    /// A JSON key holding anything else (a number, an object...), as JSON.
    Json(SecretBytes),
}

impl fmt::Debug for Picked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value.
        match self {
            Picked::Text(v) => write!(f, "Text({} bytes)", v.len()),
            Picked::Json(v) => write!(f, "Json({} bytes)", v.len()),
        }
    }
}

/// Why no value could be picked. `Display` names the key asked for, never
/// the secret's other keys or its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    /// The secret is a JSON object without this key.
    NoKey(String),
    /// A JSON key was asked of a secret that is not a JSON object.
    NotAnObject,
    /// The secret is binary (`SecretBinary`): no text to give.
    Binary,
    /// The served body is not what the cache serves (a bug, or a changed
    /// upstream answer).
    Unreadable,
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickError::NoKey(key) => write!(f, "the secret has no JSON key {key:?}"),
            PickError::NotAnObject => {
                f.write_str("the secret is not a JSON object, so it has no JSON keys")
            }
            PickError::Binary => f.write_str(
                "the secret is binary (SecretBinary); only a SecretString can be used as text",
            ),
            PickError::Unreadable => f.write_str("the cached answer could not be read"),
        }
    }
}

impl std::error::Error for PickError {}

/// The value `key` names in `served` (the body the cache serves for it),
/// or the top-level `json_key` of it.
pub fn pick(key: &Key, served: &[u8], json_key: Option<&str>) -> Result<Picked, PickError> {
    let text = match key {
        Key::Secret { .. } => {
            #[derive(Deserialize)]
            struct Secret<'a> {
                #[serde(rename = "SecretString", borrow)]
                string: Option<Cow<'a, str>>,
                #[serde(rename = "SecretBinary")]
                binary: Option<IgnoredAny>,
            }
            let secret: Secret =
                serde_json::from_slice(served).map_err(|_| PickError::Unreadable)?;
            match (secret.string, secret.binary) {
                (Some(text), _) => text,
                (None, Some(_)) => return Err(PickError::Binary),
                (None, None) => return Err(PickError::Unreadable),
            }
        }
        Key::Parameter { .. } => {
            #[derive(Deserialize)]
            struct Answer<'a> {
                #[serde(rename = "Parameter", borrow)]
                parameter: Parameter<'a>,
            }
            #[derive(Deserialize)]
            struct Parameter<'a> {
                #[serde(rename = "Value", borrow)]
                value: Cow<'a, str>,
            }
            let answer: Answer =
                serde_json::from_slice(served).map_err(|_| PickError::Unreadable)?;
            answer.parameter.value
        }
        Key::Call { .. } => return Err(PickError::Unreadable),
    };
    // An unescaped copy is a copy of the secret: overwritten when dropped.
    let text = Zeroizing::new(text.into_owned());
    let Some(json_key) = json_key else {
        return Ok(Picked::Text(SecretBytes::new(text.as_bytes().to_vec())));
    };
    let object: HashMap<Cow<str>, &RawValue> =
        serde_json::from_str(&text).map_err(|_| PickError::NotAnObject)?;
    let raw = object
        .get(json_key)
        .ok_or_else(|| PickError::NoKey(json_key.to_string()))?
        .get();
    if raw.starts_with('"') {
        let value: Cow<str> = serde_json::from_str(raw).map_err(|_| PickError::Unreadable)?;
        let value = Zeroizing::new(value.into_owned());
        Ok(Picked::Text(SecretBytes::new(value.as_bytes().to_vec())))
    } else {
        Ok(Picked::Json(SecretBytes::new(raw.as_bytes().to_vec())))
    }
}

fn secret(id: &str, version_stage: Option<&str>, version_id: Option<&str>) -> Key {
    Key::secret(SecretQuery {
        secret_id: id.to_string(),
        version_id: version_id.map(str::to_string),
        version_stage: version_stage.map(str::to_string),
    })
}

/// `arn:P:secretsmanager:R:A:secret:NAME` (a secret's ARN, read as it is),
/// or ECS's form with `:KEY:STAGE:VERSION-ID` after it (empty fields
/// allowed; the secret is the ARN's first seven fields). A `#KEY` after a
/// plain ARN works as after a name.
fn ecs_arn(text: &str) -> Option<Reference> {
    let (arn, hash_key) = match text.split_once('#') {
        Some((arn, key)) if !key.is_empty() => (arn, Some(key)),
        Some(_) => return None,
        None => (text, None),
    };
    let fields: Vec<&str> = arn.split(':').collect();
    let is_secret = fields.len() >= 7
        && fields[2] == "secretsmanager"
        && fields[5] == "secret"
        && !fields[6].is_empty();
    if !is_secret {
        return None;
    }
    let non_empty = |s: &&str| !s.is_empty();
    match fields.len() {
        7 => Some(Reference {
            key: secret(arn, None, None),
            json_key: hash_key.map(str::to_string),
        }),
        10 if hash_key.is_none() => {
            let id = fields[..7].join(":");
            Some(Reference {
                key: secret(
                    &id,
                    Some(fields[8]).filter(non_empty),
                    Some(fields[9]).filter(non_empty),
                ),
                json_key: Some(fields[7]).filter(non_empty).map(str::to_string),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_ref(
        id: &str,
        stage: Option<&str>,
        version: Option<&str>,
        key: Option<&str>,
    ) -> Reference {
        Reference {
            key: secret(id, stage, version),
            json_key: key.map(str::to_string),
        }
    }

    #[test]
    fn every_form() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
        for (text, want) in [
            ("prod/db", secret_ref("prod/db", None, None, None)),
            (
                "prod/db#password",
                secret_ref("prod/db", None, None, Some("password")),
            ),
            (arn, secret_ref(arn, None, None, None)),
            (
                &format!("{arn}#user") as &str,
                secret_ref(arn, None, None, Some("user")),
            ),
            (
                &format!("{arn}:password::") as &str,
                secret_ref(arn, None, None, Some("password")),
            ),
            (
                &format!("{arn}:password:AWSPREVIOUS:") as &str,
                secret_ref(arn, Some("AWSPREVIOUS"), None, Some("password")),
            ),
            (
                &format!("{arn}:::v-123") as &str,
                secret_ref(arn, None, Some("v-123"), None),
            ),
            (
                &format!("{arn}::AWSCURRENT:") as &str,
                secret_ref(arn, Some("AWSCURRENT"), None, None),
            ),
        ] {
            assert_eq!(Reference::parse(text).unwrap(), want, "{text}");
        }
        let china = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:x-AbCdEf:k::";
        assert_eq!(
            Reference::parse(china).unwrap().json_key.as_deref(),
            Some("k")
        );
        let p = Reference::parse("ssm:/app/db/host:3").unwrap();
        assert_eq!(
            p.key,
            Key::Parameter {
                query: ParameterQuery {
                    name: "/app/db/host:3".into(),
                    selector: None,
                    with_decryption: true,
                },
                role: None,
            }
        );
        assert_eq!(p.json_key, None);
    }

    fn picked(
        key: &Key,
        served: &str,
        json_key: Option<&str>,
    ) -> Result<(bool, String), PickError> {
        pick(key, served.as_bytes(), json_key).map(|p| match p {
            Picked::Text(v) => (true, String::from_utf8(v.to_vec()).unwrap()),
            Picked::Json(v) => (false, String::from_utf8(v.to_vec()).unwrap()),
        })
    }

    #[test]
    fn values_and_json_keys() {
        let key = secret("s", None, None);
        let served = r#"{"ARN":"a","Name":"s","SecretString":"{\"user\":\"admin\",\"pass\":\"p\\\"w\",\"port\":5432,\"tags\":{\"a\":[1]}}","CreatedDate":"1"}"#;
        assert_eq!(
            picked(&key, served, None).unwrap(),
            (
                true,
                r#"{"user":"admin","pass":"p\"w","port":5432,"tags":{"a":[1]}}"#.into()
            )
        );
        assert_eq!(
            picked(&key, served, Some("pass")).unwrap(),
            (true, "p\"w".into())
        );
        assert_eq!(
            picked(&key, served, Some("port")).unwrap(),
            (false, "5432".into())
        );
        assert_eq!(
            picked(&key, served, Some("tags")).unwrap(),
            (false, r#"{"a":[1]}"#.into())
        );
        let missing = picked(&key, served, Some("nope")).unwrap_err();
        assert_eq!(missing, PickError::NoKey("nope".into()));
        assert!(!missing.to_string().contains("admin") && !missing.to_string().contains("user"));
        let plain = r#"{"Name":"s","SecretString":"hunter2"}"#;
        assert_eq!(picked(&key, plain, None).unwrap(), (true, "hunter2".into()));
        assert_eq!(
            picked(&key, plain, Some("k")).unwrap_err(),
            PickError::NotAnObject
        );
        let list = r#"{"Name":"s","SecretString":"[1,2]"}"#;
        assert_eq!(
            picked(&key, list, Some("k")).unwrap_err(),
            PickError::NotAnObject
        );
        let binary = r#"{"Name":"s","SecretBinary":"AAEC"}"#;
        assert_eq!(picked(&key, binary, None).unwrap_err(), PickError::Binary);
        assert_eq!(
            picked(&key, "garbage", None).unwrap_err(),
            PickError::Unreadable
        );
        let parameter = Reference::parse("ssm:/p").unwrap().key;
        let served = r#"{"Parameter":{"Name":"/p","Type":"SecureString","Value":"v\n1","Version":1},"ResultMetadata":{}}"#;
        assert_eq!(
            picked(&parameter, served, None).unwrap(),
            (true, "v\n1".into())
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for bad in [
            "",
            "#key",
            "prod/db#",
            "ssm:",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x:k",
            "arn:aws:ssm:us-east-1:123456789012:parameter/x",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:x:k::#j",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(e.to_string().contains("is not a reference"), "{bad}: {e}");
        }
    }
}
