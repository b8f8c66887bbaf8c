//! `baseline-kernel-mptcp`: plain MPTCP sockets and the kernel's in-kernel path manager with a
//! backup endpoint on every link but the first; no agent reacts to anything.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use super::{ClientCtx, ServerCtx, System, Task, Transport, drain, read_messages, send_then_hold};
use crate::topology::Topology;

/// TCP port of the MPTCP server on the service address.
pub const PORT: u16 = 5201;

/// The kernel MPTCP baseline.
#[derive(Debug)]
pub struct BaselineKernelMptcp;

impl System for BaselineKernelMptcp {
    fn name(&self) -> &'static str {
        "baseline-kernel-mptcp"
    }

    fn transport(&self) -> Transport {
        Transport::Mptcp
    }

    /// `ip mptcp endpoint add ADDR dev DEV subflow backup` for both addresses of every link
    /// after the first.
    fn prepare(&self, topo: &Topology) -> Result<()> {
        for l in topo.links().iter().skip(1) {
            for addr in [l.handset_v4.to_string(), l.handset_v6.to_string()] {
                topo.handset().ip(&[
                    "mptcp", "endpoint", "add", &addr, "dev", &l.name, "subflow", "backup",
                ])?;
            }
        }
        Ok(())
    }

    fn server(&self, ctx: ServerCtx) -> Task {
        Box::pin(async move {
            let listener = listen_mptcp(SocketAddr::new(ctx.service, PORT))?;
            let _ = ctx.ready.send(());
            let (stream, peer) = listener.accept().await?;
            ctx.recorder.note_peer(Instant::now(), peer);
            exchange(stream, ctx.seqs, &ctx.recorder).await
        })
    }

    fn client(&self, ctx: ClientCtx) -> Task {
        Box::pin(async move {
            let stream = connect_mptcp(SocketAddr::new(ctx.service, PORT)).await?;
            exchange(stream, ctx.seqs, &ctx.recorder).await
        })
    }
}

/// One side of the plain stream: sends the messages of `seqs` (and drops what the other side
/// says), or records what arrives. Ends when the harness stops the run.
async fn exchange(
    mut stream: tokio::net::TcpStream,
    seqs: Option<tokio::sync::mpsc::UnboundedReceiver<u64>>,
    recorder: &crate::traffic::Recorder,
) -> Result<()> {
    match seqs {
        Some(mut seqs) => {
            let (mut rd, mut wr) = stream.split();
            tokio::try_join!(drain(&mut rd), send_then_hold(&mut wr, &mut seqs))?;
            Ok(())
        }
        None => {
            read_messages(&mut stream, recorder).await?;
            // The sender ends only with the run; keep the connection until then.
            std::future::pending::<()>().await;
            Ok(())
        }
    }
}

/// A listening MPTCP socket (`IPPROTO_MPTCP`) on `addr`, for a tokio runtime.
pub fn listen_mptcp(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(Protocol::MPTCP),
    )
    .context("opening an MPTCP socket (is net.mptcp.enabled set?)")?;
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    sock.listen(8)?;
    sock.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(sock.into())?)
}

/// Connects an MPTCP socket (`IPPROTO_MPTCP`) to `addr` without blocking the runtime.
pub async fn connect_mptcp(addr: SocketAddr) -> Result<tokio::net::TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM,
        Some(Protocol::MPTCP),
    )
    .context("opening an MPTCP socket (is net.mptcp.enabled set?)")?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e).with_context(|| format!("connecting to {addr}")),
    }
    let stream = tokio::net::TcpStream::from_std(std::net::TcpStream::from(sock))?;
    stream.writable().await?;
    if let Some(e) = stream.take_error()? {
        return Err(e).with_context(|| format!("connecting to {addr}"));
    }
    Ok(stream)
}
