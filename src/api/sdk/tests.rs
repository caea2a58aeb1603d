//! The SDK protocol through the API, without sockets: requests as SDKs send
//! them (signed by aws-sigv4, what the Rust SDK signs with), answers and
//! errors in AWS's shapes, and what never reaches the upstream.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use zeroize::Zeroizing;

use super::super::{Api, Settings};
use crate::token::Token;
use secrets_manager_agent_aws::callers::Callers;
use secrets_manager_agent_aws::{SecretValue, UpstreamError};
use secrets_manager_agent_cache::{self as cache, Cache, Key, Upstream};
use secrets_manager_agent_core::secret::SecretBytes;
use secrets_manager_agent_http::http::{Request, Response};

const KEY_ID: &str = "CXEKABCDEFGHIJKLMNOP";
const SECRET: &str = "caller-secret";

/// Answers secrets `s1`, `s2` and parameters `/p1`, `/p2`; anything else is
/// missing. Counts its calls.
#[derive(Default)]
struct Counting {
    calls: Arc<AtomicUsize>,
}

impl Upstream for Counting {
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body = match key {
            Key::Secret { query, .. } if query.secret_id.starts_with('s') => format!(
                r#"{{"ARN":"arn:{0}","Name":"{0}","SecretString":"v-{0}","CreatedDate":"1700000000.5"}}"#,
                query.secret_id
            ),
            Key::Secret { .. } => {
                return Err(UpstreamError::service(
                    400,
                    "ResourceNotFoundException",
                    "Secrets Manager can't find the specified secret.",
                ))
            }
            Key::Parameter { query, .. } if query.name.starts_with("/p") => format!(
                r#"{{"Parameter":{{"Name":"{}","Value":"x","Version":1}},"ResultMetadata":{{}}}}"#,
                query.name
            ),
            Key::Parameter { .. } => {
                return Err(UpstreamError::service(400, "ParameterNotFound", ""))
            }
            Key::Call { input, .. } => format!(r#"{{"Echo":{input}}}"#),
        };
        Ok(SecretValue {
            body: SecretBytes::new(body.into_bytes()),
            version_id: "1".into(),
        })
    }
    fn still_current(&self, _: &Key, _: &str) -> Result<bool, UpstreamError> {
        Ok(false)
    }
}

fn api(callers: Callers) -> (Api<Counting>, Arc<AtomicUsize>) {
    let upstream = Counting::default();
    let calls = upstream.calls.clone();
    let cache = Cache::new(
        upstream,
        cache::Settings {
            ttl: Duration::from_secs(60),
            parameter_ttl: Duration::from_secs(60),
            capacity: 10,
            ignore_transient_errors: true,
            refresh_batch: 1,
        },
    );
    let api = Api::new(
        Settings {
            token: Token::new("tok"),
            ssrf_headers: vec!["X-Aws-Parameters-Secrets-Token".into()],
            path_prefix: "/v1/".into(),
            max_conn: 4,
            parameters: true,
            ready: Box::new(|| Ok(())),
            callers,
        },
        cache,
    );
    (api, calls)
}

fn key_pair() -> Callers {
    Callers::Key {
        access_key_id: KEY_ID.into(),
        secret: Zeroizing::new(SECRET.into()),
    }
}

/// `headers` signed for `service` with `secret` (now), as an SDK sends them.
fn signed(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    service: &str,
    secret: &str,
) -> Vec<(String, String)> {
    let identity =
        aws_credential_types::Credentials::new(KEY_ID, secret, None, None, "test").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let mut all: Vec<(String, String)> = vec![("Host".into(), "localhost:2773".into())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let request = SignableRequest::new(
        method,
        format!("http://localhost:2773{target}"),
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    all.extend(
        instructions
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    all
}

struct Answer {
    status: u16,
    body: serde_json::Value,
    error_type: Option<String>,
    response: Response,
}

fn call(
    api: &Api<Counting>,
    method: &str,
    target: &str,
    headers: &[(String, String)],
    body: &[u8],
    cx: bool,
) -> Answer {
    let headers: Vec<httparse::Header> = headers
        .iter()
        .map(|(n, v)| httparse::Header {
            name: n,
            value: v.as_bytes(),
        })
        .collect();
    let request = Request {
        method,
        target,
        headers: &headers,
        body,
    };
    let response = match if cx {
        api.reply_cloud_extensions(&request)
    } else {
        api.reply(&request)
    } {
        secrets_manager_agent_http::http::Reply::Now(r) => r,
        secrets_manager_agent_http::http::Reply::Later(later) => (later.answer)(),
    };
    let text = response.body.as_bytes().to_vec();
    Answer {
        status: response.status,
        body: serde_json::from_slice(&text).unwrap_or(serde_json::Value::Null),
        error_type: response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-amzn-errortype"))
            .map(|(_, v)| v.clone()),
        response,
    }
}

/// An SDK call: `POST /` with the target and body, signed with `secret`.
fn sdk(api: &Api<Counting>, target: &str, body: &str, secret: &str) -> Answer {
    let service = if target.starts_with("AmazonSSM.") {
        "ssm"
    } else {
        "secretsmanager"
    };
    let headers = signed(
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", target),
        ],
        body.as_bytes(),
        service,
        secret,
    );
    call(api, "POST", "/", &headers, body.as_bytes(), false)
}

#[test]
fn get_secret_value_is_aws_s_answer_from_the_cache() {
    let (api, upstream) = api(key_pair());
    for _ in 0..2 {
        let a = sdk(
            &api,
            "secretsmanager.GetSecretValue",
            r#"{"SecretId":"s1"}"#,
            SECRET,
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.response.content_type, "application/x-amz-json-1.1");
        assert!(a
            .response
            .headers
            .iter()
            .any(|(n, v)| *n == "x-amzn-RequestId" && v.len() == 36));
        assert_eq!(a.body["SecretString"], "v-s1");
        assert_eq!(
            a.body["CreatedDate"], 1_700_000_000.5,
            "a number, as AWS sends it"
        );
    }
    assert_eq!(
        upstream.load(Ordering::SeqCst),
        1,
        "the second from the cache"
    );
    // The GET route shares the entry.
    let token = [(
        "X-Aws-Parameters-Secrets-Token".to_string(),
        "tok".to_string(),
    )];
    let get = call(
        &api,
        "GET",
        "/secretsmanager/get?secretId=s1",
        &token,
        b"",
        false,
    );
    assert_eq!(
        (get.status, &get.body["CreatedDate"]),
        (200, &serde_json::json!("1700000000.5"))
    );
    assert_eq!(upstream.load(Ordering::SeqCst), 1);
}

#[test]
fn errors_carry_the_type_in_the_header_and_the_body() {
    let (api, _) = api(key_pair());
    let a = sdk(
        &api,
        "secretsmanager.GetSecretValue",
        r#"{"SecretId":"nope"}"#,
        SECRET,
    );
    assert_eq!(a.status, 400);
    assert_eq!(a.error_type.as_deref(), Some("ResourceNotFoundException"));
    assert_eq!(a.body["__type"], "ResourceNotFoundException");
    let a = sdk(
        &api,
        "AmazonSSM.GetParameter",
        r#"{"Name":"/nope"}"#,
        SECRET,
    );
    assert_eq!(a.error_type.as_deref(), Some("ParameterNotFound"));
    let a = sdk(&api, "secretsmanager.GetSecretValue", "not json", SECRET);
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (400, Some("SerializationException"))
    );
}

#[test]
fn writes_never_reach_the_upstream() {
    let (api, upstream) = api(key_pair());
    for (target, body) in [
        (
            "secretsmanager.PutSecretValue",
            r#"{"SecretId":"s1","SecretString":"x"}"#,
        ),
        ("secretsmanager.DeleteSecret", r#"{"SecretId":"s1"}"#),
        ("AmazonSSM.PutParameter", r#"{"Name":"/p1","Value":"x"}"#),
    ] {
        let a = sdk(&api, target, body, SECRET);
        assert_eq!(
            (a.status, a.error_type.as_deref()),
            (400, Some("ValidationException")),
            "{target}"
        );
    }
    assert_eq!(upstream.load(Ordering::SeqCst), 0);
}

#[test]
fn callers_must_sign_with_the_key() {
    let (api, upstream) = api(key_pair());
    let body = r#"{"SecretId":"s1"}"#;
    let a = sdk(
        &api,
        "secretsmanager.GetSecretValue",
        body,
        "another secret",
    );
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (403, Some("SignatureDoesNotMatch"))
    );
    let unsigned = [(
        "X-Amz-Target".to_string(),
        "secretsmanager.GetSecretValue".to_string(),
    )];
    let a = call(&api, "POST", "/", &unsigned, body.as_bytes(), false);
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (403, Some("MissingAuthenticationToken"))
    );
    // The SSRF token is no signature.
    let token = [
        unsigned[0].clone(),
        (
            "X-Aws-Parameters-Secrets-Token".to_string(),
            "tok".to_string(),
        ),
    ];
    assert_eq!(
        call(&api, "POST", "/", &token, body.as_bytes(), false).status,
        403
    );
    // Signed for one service, sent to the other.
    let headers = signed(
        "POST",
        "/",
        &[("X-Amz-Target", "secretsmanager.GetSecretValue")],
        body.as_bytes(),
        "ssm",
        SECRET,
    );
    let a = call(&api, "POST", "/", &headers, body.as_bytes(), false);
    assert_eq!(a.error_type.as_deref(), Some("SignatureDoesNotMatch"));
    assert_eq!(upstream.load(Ordering::SeqCst), 0);
    let (open, _) = self::api(Callers::Anyone);
    let local = [
        unsigned[0].clone(),
        ("Host".to_string(), "127.0.0.1:2773".to_string()),
    ];
    assert_eq!(
        call(&open, "POST", "/", &local, body.as_bytes(), false).status,
        200
    );
}

#[test]
fn proxies_browsers_and_rebound_hosts_are_refused() {
    let body = br#"{"SecretId":"s1"}"#;
    let target = (
        "X-Amz-Target".to_string(),
        "secretsmanager.GetSecretValue".to_string(),
    );
    let host = |h: &str| ("Host".to_string(), h.to_string());
    let (open, upstream) = api(Callers::Anyone);
    for headers in [
        vec![target.clone(), host("evil.example:2773")],
        vec![target.clone()],
        vec![
            target.clone(),
            host("localhost:2773"),
            ("Origin".into(), "http://evil.example".into()),
        ],
        vec![
            target.clone(),
            host("localhost"),
            ("X-Forwarded-For".into(), "10.0.0.1".into()),
        ],
    ] {
        let a = call(&open, "POST", "/", &headers, body, false);
        assert_eq!(
            (a.status, a.error_type.as_deref()),
            (400, Some("BadRequestException")),
            "{headers:?}"
        );
    }
    for ok in ["localhost", "LOCALHOST:1", "[::1]:2773", "127.0.0.2"] {
        let a = call(&open, "POST", "/", &[target.clone(), host(ok)], body, false);
        assert_eq!(a.status, 200, "{ok}");
    }
    assert_eq!(upstream.load(Ordering::SeqCst), 1);
    // Signed requests may name any host (a pod IP with allow_non_loopback),
    // but never come from a page or through a proxy.
    let (signed_api, _) = api(key_pair());
    let mut headers = signed(
        "POST",
        "/",
        &[("X-Amz-Target", "secretsmanager.GetSecretValue")],
        body,
        "secretsmanager",
        SECRET,
    );
    assert_eq!(
        call(&signed_api, "POST", "/", &headers, body, false).status,
        200
    );
    headers.push(("Origin".into(), "http://evil.example".into()));
    assert_eq!(
        call(&signed_api, "POST", "/", &headers, body, false).status,
        400
    );
}

#[test]
fn several_keys_in_one_answer() {
    let (api, upstream) = api(key_pair());
    let a = sdk(
        &api,
        "secretsmanager.BatchGetSecretValue",
        r#"{"SecretIdList":["s1","nope","s2"]}"#,
        SECRET,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let names: Vec<&str> = a.body["SecretValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    assert_eq!(a.body["SecretValues"][0]["CreatedDate"], 1_700_000_000.5);
    assert_eq!(a.body["Errors"][0]["SecretId"], "nope");
    assert_eq!(
        a.body["Errors"][0]["ErrorCode"],
        "ResourceNotFoundException"
    );
    let a = sdk(
        &api,
        "AmazonSSM.GetParameters",
        r#"{"Names":["/p1","/nope","/p2"]}"#,
        SECRET,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["Parameters"][1]["Name"], "/p2");
    assert_eq!(a.body["InvalidParameters"], serde_json::json!(["/nope"]));
    let before = upstream.load(Ordering::SeqCst);
    sdk(
        &api,
        "AmazonSSM.GetParameters",
        r#"{"Names":["/p2","/p1"]}"#,
        SECRET,
    );
    assert_eq!(upstream.load(Ordering::SeqCst), before, "all cached");
}

#[test]
fn passed_through_reads_are_cached_whole() {
    let (api, upstream) = api(key_pair());
    for _ in 0..2 {
        let a = sdk(
            &api,
            "secretsmanager.DescribeSecret",
            r#"{"SecretId":"s1"}"#,
            SECRET,
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.body["Echo"]["SecretId"], "s1");
    }
    assert_eq!(upstream.load(Ordering::SeqCst), 1);
}

#[test]
fn cloud_extensions_interface() {
    let (api, _) = api(key_pair());
    let token = ("X-Aws-Parameters-Secrets-Token", "tok");
    let get = |target: &str, headers: &[(&str, &str)], secret: &str| {
        let signed = signed("GET", target, headers, b"", "secretsmanager", secret);
        call(&api, "GET", target, &signed, b"", true)
    };
    let a = get("/secretsmanager/get?secretId=s1", &[token], SECRET);
    assert_eq!((a.status, a.body["Name"].as_str()), (200, Some("s1")));
    assert_eq!(get("/secretsmanager/s1", &[token], SECRET).status, 200);
    assert_eq!(
        get(
            "/v1/s1",
            &[("X-Aws-Parameters-Secrets-Token", "tok")],
            SECRET
        )
        .status,
        200
    );
    let a = get(
        "/secretsmanager/s1",
        &[("X-Aws-Parameters-Secrets-Token", "bad")],
        SECRET,
    );
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (403, Some("InvalidSsrfTokenException"))
    );
    assert_eq!(a.body, serde_json::json!({"message": "Bad Token"}));
    let a = get("/secretsmanager/s1", &[token], "wrong");
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (403, Some("SignatureDoesNotMatch"))
    );
    let a = get("/secretsmanager/nope", &[token], SECRET);
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (400, Some("ResourceNotFoundException"))
    );
    assert!(
        a.body.get("__type").is_none() && a.body["message"].is_string(),
        "{}",
        a.body
    );
    let a = get("/secretsmanager/get", &[token], SECRET);
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (400, Some("BadRequestException"))
    );
    let a = get(
        "/secretsmanager/s1",
        &[token, ("X-Forwarded-For", "10.0.0.1")],
        SECRET,
    );
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (400, Some("BadRequestException"))
    );
    let unsigned = [(
        "X-Aws-Parameters-Secrets-Token".to_string(),
        "tok".to_string(),
    )];
    let a = call(&api, "GET", "/secretsmanager/s1", &unsigned, b"", true);
    assert_eq!(
        (a.status, a.error_type.as_deref()),
        (401, Some("MissingAuthenticationToken"))
    );
    // The SDK's protocol, one service per path.
    let body = br#"{"Name":"/p1"}"#;
    let headers = signed(
        "POST",
        "/parameterstore",
        &[("X-Amz-Target", "AmazonSSM.GetParameter")],
        body,
        "ssm",
        SECRET,
    );
    let a = call(&api, "POST", "/parameterstore", &headers, body, true);
    assert_eq!(
        (a.status, a.body["Parameter"]["Name"].as_str()),
        (200, Some("/p1"))
    );
    assert!(a.body.get("ResultMetadata").is_none(), "{}", a.body);
    let a = call(&api, "POST", "/secretsmanager", &headers, body, true);
    assert_eq!(a.status, 400, "an SSM target on the Secrets Manager path");
}
