//! The settings of the AWS SDK's protocol and of AWS's Cloud Extensions
//! interface (docs/sdk.md): who may call through the SDK's protocol
//! (`caller_auth` and the key pair of `"key"`), and the port of the second
//! listener. Apart from the rest because they hang together: a key pair
//! means nothing without `caller_auth = "key"`, and `"none"` is allowed on
//! loopback only.

use std::path::PathBuf;

use super::error::{invalid, ConfigError};
use super::settings::{non_empty, port};
use super::Config;

/// `caller_auth`: what an SDK-protocol request must be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CallerAuth {
    /// The credentials the agent itself resolved.
    #[default]
    Credentials,
    /// `caller_access_key_id` and the secret in `caller_secret_access_key_file`.
    Key,
    /// Nothing: any process that reaches the listener may read.
    None,
}

pub(super) fn set_caller_auth(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.caller_auth = match value.as_str() {
        Some("credentials") => CallerAuth::Credentials,
        Some("key") => CallerAuth::Key,
        Some("none") => CallerAuth::None,
        _ => return Err(invalid(key, "\"credentials\", \"key\" or \"none\"")),
    };
    Ok(())
}

pub(super) fn set_caller_access_key_id(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let id = non_empty(value)
        .filter(|id| {
            id.len() >= 16 && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        .ok_or_else(|| invalid(key, "an access key ID: 16 to 128 letters and digits"))?;
    c.caller_access_key_id = Some(id.to_string());
    Ok(())
}

pub(super) fn set_caller_secret_access_key_file(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    let path = non_empty(value).ok_or_else(|| invalid(key, "a non-empty path string"))?;
    c.caller_secret_access_key_file = Some(PathBuf::from(path));
    Ok(())
}

pub(super) fn set_cloud_extensions_port(
    c: &mut Config,
    value: &toml::Value,
    key: &str,
) -> Result<(), ConfigError> {
    c.cloud_extensions_port = Some(port(value, key)?);
    Ok(())
}

/// The rules between these settings.
pub(super) fn check(c: &Config) -> Result<(), ConfigError> {
    let key_pair = c.caller_access_key_id.is_some() || c.caller_secret_access_key_file.is_some();
    match c.caller_auth {
        CallerAuth::Key => {
            if c.caller_access_key_id.is_none() {
                return Err(ConfigError::Needs {
                    key: "caller_auth = \"key\"",
                    needs: "caller_access_key_id",
                });
            }
            if c.caller_secret_access_key_file.is_none() {
                return Err(ConfigError::Needs {
                    key: "caller_auth = \"key\"",
                    needs: "caller_secret_access_key_file",
                });
            }
        }
        _ if key_pair => {
            return Err(ConfigError::Needs {
                key: if c.caller_access_key_id.is_some() {
                    "caller_access_key_id"
                } else {
                    "caller_secret_access_key_file"
                },
                needs: "caller_auth = \"key\"",
            })
        }
        CallerAuth::None if !c.bind_address.is_loopback() => {
            return Err(ConfigError::UnsignedBeyondLoopback {
                address: c.bind_address,
            })
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::err;
    use super::*;

    #[test]
    fn defaults_and_values() {
        let c = Config::default();
        assert_eq!(c.caller_auth, CallerAuth::Credentials);
        assert_eq!(c.cloud_extensions_port, None);
        let c = Config::parse(
            "caller_auth = \"key\"\ncaller_access_key_id = \"CXEKABCDEFGHIJKLMNOP\"\n\
             caller_secret_access_key_file = \"/run/key\"\ncloud_extensions_port = 5333\n",
        )
        .unwrap();
        assert_eq!(c.caller_auth, CallerAuth::Key);
        assert_eq!(
            c.caller_access_key_id.as_deref(),
            Some("CXEKABCDEFGHIJKLMNOP")
        );
        assert_eq!(c.cloud_extensions_port, Some(5333));
        let nested = Config::parse(
            "[capabilities.secrets_manager]\ncaller_auth = \"none\"\ncloud_extensions_port = 0\n",
        )
        .unwrap();
        assert_eq!(nested.caller_auth, CallerAuth::None);
        assert_eq!(nested.cloud_extensions_port, Some(0));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            err("caller_auth = \"sigv4\""),
            "invalid value for config key `caller_auth`: expected \"credentials\", \"key\" or \"none\""
        );
        assert_eq!(
            err("caller_auth = \"key\"\ncaller_secret_access_key_file = \"/k\""),
            "config key `caller_auth = \"key\"` needs `caller_access_key_id` as well"
        );
        assert_eq!(
            err("caller_access_key_id = \"CXEKABCDEFGHIJKLMNOP\""),
            "config key `caller_access_key_id` needs `caller_auth = \"key\"` as well"
        );
        assert!(err("caller_access_key_id = \"short\"").contains("16 to 128"));
        assert!(err("cloud_extensions_port = 80").contains("1024 to 65535"));
        let e =
            err("caller_auth = \"none\"\nbind_address = \"0.0.0.0\"\nallow_non_loopback = true");
        assert!(e.contains("caller_auth = \"none\""), "{e}");
    }
}
