//! roam on Android: the JNI bridge that feeds ConnectivityManager's link events into roam's
//! policy and runs SDK sessions for Java and Kotlin apps.
//!
//! What runs where: the app's `RoamService` (Java, `android/library`) registers
//! `NetworkCallback`s and forwards every network's transport, interface name, addresses and
//! capabilities through `io.roam.RoamNative` into this library; the library keeps the link table,
//! evaluates the policy ([`roam_policy`]) and calls the app's decision listeners back; sessions
//! are [`roam::Session`]s whose decisions come from the same table ([`AndroidDecisions`]).
//!
//! Layout:
//! - [`links`]: the sans-I/O link table, from Android's network data to roam's link model.
//! - [`decisions`]: the policy over that table, subscribers, and the [`roam::DecisionSource`].
//! - [`bridge`]: one bridge per service: the table, the hold timer, the socket binder.
//! - [`binder`]: putting a socket on an Android `Network` (NDK or a Java callback).
//! - [`session`]: a session as the bridge holds it (split reader and writer, events).
//! - [`error`]: [`BridgeError`], what Java sees as `io.roam.RoamException`.
//! - `guard`: the one wrapper every JNI entry point goes through (panics and errors become Java
//!   exceptions, never a VM crash); `handles`: the `long` handles Java holds; `exports`: the
//!   `Java_io_roam_RoamNative_*` functions themselves.
//!
//! The library needs unwinding panics (the default): with `panic = "abort"` a panic would end
//! the app's process instead of becoming an exception.
#![warn(missing_docs)]

pub mod binder;
pub mod bridge;
pub mod decisions;
pub mod error;
mod exports;
mod guard;
mod handles;
pub mod links;
pub mod session;

pub use bridge::Bridge;
pub use decisions::AndroidDecisions;
pub use error::BridgeError;
pub use links::{LinkBook, LinkUpdate, NetworkHandle, Transport};
pub use roam_policy::model;
