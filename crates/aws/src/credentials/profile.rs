//! Credentials from a profile of the shared config files: static keys,
//! `role_arn` with `source_profile` or `credential_source`,
//! `web_identity_token_file` and `credential_process`.
//!
//! The files are read once at start (`shared_config`), as the SDKs do; what a
//! profile points at (a token file, a process, STS) is asked again at every
//! refresh.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::process::ProcessError;
use super::web_identity::WebIdentityError;
use super::{ini, Context};
use crate::client::Client;
use crate::identity::{Credentials, CredentialsError, ProvideCredentials, Static};
use crate::sts::{self, Sts};
use crate::UpstreamError;

/// Why a profile gave no credentials; each names the profile or role.
#[derive(Debug)]
pub enum ProfileError {
    /// No such profile: which files were looked in, and any that could not
    /// be read (`Profiles::not_found`).
    NotFound(String),
    OwnSourceWithoutKeys(String),
    /// The profiles visited, then the one that closes the loop.
    SourceLoop(Vec<String>, String),
    RoleWithoutSource(String),
    UnknownCredentialSource(String),
    CredentialSource(CredentialsError),
    AssumeRole {
        role_arn: String,
        error: UpstreamError,
    },
    WebIdentity(WebIdentityError),
    Process(ProcessError),
    NoCredentials(String),
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProfileError::NotFound(why) => f.write_str(why),
            ProfileError::OwnSourceWithoutKeys(name) => write!(
                f,
                "profile {name} is its own source_profile but has no keys (add aws_access_key_id and aws_secret_access_key to it)"
            ),
            ProfileError::SourceLoop(chain, again) => {
                write!(f, "source_profile loop: {} -> {again}", chain.join(" -> "))
            }
            ProfileError::RoleWithoutSource(name) => write!(
                f,
                "profile {name} has role_arn but neither source_profile nor credential_source (add one)"
            ),
            ProfileError::UnknownCredentialSource(other) => write!(
                f,
                "credential_source `{other}` is not one of Environment, Ec2InstanceMetadata, EcsContainer"
            ),
            ProfileError::CredentialSource(e) => e.fmt(f),
            ProfileError::AssumeRole { role_arn, error } => {
                write!(f, "AssumeRole {role_arn}: {error}")
            }
            ProfileError::WebIdentity(e) => e.fmt(f),
            ProfileError::Process(e) => e.fmt(f),
            ProfileError::NoCredentials(name) => write!(
                f,
                "profile {name} has no aws_access_key_id/aws_secret_access_key, role_arn or credential_process"
            ),
        }
    }
}

impl std::error::Error for ProfileError {}

pub struct ProfileProvider {
    ctx: Arc<Context>,
}

impl ProfileProvider {
    pub fn new(ctx: Arc<Context>) -> ProfileProvider {
        ProfileProvider { ctx }
    }

    fn resolve(&self, name: &str, chain: &mut Vec<String>) -> Result<Credentials, ProfileError> {
        let profiles = &self.ctx.profiles;
        let p = profiles
            .get(name)
            .ok_or_else(|| ProfileError::NotFound(profiles.not_found(name)))?;
        let source = format!("profile {name}");
        let get = |key: &str| p.get(key).filter(|v| !v.is_empty()).map(String::as_str);
        let static_keys = ini::static_keys(p, &source);
        // A source profile's own keys end the chain (the SDKs' rule).
        let is_source = !chain.is_empty();
        chain.push(name.to_string());

        if let (Some(role_arn), false) = (get("role_arn"), is_source && static_keys.is_some()) {
            let session = get("role_session_name");
            if let Some(file) = get("web_identity_token_file") {
                return super::web_identity::assume(&self.ctx, Path::new(file), role_arn, session)
                    .map_err(ProfileError::WebIdentity);
            }
            let base = match (get("source_profile"), get("credential_source")) {
                (Some(src), _) if src == name => static_keys
                    .ok_or_else(|| ProfileError::OwnSourceWithoutKeys(name.to_string()))?,
                (Some(src), _) if chain.iter().any(|seen| seen == src) => {
                    return Err(ProfileError::SourceLoop(chain.clone(), src.to_string()))
                }
                (Some(src), _) => self.resolve(src, chain)?,
                (None, Some(kind)) => self.credential_source(kind)?,
                (None, None) => return Err(ProfileError::RoleWithoutSource(name.to_string())),
            };
            let signer = Client::new(
                self.ctx.transport.clone(),
                self.ctx.region.clone(),
                Arc::new(Static(Arc::new(base))),
            );
            let session = session
                .map(str::to_string)
                .unwrap_or_else(sts::default_session_name);
            return Sts::new(Arc::new(signer), self.ctx.sts_endpoint.clone())
                .assume_role(role_arn, &session, get("external_id"))
                .map(|mut c| {
                    c.source = source;
                    c
                })
                .map_err(|error| ProfileError::AssumeRole {
                    role_arn: role_arn.to_string(),
                    error,
                });
        }
        if let Some(command) = get("credential_process") {
            return super::process::run(command, &source).map_err(ProfileError::Process);
        }
        static_keys.ok_or_else(|| ProfileError::NoCredentials(name.to_string()))
    }

    fn credential_source(&self, kind: &str) -> Result<Credentials, ProfileError> {
        let found = match kind {
            "Environment" => super::environment::Environment::from_env().credentials(),
            "Ec2InstanceMetadata" => {
                super::imds::ImdsProvider::new(self.ctx.imds.clone()).credentials()
            }
            "EcsContainer" => super::container::Container::from_env().credentials(),
            other => return Err(ProfileError::UnknownCredentialSource(other.to_string())),
        };
        found
            .map(|c| (*c).clone())
            .map_err(ProfileError::CredentialSource)
    }
}

impl ProvideCredentials for ProfileProvider {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let name = &self.ctx.profile_name;
        let source = format!("profile {name}");
        // A profile that only sets a region (common on EC2) is no credential
        // source; the chain moves on.
        let Some(profile) = self.ctx.profiles.get(name) else {
            return Err(CredentialsError::new(
                source,
                self.ctx.profiles.not_found(name),
            ));
        };
        const CREDENTIAL_KEYS: [&str; 4] = [
            "aws_access_key_id",
            "role_arn",
            "credential_process",
            "web_identity_token_file",
        ];
        if !CREDENTIAL_KEYS.iter().any(|k| profile.contains_key(*k)) {
            return Err(CredentialsError::new(
                source,
                format!("profile {name} has no credentials (no aws_access_key_id, role_arn or credential_process)"),
            ));
        }
        self.resolve(name, &mut Vec::new())
            .map(Arc::new)
            .map_err(|why| CredentialsError::failed(source, why.to_string()))
    }
}
