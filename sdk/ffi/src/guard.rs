//! The one wrapper every C entry point goes through, as the JNI bridge's guard does.
//!
//! [`entry`] runs the body under `catch_unwind`: an `Err` sets `errno` and the calling
//! thread's last error (`roam_last_error`) to `roam: <entry point>: <cause>`; a panic does the
//! same with `EIO` and says it was a bug. Either way C gets the entry point's failure value
//! (`-1`) and the process keeps running: a Rust panic never unwinds into C.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};

/// What failed, as C sees it: an `errno` value and a message naming the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfiError {
    /// The `errno` the entry point sets.
    pub errno: i32,
    /// The cause, without the `roam: <entry point>:` prefix.
    pub message: String,
}

impl FfiError {
    /// An error with `errno` and `message`.
    pub fn new(errno: i32, message: impl Into<String>) -> FfiError {
        FfiError {
            errno,
            message: message.into(),
        }
    }

    /// `EINVAL`: the caller passed something unusable.
    pub fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::new(libc::EINVAL, message)
    }

    /// An OS error with what was being done.
    pub fn os(what: &str, e: &std::io::Error) -> FfiError {
        FfiError::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            format!("{what}: {e}"),
        )
    }
}

impl From<roam_sdk::Error> for FfiError {
    fn from(e: roam_sdk::Error) -> FfiError {
        FfiError::new(errno_of(&e), e.to_string())
    }
}

/// The `errno` that stands for a roam error: the OS's own where there is one, else the
/// nearest socket error (a name that does not resolve is `ENOENT`, as there is no errno for
/// it; the message says which).
pub fn errno_of(e: &roam_sdk::Error) -> i32 {
    use roam_sdk::Error as E;
    match e {
        E::InvalidTarget { .. } | E::Policy(_) | E::TlsConfig(_) => libc::EINVAL,
        E::Resolve { .. } => libc::ENOENT,
        E::NoPermittedPath { .. } => libc::ENETUNREACH,
        E::Refused { .. } => libc::ECONNREFUSED,
        E::Tls { .. } | E::Protocol(_) => libc::EPROTO,
        E::Timeout { .. } => libc::ETIMEDOUT,
        E::AllCandidatesFailed { last, .. } => errno_of(last),
        E::Unsupported(_) | E::NotOnThisTransport { .. } => libc::EOPNOTSUPP,
        E::AgentRequired { .. } | E::Agent { .. } => libc::EPERM,
        E::Resume(_) | E::Connection(_) => libc::ECONNRESET,
        E::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        _ => libc::EIO,
    }
}

/// What an entry point returns when it fails.
pub trait Fallback {
    /// The failure value.
    fn fallback() -> Self;
}

impl Fallback for i32 {
    fn fallback() -> Self {
        -1
    }
}

thread_local! {
    /// The calling thread's last error, as `roam_last_error` returns it.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs the body of the entry point `name`; see the module documentation.
pub fn entry<T: Fallback>(name: &'static str, body: impl FnOnce() -> Result<T, FfiError>) -> T {
    // The body's half-done state is behind the registry's and the runtime's locks, which
    // recover from poisoning: nothing a panic leaves behind makes the next call unsafe.
    let (errno, message) = match roam_sdk::boundary::catch_panic(name, body) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => {
            tracing::debug!(entry = name, error = %e.message, "call from C failed");
            (e.errno, format!("roam: {name}: {}", e.message))
        }
        Err(panicked) => (libc::EIO, panicked),
    };
    set_last_error(message);
    set_errno(errno);
    T::fallback()
}

/// Records `message` as this thread's last error.
fn set_last_error(message: String) {
    // A NUL inside a message would end it early in C: replace it rather than lose the text.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

/// This thread's last error; valid until the thread's next failing roam call.
pub fn last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// The last error as Rust text (for tests and the Rust side).
pub fn last_error_text() -> String {
    // SAFETY: `last_error` points into this thread's CString, alive and unchanged until the
    // next failing call on this thread, which cannot happen during this copy.
    unsafe { CStr::from_ptr(last_error()) }
        .to_string_lossy()
        .into_owned()
}

fn set_errno(e: i32) {
    // SAFETY: the errno location is the calling thread's own, always valid to write.
    #[cfg(target_os = "android")]
    unsafe {
        *libc::__errno() = e;
    }
    #[cfg(not(target_os = "android"))]
    unsafe {
        *libc::__errno_location() = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_sets_errno_and_the_message_with_the_entry_point() {
        let r: i32 = entry("roam_test", || {
            Err(FfiError::new(libc::EBADF, "fd 7 is closed"))
        });
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EBADF)
        );
        assert_eq!(last_error_text(), "roam: roam_test: fd 7 is closed");
    }

    #[test]
    fn a_panic_is_caught_and_told_as_a_bug() {
        let r: i32 = entry("roam_test", || -> Result<i32, FfiError> { panic!("boom") });
        assert_eq!(r, -1);
        let m = last_error_text();
        assert!(
            m.starts_with("roam: roam_test: internal error") && m.contains("boom"),
            "{m}"
        );
    }

    #[test]
    fn success_returns_the_value() {
        assert_eq!(entry("roam_test", || Ok(5)), 5);
    }
}
