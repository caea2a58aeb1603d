//! The foundation every other crate of the agent stands on: small pieces with
//! no I/O of their own beyond the clock and the environment, and no knowledge
//! of HTTP or AWS.
//!
//! `clock` (time that tests can drive), `sync` (locks that survive a
//! panicking holder), `env` (environment variables), `random` (jitter and
//! tokens' bytes), `iso8601` (AWS's timestamps), `secret` (bytes wiped on
//! drop), `query` (percent-decoding of query strings and forms) and `metrics`
//! (the counters `/metrics` serves, written by every layer).

#![forbid(unsafe_code)]

pub mod clock;
pub mod env;
pub mod iso8601;
pub mod metrics;
pub mod query;
pub mod random;
pub mod secret;
pub mod sync;
