//! roam's one link model, shared by roamd, the SDK's embedded monitor and Android.
//!
//! The pure part (no I/O, no clock: callers pass `now`) has no `unsafe` and no dependency on
//! tokio, netlink sockets or libc.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod netlink;
