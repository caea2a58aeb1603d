//! Bytes -> request head -> the agent's API, asserting the HTTP contract
//! (docs/http-api.md): no panic, only the contract's status codes, a
//! non-empty body, and the order of checks (token before method before
//! routing).
//!
//! Two input modes, chosen by the first byte:
//! * anything but NUL: the bytes are a raw request for the server's own
//!   parser (`server::http::parse_head`: httparse, 64 headers, 64 KiB head,
//!   a body of one `Content-Length` up to 64 KiB); a complete request goes to
//!   `Api::handle` and the answer through `server::http::render`, as the
//!   server does; the rendered head must carry the status and the body's
//!   length;
//! * NUL: a structured request that need not survive httparse, one item a line:
//!   `path_prefix`, method, target, then `name:value` header lines. This reaches
//!   `Api::handle` with strings the HTTP parser would refuse (spaces, controls,
//!   any Unicode), and with custom path prefixes.
#![no_main]

use std::sync::Once;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use secrets_manager_agent::api::{self, Api};
use secrets_manager_agent_aws::arn::check_role_arn;
use secrets_manager_agent_aws::callers::Callers;
use secrets_manager_agent_aws::{SecretQuery, SecretValue, UpstreamError};
use secrets_manager_agent_cache::{self as cache, Cache, Key, Upstream};
use secrets_manager_agent_core::query::{parse_query, percent_decode};
use secrets_manager_agent_core::secret::SecretBytes;
use secrets_manager_agent_http::http::{
    self, Head, Request, Response, MAX_BODY, MAX_HEAD, MAX_HEADERS,
};
use secrets_manager_agent::token::Token;

const TOKEN_VAR: &str = "SMA_FUZZ_TOKEN";
const TOKEN: &str = "tok";
const TOKEN_HEADERS: [&str; 2] = ["X-Aws-Parameters-Secrets-Token", "X-Vault-Token"];

/// Echoes the query back, or fails in a way chosen by the secret ID, so every
/// error mapping of `Api::secret` is reachable.
struct Fake;

/// The fake's failures by secret ID.
fn fake_error(secret_id: &str) -> Option<UpstreamError> {
    Some(match secret_id {
        "missing" => UpstreamError::service(400, "ResourceNotFoundException", "no \"such\" secret"),
        "unavailable" => UpstreamError::service(503, "ServiceUnavailable", "try later"),
        "timeout" => UpstreamError::Timeout,
        "conn" => UpstreamError::Connection("reset".into()),
        "garbled" => UpstreamError::Response("bad json".into()),
        "nocreds" => UpstreamError::Credentials("no credentials".into()),
        "internal" => UpstreamError::Internal("signing".into()),
        _ => return None,
    })
}

const PARAMETERS: &str = "/systemsmanager/parameters/get";

fn echo(q: &SecretQuery, role: Option<&str>) -> Vec<u8> {
    format!("{}|{:?}|{:?}|{role:?}", q.secret_id, q.version_id, q.version_stage).into_bytes()
}

impl Upstream for Fake {
    fn fetch(&self, key: &Key) -> Result<SecretValue, UpstreamError> {
        let (q, role) = match key {
            Key::Secret { query, role } => (query, role),
            Key::Parameter { query, .. } => {
                return Ok(SecretValue {
                    body: SecretBytes::new(query.name.clone().into_bytes()),
                    version_id: "1".into(),
                })
            }
            Key::Call { input, .. } => {
                return Ok(SecretValue {
                    body: SecretBytes::new(input.clone().into_bytes()),
                    version_id: String::new(),
                })
            }
        };
        match fake_error(&q.secret_id) {
            Some(e) => Err(e),
            None => Ok(SecretValue {
                body: SecretBytes::new(echo(q, role.as_deref())),
                version_id: "v1".into(),
            }),
        }
    }

    fn still_current(&self, _: &Key, _: &str) -> Result<bool, UpstreamError> {
        Err(UpstreamError::Timeout)
    }
}

/// A fresh API per input, so no state leaks between runs (libFuzzer wants
/// deterministic targets). TTL 0: the cache passes every request through and
/// starts no refresher threads, so building one per input is cheap.
/// `Token::new` is test-only, so the token comes from the environment like the
/// agent's own.
fn api(prefix: &str) -> Api<Fake> {
    static ENV: Once = Once::new();
    ENV.call_once(|| std::env::set_var(TOKEN_VAR, TOKEN));
    let (token, _) = Token::from_env(&[TOKEN_VAR.to_string()]).expect("token variable is set");
    let cache = Cache::new(
        Fake,
        cache::Settings {
            ttl: Duration::ZERO,
            parameter_ttl: Duration::ZERO,
            capacity: 4,
            ignore_transient_errors: true,
            refresh_batch: 1,
        },
    );
    Api::new(
        api::Settings {
            token,
            ssrf_headers: TOKEN_HEADERS.iter().map(|h| h.to_string()).collect(),
            path_prefix: prefix.to_string(),
            max_conn: 1,
            parameters: true,
            ready: Box::new(|| Ok(())),
            // Unsigned SDK requests reach the operation parser.
            callers: Callers::Anyone,
        },
        cache,
    )
}

/// What the contract (docs/http-api.md) says a request to a secret route
/// gets.
enum Expect {
    /// Step 4 refuses it; any of these bodies (the contract does not order the
    /// query checks among themselves).
    BadRequest(Vec<String>),
    /// The query, the role (`roleArn`) and `refreshNow`.
    Secret(SecretQuery, Option<String>, bool),
    /// Not checked exactly (a query key given twice: the contract is silent).
    Unchecked,
}

/// A reference model of the query rules, written from the contract. It shares
/// `parse_query`/`percent_decode` with the agent (the property tests cover
/// those on their own).
fn model(path: &str, query: &str, prefix: &str) -> Expect {
    // The parameter route's query rules: the `query` target and the unit
    // tests check them.
    if path == PARAMETERS {
        return Expect::Unchecked;
    }
    let Ok(pairs) = parse_query(query) else {
        return Expect::BadRequest(vec!["invalid percent-encoding in query".into()]);
    };
    let get_route = path == "/secretsmanager/get";
    let mut errors = Vec::new();
    let known: &[&str] = if get_route {
        &["secretId", "versionId", "versionStage", "refreshNow", "roleArn", "jsonKey"]
    } else {
        &["versionId", "versionStage", "refreshNow", "roleArn", "jsonKey"]
    };
    if let Some((key, _)) = pairs.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        errors.push(format!("unknown parameter: {key}"));
    }
    let mut keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let duplicated = keys.windows(2).any(|w| w[0] == w[1]);
    let value = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let secret_id = if get_route {
        match value("secretId").filter(|v| !v.is_empty()) {
            Some(id) => Some(id),
            None => {
                errors.push("missing parameter secretId".into());
                None
            }
        }
    } else {
        match percent_decode(&path[prefix.len()..], false) {
            None => {
                errors.push("invalid percent-encoding in secret ID".into());
                None
            }
            Some(id) if id.is_empty() => {
                errors.push("missing secret ID".into());
                None
            }
            Some(id) => Some(id),
        }
    };
    let refresh_now = match value("refreshNow") {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
        Some(_) => {
            errors.push("invalid refreshNow value".into());
            false
        }
    };
    // Every `jsonKey` given must be non-empty (checked as it is read).
    if pairs.iter().any(|(k, v)| k == "jsonKey" && v.is_empty()) {
        errors.push("empty jsonKey".into());
    }
    // Every `roleArn` given is checked (the agent checks each as it reads it).
    for (_, arn) in pairs.iter().filter(|(k, _)| k == "roleArn") {
        if let Err(why) = check_role_arn(arn) {
            errors.push(format!("invalid roleArn: {why}"));
        }
    }
    if !errors.is_empty() {
        // With a key given twice, the value that counts is not in the contract.
        return if duplicated {
            Expect::Unchecked
        } else {
            Expect::BadRequest(errors)
        };
    }
    // One key of the secret: the fake's echoes are no JSON, so what comes
    // back is an error the unit tests check (docs/http-api.md, jsonKey).
    if duplicated || value("jsonKey").is_some() {
        return Expect::Unchecked;
    }
    let query = SecretQuery {
        secret_id: secret_id.expect("no error, so an ID"),
        version_id: value("versionId").filter(|v| !v.is_empty()),
        version_stage: value("versionStage").filter(|v| !v.is_empty()),
    };
    Expect::Secret(query, value("roleArn"), refresh_now)
}

/// An SDK-protocol answer: AWS's content type and request ID; an error is
/// `{"__type","message"}` with the same type in `X-Amzn-Errortype`.
fn check_sdk(response: &Response, ctx: &str) {
    assert_eq!(response.content_type, "application/x-amz-json-1.1", "{ctx}");
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    assert!(header("x-amzn-RequestId").is_some(), "{ctx}");
    if response.status >= 400 {
        let error: serde_json::Value = serde_json::from_slice(response.body.as_bytes())
            .unwrap_or_else(|e| panic!("{ctx}: an error body that is not JSON: {e}"));
        assert_eq!(error["__type"].as_str(), header("x-amzn-errortype"), "{ctx}");
        assert!(error["message"].is_string(), "{ctx}: {error}");
    }
}

/// Runs the request through the API, checks the answer against the contract
/// and returns it.
fn check(api: &Api<Fake>, prefix: &str, request: &Request) -> Response {
    let response = api.handle(request);
    let status = response.status;
    let body = response.body.as_bytes();
    let ctx = || {
        format!(
            "method {:?} target {:?} prefix {prefix:?}",
            request.method, request.target
        )
    };
    assert!(
        // The contract's own codes, then the fake upstream's (500/502/504 are
        // the agent's mappings, 503 is passed through from "AWS").
        [200, 400, 403, 404, 405, 429, 500, 502, 503, 504].contains(&status),
        "status {status} is not in the contract: {}",
        ctx()
    );
    assert!(
        !body.is_empty(),
        "empty body for status {status}: {}",
        ctx()
    );
    // max_conn = 1 and one request at a time: the limit is never hit.
    assert_ne!(status, 429, "429 with nothing else in flight: {}", ctx());

    // The SDK's protocol (docs/sdk.md) comes before any route: its answers
    // are AWS's shapes, its errors name their type twice.
    let sdk = request.method == "POST"
        && request
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("x-amz-target"));
    if sdk {
        check_sdk(&response, &ctx());
        return response;
    }

    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((request.target, ""));
    let forwarded = request
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"));
    let has_token = request.headers.iter().any(|h| {
        TOKEN_HEADERS.iter().any(|n| h.name.eq_ignore_ascii_case(n)) && h.value == TOKEN.as_bytes()
    });
    let get = request.method == "GET";
    let text = "text/plain; charset=utf-8";
    let expected = if path == "/ready" {
        Some(if get { (200, "ready") } else { (405, "Not allowed") })
    } else if path == "/ping" {
        // No token needed; only GET.
        Some(if get {
            (200, "healthy")
        } else {
            (405, "Not allowed")
        })
    } else if forwarded {
        Some((400, "Forwarded"))
    } else if !has_token {
        Some((403, "Bad Token"))
    } else if !get {
        Some((405, "Not allowed"))
    } else if path != "/secretsmanager/get" && path != PARAMETERS && !path.starts_with(prefix) {
        Some((404, "Not found"))
    } else {
        None
    };
    if let Some((want_status, want_body)) = expected {
        assert_eq!(
            (status, String::from_utf8_lossy(body)),
            (want_status, want_body.into()),
            "{}",
            ctx()
        );
        assert_eq!(response.content_type, text);
        return response;
    }
    match model(path, query, prefix) {
        Expect::BadRequest(bodies) => {
            let got = String::from_utf8_lossy(body);
            assert_eq!(
                status,
                400,
                "{}: body {got:?}, expected one of {bodies:?}",
                ctx()
            );
            assert!(
                bodies.iter().any(|b| *b == got),
                "{}: body {got:?}, expected one of {bodies:?}",
                ctx()
            );
            assert_eq!(response.content_type, text);
        }
        Expect::Secret(query, role, _refresh_now) => {
            let (want_status, want_body) = match fake_error(&query.secret_id) {
                Some(e) => {
                    let r = api::upstream_error(&e);
                    (r.status, r.body.as_bytes().to_vec())
                }
                None => (200, echo(&query, role.as_deref())),
            };
            assert_eq!(
                (status, String::from_utf8_lossy(body)),
                (want_status, String::from_utf8_lossy(&want_body)),
                "{}",
                ctx()
            );
            assert_eq!(response.content_type, "application/json");
        }
        Expect::Unchecked => {}
    }
    response
}

/// The server's steps between reading and writing (`conn::serve`): head ->
/// API -> rendered answer.
fn raw(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Head::Complete(parsed) = http::parse_head(data, &mut headers) else {
        // Partial, too large or invalid: the API never sees it.
        return;
    };
    let len = parsed.len;
    let body = parsed.request.body.len();
    assert!(body <= MAX_BODY, "body length {body}");
    assert!(
        len <= data.len() && len - body <= MAX_HEAD,
        "request length {len}, body {body}"
    );
    assert_eq!(
        parsed.request.body,
        &data[len - body..len],
        "the body ends the request"
    );
    let prefix = "/v1/";
    let api = api(prefix);
    let response = check(&api, prefix, &parsed.request);
    let status = response.status;
    let mut out = Vec::new();
    http::render(&mut out, &response, parsed.keep_alive);
    let text = String::from_utf8_lossy(&out);
    let (head, _) = text
        .split_once("\r\n\r\n")
        .expect("the rendered answer has a head");
    assert!(
        head.starts_with(&format!("HTTP/1.1 {status} ")),
        "status line {head:?} for {status}"
    );
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse::<usize>().ok())
        .expect("a Content-Length header");
    // The head is ASCII, so its length in `text` is its length in bytes.
    assert_eq!(length, out.len() - head.len() - 4, "Content-Length");
}

fn structured(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let prefix = lines.next().unwrap_or_default();
    // Config::parse only lets prefixes that start with '/' through.
    let prefix = if prefix.starts_with('/') {
        prefix
    } else {
        "/v1/"
    };
    let method = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or_default();
    let pairs: Vec<(&str, &str)> = lines
        .take(MAX_HEADERS)
        .map(|l| l.split_once(':').unwrap_or((l, "")))
        .collect();
    let headers: Vec<httparse::Header> = pairs
        .iter()
        .map(|(name, value)| httparse::Header {
            name,
            value: value.as_bytes(),
        })
        .collect();
    let api = api(prefix);
    check(
        &api,
        prefix,
        &Request {
            method,
            target,
            headers: &headers,
            body: &[],
        },
    );
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, rest)) => structured(rest),
        Some(_) => raw(data),
        None => {}
    }
});
