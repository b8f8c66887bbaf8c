//! roamd: the roam agent.
//!
//! `roamd [--config FILE] [--policy FILE] [--socket PATH] [--dry-run]` runs the agent;
//! `roamd reflect --listen ADDR` runs the UDP echo reflector its probes are sent to.
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use roam_agent::config::Config;
use roam_agent::daemon::{self, Options};
use roam_agent::ipc::client::DEFAULT_SOCKET;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What the command line asks for.
#[derive(Debug, Default, PartialEq)]
struct Cli {
    /// `--config FILE`.
    config: Option<PathBuf>,
    /// `--policy FILE`.
    policy: Option<PathBuf>,
    /// `--socket PATH`.
    socket: Option<PathBuf>,
    /// `--dry-run`.
    dry_run: bool,
    /// `reflect --listen ADDR`: run the reflector instead of the agent.
    reflect: Option<SocketAddr>,
}

/// What `--help` prints. The arguments are read by hand, not by clap: roamd has five, and
/// clap's code stayed resident for the daemon's whole life (agent-bench: idle RSS 0.1 MiB).
const HELP: &str = "\
roamd: watches every interface, measures which really carry traffic, evaluates the policy for
every app and tells each app session what to use.

Usage: roamd [OPTIONS]
       roamd reflect --listen ADDR

Options:
  --config FILE   The config file (TOML). Without it: built-in defaults, no probe targets
                  (links are never validated by probes), every uid is `uid:N`.
  --policy FILE   The policy file (`*.roam`); wins over the config's `policy`. Without
                  either: the built-in policy.
  --socket PATH   The socket to listen on; wins over ROAM_SOCKET and the config's `socket`.
  --dry-run       Observe and decide, but change nothing in the kernel.
  -h, --help      Print this help.
  -V, --version   Print the version.

reflect: run the UDP echo reflector that probes are sent to (replies only to roam probes, at
their size, at most 2000 a second).
  --listen ADDR   Address and port to listen on, e.g. `198.18.0.1:7777` or `[2001:db8::1]:7777`.
";

/// What to do, from the arguments after the program's name.
#[derive(Debug, PartialEq)]
enum Parsed {
    Run(Cli),
    Help,
    Version,
}

/// Reads the arguments (`--key VALUE` or `--key=VALUE`); the error says which one is wrong.
fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, String> {
    let mut cli = Cli::default();
    let mut reflect = false;
    let mut listen = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not UTF-8"))?;
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) if k.starts_with("--") => (k.to_owned(), Some(v.to_owned())),
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next().and_then(|v| v.into_string().ok()))
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match key.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "reflect" if !reflect => reflect = true,
            "--listen" if reflect => {
                let v = value("--listen")?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {v}: {e} (e.g. 198.18.0.1:7777)"))?,
                );
            }
            "--config" if !reflect => cli.config = Some(value("--config")?.into()),
            "--policy" if !reflect => cli.policy = Some(value("--policy")?.into()),
            "--socket" if !reflect => cli.socket = Some(value("--socket")?.into()),
            "--dry-run" if !reflect && inline.is_none() => cli.dry_run = true,
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    if reflect {
        cli.reflect = Some(listen.ok_or("reflect needs --listen ADDR")?);
    }
    Ok(Parsed::Run(cli))
}

fn main() -> ExitCode {
    one_malloc_arena();
    let cli = match parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Ok(Parsed::Version) => {
            println!("roamd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("roamd: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    init_tracing();
    raise_fd_limit();
    // Before the runtime: its threads and the fan-out helper inherit the loop's priority.
    roam_agent::priority::raise_the_loop();
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
    let result = match cli.reflect {
        Some(listen) => rt
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn the_agent_s_options_in_either_form() {
        let got = parse(&[
            "--config",
            "/etc/roam/roamd.toml",
            "--policy=p.roam",
            "--dry-run",
        ]);
        assert_eq!(
            got,
            Ok(Parsed::Run(Cli {
                config: Some("/etc/roam/roamd.toml".into()),
                policy: Some("p.roam".into()),
                dry_run: true,
                ..Cli::default()
            }))
        );
        assert_eq!(parse(&[]), Ok(Parsed::Run(Cli::default())));
        assert_eq!(parse(&["--socket", "/run/x.sock", "-h"]), Ok(Parsed::Help));
        assert_eq!(parse(&["--version"]), Ok(Parsed::Version));
    }

    #[test]
    fn the_reflector_needs_an_address_and_takes_no_agent_option() {
        assert_eq!(
            parse(&["reflect", "--listen", "198.18.0.1:7777"]),
            Ok(Parsed::Run(Cli {
                reflect: Some("198.18.0.1:7777".parse().unwrap()),
                ..Cli::default()
            }))
        );
        assert!(parse(&["reflect"]).unwrap_err().contains("--listen"));
        assert!(parse(&["reflect", "--listen", "nowhere"]).is_err());
        assert!(parse(&["reflect", "--listen", "[::1]:7", "--dry-run"]).is_err());
    }

    #[test]
    fn a_wrong_argument_is_named() {
        assert_eq!(
            parse(&["--polcy", "x"]),
            Err("unexpected argument '--polcy'".into())
        );
        assert_eq!(parse(&["--config"]), Err("--config needs a value".into()));
        assert!(parse(&["--dry-run=yes"]).is_err());
    }
}
