//! The listener's side of the MPTCP transport (and of plain TCP): once the TLS handshake is
//! done and the listener read the magic `ROAM`, the rest of the session header.

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::broadcast;

use super::{MptcpStream, check_mptcp};
use crate::error::Result;
use crate::mptcp::control::Roamd;
use crate::session::header::read_header_after_magic;
use crate::transport::tls_stream::TlsStream;
use crate::transport::{Connection, Stream};
use crate::vocab::Transport;

/// The server side of a TCP-transport connection whose TLS is up: with `roam_alpn`, its first
/// four bytes were `ROAM` and the rest of the header follows; then makes the connection.
pub(crate) async fn accept(mut tls: TlsStream<TcpStream>, roam_alpn: bool) -> Result<Connection> {
    let app = if roam_alpn {
        read_header_after_magic(&mut tls).await?
    } else {
        None
    };
    let transport = match check_mptcp(tls.get_ref()) {
        Ok(_) => Transport::Mptcp,
        Err(_) => Transport::Tcp,
    };
    let alpn = tls.alpn();
    let (events, _) = broadcast::channel(64);
    Ok(Connection {
        stream: Stream::Mptcp(Box::new(MptcpStream {
            tls,
            links: None,
            control: Arc::new(Roamd::from_env()),
            _watcher: None,
            judged: Arc::default(),
        })),
        events,
        app,
        alpn,
        transport,
        connect_events: Vec::new(),
    })
}
