//! `baseline-tcp-reconnect`: what an app does without multipath: one TCP connection at a time,
//! an application-level acknowledgement of the last message received, and on error (or when
//! acknowledgements stop for [`ACK_TIMEOUT`]) a fresh connection that resumes from the last
//! acknowledged message.
//!
//! Wire format: the client opens with `RSUM` and an 8-byte session id; the server answers with
//! the 8-byte number of the next message it expects; from then on messages flow up and the
//! server sends that number back after every read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ClientCtx, ServerCtx, System, Task, Transport};
use crate::traffic::{MSG_LEN, encode};

/// TCP port of the resume server on the service address.
pub const PORT: u16 = 5301;
/// How long the client waits for acknowledgements to move before it calls the connection dead.
pub const ACK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between failed connection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
const HELLO: &[u8; 4] = b"RSUM";

/// The reconnect-and-resume baseline.
#[derive(Debug)]
pub struct BaselineTcpReconnect;

impl System for BaselineTcpReconnect {
    fn name(&self) -> &'static str {
        "baseline-tcp-reconnect"
    }

    fn transport(&self) -> Transport {
        Transport::TcpResume
    }

    fn server(&self, ctx: ServerCtx) -> Task {
        Box::pin(async move {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::new(ctx.service, PORT)).await?;
            let _ = ctx.ready.send(());
            let mut current: Option<tokio::task::JoinHandle<()>> = None;
            // One session: a new connection replaces the old one. Ends when the harness stops it.
            loop {
                let (stream, peer) = listener.accept().await?;
                ctx.recorder.note_peer(Instant::now(), peer);
                if let Some(old) = current.take() {
                    old.abort();
                }
                let rec = ctx.recorder.clone();
                current = Some(tokio::spawn(async move {
                    if let Err(e) = serve(stream, &rec).await {
                        tracing::debug!(error = %e, "resume connection ended");
                    }
                }));
            }
        })
    }

    fn client(&self, ctx: ClientCtx) -> Task {
        Box::pin(client(ctx))
    }
}

async fn serve(mut stream: TcpStream, rec: &crate::traffic::Recorder) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut hello = [0u8; 12];
    stream.read_exact(&mut hello).await?;
    if &hello[..4] != HELLO {
        bail!("not a resume hello");
    }
    rec.reset_partial();
    stream.write_all(&rec.delivered().to_be_bytes()).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        rec.feed(Instant::now(), &buf[..n]);
        stream.write_all(&rec.delivered().to_be_bytes()).await?;
    }
}

async fn client(mut ctx: ClientCtx) -> Result<()> {
    let target = SocketAddr::new(ctx.service, PORT);
    let session: u64 = rand::random();
    let mut produced = 0u64;
    let mut open = true;
    let mut attempts = 0u32;
    // Bounded: the harness stops the run; attempts are capped as well.
    while attempts < 10_000 {
        attempts += 1;
        let mut stream =
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "connect failed");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(_) => continue,
            };
        stream.set_nodelay(true)?;
        let mut hello = [0u8; 12];
        hello[..4].copy_from_slice(HELLO);
        hello[4..].copy_from_slice(&session.to_be_bytes());
        let mut resume = [0u8; 8];
        let greeted = tokio::time::timeout(CONNECT_TIMEOUT, async {
            stream.write_all(&hello).await?;
            stream.read_exact(&mut resume).await
        })
        .await;
        if !matches!(greeted, Ok(Ok(_))) {
            continue;
        }
        let mut next = u64::from_be_bytes(resume);
        tracing::debug!(resume_from = next, attempts, "session resumed");
        let (mut rd, mut wr) = stream.into_split();
        let acked = Arc::new(AtomicU64::new(next));
        let ack = acked.clone();
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 8];
            while rd.read_exact(&mut b).await.is_ok() {
                ack.fetch_max(u64::from_be_bytes(b), Ordering::Relaxed);
            }
        });
        let mut last_ack = next;
        let mut last_progress = Instant::now();
        let mut buf = Vec::with_capacity(MSG_LEN * 256);
        loop {
            // Take what the application produced; wait briefly when there is nothing to send.
            if next >= produced && open {
                match tokio::time::timeout(Duration::from_millis(20), ctx.seqs.recv()).await {
                    Ok(Some(s)) => produced = produced.max(s + 1),
                    Ok(None) => open = false,
                    Err(_) => {}
                }
            }
            while let Ok(s) = ctx.seqs.try_recv() {
                produced = produced.max(s + 1);
            }
            if next < produced {
                buf.clear();
                let end = produced.min(next + 256);
                for seq in next..end {
                    buf.extend_from_slice(&encode(seq));
                }
                match tokio::time::timeout(ACK_TIMEOUT, wr.write_all(&buf)).await {
                    Ok(Ok(())) => next = end,
                    _ => break,
                }
            }
            let a = acked.load(Ordering::Relaxed);
            if a > last_ack {
                last_ack = a;
                last_progress = Instant::now();
            } else if next > a && last_progress.elapsed() > ACK_TIMEOUT {
                tracing::debug!(
                    acked = a,
                    sent = next,
                    "acknowledgements stalled; reconnecting"
                );
                break;
            }
            if reader.is_finished() {
                break;
            }
            if !open && a >= produced {
                // Everything acknowledged: idle until the harness stops the run.
                std::future::pending::<()>().await;
            }
            if !open && next >= produced {
                // Only acknowledgements are outstanding: look again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        reader.abort();
    }
    Err(anyhow::anyhow!(
        "gave up after {attempts} connection attempts"
    ))
    .context("tcp resume")
}
