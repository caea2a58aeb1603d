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

use crate::reference::{pick, PickError, Picked};
use crate::token::Token;
use secrets_manager_agent_aws::callers::Callers;
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_cache::{Answer, Cache, Key, Served, Upstream};
use secrets_manager_agent_core::metrics::{self, Route};
use secrets_manager_agent_http::http::{Later, Reply, Request, Response, ResponseBody};
use target::{parse_get, parse_prefixed};
pub use target::{parse_parameter, Asked};

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
            Ok(asked) => self.answer_asked(asked, route, slot),
            Err(response) => response.into(),
        }
    }

    /// A GET route's answer: the served body, or one key of it (`jsonKey`).
    fn answer_asked(&self, asked: target::Asked, route: Route, slot: Slot<'_>) -> Reply {
        let target::Asked {
            key,
            refresh_now,
            json_key,
        } = asked;
        match json_key {
            None => self.answer(key, refresh_now, route, slot, served_response),
            Some(json_key) => self.answer(
                key,
                refresh_now,
                route,
                slot,
                move |key, served, from_memory, started| {
                    json_key_response(key, served, from_memory, started, &json_key)
                },
            ),
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
        render: impl FnOnce(&Key, Served, bool, Instant) -> Response + Send + 'static,
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

/// The answer to `jsonKey=KEY`: the key's value alone, a string as its
/// text, anything else as JSON; a secret without the key is a `404` naming
/// it (never the secret's other keys), one that is not a JSON object a
/// `400` (docs/http-api.md, "One JSON key").
fn json_key_response(
    key: &Key,
    served: Served,
    from_memory: bool,
    started: Instant,
    json_key: &str,
) -> Response {
    let body = match served {
        Ok(body) => body,
        Err(e) => return served_response(key, Err(e), from_memory, started),
    };
    metrics::answer(from_memory, started.elapsed());
    let e = match pick(key, &body, Some(json_key)) {
        Ok(Picked::Text(value)) => {
            return Response::new(200, TEXT, ResponseBody::Shared(Arc::new(value)))
        }
        Ok(Picked::Json(value)) => {
            return Response::new(200, JSON, ResponseBody::Shared(Arc::new(value)))
        }
        Err(e) => e,
    };
    let (status, code) = match e {
        PickError::NoKey(_) => (404, "JsonKeyNotFound"),
        PickError::NotAnObject => (400, "SecretNotAJsonObject"),
        PickError::Binary => (400, "SecretIsBinary"),
        PickError::Unreadable => (500, "InternalFailure"),
    };
    let body = error_body(code, Some(&e.to_string()));
    Response::new(status, JSON, ResponseBody::Owned(body))
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
mod tests;
