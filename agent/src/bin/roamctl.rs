//! roamctl: the roam command line.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roam_agent::policy_cmd::{self, PolicyCommand};

/// roamctl: inspect and steer roamd, and check or evaluate policy files.
#[derive(Debug, Parser)]
#[command(name = "roamctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, evaluate or format a policy file (needs no agent).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Policy(cmd) => policy_cmd::run(cmd),
    }
}
