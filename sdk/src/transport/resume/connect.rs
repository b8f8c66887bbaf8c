//! The client's first tcp-resume connection: a TCP connect raced over the candidates (or the
//! MPTCP connection that fell back, TLS already up), then the supervisor ([`start`]).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::broadcast;

use super::supervisor::{Resumer, start};
use crate::error::{Error, Result};
use crate::net::tcp::{StreamProto, race};
use crate::transport::tls_stream::{self, TlsStream, tls_connect_error};
use crate::transport::{Connection, Dial, Stream};
use crate::vocab::{LocalPath, SessionEvent, Transport};

/// Connects a tcp-resume session: over `existing` (an MPTCP connection that fell back, TLS
/// already up) or a fresh TCP connection raced over the candidates.
pub(crate) async fn connect(
    d: Dial,
    existing: Option<(LocalPath, TlsStream<TcpStream>)>,
    connect_events: Vec<SessionEvent>,
) -> Result<Connection> {
    let tls_cfg = Arc::new(d.tls.build(&d.alpn)?);
    let (path, tls) = match existing {
        Some(e) => e,
        None => {
            let (path, sock) = race(
                &d.cands,
                d.attempt_delay,
                StreamProto::Tcp,
                d.binder.clone(),
            )
            .await?;
            let peer = sock
                .peer_addr()
                .map_err(|e| Error::io("reading the peer's address", e))?;
            let tls = tls_stream::connect(sock, tls_cfg.clone(), &d.server_name)
                .await
                .map_err(|e| tls_connect_error(peer, e))?;
            (path, tls)
        }
    };
    let alpn = tls.alpn();
    if alpn != crate::tls::ALPN {
        return Err(Error::Protocol(
            "tcp-resume needs ALPN roam/1, and the server chose another protocol".into(),
        ));
    }
    let peer = tls
        .get_ref()
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))?;
    let (events, _) = broadcast::channel(64);
    let r = Resumer {
        id: [0; 16],
        secret: [0; 16],
        peer,
        server_name: d.server_name.clone(),
        tls: tls_cfg,
        connect_timeout: d.connect_timeout,
        give_up_after: d.idle_timeout,
        keep_alive: d.keep_alive,
        binder: d.binder.clone(),
    };
    tracing::info!(%path, %peer, "tcp-resume session connecting");
    let stream = start(
        tls,
        path,
        d.app.as_deref(),
        r,
        d.path.clone(),
        d.decisions,
        d.source,
        events.clone(),
    )
    .await?;
    Ok(Connection {
        stream: Stream::Resume(Box::new(stream)),
        events,
        app: d.app,
        alpn,
        transport: Transport::TcpResume,
        connect_events,
    })
}
