//! The Unix socket between roamd and its clients. The protocol itself (messages, framing,
//! clients) is the `roam-ipc` crate, shared with the SDK and documented in `ipc/PROTOCOL.md`;
//! re-exported here as [`proto`] and [`client`]. [`server`] is roamd's side.
pub use roam_ipc::{client, proto};
pub mod conns;
pub mod fanout;
pub mod server;
