//! `roam`: the SDK measured like the baselines: a `roam::Session` in the handset (QUIC, MPTCP
//! or tcp-resume, asked for by name), a `roam::Listener` in the server namespace.
//!
//! Where roamd runs in the handset (see [`crate::agent`]) the session subscribes to it on the
//! agent's socket and follows its pushed decisions, as an app on a phone with roamd does;
//! without an agent it decides with its embedded monitor and the policy [`POLICY`] (WiFi over
//! cellular), and never looks for a roamd outside the test. For MPTCP the agent always runs,
//! because subflows on the backup link exist only when something sets the kernel's endpoints,
//! and roamd is what re-prioritises them when a link fails; without it the row would measure
//! the kernel's path manager again. The benchmark's MPTCP agent also probes both links against a
//! reflector in the server namespace ([`Roam::with_probes`]) at the shipped pacing: a session's
//! stall report (the MPTCP watcher's, per subflow) is confirmed by a burst of probes, so a
//! silent blackhole is found by the session's own traffic and the burst's misses, not by the
//! kernel's retransmission timer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use roam::{SessionEvent, TransportPreference};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stock::{self, StockFiles};
use super::{
    ClientCtx, Peer, REQUEST, ServerCtx, System, Task, Transport, drain, read_messages,
    send_then_hold, write_messages,
};
use crate::agent::{Agent, AgentConfig, AgentExe, AgentUpdate, REFLECT_PORT, Reflector};
use crate::tls::{ALPN, SERVER_NAME, TestPki};
use crate::topology::{SERVICE_V4, Topology};

/// Port of the roam listener (UDP for QUIC, TCP for the others) on the service address.
pub const PORT: u16 = 4443;
/// The app id the sessions present.
pub const APP: &str = "com.example.bench";
/// The handset's policy: WiFi preferred over cellular.
pub const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                          default {\n  prefer wifi over cell\n}\n";

/// [`POLICY`] with `multipath MODE` in its default block (`off`, `handover`, `interactive`,
/// `aggregate`): e.g. `interactive` keeps a backup path warm, where tcp-resume keeps a standby
/// connection.
pub fn policy_with_multipath(mode: &str) -> String {
    POLICY.replace(
        "  prefer wifi over cell\n",
        &format!("  prefer wifi over cell\n  multipath {mode}\n"),
    )
}

/// A roam session and listener over one transport.
#[derive(Debug)]
pub struct Roam {
    transport: Transport,
    pki: Arc<TestPki>,
    policy: String,
    app: String,
    agent_exe: Option<AgentExe>,
    probes: bool,
    peer: Peer,
    stock: Option<StockFiles>,
    agent: Mutex<Option<Agent>>,
    reflector: Mutex<Option<Reflector>>,
    events: Arc<Mutex<Vec<(Instant, SessionEvent)>>>,
}

impl Roam {
    /// roam over `transport` with [`POLICY`], no agent.
    pub fn new(transport: Transport) -> Result<Roam> {
        Ok(Roam {
            transport,
            pki: Arc::new(TestPki::generate()?),
            policy: POLICY.to_owned(),
            app: APP.to_owned(),
            agent_exe: None,
            probes: false,
            peer: Peer::Roam,
            stock: None,
            agent: Mutex::new(None),
            reflector: Mutex::new(None),
            events: Arc::default(),
        })
    }

    /// What the benchmark measures for `transport`: roamd runs in the handset as it ships for
    /// MPTCP and tcp-resume (started from `exe`, probing the links, [`Roam::with_probes`]):
    /// the kernel's endpoints and routes it sets (the backup's failover window) are part of
    /// what those sessions get. QUIC sessions decide alone with the SDK's embedded monitor
    /// (UDP reads no route metric).
    pub fn for_bench(transport: Transport, exe: &AgentExe) -> Result<Roam> {
        let r = Roam::new(transport)?;
        Ok(match transport {
            Transport::Mptcp | Transport::TcpResume => r.with_agent(exe.clone()).with_probes(),
            Transport::Quic => r,
        })
    }

    /// Runs roamd in the handset during each run (started by [`System::prepare`], stopped by
    /// [`System::finish`]).
    pub fn with_agent(mut self, exe: AgentExe) -> Roam {
        self.agent_exe = Some(exe);
        self
    }

    /// With an agent ([`Roam::with_agent`]): a reflector (`roamd reflect`) runs on the service
    /// address, port [`REFLECT_PORT`], in the server namespace, and the agent probes every link
    /// against it at the shipped pacing ([`AgentConfig::shipped`]: no faster probing in the
    /// benchmark than what ships; a burst of 3 probes 10 ms apart on suspicion, each given
    /// its RTT and margin, 50 to 100 ms).
    pub fn with_probes(mut self) -> Roam {
        self.probes = true;
        self
    }

    /// What serves the session: roam's Listener (the default) or the transport's stock
    /// server ([`super::stock`]); the session then offers the stock server's ALPN too. An
    /// error for a transport without a stock peer (tcp-resume).
    pub fn with_peer(mut self, peer: Peer) -> Result<Roam> {
        if peer == Peer::Stock {
            if let Some(why) = stock::missing(self.transport) {
                bail!("{why}");
            }
            self.stock = Some(StockFiles::write(&self.pki)?);
        }
        self.peer = peer;
        Ok(self)
    }

    /// Another policy text (the agent runs the same one) and app id.
    pub fn with_policy(mut self, policy: &str, app: &str) -> Roam {
        self.policy = policy.to_owned();
        self.app = app.to_owned();
        self
    }

    /// Whether roamd runs in the handset.
    pub fn has_agent(&self) -> bool {
        self.agent_exe.is_some()
    }

    /// The session's events of the current run, with the time the client saw each.
    pub fn events(&self) -> Vec<(Instant, SessionEvent)> {
        lock(&self.events).clone()
    }

    /// The decisions roamd pushed for the app during the current run.
    pub fn agent_updates(&self) -> Vec<AgentUpdate> {
        lock(&self.agent)
            .as_ref()
            .map(Agent::updates)
            .unwrap_or_default()
    }

    /// The socket of the roamd running for the current run, which the session follows.
    pub fn agent_socket(&self) -> Option<std::path::PathBuf> {
        lock(&self.agent).as_ref().map(|a| a.socket().to_path_buf())
    }

    fn preference(&self) -> TransportPreference {
        match self.transport {
            Transport::Quic => TransportPreference::Quic,
            Transport::Mptcp => TransportPreference::Mptcp,
            Transport::TcpResume => TransportPreference::TcpResume,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl System for Roam {
    fn name(&self) -> &'static str {
        "roam"
    }

    fn peer(&self) -> &'static str {
        self.peer.as_str()
    }

    fn transport(&self) -> Transport {
        self.transport
    }

    fn prepare(&self, topo: &Topology) -> Result<()> {
        lock(&self.events).clear();
        let mut agent = lock(&self.agent);
        let mut reflector = lock(&self.reflector);
        // The previous run's agent and reflector go before this one's start.
        *agent = None;
        *reflector = None;
        if let Some(exe) = &self.agent_exe {
            let config = if self.probes {
                let r = Reflector::start(
                    topo.server(),
                    exe,
                    SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT),
                )
                .context("starting the probe reflector in the server namespace")?;
                // As roamd ships, policy routing included: its routes carry the backup's
                // failover window (`roam_agent::core::BACKUP_INITCWND`).
                let config = AgentConfig::shipped(&[r.addr()]);
                *reflector = Some(r);
                config
            } else {
                AgentConfig::netlink_only()
            };
            *agent = Some(
                Agent::start_with(topo.handset(), exe, &self.policy, &self.app, &config)
                    .context("starting roamd in the handset")?,
            );
        }
        Ok(())
    }

    fn finish(&self) {
        *lock(&self.agent) = None;
        *lock(&self.reflector) = None;
    }

    fn server(&self, ctx: ServerCtx) -> Task {
        if let Some(files) = &self.stock {
            return stock::server(self.transport, files, PORT, ctx);
        }
        let pki = self.pki.clone();
        Box::pin(async move {
            let listener =
                roam::Listener::bind(SocketAddr::new(ctx.service, PORT), pki.roam_server()?)
                    .context("binding the roam listener")?;
            let _ = ctx.ready.send(());
            let mut s = listener.accept().await.context("accepting the session")?;
            let mut peer = s.path().remote;
            ctx.recorder.note_peer(Instant::now(), peer);
            if let Some(mut seqs) = ctx.seqs {
                let (mut rd, mut wr) = tokio::io::split(s);
                tokio::try_join!(drain(&mut rd), send_then_hold(&mut wr, &mut seqs))?;
                return Ok(());
            }
            let mut buf = vec![0u8; 64 * 1024];
            // Ends with the stream; the harness stops it otherwise.
            loop {
                let n = s.read(&mut buf).await.context("server read")?;
                if n == 0 {
                    return Ok(());
                }
                let now = Instant::now();
                ctx.recorder.feed(now, &buf[..n]);
                // The server's view of the peer: a move shows up as a new address.
                let p = s.path().remote;
                if p != peer {
                    peer = p;
                    ctx.recorder.note_peer(now, peer);
                }
            }
        })
    }

    fn client(&self, ctx: ClientCtx) -> Task {
        let mut builder = roam::Session::builder()
            .app(self.app.clone())
            .policy(self.policy.clone())
            .transport(self.preference())
            .tls(self.pki.roam_client())
            .server_name(SERVER_NAME)
            .connect_timeout(ctx.timeout)
            .idle_timeout(ctx.timeout);
        if self.stock.is_some() {
            // A stock server speaks no roam/1; it agrees on the benchmark's own protocol.
            builder = builder.alpn(ALPN);
        }
        // Follow this run's agent, never one that happens to run on the machine.
        builder = match lock(&self.agent).as_ref() {
            Some(agent) => builder.roamd_socket(agent.socket()),
            None => builder.use_roamd(false),
        };
        let log = self.events.clone();
        Box::pin(async move {
            let target = SocketAddr::new(ctx.service, PORT).to_string();
            let mut s = builder.connect(&target).await.context("connecting")?;
            let mut events = s.events();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    lock(&log).push((Instant::now(), e));
                }
            });
            let Some(mut seqs) = ctx.seqs else {
                // Download: ask, then read what the server streams.
                s.write_all(REQUEST).await?;
                s.flush().await?;
                read_messages(&mut s, &ctx.recorder)
                    .await
                    .context("the session failed")?;
                bail!("the server ended the session");
            };
            write_messages(&mut s, &mut seqs).await?;
            s.flush().await?;
            // Stay connected until the harness has seen everything arrive; the server never
            // writes, so a read ends only with the session.
            let mut sink = Vec::new();
            match s.read_to_end(&mut sink).await {
                Ok(_) => bail!("the server ended the session"),
                Err(e) => Err(anyhow!(e).context("the session failed")),
            }
        })
    }
}
