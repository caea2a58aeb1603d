//! AWS Systems Manager Cloud Extensions' interface, on its own listener
//! (`cloud_extensions_port`, docs/sdk.md): applications written for AWS's
//! newest agent work against this one unchanged.
//!
//! Each extension has its first path segment: `/secretsmanager/get?secretId=`,
//! `/secretsmanager/{id}` (slashes kept, `%2F` decoded; a secret named `get`
//! only by query) and the vault-style `/v1/{id}` read secrets as the agent's
//! GET routes do; `POST /secretsmanager` and `POST /parameterstore` speak the
//! SDK's protocol for one service each. The differences from the agent's
//! own listener are that interface's: every request is signed (SigV4, per
//! `caller_auth`; unsigned is `401`), the GET routes also carry the SSRF
//! token, a GET with `X-Forwarded-For` is always `400 BadRequestException`
//! (checked in that order: signature, forwarding, token), Parameter Store
//! serves GetParameter and GetParameters only,
//! and errors name their type in `X-Amzn-Errortype` with a body of
//! `{"message": ...}`. Where AWS's pages are silent (a missing route, a
//! method) the answers are the AWS services' (`404`, `405`).

use super::sdk::{self, aws_json, Place};
use super::target::{parse_get, parse_prefixed};
use super::{Api, JSON};
use secrets_manager_agent_aws::passthrough::Service;
use secrets_manager_agent_cache::Upstream;
use secrets_manager_agent_core::metrics::{self, Route};
use secrets_manager_agent_http::http::{Later, Reply, Request, Response, ResponseBody};

impl<U: Upstream + 'static> Api<U> {
    /// The surface of the Cloud Extensions listener.
    pub fn reply_cloud_extensions(&self, request: &Request) -> Reply {
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((request.target, ""));
        if let Some(target) = sdk::target(request) {
            let place = match path {
                "/secretsmanager" | "/secretsmanager/" => {
                    Place::CloudExtensions(Service::SecretsManager)
                }
                "/parameterstore" | "/parameterstore/" => Place::CloudExtensions(Service::Ssm),
                _ => {
                    let response = error(404, "NotFoundException", "Not found: the SDK's protocol is served at /secretsmanager and /parameterstore");
                    metrics::request(Route::Sdk, 404);
                    return response.into();
                }
            };
            let reply = self.sdk_request(request, target, place);
            if let Reply::Now(response) = &reply {
                metrics::request(Route::Sdk, response.status);
            }
            return reply;
        }
        let reply = self.cloud_extensions_get(request, path, query);
        if let Reply::Now(response) = &reply {
            metrics::request(Route::Secret, response.status);
        }
        match reply {
            Reply::Now(response) => restyle(response).into(),
            Reply::Later(Later { ready, answer }) => Reply::Later(Later {
                ready,
                answer: Box::new(move || restyle(answer())),
            }),
        }
    }

    fn cloud_extensions_get(&self, request: &Request, path: &str, query: &str) -> Reply {
        let id = if path == "/secretsmanager/get" {
            None
        } else if let Some(id) = path.strip_prefix("/secretsmanager/") {
            Some(id)
        } else if let Some(id) = path.strip_prefix("/v1/") {
            Some(id)
        } else {
            return error(404, "NotFoundException", "Not found").into();
        };
        if request.method != "GET" {
            return error(405, "MethodNotAllowedException", "Not allowed: GET only").into();
        }
        let Some(slot) = self.take_slot(self.settings.max_conn) else {
            return error(429, "ThrottlingException", "Connection limit exceeded").into();
        };
        if let Err(refusal) = self.check_caller(request, Service::SecretsManager) {
            let status =
                sdk::refusal_status(&refusal, Place::CloudExtensions(Service::SecretsManager));
            return error(status, refusal.code(), &refusal.to_string()).into();
        }
        if request.header(super::FORWARDED).is_some() {
            return error(
                400,
                "BadRequestException",
                "X-Forwarded-For is not accepted",
            )
            .into();
        }
        if self.check_token(request.headers).is_err() {
            return error(403, "InvalidSsrfTokenException", "Bad Token").into();
        }
        let parsed = match id {
            None => parse_get(query),
            Some(id) => parse_prefixed(id, query),
        };
        match parsed {
            Ok(asked) => self.answer_asked(asked, Route::Secret, slot),
            Err(response) => response.into(),
        }
    }
}

/// An error of this interface: the type in the header, `{"message"}`.
fn error(status: u16, code: &str, message: &str) -> Response {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        message: &'a str,
    }
    let body = serde_json::to_string(&Body { message }).unwrap_or_default();
    let mut response = aws_json(status, ResponseBody::Owned(body), Some(code));
    response.content_type = JSON;
    response
}

/// A GET route's answer in this interface's shape: a success as it is; an
/// error with its type in `X-Amzn-Errortype` and `{"message"}` as the body,
/// the type taken from AWS's answer (`__type`) or, for the agent's own
/// refusals (plain text), from the status.
fn restyle(response: Response) -> Response {
    if response.status < 400 || !response.headers.is_empty() {
        return response;
    }
    #[derive(serde::Deserialize)]
    struct AwsError {
        #[serde(rename = "__type")]
        code: String,
        message: Option<String>,
    }
    let bytes = response.body.as_bytes();
    if let Ok(aws) = serde_json::from_slice::<AwsError>(bytes) {
        return error(
            response.status,
            &aws.code,
            aws.message.as_deref().unwrap_or_default(),
        );
    }
    let code = match response.status {
        400 => "BadRequestException",
        403 => "InvalidSsrfTokenException",
        404 => "NotFoundException",
        405 => "MethodNotAllowedException",
        429 => "ThrottlingException",
        500 => "InternalFailure",
        _ => "ServiceUnavailableException",
    };
    error(response.status, code, &String::from_utf8_lossy(bytes))
}
