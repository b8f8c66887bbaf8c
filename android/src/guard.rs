//! The one wrapper every JNI entry point goes through, as hyper's FFI does with its macro.
//!
//! [`entry`] runs the body under `catch_unwind`: an `Err` becomes an `io.roam.RoamException`
//! whose message starts with `roam: <entry point>:`, a panic becomes the same exception saying
//! it was a bug, and a Java exception already pending (a listener or binder threw) is left to
//! propagate as it is. Either way Java gets an exception and the VM keeps running; the
//! returned value is [`Fallback::fallback`], which Java never sees because the exception is
//! pending.

use jni::JNIEnv;
use jni::sys::{jboolean, jint, jlong, jobject};

use crate::error::BridgeError;

/// The Java class thrown for every error and panic.
pub(crate) const EXCEPTION_CLASS: &str = "io/roam/RoamException";

/// What an entry point returns when it throws (Java ignores it).
pub(crate) trait Fallback {
    fn fallback() -> Self;
}

impl Fallback for () {
    fn fallback() -> Self {}
}

impl Fallback for jlong {
    fn fallback() -> Self {
        0
    }
}

impl Fallback for jint {
    fn fallback() -> Self {
        -1
    }
}

impl Fallback for jboolean {
    fn fallback() -> Self {
        0
    }
}

impl Fallback for jobject {
    fn fallback() -> Self {
        std::ptr::null_mut()
    }
}

/// Runs the body of the entry point `name`; see the module documentation.
pub(crate) fn entry<'local, T: Fallback>(
    env: &mut JNIEnv<'local>,
    name: &'static str,
    body: impl FnOnce(&mut JNIEnv<'local>) -> Result<T, BridgeError>,
) -> T {
    // The body gets `env` only: anything it leaves half done is Rust state behind a handle,
    // which every lock recovers from (see `handles` and `decisions::lock`).
    let message = match roam::boundary::catch_panic(name, || body(env)) {
        Ok(Ok(v)) => return v,
        Ok(Err(e)) => {
            tracing::debug!(entry = name, error = %e, "call from Java failed");
            format!("roam: {name}: {e}")
        }
        Err(panicked) => panicked,
    };
    throw(env, &message);
    T::fallback()
}

/// Throws `RoamException(message)` unless a Java exception is already pending.
fn throw(env: &mut JNIEnv<'_>, message: &str) {
    if env.exception_check().unwrap_or(false) {
        return;
    }
    if let Err(e) = env.throw_new(EXCEPTION_CLASS, message) {
        // Without the class (a stripped app), JNI has made a NoClassDefFoundError pending:
        // still an exception, never a crash.
        tracing::error!(error = %e, %message, "could not throw io.roam.RoamException");
    }
}
