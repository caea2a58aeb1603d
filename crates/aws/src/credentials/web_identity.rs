//! Web identity (EKS IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//! exchanged at STS for role credentials. The token file is re-read at every
//! refresh because the kubelet rotates it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Context;
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use crate::sts;
use crate::UpstreamError;
use secrets_manager_agent_core::env::TokenFileError;

const SOURCE: &str = "web identity";

/// Why web identity gave no credentials.
#[derive(Debug, Clone, PartialEq)]
pub enum WebIdentityError {
    NotSet,
    NoRoleArn,
    NoTokenFile,
    TokenFile(TokenFileError),
    Sts {
        role_arn: String,
        error: UpstreamError,
    },
}

impl fmt::Display for WebIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebIdentityError::NotSet => {
                f.write_str("AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not set")
            }
            WebIdentityError::NoRoleArn => f.write_str(
                "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not (set both, or neither)",
            ),
            WebIdentityError::NoTokenFile => f.write_str(
                "AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not (set both, or neither)",
            ),
            WebIdentityError::TokenFile(e) => e.fmt(f),
            WebIdentityError::Sts { role_arn, error } => {
                write!(f, "AssumeRoleWithWebIdentity for {role_arn}: {error}")
            }
        }
    }
}

impl std::error::Error for WebIdentityError {}

pub struct WebIdentity {
    ctx: Arc<Context>,
    /// (token file, role ARN, session name), or why they are not set.
    settings: Result<(PathBuf, String, Option<String>), WebIdentityError>,
}

impl WebIdentity {
    pub fn from_env(ctx: Arc<Context>) -> WebIdentity {
        let get = secrets_manager_agent_core::env::var;
        let settings = match (get("AWS_WEB_IDENTITY_TOKEN_FILE"), get("AWS_ROLE_ARN")) {
            (Some(file), Some(role)) => {
                Ok((PathBuf::from(file), role, get("AWS_ROLE_SESSION_NAME")))
            }
            (Some(_), None) => Err(WebIdentityError::NoRoleArn),
            (None, Some(_)) => Err(WebIdentityError::NoTokenFile),
            (None, None) => Err(WebIdentityError::NotSet),
        };
        WebIdentity { ctx, settings }
    }
}

/// Reads the token file and calls STS; shared with profiles that name a
/// `web_identity_token_file`.
pub fn assume(
    ctx: &Context,
    token_file: &Path,
    role_arn: &str,
    session_name: Option<&str>,
) -> Result<Credentials, WebIdentityError> {
    let token = secrets_manager_agent_core::env::read_token_file(token_file)
        .map_err(WebIdentityError::TokenFile)?;
    let session = session_name
        .map(str::to_string)
        .unwrap_or_else(sts::default_session_name);
    ctx.web_identity_sts
        .assume_role_with_web_identity(role_arn, &session, &token)
        .map_err(|error| WebIdentityError::Sts {
            role_arn: role_arn.to_string(),
            error,
        })
}

impl ProvideCredentials for WebIdentity {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let (file, role, session) = self
            .settings
            .as_ref()
            .map_err(|why| CredentialsError::new(SOURCE, why.to_string()))?;
        assume(&self.ctx, file, role, session.as_deref())
            .map(Arc::new)
            .map_err(|why| CredentialsError::failed(SOURCE, why.to_string()))
    }
}
