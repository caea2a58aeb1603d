//! Every operating-system call that needs `unsafe`, each behind a safe
//! function: the only crate of the workspace that may use `unsafe`; every
//! other one says `#![forbid(unsafe_code)]` at its root.
//!
//! Keeping them in one place means one module to audit for memory safety,
//! and callers (server, cache, start-up) read as ordinary Rust. Nothing here
//! logs or decides policy: a wrapper reports what the kernel said and the
//! caller chooses what to do about it.

pub mod epoll;
pub mod io;
pub mod process;
pub mod signals;
pub mod stack;
pub mod supervise;
