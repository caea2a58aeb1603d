//! secrets-manager-agent as a library: every module of the agent, so that
//! the binary (`main.rs`), the fuzz targets and the property tests share them.
//! README's "Code map" lists the modules in the order a request meets them.
//! The binary is the product; this API is not meant for other crates.

#![deny(unsafe_code)]

pub mod agent;
pub mod api;
pub mod aws;
pub mod cache;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod env;
pub mod iso8601;
pub mod logger;
pub mod metrics;
// The only module allowed `unsafe`: every OS call behind a safe function.
#[allow(unsafe_code)]
pub mod os;
pub mod probe;
pub mod query;
pub mod random;
pub mod roles;
pub mod secret;
pub mod server;
pub mod sync;
pub mod token;
