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
pub mod stock;
pub mod tcp_resume;

/// `Display` and `FromStr` for a flag's enum through its `ALL` and `as_str`: `$what` names it
/// in the error, `$expected` lists the words the flag takes.
macro_rules! words {
    ($t:ty, $what:literal, $expected:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t>::ALL
                    .into_iter()
                    .find(|w| w.as_str() == s)
                    .ok_or_else(|| {
                        format!(concat!("unknown ", $what, " `{}`; expected ", $expected), s)
                    })
            }
        }
    };
}

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

words!(Transport, "transport", "quic, mptcp or tcp-resume");

/// Which way the measured messages flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// The handset sends, the server receives (an upload).
    #[default]
    Up,
    /// The server streams to the handset (a download, what a phone mostly does): the gap is
    /// measured where the handset's app reads.
    Down,
}

impl Direction {
    /// Both directions, in table order.
    pub const ALL: [Direction; 2] = [Direction::Up, Direction::Down];

    /// The word in the benchmark's JSON and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

words!(Direction, "direction", "up, down or both");

/// What serves a roam session in the server namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Peer {
    /// roam's own `roam::Listener`.
    #[default]
    Roam,
    /// A server nobody on the project wrote ([`stock`]): aioquic for QUIC, socat under
    /// `mptcpize` for MPTCP. tcp-resume has none (it needs a peer that speaks roam/1).
    Stock,
}

impl Peer {
    /// Both peers, in table order.
    pub const ALL: [Peer; 2] = [Peer::Roam, Peer::Stock];

    /// The word in the benchmark's JSON and flags.
    pub fn as_str(self) -> &'static str {
        match self {
            Peer::Roam => "roam",
            Peer::Stock => "stock",
        }
    }
}

words!(Peer, "peer", "roam, stock or all");

/// What the harness gives a system's server.
pub struct ServerCtx {
    /// Where delivered bytes go (when the server receives), and the peer addresses it saw.
    pub recorder: Arc<Recorder>,
    /// With [`Direction::Down`], the numbers of the messages the server sends, as the
    /// application produces them; `None` when the server receives.
    pub seqs: Option<UnboundedReceiver<u64>>,
    /// Send once listening; the client starts only then.
    pub ready: std::sync::mpsc::SyncSender<()>,
    /// How long the run waits for a stalled session before calling it dead.
    pub timeout: Duration,
    /// The service address to listen on ([`crate::topology::SERVICE_V4`] or `_V6`).
    pub service: IpAddr,
}

/// What the harness gives a system's client.
pub struct ClientCtx {
    /// With [`Direction::Up`], the numbers of the messages the client sends, as the
    /// application produces them; `None` when the client receives (into `recorder`).
    pub seqs: Option<UnboundedReceiver<u64>>,
    /// Where delivered bytes go when the client receives.
    pub recorder: Arc<Recorder>,
    /// How long the run waits for a stalled session before calling it dead.
    pub timeout: Duration,
    /// The service address to reach.
    pub service: IpAddr,
}

/// One measured system: a client/server pair and the kernel setup it needs. Either side sends
/// the messages and the other receives them, as the contexts say.
pub trait System: Send + Sync {
    /// The benchmark's `system` field (`baseline-quinn`, ...).
    fn name(&self) -> &'static str;
    /// The benchmark's `peer` field: what serves the session. Baselines run their own plain
    /// servers (`baseline`).
    fn peer(&self) -> &'static str {
        "baseline"
    }
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

/// What a receiving client writes first: a request, as an app asks before it downloads. A
/// stock QUIC server learns of the client's stream only from its data, so the download could
/// not start without it; servers that send ignore what they read.
pub const REQUEST: &[u8] = b"GET /stream\n";

/// Writes every message whose number arrives on `seqs` to `w`, flushing each batch, then keeps
/// the stream open until the harness stops the run (the receiver reads to the end of the run).
pub(crate) async fn send_then_hold<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    seqs: &mut UnboundedReceiver<u64>,
) -> Result<()> {
    write_messages(w, seqs).await?;
    w.flush().await?;
    std::future::pending::<()>().await;
    Ok(())
}

/// Reads and drops what `r` carries until it ends (a sender's side of a receiving peer's
/// request).
pub(crate) async fn drain<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<()> {
    tokio::io::copy(r, &mut tokio::io::sink()).await?;
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
