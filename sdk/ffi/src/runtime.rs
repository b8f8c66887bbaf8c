//! The one tokio runtime of the process: started on the first call, shared by every thread.
//!
//! Fork: only the forking thread survives in a child, so the parent's runtime threads (and
//! the pumps behind every roam descriptor) do not exist there. A child that calls roam gets a
//! runtime of its own on its first call (the parent's is left alone, never dropped, as its
//! threads are gone); see [`crate::registry`] for what inherited descriptors are in a child.

use std::sync::Mutex;

use tokio::runtime::{Handle, Runtime};

use crate::guard::FfiError;

/// The runtime and the process it was started in.
struct Owned {
    pid: u32,
    handle: Handle,
}

static RUNTIME: Mutex<Option<Owned>> = Mutex::new(None);

/// The process's runtime, started on first use (and again in a forked child).
pub fn handle() -> Result<Handle, FfiError> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(o) = slot.as_ref().filter(|o| o.pid == pid) {
        return Ok(o.handle.clone());
    }
    let rt: Runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("roam-ffi")
        .enable_all()
        .build()
        .map_err(|e| FfiError::os("starting the roam runtime", &e))?;
    let handle = rt.handle().clone();
    // The runtime lives as long as the process: C has no point at which to stop it, and in a
    // forked child the parent's must not be dropped (dropping joins threads that are not
    // there), so neither is ever dropped.
    std::mem::forget(rt);
    if slot.is_some() {
        tracing::info!(
            pid,
            "a forked child calls roam: it gets a runtime of its own"
        );
    }
    *slot = Some(Owned {
        pid,
        handle: handle.clone(),
    });
    Ok(handle)
}
