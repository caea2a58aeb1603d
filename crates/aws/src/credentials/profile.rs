//! Credentials from a profile of the shared config files: static keys,
//! `role_arn` with `source_profile` or `credential_source`,
//! `web_identity_token_file` and `credential_process`.
//!
//! The files are read once at start (`shared_config`), as the SDKs do; what a
//! profile points at (a token file, a process, STS) is asked again at every
//! refresh.

use std::path::Path;
use std::sync::Arc;

use super::{ini, Context};
use crate::client::Client;
use crate::identity::{Credentials, CredentialsError, ProvideCredentials, Static};
use crate::sts::{self, Sts};

pub struct ProfileProvider {
    ctx: Arc<Context>,
}

impl ProfileProvider {
    pub fn new(ctx: Arc<Context>) -> ProfileProvider {
        ProfileProvider { ctx }
    }

    fn resolve(&self, name: &str, chain: &mut Vec<String>) -> Result<Credentials, String> {
        let profiles = &self.ctx.profiles;
        let p = profiles.get(name).ok_or_else(|| profiles.not_found(name))?;
        let source = format!("profile {name}");
        let get = |key: &str| p.get(key).filter(|v| !v.is_empty()).map(String::as_str);
        let static_keys = ini::static_keys(p, &source);
        // A source profile's own keys end the chain (the SDKs' rule).
        let is_source = !chain.is_empty();
        chain.push(name.to_string());

        if let (Some(role_arn), false) = (get("role_arn"), is_source && static_keys.is_some()) {
            let session = get("role_session_name");
            if let Some(file) = get("web_identity_token_file") {
                return super::web_identity::assume(&self.ctx, Path::new(file), role_arn, session);
            }
            let base = match (get("source_profile"), get("credential_source")) {
                (Some(src), _) if src == name => static_keys.ok_or_else(|| {
                    format!("profile {name} is its own source_profile but has no keys")
                })?,
                (Some(src), _) if chain.iter().any(|seen| seen == src) => {
                    return Err(format!(
                        "source_profile loop: {} -> {src}",
                        chain.join(" -> ")
                    ))
                }
                (Some(src), _) => self.resolve(src, chain)?,
                (None, Some(kind)) => self.credential_source(kind)?,
                (None, None) => {
                    return Err(format!(
                    "profile {name} has role_arn but neither source_profile nor credential_source"
                ))
                }
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
                .map_err(|e| format!("AssumeRole {role_arn}: {e}"));
        }
        if let Some(command) = get("credential_process") {
            return super::process::run(command, &source);
        }
        static_keys.ok_or_else(|| {
            format!("profile {name} has no aws_access_key_id/aws_secret_access_key, role_arn or credential_process")
        })
    }

    fn credential_source(&self, kind: &str) -> Result<Credentials, String> {
        let found = match kind {
            "Environment" => super::environment::Environment::from_env().credentials(),
            "Ec2InstanceMetadata" => super::imds::ImdsProvider::new(self.ctx.imds.clone()).credentials(),
            "EcsContainer" => super::container::Container::from_env().credentials(),
            other => {
                return Err(format!(
                    "credential_source `{other}` is not one of Environment, Ec2InstanceMetadata, EcsContainer"
                ))
            }
        };
        found.map(|c| (*c).clone()).map_err(|e| e.to_string())
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
            .map_err(|why| CredentialsError::failed(source, why))
    }
}
