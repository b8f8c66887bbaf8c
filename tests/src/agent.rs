//! roamd, the agent, run as a process inside a handset namespace, and its decisions as they
//! are pushed, for the demo's timeline and the benchmark's MPTCP rows.
//!
//! `cargo run -p roam-tests` builds no `roamd`, so the agent runs from this crate's own
//! binaries: they call [`agent_main`] first, and `EXE __agent --policy P --socket S --config C`
//! runs `roam_agent::daemon::run`, the same shell `roamd` runs, in whatever namespace the
//! process was started in (`ip netns exec NS EXE __agent ...`). A process of its own keeps the
//! agent's signal handling and namespace separate from the harness.
//!
//! The agent enforces: it adds and re-prioritises the handset's MPTCP endpoints from its
//! decisions. Its policy routing is off, because the topology owns the handset's routes.
//! Decisions are read over roamd's socket with `roam_agent::ipc::client`, as `roamctl watch`
//! reads them.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roam_agent::ipc::client::Client;
use roam_agent::ipc::proto::{Reply, Request};

use crate::netns::Netns;

/// The first argument that makes one of this crate's binaries run as the agent.
pub const AGENT_ARG: &str = "__agent";

/// The agent's config in the handset: MPTCP endpoints enforced, policy routing left to the
/// topology, no probe targets (links are judged by netlink alone).
const AGENT_CONFIG: &str = "[routing]\nenabled = false\n\n[mptcp]\nenabled = true\n";

/// How long the agent may take to print its ready line, and the first decision to arrive.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// One decision roamd pushed.
#[derive(Debug, Clone)]
pub struct AgentUpdate {
    /// When it arrived.
    pub at: Instant,
    /// The primary interface, if any.
    pub primary: Option<String>,
    /// `name=state` of every interface, as the agent sees them.
    pub links: Vec<String>,
}

/// The executable that runs the agent: one of this crate's binaries, started with
/// [`AGENT_ARG`].
#[derive(Debug, Clone)]
pub struct AgentExe {
    program: PathBuf,
}

impl AgentExe {
    /// The running binary itself (it must call [`agent_main`] before anything else).
    pub fn current() -> Result<AgentExe> {
        let program = std::env::current_exe().context("finding this executable")?;
        Ok(AgentExe { program })
    }

    /// Another binary of this crate (tests pass `env!("CARGO_BIN_EXE_handover-bench")`).
    pub fn at(program: impl Into<PathBuf>) -> AgentExe {
        AgentExe {
            program: program.into(),
        }
    }
}

/// When this process was started as the agent (`EXE __agent --policy P --socket S
/// [--config C]`), runs it until SIGTERM or SIGINT and returns the exit code; otherwise
/// `None`, and the binary goes on with its own work.
pub fn agent_main() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some(AGENT_ARG) {
        return None;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    Some(match run_agent(args.collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roamd (embedded): {e:#}");
            ExitCode::FAILURE
        }
    })
}

fn run_agent(args: Vec<String>) -> Result<()> {
    let mut policy = None;
    let mut socket = None;
    let mut config = None;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--policy" => policy = Some(PathBuf::from(value)),
            "--socket" => socket = Some(PathBuf::from(value)),
            "--config" => config = Some(PathBuf::from(value)),
            other => bail!("unknown agent flag {other}"),
        }
    }
    let socket = socket.context("--socket is required")?;
    let config = match &config {
        Some(p) => roam_agent::config::Config::load(p).map_err(|e| anyhow::anyhow!(e.render()))?,
        None => roam_agent::config::Config::default(),
    };
    let opts = roam_agent::daemon::Options {
        config,
        policy_path: policy,
        socket: socket.clone(),
        dry_run: false,
        sysfs_root: PathBuf::from("/sys/class/net"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(roam_agent::daemon::run(opts, |core| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "roamd: ready: listening on {} ({} interfaces)",
            socket.display(),
            core.link_indices().len()
        );
        let _ = out.flush();
    }))
}

/// A running agent in a handset and a subscription to its decisions for one app; the agent
/// is stopped on drop.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    updates: Arc<Mutex<Vec<AgentUpdate>>>,
}

impl Agent {
    /// Starts the agent in `ns` with `policy`, waits for its ready line, subscribes to the
    /// decisions for `app` and waits for the first one (at most 5 s each).
    pub fn start(ns: &Netns, exe: &AgentExe, policy: &str, app: &str) -> Result<Agent> {
        let agent = Agent::start_unsubscribed(ns, exe, policy)?;
        agent.subscribe(app)?;
        Ok(agent)
    }

    /// Starts the agent in `ns` with `policy` and waits for its ready line (at most 5 s), with
    /// no subscription: the agent as it idles when no app listens. [`Agent::updates`] stays
    /// empty.
    pub fn start_unsubscribed(ns: &Netns, exe: &AgentExe, policy: &str) -> Result<Agent> {
        let dir =
            std::env::temp_dir().join(format!("roam-agent-{}-{}", std::process::id(), ns.name()));
        std::fs::create_dir_all(&dir)?;
        let policy_path = dir.join("policy.roam");
        std::fs::write(&policy_path, policy)?;
        let config_path = dir.join("roamd.toml");
        std::fs::write(&config_path, AGENT_CONFIG)?;
        let socket = dir.join("roamd.sock");
        let log = std::fs::File::create(dir.join("roamd.log"))?;
        let child = ns
            .command(&exe.program.to_string_lossy())
            .arg(AGENT_ARG)
            .arg("--policy")
            .arg(&policy_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the agent ({})", exe.program.display()))?;
        // From here on, drop stops the child and removes the directory.
        let mut agent = Agent {
            child,
            dir,
            socket,
            updates: Arc::new(Mutex::new(Vec::new())),
        };
        agent.wait_ready()?;
        Ok(agent)
    }

    /// The agent's process id, for reading `/proc/PID`. `ip netns exec` enters the namespace
    /// and then execs the agent, so the process it started is the agent itself.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let stdout = self
            .child
            .stdout
            .take()
            .context("the agent has no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("roamd: ready:") {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(START_TIMEOUT).is_ok() {
            return Ok(());
        }
        let mut log = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("roamd.log")) {
            let _ = f.read_to_string(&mut log);
        }
        bail!(
            "the agent printed no ready line within {START_TIMEOUT:?}; its log:\n{}",
            log.trim()
        )
    }

    /// Subscribes to `app`'s decisions on a thread of its own, which ends when the agent does.
    fn subscribe(&self, app: &str) -> Result<()> {
        let mut client =
            Client::connect(&self.socket, Some(START_TIMEOUT)).context("connecting to roamd")?;
        let app = app.to_owned();
        client
            .call(|id| Request::Subscribe {
                id,
                app: Some(app),
                flow: None,
            })
            .context("subscribing to roamd's decisions")?;
        client.set_timeout(None)?;
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let updates = self.updates.clone();
        std::thread::spawn(move || {
            while let Ok(reply) = client.next_event() {
                if let Reply::Update(u) = reply {
                    let update = AgentUpdate {
                        at: Instant::now(),
                        primary: u.decision.primary().map(|p| p.interface.clone()),
                        links: u
                            .interfaces
                            .iter()
                            .map(|i| format!("{}={}", i.name, i.state))
                            .collect(),
                    };
                    updates
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(update);
                    let _ = first_tx.send(());
                }
            }
        });
        first_rx
            .recv_timeout(START_TIMEOUT)
            .context("roamd pushed no decision within 5 s")
    }

    /// Every decision pushed so far.
    pub fn updates(&self) -> Vec<AgentUpdate> {
        self.updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The socket the agent listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The namespace goes with the topology; nothing the agent set up needs undoing.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
