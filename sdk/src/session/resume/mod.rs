//! The tcp-resume transport (sdk/RESUME.md): a session layer over TLS on TCP with a session
//! id, byte offsets and acknowledgements, that resumes over a fresh TCP connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use super::Session;
use super::tls_stream::TlsStream;
use crate::error::{Error, Result};

/// The first four bytes of a tcp-resume connection (inside TLS).
pub(crate) const MAGIC: &[u8; 4] = b"RRES";

/// How long a listener keeps a detached session by default.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The listener's table of tcp-resume sessions.
#[derive(Debug, Clone)]
pub(crate) struct Registry {
    grace: Duration,
}

impl Registry {
    pub(crate) fn new(grace: Duration) -> Arc<Registry> {
        Arc::new(Registry { grace })
    }

    /// Handles a connection whose magic was [`MAGIC`].
    pub(crate) async fn accept(
        &self,
        _tls: TlsStream<TcpStream>,
        peer: SocketAddr,
    ) -> Result<Option<Session>> {
        tracing::debug!(%peer, grace = ?self.grace, "tcp-resume connection");
        Err(Error::Unsupported("tcp-resume"))
    }
}
