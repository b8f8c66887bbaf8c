//! The systems a handover is measured on: each is a client in the handset and a server in the
//! server namespace moving the same numbered messages.
//!
//! The baselines are what people would otherwise use; [`roam::Roam`] is the roam SDK, measured
//! in the same run, against the same scenarios.

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::topology::Topology;
use crate::traffic::{MSG_LEN, Recorder, encode};

pub mod mptcp;
pub mod quic;
pub mod roam;
pub mod tcp_resume;

/// A future a system runs inside a namespace.
pub type Task = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Transport families of the benchmark's `transport` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// QUIC (quinn).
    Quic,
    /// Multipath TCP.
    Mptcp,
    /// TCP with application-level resume.
    TcpResume,
}

impl Transport {
    /// Every transport, in table order.
    pub const ALL: [Transport; 3] = [Transport::Quic, Transport::Mptcp, Transport::TcpResume];

    /// The word in the benchmark's JSON and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Quic => "quic",
            Transport::Mptcp => "mptcp",
            Transport::TcpResume => "tcp-resume",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown transport `{s}`; expected quic, mptcp or tcp-resume"))
    }
}

/// What the harness gives a system's server.
pub struct ServerCtx {
    /// Where delivered bytes go.
    pub recorder: Arc<Recorder>,
    /// Send once listening; the client starts only then.
    pub ready: std::sync::mpsc::SyncSender<()>,
    /// How long the run waits for a stalled session before calling it dead.
    pub timeout: Duration,
    /// The service address to listen on ([`crate::topology::SERVICE_V4`] or `_V6`).
    pub service: IpAddr,
}

/// What the harness gives a system's client.
pub struct ClientCtx {
    /// Sequence numbers of the messages to send, as the application produces them.
    pub seqs: UnboundedReceiver<u64>,
    /// How long the run waits for a stalled session before calling it dead.
    pub timeout: Duration,
    /// The service address to reach.
    pub service: IpAddr,
}

/// One measured system: a client/server pair and the kernel setup it needs.
pub trait System: Send + Sync {
    /// The benchmark's `system` field (`baseline-quinn`, ...).
    fn name(&self) -> &'static str;
    /// The benchmark's `transport` field.
    fn transport(&self) -> Transport;
    /// Configures the kernel in the topology's namespaces before the session starts.
    fn prepare(&self, _topo: &Topology) -> Result<()> {
        Ok(())
    }
    /// Undoes what [`System::prepare`] started once the run is over (before the topology
    /// goes).
    fn finish(&self) {}
    /// The server; the harness runs it on a runtime inside the server namespace.
    fn server(&self, ctx: ServerCtx) -> Task;
    /// The client; the harness runs it on a runtime inside the handset namespace. Returning an
    /// error means the session died.
    fn client(&self, ctx: ClientCtx) -> Task;
}

/// The baseline measured for `transport`.
pub fn baseline(transport: Transport) -> Result<Arc<dyn System>> {
    Ok(match transport {
        Transport::Quic => Arc::new(quic::BaselineQuinn::new()?),
        Transport::Mptcp => Arc::new(mptcp::BaselineKernelMptcp),
        Transport::TcpResume => Arc::new(tcp_resume::BaselineTcpReconnect),
    })
}

/// Writes every message whose number arrives on `seqs` to `w`, batching what is already due.
pub(crate) async fn write_messages<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    seqs: &mut UnboundedReceiver<u64>,
) -> Result<()> {
    let mut buf = Vec::with_capacity(MSG_LEN * 256);
    while let Some(seq) = seqs.recv().await {
        buf.clear();
        buf.extend_from_slice(&encode(seq));
        while buf.len() < MSG_LEN * 256 {
            match seqs.try_recv() {
                Ok(s) => buf.extend_from_slice(&encode(s)),
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
    }
    Ok(())
}

/// Reads `r` to its end into the recorder, timestamping each read.
pub(crate) async fn read_messages<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    recorder: &Recorder,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        recorder.feed(std::time::Instant::now(), &buf[..n]);
    }
}
