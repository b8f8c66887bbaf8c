//! `roam`: sessions from the command line, without writing Rust.
//!
//! - `roam serve`: a [`roam::Listener`] (QUIC and the TCP transports on one port) that echoes
//!   or prints what sessions send ([`serve`]).
//! - `roam connect`: a session to any roam listener, like netcat, or a checked transfer of a
//!   counter pattern against an echo ([`connect`]).
//! - `roam run`: an unmodified program whose TCP sockets are MPTCP, steered by roamd
//!   ([`run`]; it speaks to roamd through roam-ipc's client, not through a session).
//!
//! One file per subcommand; [`events`] turns session events into JSON lines and sentences,
//! [`pki`] reads PEM files, [`pattern`] is the counter pattern and the echo's clock. Only the
//! SDK's public API is used, as an app would.

mod connect;
mod events;
mod pattern;
mod pki;
mod run;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// An error for the person at the terminal: one line, saying what to do.
type Error = Box<dyn std::error::Error + Send + Sync>;
/// The result of a subcommand.
type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Parser)]
#[command(
    name = "roam",
    version,
    about = "roam sessions from the command line: a listener that echoes, a client like netcat",
    long_about = "roam sessions from the command line.\n\n\
        `roam serve` listens for sessions (QUIC, and MPTCP or TCP on the same port number); \
        `roam connect` opens one, and keeps it alive while the device's links come and go. \
        A session follows roamd's decisions when roamd's socket answers (ROAM_SOCKET, else \
        /run/roam/roamd.sock) and otherwise decides with an embedded link monitor and the \
        built-in policy (or --policy). `roam run` runs an unmodified program with its TCP \
        sockets made MPTCP, for roamd to steer.\n\n\
        Logs go to standard error (RUST_LOG, default warn).",
    after_help = "Examples:\n  \
        roam serve --listen 0.0.0.0:4433 --cert cert.pem --key key.pem --echo\n  \
        roam connect server.example:4433 --ca ca.pem --bytes 100M --rate 20 --json\n  \
        echo hello | roam connect server.example:4433 --ca ca.pem\n  \
        roam run -- curl -O http://server.example/big.iso"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accept sessions on one address and echo or print what they send.
    #[command(long_about = serve::LONG_ABOUT)]
    Serve(serve::Args),
    /// Open a session: stdin and stdout like netcat, or a checked transfer with --bytes.
    #[command(long_about = connect::LONG_ABOUT)]
    Connect(connect::Args),
    /// Run an unmodified program with its TCP sockets made MPTCP, steered by roamd.
    #[command(long_about = run::LONG_ABOUT)]
    Run(run::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,noq_udp=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let name = match &cli.command {
        Command::Serve(_) => "roam serve",
        Command::Connect(_) => "roam connect",
        Command::Run(_) => "roam run",
    };

    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            // The program runs in the foreground; roam only waits for it.
            Command::Run(args) => run::run(args),
        }
    });
    // Sessions still open (stdin readers, accepted sessions) must not hold the exit up.
    rt.shutdown_background();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

/// `text` on one line: an error message from a lower layer may carry newlines.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
