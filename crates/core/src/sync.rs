//! Lock helpers shared by the modules that keep state behind a mutex.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking over the data if a panicking thread left the lock
/// poisoned: every mutex in this crate guards plain data that stays usable.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
