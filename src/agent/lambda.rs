//! The Lambda Extensions API client: registering for INVOKE and SHUTDOWN and
//! waiting for the next event. What the agent does on each event is
//! `agent::run_lambda`'s business.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

const API_VERSION: &str = "2020-01-01";

/// Whether this process was started by Lambda as an extension: the runtime API
/// is set and the binary was launched from `/opt/extensions/`.
pub fn launched_as_extension(argv0: &str, runtime_api: Option<&str>) -> bool {
    runtime_api.is_some_and(|api| !api.is_empty()) && argv0.starts_with("/opt/extensions/")
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Invoke,
    Shutdown,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    event_type: String,
}

/// Why talking to the Extensions API failed. Lambda ends an extension that
/// fails to register or to wait for its events, so each ends the agent.
#[derive(Debug)]
pub enum Error {
    /// The register call found no API at `runtime_api`.
    Register {
        runtime_api: String,
        source: ureq::Error,
    },
    /// The register call was answered with `status`, not 200.
    Refused {
        status: u16,
        body: String,
    },
    NoIdentifier,
    /// `event/next` failed before an answer.
    NextEvent(ureq::Error),
    /// `event/next` answered `status`, not 200.
    EventStatus {
        status: u16,
        body: String,
    },
    /// An event's body could not be read or is not the JSON Lambda sends.
    Unreadable(Box<dyn std::error::Error + Send + Sync>),
    UnknownEvent(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Register {
                runtime_api,
                source,
            } => write!(
                f,
                "cannot register with the Lambda Extensions API at {runtime_api}: {source}"
            ),
            Error::Refused { status, body } => write!(
                f,
                "Lambda Extensions API refused the registration ({status}): {body}"
            ),
            Error::NoIdentifier => {
                f.write_str("the Extensions API answered no Lambda-Extension-Identifier")
            }
            Error::NextEvent(e) => write!(f, "waiting for the next Lambda event failed: {e}"),
            Error::EventStatus { status, body } => write!(
                f,
                "the Extensions API answered {status} to event/next: {body}"
            ),
            Error::Unreadable(why) => write!(f, "unreadable Lambda event: {why}"),
            Error::UnknownEvent(other) => write!(f, "unexpected Lambda event type {other}"),
        }
    }
}

impl std::error::Error for Error {}

/// A registered extension.
pub struct Extension {
    agent: ureq::Agent,
    base: String,
    id: String,
}

impl Extension {
    /// Registers as `name` (Lambda requires the file name under `/opt/extensions`).
    pub fn register(runtime_api: &str, name: &str) -> Result<Extension, Error> {
        // `event/next` blocks until the next event, for as long as the
        // function is idle: no timeout on the call itself.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let base = format!("http://{runtime_api}/{API_VERSION}/extension");
        let mut response = agent
            .post(&format!("{base}/register"))
            .header("Lambda-Extension-Name", name)
            .header("Content-Type", "application/json")
            .send(r#"{"events":["INVOKE","SHUTDOWN"]}"#)
            .map_err(|source| Error::Register {
                runtime_api: runtime_api.to_string(),
                source,
            })?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            return Err(Error::Refused { status, body });
        }
        let id = response
            .headers()
            .get("Lambda-Extension-Identifier")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or(Error::NoIdentifier)?;
        Ok(Extension { agent, base, id })
    }

    /// Blocks until Lambda sends the next event.
    pub fn next_event(&self) -> Result<Event, Error> {
        let mut response = self
            .agent
            .get(&format!("{}/event/next", self.base))
            .header("Lambda-Extension-Identifier", &self.id)
            .call()
            .map_err(Error::NextEvent)?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .read_to_string()
            .map_err(|e| Error::Unreadable(e.into()))?;
        if status != 200 {
            return Err(Error::EventStatus { status, body });
        }
        let event: EventBody =
            serde_json::from_str(&body).map_err(|e| Error::Unreadable(e.into()))?;
        match event.event_type.as_str() {
            "INVOKE" => Ok(Event::Invoke),
            "SHUTDOWN" => Ok(Event::Shutdown),
            other => Err(Error::UnknownEvent(other.to_string())),
        }
    }
}

/// The name to register under: the launched file's name.
pub fn extension_name(argv0: &str) -> String {
    Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secrets-manager-agent")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_lambda_extension_launch() {
        let api = Some("127.0.0.1:9001");
        assert!(launched_as_extension(
            "/opt/extensions/secrets-manager-agent",
            api
        ));
        assert!(!launched_as_extension(
            "/usr/bin/secrets-manager-agent",
            api
        ));
        assert!(!launched_as_extension(
            "/opt/extensions/secrets-manager-agent",
            None
        ));
        assert!(!launched_as_extension(
            "/opt/extensions/secrets-manager-agent",
            Some("")
        ));
        assert_eq!(
            extension_name("/opt/extensions/secrets-manager-agent"),
            "secrets-manager-agent"
        );
    }
}
