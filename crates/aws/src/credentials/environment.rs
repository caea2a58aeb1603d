//! Credentials from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optional
//! `AWS_SESSION_TOKEN`, read once (a process's environment does not change
//! under it).

use std::sync::Arc;

use crate::identity::{Credentials, CredentialsError, ProvideCredentials};

const SOURCE: &str = "environment";

pub struct Environment {
    found: Result<Arc<Credentials>, Missing>,
}

/// Which of the two variables is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    SecretAccessKey,
    AccessKeyId,
    Both,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::SecretAccessKey => "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
            Missing::AccessKeyId => "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not",
            Missing::Both => "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
        })
    }
}

impl Environment {
    pub fn from_env() -> Environment {
        Environment::from_lookup(secrets_manager_agent_core::env::var)
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Environment {
        let found = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Arc::new(Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
                expiry: None,
                source: SOURCE.into(),
            })),
            (Some(_), None) => Err(Missing::SecretAccessKey),
            (None, Some(_)) => Err(Missing::AccessKeyId),
            (None, None) => Err(Missing::Both),
        };
        Environment { found }
    }
}

impl ProvideCredentials for Environment {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        self.found
            .clone()
            .map_err(|why| CredentialsError::new(SOURCE, why.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_both_keys() {
        let env = Environment::from_lookup(|n| match n {
            "AWS_ACCESS_KEY_ID" => Some("AKID".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("SECRET".into()),
            _ => None,
        });
        let c = env.credentials().unwrap();
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.session_token, None);

        let env = Environment::from_lookup(|n| (n == "AWS_ACCESS_KEY_ID").then(|| "AKID".into()));
        let e = env.credentials().unwrap_err().to_string();
        assert!(
            e.contains("environment: AWS_ACCESS_KEY_ID is set but"),
            "{e}"
        );
    }
}
