//! Talking to AWS without the SDK: endpoints, signing, retries, transport, and
//! the Secrets Manager operations built on them.

pub mod client;
pub mod endpoint;
pub mod error;
pub mod retry;
pub mod secrets_manager;
pub mod sign;
pub mod sts;
pub mod transport;

pub use error::UpstreamError;
pub use secrets_manager::{SecretQuery, SecretValue, SecretsManager};
