//! Which AWS region the agent calls: the config file's `region`, then
//! `AWS_REGION`, `AWS_DEFAULT_REGION`, the active profile's `region`, and
//! last the instance's region from IMDS (the only step that costs a call).

use std::fmt;

/// No step of the chain named a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRegion {
    pub profile: String,
    /// Why IMDS could not tell either.
    pub imds: String,
}

impl fmt::Display for NoRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no AWS region: set `region` in the config file, AWS_REGION, or `region` in profile {} (IMDS: {})",
            self.profile, self.imds
        )
    }
}

impl std::error::Error for NoRegion {}

/// Walks the chain, strongest first. `env` reads a variable (trimmed, blank
/// as unset); `profile_region` is the region of profile `profile`; `imds` is
/// asked only when nothing before it answered; its error is told in
/// [`NoRegion`].
pub fn resolve<E: fmt::Display>(
    config: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    profile: &str,
    profile_region: Option<String>,
    imds: impl FnOnce() -> Result<String, E>,
) -> Result<String, NoRegion> {
    let found = config
        .map(str::to_string)
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or(profile_region);
    if let Some(region) = found {
        return Ok(region);
    }
    imds().map_err(|why| NoRegion {
        profile: profile.to_string(),
        imds: why.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrets_manager_agent_core::env::fake as env;

    fn no_imds() -> Result<String, &'static str> {
        panic!("IMDS must not be asked when an earlier step answers")
    }

    #[test]
    fn strongest_source_wins() {
        let all = env(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "eu-west-2"),
        ]);
        let profile = || Some("eu-west-3".to_string());
        assert_eq!(
            resolve(Some("us-east-2"), &all, "default", profile(), no_imds),
            Ok("us-east-2".into())
        );
        assert_eq!(
            resolve(None, &all, "default", profile(), no_imds),
            Ok("eu-west-1".into())
        );
        let default_only = env(&[("AWS_DEFAULT_REGION", "eu-west-2")]);
        assert_eq!(
            resolve(None, &default_only, "default", profile(), no_imds),
            Ok("eu-west-2".into())
        );
        assert_eq!(
            resolve(None, env(&[]), "default", profile(), no_imds),
            Ok("eu-west-3".into())
        );
    }

    #[test]
    fn imds_is_the_last_resort() {
        let asked = std::cell::Cell::new(false);
        let imds = || {
            asked.set(true);
            Ok::<_, &str>("ap-south-1".to_string())
        };
        assert_eq!(
            resolve(None, env(&[]), "default", None, imds),
            Ok("ap-south-1".into())
        );
        assert!(asked.get());
    }

    #[test]
    fn nothing_found_names_every_place_to_set_it() {
        let e = resolve(None, env(&[]), "dev", None, || Err("not on EC2")).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("AWS_REGION"), "{text}");
        assert!(text.contains("profile dev"), "{text}");
        assert!(text.contains("IMDS: not on EC2"), "{text}");
    }
}
