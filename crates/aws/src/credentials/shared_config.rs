//! The shared config and credentials files (`~/.aws/config`,
//! `~/.aws/credentials`), read once at start and merged per profile: the
//! profile sources' settings, and the profile's `region` and `endpoint_url`
//! for start-up.

use std::collections::HashMap;
use std::path::PathBuf;

use super::ini;
use secrets_manager_agent_core::env;

/// Both files, merged per profile name (credentials-file keys win).
pub struct Profiles {
    profiles: HashMap<String, ini::Section>,
    /// Files that exist but could not be parsed, for error messages.
    problems: Vec<String>,
    files: Vec<PathBuf>,
}

impl Profiles {
    pub fn from_env() -> Profiles {
        let home = env::var("HOME").map(PathBuf::from);
        let path = |var: &str, default: &str| {
            env::var(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        Profiles::load(
            path("AWS_CONFIG_FILE", ".aws/config"),
            path("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        )
    }

    pub fn load(config: Option<PathBuf>, credentials: Option<PathBuf>) -> Profiles {
        let mut profiles: HashMap<String, ini::Section> = HashMap::new();
        let mut problems = Vec::new();
        let mut files = Vec::new();
        for (path, is_config) in [(config, true), (credentials, false)] {
            let Some(path) = path else { continue };
            files.push(path.clone());
            let sections = match ini::read_file(&path) {
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

    pub fn get(&self, name: &str) -> Option<&ini::Section> {
        self.profiles.get(name)
    }

    pub fn region(&self, name: &str) -> Option<String> {
        self.get(name)?
            .get("region")
            .filter(|r| !r.is_empty())
            .cloned()
    }

    pub fn not_found(&self, name: &str) -> String {
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
