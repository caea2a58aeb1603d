//! `ping` and `get`: the agent's own client for a running agent on loopback,
//! for scratch images (no curl, no shell: the Dockerfile's `HEALTHCHECK`
//! runs `ping`) and for scripts (`get` prints a value, ready for `$(...)`).
//!
//! Both find the agent as it finds itself: the address, port and token
//! settings come from the same config file and variables (`--port`
//! overrides the port), so
//! a command next to the agent needs no arguments but what to fetch.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::config::Config;
use crate::token::Token;
use secrets_manager_agent_core::query::form_encode;

/// What to fetch with `get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Secret {
        id: String,
        version_id: Option<String>,
        version_stage: Option<String>,
    },
    Parameter {
        name: String,
        with_decryption: bool,
    },
}

/// Why a command failed: one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed(pub String);

/// The agent's address: its `bind_address` (the loopback address of that
/// family when it listens on all of them) and `--port`, else `http_port`.
pub fn address(config: &Config, port: Option<u16>) -> SocketAddr {
    let ip = match config.bind_address {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::from((ip, port.unwrap_or(config.http_port)))
}

/// `address`, unless its port is 0 (the OS picks the agent's): then only
/// `--port` can say where it is.
fn known(agent: SocketAddr) -> Result<SocketAddr, Failed> {
    match agent.port() {
        0 => Err(Failed(
            "http_port is 0 (the OS picks the port at start): pass --port N".into(),
        )),
        _ => Ok(agent),
    }
}

/// Which probe `ping` asks: `/ping` (the process serves: liveness) or
/// `/ready` (it can serve secrets: readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Alive,
    Ready,
}

/// Asks the probe; `Ok` with the agent's answer (`healthy`, `ready`) when it
/// is `200`.
pub fn ping(agent: SocketAddr, probe: Probe) -> Result<String, Failed> {
    let path = match probe {
        Probe::Alive => "/ping",
        Probe::Ready => "/ready",
    };
    let (status, body) = call(known(agent)?, path, None)?;
    let text = one_line(&body);
    match status {
        200 => Ok(text),
        _ => Err(Failed(format!(
            "the agent on {agent} answered {path} with {status}: {text}"
        ))),
    }
}

/// Fetches `target` through the agent and writes what `--json` or the value
/// asks for to `out`.
pub fn get(
    config: &Config,
    agent: SocketAddr,
    target: &Target,
    json: bool,
    out: &mut impl Write,
) -> Result<(), Failed> {
    let (token, _) =
        Token::from_env(&config.ssrf_env_variables).map_err(|e| Failed(e.to_string()))?;
    let header = config
        .ssrf_headers
        .first()
        .ok_or_else(|| Failed("the config names no ssrf_headers".into()))?;
    let (status, body) = call(known(agent)?, &path(target), Some((header, token.reveal())))?;
    if status != 200 {
        return Err(Failed(format!(
            "the agent answered {status}: {}",
            error_message(&body)
        )));
    }
    let bytes = if json {
        let mut all = body;
        all.push(b'\n');
        all
    } else {
        value(target, &body)?
    };
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Failed(format!("cannot write the value: {e}")))
}

/// The request target for `target`.
fn path(target: &Target) -> String {
    match target {
        Target::Secret {
            id,
            version_id,
            version_stage,
        } => {
            let mut pairs = vec![("secretId", id.as_str())];
            pairs.extend(version_id.as_deref().map(|v| ("versionId", v)));
            pairs.extend(version_stage.as_deref().map(|v| ("versionStage", v)));
            format!("/secretsmanager/get?{}", form_encode(&pairs))
        }
        Target::Parameter {
            name,
            with_decryption,
        } => {
            let decrypt = if *with_decryption { "true" } else { "false" };
            let pairs = [("name", name.as_str()), ("withDecryption", decrypt)];
            format!("/systemsmanager/parameters/get?{}", form_encode(&pairs))
        }
    }
}

/// The fields of an answer `get` prints: a secret's, a parameter's, or an
/// error's. Typed, not a `serde_json::Value`: the generic tree costs the
/// binary kilobytes that these few fields do not need.
#[derive(Deserialize)]
struct Answer {
    #[serde(rename = "SecretString")]
    secret_string: Option<String>,
    #[serde(rename = "SecretBinary")]
    secret_binary: Option<String>,
    #[serde(rename = "Parameter")]
    parameter: Option<ParameterValue>,
    #[serde(rename = "__type")]
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct ParameterValue {
    #[serde(rename = "Value")]
    value: Option<String>,
}

/// The value in an answer: `SecretString` with a newline, the bytes of
/// `SecretBinary` as they are, or a parameter's `Value` with a newline.
fn value(target: &Target, body: &[u8]) -> Result<Vec<u8>, Failed> {
    let unreadable = |what: &str| Failed(format!("the agent's answer holds no {what}"));
    let answer: Answer = serde_json::from_slice(body).map_err(|_| unreadable("JSON document"))?;
    let line = |text: String| {
        let mut bytes = text.into_bytes();
        bytes.push(b'\n');
        bytes
    };
    match target {
        Target::Parameter { .. } => answer
            .parameter
            .and_then(|p| p.value)
            .map(line)
            .ok_or_else(|| unreadable("Parameter.Value")),
        Target::Secret { .. } => {
            if let Some(text) = answer.secret_string {
                return Ok(line(text));
            }
            let encoded = answer
                .secret_binary
                .ok_or_else(|| unreadable("SecretString or SecretBinary"))?;
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| unreadable("valid base64 in SecretBinary"))
        }
    }
}

/// An error answer as one line: `code: message` for AWS's JSON errors, else
/// the text.
fn error_message(body: &[u8]) -> String {
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer {
            code: Some(code),
            message,
            ..
        }) => match message {
            Some(message) => format!("{code}: {message}"),
            None => code,
        },
        _ => one_line(body),
    }
}

fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.chars().take(300).collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One GET on loopback, bounded in time; `(status, body)`.
fn call(
    agent: SocketAddr,
    path: &str,
    header: Option<(&str, &[u8])>,
) -> Result<(u16, Vec<u8>), Failed> {
    let client: ureq::Agent = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_connect(Some(Duration::from_secs(2)))
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut request = client.get(&format!("http://{agent}{path}"));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let mut response = request
        .call()
        .map_err(|e| Failed(format!("no agent answers on {agent}: {e}")))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .map_err(|e| Failed(format!("cannot read the agent's answer: {e}")))?;
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(id: &str) -> Target {
        Target::Secret {
            id: id.into(),
            version_id: None,
            version_stage: None,
        }
    }

    #[test]
    fn paths_encode_what_they_carry() {
        assert_eq!(
            path(&secret("prod/db pw")),
            "/secretsmanager/get?secretId=prod%2Fdb%20pw"
        );
        let staged = Target::Secret {
            id: "a".into(),
            version_id: Some("v1".into()),
            version_stage: Some("AWSPREVIOUS".into()),
        };
        assert_eq!(
            path(&staged),
            "/secretsmanager/get?secretId=a&versionId=v1&versionStage=AWSPREVIOUS"
        );
        let parameter = Target::Parameter {
            name: "/app/db".into(),
            with_decryption: true,
        };
        assert_eq!(
            path(&parameter),
            "/systemsmanager/parameters/get?name=%2Fapp%2Fdb&withDecryption=true"
        );
    }

    #[test]
    fn values_come_out_as_scripts_want_them() {
        let string = br#"{"Name":"a","SecretString":"s3cr3t"}"#;
        assert_eq!(value(&secret("a"), string).unwrap(), b"s3cr3t\n");
        let binary = br#"{"Name":"a","SecretBinary":"AAEC/w=="}"#;
        assert_eq!(value(&secret("a"), binary).unwrap(), [0, 1, 2, 255]);
        let parameter = Target::Parameter {
            name: "p".into(),
            with_decryption: false,
        };
        let answer = br#"{"Parameter":{"Name":"p","Value":"a,b"},"ResultMetadata":{}}"#;
        assert_eq!(value(&parameter, answer).unwrap(), b"a,b\n");
        assert!(value(&secret("a"), b"{}").is_err());
        assert!(value(&secret("a"), br#"{"SecretBinary":"%%"}"#).is_err());
        assert!(value(&parameter, b"not json").is_err());
    }

    #[test]
    fn error_answers_become_one_line() {
        assert_eq!(
            error_message(br#"{"__type":"ResourceNotFoundException","message":"no such secret"}"#),
            "ResourceNotFoundException: no such secret"
        );
        assert_eq!(
            error_message(br#"{"__type":"InternalFailure"}"#),
            "InternalFailure"
        );
        assert_eq!(error_message(b"Bad Token\n"), "Bad Token");
    }

    #[test]
    fn nothing_listening_is_a_failure_that_says_where() {
        // A port that was free a moment ago: nothing answers there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let agent = SocketAddr::from(([127, 0, 0, 1], port));
        let Failed(why) = ping(agent, Probe::Alive).unwrap_err();
        assert!(
            why.starts_with(&format!("no agent answers on 127.0.0.1:{port}")),
            "{why}"
        );
    }
}
