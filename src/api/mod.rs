//! The HTTP surface of AWS's agent: routes, the order of checks, status codes
//! and bodies, as docs/http-api.md lists them. Knows nothing about
//! sockets; the server hands it a parsed request and writes back what it
//! returns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod cloud_extensions;
mod sdk;
mod target;
mod test_clock;

use crate::token::Token;
use secrets_manager_agent_aws::callers::Callers;
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_cache::{Answer, Cache, Key, Served, Upstream};
use secrets_manager_agent_core::metrics::{self, Route};
use secrets_manager_agent_http::http::{Later, Reply, Request, Response, ResponseBody};
pub use target::parse_parameter;
use target::{parse_get, parse_prefixed};

/// Requests beyond `max_conn` that `/ping` may still use, so health checks
/// answer while the agent is saturated.
const PING_HEADROOM: usize = 4;

const JSON: &str = "application/json";
/// Prometheus's text exposition format.
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The route of AWS's Parameters and Secrets Lambda Extension.
const PARAMETERS: &str = "/systemsmanager/parameters/get";
const TEXT: &str = "text/plain; charset=utf-8";
/// A request relayed by a proxy: refused on every route that reads.
const FORWARDED: &str = "x-forwarded-for";

fn text(status: u16, body: &'static str) -> Response {
    Response::new(status, TEXT, ResponseBody::Static(body))
}

fn owned_text(status: u16, body: String) -> Response {
    Response::new(status, TEXT, ResponseBody::Owned(body))
}

pub struct Settings {
    pub token: Token,
    /// Lower-cased header names that may carry the token.
    pub ssrf_headers: Vec<String>,
    pub path_prefix: String,
    pub max_conn: usize,
    /// Whether `/systemsmanager/parameters/get` serves Parameter Store.
    pub parameters: bool,
    pub ready: Readiness,
    /// Who may call through the SDK's protocol (`caller_auth`).
    pub callers: Callers,
}

/// `/ready`'s check: `Err` while the agent cannot serve secrets yet.
pub type Readiness = Box<dyn Fn() -> Result<(), NotReady> + Send + Sync>;

/// Why the agent is not ready: a short reason anyone may read, and the
/// details (which credential sources failed and why: profile names, file
/// paths, a command's error) only for a caller with the token, since `/ready`
/// answers without it.
pub struct NotReady {
    pub reason: &'static str,
    pub detail: Option<String>,
}

pub struct Api<U> {
    settings: Settings,
    cache: Cache<U>,
    in_flight: Arc<AtomicUsize>,
    /// Serves [`test_clock::PATH`] (debug builds only, for the tests).
    test_clock: bool,
}

/// Holds one in-flight slot until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Slot<'_> {
    /// The same slot, held past this call.
    fn keep(self, in_flight: &Arc<AtomicUsize>) -> OwnedSlot {
        debug_assert!(std::ptr::eq(self.0, &**in_flight));
        // The count moves to the owned slot; this one must not give it back.
        std::mem::forget(self);
        OwnedSlot(in_flight.clone())
    }
}

/// A slot kept by a request parked behind another's call to AWS: it still
/// counts against `max_conn`.
struct OwnedSlot(Arc<AtomicUsize>);

impl Drop for OwnedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<U: Upstream + 'static> Api<U> {
    pub fn new(mut settings: Settings, cache: Cache<U>) -> Api<U> {
        for h in &mut settings.ssrf_headers {
            h.make_ascii_lowercase();
        }
        Api {
            settings,
            cache,
            in_flight: Arc::new(AtomicUsize::new(0)),
            test_clock: test_clock::enabled(),
        }
    }

    pub fn handle(&self, request: &Request) -> Response {
        match self.reply(request) {
            Reply::Now(response) => response,
            // This thread waits, as the request would have.
            Reply::Later(later) => (later.answer)(),
        }
    }

    /// `handle` for the server: a request behind another's call to AWS for
    /// the same key comes back as [`Reply::Later`], so that it waits
    /// without a thread.
    pub fn reply(&self, request: &Request) -> Reply {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((request.target, ""));
        let sdk = sdk::target(request);
        let route = match sdk {
            Some(_) => Route::Sdk,
            None => self.route(path),
        };
        let reply = match sdk {
            Some(target) => self.sdk_request(request, target, sdk::Place::Agent),
            None => self.respond(request, route, path, query),
        };
        if let Reply::Now(response) = &reply {
            metrics::request(route, response.status);
        }
        reply
    }

    /// Which route a path is: the fixed paths first, so that with
    /// `path_prefix = "/"` they are still what they are.
    fn route(&self, path: &str) -> Route {
        match path {
            "/ping" => Route::Ping,
            "/ready" => Route::Ready,
            "/metrics" => Route::Metrics,
            "/secretsmanager/get" => Route::Secret,
            PARAMETERS => Route::Parameter,
            _ if path.starts_with(self.settings.path_prefix.as_str()) => Route::Secret,
            _ => Route::Other,
        }
    }

    /// An SDK request: in a slot like any other (it may wait on AWS), and
    /// checked by its signature instead of the SSRF token.
    fn sdk_request(&self, request: &Request, target: &str, place: sdk::Place) -> Reply {
        let Some(slot) = self.take_slot(self.settings.max_conn) else {
            return sdk::aws_error(429, "ThrottlingException", "Connection limit exceeded").into();
        };
        self.sdk(request, target, place, slot)
    }

    fn respond(&self, request: &Request, route: Route, path: &str, query: &str) -> Reply {
        // The probes: no token (health checkers have none), and a few slots
        // beyond max_conn so they answer while the agent is saturated.
        let is_probe = matches!(route, Route::Ping | Route::Ready);

        let limit = self.settings.max_conn + if is_probe { PING_HEADROOM } else { 0 };
        let Some(slot) = self.take_slot(limit) else {
            return text(429, "Connection limit exceeded").into();
        };
        if !is_probe {
            if let Err(response) = self.check_token(request.headers) {
                return response.into();
            }
        }
        if self.test_clock && path == test_clock::PATH {
            return test_clock::handle(request, query).into();
        }
        if request.method != "GET" {
            return text(405, "Not allowed").into();
        }
        let parsed = match route {
            Route::Ping => return text(200, "healthy").into(),
            Route::Ready => return self.ready(request).into(),
            Route::Metrics => return self.metrics().into(),
            // `Sdk` is answered before: `reply` sends SDK requests to `sdk`.
            Route::Other | Route::Sdk => return text(404, "Not found").into(),
            Route::Parameter if !self.settings.parameters => {
                return text(
                    404,
                    "Not found: Parameter Store is switched off in the config",
                )
                .into()
            }
            Route::Parameter => parse_parameter(query),
            Route::Secret if path == "/secretsmanager/get" => parse_get(query),
            Route::Secret => parse_prefixed(&path[self.settings.path_prefix.len()..], query),
        };
        match parsed {
            Ok((key, refresh_now)) => self.answer(key, refresh_now, route, slot, served_response),
            Err(response) => response.into(),
        }
    }

    /// The surface of the metrics listener (`metrics_address`): `/metrics`
    /// and `/ping`, GET only, without the token, since it never serves a
    /// secret; anything else is `404`.
    pub fn handle_metrics(&self, request: &Request) -> Response {
        let path = request
            .target
            .split_once('?')
            .map_or(request.target, |(path, _)| path);
        match (request.method, path) {
            ("GET", "/metrics") => self.metrics(),
            ("GET", "/ping") => text(200, "healthy"),
            (_, "/metrics" | "/ping") => text(405, "Not allowed"),
            _ => text(404, "Not found"),
        }
    }

    fn ready(&self, request: &Request) -> Response {
        match (self.settings.ready)() {
            Ok(()) => text(200, "ready"),
            Err(NotReady {
                detail: Some(detail),
                ..
            }) if self.check_token(request.headers).is_ok() => {
                owned_text(503, format!("not ready: {detail}"))
            }
            Err(NotReady { reason, .. }) => owned_text(503, format!("not ready: {reason}")),
        }
    }

    /// `/metrics`: the counters, and the gauges read from their owners now.
    pub fn metrics(&self) -> Response {
        let gauges = [
            (
                "in_flight_requests",
                "Requests being answered now.",
                self.in_flight.load(Ordering::Acquire) as u64,
            ),
            (
                "open_connections",
                "Client connections open now.",
                metrics::open_connections(),
            ),
            (
                "cache_entries",
                "Secrets and parameters in the cache.",
                self.cache.entries() as u64,
            ),
        ];
        let body = metrics::render(
            env!("CARGO_PKG_VERSION"),
            secrets_manager_agent_aws::transport::TLS_PROVIDER,
            &gauges,
        );
        Response::new(200, PROMETHEUS, ResponseBody::Owned(body))
    }

    /// The cache behind the API (prefetching fills it).
    pub fn cache(&self) -> &Cache<U> {
        &self.cache
    }

    /// Overwrites the cached secrets (at exit).
    pub fn wipe(&self) {
        self.cache.wipe();
    }

    fn take_slot(&self, limit: usize) -> Option<Slot<'_>> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(&self.in_flight);
        (before < limit).then_some(slot)
    }

    fn check_token(&self, headers: &[httparse::Header]) -> Result<(), Response> {
        if headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(FORWARDED))
        {
            return Err(text(400, "Forwarded"));
        }
        let ok = headers.iter().any(|h| {
            self.settings
                .ssrf_headers
                .iter()
                .any(|name| h.name.eq_ignore_ascii_case(name))
                && self.settings.token.matches(h.value)
        });
        if ok {
            Ok(())
        } else {
            Err(text(403, "Bad Token"))
        }
    }

    /// The answer for `key`, rendered by `render` (the GET routes' body, or
    /// the SDK protocol's): now, or parked until another's call to AWS ends.
    fn answer(
        &self,
        key: Key,
        refresh_now: bool,
        route: Route,
        slot: Slot<'_>,
        render: Render,
    ) -> Reply {
        let started = Instant::now();
        match self.cache.answer_or_wait(&key, refresh_now) {
            Answer::Now(served, from_memory) => {
                Reply::Now(render(&key, served, from_memory, started))
            }
            Answer::Later(waiting) => {
                let slot = slot.keep(&self.in_flight);
                // Counted when answered. A parked request whose connection
                // is closed first (shed, or past the server's last-resort
                // limit) is never answered and not counted.
                let ready = waiting.clone();
                Reply::Later(Later {
                    ready: Box::new(move |wake| ready.when_done(wake)),
                    answer: Box::new(move || {
                        let response = render(&key, waiting.result(), false, started);
                        metrics::request(route, response.status);
                        drop(slot);
                        response
                    }),
                })
            }
        }
    }
}

/// How a served key becomes a response.
type Render = fn(&Key, Served, bool, Instant) -> Response;

/// The answer to a request for `key` that the cache `served`: the body, or
/// the error as AWS's agent tells it (and a warning in the log).
fn served_response(key: &Key, served: Served, from_memory: bool, started: Instant) -> Response {
    let took = started.elapsed();
    metrics::answer(from_memory, took);
    match served {
        Ok(body) => Response::new(200, JSON, ResponseBody::Shared(body)),
        Err(e) => {
            let response = upstream_error(&e);
            // The fields go into JSON log lines (`log_format = "json"`).
            let (status, duration_ms) = (response.status, took.as_millis() as u64);
            match key {
                Key::Secret { query, .. } => log::warn!(
                    secret_id = query.secret_id.as_str(), status, duration_ms;
                    "request for {key} failed: {e}"
                ),
                Key::Parameter { query, .. } => log::warn!(
                    parameter = query.name.as_str(), status, duration_ms;
                    "request for {key} failed: {e}"
                ),
                Key::Call { call, .. } => log::warn!(
                    operation = call.operation(), status, duration_ms;
                    "request for {key} failed: {e}"
                ),
            }
            response
        }
    }
}

/// How a failed upstream call is told to the client (docs/http-api.md, "Statuses and errors"):
/// AWS's own error answers keep their status and code; the agent's own
/// failures get the fixed status and body AWS's agent gives them. Every body
/// is valid JSON.
pub fn upstream_error(e: &UpstreamError) -> Response {
    let (status, code, message) = error_parts(e);
    Response::new(
        status,
        JSON,
        ResponseBody::Owned(error_body(code, message.as_deref())),
    )
}

/// A failed upstream call's status, error code and message, as both the GET
/// routes and the SDK protocol tell it.
fn error_parts(e: &UpstreamError) -> (u16, &str, Option<std::borrow::Cow<'_, str>>) {
    use std::borrow::Cow::{Borrowed, Owned};
    match e {
        UpstreamError::Service {
            status,
            code,
            message,
            ..
        } => (*status, code.as_str(), Some(Borrowed(message.as_str()))),
        UpstreamError::Timeout => (504, "TimeoutError", Some(Borrowed("Timeout"))),
        UpstreamError::Connection(_) | UpstreamError::Tls(_) => {
            (502, "ConnectionError", Some(Borrowed("Read Error")))
        }
        UpstreamError::Response(_) => (502, "ConnectionError", Some(Borrowed("Response Error"))),
        UpstreamError::UnexpectedStatus(upstream) => (
            502,
            "ConnectionError",
            Some(Owned(format!(
                "Response Error: unexpected upstream HTTP status {upstream}"
            ))),
        ),
        // AWS's agents answer InternalFailure here, and clients match on it;
        // the message still says which sources were tried and why each failed.
        UpstreamError::Credentials(why) => (500, "InternalFailure", Some(Borrowed(why.as_str()))),
        UpstreamError::Internal(_) => (500, "InternalFailure", None),
        UpstreamError::Refused { code, message } => (400, *code, Some(Borrowed(message.as_str()))),
    }
}

/// `{"__type":code,"message":message}` (no `message` when `None`). A struct
/// rather than `serde_json::json!`: nothing else in the agent builds a
/// `serde_json::Value`, and this keeps it out of the binary (`make static`:
/// 8,192 bytes less).
fn error_body(code: &str, message: Option<&str>) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(rename = "__type")]
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'a str>,
    }
    // Serializing strings into a String cannot fail.
    serde_json::to_string(&Body { code, message }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
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
                        body: SecretBytes::new(
                            format!("parameter {query:?}|{role:?}").into_bytes(),
                        ),
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

    fn call(
        api: &Api<Echo>,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> (u16, String) {
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
}
