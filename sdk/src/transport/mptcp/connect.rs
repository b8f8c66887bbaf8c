//! The client's side of the MPTCP transport: an MPTCP connect raced over the candidates, TLS,
//! the fallback check, the session header and the watcher. A connection whose MPTCP was
//! stripped goes on as tcp-resume when the peer is a roam listener.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::{Judged, MptcpStream, check_mptcp, watcher};
use crate::decision::PathReport;
use crate::error::{Error, Result};
use crate::mptcp::control::Roamd;
use crate::net::tcp::{StreamProto, race};
use crate::session::header::header;
use crate::transport::tls_stream::{self, tls_connect_error};
use crate::transport::{Connection, Dial, Stream, resume};
use crate::vocab::{SessionEvent, Transport};

/// Connects the MPTCP transport over the prepared candidates.
pub(crate) async fn connect(d: Dial, why: String) -> Result<Connection> {
    let (path, sock) = race(
        &d.cands,
        d.attempt_delay,
        StreamProto::Mptcp,
        d.binder.clone(),
    )
    .await?;
    let peer = sock
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))?;
    let mptcp = check_mptcp(&sock);
    let tls = Arc::new(d.tls.build(&d.alpn)?);
    let mut stream = tls_stream::connect(sock, tls, &d.server_name)
        .await
        .map_err(|e| tls_connect_error(peer, e))?;
    let alpn = stream.alpn();
    let roam = alpn == crate::tls::ALPN;
    if let Err(detail) = &mptcp {
        tracing::warn!(%path, %peer, %detail, "MPTCP fell back to TCP");
        if roam {
            // The peer is a roam listener: go on over this connection as tcp-resume, so the
            // session still survives a handover.
            let events = vec![
                d.source_event.clone(),
                SessionEvent::TransportChosen {
                    transport: Transport::TcpResume,
                    why: format!("{why}; MPTCP was stripped on {path}, so tcp-resume"),
                },
                SessionEvent::MptcpFallback {
                    path: path.clone(),
                    detail: detail.clone(),
                    now: Transport::TcpResume,
                },
            ];
            return resume::connect(d, Some((path, stream)), events).await;
        }
    }
    if roam {
        tls_stream::write_flush(&mut stream, &header(d.app.as_deref())?)
            .await
            .map_err(|e| Error::Stream(format!("writing the session header: {e}")))?;
    }
    let (events, _) = broadcast::channel(64);
    let transport = match &mptcp {
        Ok(token) => {
            tracing::info!(%path, %peer, token, "MPTCP session connected");
            Transport::Mptcp
        }
        Err(_) => Transport::Tcp,
    };
    let mut connect_events = vec![
        d.source_event.clone(),
        SessionEvent::TransportChosen { transport, why },
    ];
    match &mptcp {
        Err(detail) => connect_events.push(SessionEvent::MptcpFallback {
            path: path.clone(),
            detail: detail.clone(),
            now: transport,
        }),
        Ok(token) if d.source.steers_mptcp() => {
            d.source
                .report(PathReport::MptcpConnected { token: *token });
        }
        Ok(_) => connect_events.push(SessionEvent::KernelPathManager {
            detail: "roamd does not steer this connection: the kernel's path manager and its \
                     endpoints (`ip mptcp endpoint`) decide the subflows"
                .into(),
        }),
    }
    let judged = Arc::new(Judged::default());
    let judging = watcher::Judging {
        judged: judged.clone(),
        give_up: d.idle_timeout,
        steered: mptcp.is_ok() && d.source.steers_mptcp(),
    };
    let watcher = watcher::spawn(
        &stream,
        d.decisions.clone(),
        events.clone(),
        mptcp.is_ok(),
        d.source,
        judging,
    )?;
    Ok(Connection {
        stream: Stream::Mptcp(Box::new(MptcpStream {
            tls: stream,
            links: Some(d.decisions),
            // The roamd the session follows (`roamd_socket`), so the requests reach the agent
            // the connection was registered with.
            control: d.path_control.clone().unwrap_or_else(|| {
                Arc::new(Roamd::at(
                    d.roamd_socket
                        .clone()
                        .unwrap_or_else(|| roam_ipc::socket_path(None)),
                ))
            }),
            _watcher: Some(watcher),
            judged,
        })),
        events,
        app: d.app,
        alpn,
        transport,
        connect_events,
    })
}
