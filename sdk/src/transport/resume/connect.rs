//! The client's first tcp-resume connection: a TCP connect raced over the candidates (or the
//! MPTCP connection that fell back, TLS already up), then the supervisor ([`start`]).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::broadcast;

use super::driver::{Sock, Tls};
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
        Some((path, tls)) => (path, tls.map_io(Sock::new)),
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
            let tls = tls_stream::connect(Sock::new(sock), tls_cfg.clone(), &d.server_name)
                .await
                .map_err(|e| tls_connect_error(peer, e))?;
            (path, tls)
        }
    };
    let alpn = tls.alpn();
    let peer = tls
        .get_ref()
        .get_ref()
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))?;
    if alpn != crate::tls::ALPN {
        return Err(not_roam(tls, peer, &alpn).await);
    }
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
    // The decision's multipath mode, as QUIC's: `interactive` keeps a warm backup, where the
    // supervisor keeps a standby connection.
    let pm_cfg = crate::path::manager::Config {
        mode: d.multipath.unwrap_or(d.snap.decision.multipath),
        ..d.path.clone()
    };
    let stream = start(
        tls,
        path,
        d.app.as_deref(),
        r,
        pm_cfg,
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

/// How long a TLS close to a server that is not roam's may take.
const CLOSE_LIMIT: std::time::Duration = std::time::Duration::from_millis(500);

/// The error for a server that chose another protocol than roam/1, after closing TLS with it
/// properly: close_notify and the TCP FIN, then what the server still sends (its session
/// tickets, its own close_notify) read to the end, so closing the socket sends no reset.
async fn not_roam(mut tls: Tls, peer: std::net::SocketAddr, alpn: &[u8]) -> Error {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let close = async {
        tls.shutdown().await?;
        let mut sink = [0u8; 4096];
        while tls.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    match tokio::time::timeout(CLOSE_LIMIT, close).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "closing TLS with a server that is not roam's")
        }
        Err(_) => tracing::debug!(%peer, "the server did not close TLS within {CLOSE_LIMIT:?}"),
    }
    Error::NotRoam {
        peer,
        alpn: if alpn.is_empty() {
            "no ALPN".into()
        } else {
            format!("ALPN {}", String::from_utf8_lossy(alpn))
        },
    }
}
