//! Where AWS credentials come from: one module per source, the default chain
//! of them, and the cache that refreshes them ahead of expiry.
//!
//! The signer asks a `ProvideCredentials` (the trait lives in
//! `aws::identity`, below both the signer and these sources) for credentials
//! before every call; [`refresh::Refreshing`] in front of the chain decides
//! when a source is asked again.

mod chain;
pub mod container;
mod context;
pub mod environment;
pub mod file;
pub mod imds;
mod ini;
// Public for the fuzz targets.
pub mod json;
pub mod process;
pub mod profile;
pub mod refresh;
pub mod role;
pub mod shared_config;
pub mod web_identity;

pub use chain::{default_chain, Chain};
pub use context::Context;
