//! secrets-manager-agent as a library: every module of the agent, so that
//! the binary (`main.rs`), the fuzz targets and the benchmarks share them.
//! The binary is the product; this API is not meant for other crates.

pub mod api;
pub mod aws;
pub mod cache;
pub mod config;
pub mod credentials;
pub mod iso8601;
pub mod lambda;
pub mod logger;
pub mod query;
pub mod secret;
pub mod server;
pub mod signals;
pub mod stack;
pub mod sync;
pub mod token;
