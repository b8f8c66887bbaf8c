//! rustls over a plain socket with nothing in between: records are encrypted into and
//! decrypted from 256 KiB buffers, one socket call per buffer. What raw TLS costs, beside which
//! a roam session's own TLS is measured.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The size of the pump's buffers.
pub const BUF: usize = 256 * 1024;

/// A TLS connection pumped by hand over a TCP (or MPTCP) socket.
pub struct TlsPump {
    io: TcpStream,
    tls: rustls::Connection,
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes read with the handshake's last flight that came after it (the peer's first
    /// records), for [`TlsPump::read_to_end`].
    early: Vec<u8>,
}

impl TlsPump {
    /// Runs the handshake of `tls` (a client or a server connection) over `io`, for at most
    /// `timeout`.
    pub async fn handshake(
        io: TcpStream,
        tls: rustls::Connection,
        timeout: Duration,
    ) -> Result<TlsPump> {
        let mut t = TlsPump {
            io,
            tls,
            out: Vec::with_capacity(BUF),
            buf: vec![0u8; BUF],
            early: Vec::new(),
        };
        let fut = async {
            // Bounded by the timeout: each turn sends or waits for the peer.
            loop {
                t.flush().await?;
                if !t.tls.is_handshaking() {
                    return Ok::<_, anyhow::Error>(());
                }
                let n = t.io.read(&mut t.buf).await?;
                ensure!(n > 0, "the peer closed during the TLS handshake");
                let mut rd = &t.buf[..n];
                // Records after the handshake wait for read_to_end, which drains their
                // plaintext as it goes (rustls holds only so much).
                while !rd.is_empty() && t.tls.is_handshaking() {
                    t.tls.read_tls(&mut rd)?;
                    t.tls.process_new_packets()?;
                }
                t.early = rd.to_vec();
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .context("the TLS handshake took too long")??;
        Ok(t)
    }

    /// The negotiated cipher suite's name.
    pub fn cipher_suite(&self) -> Option<String> {
        self.tls
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
    }

    /// Sends every pending record.
    async fn flush(&mut self) -> Result<()> {
        self.out.clear();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.out)?;
        }
        self.io.write_all(&self.out).await?;
        Ok(())
    }

    /// Encrypts and sends all of `data`.
    pub async fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        // Bounded: rustls takes some of `data` whenever its buffer was flushed.
        while !data.is_empty() {
            let n = std::io::Write::write(&mut self.tls.writer(), data)?;
            data = &data[n..];
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends close_notify and half-closes.
    pub async fn close(&mut self) -> Result<()> {
        self.tls.send_close_notify();
        self.flush().await?;
        self.io.shutdown().await?;
        Ok(())
    }

    /// Reads plaintext into `sink` until the peer's close_notify and end of stream.
    pub async fn read_to_end(&mut self, mut sink: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut plain = vec![0u8; BUF];
        let mut closed = false;
        let early = std::mem::take(&mut self.early);
        let mut first = Some(early.as_slice());
        loop {
            // Whatever came with the handshake (plaintext rustls already holds, then records),
            // then the socket.
            let mut rd = match first.take() {
                Some(e) => e,
                None => {
                    let n = self.io.read(&mut self.buf).await?;
                    if n == 0 {
                        ensure!(closed, "the stream ended without close_notify");
                        return Ok(());
                    }
                    &self.buf[..n]
                }
            };
            loop {
                // Drain the plaintext so rustls takes more records.
                loop {
                    match std::io::Read::read(&mut self.tls.reader(), &mut plain) {
                        Ok(0) => break,
                        Ok(k) => sink(&plain[..k])?,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                if rd.is_empty() {
                    break;
                }
                self.tls.read_tls(&mut rd)?;
                closed |= self.tls.process_new_packets()?.peer_has_closed();
            }
        }
    }

    /// After our close: the peer's close_notify and end of stream, with no data before them,
    /// within `timeout`.
    pub async fn wait_close(&mut self, timeout: Duration) -> Result<()> {
        let mut got = 0usize;
        tokio::time::timeout(
            timeout,
            self.read_to_end(|b| {
                got += b.len();
                Ok(())
            }),
        )
        .await
        .context("the receiver did not close")??;
        ensure!(got == 0, "the receiver sent {got} bytes");
        Ok(())
    }
}
