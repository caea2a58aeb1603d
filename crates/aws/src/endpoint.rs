//! Which URL a service is called at: the regional default, FIPS and dual-stack
//! variants, and the `AWS_ENDPOINT_URL*` overrides, per the SDKs' rules.

use std::fmt;

/// One AWS service's naming: its host prefix and the suffix of its
/// `AWS_ENDPOINT_URL_<ID>` override variable.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    pub host_prefix: &'static str,
    pub env_id: &'static str,
}

pub const SECRETS_MANAGER: Service = Service {
    host_prefix: "secretsmanager",
    env_id: "SECRETS_MANAGER",
};

pub const SSM: Service = Service {
    host_prefix: "ssm",
    env_id: "SSM",
};

pub const STS: Service = Service {
    host_prefix: "sts",
    env_id: "STS",
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointError {
    BadUrl { var: String, url: String },
    CustomWithVariant { var: String },
    BadFlag { var: String, value: String },
}

impl fmt::Display for EndpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointError::BadUrl { var, url } => write!(
                f,
                "{var}={url} is not a usable endpoint: expected http://host[:port] or https://host[:port]"
            ),
            EndpointError::CustomWithVariant { var } => write!(
                f,
                "{var} cannot be combined with AWS_USE_FIPS_ENDPOINT or AWS_USE_DUALSTACK_ENDPOINT; unset one of them"
            ),
            EndpointError::BadFlag { var, value } => {
                write!(f, "{var}={value} is not a boolean: use true or false")
            }
        }
    }
}

impl std::error::Error for EndpointError {}

/// Resolves the endpoint URL (no trailing slash) from the process environment.
/// `profile_endpoint` is the active profile's `endpoint_url`, the weakest override.
/// `own_ports` are the agent's own listeners on loopback: an override naming
/// one of them is skipped (see [`resolve_with`]).
pub fn resolve(
    service: Service,
    region: &str,
    profile_endpoint: Option<&str>,
    own_ports: &[u16],
) -> Result<String, EndpointError> {
    resolve_with(
        service,
        region,
        profile_endpoint,
        own_ports,
        secrets_manager_agent_core::env::var,
    )
}

/// `resolve`, reading the environment through `env`.
///
/// An application and the agent often share one environment (a container,
/// a Lambda function), so `AWS_ENDPOINT_URL_SECRETS_MANAGER` set for the
/// application names the agent itself. Calling it would be a loop: an
/// override whose host is loopback and whose port is in `own_ports` is
/// skipped with one INFO line, and the next source applies.
pub fn resolve_with(
    service: Service,
    region: &str,
    profile_endpoint: Option<&str>,
    own_ports: &[u16],
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, EndpointError> {
    let get = |name: &str| {
        env(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let flag = |name: &str| -> Result<bool, EndpointError> {
        match get(name) {
            None => Ok(false),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
            Some(value) => Err(EndpointError::BadFlag {
                var: name.to_string(),
                value,
            }),
        }
    };
    let fips = flag("AWS_USE_FIPS_ENDPOINT")?;
    let dual_stack = flag("AWS_USE_DUALSTACK_ENDPOINT")?;

    if !flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")? {
        let specific = format!("AWS_ENDPOINT_URL_{}", service.env_id);
        let candidates = [
            (specific.as_str(), get(&specific)),
            ("AWS_ENDPOINT_URL", get("AWS_ENDPOINT_URL")),
            ("profile endpoint_url", profile_endpoint.map(str::to_string)),
        ];
        for (var, url) in candidates {
            if let Some(url) = url.filter(|u| !u.trim().is_empty()) {
                if names_own_listener(&url, own_ports) {
                    log::info!(
                        "{var}={url} names this agent's own listener: skipped, so that the \
                         agent never calls itself; the next endpoint source applies"
                    );
                    continue;
                }
                if fips || dual_stack {
                    return Err(EndpointError::CustomWithVariant {
                        var: var.to_string(),
                    });
                }
                return custom(var, &url);
            }
        }
    }

    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else if region.starts_with("eusc-") {
        "amazonaws.eu"
    } else {
        "amazonaws.com"
    };
    // The Secrets Manager and STS names in these partitions already answer on
    // IPv4 and IPv6, so dual-stack changes nothing in the host name; the flag
    // still matters above, where it conflicts with a custom endpoint.
    let fips_part = if fips { "-fips" } else { "" };
    Ok(format!(
        "https://{}{fips_part}.{region}.{suffix}",
        service.host_prefix
    ))
}

/// Whether `url` is a loopback address on one of `ports`.
fn names_own_listener(url: &str, ports: &[u16]) -> bool {
    let Ok(uri) = url.trim().parse::<ureq::http::Uri>() else {
        return false;
    };
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    let own_host = uri.host().is_some_and(|host| {
        is_loopback_host(host) || ip_of(host).is_some_and(|ip| ip.is_unspecified())
    });
    own_host && ports.contains(&port)
}

/// Whether `host` (a URL's or a `Host` header's, without the port) names
/// this machine's loopback: `localhost`, or a loopback address (`[::1]`
/// with or without its brackets).
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || ip_of(host).is_some_and(|ip| ip.is_loopback())
}

fn ip_of(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn custom(var: &str, url: &str) -> Result<String, EndpointError> {
    let bad = || EndpointError::BadUrl {
        var: var.to_string(),
        url: url.to_string(),
    };
    let uri: ureq::http::Uri = url.parse().map_err(|_| bad())?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad()),
    }
    if uri.host().is_none_or(str::is_empty) || uri.query().is_some() {
        return Err(bad());
    }
    Ok(url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_env(region: &str, vars: &[(&str, &str)]) -> Result<String, EndpointError> {
        resolve_service(SECRETS_MANAGER, region, vars)
    }

    fn resolve_service(
        service: Service,
        region: &str,
        vars: &[(&str, &str)],
    ) -> Result<String, EndpointError> {
        resolve_with(service, region, None, &[], |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn an_override_naming_the_agent_itself_is_skipped() {
        let own = |vars: &[(&str, &str)], ports: &[u16]| {
            resolve_with(
                SECRETS_MANAGER,
                "us-east-1",
                Some("http://127.0.0.1:7"),
                ports,
                |n| {
                    vars.iter()
                        .find(|(k, _)| *k == n)
                        .map(|(_, v)| v.to_string())
                },
            )
            .unwrap()
        };
        let specific = "AWS_ENDPOINT_URL_SECRETS_MANAGER";
        for url in [
            "http://localhost:2773",
            "http://127.0.0.1:2773/",
            "http://[::1]:2773",
            "http://LOCALHOST:2773/secretsmanager",
        ] {
            assert_eq!(
                own(
                    &[(specific, url), ("AWS_ENDPOINT_URL", "http://127.0.0.1:9")],
                    &[2773]
                ),
                "http://127.0.0.1:9",
                "{url}: the next source"
            );
            assert_eq!(
                own(&[(specific, url)], &[2773]),
                "http://127.0.0.1:7",
                "{url}"
            );
        }
        // Every source is checked, down to the regional endpoint.
        assert_eq!(
            own(
                &[("AWS_ENDPOINT_URL", "http://localhost:5333")],
                &[2773, 5333]
            ),
            "http://127.0.0.1:7"
        );
        let all_own = resolve_with(SECRETS_MANAGER, "us-east-1", None, &[80], |n| {
            (n == "AWS_ENDPOINT_URL").then(|| "http://localhost".to_string())
        });
        assert_eq!(
            all_own.unwrap(),
            "https://secretsmanager.us-east-1.amazonaws.com"
        );
        // Another port, or another host, is someone else.
        assert_eq!(
            own(&[(specific, "http://127.0.0.1:2774")], &[2773]),
            "http://127.0.0.1:2774"
        );
        assert_eq!(
            own(&[(specific, "http://10.0.0.1:2773")], &[2773]),
            "http://10.0.0.1:2773"
        );
    }

    #[test]
    fn regional_defaults_per_partition() {
        assert_eq!(
            resolve_env("us-east-1", &[]).unwrap(),
            "https://secretsmanager.us-east-1.amazonaws.com"
        );
        assert_eq!(
            resolve_env("cn-north-1", &[]).unwrap(),
            "https://secretsmanager.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            resolve_env("eusc-de-east-1", &[]).unwrap(),
            "https://secretsmanager.eusc-de-east-1.amazonaws.eu"
        );
        assert_eq!(
            resolve_env("us-gov-west-1", &[("AWS_USE_FIPS_ENDPOINT", "TRUE")]).unwrap(),
            "https://secretsmanager-fips.us-gov-west-1.amazonaws.com"
        );
        assert_eq!(
            resolve_env("eu-west-1", &[("AWS_USE_DUALSTACK_ENDPOINT", "true")]).unwrap(),
            "https://secretsmanager.eu-west-1.amazonaws.com"
        );
    }

    #[test]
    fn parameter_store_has_its_own_name_and_override() {
        let ssm = |region, vars: &[(&str, &str)]| resolve_service(SSM, region, vars);
        assert_eq!(
            ssm("eu-west-1", &[]).unwrap(),
            "https://ssm.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            ssm("cn-north-1", &[]).unwrap(),
            "https://ssm.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            ssm("us-east-1", &[("AWS_USE_FIPS_ENDPOINT", "true")]).unwrap(),
            "https://ssm-fips.us-east-1.amazonaws.com"
        );
        let overrides = [
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_SSM", "http://127.0.0.1:2"),
        ];
        assert_eq!(ssm("us-east-1", &overrides).unwrap(), "http://127.0.0.1:2");
        assert_eq!(
            ssm("us-east-1", &overrides[..1]).unwrap(),
            "https://ssm.us-east-1.amazonaws.com",
            "the Secrets Manager override is not Parameter Store's"
        );
    }

    #[test]
    fn overrides_strongest_first() {
        let both = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ENDPOINT_URL_SECRETS_MANAGER", "http://127.0.0.1:2/"),
        ];
        assert_eq!(
            resolve_env("us-east-1", &both).unwrap(),
            "http://127.0.0.1:2"
        );
        assert_eq!(
            resolve_env("us-east-1", &both[..1]).unwrap(),
            "http://127.0.0.1:1"
        );
        let ignored = [both[0], ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")];
        assert_eq!(
            resolve_env("us-east-1", &ignored).unwrap(),
            "https://secretsmanager.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn profile_endpoint_is_the_weakest_override() {
        let from_profile = Some("http://127.0.0.1:3");
        let env = |_: &str| None;
        assert_eq!(
            resolve_with(SECRETS_MANAGER, "us-east-1", from_profile, &[], env).unwrap(),
            "http://127.0.0.1:3"
        );
        let env = |n: &str| (n == "AWS_ENDPOINT_URL").then(|| "http://127.0.0.1:1".to_string());
        assert_eq!(
            resolve_with(SECRETS_MANAGER, "us-east-1", from_profile, &[], env).unwrap(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn bad_overrides_are_errors() {
        let e = resolve_env("us-east-1", &[("AWS_ENDPOINT_URL", "localhost:5000")]);
        assert!(matches!(e, Err(EndpointError::BadUrl { .. })), "{e:?}");
        let e = resolve_env(
            "us-east-1",
            &[
                ("AWS_ENDPOINT_URL", "http://x"),
                ("AWS_USE_FIPS_ENDPOINT", "true"),
            ],
        );
        assert!(matches!(e, Err(EndpointError::CustomWithVariant { .. })));
        let e = resolve_env("us-east-1", &[("AWS_USE_FIPS_ENDPOINT", "yes")]);
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("AWS_USE_FIPS_ENDPOINT=yes"));
    }
}
