//! Why a config was refused: one enum for the file and the Lambda
//! extension's variables, whose `Display` is the single line the user sees
//! (on stderr and in the log), naming the key or variable, what it allows,
//! and what to change. The integration tests match these lines, so their
//! text is part of the interface.

use std::fmt;

use super::layout::SM;

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
    /// `caller_auth = "none"` on a listener other processes' hosts reach.
    UnsignedBeyondLoopback {
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
            ConfigError::UnsignedBeyondLoopback { address } => write!(
                f,
                "caller_auth = \"none\" serves unsigned SDK requests, so it is allowed only on a \
                 loopback bind_address, not {address}: use caller_auth = \"credentials\" or \"key\""
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

/// The usual refusal: `key` (as written) holds something other than `allowed`.
pub(super) fn invalid(key: &str, allowed: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        allowed,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::err;

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
