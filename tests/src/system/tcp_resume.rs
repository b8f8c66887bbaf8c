//! `baseline-tcp-reconnect`: what an app does without multipath: one TCP connection at a time,
//! an application-level acknowledgement of the last message received, and on error (or when
//! acknowledgements stop for [`ACK_TIMEOUT`]) a fresh connection that resumes from the last
//! acknowledged message.
//!
//! Either end may be the sender (the client with [`super::Direction::Up`], the server with
//! `Down`); the receiver acknowledges, and a receiving client also reconnects when nothing
//! arrived for [`ACK_TIMEOUT`] (the messages are paced, so silence means a dead path).
//!
//! Wire format: the client opens with `RSUM`, an 8-byte session id and the 8-byte number of
//! messages it has received; the server answers with the number it has received; the sender
//! resumes from the receiver's number, and the receiver sends its number back after every read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use tokio::sync::mpsc::UnboundedReceiver;

use super::{ClientCtx, ServerCtx, System, Task, Transport};
use crate::traffic::{MSG_LEN, Recorder, encode};

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
            // The sender's state outlives each connection; one connection holds it at a time.
            let sender = ctx
                .seqs
                .map(|seqs| Arc::new(tokio::sync::Mutex::new(Sender::new(seqs))));
            let mut current: Option<tokio::task::JoinHandle<()>> = None;
            // One session: a new connection replaces the old one. Ends when the harness stops it.
            loop {
                let (stream, peer) = listener.accept().await?;
                ctx.recorder.note_peer(Instant::now(), peer);
                if let Some(old) = current.take() {
                    old.abort();
                    let _ = old.await;
                }
                let rec = ctx.recorder.clone();
                let sender = sender.clone();
                current = Some(tokio::spawn(async move {
                    if let Err(e) = serve(stream, &rec, sender).await {
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

async fn serve(
    mut stream: TcpStream,
    rec: &Recorder,
    sender: Option<Arc<tokio::sync::Mutex<Sender>>>,
) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut hello = [0u8; 20];
    stream.read_exact(&mut hello).await?;
    if &hello[..4] != HELLO {
        bail!("not a resume hello");
    }
    let peer_has = u64::from_be_bytes(hello[12..].try_into()?);
    match sender {
        Some(sender) => {
            let mut sender = sender.lock().await;
            stream.write_all(&rec.delivered().to_be_bytes()).await?;
            sender.send(stream, peer_has).await
        }
        None => {
            rec.reset_partial();
            stream.write_all(&rec.delivered().to_be_bytes()).await?;
            receive(stream, rec, None).await
        }
    }
}

/// Records what arrives and acknowledges it after every read. With `silence`, a stream that
/// carries nothing for that long counts as dead.
async fn receive(mut stream: TcpStream, rec: &Recorder, silence: Option<Duration>) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = stream.read(&mut buf);
        let n = match silence {
            Some(limit) => tokio::time::timeout(limit, read)
                .await
                .map_err(|_| anyhow::anyhow!("nothing arrived for {limit:?}"))??,
            None => read.await?,
        };
        if n == 0 {
            return Ok(());
        }
        rec.feed(Instant::now(), &buf[..n]);
        stream.write_all(&rec.delivered().to_be_bytes()).await?;
    }
}

/// The sending end: what the application produced so far, across connections.
struct Sender {
    seqs: UnboundedReceiver<u64>,
    /// Messages `0..produced` exist.
    produced: u64,
    /// The application may produce more.
    open: bool,
}

impl Sender {
    fn new(seqs: UnboundedReceiver<u64>) -> Self {
        Sender {
            seqs,
            produced: 0,
            open: true,
        }
    }

    /// Sends from message `next` (what the receiver has) on `stream` until it looks dead: an
    /// error, or acknowledgements that stop moving for [`ACK_TIMEOUT`]. Everything
    /// acknowledged and nothing more to come: idles until the harness stops the run.
    async fn send(&mut self, stream: TcpStream, mut next: u64) -> Result<()> {
        let (mut rd, mut wr) = stream.into_split();
        let acked = Arc::new(AtomicU64::new(next));
        let ack = acked.clone();
        let reader = tokio::spawn(async move {
            let mut b = [0u8; 8];
            while rd.read_exact(&mut b).await.is_ok() {
                ack.fetch_max(u64::from_be_bytes(b), Ordering::Relaxed);
            }
        });
        let _reader = AbortOnDrop(reader);
        let mut last_ack = next;
        let mut last_progress = Instant::now();
        let mut buf = Vec::with_capacity(MSG_LEN * 256);
        loop {
            // Take what the application produced; wait briefly when there is nothing to send.
            if next >= self.produced && self.open {
                match tokio::time::timeout(Duration::from_millis(20), self.seqs.recv()).await {
                    Ok(Some(s)) => self.produced = self.produced.max(s + 1),
                    Ok(None) => self.open = false,
                    Err(_) => {}
                }
            }
            while let Ok(s) = self.seqs.try_recv() {
                self.produced = self.produced.max(s + 1);
            }
            if next < self.produced {
                buf.clear();
                let end = self.produced.min(next + 256);
                for seq in next..end {
                    buf.extend_from_slice(&encode(seq));
                }
                match tokio::time::timeout(ACK_TIMEOUT, wr.write_all(&buf)).await {
                    Ok(Ok(())) => next = end,
                    Ok(Err(e)) => bail!("write failed: {e}"),
                    Err(_) => bail!("a write blocked for {ACK_TIMEOUT:?}"),
                }
            }
            let a = acked.load(Ordering::Relaxed);
            if a > last_ack {
                last_ack = a;
                last_progress = Instant::now();
            } else if next > a && last_progress.elapsed() > ACK_TIMEOUT {
                bail!("acknowledgements stalled at {a} with {next} sent");
            }
            if _reader.0.is_finished() {
                bail!("the connection ended");
            }
            if !self.open && a >= self.produced {
                // Everything acknowledged: idle until the harness stops the run.
                std::future::pending::<()>().await;
            }
            if !self.open && next >= self.produced {
                // Only acknowledgements are outstanding: look again shortly.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Aborts the task when dropped (a connection's acknowledgement reader ends with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn client(ctx: ClientCtx) -> Result<()> {
    let target = SocketAddr::new(ctx.service, PORT);
    let session: u64 = rand::random();
    let rec = ctx.recorder.clone();
    let mut sender = ctx.seqs.map(Sender::new);
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
        if sender.is_none() {
            rec.reset_partial();
        }
        let mut hello = [0u8; 20];
        hello[..4].copy_from_slice(HELLO);
        hello[4..12].copy_from_slice(&session.to_be_bytes());
        hello[12..].copy_from_slice(&rec.delivered().to_be_bytes());
        let mut resume = [0u8; 8];
        let greeted = tokio::time::timeout(CONNECT_TIMEOUT, async {
            stream.write_all(&hello).await?;
            stream.read_exact(&mut resume).await
        })
        .await;
        if !matches!(greeted, Ok(Ok(_))) {
            continue;
        }
        let next = u64::from_be_bytes(resume);
        tracing::debug!(resume_from = next, attempts, "session resumed");
        let ended = match &mut sender {
            Some(sender) => sender.send(stream, next).await,
            None => receive(stream, &rec, Some(ACK_TIMEOUT)).await,
        };
        tracing::debug!(?ended, "connection ended; reconnecting");
    }
    Err(anyhow::anyhow!(
        "gave up after {attempts} connection attempts"
    ))
    .context("tcp resume")
}
