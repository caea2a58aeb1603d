//! The config file: every key of AWS's agent, its default, and the rules that
//! reject bad input before the agent starts.
//!
//! Parsing goes through the `toml` crate into a loose value table first, so that
//! each key can be checked by hand and every error names the key and what is
//! allowed (serde's derive would report "invalid type" with no range).

use std::fmt;
use std::path::{Path, PathBuf};

/// Settings after validation. Field names are the config keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: LogLevel,
    pub log_to_file: bool,
    pub http_port: u16,
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
    None,
}

impl LogLevel {
    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::None => log::LevelFilter::Off,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            log_level: LogLevel::Info,
            log_to_file: true,
            http_port: 2773,
            region: None,
            ttl_seconds: 300,
            cache_size: 1000,
            ssrf_headers: vec![
                "X-Aws-Parameters-Secrets-Token".to_string(),
                "X-Vault-Token".to_string(),
            ],
            ssrf_env_variables: vec![
                "AWS_TOKEN".to_string(),
                "AWS_SESSION_TOKEN".to_string(),
                "AWS_CONTAINER_AUTHORIZATION_TOKEN".to_string(),
            ],
            path_prefix: "/v1/".to_string(),
            max_conn: 800,
            ignore_transient_errors: true,
            validate_credentials: true,
            credentials_file_path: None,
        }
    }
}

/// Why a config file was refused. `Display` is the one line the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Read {
        path: String,
        reason: String,
    },
    NotToml {
        path: String,
        reason: String,
    },
    UnknownKey(String),
    Invalid {
        key: &'static str,
        allowed: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, reason } => {
                write!(f, "cannot read config file {path}: {reason}")
            }
            ConfigError::NotToml { path, reason } => {
                let reason = reason.trim().replace('\n', " ");
                write!(f, "config file {path} is not valid TOML: {reason}")
            }
            // A key may hold any character (quoted TOML keys); escaping keeps
            // the message on one line.
            ConfigError::UnknownKey(key) => write!(
                f,
                "unknown config key `{}`; valid keys are: {}",
                key.escape_debug(),
                KEYS.join(", ")
            ),
            ConfigError::Invalid { key, allowed } => {
                write!(
                    f,
                    "invalid value for config key `{key}`: expected {allowed}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

const KEYS: &[&str] = &[
    "log_level",
    "log_to_file",
    "http_port",
    "region",
    "ttl_seconds",
    "cache_size",
    "ssrf_headers",
    "ssrf_env_variables",
    "path_prefix",
    "max_conn",
    "ignore_transient_errors",
    "validate_credentials",
    "credentials_file_path",
];

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::NotToml { reason, .. } => ConfigError::NotToml {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::NotToml {
                    path: String::new(),
                    reason: e.message().to_string(),
                })?;
        let mut config = Config::default();
        for (key, value) in &table {
            config.set(key, value)?;
        }
        Ok(config)
    }

    fn set(&mut self, key: &str, value: &toml::Value) -> Result<(), ConfigError> {
        match key {
            "log_level" => {
                self.log_level = match value.as_str().map(str::to_ascii_uppercase).as_deref() {
                    Some("DEBUG") => LogLevel::Debug,
                    Some("INFO") => LogLevel::Info,
                    Some("WARN") => LogLevel::Warn,
                    Some("ERROR") => LogLevel::Error,
                    Some("NONE") => LogLevel::None,
                    _ => {
                        return Err(invalid(
                            "log_level",
                            "one of DEBUG, INFO, WARN, ERROR, NONE",
                        ))
                    }
                }
            }
            "log_to_file" => self.log_to_file = boolean(key, value)?,
            "ignore_transient_errors" => self.ignore_transient_errors = boolean(key, value)?,
            "validate_credentials" => self.validate_credentials = boolean(key, value)?,
            "http_port" => {
                let allowed = "an integer from 1024 to 65535, or 0 to let the OS pick";
                let port = integer(value).ok_or(invalid("http_port", allowed))?;
                if port != 0 && !(1024..=65535).contains(&port) {
                    return Err(invalid("http_port", allowed));
                }
                self.http_port = port as u16;
            }
            "ttl_seconds" => {
                self.ttl_seconds =
                    ranged(value, 0, 3600, "ttl_seconds", "an integer from 0 to 3600")?
            }
            "cache_size" => {
                self.cache_size =
                    ranged(value, 1, 1000, "cache_size", "an integer from 1 to 1000")? as usize
            }
            "max_conn" => {
                self.max_conn =
                    ranged(value, 1, 1000, "max_conn", "an integer from 1 to 1000")? as usize
            }
            "region" => {
                let region = non_empty(value).ok_or(invalid("region", "a non-empty string"))?;
                self.region = Some(region.to_string());
            }
            "path_prefix" => {
                let allowed = "a string starting with `/`";
                let prefix = value.as_str().ok_or(invalid("path_prefix", allowed))?;
                if !prefix.starts_with('/') {
                    return Err(invalid("path_prefix", allowed));
                }
                self.path_prefix = prefix.to_string();
            }
            "ssrf_headers" => {
                self.ssrf_headers = string_list(value)
                    .ok_or(invalid("ssrf_headers", "a non-empty list of header names"))?;
                let valid = |h: &String| h.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                if !self.ssrf_headers.iter().all(valid) {
                    return Err(invalid("ssrf_headers", "a non-empty list of header names"));
                }
            }
            "ssrf_env_variables" => {
                self.ssrf_env_variables = string_list(value).ok_or(invalid(
                    "ssrf_env_variables",
                    "a non-empty list of environment variable names",
                ))?
            }
            "credentials_file_path" => {
                let path = non_empty(value)
                    .ok_or(invalid("credentials_file_path", "a non-empty path string"))?;
                self.credentials_file_path = Some(PathBuf::from(path));
            }
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }
}

fn invalid(key: &'static str, allowed: &'static str) -> ConfigError {
    ConfigError::Invalid { key, allowed }
}

fn boolean(key: &str, value: &toml::Value) -> Result<bool, ConfigError> {
    let key = KEYS.iter().find(|k| **k == key).copied().unwrap_or("?");
    value.as_bool().ok_or(invalid(key, "true or false"))
}

/// A whole number written bare (`300`) or quoted (`"300"`, `'300'`), as AWS's agent accepts.
fn integer(value: &toml::Value) -> Option<i64> {
    match value {
        toml::Value::Integer(n) => Some(*n),
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn ranged(
    value: &toml::Value,
    min: i64,
    max: i64,
    key: &'static str,
    allowed: &'static str,
) -> Result<u64, ConfigError> {
    match integer(value) {
        Some(n) if (min..=max).contains(&n) => Ok(n as u64),
        _ => Err(invalid(key, allowed)),
    }
}

fn non_empty(value: &toml::Value) -> Option<&str> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty())
}

fn string_list(value: &toml::Value) -> Option<Vec<String>> {
    let items = value.as_array()?;
    let list: Option<Vec<String>> = items
        .iter()
        .map(|v| non_empty(v).map(str::to_string))
        .collect();
    list.filter(|l| !l.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(
            Config::parse("# just a comment\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_key_accepts_good_values() {
        let c = Config::parse(
            r#"
            log_level = "debug"
            log_to_file = false
            http_port = "4000"
            region = "eu-west-1"
            ttl_seconds = '0'
            cache_size = 1
            ssrf_headers = ["X-Token"]
            ssrf_env_variables = ["MY_TOKEN"]
            path_prefix = "/secrets/"
            max_conn = 1000
            ignore_transient_errors = false
            validate_credentials = false
            credentials_file_path = "/etc/creds"
            "#,
        )
        .unwrap();
        assert_eq!(c.log_level, LogLevel::Debug);
        assert!(!c.log_to_file);
        assert_eq!(c.http_port, 4000);
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.ttl_seconds, 0);
        assert_eq!(c.cache_size, 1);
        assert_eq!(c.ssrf_headers, vec!["X-Token"]);
        assert_eq!(c.ssrf_env_variables, vec!["MY_TOKEN"]);
        assert_eq!(c.path_prefix, "/secrets/");
        assert_eq!(c.max_conn, 1000);
        assert!(!c.ignore_transient_errors);
        assert!(!c.validate_credentials);
        assert_eq!(c.credentials_file_path, Some(PathBuf::from("/etc/creds")));
    }

    #[test]
    fn log_levels_any_case() {
        for (text, level) in [
            ("DEBUG", LogLevel::Debug),
            ("Info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("ERROR", LogLevel::Error),
            ("none", LogLevel::None),
        ] {
            let c = Config::parse(&format!("log_level = \"{text}\"")).unwrap();
            assert_eq!(c.log_level, level);
        }
        assert!(err("log_level = \"TRACE\"").contains("`log_level`"));
    }

    #[test]
    fn ranges_are_enforced_and_named() {
        for (text, key) in [
            ("http_port = 80", "http_port"),
            ("http_port = 1023", "http_port"),
            ("http_port = 65536", "http_port"),
            ("ttl_seconds = 3601", "ttl_seconds"),
            ("ttl_seconds = -1", "ttl_seconds"),
            ("cache_size = 0", "cache_size"),
            ("cache_size = 1001", "cache_size"),
            ("max_conn = 0", "max_conn"),
            ("max_conn = 1001", "max_conn"),
            ("max_conn = \"lots\"", "max_conn"),
            ("max_conn = 1.5", "max_conn"),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
            assert!(e.contains("expected"), "{text}: {e}");
        }
        assert_eq!(Config::parse("http_port = 0").unwrap().http_port, 0);
        assert_eq!(Config::parse("http_port = 65535").unwrap().http_port, 65535);
        assert_eq!(
            Config::parse("ttl_seconds = 3600").unwrap().ttl_seconds,
            3600
        );
    }

    #[test]
    fn wrong_types_and_shapes_are_refused() {
        assert!(err("log_to_file = \"yes\"").contains("`log_to_file`"));
        assert!(err("validate_credentials = 1").contains("`validate_credentials`"));
        assert!(err("ignore_transient_errors = []").contains("`ignore_transient_errors`"));
        assert!(err("ssrf_headers = []").contains("`ssrf_headers`"));
        assert!(err("ssrf_headers = \"X-Token\"").contains("`ssrf_headers`"));
        assert!(err("ssrf_headers = [\"bad header\"]").contains("`ssrf_headers`"));
        assert!(err("ssrf_env_variables = []").contains("`ssrf_env_variables`"));
        assert!(err("path_prefix = \"v1/\"").contains("`path_prefix`"));
        assert!(err("region = \"\"").contains("`region`"));
        assert!(err("credentials_file_path = 3").contains("`credentials_file_path`"));
    }

    #[test]
    fn unknown_keys_and_non_toml_are_refused() {
        let e = err("ttl = 5");
        assert!(e.contains("unknown config key `ttl`"), "{e}");
        assert!(err("this is not toml").contains("not valid TOML"));
        assert!(err("[section]\nkey = 1").contains("unknown config key `section`"));
        let e = err("\"two\\nlines\" = 1");
        assert!(!e.contains('\n') && e.contains("two\\nlines"), "{e}");
    }
}
