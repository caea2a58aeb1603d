//! What an answer is cached under: a typed key, so every cache policy
//! applies per (upstream, role, request) and a new upstream is a new variant:
//! a secret, a parameter, or a read call that an SDK client made and the
//! agent passes through to AWS (`Key::Call`, its operation and input).

use std::fmt;

use secrets_manager_agent_aws::ssm::ParameterQuery;
use secrets_manager_agent_aws::{ReadCall, SecretQuery};

/// What an answer is cached under: a variant per upstream. The role is part
/// of the key: an answer fetched as one role never
/// answers a request for another role or for the agent's own identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Secret {
        query: SecretQuery,
        /// The request's `roleArn` (already checked); `None`: the agent's own
        /// credentials.
        role: Option<String>,
    },
    Parameter {
        query: ParameterQuery,
        role: Option<String>,
    },
    /// A read call passed through (`aws::passthrough`), answered with AWS's
    /// answer as it came.
    Call {
        call: ReadCall,
        /// The call's input as canonical JSON (the SDK-protocol surface
        /// parses the client's body and writes it again, so equal requests
        /// make equal keys). IDs, paths and filters, never values: logged.
        input: String,
        role: Option<String>,
    },
}

impl Key {
    /// A secret read with the agent's own credentials.
    pub fn secret(query: SecretQuery) -> Key {
        Key::Secret { query, role: None }
    }

    /// The role to call AWS as; `None` for the agent's own identity.
    pub fn role(&self) -> Option<&str> {
        match self {
            Key::Secret { role, .. } | Key::Parameter { role, .. } | Key::Call { role, .. } => {
                role.as_deref()
            }
        }
    }

    /// Whether the key asks for the current version (no version ID, no
    /// stage other than AWSCURRENT): only those can be refreshed in a batch,
    /// which reads current versions only.
    pub fn is_current(&self) -> bool {
        match self {
            Key::Secret { query, .. } => {
                query.version_id.is_none()
                    && query
                        .version_stage
                        .as_deref()
                        .is_none_or(|stage| stage == "AWSCURRENT")
            }
            Key::Parameter { .. } | Key::Call { .. } => false,
        }
    }
}

/// For log lines: what was asked for, never a value. A secret shows as its
/// ID alone, as the agent's log lines always named it, a parameter as
/// `parameter NAME`, a read call as its operation and input
/// (`DescribeSecret {"SecretId":"x"}`); then the role it was read as, if any.
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Secret { query, .. } => f.write_str(&query.secret_id)?,
            Key::Parameter { query, .. } => write!(f, "parameter {}", query.name)?,
            Key::Call { call, input, .. } => write!(f, "{call} {input}")?,
        }
        match self.role() {
            Some(role) => write!(f, " (as {role})"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::role_key;

    #[test]
    fn keys_log_the_id_only() {
        let key = Key::secret(SecretQuery {
            secret_id: "prod/db".into(),
            version_id: Some("v1".into()),
            version_stage: Some("AWSPREVIOUS".into()),
        });
        assert_eq!(key.to_string(), "prod/db");
        let role = "arn:aws:iam::123456789012:role/r";
        assert_eq!(
            role_key("prod/db", role).to_string(),
            format!("prod/db (as {role})")
        );
    }

    #[test]
    fn calls_log_operation_and_input_and_are_never_batched() {
        let call = |role: Option<&str>| Key::Call {
            call: ReadCall::DescribeSecret,
            input: r#"{"SecretId":"x"}"#.into(),
            role: role.map(String::from),
        };
        assert_eq!(call(None).to_string(), r#"DescribeSecret {"SecretId":"x"}"#);
        let role = "arn:aws:iam::123456789012:role/r";
        assert_eq!(
            call(Some(role)).to_string(),
            format!(r#"DescribeSecret {{"SecretId":"x"}} (as {role})"#)
        );
        assert_eq!(call(Some(role)).role(), Some(role));
        assert_eq!(call(None).role(), None);
        assert!(!call(None).is_current());
    }
}
