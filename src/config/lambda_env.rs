//! The environment variables of AWS's Parameters and Secrets Lambda
//! Extension (`SECRETS_MANAGER_TTL`, `PARAMETERS_SECRETS_EXTENSION_HTTP_PORT`,
//! ...), so a function configured for that extension keeps its settings
//! with this agent. Each variable stands for a row of the settings table and
//! goes through its check; it applies only where the config file leaves the
//! setting unset, and a bad value is reported under the variable's name.

use super::error::ConfigError;
use super::settings::SETTINGS;
use super::Config;

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
    /// Sets what the extension's variables say, for settings not in `found`
    /// (indices into `SETTINGS`). A bad value names the variable.
    pub(super) fn apply_extension_vars(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogLevel;

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
}
