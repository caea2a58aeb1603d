//! What a GET route asks for: the cache key (a secret with its version, or a
//! parameter with its selector, either maybe as another role) and whether to
//! skip the cache, read from the query (and for `{path_prefix}ID`, the path).
//! Every refusal is the `400` with the plain-text reason AWS's agent gives,
//! so a request that is not understood never reaches the cache.

use std::borrow::Cow;

use super::{owned_text, text};
use secrets_manager_agent_aws::arn::check_role_arn;
use secrets_manager_agent_aws::ssm::{ParameterQuery, Selector};
use secrets_manager_agent_aws::SecretQuery;
use secrets_manager_agent_cache::Key;
use secrets_manager_agent_core::query::{percent_decode, query_pairs};
use secrets_manager_agent_http::http::Response;

/// What a GET request asks for.
#[derive(Debug)]
pub struct Asked {
    pub key: Key,
    /// `refreshNow`: skip the cache.
    pub refresh_now: bool,
    /// `jsonKey`: one top-level key of a secret that is a JSON object.
    pub json_key: Option<String>,
}

pub type Parsed = Result<Asked, Response>;

/// `/secretsmanager/get?secretId=...`
pub fn parse_get(query: &str) -> Parsed {
    let mut secret_id = None;
    let options = parse_options(query, |key, value| match key {
        "secretId" => {
            secret_id = Some(value);
            true
        }
        _ => false,
    })?;
    let secret_id = secret_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| text(400, "missing parameter secretId"))?;
    finish(secret_id, options)
}

/// `{path_prefix}ID?...`: the ID is the rest of the path, percent-decoded.
pub fn parse_prefixed(raw_id: &str, query: &str) -> Parsed {
    let options = parse_options(query, |_, _| false)?;
    let secret_id = percent_decode(raw_id, false)
        .ok_or_else(|| text(400, "invalid percent-encoding in secret ID"))?;
    if secret_id.is_empty() {
        return Err(text(400, "missing secret ID"));
    }
    finish(secret_id, options)
}

struct Options {
    version_id: Option<String>,
    version_stage: Option<String>,
    refresh_now: Option<String>,
    /// `roleArn`: the IAM role to read the secret as, checked.
    role: Option<String>,
    json_key: Option<String>,
}

/// Reads the query keys both routes share; `extra` claims route-specific keys.
fn parse_options(
    query: &str,
    mut extra: impl FnMut(&str, String) -> bool,
) -> Result<Options, Response> {
    let pairs = query_pairs(query).map_err(|_| text(400, "invalid percent-encoding in query"))?;
    let mut options = Options {
        version_id: None,
        version_stage: None,
        refresh_now: None,
        role: None,
        json_key: None,
    };
    for (key, value) in pairs {
        let non_empty = |v: Cow<str>| Some(v.into_owned()).filter(|v| !v.is_empty());
        match key.as_ref() {
            "versionId" => options.version_id = non_empty(value),
            "versionStage" => options.version_stage = non_empty(value),
            "refreshNow" => options.refresh_now = Some(value.into_owned()),
            "roleArn" => options.role = Some(role_arn(value.into_owned())?),
            "jsonKey" if value.is_empty() => return Err(text(400, "empty jsonKey")),
            "jsonKey" => options.json_key = Some(value.into_owned()),
            _ if extra(&key, value.into_owned()) => {}
            _ => return Err(owned_text(400, format!("unknown parameter: {key}"))),
        }
    }
    Ok(options)
}

fn finish(secret_id: String, options: Options) -> Parsed {
    let refresh_now = refresh(options.refresh_now)?;
    let query = SecretQuery {
        secret_id,
        version_id: options.version_id,
        version_stage: options.version_stage,
    };
    Ok(Asked {
        key: Key::Secret {
            query,
            role: options.role,
        },
        refresh_now,
        json_key: options.json_key,
    })
}

/// `/systemsmanager/parameters/get?name=...`: `version` or `label` (the
/// first in the query wins, as in AWS's extension), `withDecryption`, and
/// this agent's `refreshNow` and `roleArn`. Public for the fuzz target.
pub fn parse_parameter(query: &str) -> Parsed {
    let pairs = query_pairs(query).map_err(|_| text(400, "invalid percent-encoding in query"))?;
    let (mut name, mut selector, mut decrypt, mut refresh_now, mut role) =
        (None, None, false, None, None);
    for (key, value) in pairs {
        match key.as_ref() {
            "name" => name = Some(value.into_owned()),
            "version" | "label" if value.is_empty() => {}
            "version" => {
                let version = value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| text(400, "invalid version value: expected a version number"))?;
                selector.get_or_insert(Selector::Version(version));
            }
            "label" => {
                // SSM reads `NAME:1` as version 1, and a label holds no `:`.
                if value.starts_with(|c: char| c.is_ascii_digit()) || value.contains(':') {
                    return Err(text(
                        400,
                        "invalid label value: a label cannot start with a digit or hold ':'",
                    ));
                }
                selector.get_or_insert(Selector::Label(value.into_owned()));
            }
            "withDecryption" => {
                decrypt = boolean(&value).ok_or_else(|| {
                    text(400, "invalid withDecryption value: expected true or false")
                })?
            }
            "refreshNow" => refresh_now = Some(value.into_owned()),
            "roleArn" => role = Some(role_arn(value.into_owned())?),
            _ => return Err(owned_text(400, format!("unknown parameter: {key}"))),
        }
    }
    let name = name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| text(400, "missing parameter name"))?;
    let query = ParameterQuery {
        name,
        selector,
        with_decryption: decrypt,
    };
    Ok(Asked {
        key: Key::Parameter { query, role },
        refresh_now: refresh(refresh_now)?,
        json_key: None,
    })
}

/// `true`/`false` in any case, or `1`/`0`.
pub(super) fn boolean(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") || value == "1" {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") || value == "0" {
        Some(false)
    } else {
        None
    }
}

fn refresh(value: Option<String>) -> Result<bool, Response> {
    match value {
        None => Ok(false),
        Some(v) => boolean(&v).ok_or_else(|| text(400, "invalid refreshNow value")),
    }
}

fn role_arn(value: String) -> Result<String, Response> {
    match check_role_arn(&value) {
        Ok(()) => Ok(value),
        Err(why) => Err(owned_text(400, format!("invalid roleArn: {why}"))),
    }
}
