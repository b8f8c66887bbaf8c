//! The client's side of the QUIC transport: a handshake raced over the candidates (each on a
//! UDP socket bound to its interface), the session header on the first stream, and the driver
//! that moves the connection from then on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use noq::crypto::rustls::QuicClientConfig;
use tokio::sync::{Notify, broadcast};

use super::driver::Driver;
use super::sockets::PathSockets;
use super::{QuicStream, Shared, negotiated_alpn, transport_config};
use crate::error::{Error, Result};
use crate::net::race::race;
use crate::net::socket::{SocketBinder, bind_udp};
use crate::path::manager::{self, Input, PathManager};
use crate::session::header::write_header;
use crate::transport::{Connection, Dial, Stream};
use crate::vocab::{LocalPath, SessionEvent, Transport};

/// The stall floor of a QUIC session whose path config keeps the path manager's default
/// floor. That default (60 ms) is sized for TCP, whose receivers delay ACKs by up to 40 ms;
/// a QUIC peer acknowledges every second packet at once and a lone one within its
/// `max_ack_delay` (25 ms by default, already the stall threshold's own term), so 40 ms
/// leaves 15 ms above the latest legitimate ACK on a LAN and finds a silent blackhole 20 ms
/// sooner (handover-bench --quick, plain veth, load average 7: blackhole gap p50 74 -> 49 ms).
const QUIC_MIN_STALL: Duration = Duration::from_millis(40);

struct Attempt {
    endpoint: noq::Endpoint,
    sockets: PathSockets,
    conn: noq::Connection,
    path: LocalPath,
    local: SocketAddr,
    peer: SocketAddr,
}

/// Connects the QUIC transport over the prepared candidates and starts its driver.
pub(crate) async fn connect(d: Dial, why: String) -> Result<Connection> {
    let Dial {
        app,
        tls,
        alpn,
        server_name,
        attempt_delay,
        idle_timeout,
        keep_alive,
        binder,
        path: pm_cfg,
        multipath,
        source,
        decisions,
        snap,
        cands,
        source_event,
        connect_timeout: _,
        path_control: _,
        roamd_socket: _,
    } = d;
    let tls = tls.build(&alpn)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| Error::TlsConfig(e.to_string()))?;
    let mut client = noq::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(idle_timeout, Some(keep_alive))?));

    let won = race(&cands, attempt_delay, |path, peer| {
        attempt(
            path,
            peer,
            client.clone(),
            server_name.clone(),
            binder.clone(),
        )
    })
    .await?;
    tracing::info!(
        path = %won.path,
        local = %won.local,
        peer = %won.peer,
        multipath = won.conn.is_multipath_enabled(),
        "connected"
    );
    let alpn = negotiated_alpn(&won.conn);
    let (mut send, recv) = won.conn.open_bi().await?;
    if alpn == crate::tls::ALPN {
        write_header(&mut send, app.as_deref()).await?;
    }

    let v6 = won.peer.is_ipv6();
    let mut cfg = pm_cfg;
    cfg.mode = multipath.unwrap_or(snap.decision.multipath);
    if cfg.min_stall == manager::Config::default().min_stall {
        cfg.min_stall = QUIC_MIN_STALL;
    }
    let mode = cfg.mode;
    let now = tokio::time::Instant::now().into_std();
    let mut pm = PathManager::new(cfg, won.path.clone(), now);
    pm.handle(now, Input::Paths(snap.local_paths(v6)));
    let (events, _) = broadcast::channel(64);
    let shared = Arc::new(Shared::new(Some((won.path.clone(), won.local)), won.peer));
    let activity = Arc::new(Notify::new());
    let driver = Driver::new(
        pm,
        mode,
        won.conn.clone(),
        won.endpoint.clone(),
        won.sockets,
        won.path,
        won.peer,
        decisions,
        activity.clone(),
        events.clone(),
        shared.clone(),
        binder,
        source,
    );
    let handle = driver.spawn();
    let session = Connection {
        stream: Stream::Quic(QuicStream {
            conn: won.conn,
            send,
            recv,
            shared,
            activity: Some(activity),
            _driver: Some(handle),
            endpoint: won.endpoint,
        }),
        events,
        app,
        alpn,
        transport: Transport::Quic,
        connect_events: vec![
            source_event,
            SessionEvent::TransportChosen {
                transport: Transport::Quic,
                why,
            },
        ],
    };
    Ok(session)
}

async fn attempt(
    path: LocalPath,
    peer: SocketAddr,
    client: noq::ClientConfig,
    server_name: String,
    binder: Option<SocketBinder>,
) -> Result<Attempt> {
    let socket = bind_udp(&path, binder.as_ref())
        .map_err(|e| Error::io(format!("binding a UDP socket on {path}"), e))?;
    let local = socket
        .local_addr()
        .map_err(|e| Error::io("reading the socket's address", e))?;
    let runtime = noq::default_runtime()
        .ok_or_else(|| Error::io("starting QUIC", std::io::Error::other("no tokio runtime")))?;
    let sockets = PathSockets::new(socket)
        .map_err(|e| Error::io(format!("preparing the UDP socket on {path}"), e))?;
    let endpoint = noq::Endpoint::new_with_abstract_socket(
        noq::EndpointConfig::default(),
        None,
        sockets.endpoint_socket(),
        runtime,
    )
    .map_err(|e| Error::io(format!("creating the QUIC endpoint on {path}"), e))?;
    let connecting = endpoint
        .connect_with(client, peer, &server_name)
        .map_err(|e| Error::TlsConfig(format!("connecting to {peer} as {server_name}: {e}")))?;
    let conn = connecting.await.map_err(|e| handshake_error(peer, e))?;
    Ok(Attempt {
        endpoint,
        sockets,
        conn,
        path,
        local,
        peer,
    })
}

/// Sorts a handshake failure into the variants an app reacts to differently.
fn handshake_error(peer: SocketAddr, e: noq::ConnectionError) -> Error {
    use noq::ConnectionError as C;
    let crypto = |code: noq::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        C::TransportError(t) if crypto(t.code) => Error::Tls {
            peer,
            detail: t.to_string(),
        },
        C::ConnectionClosed(c) if crypto(c.error_code) => Error::Tls {
            peer,
            detail: c.to_string(),
        },
        C::ConnectionClosed(c) if c.error_code == noq::TransportErrorCode::CONNECTION_REFUSED => {
            Error::Refused {
                peer,
                detail: c.to_string(),
            }
        }
        C::ApplicationClosed(a) => Error::Refused {
            peer,
            detail: a.to_string(),
        },
        other => Error::Connection(other),
    }
}
