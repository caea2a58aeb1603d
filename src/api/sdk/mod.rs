//! The AWS SDK's own protocol on the agent's listener (docs/sdk.md): an
//! unmodified SDK whose endpoint URL names the agent sends `POST` with
//! `X-Amz-Target` and a JSON body, signed with SigV4, and gets the
//! service's exact answer from the same cache as the GET routes.
//!
//! In order: the caller's signature (`caller_auth`: the SSRF token cannot
//! be added to an SDK's requests, a signature is what it always sends), the
//! operation (`operation`: reads only, inputs checked), then the cache. One
//! key answers as the GET routes do, parked without a thread while AWS is
//! called; several keys (GetParameters, BatchGetSecretValue by IDs) are all
//! asked at once, so their calls to AWS run side by side, and the request is
//! parked until the last is done. Answers and errors are AWS's shapes
//! (`reply`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

mod operation;
mod reply;

use super::{Api, Slot};
use operation::{service_of, Operation};
pub use reply::{aws_error, aws_json};
use secrets_manager_agent_aws::callers::Callers;
use secrets_manager_agent_aws::passthrough::Service;
use secrets_manager_agent_aws::verify::{self, clip, Refusal};
use secrets_manager_agent_cache::{Answer, Key, Served, Upstream};
use secrets_manager_agent_core::clock::{Clock, SystemClock};
use secrets_manager_agent_core::metrics::{self, Route};
use secrets_manager_agent_http::http::{Later, Reply, Request, Response, Wake};

/// Where the SDK protocol is served: the agent's own listener (any path,
/// both services), or a Cloud Extensions path that names one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Agent,
    CloudExtensions(Service),
}

/// The request's `X-Amz-Target`, if it is a `POST` in the SDK's protocol.
pub fn target<'r>(request: &Request<'r>) -> Option<&'r str> {
    if request.method != "POST" {
        return None;
    }
    request
        .header("x-amz-target")
        .map(|value| std::str::from_utf8(value).unwrap_or(""))
}

/// The status of a refused signature: AWS's, but `401` for an unsigned
/// request on the Cloud Extensions interface, as that interface answers.
pub fn refusal_status(refusal: &Refusal, place: Place) -> u16 {
    match (refusal, place) {
        (Refusal::Missing, Place::CloudExtensions(_)) => 401,
        _ => refusal.status(),
    }
}

/// Why a request that a signature would not protect is refused whatever it
/// carries: one relayed by a proxy (`X-Forwarded-For`, refused on the GET
/// routes too), one a browser sends for a web page (`Origin`: SDKs never
/// send it), and, with `caller_auth = "none"`, one whose `Host` is not a
/// loopback name (a DNS-rebinding page names its own host).
fn unprotected(request: &Request, unsigned: bool) -> Option<&'static str> {
    if request.header(super::FORWARDED).is_some() {
        return Some("a request relayed by a proxy (X-Forwarded-For) is refused");
    }
    if request.header("origin").is_some() {
        return Some("a request from a web page (Origin) is refused");
    }
    let loopback_host = || {
        let host = request
            .header("host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .unwrap_or("");
        let name = match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        };
        secrets_manager_agent_aws::endpoint::is_loopback_host(name)
    };
    if unsigned && !loopback_host() {
        return Some("with caller_auth = \"none\", only a loopback Host (localhost, 127.0.0.1, [::1]) is served");
    }
    None
}

impl<U: Upstream + 'static> Api<U> {
    /// Answers an SDK request for `target` (see [`target`]).
    pub(super) fn sdk(
        &self,
        request: &Request,
        target: &str,
        place: Place,
        slot: Slot<'_>,
    ) -> Reply {
        let Some((service, operation)) = service_of(target) else {
            return aws_error(
                400,
                "UnknownOperationException",
                &format!("{target} is not an operation of Secrets Manager or Parameter Store"),
            )
            .into();
        };
        if let Place::CloudExtensions(served) = place {
            // That interface's Parameter Store has these two reads only.
            let ssm_served = matches!(operation, "GetParameter" | "GetParameters");
            if served != service || (service == Service::Ssm && !ssm_served) {
                return aws_error(
                    400,
                    "ValidationException",
                    &format!("{target} is not served on this path"),
                )
                .into();
            }
        }
        let unsigned = matches!(self.settings.callers, Callers::Anyone);
        if let Some(why) = unprotected(request, unsigned) {
            return aws_error(400, "BadRequestException", why).into();
        }
        if let Err(refusal) = self.check_caller(request, service) {
            log::warn!(
                code = refusal.code();
                "refused an SDK request for {}: {}: {}",
                clip(target),
                refusal.code(),
                clip(&refusal.to_string())
            );
            let status = refusal_status(&refusal, place);
            return aws_error(status, refusal.code(), &refusal.to_string()).into();
        }
        let operation = match operation::parse(service, operation, request.body) {
            Ok(operation) => operation,
            Err(refused) => {
                return aws_error(refused.status, refused.code, &refused.message).into();
            }
        };
        match operation {
            Operation::GetSecretValue(query) => {
                self.answer(Key::secret(query), false, Route::Sdk, slot, reply::single)
            }
            Operation::GetParameter(query) => self.answer(
                Key::Parameter { query, role: None },
                false,
                Route::Sdk,
                slot,
                reply::single,
            ),
            Operation::Passthrough(call, input) => {
                let key = Key::Call {
                    call,
                    input,
                    role: None,
                };
                self.answer(key, false, Route::Sdk, slot, reply::single)
            }
            Operation::BatchGetSecretValue(ids) => {
                let keys = ids
                    .into_iter()
                    .map(|secret_id| Key::secret(current(secret_id)))
                    .collect();
                self.gather(keys, slot, reply::secrets)
            }
            Operation::GetParameters(queries) => {
                let keys = queries
                    .into_iter()
                    .map(|query| Key::Parameter { query, role: None })
                    .collect();
                self.gather(keys, slot, reply::parameters)
            }
        }
    }

    pub(super) fn check_caller(&self, request: &Request, service: Service) -> Result<(), Refusal> {
        if matches!(self.settings.callers, Callers::Anyone) {
            return Ok(());
        }
        let (path, query) = request
            .target
            .split_once('?')
            .unwrap_or((request.target, ""));
        let headers: Vec<(&str, &[u8])> =
            request.headers.iter().map(|h| (h.name, h.value)).collect();
        let signed = verify::Request {
            method: request.method,
            path,
            query,
            headers: &headers,
            body: request.body,
        };
        // The caches' clock: the tests step it to make a captured request
        // stale; in a release build it is the system's.
        let now: SystemTime = SystemClock.wall();
        self.settings
            .callers
            .check(&signed, service.signing_name(), now)
    }

    /// Answers a request for several keys: all asked of the cache at once
    /// (those to fetch are fetched side by side), the answer built by
    /// `finish` once the last is there.
    fn gather(
        &self,
        keys: Vec<Key>,
        slot: Slot<'_>,
        finish: fn(Vec<(Key, Served)>) -> Response,
    ) -> Reply {
        let started = Instant::now();
        let answers: Vec<(Key, Answer)> = keys
            .into_iter()
            .map(|key| {
                let answer = self.cache.answer_or_wait(&key, false);
                (key, answer)
            })
            .collect();
        let waiting: Vec<_> = answers
            .iter()
            .filter_map(|(_, answer)| match answer {
                Answer::Later(waiting) => Some(waiting.clone()),
                Answer::Now(..) => None,
            })
            .collect();
        let collect = move |answers: Vec<(Key, Answer)>| {
            let results: Vec<(Key, Served)> = answers
                .into_iter()
                .map(|(key, answer)| match answer {
                    Answer::Now(served, _) => (key, served),
                    Answer::Later(waiting) => (key, waiting.result()),
                })
                .collect();
            metrics::answer(false, started.elapsed());
            finish(results)
        };
        if waiting.is_empty() {
            let response = collect(answers);
            return Reply::Now(response);
        }
        let slot = slot.keep(&self.in_flight);
        Reply::Later(Later {
            ready: Box::new(move |wake: Wake| {
                // The last flight to end wakes the connection.
                let left = Arc::new(AtomicUsize::new(waiting.len()));
                let wake = Arc::new(Mutex::new(Some(wake)));
                for flight in waiting {
                    let (left, wake) = (left.clone(), wake.clone());
                    flight.when_done(Box::new(move || {
                        if left.fetch_sub(1, Ordering::AcqRel) == 1 {
                            let wake = wake.lock().ok().and_then(|mut w| w.take());
                            if let Some(wake) = wake {
                                wake();
                            }
                        }
                    }));
                }
            }),
            answer: Box::new(move || {
                let response = collect(answers);
                metrics::request(Route::Sdk, response.status);
                drop(slot);
                response
            }),
        })
    }
}

/// A secret asked for by ID alone: its current version.
fn current(secret_id: String) -> secrets_manager_agent_aws::SecretQuery {
    secrets_manager_agent_aws::SecretQuery {
        secret_id,
        version_id: None,
        version_stage: None,
    }
}

#[cfg(test)]
mod tests;
