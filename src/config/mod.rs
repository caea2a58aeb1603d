//! The config: the settings the agent runs with, read from a TOML file in
//! either of AWS's agent layouts, then from the variables of AWS's Lambda
//! extension for what the file leaves unset. Every value is checked before
//! the agent starts, and a refusal is one line naming the key and what it
//! allows, so a bad file stops the agent at once instead of misbehaving later.
//!
//! The parts, in the order a file goes through them:
//! - `layout`: the two layouts (2.x's flat keys, 3.x's nested
//!   `[capabilities...]` sections) mapped onto rows of the settings table;
//!   unknown keys and one setting written twice are refused there.
//! - `settings`: the table of settings (keys, defaults, the check of each
//!   value) and `LogLevel`.
//! - `prefetch`: the `prefetch` setting, a table of lists of its own, and the
//!   IAM role ARN check.
//! - `lambda_env`: the Lambda extension's variables, each standing for a row
//!   of the table.
//! - `error`: `ConfigError`, whose `Display` is the line the user sees.
//!
//! This file holds the `Config` type, loading, and the rules between
//! settings (a non-loopback address, a socket's mode without the socket).

mod callers;
mod error;
mod lambda_env;
mod layout;
mod prefetch;
mod settings;
mod templates;

use std::path::{Path, PathBuf};

pub use callers::CallerAuth;
pub use error::ConfigError;
pub use prefetch::{is_role_arn, Prefetch, PrefetchSecret, PrefetchTag, ROLE_ARN_FORMAT};
pub use settings::LogLevel;
pub use templates::{Template, TemplateText};

use settings::SETTINGS;

/// Settings after validation. Field names are the config keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: LogLevel,
    /// `text` (AWS's agent's lines) or `json` (one object per line).
    pub log_json: bool,
    pub log_to_file: bool,
    pub http_port: u16,
    /// The API's TCP address; loopback unless `allow_non_loopback`.
    pub bind_address: std::net::IpAddr,
    pub allow_non_loopback: bool,
    /// A unix socket serving the same API, created with this mode and group.
    pub unix_socket_path: Option<PathBuf>,
    pub unix_socket_mode: u32,
    pub unix_socket_group: Option<String>,
    pub region: Option<String>,
    pub ttl_seconds: u64,
    pub cache_size: usize,
    pub ssrf_headers: Vec<String>,
    pub ssrf_env_variables: Vec<String>,
    pub path_prefix: String,
    pub max_conn: usize,
    pub ignore_transient_errors: bool,
    pub validate_credentials: bool,
    pub credentials_file_path: Option<PathBuf>,
    /// How many roles requests may name (`roleArn`).
    pub max_roles: usize,
    /// Secrets to load at start.
    pub prefetch: Prefetch,
    /// A second listener serving only `/metrics` and `/ping`, without the
    /// token (for scrapers elsewhere); none by default.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Whether `/systemsmanager/parameters/get` serves Parameter Store.
    pub parameter_store: bool,
    /// The cache TTL of parameters (`ttl_seconds` is the secrets').
    pub parameter_store_ttl_seconds: u64,
    /// What an SDK-protocol request must be signed with.
    pub caller_auth: CallerAuth,
    /// `caller_auth = "key"`: the access key ID callers sign with, and the
    /// file holding its secret (read at start).
    pub caller_access_key_id: Option<String>,
    pub caller_secret_access_key_file: Option<PathBuf>,
    /// A second listener speaking AWS's Cloud Extensions interface; none by
    /// default.
    pub cloud_extensions_port: Option<u16>,
    /// Files rendered from secrets (`[[templates]]`).
    pub templates: Vec<Template>,
    /// Sections of other capabilities found in the file (`acm`), which this
    /// agent does not provide and leaves unread.
    pub other_capabilities: Vec<String>,
}

impl Config {
    /// The file at `path` (none: all defaults), then the extension's
    /// variables from `get` for the settings the file leaves unset.
    pub fn load_with_env(
        path: Option<&Path>,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(path) => read(path)?,
            None => String::new(),
        };
        let (mut config, found) = Config::parse_found(&text).map_err(|e| in_file(e, path))?;
        config.apply_extension_vars(&found, get)?;
        Ok(config)
    }

    /// The text of a config file alone, without the extension's variables.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_found(text).map(|(config, _)| config)
    }

    /// The config and the settings the text sets (indices into `SETTINGS`).
    fn parse_found(text: &str) -> Result<(Config, Vec<usize>), ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::NotToml {
                    path: String::new(),
                    reason: e.message().to_string(),
                })?;
        let mut config = Config::default();
        let found = layout::find(&table, &mut config.other_capabilities)?;
        for f in &found {
            (SETTINGS[f.setting].set)(&mut config, f.value, f.key())?;
        }
        let found: Vec<usize> = found.iter().map(|f| f.setting).collect();
        config.check_together(&found)?;
        Ok((config, found))
    }

    /// The rules between settings: a network-facing address only when asked
    /// for twice; a socket's mode or group only with the socket.
    fn check_together(&self, found: &[usize]) -> Result<(), ConfigError> {
        if !self.bind_address.is_loopback() && !self.allow_non_loopback {
            return Err(ConfigError::NotLoopback {
                address: self.bind_address,
            });
        }
        let set = |flat: &str| {
            SETTINGS
                .iter()
                .position(|s| s.flat == Some(flat))
                .is_some_and(|i| found.contains(&i))
        };
        for key in ["unix_socket_mode", "unix_socket_group"] {
            if set(key) && self.unix_socket_path.is_none() {
                return Err(ConfigError::Needs {
                    key,
                    needs: "unix_socket_path",
                });
            }
        }
        callers::check(self)
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Names the file in an error about its syntax.
fn in_file(e: ConfigError, path: Option<&Path>) -> ConfigError {
    match (e, path) {
        (ConfigError::NotToml { reason, .. }, Some(path)) => ConfigError::NotToml {
            path: path.display().to_string(),
            reason,
        },
        (other, _) => other,
    }
}

/// The message `Config::parse` refuses `text` with, for the tests of every
/// part to match.
#[cfg(test)]
fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::parse("# just a comment\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn listeners_loopback_unless_asked_twice_and_sockets_with_their_path() {
        let c = Config::parse("bind_address = \"::1\"\n").unwrap();
        assert_eq!(c.bind_address, "::1".parse::<std::net::IpAddr>().unwrap());
        assert!(Config::parse("bind_address = \"127.0.0.2\"").is_ok());
        let e = Config::parse("bind_address = \"0.0.0.0\"").unwrap_err();
        assert_eq!(
            e,
            ConfigError::NotLoopback {
                address: [0, 0, 0, 0].into()
            }
        );
        assert!(e.to_string().contains("allow_non_loopback = true"), "{e}");
        let c = Config::parse("bind_address = \"0.0.0.0\"\nallow_non_loopback = true\n").unwrap();
        assert!(!c.bind_address.is_loopback());
        assert!(Config::parse("bind_address = \"localhost\"")
            .unwrap_err()
            .to_string()
            .contains("an IP address"));

        let c = Config::parse(
            "[capabilities.secrets_manager]\nunix_socket_path = \"/run/a.sock\"\n\
             unix_socket_mode = \"0600\"\nunix_socket_group = \"app\"\n",
        )
        .unwrap();
        assert_eq!(c.unix_socket_path, Some(PathBuf::from("/run/a.sock")));
        assert_eq!(
            (c.unix_socket_mode, c.unix_socket_group.as_deref()),
            (0o600, Some("app"))
        );
        assert_eq!(Config::default().unix_socket_mode, 0o660);
        for bad in ["\"0888\"", "\"1777\"", "-1", "true", "0o640", "660"] {
            let text = format!("unix_socket_path = \"/s\"\nunix_socket_mode = {bad}");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
        assert_eq!(
            Config::parse("unix_socket_group = \"app\"")
                .unwrap_err()
                .to_string(),
            "config key `unix_socket_group` needs `unix_socket_path` as well"
        );
    }
}
