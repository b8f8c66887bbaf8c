//! `baseline-quinn`: a plain quinn client bound to the wildcard address, as an app would write
//! it, against a server with migration on. When a route changes the client's packets leave from
//! another address and the server follows; nothing in the client reacts to link loss.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{
    ClientCtx, REQUEST, ServerCtx, System, Task, Transport, drain, read_messages, send_then_hold,
    write_messages,
};
use crate::tls::{SERVER_NAME, TestPki};

/// UDP port of the QUIC server on the service address.
pub const PORT: u16 = 4433;

/// The plain quinn baseline.
#[derive(Debug)]
pub struct BaselineQuinn {
    pki: std::sync::Arc<TestPki>,
}

impl BaselineQuinn {
    /// Makes the test CA and server certificate this baseline uses.
    pub fn new() -> Result<Self> {
        Ok(BaselineQuinn {
            pki: std::sync::Arc::new(TestPki::generate()?),
        })
    }
}

impl System for BaselineQuinn {
    fn name(&self) -> &'static str {
        "baseline-quinn"
    }

    fn transport(&self) -> Transport {
        Transport::Quic
    }

    fn server(&self, ctx: ServerCtx) -> Task {
        let pki = self.pki.clone();
        Box::pin(async move {
            let cfg = pki.quic_server(ctx.timeout)?;
            let endpoint = quinn::Endpoint::server(cfg, SocketAddr::new(ctx.service, PORT))
                .context("binding the QUIC server")?;
            let _ = ctx.ready.send(());
            let incoming = endpoint.accept().await.context("QUIC endpoint closed")?;
            let conn = incoming.await.context("QUIC handshake")?;
            ctx.recorder
                .note_peer(Instant::now(), conn.remote_address());
            // The client opens one bidirectional stream: it sends on it (up) or asks on it
            // ([`super::REQUEST`]) and reads the messages (down).
            let (mut send, mut recv) = conn.accept_bi().await?;
            if let Some(mut seqs) = ctx.seqs {
                tokio::try_join!(drain(&mut recv), send_then_hold(&mut send, &mut seqs))?;
                return Ok(());
            }
            let mut buf = vec![0u8; 64 * 1024];
            // Ends with the stream or the connection; the harness stops it otherwise.
            while let Some(n) = recv.read(&mut buf).await? {
                let now = Instant::now();
                ctx.recorder.feed(now, &buf[..n]);
                // The server's view of the peer: a migration shows up as a new address.
                ctx.recorder.note_peer(now, conn.remote_address());
            }
            Ok(())
        })
    }

    fn client(&self, ctx: ClientCtx) -> Task {
        let pki = self.pki.clone();
        Box::pin(async move {
            let any: SocketAddr = if ctx.service.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let mut endpoint = quinn::Endpoint::client(any)?;
            endpoint.set_default_client_config(pki.quic_client(ctx.timeout)?);
            let conn = endpoint
                .connect(SocketAddr::new(ctx.service, PORT), SERVER_NAME)?
                .await
                .context("QUIC handshake")?;
            let (mut send, mut recv) = conn.open_bi().await?;
            match ctx.seqs {
                Some(mut seqs) => {
                    write_messages(&mut send, &mut seqs).await?;
                    send.finish()?;
                }
                None => {
                    send.write_all(REQUEST).await?;
                    read_messages(&mut recv, &ctx.recorder).await?;
                }
            }
            // Stay connected until the harness has seen everything arrive.
            let reason = conn.closed().await;
            Err(anyhow::anyhow!("QUIC connection closed: {reason}"))
        })
    }
}
