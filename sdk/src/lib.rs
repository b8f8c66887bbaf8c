//! roam SDK: byte-stream sessions that survive losing the interface they started on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tokio::io::AsyncWriteExt;
//! let mut s = roam::Session::builder()
//!     .app("com.example.chat")
//!     .policy("link wifi = kind wifi\nlink cell = kind cellular\ndefault { prefer wifi over cell }")
//!     .connect("chat.example.com:443")
//!     .await?;
//! s.write_all(b"hello").await?;
//! let mut events = s.events();
//! while let Some(e) = events.next().await {
//!     println!("{e:?}"); // PathChanged { from: wlan0, to: rmnet0, reason: LinkLost }, ...
//! }
//! # Ok(()) }
//! ```
//!
//! Layout, in floors: a module imports only from its own line and the lines above (one
//! exception: the transports write and read the session header, `session::header`, a leaf
//! that imports only the error type).
//! - Ground floor: [`vocab`] (the words every room speaks: [`LocalPath`](vocab::LocalPath),
//!   [`Transport`], [`Subflow`], [`PathInfo`], [`SessionEvent`]), [`error`], and [`events`]
//!   ([`Events`], how the app reads them).
//! - [`path`]: the sans-I/O path manager that decides when a session moves; it emits its own
//!   events ([`path::manager::PathEvent`]), which the transports' drivers pass on as
//!   [`SessionEvent`]s.
//! - [`decision`]: where decisions come from ([`DecisionSource`]): roamd ([`decision::Roamd`])
//!   when it answers, else [`Embedded`] over the embedded link monitor ([`monitor`]).
//! - [`mptcp`]: the kernel's MPTCP socket options, socket diagnostics and subflow control
//!   through roamd. [`tls`]: rustls configurations with ALPN `roam/1`.
//! - `net`: sockets bound to an interface, names resolved on each link, the Happy Eyeballs
//!   race over the candidates.
//! - `transport`: QUIC, MPTCP and tcp-resume, each with its connect, accept and driver side.
//! - [`session`]: [`Session`] (the byte stream), [`SessionBuilder`], the session header, and
//!   [`SessionBuilder::connect`] from the target down to a transport.
//! - [`listener`]: [`Listener`], the server side; it dispatches each accepted connection to
//!   its transport.
//!
//! Transports: QUIC, MPTCP (with fallback detection) and TCP with resumption. With roamd
//! running the session follows its pushed decisions and reports its path figures (RTT, stalls)
//! for every transport; without it the session evaluates the policy itself over an embedded
//! monitor. If roamd dies the session keeps its last decision and subscribes again when roamd
//! returns.
//!
//! MPTCP sessions are multipath sockets an app can see and steer: [`Session::paths`] lists
//! every subflow (id, addresses, interface, backup flag, RTT, bytes), [`Session::local_addrs`]
//! and [`Session::peer_addrs`] return lists, and through roamd (CAP_NET_ADMIN) an app opens,
//! closes and re-prioritises its own subflows ([`Session::open_path`], [`Session::close_path`],
//! [`Session::set_backup`]). TCP options go on the whole connection
//! ([`Session::set_tcp_options`]) or on one subflow ([`Session::open_path_with`],
//! [`Session::set_path_options`]: roamd's BPF sock_ops program).
#![warn(missing_docs)]

pub mod decision;
pub mod error;
pub mod events;
pub mod listener;
pub mod monitor;
pub mod mptcp;
mod net;
pub mod path;
pub mod session;
pub mod tls;
mod transport;
pub mod vocab;

pub use decision::{DecisionSource, Embedded, Snapshot};
pub use error::{Error, Result};
pub use events::{Events, SessionEvent};
pub use listener::Listener;
pub use roam_policy::model;
pub use session::{
    Keepalive, PathInfo, Session, SessionBuilder, Subflow, TcpOptions, Transport,
    TransportPreference,
};
pub use tls::ClientTls;
