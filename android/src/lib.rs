//! roam on Android: the JNI bridge that feeds ConnectivityManager's link events into the roam
//! core and binds sessions to Android `Network`s.
//!
//! Not built yet: this crate only links the shared decision model so the workspace builds.
#![warn(missing_docs)]

pub use roam_policy::model;
