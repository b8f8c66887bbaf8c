//! The transports: each connects (client), accepts (server) and drives a connection, and hands
//! the session a [`Connection`].
//!
//! - [`quic`]: one bidirectional QUIC stream; the driver moves the connection with
//!   `Endpoint::rebind`.
//! - [`mptcp`]: TLS over one MPTCP socket; the kernel's (or roamd's) path manager moves the
//!   subflows, a watcher reports them.
//! - [`resume`]: TLS over TCP with roam's resumption layer; a supervisor reconnects.
//! - [`tls_stream`]: rustls over the TCP transports.
//! - [`report`]: what every transport tells its decision source (RTTs, stalls).
//!
//! A transport dials with a [`Dial`] (the app's options and the candidates, prepared by
//! `session::connect`) over the sockets and races of [`crate::net`], and returns the parts a
//! [`crate::Session`] is made of ([`Connection`]): it never builds a session or calls back into
//! one. The one thing it takes from the session floor is the header's bytes
//! (`session::header`, which imports nothing but the error type). The listener's accept side of
//! each transport is here too; `listener.rs` dispatches to it.

pub(crate) mod mptcp;
pub(crate) mod quic;
pub(crate) mod report;
pub(crate) mod resume;
pub(crate) mod tls_stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use roam_policy::MultipathMode;
use tokio::sync::{broadcast, watch};

use crate::decision::{DecisionSource, Snapshot};
use crate::mptcp::control::PathControl;
use crate::net::socket::SocketBinder;
use crate::path::manager::{self, PathEvent};
use crate::tls::ClientTls;
use crate::vocab::{LocalPath, SessionEvent, Transport};

/// What every transport dials with: the app's options (from the `SessionBuilder`) and what
/// `session::connect` prepared (the decision, its source and the candidates).
#[derive(Clone)]
pub(crate) struct Dial {
    /// The app id, sent in the session header.
    pub(crate) app: Option<String>,
    pub(crate) tls: ClientTls,
    pub(crate) alpn: Vec<Vec<u8>>,
    /// The name the server's certificate is checked against.
    pub(crate) server_name: String,
    pub(crate) connect_timeout: Duration,
    /// Happy Eyeballs: when the next candidate starts if the previous has not finished.
    pub(crate) attempt_delay: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive: Duration,
    /// The app's socket hook, run on every socket the session opens.
    pub(crate) binder: Option<SocketBinder>,
    /// The path manager's tunables.
    pub(crate) path: manager::Config,
    /// The app's multipath mode; `None`: the decision's.
    pub(crate) multipath: Option<MultipathMode>,
    /// Who opens and closes MPTCP subflows; `None`: roamd at `roamd_socket`.
    pub(crate) path_control: Option<Arc<dyn PathControl>>,
    /// roamd's socket; `None`: `ROAM_SOCKET`, else the default.
    pub(crate) roamd_socket: Option<PathBuf>,
    pub(crate) source: Arc<dyn DecisionSource>,
    pub(crate) decisions: watch::Receiver<Arc<Snapshot>>,
    pub(crate) snap: Arc<Snapshot>,
    /// The (local path, peer) pairs to race, best first.
    pub(crate) cands: Vec<(LocalPath, SocketAddr)>,
    /// Which decision source, said first among the connect events.
    pub(crate) source_event: SessionEvent,
}

/// One connected byte stream, by transport.
#[derive(Debug)]
pub(crate) enum Stream {
    Quic(quic::QuicStream),
    /// MPTCP, or the plain TCP an MPTCP connection fell back to.
    Mptcp(Box<mptcp::MptcpStream>),
    Resume(Box<resume::ResumeStream>),
}

/// What a transport hands the session: the stream and what the session says about it.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) stream: Stream,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    /// The app id (the client's, as sent in the session header).
    pub(crate) app: Option<String>,
    /// The negotiated ALPN protocol.
    pub(crate) alpn: Vec<u8>,
    pub(crate) transport: Transport,
    /// What the session said while connecting; replayed to every `Events`.
    pub(crate) connect_events: Vec<SessionEvent>,
}

/// Aborts a transport's task (driver, watcher, supervisor, accept loop) when dropped.
#[derive(Debug)]
pub(crate) struct TaskHandle(tokio::task::AbortHandle);

impl TaskHandle {
    /// Aborts `task` when dropped.
    pub(crate) fn new(task: tokio::task::AbortHandle) -> TaskHandle {
        TaskHandle(task)
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The path manager speaks of paths only; the drivers tell the app in its own words.
impl From<PathEvent> for SessionEvent {
    fn from(e: PathEvent) -> SessionEvent {
        match e {
            PathEvent::PathChanged { from, to, reason } => {
                SessionEvent::PathChanged { from, to, reason }
            }
            PathEvent::Degraded { path, reason } => SessionEvent::Degraded { path, reason },
            PathEvent::Recovered { path } => SessionEvent::Recovered { path },
        }
    }
}
