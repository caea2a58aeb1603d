//! The GET routes through the API, without sockets: the order of checks,
//! the query rules, statuses and bodies (docs/http-api.md).

use super::*;
use secrets_manager_agent_aws::{SecretValue, UpstreamError};
use secrets_manager_agent_cache as cache;
use secrets_manager_agent_core::secret::SecretBytes;
use std::time::Duration;

/// Answers every GetSecretValue with the query echoed back.
struct Echo;

impl Upstream for Echo {
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
        let (q, role) = match key {
            Key::Secret { query, role } => (query, role),
            Key::Parameter { query, role } => {
                return Ok(SecretValue {
                    body: SecretBytes::new(format!("parameter {query:?}|{role:?}").into_bytes()),
                    version_id: "1".into(),
                })
            }
            Key::Call { call, input, role } => {
                return Ok(SecretValue {
                    body: SecretBytes::new(format!("{call} {input}|{role:?}").into_bytes()),
                    version_id: String::new(),
                })
            }
        };
        // Secrets as the cache serves them, for `jsonKey`.
        let served = match q.secret_id.as_str() {
            "json" => {
                Some(r#"{"Name":"json","SecretString":"{\"user\":\"admin\",\"port\":5432}"}"#)
            }
            "plain" => Some(r#"{"Name":"plain","SecretString":"hunter2"}"#),
            "binary" => Some(r#"{"Name":"binary","SecretBinary":"AAE="}"#),
            _ => None,
        };
        if let Some(served) = served {
            return Ok(SecretValue {
                body: SecretBytes::new(served.as_bytes().to_vec()),
                version_id: "v1".into(),
            });
        }
        if q.secret_id == "missing" {
            return Err(UpstreamError::service(
                400,
                "ResourceNotFoundException",
                "no \"such\" secret",
            ));
        }
        Ok(SecretValue {
            body: SecretBytes::new(
                format!(
                    "{}|{:?}|{:?}{}",
                    q.secret_id,
                    q.version_id,
                    q.version_stage,
                    role.as_ref().map(|r| format!("|{r}")).unwrap_or_default()
                )
                .into_bytes(),
            ),
            version_id: "v1".into(),
        })
    }
    fn still_current(&self, _: &Key, _: &str) -> Result<bool, UpstreamError> {
        Err(UpstreamError::Timeout)
    }
}

fn api(prefix: &str) -> Api<Echo> {
    let cache = Cache::new(
        Echo,
        cache::Settings {
            ttl: Duration::from_secs(60),
            parameter_ttl: Duration::from_secs(60),
            capacity: 10,
            ignore_transient_errors: true,
            refresh_batch: 1,
        },
    );
    Api::new(
        Settings {
            token: Token::new("tok"),
            ssrf_headers: vec![
                "X-Aws-Parameters-Secrets-Token".into(),
                "X-Vault-Token".into(),
            ],
            path_prefix: prefix.into(),
            max_conn: 2,
            parameters: true,
            ready: Box::new(|| Ok(())),
            callers: Callers::Anyone,
        },
        cache,
    )
}

fn call(api: &Api<Echo>, method: &str, target: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let headers: Vec<httparse::Header> = headers
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    let r = api.handle(&Request {
        method,
        target,
        headers: &headers,
        body: &[],
    });
    (
        r.status,
        String::from_utf8(r.body.as_bytes().to_vec()).unwrap(),
    )
}

const TOK: &[(&str, &str)] = &[("x-aws-parameters-secrets-token", "tok")];

#[test]
fn ping_needs_no_token() {
    let api = api("/v1/");
    assert_eq!(call(&api, "GET", "/ping", &[]), (200, "healthy".into()));
    assert_eq!(call(&api, "POST", "/ping", &[]).0, 405);
}

#[test]
fn ready_needs_no_token_and_tells_why_not() {
    let mut api = api("/v1/");
    assert_eq!(call(&api, "GET", "/ready", &[]), (200, "ready".into()));
    assert_eq!(call(&api, "POST", "/ready", &[]).0, 405);
    api.settings.ready = Box::new(|| {
        Err(NotReady {
            reason: "no AWS credentials",
            detail: Some("no AWS credentials found: profile ops: no such file".into()),
        })
    });
    assert_eq!(
        call(&api, "GET", "/ready", &[]),
        (503, "not ready: no AWS credentials".into()),
        "no details without the token"
    );
    assert_eq!(
        call(&api, "GET", "/ready", TOK),
        (
            503,
            "not ready: no AWS credentials found: profile ops: no such file".into()
        )
    );
    assert_eq!(call(&api, "GET", "/ping", &[]), (200, "healthy".into()));
}

#[test]
fn metrics_need_the_token_on_the_api_listener_only() {
    let api = api("/v1/");
    assert_eq!(
        call(&api, "GET", "/metrics", &[]),
        (403, "Bad Token".into())
    );
    let (status, body) = call(&api, "GET", "/metrics", TOK);
    assert_eq!(status, 200);
    assert!(
        body.contains("secrets_manager_agent_cache_entries 0\n"),
        "{body}"
    );
    assert!(
        body.contains("secrets_manager_agent_in_flight_requests 1\n"),
        "{body}"
    );
    assert!(
        body.contains("secrets_manager_agent_requests_total{route=\"metrics\",status=\"403\"}"),
        "{body}"
    );
    let on_metrics_listener = |method, target| {
        let r = api.handle_metrics(&Request {
            method,
            target,
            headers: &[],
            body: &[],
        });
        (
            r.status,
            String::from_utf8(r.body.as_bytes().to_vec()).unwrap(),
        )
    };
    assert_eq!(on_metrics_listener("GET", "/metrics").0, 200);
    assert_eq!(on_metrics_listener("GET", "/ping"), (200, "healthy".into()));
    assert_eq!(on_metrics_listener("POST", "/metrics").0, 405);
    assert_eq!(
        on_metrics_listener("GET", "/secretsmanager/get?secretId=a").0,
        404
    );
    assert_eq!(on_metrics_listener("GET", "/v1/a").0, 404);
}

#[test]
fn token_checks_come_first() {
    let api = api("/v1/");
    let get = "/secretsmanager/get?secretId=a";
    assert_eq!(call(&api, "GET", get, &[]), (403, "Bad Token".into()));
    assert_eq!(call(&api, "GET", get, &[("X-Vault-Token", "nope")]).0, 403);
    assert_eq!(call(&api, "GET", get, &[("X-VAULT-TOKEN", "tok")]).0, 200);
    assert_eq!(call(&api, "GET", get, &[("Other", "tok")]).0, 403);
    let forwarded = [TOK[0], ("X-Forwarded-For", "1.2.3.4")];
    assert_eq!(
        call(&api, "GET", get, &forwarded),
        (400, "Forwarded".into())
    );
    assert_eq!(call(&api, "POST", get, &[]).0, 403);
    assert_eq!(call(&api, "POST", get, TOK), (405, "Not allowed".into()));
    assert_eq!(call(&api, "GET", "/nope", &[]).0, 403);
    assert_eq!(call(&api, "GET", "/nope", TOK), (404, "Not found".into()));
}

#[test]
fn query_rules() {
    let api = api("/v1/");
    let c = |t: &str| call(&api, "GET", t, TOK);
    assert_eq!(
        c("/secretsmanager/get?secretId=a&x=1"),
        (400, "unknown parameter: x".into())
    );
    assert_eq!(
        c("/secretsmanager/get"),
        (400, "missing parameter secretId".into())
    );
    assert_eq!(
        c("/secretsmanager/get?secretId="),
        (400, "missing parameter secretId".into())
    );
    assert_eq!(c("/v1/"), (400, "missing secret ID".into()));
    assert_eq!(
        c("/v1/a?secretId=b"),
        (400, "unknown parameter: secretId".into())
    );
    assert_eq!(
        c("/secretsmanager/get?secretId=a&refreshNow=maybe"),
        (400, "invalid refreshNow value".into())
    );
    for ok in ["TRUE", "1", "false", "0", "True"] {
        assert_eq!(c(&format!("/v1/a?refreshNow={ok}")).0, 200, "{ok}");
    }
    assert_eq!(
        c("/secretsmanager/get?secretId=a+b%2Fc&versionStage=AWSPREVIOUS").1,
        "a b/c|None|Some(\"AWSPREVIOUS\")"
    );
    assert_eq!(
        c("/v1/prod%2Fdb/pass+word?versionId=v9").1,
        "prod/db/pass+word|Some(\"v9\")|None"
    );
}

#[test]
fn parameter_query_rules() {
    let on = api("/v1/");
    let c = |t: &str| call(&on, "GET", t, TOK);
    let p = "/systemsmanager/parameters/get";
    let query = |name: &str, selector: &str, decrypt: bool| {
        format!(
            "parameter ParameterQuery {{ name: {name:?}, selector: {selector}, \
             with_decryption: {decrypt} }}|None"
        )
    };
    assert_eq!(
        c(&format!("{p}?name=%2Fapp%2Fdb")),
        (200, query("/app/db", "None", false))
    );
    assert_eq!(
        c(&format!(
            "{p}?name=/app/db&version=3&label=prod&withDecryption=TRUE"
        )),
        (200, query("/app/db", "Some(Version(3))", true))
    );
    assert_eq!(
        c(&format!("{p}?label=prod&name=a&version=3")).1,
        query("a", "Some(Label(\"prod\"))", false),
        "the first selector in the query wins"
    );
    assert_eq!(
        c(&format!("{p}?name=a&version=")).1,
        query("a", "None", false)
    );
    assert_eq!(c(p), (400, "missing parameter name".into()));
    assert_eq!(
        c(&format!("{p}?name=")),
        (400, "missing parameter name".into())
    );
    for bad in ["x", "-1", "0", "1.5", "99999999999999999999"] {
        assert_eq!(
            c(&format!("{p}?name=a&version={bad}")),
            (
                400,
                "invalid version value: expected a version number".into()
            ),
            "{bad}"
        );
    }
    for bad in ["1", "1a", "a:b"] {
        assert_eq!(
            c(&format!("{p}?name=a&label={bad}")),
            (
                400,
                "invalid label value: a label cannot start with a digit or hold ':'".into()
            ),
            "{bad}"
        );
    }
    assert_eq!(
        c(&format!("{p}?name=a&withDecryption=yes")),
        (
            400,
            "invalid withDecryption value: expected true or false".into()
        )
    );
    assert_eq!(
        c(&format!("{p}?name=a&secretId=b")),
        (400, "unknown parameter: secretId".into())
    );
    assert_eq!(
        c(&format!("{p}?name=a&refreshNow=x")),
        (400, "invalid refreshNow value".into())
    );
    assert_eq!(c(&format!("{p}?name=a&roleArn=nope")).0, 400);
    let mut off = api("/v1/");
    off.settings.parameters = false;
    assert_eq!(
        call(&off, "GET", &format!("{p}?name=a"), TOK),
        (
            404,
            "Not found: Parameter Store is switched off in the config".into()
        )
    );
    assert_eq!(call(&off, "GET", &format!("{p}?name=a"), &[]).0, 403);
}

#[test]
fn role_arn_on_both_routes() {
    let api = api("/v1/");
    let c = |t: &str| call(&api, "GET", t, TOK);
    let role = "arn:aws:iam::123456789012:role/app/reader";
    let encoded = "arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fapp%2Freader";
    assert_eq!(
        c(&format!("/secretsmanager/get?secretId=a&roleArn={encoded}")),
        (200, format!("a|None|None|{role}"))
    );
    assert_eq!(
        c(&format!("/v1/a?versionStage=S&roleArn={role}")),
        (200, format!("a|None|Some(\"S\")|{role}"))
    );
    // Without it, the agent's own identity (no role in the key).
    assert_eq!(c("/v1/a").1, "a|None|None");
    for bad in [
        "",
        "arn:aws:iam::123456789012:user/reader",
        "arn:aws:iam::12345678901:role/reader",
        "arn:aws:sts::123456789012:role/reader",
    ] {
        for target in [
            format!("/secretsmanager/get?secretId=a&roleArn={bad}"),
            format!("/v1/a?roleArn={bad}"),
        ] {
            let (status, body) = c(&target);
            assert_eq!(status, 400, "{target}");
            assert!(body.starts_with("invalid roleArn: "), "{target}: {body}");
        }
    }
}

#[test]
fn upstream_errors_become_json() {
    let api = api("/v1/");
    let (status, body) = call(&api, "GET", "/v1/missing", TOK);
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["__type"], "ResourceNotFoundException");
    assert_eq!(v["message"], "no \"such\" secret");
}

#[test]
fn upstream_failures_get_fixed_json_answers() {
    let answer = |e: UpstreamError| {
        let r = upstream_error(&e);
        (
            r.status,
            String::from_utf8(r.body.as_bytes().to_vec()).unwrap(),
        )
    };
    let read_error = r#"{"__type":"ConnectionError","message":"Read Error"}"#;
    let fixed = [
        (
            UpstreamError::Timeout,
            504,
            r#"{"__type":"TimeoutError","message":"Timeout"}"#,
        ),
        (UpstreamError::Connection("refused".into()), 502, read_error),
        (UpstreamError::Tls("unknown issuer".into()), 502, read_error),
        (
            UpstreamError::Response("garbage".into()),
            502,
            r#"{"__type":"ConnectionError","message":"Response Error"}"#,
        ),
        (
            UpstreamError::Internal("x".into()),
            500,
            r#"{"__type":"InternalFailure"}"#,
        ),
        (
            UpstreamError::UnexpectedStatus(302),
            502,
            r#"{"__type":"ConnectionError","message":"Response Error: unexpected upstream HTTP status 302"}"#,
        ),
        (
            UpstreamError::Refused {
                code: "TooManyRoles",
                message: "at most 1 role (max_roles)".into(),
            },
            400,
            r#"{"__type":"TooManyRoles","message":"at most 1 role (max_roles)"}"#,
        ),
    ];
    for (error, status, body) in fixed {
        assert_eq!(answer(error), (status, body.to_string()));
    }
    let (status, body) = answer(UpstreamError::Credentials("no \"creds\"".into()));
    assert_eq!(status, 500);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["__type"], "InternalFailure");
    assert_eq!(v["message"], "no \"creds\"");
    let (status, body) = answer(UpstreamError::service(403, "AccessDenied", "a & <b>"));
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["__type"].as_str(), v["message"].as_str()),
        (Some("AccessDenied"), Some("a & <b>"))
    );
}

#[test]
fn connection_limit_with_ping_headroom() {
    let api = api("/v1/");
    let _a = api.take_slot(2).unwrap();
    let _b = api.take_slot(2).unwrap();
    assert_eq!(
        call(&api, "GET", "/v1/a", TOK),
        (429, "Connection limit exceeded".into())
    );
    assert_eq!(call(&api, "GET", "/ping", &[]).0, 200);
    drop(_b);
    assert_eq!(call(&api, "GET", "/v1/a", TOK).0, 200);
}

#[test]
fn custom_prefix_and_root_prefix() {
    let custom = api("/secrets/");
    assert_eq!(call(&custom, "GET", "/secrets/x", TOK).0, 200);
    assert_eq!(call(&custom, "GET", "/v1/x", TOK).0, 404);
    let root = api("/");
    assert_eq!(call(&root, "GET", "/ping", &[]).0, 200);
    assert_eq!(call(&root, "GET", "/x/y", TOK).1, "x/y|None|None");
}

#[test]
fn one_json_key() {
    let api = api("/v1/");
    let get = |target: &str| {
        let headers = [httparse::Header {
            name: "X-Aws-Parameters-Secrets-Token",
            value: b"tok",
        }];
        let r = api.handle(&Request {
            method: "GET",
            target,
            headers: &headers,
            body: b"",
        });
        (
            r.status,
            r.content_type,
            String::from_utf8(r.body.as_bytes().to_vec()).unwrap(),
        )
    };
    assert_eq!(
        get("/secretsmanager/get?secretId=json&jsonKey=user"),
        (200, TEXT, "admin".into())
    );
    assert_eq!(get("/v1/json?jsonKey=port"), (200, JSON, "5432".into()));
    let (status, content_type, body) = get("/v1/json?jsonKey=password");
    assert_eq!((status, content_type), (404, JSON));
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["__type"], "JsonKeyNotFound");
    assert!(
        error["message"].as_str().unwrap().contains("\"password\""),
        "{body}"
    );
    assert!(!body.contains("user") && !body.contains("admin"), "{body}");
    let (status, _, body) = get("/v1/plain?jsonKey=user");
    assert_eq!(status, 400);
    assert!(
        body.contains("SecretNotAJsonObject") && !body.contains("hunter2"),
        "{body}"
    );
    assert_eq!(get("/v1/binary?jsonKey=k").0, 400);
    assert_eq!(
        get("/v1/json?jsonKey="),
        (400, TEXT, "empty jsonKey".into())
    );
    assert_eq!(get("/v1/missing?jsonKey=k").0, 400, "AWS's own error first");
    assert_eq!(
        get("/systemsmanager/parameters/get?name=a&jsonKey=k"),
        (400, TEXT, "unknown parameter: jsonKey".into())
    );
}
