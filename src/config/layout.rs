//! The two layouts of the file: the flat keys of AWS's agent 1.x/2.x
//! (`ttl_seconds = 300` at the top) and the nested sections of its 3.x
//! successor (`[capabilities.secrets_manager.cache]` holding `ttl_seconds`).
//! Walking the parsed TOML, this finds which row of the settings table each
//! key is, refuses keys that are none (listing the keys that table accepts),
//! and refuses one setting written in both layouts, so both spellings reach
//! the same check and a file cannot say two things about one setting.

use super::error::{invalid, ConfigError};
use super::settings::SETTINGS;

/// 3.x's section for Secrets Manager.
pub(super) const SM: &str = "capabilities.secrets_manager";

/// Sections of 3.x for capabilities this agent does not provide: accepted
/// (they must be tables) and not read, so a file shared with 3.x's other
/// services still starts this one.
const OTHER_CAPABILITIES: &[&str] = &["capabilities.acm"];

/// A setting found in the file: its index in `SETTINGS`, whether it was
/// written flat, and its value.
pub(super) struct Found<'a> {
    pub(super) setting: usize,
    flat: bool,
    pub(super) value: &'a toml::Value,
}

impl Found<'_> {
    /// The key as the file wrote it (flat or dotted), for error messages.
    pub(super) fn key(&self) -> &'static str {
        let setting = &SETTINGS[self.setting];
        match (self.flat, setting.flat) {
            (true, Some(flat)) => flat,
            _ => setting.nested,
        }
    }
}

/// The settings `table` (the whole file) writes, in the file's order. Sections
/// of other capabilities go to `other_capabilities`. Refuses a key that is no
/// setting and a setting written both flat and nested.
pub(super) fn find<'a>(
    table: &'a toml::Table,
    other_capabilities: &mut Vec<String>,
) -> Result<Vec<Found<'a>>, ConfigError> {
    let mut found = Vec::new();
    collect(table, "", &mut found, other_capabilities)?;
    for (index, setting) in SETTINGS.iter().enumerate() {
        let written = |flat: bool| found.iter().any(|f| f.setting == index && f.flat == flat);
        if let (Some(flat), true, true) = (setting.flat, written(true), written(false)) {
            return Err(ConfigError::Twice {
                flat,
                nested: setting.nested,
            });
        }
    }
    Ok(found)
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::config::{err, Config, ConfigError, LogLevel, PrefetchSecret, PrefetchTag};

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
}
