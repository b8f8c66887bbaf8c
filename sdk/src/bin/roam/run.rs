//! `roam run`: an unmodified program whose TCP sockets are MPTCP, steered by roamd.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use roam_ipc::client::Client;
use roam_ipc::proto::{Reply, Request};

use crate::Result;

/// The shim's file name, next to `roam` (`cargo build -p roam-preload` puts it there).
pub const PRELOAD_FILE: &str = "libroam_preload.so";

/// `roam run --help`.
pub const LONG_ABOUT: &str = "Run an unmodified program so that its TCP connections are MPTCP, \
        and roamd steers them: subflows on the app's backup links ahead of time, the backup \
        promoted and the dead subflow closed when a link fails, as for SDK sessions. Needs no \
        privilege; the program runs as whoever started it.\n\n\
        How: an LD_PRELOAD shim (libroam_preload.so, the roam-preload crate) turns \
        socket(AF_INET/AF_INET6, SOCK_STREAM, TCP) into socket(..., IPPROTO_MPTCP), as \
        mptcpize does. A shim needs no privilege and touches only this program and its \
        children; the kernel's BPF hook on update_socket_protocol (Linux 6.6+) would need \
        CAP_BPF and a cgroup of its own. The shim is found through ROAM_PRELOAD, else next to \
        the roam executable, else in ../lib/roam/ from it.\n\n\
        roamd (with [mptcp] userspace = true) finds these connections itself from the \
        kernel's MPTCP events, asks sock_diag for their owner's uid and steers them by the \
        app roamd's [[app]] map gives that uid (none: `uid:N`, the policy's default block). \
        While the program runs, roam run stays subscribed to roamd as that app (or --app), so \
        roamd probes the links the app uses at its fast pace; without roamd the connections \
        are MPTCP under the kernel's own path manager.\n\n\
        Other programs: UDP sockets, Unix sockets and explicit protocols are left alone. An \
        IPv6-only program gets IPv6 MPTCP sockets. Non-blocking connect, TCP options and \
        listen/accept work on MPTCP sockets as on TCP; a server that listens accepts plain TCP \
        clients too. A peer without MPTCP: the connection falls back to TCP by itself. \
        Children (fork, exec) inherit LD_PRELOAD unless they clear their environment; setuid \
        programs and statically linked ones (most Go binaries) are not covered. On a kernel \
        without MPTCP sockets are made as asked (TCP).\n\n\
        The exit status is the program's (128 + N when it died of signal N).";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app to subscribe to roamd as while the program runs (default: the app roamd's
    /// [[app]] map gives your uid). Another app than your own needs roamd's admin rights.
    #[arg(long, value_name = "ID")]
    app: Option<String>,
    /// roamd's socket (default: ROAM_SOCKET, else /run/roam/roamd.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "PROGRAM ARGS")]
    command: Vec<OsString>,
}

/// Where the shim is: `ROAM_PRELOAD`, else next to this executable, else `../lib/roam/`.
fn find_preload() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ROAM_PRELOAD") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ROAM_PRELOAD names {}, which is not a file", p.display()).into())
        };
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join(PRELOAD_FILE),
        dir.join("../lib/roam").join(PRELOAD_FILE),
    ];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "cannot find {PRELOAD_FILE} next to {} or in ../lib/roam/; build it with `cargo build -p roam-preload` or set ROAM_PRELOAD",
            exe.display()
        )
        .into()
    })
}

/// A subscription to roamd as `app` for the program's lifetime, or why there is none.
fn subscribe(socket: Option<&Path>, app: Option<String>) -> std::result::Result<Client, String> {
    let path = roam_ipc::client::socket_path(socket);
    let mut c = Client::connect(&path, Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    match c.call(|id| Request::Subscribe {
        id,
        app,
        flow: None,
    }) {
        Ok(Reply::Subscribed { .. }) => Ok(c),
        Ok(Reply::Error { message, .. }) => Err(message),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs the program and waits for it.
pub fn run(args: Args) -> Result<ExitCode> {
    let shim = find_preload()?;
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut v = shim.clone().into_os_string();
            v.push(":");
            v.push(old);
            v
        }
        _ => shim.clone().into_os_string(),
    };
    // Held until the program exits: roamd probes the app's links while it is subscribed.
    let _subscription = match subscribe(args.socket.as_deref(), args.app.clone()) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(
                error = %e,
                "roamd is not reachable: the program's connections are MPTCP under the kernel's path manager"
            );
            None
        }
    };
    let (program, rest) = args.command.split_first().ok_or("no program given")?;
    let status = std::process::Command::new(program)
        .args(rest)
        .env("LD_PRELOAD", preload)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", program.to_string_lossy()))?;
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(255)),
        _ => ExitCode::FAILURE,
    })
}
