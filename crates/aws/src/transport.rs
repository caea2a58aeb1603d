//! The HTTPS client every AWS call goes through: TLS set-up, timeouts, the
//! User-Agent, and turning transport failures into [`UpstreamError`]s.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{RootCerts, TlsConfig, TlsProvider};

use super::error::{service_error, UpstreamError};

/// Largest response body read from AWS. A secret is at most 64 KiB (binary ones
/// grow by a third in base64); anything far larger is not a real answer.
const MAX_BODY: u64 = 2 * 1024 * 1024;

/// A request head (method, path, headers) must fit in this whole.
const OUTPUT_BUFFER: usize = 16 * 1024;
/// What ureq adds to our headers: request line, Host, User-Agent,
/// Content-Length, Accept-Encoding, with room to spare.
const HEAD_ALLOWANCE: usize = 512;
pub const USER_AGENT: &str = concat!("secrets-manager-agent/", env!("CARGO_PKG_VERSION"));

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub call: Duration,
}

/// Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct Transport {
    agent: ureq::Agent,
}

impl Transport {
    /// For AWS APIs: honours `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` and trusts
    /// `roots` (see [`roots_from_env`]).
    pub fn new(timeouts: Timeouts, roots: RootCerts) -> Transport {
        Transport::build(timeouts, ureq::Proxy::try_from_env(), roots)
    }

    /// For instance metadata and container credentials: link-local or loopback
    /// endpoints that a proxy must never see.
    pub fn without_proxy(timeouts: Timeouts) -> Transport {
        Transport::build(timeouts, None, RootCerts::WebPki)
    }

    fn build(timeouts: Timeouts, proxy: Option<ureq::Proxy>, roots: RootCerts) -> Transport {
        let provider = Arc::new(crypto_provider());
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .root_certs(roots)
            .unversioned_rustls_crypto_provider(provider)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .proxy(proxy)
            .timeout_connect(Some(timeouts.connect))
            .timeout_global(Some(timeouts.call))
            .http_status_as_error(false)
            // No AWS API redirects. Following one would send the signed
            // request, session token included, to whatever host the
            // `Location` names, and serve (and cache) its answer.
            .max_redirects(0)
            .user_agent(USER_AGENT)
            // Every pooled connection keeps its buffers, zero-filled, twice
            // over with TLS (one pair for TCP, one for TLS): ureq's defaults,
            // 128 KiB each, would be ~0.5 MiB per connection. AWS answers
            // have heads of a few hundred bytes and bodies stream through; a
            // request head must fit the output buffer whole, and session
            // tokens run to a few KiB. Few idle connections: the cache makes
            // upstream calls rare.
            .max_response_header_size(8 * 1024)
            .input_buffer_size(8 * 1024)
            .output_buffer_size(OUTPUT_BUFFER)
            .max_idle_connections(4)
            .max_idle_connections_per_host(2)
            .build();
        Transport {
            agent: config.new_agent(),
        }
    }

    /// POSTs `body` with `headers` (already signed) and reads the whole answer.
    pub fn post(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        self.send("POST", url, headers, body)
    }

    /// Sends one request and reads the whole body of a 200; a 4xx/5xx
    /// becomes [`UpstreamError::Service`] with its status, code and retry
    /// hint, any other status [`UpstreamError::UnexpectedStatus`] (body
    /// unread, redirects never followed).
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<u8>, UpstreamError> {
        // ureq would fail such a request with "output too small".
        let head: usize = url.len()
            + HEAD_ALLOWANCE
            + headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 4)
                .sum::<usize>();
        if head > OUTPUT_BUFFER {
            return Err(UpstreamError::Internal(format!(
                "the signed request head would be about {head} bytes, more than the \
                 {} KiB this agent sends; is the session token unusually long?",
                OUTPUT_BUFFER / 1024
            )));
        }
        let mut request = ureq::http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        // A GET carries no body at all; a bodiless PUT (the IMDS token) says
        // `Content-Length: 0`, which simple metadata servers expect.
        let sent = if method == "GET" {
            request.body(()).map(|r| self.agent.run(r))
        } else {
            request.body(body).map(|r| self.agent.run(r))
        };
        let mut response = match sent {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => return Err(classify(e)),
            Err(e) => {
                return Err(UpstreamError::Internal(format!(
                    "bad request to {url}: {e}"
                )))
            }
        };
        let status = response.status().as_u16();
        if Answer::of(status) == Answer::Unexpected {
            // Its body is not read: a 1xx or 304 has none, and a redirect's
            // is not ours to serve.
            return Err(UpstreamError::UnexpectedStatus(status));
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header("x-amz-retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let error_type = header("x-amzn-errortype");
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(classify)?;
        if Answer::of(status) == Answer::Success {
            Ok(body)
        } else {
            Err(service_error(
                status,
                error_type.as_deref(),
                retry_after,
                &body,
            ))
        }
    }
}

/// What an upstream status means. AWS APIs, IMDS and the container
/// endpoint answer 200 on success and 4xx/5xx with an error document;
/// anything else (1xx, a redirect, 304, another 2xx, a status over 599) is
/// not an answer this agent can use or pass on. Public for the fuzz targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Success,
    Error,
    Unexpected,
}

impl Answer {
    pub fn of(status: u16) -> Answer {
        match status {
            200 => Answer::Success,
            400..=599 => Answer::Error,
            _ => Answer::Unexpected,
        }
    }
}

/// The TLS crypto provider's name, as `/metrics`' `build_info` reports it.
pub const TLS_PROVIDER: &str = if cfg!(feature = "aws-lc") {
    "aws-lc-rs"
} else {
    "ring"
};

#[cfg(feature = "aws-lc")]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(all(feature = "ring", not(feature = "aws-lc")))]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(not(any(feature = "aws-lc", feature = "ring")))]
compile_error!("enable a TLS crypto provider: feature `aws-lc` (default) or `ring`");

/// Why the `AWS_CA_BUNDLE` file gives no trust roots; each names the file.
#[derive(Debug)]
pub enum CaBundleError {
    Read { path: String, error: io::Error },
    NotPem { path: String, error: ureq::Error },
    NoCertificates { path: String },
}

impl fmt::Display for CaBundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaBundleError::Read { path, error } => write!(
                f,
                "cannot read AWS_CA_BUNDLE={path}: {error} (name a readable PEM file, or unset it to trust the built-in roots)"
            ),
            CaBundleError::NotPem { path, error } => {
                write!(f, "AWS_CA_BUNDLE={path}: not a PEM bundle: {error}")
            }
            CaBundleError::NoCertificates { path } => write!(
                f,
                "AWS_CA_BUNDLE={path}: no certificates in the bundle (it needs `-----BEGIN CERTIFICATE-----` blocks)"
            ),
        }
    }
}

impl std::error::Error for CaBundleError {}

/// The trust roots for AWS APIs: Mozilla's, compiled in (scratch containers
/// have no CA files), or the PEM bundle named by `AWS_CA_BUNDLE` instead, for
/// networks whose proxy re-signs TLS.
pub fn roots_from_env() -> Result<RootCerts, CaBundleError> {
    match secrets_manager_agent_core::env::var("AWS_CA_BUNDLE") {
        None => Ok(RootCerts::WebPki),
        Some(path) => match std::fs::read(&path) {
            Ok(pem) => roots_from_pem(&pem, path),
            Err(error) => Err(CaBundleError::Read { path, error }),
        },
    }
}

fn roots_from_pem(pem: &[u8], path: String) -> Result<RootCerts, CaBundleError> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(error) => return Err(CaBundleError::NotPem { path, error }),
        }
    }
    if certs.is_empty() {
        return Err(CaBundleError::NoCertificates { path });
    }
    Ok(RootCerts::new_with_certs(&certs))
}

fn classify(e: ureq::Error) -> UpstreamError {
    match e {
        ureq::Error::Timeout(_) => UpstreamError::Timeout,
        ureq::Error::Io(io) if is_timeout(&io) => UpstreamError::Timeout,
        ureq::Error::Io(io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            UpstreamError::Tls(io.to_string())
        }
        ureq::Error::Io(io) => UpstreamError::Connection(io.to_string()),
        ureq::Error::HostNotFound => UpstreamError::Connection("host not found".into()),
        ureq::Error::ConnectionFailed => UpstreamError::Connection("connection failed".into()),
        ureq::Error::ConnectProxyFailed(why) => {
            UpstreamError::Connection(format!("proxy CONNECT failed: {why}"))
        }
        ureq::Error::Tls(why) => UpstreamError::Tls(why.to_string()),
        ureq::Error::Rustls(e) => UpstreamError::Tls(e.to_string()),
        ureq::Error::BodyExceedsLimit(n) => {
            UpstreamError::Response(format!("body larger than {n} bytes"))
        }
        ureq::Error::BadUri(uri) => UpstreamError::Internal(format!("bad URI {uri}")),
        other => UpstreamError::Response(other.to_string()),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_200_is_success_and_only_4xx_5xx_are_errors() {
        assert_eq!(Answer::of(200), Answer::Success);
        for error in [400, 403, 429, 500, 503, 599] {
            assert_eq!(Answer::of(error), Answer::Error, "{error}");
        }
        for odd in [
            100, 101, 199, 201, 204, 299, 301, 302, 304, 307, 308, 399, 600, 999,
        ] {
            assert_eq!(Answer::of(odd), Answer::Unexpected, "{odd}");
        }
    }

    #[test]
    fn ca_bundles_need_certificates() {
        let read = |pem: &[u8]| roots_from_pem(pem, "ca.pem".into()).map(|_| ());
        let e = read(b"").unwrap_err();
        assert!(matches!(e, CaBundleError::NoCertificates { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("AWS_CA_BUNDLE=ca.pem: no certificates in the bundle"),
            "{e}"
        );
        assert!(read(b"hello").is_err());
        let bogus = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(matches!(read(bogus), Err(CaBundleError::NotPem { .. })));
    }

    #[cfg(feature = "aws-lc")]
    #[test]
    fn post_quantum_key_exchange_is_offered_first() {
        let provider = crypto_provider();
        let first = provider.kx_groups.first().map(|g| g.name());
        assert_eq!(first, Some(rustls::NamedGroup::X25519MLKEM768));
    }
}
