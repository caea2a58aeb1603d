//! The config file: every key of AWS's agent, its default, and the rules that
//! reject bad input before the agent starts.
//!
//! Two layouts are read: the flat keys of AWS's agent 1.x/2.x (`ttl_seconds =
//! 300` at the top) and the nested sections of its 3.x successor
//! (`[capabilities.secrets_manager.cache]` holding `ttl_seconds`). One table,
//! `SETTINGS`, says where each setting may be written and which function
//! checks it, so both spellings share one check; writing both spellings of
//! one setting is refused.
//!
//! The variables of AWS's Parameters and Secrets Lambda Extension
//! (`SECRETS_MANAGER_TTL`, ...) stand for settings of the same table and go
//! through the same checks; they fill what the file leaves unset.
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
    /// Sections of other capabilities found in the file (`acm`), which this
    /// agent does not provide and leaves unread.
    pub other_capabilities: Vec<String>,
}

/// The `prefetch` table: what to load into the cache at start.
#[derive(Debug, Clone, PartialEq)]
pub struct Prefetch {
    /// The share of the cache that prefetching may fill, 0.1 to 1.0.
    pub cache_buffer_ratio: f64,
    /// Start prefetching after a random delay of up to this many seconds.
    pub max_jitter_seconds: u64,
    pub secrets: Vec<PrefetchSecret>,
    pub filter_tags: Vec<PrefetchTag>,
}

/// One secret named for prefetching, optionally read through a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchSecret {
    pub secret_id: String,
    pub role_arn: Option<String>,
}

/// Prefetch every secret carrying this tag key, optionally through a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefetchTag {
    pub key: String,
    pub role_arn: Option<String>,
}

impl Prefetch {
    /// Whether anything is named for prefetching.
    pub fn is_requested(&self) -> bool {
        !self.secrets.is_empty() || !self.filter_tags.is_empty()
    }
}

impl Default for Prefetch {
    fn default() -> Self {
        Prefetch {
            cache_buffer_ratio: 0.8,
            max_jitter_seconds: 0,
            secrets: Vec::new(),
            filter_tags: Vec::new(),
        }
    }
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
            other_capabilities: Vec::new(),
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
    /// `key` is the full dotted path, `table` the path of the table holding
    /// it ("" for the top level), `valid` the keys that table accepts.
    UnknownKey {
        key: String,
        table: String,
        valid: Vec<&'static str>,
    },
    Invalid {
        key: String,
        allowed: &'static str,
    },
    /// One setting written both flat and nested.
    Twice {
        flat: &'static str,
        nested: &'static str,
    },
    /// `enabled = false` for Secrets Manager, the only thing this agent serves.
    Disabled,
    /// `bind_address` beyond loopback without `allow_non_loopback`.
    NotLoopback {
        address: std::net::IpAddr,
    },
    /// A setting that means nothing without another one.
    Needs {
        key: &'static str,
        needs: &'static str,
    },
    /// An environment variable of AWS's Lambda extension holds a bad value.
    BadVar {
        var: &'static str,
        value: String,
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
            ConfigError::UnknownKey { key, table, valid } => {
                let key = key.escape_debug();
                write!(f, "unknown config key `{key}`; valid keys ")?;
                if !table.is_empty() {
                    write!(f, "in `{}` ", table.escape_debug())?;
                }
                write!(f, "are: {}", valid.join(", "))
            }
            ConfigError::Invalid { key, allowed } => write!(
                f,
                "invalid value for config key `{}`: expected {allowed}",
                key.escape_debug()
            ),
            ConfigError::Twice { flat, nested } => write!(
                f,
                "config keys `{flat}` and `{nested}` are the same setting; keep only one of them"
            ),
            ConfigError::BadVar {
                var,
                value,
                allowed,
            } => write!(
                f,
                "environment variable {var}={} is not valid: expected {allowed}",
                value.escape_debug()
            ),
            ConfigError::NotLoopback { address } => write!(
                f,
                "bind_address {address} is not a loopback address: clients on the network could \
                 reach the agent, and the token would travel over the network; set \
                 allow_non_loopback = true as well to accept that"
            ),
            ConfigError::Needs { key, needs } => {
                write!(f, "config key `{key}` needs `{needs}` as well")
            }
            ConfigError::Disabled => write!(
                f,
                "config key `{SM}.enabled` is false, but this agent does not run without its \
                 Secrets Manager part: remove the line or set it to true"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks one value and stores it; the `&str` is the key as written (flat or
/// dotted), for the error message.
type Setter = fn(&mut Config, &toml::Value, &str) -> Result<(), ConfigError>;

/// A setting: its flat name (none for settings only 3.x has) and its place in
/// 3.x's nested layout.
struct Setting {
    flat: Option<&'static str>,
    nested: &'static str,
    set: Setter,
}

/// 3.x's section for Secrets Manager.
const SM: &str = "capabilities.secrets_manager";

/// Every setting, in the order docs/configuration.md lists them. Sections are the
/// prefixes of the nested paths (`logging`, `capabilities`, ...).
#[rustfmt::skip]
const SETTINGS: &[Setting] = &[
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
    // Where 3.x would put a second capability.
    Setting { flat: Some("parameter_store_enabled"), nested: "capabilities.parameter_store.enabled", set: set_parameter_store },
    Setting { flat: Some("parameter_store_ttl_seconds"), nested: "capabilities.parameter_store.cache.ttl_seconds", set: set_parameter_store_ttl },
];

/// Sections of 3.x for capabilities this agent does not provide: accepted
/// (they must be tables) and not read, so a file shared with 3.x's other
/// services still starts this one.
const OTHER_CAPABILITIES: &[&str] = &["capabilities.acm"];

/// A setting found in the file: its index in `SETTINGS`, whether it was
/// written flat, and its value.
struct Found<'a> {
    setting: usize,
    flat: bool,
    value: &'a toml::Value,
}

/// The variables that configure AWS's Parameters and Secrets Lambda
/// Extension, and the setting (its nested path) each one stands for. They
/// apply where the config file does not set that setting, in Lambda and
/// elsewhere. `PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED` is read apart.
const EXTENSION_VARS: &[(&str, &str)] = &[
    (
        "PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL",
        "logging.log_level",
    ),
    (
        "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT",
        "capabilities.secrets_manager.http_port",
    ),
    (
        "PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS",
        "capabilities.secrets_manager.max_conn",
    ),
    (
        "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE",
        "capabilities.secrets_manager.cache.cache_size",
    ),
    (
        "SECRETS_MANAGER_TTL",
        "capabilities.secrets_manager.cache.ttl_seconds",
    ),
    (
        "SSM_PARAMETER_STORE_TTL",
        "capabilities.parameter_store.cache.ttl_seconds",
    ),
];
const CACHE_ENABLED: &str = "PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED";

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

    /// Sets what the extension's variables say, for settings not in `found`
    /// (indices into `SETTINGS`). A bad value names the variable.
    fn apply_extension_vars(
        &mut self,
        found: &[usize],
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let unset = |nested: &str| {
            SETTINGS
                .iter()
                .position(|s| s.nested == nested)
                .filter(|i| !found.contains(i))
        };
        let value_of = |var| {
            get(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut caching = true;
        if let Some(value) = value_of(CACHE_ENABLED) {
            caching = match value.to_ascii_uppercase().as_str() {
                "TRUE" => true,
                "FALSE" => false,
                _ => {
                    return Err(ConfigError::BadVar {
                        var: CACHE_ENABLED,
                        value,
                        allowed: "TRUE or FALSE",
                    })
                }
            };
        }
        for &(var, nested) in EXTENSION_VARS {
            let (Some(index), Some(value)) = (unset(nested), value_of(var)) else {
                continue;
            };
            // The extension's size 0 is a cache that keeps nothing.
            let size = var == "PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE";
            if size && value == "0" {
                caching = false;
                continue;
            }
            let setting = &SETTINGS[index];
            (setting.set)(self, &toml::Value::String(value.clone()), var).map_err(|e| match e {
                ConfigError::Invalid { allowed, .. } => ConfigError::BadVar {
                    var,
                    value,
                    allowed: if size {
                        "an integer from 0 to 1000 (0: no cache)"
                    } else {
                        allowed
                    },
                },
                other => other,
            })?;
        }
        if !caching {
            if unset("capabilities.secrets_manager.cache.ttl_seconds").is_some() {
                self.ttl_seconds = 0;
            }
            if unset("capabilities.parameter_store.cache.ttl_seconds").is_some() {
                self.parameter_store_ttl_seconds = 0;
            }
        }
        Ok(())
    }

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
        let mut found = Vec::new();
        collect(&table, "", &mut found, &mut config.other_capabilities)?;
        for (index, setting) in SETTINGS.iter().enumerate() {
            let written = |flat: bool| found.iter().any(|f| f.setting == index && f.flat == flat);
            if let (Some(flat), true, true) = (setting.flat, written(true), written(false)) {
                return Err(ConfigError::Twice {
                    flat,
                    nested: setting.nested,
                });
            }
        }
        for f in &found {
            let setting = &SETTINGS[f.setting];
            let key = match (f.flat, setting.flat) {
                (true, Some(flat)) => flat,
                _ => setting.nested,
            };
            (setting.set)(&mut config, f.value, key)?;
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
        Ok(())
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

/// Walks one table of the file (`section` is its dotted path, "" for the
/// top), noting each setting found and refusing what is no setting.
fn collect<'a>(
    table: &'a toml::Table,
    section: &str,
    found: &mut Vec<Found<'a>>,
    other_capabilities: &mut Vec<String>,
) -> Result<(), ConfigError> {
    for (key, value) in table {
        let path = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        // A quoted key holding a dot is one key, not a path: it matches nothing.
        let dotted = key.contains('.');
        let flat = SETTINGS
            .iter()
            .position(|s| section.is_empty() && s.flat == Some(key.as_str()));
        let nested = SETTINGS.iter().position(|s| !dotted && s.nested == path);
        if let Some(setting) = flat.or(nested) {
            found.push(Found {
                setting,
                flat: flat.is_some(),
                value,
            });
        } else if !dotted && is_section(&path) {
            let inner = value.as_table().ok_or_else(|| invalid(&path, "a table"))?;
            collect(inner, &path, found, other_capabilities)?;
        } else if !dotted && OTHER_CAPABILITIES.contains(&path.as_str()) {
            value.as_table().ok_or_else(|| invalid(&path, "a table"))?;
            other_capabilities.push(key.clone());
        } else {
            return Err(ConfigError::UnknownKey {
                key: path,
                table: section.to_string(),
                valid: keys_in(section),
            });
        }
    }
    Ok(())
}

/// Whether `path` names a section: a table holding settings.
fn is_section(path: &str) -> bool {
    SETTINGS.iter().any(|s| {
        s.nested
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

/// The keys a section accepts, for the unknown-key message.
fn keys_in(section: &str) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = Vec::new();
    let mut add = |key: &'static str| {
        if !keys.contains(&key) {
            keys.push(key);
        }
    };
    if section.is_empty() {
        SETTINGS.iter().filter_map(|s| s.flat).for_each(&mut add);
    }
    let nested = SETTINGS.iter().map(|s| s.nested);
    for path in nested.chain(OTHER_CAPABILITIES.iter().copied()) {
        let rest = if section.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(section)
                .and_then(|rest| rest.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            add(rest.split('.').next().unwrap_or(rest));
        }
    }
    keys
}

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
    let allowed = "an integer from 1024 to 65535, or 0 to let the OS pick";
    let port = integer(value).ok_or_else(|| invalid(key, allowed))?;
    if port != 0 && !(1024..=65535).contains(&port) {
        return Err(invalid(key, allowed));
    }
    c.http_port = port as u16;
    Ok(())
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

const PREFETCH_KEYS: &[&str] = &[
    "cache_buffer_ratio",
    "max_jitter_seconds",
    "secrets",
    "filter_tags",
];

fn set_prefetch(c: &mut Config, value: &toml::Value, key: &str) -> Result<(), ConfigError> {
    let table = value.as_table().ok_or_else(|| invalid(key, "a table"))?;
    let mut prefetch = Prefetch::default();
    for (name, value) in table {
        let path = format!("{key}.{name}");
        match name.as_str() {
            "cache_buffer_ratio" => {
                prefetch.cache_buffer_ratio = number(value)
                    .filter(|r| (0.1..=1.0).contains(r))
                    .ok_or_else(|| invalid(&path, "a number from 0.1 to 1.0"))?
            }
            "max_jitter_seconds" => {
                prefetch.max_jitter_seconds =
                    ranged(value, 0, 10, &path, "an integer from 0 to 10")?
            }
            "secrets" => {
                prefetch.secrets = entries(value, &path, &SECRET_ENTRY)?
                    .into_iter()
                    .map(|(secret_id, role_arn)| PrefetchSecret {
                        secret_id,
                        role_arn,
                    })
                    .collect()
            }
            "filter_tags" => {
                prefetch.filter_tags = entries(value, &path, &TAG_ENTRY)?
                    .into_iter()
                    .map(|(key, role_arn)| PrefetchTag { key, role_arn })
                    .collect()
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: path,
                    table: key.to_string(),
                    valid: PREFETCH_KEYS.to_vec(),
                })
            }
        }
    }
    c.prefetch = prefetch;
    Ok(())
}

/// The two lists of `prefetch`: their entries' required key and what the
/// error messages say they allow.
struct EntryKind {
    id_key: &'static str,
    shape: &'static str,
    id_allowed: &'static str,
}

const SECRET_ENTRY: EntryKind = EntryKind {
    id_key: "secret_id",
    shape: "a list of tables, each with `secret_id` and optionally `role_arn`",
    id_allowed: "a non-empty string (a secret's name or ARN)",
};

const TAG_ENTRY: EntryKind = EntryKind {
    id_key: "key",
    shape: "a list of tables, each with `key` and optionally `role_arn`",
    id_allowed: "a non-empty string (a tag key)",
};

/// An array of tables each holding `id_key` (a non-empty string) and an
/// optional `role_arn`, as (id, role) pairs. Errors name the entry by index.
fn entries(
    value: &toml::Value,
    path: &str,
    kind: &EntryKind,
) -> Result<Vec<(String, Option<String>)>, ConfigError> {
    let EntryKind {
        id_key,
        shape,
        id_allowed,
    } = *kind;
    let items = value.as_array().ok_or_else(|| invalid(path, shape))?;
    let mut list = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = format!("{path}[{index}]");
        let table = item.as_table().ok_or_else(|| invalid(&at, shape))?;
        let mut id = None;
        let mut role_arn = None;
        for (name, value) in table {
            let field = format!("{at}.{name}");
            if name == id_key {
                let text = non_empty(value).ok_or_else(|| invalid(&field, id_allowed))?;
                id = Some(text.to_string());
            } else if name == "role_arn" {
                let arn = value
                    .as_str()
                    .filter(|arn| is_role_arn(arn))
                    .ok_or_else(|| invalid(&field, ROLE_ARN_FORMAT))?;
                role_arn = Some(arn.to_string());
            } else {
                return Err(ConfigError::UnknownKey {
                    key: field,
                    table: at.clone(),
                    valid: vec![id_key, "role_arn"],
                });
            }
        }
        let id = id.ok_or_else(|| invalid(&format!("{at}.{id_key}"), id_allowed))?;
        list.push((id, role_arn));
    }
    Ok(list)
}

/// What `is_role_arn` accepts, for error messages.
pub const ROLE_ARN_FORMAT: &str =
    "an IAM role ARN: arn:PARTITION:iam::ACCOUNT:role/NAME (a 12-digit account; \
     a role path such as role/team/NAME is allowed)";

/// Whether `text` is an IAM role ARN: `arn:PARTITION:iam::ACCOUNT:role/NAME`,
/// with a partition such as `aws`, `aws-cn` or `aws-us-gov`, no region, a
/// 12-digit account and a role name that may follow a path
/// (`role/team/NAME`). Names and path parts use IAM's characters
/// (letters, digits, `+=,.@_-`); the name is at most 64 of them.
pub fn is_role_arn(text: &str) -> bool {
    secrets_manager_agent_aws::arn::check_role_arn(text).is_ok()
}

fn invalid(key: &str, allowed: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        allowed,
    }
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
fn number(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Float(x) => Some(*x),
        toml::Value::Integer(n) => Some(*n as f64),
        toml::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn ranged(
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

    const NESTED: &str = r#"
        [logging]
        log_level = "warn"
        log_to_file = false

        [capabilities.secrets_manager]
        enabled = true
        http_port = 4000
        region = "eu-west-1"
        path_prefix = "/secrets/"
        max_conn = 10
        max_roles = 5
        ignore_transient_errors = false
        validate_credentials = false
        credentials_file_path = "/etc/creds"

        [capabilities.secrets_manager.cache]
        ttl_seconds = 0
        cache_size = 7

        [capabilities.secrets_manager.security]
        ssrf_headers = ["X-Token"]
        ssrf_env_variables = ["MY_TOKEN"]

        [capabilities.secrets_manager.prefetch]
        cache_buffer_ratio = 0.5
        max_jitter_seconds = 10

        [[capabilities.secrets_manager.prefetch.secrets]]
        secret_id = "db/password"

        [[capabilities.secrets_manager.prefetch.secrets]]
        secret_id = "other"
        role_arn = "arn:aws:iam::123456789012:role/Reader"

        [[capabilities.secrets_manager.prefetch.filter_tags]]
        key = "Team"
        role_arn = "arn:aws-cn:iam::210987654321:role/team/Reader"
    "#;

    #[test]
    fn nested_layout_sets_every_key() {
        let c = Config::parse(NESTED).unwrap();
        assert_eq!(c.log_level, LogLevel::Warn);
        assert!(!c.log_to_file);
        assert_eq!(c.http_port, 4000);
        assert_eq!(c.region.as_deref(), Some("eu-west-1"));
        assert_eq!(c.path_prefix, "/secrets/");
        assert_eq!(c.max_conn, 10);
        assert_eq!(c.max_roles, 5);
        assert!(!c.ignore_transient_errors);
        assert!(!c.validate_credentials);
        assert_eq!(c.credentials_file_path, Some(PathBuf::from("/etc/creds")));
        assert_eq!(c.ttl_seconds, 0);
        assert_eq!(c.cache_size, 7);
        assert_eq!(c.ssrf_headers, vec!["X-Token"]);
        assert_eq!(c.ssrf_env_variables, vec!["MY_TOKEN"]);
        assert_eq!(c.prefetch.cache_buffer_ratio, 0.5);
        assert_eq!(c.prefetch.max_jitter_seconds, 10);
        assert_eq!(
            c.prefetch.secrets,
            vec![
                PrefetchSecret {
                    secret_id: "db/password".into(),
                    role_arn: None
                },
                PrefetchSecret {
                    secret_id: "other".into(),
                    role_arn: Some("arn:aws:iam::123456789012:role/Reader".into())
                },
            ]
        );
        assert_eq!(
            c.prefetch.filter_tags,
            vec![PrefetchTag {
                key: "Team".into(),
                role_arn: Some("arn:aws-cn:iam::210987654321:role/team/Reader".into())
            }]
        );
        assert!(c.prefetch.is_requested());
        assert!(c.other_capabilities.is_empty());
    }

    #[test]
    fn nested_and_flat_files_give_the_same_config() {
        let flat = Config::parse(
            "ttl_seconds = 10\ncache_size = 3\nhttp_port = 0\nlog_level = \"DEBUG\"\nmax_roles = 2\n",
        )
        .unwrap();
        let nested = Config::parse(
            "[logging]\nlog_level = \"DEBUG\"\n\
             [capabilities.secrets_manager]\nhttp_port = 0\nmax_roles = 2\n\
             [capabilities.secrets_manager.cache]\nttl_seconds = 10\ncache_size = 3\n",
        )
        .unwrap();
        assert_eq!(flat, nested);
        // Empty sections are all defaults; `enabled = true` changes nothing.
        let empty = "[logging]\n[capabilities]\n[capabilities.secrets_manager]\n\
                     [capabilities.secrets_manager.cache]\n[capabilities.secrets_manager.security]\n\
                     [capabilities.secrets_manager.prefetch]\n";
        assert_eq!(Config::parse(empty).unwrap(), Config::default());
        let enabled = "[capabilities.secrets_manager]\nenabled = true\n";
        assert_eq!(Config::parse(enabled).unwrap(), Config::default());
        // Dotted keys are the same table as sections.
        let dotted = Config::parse("capabilities.secrets_manager.cache.ttl_seconds = 9").unwrap();
        assert_eq!(dotted.ttl_seconds, 9);
    }

    #[test]
    fn parameter_store_keys_flat_and_nested() {
        let c = Config::default();
        assert!(c.parameter_store);
        assert_eq!(c.parameter_store_ttl_seconds, 300);
        let flat =
            Config::parse("parameter_store_enabled = false\nparameter_store_ttl_seconds = 0\n")
                .unwrap();
        let nested = Config::parse(
            "[capabilities.parameter_store]\nenabled = false\n\
             [capabilities.parameter_store.cache]\nttl_seconds = 0\n",
        )
        .unwrap();
        assert_eq!(flat, nested);
        assert!(!flat.parameter_store);
        assert_eq!(flat.parameter_store_ttl_seconds, 0);
        assert_eq!(flat.ttl_seconds, 300, "the secrets' TTL is apart");
        let e = Config::parse("[capabilities.parameter_store.cache]\nttl_seconds = 3601\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "invalid value for config key `capabilities.parameter_store.cache.ttl_seconds`: \
             expected an integer from 0 to 3600"
        );
        let e = Config::parse("[capabilities.parameter_store]\nttl_seconds = 1\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "unknown config key `capabilities.parameter_store.ttl_seconds`; valid keys in \
             `capabilities.parameter_store` are: enabled, cache"
        );
        let e = Config::parse(
            "parameter_store_enabled = true\n[capabilities.parameter_store]\nenabled = true\n",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Twice { .. }), "{e}");
    }

    /// `Config::load_with_env` over `text` (written to a file) and `vars`.
    fn with_env(
        text: Option<&str>,
        vars: &'static [(&'static str, &'static str)],
    ) -> Result<Config, ConfigError> {
        let file = text.map(|text| {
            let path = std::env::temp_dir().join(format!(
                "sma-config-{}-{}.toml",
                std::process::id(),
                secrets_manager_agent_core::random::unit().to_bits()
            ));
            std::fs::write(&path, text).unwrap();
            path
        });
        let config =
            Config::load_with_env(file.as_deref(), secrets_manager_agent_core::env::fake(vars));
        if let Some(path) = file {
            let _ = std::fs::remove_file(path);
        }
        config
    }

    #[test]
    fn the_lambda_extension_variables_fill_what_the_file_leaves_unset() {
        let vars = &[
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "2800"),
            ("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "debug"),
            ("PARAMETERS_SECRETS_EXTENSION_MAX_CONNECTIONS", "3"),
            ("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "50"),
            ("SECRETS_MANAGER_TTL", "600"),
            ("SSM_PARAMETER_STORE_TTL", " 30 "),
        ];
        let c = with_env(None, vars).unwrap();
        assert_eq!(
            (c.http_port, c.log_level, c.max_conn, c.cache_size),
            (2800, LogLevel::Debug, 3, 50)
        );
        assert_eq!((c.ttl_seconds, c.parameter_store_ttl_seconds), (600, 30));
        // The file wins where it says something, in either layout.
        let c = with_env(
            Some("ttl_seconds = 5\n[capabilities.secrets_manager]\nhttp_port = 3000\n"),
            vars,
        )
        .unwrap();
        assert_eq!((c.http_port, c.ttl_seconds, c.cache_size), (3000, 5, 50));
        assert_eq!(with_env(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn the_extension_can_switch_caching_off() {
        for vars in [
            &[("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "FALSE")][..],
            &[
                ("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "false"),
                ("SECRETS_MANAGER_TTL", "60"),
            ],
            &[("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "0")],
        ] {
            let vars: &'static [(&str, &str)] = Box::leak(vars.to_vec().into_boxed_slice());
            let c = with_env(None, vars).unwrap();
            assert_eq!(
                (c.ttl_seconds, c.parameter_store_ttl_seconds),
                (0, 0),
                "{vars:?}"
            );
        }
        let on = &[("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "TRUE")];
        assert_eq!(with_env(None, on).unwrap(), Config::default());
        let c = with_env(
            Some("ttl_seconds = 9\n"),
            &[("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "FALSE")],
        )
        .unwrap();
        assert_eq!(
            (c.ttl_seconds, c.parameter_store_ttl_seconds),
            (9, 0),
            "the file wins"
        );
    }

    #[test]
    fn a_bad_extension_variable_is_named_with_what_is_allowed() {
        let cases: &[(&'static [(&'static str, &'static str)], &str)] = &[
            (
                &[("SECRETS_MANAGER_TTL", "5m")],
                "environment variable SECRETS_MANAGER_TTL=5m is not valid: expected an integer from 0 to 3600",
            ),
            (
                &[("PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED", "yes")],
                "environment variable PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED=yes is not valid: expected TRUE or FALSE",
            ),
            (
                &[("PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL", "TRACE")],
                "environment variable PARAMETERS_SECRETS_EXTENSION_LOG_LEVEL=TRACE is not valid: expected one of DEBUG, INFO, WARN, ERROR, NONE",
            ),
            (
                &[("PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE", "1001")],
                "environment variable PARAMETERS_SECRETS_EXTENSION_CACHE_SIZE=1001 is not valid: expected an integer from 0 to 1000 (0: no cache)",
            ),
        ];
        for (vars, message) in cases {
            assert_eq!(with_env(None, vars).unwrap_err().to_string(), *message);
        }
        // Set in the file: the variable is not read, so not checked either.
        assert!(with_env(Some("ttl_seconds = 1"), &[("SECRETS_MANAGER_TTL", "x")]).is_ok());
        let e = with_env(Some("ttl_seconds = ["), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("config file ") && e.contains("sma-config-"),
            "{e}"
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
    fn nested_values_are_checked_and_named_by_full_path() {
        let sm = "capabilities.secrets_manager";
        for (section, line, key) in [
            ("logging", "log_level = \"TRACE\"", "logging.log_level"),
            ("logging", "log_to_file = \"yes\"", "logging.log_to_file"),
            (sm, "enabled = \"no\"", "capabilities.secrets_manager.enabled"),
            (sm, "http_port = 80", "capabilities.secrets_manager.http_port"),
            (sm, "http_port = 65536", "capabilities.secrets_manager.http_port"),
            (sm, "region = \"\"", "capabilities.secrets_manager.region"),
            (sm, "path_prefix = \"v1/\"", "capabilities.secrets_manager.path_prefix"),
            (sm, "max_conn = 0", "capabilities.secrets_manager.max_conn"),
            (sm, "max_conn = 1001", "capabilities.secrets_manager.max_conn"),
            (sm, "max_roles = 0", "capabilities.secrets_manager.max_roles"),
            (sm, "max_roles = 21", "capabilities.secrets_manager.max_roles"),
            (sm, "max_roles = 1.5", "capabilities.secrets_manager.max_roles"),
            (sm, "ignore_transient_errors = 1", "capabilities.secrets_manager.ignore_transient_errors"),
            (sm, "validate_credentials = []", "capabilities.secrets_manager.validate_credentials"),
            (sm, "credentials_file_path = 3", "capabilities.secrets_manager.credentials_file_path"),
            (sm, "cache = 3", "capabilities.secrets_manager.cache"),
            ("capabilities.secrets_manager.cache", "ttl_seconds = 3601", "capabilities.secrets_manager.cache.ttl_seconds"),
            ("capabilities.secrets_manager.cache", "ttl_seconds = -1", "capabilities.secrets_manager.cache.ttl_seconds"),
            ("capabilities.secrets_manager.cache", "cache_size = 0", "capabilities.secrets_manager.cache.cache_size"),
            ("capabilities.secrets_manager.cache", "cache_size = 1001", "capabilities.secrets_manager.cache.cache_size"),
            ("capabilities.secrets_manager.security", "ssrf_headers = []", "capabilities.secrets_manager.security.ssrf_headers"),
            ("capabilities.secrets_manager.security", "ssrf_headers = [\"a b\"]", "capabilities.secrets_manager.security.ssrf_headers"),
            ("capabilities.secrets_manager.security", "ssrf_env_variables = []", "capabilities.secrets_manager.security.ssrf_env_variables"),
            ("capabilities.secrets_manager.prefetch", "cache_buffer_ratio = 0.05", "capabilities.secrets_manager.prefetch.cache_buffer_ratio"),
            ("capabilities.secrets_manager.prefetch", "cache_buffer_ratio = 1.01", "capabilities.secrets_manager.prefetch.cache_buffer_ratio"),
            ("capabilities.secrets_manager.prefetch", "cache_buffer_ratio = nan", "capabilities.secrets_manager.prefetch.cache_buffer_ratio"),
            ("capabilities.secrets_manager.prefetch", "cache_buffer_ratio = true", "capabilities.secrets_manager.prefetch.cache_buffer_ratio"),
            ("capabilities.secrets_manager.prefetch", "max_jitter_seconds = 11", "capabilities.secrets_manager.prefetch.max_jitter_seconds"),
            ("capabilities.secrets_manager.prefetch", "max_jitter_seconds = -1", "capabilities.secrets_manager.prefetch.max_jitter_seconds"),
            ("capabilities.secrets_manager.prefetch", "max_jitter_seconds = 0.5", "capabilities.secrets_manager.prefetch.max_jitter_seconds"),
            ("capabilities.secrets_manager.prefetch", "secrets = \"a\"", "capabilities.secrets_manager.prefetch.secrets"),
            ("capabilities.secrets_manager.prefetch", "secrets = [\"a\"]", "capabilities.secrets_manager.prefetch.secrets[0]"),
            ("capabilities.secrets_manager.prefetch", "secrets = [{ secret_id = \"\" }]", "capabilities.secrets_manager.prefetch.secrets[0].secret_id"),
            ("capabilities.secrets_manager.prefetch", "secrets = [{ secret_id = \"a\" }, { role_arn = \"arn:aws:iam::123456789012:role/R\" }]", "capabilities.secrets_manager.prefetch.secrets[1].secret_id"),
            ("capabilities.secrets_manager.prefetch", "secrets = [{ secret_id = \"a\", role_arn = \"R\" }]", "capabilities.secrets_manager.prefetch.secrets[0].role_arn"),
            ("capabilities.secrets_manager.prefetch", "filter_tags = [{ key = 5 }]", "capabilities.secrets_manager.prefetch.filter_tags[0].key"),
            ("capabilities.secrets_manager.prefetch", "filter_tags = [{}]", "capabilities.secrets_manager.prefetch.filter_tags[0].key"),
            ("capabilities.secrets_manager.prefetch", "filter_tags = [{ key = \"T\", role_arn = 1 }]", "capabilities.secrets_manager.prefetch.filter_tags[0].role_arn"),
            ("capabilities.secrets_manager.prefetch", "filter_tags = {}", "capabilities.secrets_manager.prefetch.filter_tags"),
        ] {
            let text = format!("[{section}]\n{line}\n");
            let e = err(&text);
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
            assert!(e.contains("expected"), "{text}: {e}");
            assert!(!e.contains('\n'), "{text}: {e}");
        }
        let e = err("[capabilities.secrets_manager]\nmax_roles = 21");
        assert!(e.contains("1 to 20"), "{e}");
        let e = err("[capabilities.secrets_manager.prefetch]\nsecrets = [{ secret_id = \"a\", role_arn = \"R\" }]");
        assert!(e.contains("arn:PARTITION:iam::ACCOUNT:role/NAME"), "{e}");
        assert_eq!(
            err("capabilities = 1"),
            "invalid value for config key `capabilities`: expected a table"
        );
    }

    #[test]
    fn nested_good_values_at_the_edges() {
        let c = Config::parse(
            "[capabilities.secrets_manager]\nhttp_port = 0\nmax_roles = 1\n\
             [capabilities.secrets_manager.cache]\nttl_seconds = \"3600\"\ncache_size = 1000\n\
             [capabilities.secrets_manager.prefetch]\ncache_buffer_ratio = 0.1\nmax_jitter_seconds = 0\n",
        )
        .unwrap();
        assert_eq!(
            (c.http_port, c.max_roles, c.ttl_seconds, c.cache_size),
            (0, 1, 3600, 1000)
        );
        assert_eq!(c.prefetch.cache_buffer_ratio, 0.1);
        assert!(!c.prefetch.is_requested());
        for ratio in ["1", "1.0", "\"0.25\""] {
            let text = format!("[prefetch]\ncache_buffer_ratio = {ratio}\n");
            assert!(Config::parse(&text).is_ok(), "{text}");
        }
        let c = Config::parse("[capabilities.secrets_manager]\nmax_roles = 20").unwrap();
        assert_eq!(c.max_roles, 20);
    }

    #[test]
    fn unknown_nested_keys_are_named_by_full_path() {
        for (text, key, valid) in [
            ("[logging]\nlevel = 1", "logging.level", "log_level, log_format, log_to_file"),
            ("[logging]\ndestination = \"file\"", "logging.destination", "log_level"),
            ("[capabilities.secrets_manager]\nttl_seconds = 5", "capabilities.secrets_manager.ttl_seconds", "cache"),
            ("[capabilities.secrets_manager.cache]\nttl = 5", "capabilities.secrets_manager.cache.ttl", "ttl_seconds, cache_size"),
            ("[capabilities.secrets_manager.security]\ntoken = 1", "capabilities.secrets_manager.security.token", "ssrf_headers, ssrf_env_variables"),
            ("[capabilities.secrets_manager.prefetch]\nsecret = []", "capabilities.secrets_manager.prefetch.secret", "cache_buffer_ratio, max_jitter_seconds, secrets, filter_tags"),
            ("[[capabilities.secrets_manager.prefetch.secrets]]\nsecret_id = \"a\"\nrole = \"x\"", "capabilities.secrets_manager.prefetch.secrets[0].role", "secret_id, role_arn"),
            ("[[prefetch.filter_tags]]\nkey = \"a\"\nvalue = \"b\"", "prefetch.filter_tags[0].value", "key, role_arn"),
            ("[capabilities.ssm]\nenabled = true", "capabilities.ssm", "secrets_manager, parameter_store, acm"),
            ("[capabilities]\nsecrets_manager.cache.size = 1", "capabilities.secrets_manager.cache.size", "ttl_seconds"),
            ("[logging]\n\"log_level.x\" = 1", "logging.log_level.x", "log_level"),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("unknown config key `{key}`")), "{text}: {e}");
            assert!(e.contains(valid), "{text}: {e}");
        }
        assert_eq!(
            err("[capabilities.secrets_manager.cache]\nttl = 5"),
            "unknown config key `capabilities.secrets_manager.cache.ttl`; valid keys in \
             `capabilities.secrets_manager.cache` are: ttl_seconds, cache_size"
        );
        let e = err("\"a.b\" = 1");
        assert!(
            e.starts_with("unknown config key `a.b`; valid keys are: log_level"),
            "{e}"
        );
        // The top level lists the flat keys and the sections.
        let e = err("ttl = 5");
        for key in [
            "ttl_seconds",
            "max_roles",
            "prefetch",
            "logging",
            "capabilities",
        ] {
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn other_capabilities_are_accepted_and_not_read() {
        let c = Config::parse(
            "[capabilities.acm]\nenabled = true\n\
             [[capabilities.acm.certificates]]\ncertificate_arn = \"arn:x\"\n\
             [capabilities.secrets_manager]\nhttp_port = 0\n",
        )
        .unwrap();
        assert_eq!(c.other_capabilities, vec!["acm"]);
        assert_eq!(c.http_port, 0);
        assert!(err("capabilities.acm = 1").contains("`capabilities.acm`"));
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

    #[test]
    fn a_flat_key_and_its_nested_twin_are_refused_naming_both() {
        for (text, flat, nested) in [
            ("ttl_seconds = 5\n[capabilities.secrets_manager.cache]\nttl_seconds = 5", "ttl_seconds", "capabilities.secrets_manager.cache.ttl_seconds"),
            ("log_level = \"INFO\"\n[logging]\nlog_level = \"INFO\"", "log_level", "logging.log_level"),
            ("http_port = 0\n[capabilities.secrets_manager]\nhttp_port = 0", "http_port", "capabilities.secrets_manager.http_port"),
            ("ssrf_headers = [\"A\"]\n[capabilities.secrets_manager.security]\nssrf_headers = [\"B\"]", "ssrf_headers", "capabilities.secrets_manager.security.ssrf_headers"),
            ("max_roles = 3\n[capabilities.secrets_manager]\nmax_roles = 3", "max_roles", "capabilities.secrets_manager.max_roles"),
            ("[prefetch]\n[capabilities.secrets_manager.prefetch]", "prefetch", "capabilities.secrets_manager.prefetch"),
            // Even when the flat value is bad: the conflict is reported first.
            ("cache_size = 0\n[capabilities.secrets_manager.cache]\ncache_size = 5", "cache_size", "capabilities.secrets_manager.cache.cache_size"),
        ] {
            let e = err(text);
            assert!(e.contains(&format!("`{flat}`")) && e.contains(&format!("`{nested}`")), "{text}: {e}");
            assert!(e.contains("same setting"), "{text}: {e}");
        }
        // Different settings in the two layouts mix freely.
        let c = Config::parse(
            "ttl_seconds = 5\nlog_level = \"ERROR\"\n[capabilities.secrets_manager]\nhttp_port = 0\n",
        )
        .unwrap();
        assert_eq!(
            (c.ttl_seconds, c.log_level, c.http_port),
            (5, LogLevel::Error, 0)
        );
    }

    #[test]
    fn top_level_max_roles_and_prefetch() {
        let c = Config::parse(
            "max_roles = '7'\n[prefetch]\ncache_buffer_ratio = 1.0\nmax_jitter_seconds = 3\n\
             secrets = [{ secret_id = \"a\" }]\nfilter_tags = [{ key = \"env\" }]\n",
        )
        .unwrap();
        assert_eq!(c.max_roles, 7);
        assert_eq!(c.prefetch.cache_buffer_ratio, 1.0);
        assert_eq!(c.prefetch.max_jitter_seconds, 3);
        assert_eq!(c.prefetch.secrets[0].secret_id, "a");
        assert_eq!(c.prefetch.filter_tags[0].key, "env");
        let e = err("max_roles = 21");
        assert!(e.contains("`max_roles`") && e.contains("1 to 20"), "{e}");
        let e = err("[prefetch]\nmax_jitter_seconds = 11");
        assert!(e.contains("`prefetch.max_jitter_seconds`"), "{e}");
        assert!(err("prefetch = 1").contains("`prefetch`"));
    }

    #[test]
    fn inline_arrays_and_arrays_of_tables_are_the_same() {
        let role = "arn:aws:iam::123456789012:role/R";
        let inline = Config::parse(&format!(
            "[capabilities.secrets_manager.prefetch]\n\
             secrets = [{{ secret_id = \"a\" }}, {{ secret_id = \"b\", role_arn = \"{role}\" }}]\n\
             filter_tags = [{{ key = \"k\", role_arn = \"{role}\" }}]\n"
        ))
        .unwrap();
        let tables = Config::parse(&format!(
            "[[capabilities.secrets_manager.prefetch.secrets]]\nsecret_id = \"a\"\n\
             [[capabilities.secrets_manager.prefetch.secrets]]\nsecret_id = \"b\"\nrole_arn = \"{role}\"\n\
             [[capabilities.secrets_manager.prefetch.filter_tags]]\nkey = \"k\"\nrole_arn = \"{role}\"\n"
        ))
        .unwrap();
        assert_eq!(inline, tables);
        assert_eq!(inline.prefetch.secrets.len(), 2);
        assert_eq!(inline.prefetch.secrets[1].role_arn.as_deref(), Some(role));
        // An empty list is allowed and asks for nothing.
        let empty = Config::parse("[prefetch]\nsecrets = []\nfilter_tags = []").unwrap();
        assert!(!empty.prefetch.is_requested());
    }

    #[test]
    fn role_arns() {
        for good in [
            "arn:aws:iam::123456789012:role/Reader",
            "arn:aws-cn:iam::123456789012:role/Reader",
            "arn:aws-us-gov:iam::123456789012:role/Reader",
            "arn:aws-iso-b:iam::123456789012:role/Reader",
            "arn:aws:iam::123456789012:role/team/app/Reader",
            "arn:aws:iam::123456789012:role/a+b=c,d.e@f_g-h",
            &format!("arn:aws:iam::123456789012:role/{}", "n".repeat(64)),
        ] {
            assert!(is_role_arn(good), "{good}");
        }
        for bad in [
            "",
            "Reader",
            "arn:aws:iam::123456789012:user/Reader",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role",
            "arn:aws:iam::12345678901:role/Reader",
            "arn:aws:iam::1234567890123:role/Reader",
            "arn:aws:iam::12345678901a:role/Reader",
            "arn:aws:iam:us-east-1:123456789012:role/Reader",
            "arn:aws:sts::123456789012:role/Reader",
            "arn::iam::123456789012:role/Reader",
            "arn:AWS:iam::123456789012:role/Reader",
            "arn:aws-:iam::123456789012:role/Reader",
            "arn:a ws:iam::123456789012:role/Reader",
            "ARN:aws:iam::123456789012:role/Reader",
            "arn:aws:iam::123456789012:role/team//Reader",
            "arn:aws:iam::123456789012:role/team/",
            "arn:aws:iam::123456789012:role/Read er",
            "arn:aws:iam::123456789012:role/Read:er",
            "arn:aws:iam::123456789012:role/Réader",
            "arn:aws:iam::123456789012:role/Reader\n",
            " arn:aws:iam::123456789012:role/Reader",
            &format!("arn:aws:iam::123456789012:role/{}", "n".repeat(65)),
        ] {
            assert!(!is_role_arn(bad), "{bad:?}");
        }
    }
}
