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
//!   [`Transport`], [`Subflow`], [`PathInfo`], [`SessionEvent`]), [`error`], [`events`]
//!   ([`Events`], how the app reads them), and [`boundary`] (for the C and JNI bindings).
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

pub mod boundary;
pub mod decision;
pub mod error;
pub mod events;
#[doc(hidden)]
pub mod fuzzing;
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
pub use listener::{Listener, ListenerConfig};
/// The QUIC implementation under roam's QUIC sessions (n0-computer's `noq`, RFC 9000 and RFC
/// 10069 multipath), re-exported so an app can name the types [`Session::connection`],
/// [`Session::open_stream`] and [`Error::Connection`] carry without depending on it itself.
pub use noq;
pub use roam_policy::model;
pub use session::{
    Keepalive, PathInfo, Session, SessionBuilder, Subflow, TcpOptions, Transport,
    TransportPreference,
};
pub use tls::ClientTls;

/// The floors of the Layout above, checked on the source: a room that imports from a floor
/// above its own brings the import cycles back.
#[cfg(test)]
mod floors {
    /// `crate::` spelt so that this file's own code does not match it.
    const CRATE: &str = concat!("crate", "::");

    /// The rooms of the crate that `text`'s code (not its comments) names.
    fn rooms(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for line in text.lines().map(str::trim_start) {
            if line.starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices(CRATE) {
                let rest = &line[i + CRATE.len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                out.push(rest[..end].to_owned());
            }
        }
        out
    }

    #[test]
    fn each_room_imports_only_from_its_floor_and_below() {
        let ground: &[&str] = &[];
        let on_vocab: &[&str] = &["vocab"];
        let below_transport: &[&str] = &["decision", "error", "monitor", "vocab"];
        let files: &[(&str, &str, &[&str])] = &[
            ("vocab.rs", include_str!("vocab.rs"), ground),
            ("boundary.rs", include_str!("boundary.rs"), ground),
            ("events.rs", include_str!("events.rs"), on_vocab),
            ("path/mod.rs", include_str!("path/mod.rs"), on_vocab),
            ("path/manager.rs", include_str!("path/manager.rs"), on_vocab),
            ("net/race.rs", include_str!("net/race.rs"), below_transport),
            (
                "net/resolve.rs",
                include_str!("net/resolve.rs"),
                below_transport,
            ),
            (
                "net/socket.rs",
                include_str!("net/socket.rs"),
                below_transport,
            ),
            ("net/tcp.rs", include_str!("net/tcp.rs"), below_transport),
        ];
        for (file, text, allowed) in files {
            for room in rooms(text) {
                assert!(
                    allowed.contains(&room.as_str()),
                    "{file} imports crate::{room}, a floor above its own (allowed: {allowed:?})"
                );
            }
        }
    }

    #[test]
    fn the_room_finder_sees_code_and_skips_comments() {
        let text = format!(
            "use {CRATE}vocab::LocalPath;\n/// [`{CRATE}Session`]\n  let x = {CRATE}session::header::MAGIC;"
        );
        assert_eq!(rooms(&text), ["vocab", "session"]);
    }
}
