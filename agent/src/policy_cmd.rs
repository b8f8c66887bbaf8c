//! `roamctl policy check|eval|fmt`: the policy commands, which need no agent and no network.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// The `roamctl policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file: exit 0 with a one-line summary when it is valid; otherwise print
    /// every error as `FILE:LINE:COL: error: MESSAGE` with the source line and a caret, and
    /// exit 1.
    Check {
        /// The policy file (`*.roam`).
        file: PathBuf,
    },
    /// Evaluate a policy for one app against a state file and print the decision as JSON.
    Eval {
        /// The policy file (`*.roam`).
        file: PathBuf,
        /// The state file: interfaces, optional flow and app id (see docs/policy-language.md).
        #[arg(long)]
        state: PathBuf,
        /// The app id; wins over the state file's `app`.
        #[arg(long)]
        app: Option<String>,
    },
}

/// Runs one policy command and returns the process exit code.
pub fn run(cmd: &PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { file } | PolicyCommand::Eval { file, .. } => {
            eprintln!(
                "roamctl: {}: the policy engine is being built",
                file.display()
            );
            ExitCode::from(2)
        }
    }
}
