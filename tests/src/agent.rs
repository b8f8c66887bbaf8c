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
//!
//! With [`AgentConfig::probing`] the agent also probes every link (fast probes where a session
//! is) against a [`Reflector`] (`roamd reflect`, this crate's binary started with
//! [`REFLECT_ARG`]) in the server namespace, so a silent link is judged down by missed probes
//! instead of waiting for the kernel to notice.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roam_agent::ipc::client::Client;
use roam_agent::ipc::proto::{Reply, Request};

use crate::netns::Netns;

/// The first argument that makes one of this crate's binaries run as the agent.
pub const AGENT_ARG: &str = "__agent";

/// The first argument that makes one of this crate's binaries run as the probe reflector
/// (`EXE __reflect --listen ADDR`).
pub const REFLECT_ARG: &str = "__reflect";

/// UDP port of the [`Reflector`] on the service address.
pub const REFLECT_PORT: u16 = 7777;

/// The agent's config in the handset: MPTCP endpoints enforced, policy routing left to the
/// topology, no probe targets (links are judged by netlink alone).
const AGENT_CONFIG: &str = "[routing]\nenabled = false\n\n[mptcp]\nenabled = true\n";

/// How roamd in the handset is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    toml: String,
}

impl AgentConfig {
    /// MPTCP endpoints enforced (the in-kernel path manager), policy routing left to the
    /// topology, no probe targets: links are judged by netlink alone.
    pub fn netlink_only() -> AgentConfig {
        AgentConfig {
            toml: AGENT_CONFIG.to_owned(),
        }
    }

    /// As [`AgentConfig::netlink_only`], and every link probed against `targets` (a
    /// [`Reflector`] each) at roamd's shipped pacing: validated once, then probed on
    /// suspicion (a session's stall report, a decision onto a stale link) with a burst of 3
    /// probes 20 ms apart, each given 100 ms.
    pub fn probing(targets: &[std::net::SocketAddr]) -> AgentConfig {
        AgentConfig::probing_with(targets, "")
    }

    /// As [`AgentConfig::probing`], with these extra `[probe]` keys (e.g. `pacing =
    /// "periodic"`), one `key = value` a line.
    pub fn probing_with(targets: &[std::net::SocketAddr], probe_keys: &str) -> AgentConfig {
        let list = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        AgentConfig {
            toml: format!("{AGENT_CONFIG}\n[probe]\ntargets = [{list}]\n{probe_keys}\n"),
        }
    }

    /// The config file's text.
    pub fn as_toml(&self) -> &str {
        &self.toml
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig::netlink_only()
    }
}

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
/// [--config C]`) or as the reflector (`EXE __reflect --listen ADDR`), runs it until SIGTERM or
/// SIGINT and returns the exit code; otherwise `None`, and the binary goes on with its own
/// work.
pub fn agent_main() -> Option<ExitCode> {
    let mut args = std::env::args().skip(1);
    let run: fn(Vec<String>) -> Result<()> = match args.next().as_deref() {
        Some(AGENT_ARG) => run_agent,
        Some(REFLECT_ARG) => run_reflector,
        _ => return None,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    Some(match run(args.collect()) {
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

/// `roamd reflect --listen ADDR`: answers probes until killed; prints a ready line once bound.
fn run_reflector(args: Vec<String>) -> Result<()> {
    let [flag, addr] = args.as_slice() else {
        bail!("usage: {REFLECT_ARG} --listen ADDR");
    };
    if flag != "--listen" {
        bail!("unknown reflector flag {flag}");
    }
    let listen: std::net::SocketAddr = addr
        .parse()
        .with_context(|| format!("--listen {addr}: not an address:port"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(roam_agent::probe::reflect::run(listen, |a| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "roamd reflect: ready: {a}");
        let _ = out.flush();
    }))
    .with_context(|| format!("reflecting on {listen}"))
}

/// Waits until the child's stdout shows a line starting with `ready` (at most
/// [`START_TIMEOUT`]); the error carries the log at `log`.
fn wait_ready_line(child: &mut Child, ready: &'static str, what: &str, log: &Path) -> Result<()> {
    let stdout = child
        .stdout
        .take()
        .with_context(|| format!("the {what} has no stdout"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(ready) {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(START_TIMEOUT).is_ok() {
        return Ok(());
    }
    let mut text = String::new();
    if let Ok(mut f) = std::fs::File::open(log) {
        let _ = f.read_to_string(&mut text);
    }
    bail!(
        "the {what} printed no ready line within {START_TIMEOUT:?}; its log:\n{}",
        text.trim()
    )
}

/// `roamd reflect` running in a namespace (the server's), the target of the agent's probes;
/// stopped on drop.
#[derive(Debug)]
pub struct Reflector {
    child: Child,
    dir: PathBuf,
    addr: std::net::SocketAddr,
}

impl Reflector {
    /// Starts the reflector in `ns` on `listen` and waits until it is bound (at most 5 s).
    pub fn start(ns: &Netns, exe: &AgentExe, listen: std::net::SocketAddr) -> Result<Reflector> {
        let dir = std::env::temp_dir().join(format!(
            "roam-reflect-{}-{}-{}",
            std::process::id(),
            ns.name(),
            listen.port()
        ));
        std::fs::create_dir_all(&dir)?;
        let log_path = dir.join("reflect.log");
        let log = std::fs::File::create(&log_path)?;
        let child = ns
            .command(&exe.program.to_string_lossy())
            .arg(REFLECT_ARG)
            .arg("--listen")
            .arg(listen.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the reflector ({})", exe.program.display()))?;
        let mut r = Reflector {
            child,
            dir,
            addr: listen,
        };
        wait_ready_line(
            &mut r.child,
            "roamd reflect: ready:",
            "reflector",
            &log_path,
        )?;
        Ok(r)
    }

    /// The address it answers on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running agent in a handset and a subscription to its decisions for one app; the agent
/// is stopped on drop.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    updates: Arc<(Mutex<Vec<AgentUpdate>>, Condvar)>,
}

impl Agent {
    /// Starts the agent in `ns` with `policy`, waits for its ready line, subscribes to the
    /// decisions for `app` and waits for the first one (at most 5 s each).
    pub fn start(ns: &Netns, exe: &AgentExe, policy: &str, app: &str) -> Result<Agent> {
        Agent::start_with(ns, exe, policy, app, &AgentConfig::netlink_only())
    }

    /// As [`Agent::start`], with `config` instead of [`AgentConfig::netlink_only`].
    pub fn start_with(
        ns: &Netns,
        exe: &AgentExe,
        policy: &str,
        app: &str,
        config: &AgentConfig,
    ) -> Result<Agent> {
        let agent = Agent::launch(ns, exe, policy, config)?;
        agent.subscribe(app)?;
        Ok(agent)
    }

    /// Starts the agent in `ns` with `policy` and waits for its ready line (at most 5 s), with
    /// no subscription: the agent as it idles when no app listens. [`Agent::updates`] stays
    /// empty.
    pub fn start_unsubscribed(ns: &Netns, exe: &AgentExe, policy: &str) -> Result<Agent> {
        Agent::start_unsubscribed_with(ns, exe, policy, &AgentConfig::netlink_only())
    }

    /// As [`Agent::start_unsubscribed`], with `config`: subscriptions are the caller's (over
    /// [`Agent::socket`]).
    pub fn start_unsubscribed_with(
        ns: &Netns,
        exe: &AgentExe,
        policy: &str,
        config: &AgentConfig,
    ) -> Result<Agent> {
        Agent::launch(ns, exe, policy, config)
    }

    fn launch(ns: &Netns, exe: &AgentExe, policy: &str, config: &AgentConfig) -> Result<Agent> {
        let dir =
            std::env::temp_dir().join(format!("roam-agent-{}-{}", std::process::id(), ns.name()));
        std::fs::create_dir_all(&dir)?;
        let policy_path = dir.join("policy.roam");
        std::fs::write(&policy_path, policy)?;
        let config_path = dir.join("roamd.toml");
        std::fs::write(&config_path, config.as_toml())?;
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
            updates: Arc::default(),
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
        let log = self.dir.join("roamd.log");
        wait_ready_line(&mut self.child, "roamd: ready:", "agent", &log)
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
                    let (list, arrived) = &*updates;
                    list.lock().unwrap_or_else(|e| e.into_inner()).push(update);
                    arrived.notify_all();
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
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the latest decision satisfies `pred` (at most `timeout`) and returns it.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&AgentUpdate) -> bool,
    ) -> Result<AgentUpdate> {
        let (list, arrived) = &*self.updates;
        let guard = list.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = arrived
            .wait_timeout_while(guard, timeout, |l| !l.last().is_some_and(&pred))
            .unwrap_or_else(|e| e.into_inner());
        match guard.last() {
            Some(u) if pred(u) => Ok(u.clone()),
            last => bail!(
                "roamd's decisions did not show {what} within {timeout:?}; the last: {last:?}"
            ),
        }
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
