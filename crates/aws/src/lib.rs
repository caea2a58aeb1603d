//! Talking to AWS without the SDK: endpoints, signing, retries, transport, and
//! the Secrets Manager, SSM and STS operations built on them.
//!
//! Layers, top down: `secrets_manager`/`ssm`/`sts` (one operation each) and
//! `passthrough` (read calls whose input and answer pass through) → `client`
//! (sign + retry) → `sign` with `identity` (who signs) → `transport` (HTTPS)
//! with `endpoint` (where) and `error` (what went wrong). Nothing here knows
//! where credentials come from: `credentials/` implements `identity`'s trait.

#![forbid(unsafe_code)]

pub mod arn;
mod assemble;
pub mod callers;
pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod identity;
pub mod passthrough;
pub mod retry;
pub mod secrets_manager;
pub mod sign;
pub mod ssm;
pub mod sts;
pub mod transport;
pub mod verify;

pub use error::UpstreamError;
pub use passthrough::ReadCall;
pub use secrets_manager::{SecretQuery, SecretValue, SecretsManager};
