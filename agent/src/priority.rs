//! roamd's thread priorities. The loop turns the kernel's news into decisions and writes them
//! to every subscriber: during a handover it is on the critical path of every app's session,
//! and on a busy handset (two cores, apps, the subscribers it wakes) its wait for a CPU is most
//! of its reaction time (load-bench measured the loop runnable but not running p50 1.1 ms,
//! p90 4.9 ms per round at load 4). So the loop runs at [`LOOP_NICE`]. It costs others nothing
//! while roamd idles (no timer, no wake-up) and little when it works (a round is about a
//! millisecond of CPU for 1,000 subscribers). The clients' thread (hellos, requests, a hostile
//! client's flood) runs at [`CLIENTS_NICE`], below everyone, so a flood cannot use the loop's
//! priority.
//!
//! Nice values on Linux belong to threads and are inherited by the threads a thread creates,
//! so the loop's is set first thing, before any other thread exists.

use std::io;

/// The decision loop's nice value (and that of the threads it starts, e.g. the fan-out
/// helper). Raising priority needs CAP_SYS_NICE (root has it; the systemd unit grants it).
pub const LOOP_NICE: i32 = -10;

/// The clients' thread's nice value.
pub const CLIENTS_NICE: i32 = 10;

/// Sets the calling thread's nice value to [`LOOP_NICE`]. Without CAP_SYS_NICE roamd keeps
/// its priority and says so once: it works the same, only its reaction waits longer for a CPU
/// on a busy machine.
pub fn raise_the_loop() {
    if let Err(e) = set_thread_nice(LOOP_NICE) {
        tracing::info!(
            error = %e,
            nice = LOOP_NICE,
            "roamd keeps its scheduling priority (grant CAP_SYS_NICE for faster reactions on a busy machine)"
        );
    }
}

/// Sets the calling thread's nice value to [`CLIENTS_NICE`] (lowering needs no privilege).
pub fn lower_the_clients() {
    if let Err(e) = set_thread_nice(CLIENTS_NICE) {
        tracing::debug!(error = %e, "the clients' thread keeps its priority");
    }
}

fn set_thread_nice(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory of ours; on Linux, `who`
    // 0 with PRIO_PROCESS is the calling thread only.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The clients' value is applied to the calling thread only: a thread of its own is
    /// lowered, the test's main thread is not.
    #[test]
    fn lowering_the_clients_thread_touches_that_thread_only() {
        // SAFETY: getpriority takes plain integers; errno is cleared first because -1 is a
        // valid result.
        let get = || unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        };
        let before = get();
        let lowered = std::thread::spawn(move || {
            lower_the_clients();
            get()
        })
        .join()
        .expect("the thread ran");
        // A thread already below it (started niced) stays where it is, never goes up.
        assert!(
            lowered >= CLIENTS_NICE,
            "the clients' thread runs at nice {lowered}"
        );
        assert_eq!(get(), before, "the calling thread's priority changed");
    }
}
