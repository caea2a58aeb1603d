//! The answer cache: fresh entries served from memory, expired ones
//! revalidated with a cheap metadata call, and concurrent misses for one key
//! coalesced into a single upstream call.
//!
//! No lock is held while talking to AWS, so a slow call for one secret never
//! delays a hit on another. An entry that is read shortly before its TTL ends
//! is refreshed in the background ("refresh-ahead"), so a steady reader never
//! waits for AWS; entries nobody reads simply expire.
//!
//! The policy (TTL, revalidation, single flight, refresh-ahead, eviction)
//! does not depend on the upstream: answers are cached under a typed [`Key`]
//! and filled through [`Upstream`], so another upstream adds a key variant and
//! an arm in the `Upstream` impl instead of a copy of the cache. A request's
//! role is a field of the key (`roles::Roles` picks the client for it), so
//! every policy applies per (role, secret). Time comes from a `Clock`
//! parameter so the tests can step past TTLs without sleeping.
//!
//! The modules follow one key down from a request to AWS, each calling only
//! the ones after it:
//!
//! 1. `lookup`: [`Cache`], what requests and prefetching call, and the
//!    decision for a request: a fresh hit, the expired value while another
//!    caller revalidates, or an upstream call.
//! 2. `flight`: single flight, one upstream call for all concurrent callers
//!    of a key: its leader on a thread of its own, followers that wait with
//!    or without a thread, the wakes; and keys held for prefetching.
//! 3. `store`: the table of entries (TTL, refresh point, LRU eviction), and
//!    what a flight's call does to it: revalidate, fetch and store.
//! 4. `refresh`: refresh-ahead on background threads, and (`refresh::batch`)
//!    entries due together read in one batch call.
//!
//! Beside them, the types: `key` (what an answer is cached under: a secret,
//! a parameter, or a read call of an SDK client passed through to AWS),
//! `upstream` (where the cache fills from), and `roles` (a client per
//! request role). A call passed through has no cheap metadata call: once
//! expired (or ahead of expiry, when read) it is made again.

#![forbid(unsafe_code)]

mod flight;
mod key;
mod lookup;
mod refresh;
pub mod roles;
mod store;
mod upstream;

#[cfg(test)]
mod testing;

pub use flight::{Held, Waiting, Wake};
pub use key::Key;
pub use lookup::{Answer, Cache};
pub use store::Settings;
pub use upstream::{Body, Clients, Served, Upstream};
