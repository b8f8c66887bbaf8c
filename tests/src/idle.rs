//! One idle session in a namespace handset, for `energy-bench --sessions`: what holding a
//! session that carries nothing costs the handset's CPU. The session runs on a thread of its
//! own with a current-thread tokio runtime (the SDK starts no threads of its own), so every
//! timer, sample and keep-alive of the session wakes that one thread, and the thread's
//! voluntary context switches (`/proc/self/task/TID/status`) count its wake-ups. The packets
//! it costs the radios are counted by the caller on the handset's interfaces.
//!
//! Systems: a plain TCP connection (what an unmodified app holds; the baseline) and a roam
//! session over each transport, to a roam Listener, deciding with its embedded monitor (no
//! roamd: roamd's own cost is the rest of `energy-bench`).

use std::net::SocketAddr;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use roam::TransportPreference;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::system::roam::{APP, POLICY, PORT};
use crate::tls::{SERVER_NAME, TestPki};
use crate::topology::{SERVICE_V4, Topology};

/// What holds the idle connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleSystem {
    /// A plain TCP connection, nothing on top: no keep-alive, no path judgement.
    PlainTcp,
    /// A roam session over this transport, the SDK's defaults.
    Roam(TransportPreference),
}

impl IdleSystem {
    /// The name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            IdleSystem::PlainTcp => "baseline-tcp",
            IdleSystem::Roam(TransportPreference::Quic) => "roam-quic",
            IdleSystem::Roam(TransportPreference::Mptcp) => "roam-mptcp",
            IdleSystem::Roam(TransportPreference::TcpResume) => "roam-tcp-resume",
            IdleSystem::Roam(_) => "roam",
        }
    }
}

/// How long the server and the client may take to set the connection up.
const SETUP: Duration = Duration::from_secs(10);

/// An established idle connection; [`IdleSession::stop`] ends it.
pub struct IdleSession {
    tid: i32,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    client: Option<JoinHandle<Result<()>>>,
    server: Option<JoinHandle<Result<()>>>,
}

impl IdleSession {
    /// Starts a server for `system` on the service address and connects to it from the
    /// handset over whatever link the handset's routes (plain TCP) or the policy (roam)
    /// choose; returns once the connection is established.
    pub fn start(topo: &Topology, system: IdleSystem) -> Result<IdleSession> {
        let pki = std::sync::Arc::new(TestPki::generate()?);
        let addr = SocketAddr::new(SERVICE_V4.into(), PORT);
        let (ready_tx, ready_rx) = mpsc::channel();
        let server = {
            let pki = pki.clone();
            topo.server()
                .spawn_async("idle-server", move || serve(system, addr, pki, ready_tx))?
        };
        ready_rx
            .recv_timeout(SETUP)
            .map_err(|_| anyhow!("the {} server did not start", system.name()))?;
        let (up_tx, up_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let client = topo.handset().spawn_async("idle-session", move || {
            hold(system, addr, pki, up_tx, stop_rx)
        })?;
        let tid = match up_rx.recv_timeout(SETUP) {
            Ok(tid) => tid,
            Err(_) => {
                let why = match client.join() {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => "no answer".to_owned(),
                };
                bail!("the {} session did not connect: {why}", system.name());
            }
        };
        Ok(IdleSession {
            tid,
            stop: Some(stop_tx),
            client: Some(client),
            server: Some(server),
        })
    }

    /// The session thread's wake-ups so far (voluntary context switches: each is the thread
    /// blocking in the runtime's poll and being woken again).
    pub fn wakeups(&self) -> Result<u64> {
        let path = format!("/proc/self/task/{}/status", self.tid);
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no voluntary_ctxt_switches in {path}"))
    }

    /// Ends the connection; an error if it failed while idle.
    pub fn stop(mut self) -> Result<()> {
        self.finish()
    }

    fn finish(&mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let client = match self.client.take() {
            Some(c) => c
                .join()
                .map_err(|_| anyhow!("the session thread panicked"))?,
            None => Ok(()),
        };
        let server = match self.server.take() {
            Some(s) => s
                .join()
                .map_err(|_| anyhow!("the server thread panicked"))?,
            None => Ok(()),
        };
        client.context("the idle session")?;
        server.context("the idle session's server")
    }
}

impl Drop for IdleSession {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Accepts one connection and reads until it ends.
async fn serve(
    system: IdleSystem,
    addr: SocketAddr,
    pki: std::sync::Arc<TestPki>,
    ready: mpsc::Sender<()>,
) -> Result<()> {
    let mut buf = [0u8; 4096];
    match system {
        IdleSystem::PlainTcp => {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let _ = ready.send(());
            let (mut s, _) = tokio::time::timeout(SETUP, l.accept())
                .await
                .context("no connection came")??;
            while s.read(&mut buf).await? > 0 {}
        }
        IdleSystem::Roam(_) => {
            let l = roam::Listener::bind(addr, pki.roam_server()?)?;
            let _ = ready.send(());
            let mut s = tokio::time::timeout(SETUP, l.accept())
                .await
                .context("no session came")??;
            // The client's close ends the read, with an error when its end went first.
            while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            let _ = s.shutdown().await;
        }
    }
    Ok(())
}

/// The calling thread's id, from `/proc/thread-self` (a link to `PID/task/TID`).
fn thread_id() -> Result<i32> {
    let link = std::fs::read_link("/proc/thread-self").context("reading /proc/thread-self")?;
    link.file_name()
        .and_then(|t| t.to_str())
        .and_then(|t| t.parse().ok())
        .with_context(|| format!("no thread id in /proc/thread-self -> {}", link.display()))
}

/// Connects, says so with the thread's id, and holds the connection until `stop`; an error
/// if the connection ends first.
async fn hold(
    system: IdleSystem,
    addr: SocketAddr,
    pki: std::sync::Arc<TestPki>,
    up: mpsc::Sender<i32>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<()> {
    let tid = thread_id()?;
    let mut buf = [0u8; 4096];
    match system {
        IdleSystem::PlainTcp => {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            let _ = up.send(tid);
            tokio::select! {
                _ = stop => Ok(()),
                r = s.read(&mut buf) => bail!("the connection ended while idle: {r:?}"),
            }
        }
        IdleSystem::Roam(transport) => {
            let mut s = roam::Session::builder()
                .app(APP)
                .policy(POLICY)
                .transport(transport)
                .tls(pki.roam_client())
                .server_name(SERVER_NAME)
                .use_roamd(false)
                .connect(&addr.to_string())
                .await
                .context("connecting")?;
            let _ = up.send(tid);
            tokio::select! {
                _ = stop => {}
                r = s.read(&mut buf) => bail!("the session ended while idle: {r:?}"),
            }
            // Closed both ways, so the listener frees the session at once rather than
            // holding it for its grace period.
            s.shutdown().await?;
            let _ = tokio::time::timeout(SETUP, async {
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            })
            .await;
            Ok(())
        }
    }
}
