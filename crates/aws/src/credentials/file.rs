//! `credentials_file_path`: credentials from one AWS credentials-format file,
//! used instead of the default chain (as AWS's agent does). The file is
//! re-read whenever its modification time changes, so a rotation tool can
//! rewrite it under a running agent; while it is missing or broken the last
//! good credentials stay in use.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::ini::{self, ReadError};
use crate::identity::{Credentials, CredentialsError, ProvideCredentials};
use secrets_manager_agent_core::sync::lock;

const SOURCE: &str = "credentials_file_path";

pub struct CredentialsFile {
    path: PathBuf,
    profile: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    read_once: bool,
    /// The version last read, good or not.
    seen: Version,
    good: Option<Arc<Credentials>>,
    error: Option<String>,
}

impl CredentialsFile {
    pub fn new(path: PathBuf, profile: String) -> CredentialsFile {
        CredentialsFile {
            path,
            profile,
            state: Mutex::new(State::default()),
        }
    }

    fn load(&self) -> Result<Arc<Credentials>, FileError> {
        let meta = fs::metadata(&self.path).map_err(|e| FileError::Read(ReadError::Io(e)))?;
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "{} is readable by other users (mode {:o}); restrict it to 0600",
                self.path.display(),
                meta.permissions().mode() & 0o777
            );
        }
        let text = fs::read_to_string(&self.path).map_err(|e| FileError::Read(ReadError::Io(e)))?;
        let sections = ini::parse(&text).map_err(|e| FileError::Read(ReadError::Syntax(e)))?;
        let section = sections
            .get(&self.profile)
            .ok_or_else(|| FileError::NoSection(self.profile.clone()))?;
        ini::static_keys(section, SOURCE)
            .map(Arc::new)
            .ok_or_else(|| FileError::NoKeys(self.profile.clone()))
    }
}

/// Why the file gave no credentials.
#[derive(Debug)]
enum FileError {
    Read(ReadError),
    /// No `[profile]` section.
    NoSection(String),
    /// The section lacks a key.
    NoKeys(String),
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileError::Read(e) => write!(f, "{e}"),
            FileError::NoSection(profile) => write!(f, "no [{profile}] section"),
            FileError::NoKeys(profile) => write!(
                f,
                "[{profile}] lacks aws_access_key_id or aws_secret_access_key"
            ),
        }
    }
}

/// What identifies one version of the file: a rewrite in place changes the
/// length or the time, a rename-over changes the inode. `None`: missing.
type Version = Option<(SystemTime, u64, u64)>;

fn version(path: &std::path::Path) -> Version {
    let meta = fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

impl ProvideCredentials for CredentialsFile {
    fn credentials(&self) -> Result<Arc<Credentials>, CredentialsError> {
        let current = version(&self.path);
        let mut state = lock(&self.state);
        if !state.read_once || current != state.seen {
            state.read_once = true;
            state.seen = current;
            match self.load() {
                Ok(creds) => {
                    log::info!("read credentials from {}", self.path.display());
                    state.good = Some(creds);
                    state.error = None;
                }
                Err(why) => {
                    let why = format!("{}: {why}", self.path.display());
                    match state.good {
                        Some(_) => log::warn!("{why}; keeping the last good credentials"),
                        None => log::warn!("{why}"),
                    }
                    state.error = Some(why);
                }
            }
        }
        match (&state.good, &state.error) {
            (Some(creds), _) => Ok(creds.clone()),
            (None, why) => Err(CredentialsError::failed(
                SOURCE,
                why.clone().unwrap_or_else(|| "not read yet".into()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rereads_on_change_and_keeps_last_good() {
        let dir = std::env::temp_dir().join(format!("sma-credfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        let set_mtime = |secs: u64| {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        let provider = CredentialsFile::new(path.clone(), "default".into());
        assert!(provider.credentials().is_err(), "missing file");

        fs::write(
            &path,
            "[default]\naws_access_key_id = A1\naws_secret_access_key = S1\n",
        )
        .unwrap();
        set_mtime(1_000);
        assert_eq!(provider.credentials().unwrap().access_key_id, "A1");

        fs::write(&path, "garbage without sections\n").unwrap();
        set_mtime(2_000);
        assert_eq!(
            provider.credentials().unwrap().access_key_id,
            "A1",
            "last good kept"
        );

        fs::write(
            &path,
            "[default]\naws_access_key_id = A2\naws_secret_access_key = S2\n",
        )
        .unwrap();
        set_mtime(3_000);
        assert_eq!(provider.credentials().unwrap().access_key_id, "A2");
        fs::remove_dir_all(&dir).unwrap();
    }
}
