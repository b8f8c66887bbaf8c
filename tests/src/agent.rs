//! roamd, the agent, run as a process inside a namespace: the one way every test and bench of
//! the workspace runs it ([`Roamd`]), its probe reflector ([`Reflector`]), and its decisions as
//! they are pushed ([`Agent`]).
//!
//! Which program runs the agent is an [`AgentExe`]:
//! - [`AgentExe::roamd`]: a real `roamd` binary (roam-agent's own tests pass
//!   `env!("CARGO_BIN_EXE_roamd")`), started as `roamd --config C --policy P --socket S`, and as
//!   `roamd reflect --listen ADDR`.
//! - [`AgentExe::current`] / [`AgentExe::at`]: one of this crate's binaries (`cargo run -p
//!   roam-tests` builds no `roamd`). They call [`agent_main`] first, and `EXE __agent ...` runs
//!   `roam_agent::daemon::run`, the same shell `roamd` runs.
//! - [`AgentExe::test_helper`]: the running test binary started again with a filter naming one
//!   helper test, whose body is [`test_helper_main`] (test binaries of other crates, such as the
//!   SDK's, cannot name roamd's binary); its arguments travel in [`HELPER_ENV`].
//!
//! Every form prints the same ready line (`roamd: ready: ...`) once it serves; the process is
//! started with `ip netns exec`, which execs it, so the child's pid is the agent's. A process
//! of its own keeps the agent's signal handling and namespace separate from the harness. Its
//! standard error goes to a log file ([`Roamd::log`]); `ROAM_AGENT_LOG`, when set, is its
//! `RUST_LOG`.
//!
//! [`AgentConfig`] holds the configurations the benches use: MPTCP endpoints enforced, policy
//! routing left to the topology, and with [`AgentConfig::probing`] every link probed against a
//! [`Reflector`] in the server namespace, so a silent link is judged down by missed probes
//! instead of waiting for the kernel to notice. Decisions are read over roamd's socket with
//! `roam_agent::ipc::client`, as `roamctl watch` reads them.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use roam_agent::core::Update;
use roam_agent::ipc::client::Client;
use roam_agent::ipc::proto::{Reply, Request};

use crate::netns::Netns;

/// The first argument that makes one of this crate's binaries run as the agent.
pub const AGENT_ARG: &str = "__agent";

/// The first argument that makes one of this crate's binaries run as the probe reflector
/// (`EXE __reflect --listen ADDR`).
pub const REFLECT_ARG: &str = "__reflect";

/// The environment variable that hands a helper test ([`AgentExe::test_helper`]) its role and
/// arguments, one per line.
pub const HELPER_ENV: &str = "ROAM_TESTS_HELPER_ARGS";

/// UDP port of the [`Reflector`] on the service address.
pub const REFLECT_PORT: u16 = 7777;

/// What every form of the agent and the reflector prints first on standard output once it
/// serves.
pub const READY_PREFIX: &str = "roamd: ready: ";

/// The agent's config in the handset: MPTCP endpoints enforced, policy routing left to the
/// topology, no probe targets (links are judged by netlink alone).
const AGENT_CONFIG: &str = "[routing]\nenabled = false\n\n[mptcp]\nenabled = true\n";

/// How long the agent may take to print its ready line, and the first decision to arrive.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// probes 10 ms apart, each given its RTT and margin (50 to 100 ms).
    pub fn probing(targets: &[std::net::SocketAddr]) -> AgentConfig {
        AgentConfig::probing_with(targets, "")
    }

    /// roamd as it ships: policy routing on (its per-link tables, whose rules come before the
    /// topology's, `crate::topology::SOURCE_RULE_PREF`, and the route metrics it sets there),
    /// MPTCP endpoints enforced, and every link probed against `targets` at the shipped pacing.
    pub fn shipped(targets: &[std::net::SocketAddr]) -> AgentConfig {
        AgentConfig {
            toml: format!("[mptcp]\nenabled = true\n\n{}", probe_section(targets)),
        }
    }

    /// As [`AgentConfig::probing`], with these extra `[probe]` keys (e.g. `pacing =
    /// "periodic"`), one `key = value` a line.
    pub fn probing_with(targets: &[std::net::SocketAddr], probe_keys: &str) -> AgentConfig {
        AgentConfig {
            toml: format!("{AGENT_CONFIG}\n{}{probe_keys}\n", probe_section(targets)),
        }
    }

    /// Any configuration text (roamd.toml's format).
    pub fn from_toml(toml: impl Into<String>) -> AgentConfig {
        AgentConfig { toml: toml.into() }
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

/// A `[probe]` section with probe `targets` and roamd's shipped pacing: each link validated
/// once, then probed only on suspicion (a session's stall report, a decision onto a stale
/// link) with a short burst. Benchmarks and tests measure what users get.
pub fn probe_section(targets: &[std::net::SocketAddr]) -> String {
    let list = targets
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[probe]\ntargets = [{list}]\n")
}

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

/// How a program is told to be the agent or the reflector.
#[derive(Debug, Clone)]
enum Form {
    /// A real `roamd` binary.
    Roamd,
    /// One of this crate's binaries ([`AGENT_ARG`], [`REFLECT_ARG`]).
    Embedded,
    /// A test binary running the helper test of this name.
    TestHelper(String),
}

/// The executable that runs the agent and its reflector.
#[derive(Debug, Clone)]
pub struct AgentExe {
    program: PathBuf,
    form: Form,
}

/// What a started process is to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Agent,
    Reflector,
}

impl AgentExe {
    /// The running binary itself (it must call [`agent_main`] before anything else).
    pub fn current() -> Result<AgentExe> {
        let program = std::env::current_exe().context("finding this executable")?;
        Ok(AgentExe {
            program,
            form: Form::Embedded,
        })
    }

    /// The agent as it ships, for a benchmark: `scripts/build-roamd`'s static build
    /// (`target/<host>/roamd/roamd`) when it is at least as new as the `roamd` built beside the
    /// running binary, else that one (`target/release/roamd` next to
    /// `target/release/agent-bench`: its own code, runtime and log level), else the agent
    /// linked into the running binary, with a note on standard error that its memory and log
    /// level are not roamd's.
    pub fn shipped_or_current() -> Result<AgentExe> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let beside = exe.with_file_name("roamd");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let shipped = exe
            .parent()
            .and_then(Path::parent)
            .and_then(|target| std::fs::read_dir(target).ok())
            .into_iter()
            .flatten()
            .filter_map(|e| Some(e.ok()?.path().join("roamd").join("roamd")))
            .filter(|p| p.is_file())
            .max_by_key(|p| modified(p));
        if let Some(s) = shipped
            && (!beside.is_file() || modified(&s) >= modified(&beside))
        {
            return Ok(AgentExe::roamd(s));
        }
        if beside.is_file() {
            return Ok(AgentExe::roamd(beside));
        }
        eprintln!(
            "no roamd beside {} (cargo build --release --bin roamd): measuring the agent linked \
             into this binary, whose code, memory and log level are not roamd's",
            exe.display()
        );
        AgentExe::current()
    }

    /// The program started.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Another binary of this crate (tests pass `env!("CARGO_BIN_EXE_handover-bench")`).
    pub fn at(program: impl Into<PathBuf>) -> AgentExe {
        AgentExe {
            program: program.into(),
            form: Form::Embedded,
        }
    }

    /// A real `roamd` binary (roam-agent's tests pass `env!("CARGO_BIN_EXE_roamd")`).
    pub fn roamd(program: impl Into<PathBuf>) -> AgentExe {
        AgentExe {
            program: program.into(),
            form: Form::Roamd,
        }
    }

    /// The running test binary, started again to run only the test named `filter`, whose body
    /// must be [`test_helper_main`]:
    ///
    /// ```ignore
    /// #[test]
    /// fn roamd_helper() {
    ///     roam_tests::agent::test_helper_main(|| {});
    /// }
    /// ```
    pub fn test_helper(filter: &str) -> Result<AgentExe> {
        let program = std::env::current_exe().context("finding this test binary")?;
        Ok(AgentExe {
            program,
            form: Form::TestHelper(filter.to_owned()),
        })
    }

    /// `ip netns exec NS PROGRAM ...` that runs `role` with `args`.
    fn command(&self, ns: &str, role: Role, args: &[String]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).arg(&self.program);
        let role_arg = match (&self.form, role) {
            (Form::Roamd, Role::Agent) => None,
            (Form::Roamd, Role::Reflector) => Some("reflect"),
            (_, Role::Agent) => Some(AGENT_ARG),
            (_, Role::Reflector) => Some(REFLECT_ARG),
        };
        match &self.form {
            Form::TestHelper(filter) => {
                let spec: Vec<&str> = role_arg
                    .into_iter()
                    .chain(args.iter().map(String::as_str))
                    .collect();
                cmd.args([
                    filter.as_str(),
                    "--exact",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(HELPER_ENV, spec.join("\n"));
            }
            _ => {
                cmd.args(role_arg).args(args);
            }
        }
        if let Some(filter) = std::env::var_os("ROAM_AGENT_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        cmd
    }

    /// Starts `role` in `ns` with `args`, standard error to `log`, and waits (at most
    /// [`START_TIMEOUT`]) for its ready line, which it returns.
    fn spawn_ready(
        &self,
        ns: &str,
        role: Role,
        args: &[String],
        log: &Path,
    ) -> Result<(Child, String)> {
        let what = match role {
            Role::Agent => "the agent",
            Role::Reflector => "the reflector",
        };
        let mut child = self
            .command(ns, role, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .with_context(|| format!("starting {what} ({})", self.program.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Ends with the process (its stdout closes); reads on so the pipe never fills.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(READY_PREFIX.trim_end()) {
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => Ok((child, line)),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "{what} printed no ready line within {START_TIMEOUT:?}; its log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                )
            }
        }
    }
}

/// When this process was started as the agent (`EXE __agent --policy P --socket S
/// [--config C]`) or as the reflector (`EXE __reflect --listen ADDR`), runs it until SIGTERM or
/// SIGINT and returns the exit code; otherwise `None`, and the binary goes on with its own
/// work.
pub fn agent_main() -> Option<ExitCode> {
    let r = run_role(std::env::args().skip(1).collect())?;
    Some(match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roamd (embedded): {e:#}");
            ExitCode::FAILURE
        }
    })
}

/// The body of a helper test ([`AgentExe::test_helper`]): returns at once unless this process
/// was started as one (then [`HELPER_ENV`] is set); otherwise runs `before` (e.g. mounts what
/// roamd needs in this process's mount namespace), then the agent or the reflector until it is
/// killed, and panics if it fails.
pub fn test_helper_main(before: impl FnOnce()) {
    let Some(spec) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    before();
    let args = spec.to_string_lossy().lines().map(str::to_owned).collect();
    if let Some(Err(e)) = run_role(args) {
        panic!("roamd (test helper): {e:#}");
    }
}

/// Runs the role `args[0]` names with the rest, or `None` when it names none.
fn run_role(args: Vec<String>) -> Option<Result<()>> {
    let mut args = args.into_iter();
    let run: fn(Vec<String>) -> Result<()> = match args.next().as_deref() {
        Some(AGENT_ARG) => run_agent,
        Some(REFLECT_ARG) => run_reflector,
        _ => return None,
    };
    // Standard output carries the ready line; logs go to standard error.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    Some(run(args.collect()))
}

/// Prints the ready line every form prints.
fn ready_line(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_PREFIX}{what}");
    let _ = out.flush();
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
    // As roamd's main does, before the runtime's threads exist.
    roam_agent::priority::raise_the_loop();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(roam_agent::daemon::run(opts, |core| {
        ready_line(&format!(
            "listening on {} ({} interfaces)",
            socket.display(),
            core.link_indices().len()
        ));
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
        ready_line(&format!("reflecting on {a}"));
    }))
    .with_context(|| format!("reflecting on {listen}"))
}

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A scratch directory of this process's own, readable by every uid (roamd's socket in it
/// must be reachable for the permission tests' other users).
fn scratch_dir(what: &str, ns: &str) -> Result<PathBuf> {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("roam-{what}-{}-{ns}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// roamd in a namespace, with a directory of its own for its config (`roamd.toml`), policy
/// (`policy.roam`), socket (`roamd.sock`) and log (`roamd.log`, its standard error). It may be
/// stopped and started again on the same files; killed on drop, the directory removed.
#[derive(Debug)]
pub struct Roamd {
    exe: AgentExe,
    ns: String,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl Roamd {
    /// Writes `config` (roamd.toml's text) and `policy` to a new directory; roamd is not
    /// started ([`Roamd::launch`]).
    pub fn new(ns: &Netns, exe: &AgentExe, policy: &str, config: &str) -> Result<Roamd> {
        let dir = scratch_dir("agent", ns.name())?;
        let r = Roamd {
            exe: exe.clone(),
            ns: ns.name().to_owned(),
            socket: dir.join("roamd.sock"),
            dir,
            child: None,
        };
        std::fs::write(r.policy_path(), policy)?;
        std::fs::write(r.config_path(), config)?;
        Ok(r)
    }

    /// [`Roamd::new`], then [`Roamd::launch`] with no extra arguments.
    pub fn start(ns: &Netns, exe: &AgentExe, policy: &str, config: &str) -> Result<Roamd> {
        let mut r = Roamd::new(ns, exe, policy, config)?;
        r.launch(&[])?;
        Ok(r)
    }

    /// Starts roamd with `extra` arguments after its files (a real roamd only: `--dry-run`),
    /// waits for its ready line and returns it.
    pub fn launch(&mut self, extra: &[&str]) -> Result<String> {
        if self.child.is_some() {
            bail!("roamd already runs");
        }
        let mut args: Vec<String> = [
            "--config",
            &self.config_path().to_string_lossy(),
            "--policy",
            &self.policy_path().to_string_lossy(),
            "--socket",
            &self.socket.to_string_lossy(),
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let (child, line) =
            self.exe
                .spawn_ready(&self.ns, Role::Agent, &args, &self.dir.join("roamd.log"))?;
        self.child = Some(child);
        Ok(line)
    }

    /// Kills roamd (SIGKILL: none of its own clean-up runs) and starts it again on the same
    /// files.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch(&[]).map(drop)
    }

    /// Kills roamd (SIGKILL) and reaps it; nothing when it does not run.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (SIGTERM: a clean stop; SIGKILL: a crash) and waits for roamd to exit.
    pub fn stop(&mut self, signal: i32) -> Result<ExitStatus> {
        let mut child = self.child.take().context("roamd does not run")?;
        // SAFETY: kill(2) on the pid of a child this process started and has not reaped.
        if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(child.wait()?)
    }

    /// roamd's process id (`ip netns exec` execs it, so the child is roamd itself), while it
    /// runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The policy file it reads (rewrite it, then reload, to change the policy).
    pub fn policy_path(&self) -> PathBuf {
        self.dir.join("policy.roam")
    }

    /// Its config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("roamd.toml")
    }

    /// Its log so far (standard error), for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("roamd.log")).unwrap_or_default()
    }

    /// A connected client subscribed to the decisions for `app` (`None`: the client's own
    /// uid's).
    pub fn subscriber(&self, app: Option<&str>) -> Result<Client> {
        let mut c =
            Client::connect(&self.socket, Some(START_TIMEOUT)).context("connecting to roamd")?;
        let app = app.map(str::to_owned);
        match c
            .call(|id| Request::Subscribe {
                id,
                app,
                flow: None,
            })
            .context("subscribing to roamd's decisions")?
        {
            Reply::Subscribed { .. } => Ok(c),
            other => bail!("subscribing: roamd answered {other:?}"),
        }
    }
}

impl Drop for Roamd {
    fn drop(&mut self) {
        // The namespace goes with its owner; nothing the agent set up needs undoing.
        self.kill();
        if std::thread::panicking() {
            // A failing test's best witness: what roamd said, before its directory goes.
            eprintln!("roamd's log ({}):\n{}", self.dir.display(), self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `client`'s updates until one satisfies `pred`, for at most `within`; returns it and
/// when it arrived. The error lists the updates seen.
pub fn wait_update(
    client: &mut Client,
    within: Duration,
    what: &str,
    pred: impl Fn(&Update) -> bool,
) -> Result<(Update, Instant)> {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no update where {what} within {within:?}; saw {seen:#?}");
        }
        client.set_timeout(Some(left))?;
        match client.next_event() {
            Ok(Reply::Update(u)) => {
                let at = Instant::now();
                if pred(&u) {
                    return Ok((u, at));
                }
                seen.push(u);
            }
            Ok(other) => bail!("waiting for an update where {what}: unexpected {other:?}"),
            Err(e) => bail!("no update where {what}: {e}; saw {seen:#?}"),
        }
    }
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
    /// Starts the reflector in `ns` on `listen` and waits until it is bound.
    pub fn start(ns: &Netns, exe: &AgentExe, listen: std::net::SocketAddr) -> Result<Reflector> {
        let dir = scratch_dir("reflect", ns.name())?;
        let args = ["--listen".to_owned(), listen.to_string()];
        let spawned = exe.spawn_ready(ns.name(), Role::Reflector, &args, &dir.join("reflect.log"));
        match spawned {
            Ok((child, _)) => Ok(Reflector {
                child,
                dir,
                addr: listen,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
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
    roamd: Roamd,
    updates: Arc<(Mutex<Vec<AgentUpdate>>, Condvar)>,
}

impl Agent {
    /// Starts the agent in `ns` with `policy`, waits for its ready line, subscribes to the
    /// decisions for `app` and waits for the first one.
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
        let agent = Agent {
            roamd: Roamd::start(ns, exe, policy, config.as_toml())?,
            updates: Arc::default(),
        };
        agent.subscribe(app)?;
        Ok(agent)
    }

    /// Starts the agent in `ns` with `policy` and waits for its ready line, with no
    /// subscription: the agent as it idles when no app listens. [`Agent::updates`] stays
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
        Ok(Agent {
            roamd: Roamd::start(ns, exe, policy, config.as_toml())?,
            updates: Arc::default(),
        })
    }

    /// The agent's process id, for reading `/proc/PID`.
    pub fn pid(&self) -> u32 {
        self.roamd.pid().unwrap_or(0)
    }

    /// Subscribes to `app`'s decisions on a thread of its own, which ends when the agent does.
    fn subscribe(&self, app: &str) -> Result<()> {
        let mut client = self.roamd.subscriber(Some(app))?;
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
            .with_context(|| format!("roamd pushed no decision within {START_TIMEOUT:?}"))
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
        self.roamd.socket()
    }
}

/// A subscriber on a thread of its own that stamps each decision as it arrives, at a
/// real-time priority ([`crate::netlink::measuring_priority`]) so the stamp is the decision's
/// arrival, not the moment a loaded machine got round to the reader: what the benchmarks'
/// reaction figures end at. The thread ends when roamd closes the connection or this is
/// dropped.
#[derive(Debug)]
pub struct StampedSubscriber {
    dev: String,
    rx: std::sync::mpsc::Receiver<(Instant, bool)>,
    /// The connection, shut down when this is dropped: the reader then ends.
    socket: std::os::unix::net::UnixStream,
}

impl StampedSubscriber {
    /// Subscribes (the default app, no flow) at `socket`; each decision is stamped with
    /// whether `dev` is its primary.
    pub fn connect(socket: &Path, dev: &str, within: Duration) -> Result<StampedSubscriber> {
        let mut client = Client::connect(socket, Some(within)).context("connecting to roamd")?;
        client
            .call(|id| Request::Subscribe {
                id,
                app: None,
                flow: None,
            })
            .context("subscribing")?;
        client.set_timeout(None)?;
        let socket = client.socket().try_clone()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let name = dev.to_owned();
        std::thread::Builder::new()
            .name("stamped-subscriber".into())
            .spawn(move || {
                crate::netlink::measuring_priority();
                while let Ok(reply) = client.next_event() {
                    if let Reply::Update(u) = reply {
                        let at = Instant::now();
                        let primary = u.decision.primary().is_some_and(|p| p.interface == name);
                        if tx.send((at, primary)).is_err() {
                            break;
                        }
                    }
                }
            })?;
        Ok(StampedSubscriber {
            dev: dev.to_owned(),
            rx,
            socket,
        })
    }

    /// Forgets the decisions stamped so far.
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// When the next decision with the device primary (or not) arrived; waits at most
    /// `within`.
    pub fn wait(&self, primary: bool, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((at, p)) if p == primary => return Ok(at),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => bail!(
                    "no decision with {} {} within {within:?}",
                    self.dev,
                    if primary { "primary" } else { "not primary" }
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("roamd closed the subscription")
                }
            }
        }
    }
}

impl Drop for StampedSubscriber {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
