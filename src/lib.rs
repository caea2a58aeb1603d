//! secrets-manager-agent as a library: the agent's own modules (settings,
//! logging, the token, the HTTP API, start-up, the probe and `exec`), so that the
//! binary (`main.rs`) and the fuzz targets share them. The layers below live in
//! the workspace's crates (docs/design.md): `secrets_manager_agent_cache`,
//! `_aws`, `_http`, `_core` and `_os`. The binary is the product; this API is
//! not meant for other crates.

#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod config;
pub mod exec;
pub mod logger;
pub mod probe;
pub mod reference;
pub mod template;
pub mod token;
