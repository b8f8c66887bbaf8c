//! The Unix socket between roamd and its clients: [`proto`] (messages and framing, documented
//! in `agent/PROTOCOL.md`), [`server`] (roamd's side) and [`client`] (a blocking client for
//! roamctl and tests).
pub mod client;
pub mod proto;
pub mod server;
