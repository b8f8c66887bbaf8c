//! roamd: the roam agent.
//!
//! `roamd [--config FILE] [--policy FILE] [--socket PATH] [--dry-run]` runs the agent;
//! `roamd reflect --listen ADDR` runs the UDP echo reflector its probes are sent to.
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roam_agent::config::Config;
use roam_agent::daemon::{self, Options};
use roam_agent::ipc::client::DEFAULT_SOCKET;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// roamd: watches every interface, measures which really carry traffic, evaluates the policy
/// for every app and tells each app session what to use.
#[derive(Debug, Parser)]
#[command(name = "roamd", version, about)]
struct Cli {
    /// The config file (TOML). Without it: built-in defaults, no probe targets (links are
    /// never validated by probes), every uid is `uid:N`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The policy file (`*.roam`); wins over the config's `policy`. Without either: the
    /// built-in policy.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// The socket to listen on; wins over ROAM_SOCKET and the config's `socket`.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Observe and decide, but change nothing in the kernel.
    #[arg(long)]
    dry_run: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the UDP echo reflector that probes are sent to (replies only to roam probes, at
    /// their size, at most 2000 a second).
    Reflect {
        /// Address and port to listen on, e.g. `198.18.0.1:7777` or `[2001:db8::1]:7777`.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = Cli::parse();
    init_tracing();
    raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roamd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Reflect { listen }) => rt
            .block_on(roam_agent::probe::reflect::run(listen, |addr| {
                ready_line(&format!("reflecting on {addr}"))
            }))
            .map_err(|e| anyhow::anyhow!("reflector on {listen}: {e}")),
        None => match options(&cli) {
            Ok(opts) => {
                let socket = opts.socket.clone();
                rt.block_on(daemon::run(opts, |core| {
                    let n = core.link_indices().len();
                    ready_line(&format!(
                        "listening on {} ({n} interfaces)",
                        socket.display()
                    ));
                    sd_notify_ready();
                }))
            }
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roamd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    let config = match &cli.config {
        Some(p) => Config::load(p).map_err(|e| anyhow::anyhow!("{}", e.render()))?,
        None => Config::default(),
    };
    let socket = cli
        .socket
        .clone()
        .or_else(|| std::env::var_os("ROAM_SOCKET").map(PathBuf::from))
        .or_else(|| config.socket.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let policy_path = cli.policy.clone().or_else(|| config.policy.clone());
    Ok(Options {
        config,
        policy_path,
        socket,
        dry_run: cli.dry_run,
        sysfs_root: PathBuf::from("/sys/class/net"),
    })
}

/// glibc gives each thread that allocates an arena of its own: roamd's threads (the loop, the
/// clients' thread, the enforcers' workers) would each keep their freed memory, and frames
/// allocated on the clients' thread and freed on the loop's are kept in the clients' arena.
/// roamd allocates little and never in parallel for long, so one arena serves all: measured
/// with 1,000 subscribers and 100 hostile clients (`load-bench`), RSS ~45 MiB with an arena
/// per thread against ~10 MiB with one. Called first, before any other thread exists.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no other thread is running yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Every app session is a connection: lift the soft descriptor limit to the hard one (often
/// 1024 -> 524288) so a thousand subscribers do not run the agent out of descriptors.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 || r.rlim_cur >= r.rlim_max {
        return;
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot raise the descriptor limit");
    }
}

/// Logs to stderr, filtered by RUST_LOG (default `info`); no colours unless a terminal, so
/// journald and log files get plain lines.
///
/// RUST_LOG is a list of `LEVEL` and `TARGET=LEVEL` (`info,roam_agent::ipc=debug`), read by
/// tracing-subscriber's `Targets` rather than `EnvFilter`: the latter's span and field
/// filters bring a regex engine whose code is resident in roamd for its whole life (agent-bench
/// measured idle RSS 0.2 MiB lower without it). A value it cannot read is reported and `info`
/// used.
fn init_tracing() {
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(v) => match v.parse::<Targets>() {
            Ok(t) => (t, None),
            Err(e) => (
                Targets::new().with_default(tracing::Level::INFO),
                Some((v, e)),
            ),
        },
        Err(_) => (Targets::new().with_default(tracing::Level::INFO), None),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
    if let Some((value, e)) = bad {
        tracing::warn!(%value, error = %e, "RUST_LOG not understood (LEVEL or TARGET=LEVEL, comma-separated); logging at info");
    }
}

/// One line on stdout when the agent is ready: what a supervisor or a test waits for.
fn ready_line(what: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "roamd: ready: {what}");
    let _ = out.flush();
}

/// systemd readiness (`Type=notify`): one datagram to $NOTIFY_SOCKET, if set.
fn sd_notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = Path::new(&path);
    let sent = if let Some(name) = path.to_str().and_then(|p| p.strip_prefix('@')) {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).and_then(|addr| {
            std::os::unix::net::UnixDatagram::unbound()?.send_to_addr(b"READY=1", &addr)
        })
    } else {
        std::os::unix::net::UnixDatagram::unbound().and_then(|s| s.send_to(b"READY=1", path))
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "readiness notification to systemd failed");
    }
}
