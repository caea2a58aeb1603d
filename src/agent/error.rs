//! Why the agent did not start, or stopped: one variant per step of
//! start-up (the order of `agent::start`), each saying what failed and,
//! where the user can act on it, the setting to change. `main` prints it as
//! one line and exits with status 1.
//!
//! Errors of the layers below (crates/aws, crates/http) are kept as their
//! own types: their `Display` already says why, and this enum adds what the
//! agent was doing.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use super::lambda;
use super::region::NoRegion;
use crate::config::ConfigError;
use crate::logger;
use crate::token::TokenError;
use secrets_manager_agent_aws::endpoint::EndpointError;
use secrets_manager_agent_aws::transport::CaBundleError;
use secrets_manager_agent_aws::UpstreamError;
use secrets_manager_agent_core::env::InvalidVar;
use secrets_manager_agent_http::socket::{BindError, GroupError};

#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    /// `log_to_file` is on and the log file cannot be opened.
    LogFile(io::Error),
    Signals(io::Error),
    /// `lambda-extension` outside Lambda.
    NoRuntimeApi,
    Lambda(lambda::Error),
    ServerThread(io::Error),
    Token(TokenError),
    /// An `SMA_*` tuning variable, or one of the Lambda extension's timeouts.
    Tuning(InvalidVar),
    /// `AWS_CA_BUNDLE` cannot be read.
    CaBundle(CaBundleError),
    /// A credential refresh variable is out of range.
    RefreshTiming(InvalidVar),
    Region(NoRegion),
    Endpoint(EndpointError),
    /// STS GetCallerIdentity with the agent's credentials failed.
    CredentialsCheck(UpstreamError),
    Listen {
        address: SocketAddr,
        source: io::Error,
    },
    /// `unix_socket_group` names no group.
    UnixSocketGroup(GroupError),
    /// `unix_socket_path`'s socket.
    UnixSocket(BindError),
    MetricsListen {
        address: SocketAddr,
        source: io::Error,
    },
    MetricsThread(io::Error),
    /// `cloud_extensions_port`'s listener.
    CloudExtensionsListen {
        address: SocketAddr,
        source: io::Error,
    },
    CloudExtensionsThread(io::Error),
    /// `caller_secret_access_key_file` could not be read, or is empty.
    CallerKey {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The OS would not tell a bound socket's address.
    LocalAddress(io::Error),
    /// The server's loop ended.
    Server(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => write!(f, "{e}"),
            Error::LogFile(e) => write!(
                f,
                "cannot open the log file {}/{}: {e} (set log_to_file = false to log to stderr)",
                logger::LOG_DIR,
                logger::LOG_FILE
            ),
            Error::Signals(e) => write!(f, "cannot set up signal handling: {e}"),
            Error::NoRuntimeApi => f.write_str(
                "AWS_LAMBDA_RUNTIME_API is not set: lambda-extension only runs inside AWS Lambda",
            ),
            Error::Lambda(e) => write!(f, "{e}"),
            Error::ServerThread(e) => write!(f, "cannot start the server thread: {e}"),
            Error::Token(e) => write!(f, "{e}"),
            Error::Tuning(e) => write!(f, "{e}"),
            Error::CaBundle(e) => write!(f, "{e}"),
            Error::RefreshTiming(e) => write!(f, "{e}"),
            Error::Endpoint(e) => write!(f, "{e}"),
            Error::Region(e) => write!(f, "{e}"),
            Error::CredentialsCheck(e) => write!(
                f,
                "credentials check (STS GetCallerIdentity) failed: {e} \
                 (set validate_credentials = false to skip it)"
            ),
            Error::Listen { address, source } => {
                write!(f, "cannot listen on {address}: {source}")
            }
            Error::UnixSocketGroup(e) => write!(f, "{e}"),
            Error::UnixSocket(e) => write!(f, "{e}"),
            Error::MetricsListen { address, source } => {
                write!(f, "cannot listen on {address} for metrics: {source}")
            }
            Error::MetricsThread(e) => write!(f, "cannot start the metrics listener: {e}"),
            Error::CloudExtensionsListen { address, source } => write!(
                f,
                "cannot listen on {address} for the Cloud Extensions interface \
                 (cloud_extensions_port): {source}"
            ),
            Error::CloudExtensionsThread(e) => {
                write!(f, "cannot start the Cloud Extensions listener: {e}")
            }
            Error::CallerKey { path, reason } => write!(
                f,
                "cannot read caller_secret_access_key_file {}: {reason}",
                path.display()
            ),
            Error::LocalAddress(e) => write!(
                f,
                "cannot read a bound socket's address: {e} (the OS refused getsockname)"
            ),
            Error::Server(e) => write!(f, "server stopped: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<lambda::Error> for Error {
    fn from(e: lambda::Error) -> Error {
        Error::Lambda(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_name_the_setting_to_change() {
        let io = || io::Error::from(io::ErrorKind::AddrInUse);
        let address = SocketAddr::from(([127, 0, 0, 1], 2773));
        for (e, expected) in [
            (
                Error::LogFile(io::Error::from(io::ErrorKind::PermissionDenied)),
                "cannot open the log file logs/secrets_manager_agent.log: permission denied \
                 (set log_to_file = false to log to stderr)",
            ),
            (
                Error::CredentialsCheck(UpstreamError::Credentials("AWS answered 403".into())),
                "credentials check (STS GetCallerIdentity) failed: AWS answered 403 \
                 (set validate_credentials = false to skip it)",
            ),
            (
                Error::Listen {
                    address,
                    source: io(),
                },
                "cannot listen on 127.0.0.1:2773: address in use",
            ),
            (
                Error::MetricsListen {
                    address,
                    source: io(),
                },
                "cannot listen on 127.0.0.1:2773 for metrics: address in use",
            ),
            (
                Error::NoRuntimeApi,
                "AWS_LAMBDA_RUNTIME_API is not set: lambda-extension only runs inside AWS Lambda",
            ),
            (
                Error::Lambda(lambda::Error::Refused {
                    status: 403,
                    body: "no".into(),
                }),
                "Lambda Extensions API refused the registration (403): no",
            ),
        ] {
            assert_eq!(e.to_string(), expected);
        }
    }
}
