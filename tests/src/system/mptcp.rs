//! `baseline-kernel-mptcp`: plain MPTCP sockets and the kernel's in-kernel path manager with a
//! backup endpoint on every link but the first; no agent reacts to anything.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

use super::{ClientCtx, ServerCtx, System, Task, Transport, read_messages, write_messages};
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
            let (mut stream, peer) = listener.accept().await?;
            ctx.recorder.note_peer(Instant::now(), peer);
            read_messages(&mut stream, &ctx.recorder).await
        })
    }

    fn client(&self, mut ctx: ClientCtx) -> Task {
        Box::pin(async move {
            let mut stream = connect_mptcp(SocketAddr::new(ctx.service, PORT)).await?;
            write_messages(&mut stream, &mut ctx.seqs).await?;
            // Keep the connection open until the harness stops the run.
            std::future::pending::<()>().await;
            Ok(())
        })
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
