//! The client's side of the QUIC transport: a handshake raced over the candidates (each on a
//! UDP socket bound to its interface), the session header on the first stream, and the driver
//! that moves the connection from then on.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::{Notify, broadcast};

use super::driver::Driver;
use super::{QuicStream, Shared, negotiated_alpn};
use crate::error::{Error, Result};
use crate::net::race::race;
use crate::net::socket::{SocketBinder, bind_udp};
use crate::path::manager::{Input, PathManager};
use crate::session::header::write_header;
use crate::transport::{Connection, Dial, Stream};
use crate::vocab::{LocalPath, SessionEvent, Transport};

struct Attempt {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    path: LocalPath,
    local: SocketAddr,
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
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(idle_timeout, keep_alive)?));

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
    tracing::info!(path = %won.path, local = %won.local, peer = %won.conn.remote_address(), "connected");
    let alpn = negotiated_alpn(&won.conn);
    let (mut send, recv) = won.conn.open_bi().await?;
    if alpn == crate::tls::ALPN {
        write_header(&mut send, app.as_deref()).await?;
    }

    let v6 = won.conn.remote_address().is_ipv6();
    let mut cfg = pm_cfg;
    cfg.mode = multipath.unwrap_or(snap.decision.multipath);
    let now = tokio::time::Instant::now().into_std();
    let mut pm = PathManager::new(cfg, won.path.clone(), now);
    pm.handle(now, Input::Paths(snap.local_paths(v6)));
    let (events, _) = broadcast::channel(64);
    let shared = Arc::new(Shared {
        path: Mutex::new(Some((won.path.clone(), won.local))),
    });
    let activity = Arc::new(Notify::new());
    let driver = Driver {
        pm,
        conn: won.conn.clone(),
        endpoint: won.endpoint.clone(),
        decisions,
        v6,
        activity: activity.clone(),
        events: events.clone(),
        shared: shared.clone(),
        warm: None,
        binder,
        source,
        reported: None,
    };
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
    client: quinn::ClientConfig,
    server_name: String,
    binder: Option<SocketBinder>,
) -> Result<Attempt> {
    let socket = bind_udp(&path, binder.as_ref())
        .map_err(|e| Error::io(format!("binding a UDP socket on {path}"), e))?;
    let local = socket
        .local_addr()
        .map_err(|e| Error::io("reading the socket's address", e))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::io("starting QUIC", std::io::Error::other("no tokio runtime")))?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|e| Error::io(format!("creating the QUIC endpoint on {path}"), e))?;
    let connecting = endpoint
        .connect_with(client, peer, &server_name)
        .map_err(|e| Error::TlsConfig(format!("connecting to {peer} as {server_name}: {e}")))?;
    let conn = connecting.await.map_err(|e| handshake_error(peer, e))?;
    Ok(Attempt {
        endpoint,
        conn,
        path,
        local,
    })
}

/// Sorts a handshake failure into the variants an app reacts to differently.
fn handshake_error(peer: SocketAddr, e: quinn::ConnectionError) -> Error {
    use quinn::ConnectionError as C;
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        C::TransportError(t) if crypto(t.code) => Error::Tls {
            peer,
            detail: t.to_string(),
        },
        C::ConnectionClosed(c) if crypto(c.error_code) => Error::Tls {
            peer,
            detail: c.to_string(),
        },
        C::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
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

/// quinn's transport settings: the idle timeout and keep-alive the app asked for.
fn transport_config(
    idle_timeout: Duration,
    keep_alive: Duration,
) -> Result<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(quinn::IdleTimeout::try_from(idle_timeout).map_err(
        |_| Error::TlsConfig(format!("idle timeout {:?} is too large", idle_timeout)),
    )?));
    t.keep_alive_interval(Some(keep_alive));
    Ok(t)
}
