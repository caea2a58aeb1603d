//! A role named by a request's `roleArn`: STS AssumeRole signed with the
//! agent's own credentials (whatever the chain or `credentials_file_path`
//! yields), at the regional STS endpoint found at start-up
//! (`AWS_ENDPOINT_URL_STS` honoured), cached and refreshed ahead of expiry by
//! [`Refreshing`] like every other source, static stability included.

use std::sync::Arc;

use super::refresh::{Refreshing, Timing};
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use crate::sts::Sts;

/// `RoleSessionName` of every per-request role: CloudTrail shows the role
/// session as `.../ROLE/secrets-manager-agent`.
pub const SESSION_NAME: &str = "secrets-manager-agent";

pub struct AssumeRole {
    /// Signed with the agent's own credentials; shared by every role.
    sts: Arc<Sts>,
    role_arn: String,
    source: String,
}

impl AssumeRole {
    pub fn new(sts: Arc<Sts>, role_arn: &str) -> AssumeRole {
        AssumeRole {
            sts,
            role_arn: role_arn.to_string(),
            source: format!("AssumeRole {role_arn}"),
        }
    }
}

/// The role's credentials, cached and refreshed ahead of expiry.
pub fn provider(sts: Arc<Sts>, role_arn: &str, timing: Timing) -> Refreshing<AssumeRole> {
    Refreshing::new(AssumeRole::new(sts, role_arn), timing)
}

impl ProvideCredentials for AssumeRole {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        match self.sts.assume_role(&self.role_arn, SESSION_NAME, None) {
            Ok(mut creds) => {
                creds.source = self.source.clone();
                Ok(Arc::new(creds))
            }
            // STS's answer (AccessDenied, throttling, ...) or the agent's own
            // missing credentials reach the client as they are: a role that
            // may not be assumed is a 403 with STS's code, not a 500.
            Err(e) => Err(CredentialsError {
                answer: Some(e.clone()),
                ..CredentialsError::failed(self.source.clone(), e.to_string())
            }),
        }
    }
}
