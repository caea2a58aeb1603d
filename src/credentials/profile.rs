//! Profiles from the shared config and credentials files: static keys,
//! `role_arn` with `source_profile` or `credential_source`,
//! `web_identity_token_file` and `credential_process`; plus the profile's
//! `region` for the region chain.
//!
//! The files are read once at start, as the SDKs do; what a profile points at
//! (a token file, a process, STS) is asked again at every refresh.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ini, Context, Credentials, CredentialsError, ProvideCredentials, Static};
use crate::aws::client::Client;
use crate::aws::sts::{self, Sts};

/// Both files, merged per profile name (credentials-file keys win).
pub struct Profiles {
    profiles: HashMap<String, HashMap<String, String>>,
    /// Files that exist but could not be parsed, for error messages.
    problems: Vec<String>,
    files: Vec<PathBuf>,
}

impl Profiles {
    pub fn from_env() -> Profiles {
        let home = super::env_var("HOME").map(PathBuf::from);
        let path = |var: &str, default: &str| {
            super::env_var(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        Profiles::load(
            path("AWS_CONFIG_FILE", ".aws/config"),
            path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        )
    }

    pub fn load(config: Option<PathBuf>, credentials: Option<PathBuf>) -> Profiles {
        let mut profiles: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for (path, is_config) in [(config, true), (credentials, false)] {
            let Some(path) = path else { continue };
            files.push(path.clone());
            let sections = match read(&path) {
                Ok(Some(sections)) => sections,
                Ok(None) => continue,
                Err(why) => {
                    log::warn!("ignoring {}: {why}", path.display());
                    problems.push(format!("{}: {why}", path.display()));
                    continue;
                }
            };
            for (section, keys) in sections {
                let name = if is_config {
                    match section.strip_prefix("profile ") {
                        Some(name) => name.trim().to_string(),
                        // Only `[default]` may omit the `profile ` prefix in the config file.
                        None if section == "default" => section,
                        None => continue,
                    }
                } else {
                    section
                };
                profiles.entry(name).or_default().extend(keys);
            }
        }
        Profiles {
            profiles,
            problems,
            files,
        }
    }

    pub fn get(&self, name: &str) -> Option<&HashMap<String, String>> {
        self.profiles.get(name)
    }

    pub fn region(&self, name: &str) -> Option<String> {
        self.get(name)?
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
    }

    fn not_found(&self, name: &str) -> String {
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        let mut why = if files.is_empty() {
            "no config files (HOME, AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE are not set)"
                .to_string()
        } else {
            format!("no profile `{name}` in {}", files.join(" or "))
        };
        for problem in &self.problems {
            why.push_str(&format!(" ({problem})"));
        }
        why
    }
}

fn read(path: &Path) -> Result<Option<ini::Sections>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => ini::parse(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

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
        let static_keys = match (get("aws_access_key_id"), get("aws_secret_access_key")) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
                session_token: get("aws_session_token").map(str::to_string),
                expiry: None,
                source: source.clone(),
            }),
            _ => None,
        };
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
            "Environment" => super::env::Environment::from_env().credentials(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_files_and_reads_regions() {
        let dir = std::env::temp_dir().join(format!("sma-profiles-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config");
        let creds = dir.join("credentials");
        std::fs::write(
            &config,
            "[default]\nregion = us-west-2\n[profile dev]\nregion = eu-west-1\naws_access_key_id = FROMCONFIG\n[dev]\nregion = ignored\n",
        )
        .unwrap();
        std::fs::write(
            &creds,
            "[dev]\naws_access_key_id = FROMCREDS\naws_secret_access_key = S\n",
        )
        .unwrap();
        let p = Profiles::load(Some(config), Some(creds));
        assert_eq!(p.region("default").as_deref(), Some("us-west-2"));
        assert_eq!(p.region("dev").as_deref(), Some("eu-west-1"));
        assert_eq!(p.get("dev").unwrap()["aws_access_key_id"], "FROMCREDS");
        assert!(p.not_found("nope").contains("no profile `nope`"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
