//! Web identity (EKS IRSA): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//! exchanged at STS for role credentials. The token file is re-read at every
//! refresh because the kubelet rotates it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Context;
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use crate::sts;

const SOURCE: &str = "web identity";

pub struct WebIdentity {
    ctx: Arc<Context>,
    /// (token file, role ARN, session name), or why they are not set.
    settings: Result<(PathBuf, String, Option<String>), String>,
}

impl WebIdentity {
    pub fn from_env(ctx: Arc<Context>) -> WebIdentity {
        let get = secrets_manager_agent_core::env::var;
        let settings = match (get("AWS_WEB_IDENTITY_TOKEN_FILE"), get("AWS_ROLE_ARN")) {
            (Some(file), Some(role)) => {
                Ok((PathBuf::from(file), role, get("AWS_ROLE_SESSION_NAME")))
            }
            (Some(_), None) => {
                Err("AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not".into())
            }
            (None, Some(_)) => {
                Err("AWS_ROLE_ARN is set but AWS_WEB_IDENTITY_TOKEN_FILE is not".into())
            }
            (None, None) => Err("AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are not set".into()),
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
) -> Result<Credentials, String> {
    let token =
        secrets_manager_agent_core::env::read_token_file(token_file).map_err(|e| e.to_string())?;
    let session = session_name
        .map(str::to_string)
        .unwrap_or_else(sts::default_session_name);
    ctx.web_identity_sts
        .assume_role_with_web_identity(role_arn, &session, &token)
        .map_err(|e| format!("AssumeRoleWithWebIdentity for {role_arn}: {e}"))
}

impl ProvideCredentials for WebIdentity {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let (file, role, session) = self
            .settings
            .as_ref()
            .map_err(|why| CredentialsError::new(SOURCE, why.clone()))?;
        assume(&self.ctx, file, role, session.as_deref())
            .map(Arc::new)
            .map_err(|why| CredentialsError::failed(SOURCE, why))
    }
}
