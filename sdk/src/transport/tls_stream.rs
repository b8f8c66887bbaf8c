//! TLS over a byte stream for the TCP transports (MPTCP, tcp-resume): a rustls connection
//! driven by tokio's `AsyncRead`/`AsyncWrite` on the socket.
//!
//! QUIC carries its own TLS; over TCP roam runs the same rustls configurations (TLS 1.3, ALPN
//! `roam/1`, real certificate checks) through this adapter.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::error::Error;

/// A TLS connection over `IO`.
#[derive(Debug)]
pub(crate) struct TlsStream<IO> {
    io: IO,
    tls: rustls::Connection,
    /// The peer's TCP stream ended (after or without close_notify).
    eof: bool,
}

/// `std::io` over a polled tokio stream: `Pending` becomes `WouldBlock`.
struct SyncIo<'a, 'b, IO> {
    io: &'a mut IO,
    cx: &'a mut Context<'b>,
}

impl<IO: AsyncRead + Unpin> Read for SyncIo<'_, '_, IO> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        match Pin::new(&mut *self.io).poll_read(self.cx, &mut rb) {
            Poll::Ready(Ok(())) => Ok(rb.filled().len()),
            Poll::Ready(Err(e)) => Err(e),
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl<IO: AsyncWrite + Unpin> Write for SyncIo<'_, '_, IO> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match Pin::new(&mut *self.io).poll_write(self.cx, buf) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match Pin::new(&mut *self.io).poll_flush(self.cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Runs the handshake to its end.
    pub(crate) async fn handshake(io: IO, tls: rustls::Connection) -> io::Result<TlsStream<IO>> {
        let mut s = TlsStream {
            io,
            tls,
            eof: false,
        };
        std::future::poll_fn(|cx| s.poll_handshake(cx)).await?;
        Ok(s)
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Bounded: each turn either makes progress or returns Pending.
        loop {
            if self.poll_flush_tls(cx)?.is_pending() {
                return Poll::Pending;
            }
            if !self.tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match self.poll_fill(cx)? {
                Poll::Ready(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    )));
                }
                Poll::Ready(_) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The negotiated ALPN protocol.
    pub(crate) fn alpn(&self) -> Vec<u8> {
        self.tls
            .alpn_protocol()
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Full, resumed (a ticket from an earlier connection) or full after a HelloRetryRequest
    /// (a round trip more).
    pub(crate) fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        self.tls.handshake_kind()
    }

    /// The socket under the TLS.
    pub(crate) fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The same TLS connection over `f(io)`: the socket wrapped (tcp-resume shares it with
    /// its `TCP_INFO` reader), nothing read or written.
    pub(crate) fn map_io<J>(self, f: impl FnOnce(IO) -> J) -> TlsStream<J> {
        TlsStream {
            io: f(self.io),
            tls: self.tls,
            eof: self.eof,
        }
    }

    /// Keying material bound to this TLS connection (RFC 8446 section 7.5).
    pub(crate) fn export(&self, label: &[u8], context: &[u8]) -> io::Result<[u8; 32]> {
        let mut out = [0u8; 32];
        self.tls
            .export_keying_material(&mut out, label, Some(context))
            .map_err(tls_error)?;
        Ok(out)
    }

    /// Writes every pending TLS record to the socket.
    fn poll_flush_tls(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tls.wants_write() {
            let mut sync = SyncIo {
                io: &mut self.io,
                cx,
            };
            match self.tls.write_tls(&mut sync) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Reads TLS records from the socket into rustls; `Ready(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut sync = SyncIo {
            io: &mut self.io,
            cx,
        };
        let n = match self.tls.read_tls(&mut sync) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Poll::Pending,
            Err(e) => return Poll::Ready(Err(e)),
        };
        if n == 0 {
            self.eof = true;
            return Poll::Ready(Ok(0));
        }
        if let Err(e) = self.tls.process_new_packets() {
            // Tell the peer why before giving up (best effort).
            let _ = self.poll_flush_tls(cx);
            return Poll::Ready(Err(tls_error(e)));
        }
        Poll::Ready(Ok(n))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.tls.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the TCP connection ended without a TLS close_notify",
                )));
            }
            // Key updates may want an answer; if the socket is full it goes out with the next
            // write or flush, and reading still progresses.
            let _ = this.poll_flush_tls(cx)?;
            match this.poll_fill(cx)? {
                Poll::Ready(_) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Backpressure: do not queue more plaintext while the socket refuses records.
        if this.poll_flush_tls(cx)?.is_pending() {
            return Poll::Pending;
        }
        let n = this.tls.writer().write(buf)?;
        // Push what we can now; what is left goes out on the next write or flush.
        let _ = this.poll_flush_tls(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_flush_tls(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.tls.send_close_notify();
        if this.poll_flush_tls(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Client handshake over `io` with `cfg` for `server_name`.
pub(crate) async fn connect<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    server_name: &str,
) -> io::Result<TlsStream<IO>> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(tls_error)?;
    TlsStream::handshake(io, conn.into()).await
}

/// Server handshake over `io`.
pub(crate) async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    cfg: std::sync::Arc<rustls::ServerConfig>,
) -> io::Result<TlsStream<IO>> {
    let conn = rustls::ServerConnection::new(cfg).map_err(tls_error)?;
    TlsStream::handshake(io, conn.into()).await
}

/// Writes `data` and flushes it.
pub(crate) async fn write_flush<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    w.write_all(data).await?;
    w.flush().await
}

/// A TLS failure on a TCP transport in the error an app reacts to.
pub(crate) fn tls_connect_error(peer: SocketAddr, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        Error::Tls {
            peer,
            detail: e.to_string(),
        }
    } else {
        Error::io(format!("TLS handshake with {peer}"), e)
    }
}
