//! The `long` handles Java holds for bridges and sessions.
//!
//! A handle is a number in a table, never a pointer: a closed, forged or wrong-kind handle is a
//! lookup miss and a clear exception, not undefined behaviour. Numbers are never reused, so a
//! stale handle cannot reach a newer object.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::BridgeError;

/// Shared by every table so a session's handle is never a valid bridge handle.
static NEXT: AtomicI64 = AtomicI64::new(1);

/// Objects of one kind by handle.
#[derive(Debug)]
pub(crate) struct Handles<T> {
    kind: &'static str,
    map: Mutex<Option<HashMap<i64, Arc<T>>>>,
}

impl<T> Handles<T> {
    pub(crate) const fn new(kind: &'static str) -> Handles<T> {
        Handles {
            kind,
            map: Mutex::new(None),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<i64, Arc<T>>) -> R) -> R {
        // A panic while the lock was held cannot leave the map half-changed: every operation
        // is one insert, get or remove.
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(HashMap::new))
    }

    /// Stores `value`; returns its new handle.
    pub(crate) fn insert(&self, value: T) -> i64 {
        let h = NEXT.fetch_add(1, Ordering::Relaxed);
        self.with(|m| m.insert(h, Arc::new(value)));
        h
    }

    /// The object behind `handle`.
    pub(crate) fn get(&self, handle: i64) -> Result<Arc<T>, BridgeError> {
        self.with(|m| m.get(&handle).cloned())
            .ok_or(BridgeError::Closed {
                kind: self.kind,
                handle,
            })
    }

    /// Removes `handle`; calls still running on the object finish with their own reference.
    pub(crate) fn remove(&self, handle: i64) -> Result<Arc<T>, BridgeError> {
        self.with(|m| m.remove(&handle)).ok_or(BridgeError::Closed {
            kind: self.kind,
            handle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_and_foreign_handles_are_errors() {
        let a: Handles<&str> = Handles::new("bridge");
        let b: Handles<&str> = Handles::new("session");
        let h = a.insert("x");
        assert_eq!(*a.get(h).unwrap(), "x");
        let e = b.get(h).unwrap_err().to_string();
        assert!(e.contains("session handle"), "{e}");
        a.remove(h).unwrap();
        assert!(matches!(a.get(h), Err(BridgeError::Closed { .. })));
        assert!(a.remove(h).is_err());
        assert_ne!(a.insert("y"), h, "handles are not reused");
    }
}
