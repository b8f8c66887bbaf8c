//! [`BridgeError`]: everything a JNI entry point can fail with. Java sees each as an
//! `io.roam.RoamException` whose message names the entry point and says what to do.

use crate::links::UnknownNetwork;

/// What went wrong inside a call from Java.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// A required argument was `null`.
    #[error("argument `{0}` is null; pass a value")]
    Null(&'static str),
    /// An argument is out of range or malformed.
    #[error("argument `{name}` is invalid: {why}")]
    Invalid {
        /// The parameter's name in the Java signature.
        name: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// A handle Java passed is closed, or was never made by this library.
    #[error(
        "{kind} handle {handle} is closed or was never opened; do not use a {kind} after \
         close()"
    )]
    Closed {
        /// `bridge` or `session`.
        kind: &'static str,
        /// The handle.
        handle: i64,
    },
    /// The policy text does not parse or check (rendered with line, column and caret).
    #[error("the policy does not check:\n{0}")]
    Policy(String),
    /// The network is not in the link table.
    #[error(transparent)]
    UnknownNetwork(#[from] UnknownNetwork),
    /// The SDK failed (connecting, reading, writing).
    #[error(transparent)]
    Session(#[from] roam::Error),
    /// A stream of the session failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS or stream error.
        #[source]
        source: std::io::Error,
    },
    /// The call is not allowed where it was made (a blocking call on one of roam's threads).
    #[error("{0}")]
    WrongThread(&'static str),
    /// A socket could not be bound to a network.
    #[error("binding socket {fd} to {network}: {detail}")]
    Bind {
        /// The socket's descriptor.
        fd: i32,
        /// The network.
        network: crate::links::NetworkHandle,
        /// Why it failed.
        detail: String,
    },
    /// A JNI call failed. [`jni::errors::Error::JavaException`] means a Java exception is
    /// already pending (thrown by a callback): it propagates as is.
    #[error("JNI: {0}")]
    Jni(#[from] jni::errors::Error),
}

impl BridgeError {
    /// An [`BridgeError::Invalid`].
    pub fn invalid(name: &'static str, why: impl Into<String>) -> BridgeError {
        BridgeError::Invalid {
            name,
            why: why.into(),
        }
    }
}
