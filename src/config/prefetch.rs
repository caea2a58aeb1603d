//! The `prefetch` setting: which secrets to load into the cache at start,
//! named one by one or by tag, each optionally read through an IAM role.
//! It is the one setting that is a table of its own, with lists of tables
//! inside, so its keys and entries are checked here, each refusal naming
//! the entry by index (`prefetch.secrets[1].role_arn`).

use super::error::{invalid, ConfigError};
use super::settings::{non_empty, number, ranged};
use super::Config;

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

const PREFETCH_KEYS: &[&str] = &[
    "cache_buffer_ratio",
    "max_jitter_seconds",
    "secrets",
    "filter_tags",
];

pub(super) fn set_prefetch(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::err;

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
