//! For code that calls roam from another language (the C API in `sdk/ffi`, the JNI bridge in
//! `android/`): a Rust panic must never unwind into the foreign caller, and both bindings turn
//! one into the same message.

use std::any::Any;
use std::panic::AssertUnwindSafe;

/// Runs `body`, the work of the foreign entry point `entry`; a panic inside it is caught,
/// logged at error level and returned as the message to hand the caller (`roam: <entry>:
/// internal error ...`, saying the call did nothing and asking for a bug report).
///
/// The caller vouches that whatever a panic leaves half done is safe to use afterwards (roam's
/// handles sit behind locks that recover from poisoning), hence the [`AssertUnwindSafe`].
pub fn catch_panic<T>(entry: &str, body: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(body)).map_err(|panic| {
        let what = panic_text(panic.as_ref());
        tracing::error!(entry, panic = %what, "panic inside roam");
        format!(
            "roam: {entry}: internal error (a panic inside roam: {what}); the call did \
             nothing, the library is still usable; please report this as a bug"
        )
    })
}

/// The text a panic was raised with.
fn panic_text(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_a_message_naming_the_entry_point() {
        assert_eq!(catch_panic("roam_write", || 7), Ok(7));
        let m = catch_panic("roam_write", || -> u8 { panic!("boom {}", 1) }).unwrap_err();
        assert!(m.starts_with("roam: roam_write: internal error"), "{m}");
        assert!(
            m.contains("boom 1") && m.contains("report this as a bug"),
            "{m}"
        );
        let m = catch_panic("x", || std::panic::panic_any(42u8)).unwrap_err();
        assert!(m.contains("a non-text panic payload"), "{m}");
    }
}
