//! The listener's QUIC side: every incoming connection gets its handshake and the client's
//! first stream (with its session header on ALPN `roam/1`) in a task of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tracing::Instrument;

use super::{QuicStream, Shared, negotiated_alpn};
use crate::error::{Error, Result};
use crate::session::header::read_header;
use crate::transport::{Connection, Stream};
use crate::vocab::Transport;

/// How many QUIC handshakes (with their session header) may be under way at once; more
/// clients wait in noq's queue of incoming connections.
const QUIC_HANDSHAKES: usize = 256;

/// Accepts QUIC connections for ever: each handshake and session header in a task of its own
/// (at most [`QUIC_HANDSHAKES`] at once), bounded by `header_timeout`; sessions go to `tx`.
/// Says `closed` when the endpoint stops.
pub(crate) async fn accept_loop(
    endpoint: noq::Endpoint,
    tx: mpsc::Sender<Connection>,
    header_timeout: Duration,
    closed: watch::Sender<bool>,
) {
    let slots = Arc::new(Semaphore::new(QUIC_HANDSHAKES));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (tx, endpoint) = (tx.clone(), endpoint.clone());
        let peer = incoming.remote_address();
        tokio::spawn(
            async move {
                let _slot = slot;
                let handshake = async {
                    let conn = incoming
                        .await
                        .map_err(|e| Error::Protocol(format!("QUIC handshake: {e}")))?;
                    accept(conn, endpoint, header_timeout).await
                };
                match tokio::time::timeout(header_timeout, handshake).await {
                    Ok(Ok(s)) => {
                        tracing::info!(%peer, app = s.app.as_deref().unwrap_or("default"), "session accepted");
                        let _ = tx.send(s).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "session refused"),
                    Err(_) => tracing::info!(
                        %peer,
                        "no QUIC handshake and session header within {header_timeout:?}"
                    ),
                }
            }
            .in_current_span(),
        );
    }
    let _ = closed.send(true);
}

/// The server side of a session on an accepted connection: waits for the client's first
/// stream and, on ALPN `roam/1`, its header.
pub(crate) async fn accept(
    conn: noq::Connection,
    endpoint: noq::Endpoint,
    header_timeout: Duration,
) -> Result<Connection> {
    let alpn = negotiated_alpn(&conn);
    let remote = conn
        .path(noq::PathId::ZERO)
        .and_then(|p| p.remote_address().ok())
        .ok_or_else(|| Error::Protocol("the connection has no path".into()))?;
    let accept = async {
        let (send, mut recv) = conn.accept_bi().await?;
        let app = if alpn == crate::tls::ALPN {
            read_header(&mut recv).await?
        } else {
            None
        };
        Ok::<_, Error>((send, recv, app))
    };
    let (send, recv, app) = tokio::time::timeout(header_timeout, accept)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("the first stream of {remote}"),
            limit: header_timeout,
        })??;
    let (events, _) = broadcast::channel(64);
    let shared = Arc::new(Shared::new(None, remote));
    let watcher = shared.watch_paths(&conn);
    Ok(Connection {
        stream: Stream::Quic(QuicStream {
            conn,
            send,
            recv,
            shared,
            activity: None,
            _driver: Some(watcher),
            endpoint,
        }),
        events,
        app,
        alpn,
        transport: Transport::Quic,
        connect_events: Vec::new(),
    })
}
