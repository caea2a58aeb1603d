//! The settings table: every setting, the key(s) it is written under, its
//! default, and the function that checks a value and stores it. One row per
//! setting, so the flat and the nested spelling of a key (and the Lambda
//! extension's variable standing for it) all go through the same check and
//! give the same message.
//!
//! Values are read from `toml::Value` by hand rather than through serde's
//! derive, so that every refusal names the key and the range allowed (serde
//! would say "invalid type" with no range).

use std::path::PathBuf;

use super::callers::{
    set_caller_access_key_id, set_caller_auth, set_caller_secret_access_key_file,
    set_cloud_extensions_port, CallerAuth,
};
use super::error::{invalid, ConfigError};
use super::prefetch::{set_prefetch, Prefetch};
use super::templates::set_templates;
use super::Config;

/// `log_level`: the least severe event logged; `None` logs nothing.
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
            log_json: false,
            log_to_file: true,
            http_port: 2773,
            bind_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            allow_non_loopback: false,
            unix_socket_path: None,
            unix_socket_mode: 0o660,
            unix_socket_group: None,
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
            max_roles: 20,
            prefetch: Prefetch::default(),
            metrics_address: None,
            parameter_store: true,
            parameter_store_ttl_seconds: 300,
            caller_auth: CallerAuth::Credentials,
            caller_access_key_id: None,
            caller_secret_access_key_file: None,
            cloud_extensions_port: None,
            templates: Vec::new(),
            other_capabilities: Vec::new(),
        }
    }
}

/// Checks one value and stores it; the `&str` is the key as written (flat or
/// dotted), for the error message.
pub(super) type Setter = fn(&mut Config, &toml::Value, &str) -> Result<(), ConfigError>;

/// A setting: its flat name (none for settings only 3.x has) and its place in
/// 3.x's nested layout.
pub(super) struct Setting {
    pub(super) flat: Option<&'static str>,
    pub(super) nested: &'static str,
    pub(super) set: Setter,
}

/// Every setting, in the order docs/configuration.md lists them. Sections are the
/// prefixes of the nested paths (`logging`, `capabilities`, ...).
#[rustfmt::skip]
pub(super) const SETTINGS: &[Setting] = &[
    Setting { flat: Some("log_level"), nested: "logging.log_level", set: set_log_level },
    Setting { flat: Some("log_format"), nested: "logging.log_format", set: set_log_format },
    Setting { flat: Some("log_to_file"), nested: "logging.log_to_file", set: set_log_to_file },
    Setting { flat: None, nested: "capabilities.secrets_manager.enabled", set: set_enabled },
    Setting { flat: Some("http_port"), nested: "capabilities.secrets_manager.http_port", set: set_http_port },
    Setting { flat: Some("region"), nested: "capabilities.secrets_manager.region", set: set_region },
    Setting { flat: Some("ttl_seconds"), nested: "capabilities.secrets_manager.cache.ttl_seconds", set: set_ttl_seconds },
    Setting { flat: Some("cache_size"), nested: "capabilities.secrets_manager.cache.cache_size", set: set_cache_size },
    Setting { flat: Some("ssrf_headers"), nested: "capabilities.secrets_manager.security.ssrf_headers", set: set_ssrf_headers },
    Setting { flat: Some("ssrf_env_variables"), nested: "capabilities.secrets_manager.security.ssrf_env_variables", set: set_ssrf_env_variables },
    Setting { flat: Some("path_prefix"), nested: "capabilities.secrets_manager.path_prefix", set: set_path_prefix },
    Setting { flat: Some("max_conn"), nested: "capabilities.secrets_manager.max_conn", set: set_max_conn },
    Setting { flat: Some("max_roles"), nested: "capabilities.secrets_manager.max_roles", set: set_max_roles },
    Setting { flat: Some("ignore_transient_errors"), nested: "capabilities.secrets_manager.ignore_transient_errors", set: set_ignore_transient_errors },
    Setting { flat: Some("validate_credentials"), nested: "capabilities.secrets_manager.validate_credentials", set: set_validate_credentials },
    Setting { flat: Some("credentials_file_path"), nested: "capabilities.secrets_manager.credentials_file_path", set: set_credentials_file_path },
    Setting { flat: Some("prefetch"), nested: "capabilities.secrets_manager.prefetch", set: set_prefetch },
    // Not in AWS's agents.
    Setting { flat: Some("bind_address"), nested: "capabilities.secrets_manager.bind_address", set: set_bind_address },
    Setting { flat: Some("allow_non_loopback"), nested: "capabilities.secrets_manager.allow_non_loopback", set: set_allow_non_loopback },
    Setting { flat: Some("unix_socket_path"), nested: "capabilities.secrets_manager.unix_socket_path", set: set_unix_socket_path },
    Setting { flat: Some("unix_socket_mode"), nested: "capabilities.secrets_manager.unix_socket_mode", set: set_unix_socket_mode },
    Setting { flat: Some("unix_socket_group"), nested: "capabilities.secrets_manager.unix_socket_group", set: set_unix_socket_group },
    Setting { flat: Some("metrics_address"), nested: "capabilities.secrets_manager.metrics_address", set: set_metrics_address },
    Setting { flat: Some("caller_auth"), nested: "capabilities.secrets_manager.caller_auth", set: set_caller_auth },
    Setting { flat: Some("caller_access_key_id"), nested: "capabilities.secrets_manager.caller_access_key_id", set: set_caller_access_key_id },
    Setting { flat: Some("caller_secret_access_key_file"), nested: "capabilities.secrets_manager.caller_secret_access_key_file", set: set_caller_secret_access_key_file },
    Setting { flat: Some("cloud_extensions_port"), nested: "capabilities.secrets_manager.cloud_extensions_port", set: set_cloud_extensions_port },
    Setting { flat: Some("templates"), nested: "capabilities.secrets_manager.templates", set: set_templates },
    // Where 3.x would put a second capability.
    Setting { flat: Some("parameter_store_enabled"), nested: "capabilities.parameter_store.enabled", set: set_parameter_store },
    Setting { flat: Some("parameter_store_ttl_seconds"), nested: "capabilities.parameter_store.cache.ttl_seconds", set: set_parameter_store_ttl },
];

fn set_log_level(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.log_level = match value.as_str().map(str::to_ascii_uppercase).as_deref() {
        Some("DEBUG") => LogLevel::Debug,
        Some("INFO") => LogLevel::Info,
        Some("WARN") => LogLevel::Warn,
        Some("ERROR") => LogLevel::Error,
        Some("NONE") => LogLevel::None,
        _ => return Err(invalid(key, "one of DEBUG, INFO, WARN, ERROR, NONE")),
    };
    Ok(())
}

fn set_log_format(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.log_json = match value.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("text") => false,
        Some("json") => true,
        _ => return Err(invalid(key, "text or json")),
    };
    Ok(())
}

fn set_log_to_file(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.log_to_file = boolean(value, key)?;
    Ok(())
}

fn set_enabled(_: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    match boolean(value, key)? {
        true => Ok(()),
        false => Err(ConfigError::Disabled),
    }
}

fn set_ignore_transient_errors(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.ignore_transient_errors = boolean(value, key)?;
    Ok(())
}

fn set_validate_credentials(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.validate_credentials = boolean(value, key)?;
    Ok(())
}

fn set_http_port(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.http_port = port(value, key)?;
    Ok(())
}

/// A listener's port: unprivileged, or 0 for one the OS picks.
pub(super) fn port(value: &toml::Value, key: &str) -> Result<u16, ConfigError> {
    let allowed = "an integer from 1024 to 65535, or 0 to let the OS pick";
    match integer(value) {
        Some(0) => Ok(0),
        Some(port) if (1024..=65535).contains(&port) => Ok(port as u16),
        _ => Err(invalid(key, allowed)),
    }
}

fn set_ttl_seconds(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.ttl_seconds = ranged(value, 0, 3600, key, "an integer from 0 to 3600")?;
    Ok(())
}

fn set_bind_address(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let allowed = "an IP address such as \"127.0.0.1\" or \"::1\"";
    let address = non_empty(value).and_then(|v| v.parse().ok());
    c.bind_address = address.ok_or_else(|| invalid(key, allowed))?;
    Ok(())
}

fn set_allow_non_loopback(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.allow_non_loopback = boolean(value, key)?;
    Ok(())
}

fn set_unix_socket_path(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let path = non_empty(value).ok_or_else(|| invalid(key, "a file path"))?;
    c.unix_socket_path = Some(PathBuf::from(path));
    Ok(())
}

/// Octal permission bits as a string (`"0660"`, `"660"`), at most `0777`.
/// Not a bare number: TOML reads `660` as decimal, which would silently be
/// another mode (and `0o660` cannot be told apart from the decimal 432).
fn set_unix_socket_mode(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let allowed = "permission bits as a string of octal digits such as \"0660\", at most \"0777\"";
    let mode = match value {
        toml::Value::String(s) => u32::from_str_radix(s.trim(), 8).ok(),
        _ => None,
    };
    c.unix_socket_mode = mode
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| invalid(key, allowed))?;
    Ok(())
}

fn set_unix_socket_group(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let group = non_empty(value).ok_or_else(|| invalid(key, "a group name or number"))?;
    c.unix_socket_group = Some(group.to_string());
    Ok(())
}

fn set_metrics_address(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let allowed = "an IP address and port, such as \"0.0.0.0:9102\" or \"[::1]:9102\"";
    let address = non_empty(value).and_then(|v| v.parse().ok());
    c.metrics_address = Some(address.ok_or_else(|| invalid(key, allowed))?);
    Ok(())
}

fn set_parameter_store(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.parameter_store = boolean(value, key)?;
    Ok(())
}

fn set_parameter_store_ttl(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.parameter_store_ttl_seconds = ranged(value, 0, 3600, key, "an integer from 0 to 3600")?;
    Ok(())
}

fn set_cache_size(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.cache_size = ranged(value, 1, 1000, key, "an integer from 1 to 1000")? as usize;
    Ok(())
}

fn set_max_conn(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.max_conn = ranged(value, 1, 1000, key, "an integer from 1 to 1000")? as usize;
    Ok(())
}

fn set_max_roles(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    c.max_roles = ranged(value, 1, 20, key, "an integer from 1 to 20")? as usize;
    Ok(())
}

fn set_region(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let region = non_empty(value).ok_or_else(|| invalid(key, "a non-empty string"))?;
    c.region = Some(region.to_string());
    Ok(())
}

fn set_path_prefix(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let allowed = "a string starting with `/`";
    let prefix = value.as_str().ok_or_else(|| invalid(key, allowed))?;
    if !prefix.starts_with('/') {
        return Err(invalid(key, allowed));
    }
    c.path_prefix = prefix.to_string();
    Ok(())
}

fn set_ssrf_headers(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let allowed = "a non-empty list of header names";
    let headers = string_list(value).ok_or_else(|| invalid(key, allowed))?;
    let valid = |h: &String| h.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !headers.iter().all(valid) {
        return Err(invalid(key, allowed));
    }
    c.ssrf_headers = headers;
    Ok(())
}

fn set_ssrf_env_variables(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.ssrf_env_variables = string_list(value)
        .ok_or_else(|| invalid(key, "a non-empty list of environment variable names"))?;
    Ok(())
}

fn set_credentials_file_path(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let path = non_empty(value).ok_or_else(|| invalid(key, "a non-empty path string"))?;
    c.credentials_file_path = Some(PathBuf::from(path));
    Ok(())
}

fn boolean(value: &toml::Value, key: &str) -> Result<bool, ConfigError> {
    value.as_bool().ok_or_else(|| invalid(key, "true or false"))
}

/// A whole number written bare (`300`) or quoted (`"300"`, `'300'`), as AWS's agent accepts.
fn integer(value: &toml::Value) -> Option<i64> {
    match value {
        toml::Value::Integer(n) => Some(*n),
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A number, whole or not, bare or quoted.
pub(super) fn number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Float(x) => Some(*x),
        toml::Value::Integer(n) => Some(*n as f64),
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn ranged(
    value: &toml::Value,
    min: i64,
    max: i64,
    key: &str,
    allowed: &'static str,
) -> Result<u64, ConfigError> {
    match integer(value) {
        Some(n) if (min..=max).contains(&n) => Ok(n as u64),
        _ => Err(invalid(key, allowed)),
    }
}

pub(super) fn non_empty(value: &toml::Value) -> Option<&str> {
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
    use crate::config::err;

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
    fn defaults_of_the_new_keys() {
        let c = Config::default();
        assert_eq!(c.max_roles, 20);
        assert_eq!(c.prefetch.cache_buffer_ratio, 0.8);
        assert_eq!(c.prefetch.max_jitter_seconds, 0);
        assert!(c.prefetch.secrets.is_empty() && c.prefetch.filter_tags.is_empty());
        assert!(!c.prefetch.is_requested());
    }

    #[test]
    fn enabled_false_is_refused() {
        let e = err("[capabilities.secrets_manager]\nenabled = false\n");
        assert!(e.contains("capabilities.secrets_manager.enabled"), "{e}");
        assert!(e.contains("without its Secrets Manager part"), "{e}");
        assert!(e.contains("set it to true"), "{e}");
        assert_eq!(
            Config::parse("[capabilities.secrets_manager]\nenabled = false\n"),
            Err(ConfigError::Disabled)
        );
    }
}
