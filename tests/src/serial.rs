//! A process-wide lock for timing-sensitive tests: measurements of gaps and round-trip times
//! should not compete with each other for a small machine's cores.

use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());

/// Holds the lock until dropped; a test that panicked while holding it does not poison others.
pub fn exclusive() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The start of a timing-sensitive namespace test: `None` when it must skip (see
/// [`crate::privilege::require_netns`]), else the lock, held until the guard drops.
pub fn netns_test(test: &str) -> Option<MutexGuard<'static, ()>> {
    crate::privilege::require_netns(test).then(exclusive)
}
