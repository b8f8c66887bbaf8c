//! `roamctl policy check|eval|fmt`: the policy commands, which need no agent and no network.
//!
//! Contract (docs/policy-language.md): `check` exits 0 with a one-line summary when the file
//! is valid, and otherwise prints `FILE:LINE:COL: error: MESSAGE`, the source line and a
//! caret, and exits non-zero. `eval` prints one decision as JSON on stdout. Neither panics,
//! whatever the bytes.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use roam_policy::{Policy, State, diag};

/// The `roamctl policy` subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file: exit 0 with a one-line summary when it is valid; otherwise print
    /// every error as `FILE:LINE:COL: error: MESSAGE` with the source line and a caret, and
    /// exit 1. Warnings are printed the same way and do not fail the check.
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
        /// The app id; wins over the state file's `app`. With neither, only the default block
        /// applies.
        #[arg(long)]
        app: Option<String>,
    },
    /// Print a policy file in canonical form (comments kept), or rewrite it in place.
    Fmt {
        /// The policy file (`*.roam`).
        file: PathBuf,
        /// Rewrite the file instead of printing it.
        #[arg(long, conflicts_with = "check")]
        write: bool,
        /// Exit 1 (printing nothing) when the file is not in canonical form.
        #[arg(long)]
        check: bool,
    },
}

/// Exit status: the file is invalid (or not canonical, for `fmt --check`).
const EXIT_INVALID: u8 = 1;
/// Exit status: a file could not be read or written, or the state file is malformed.
const EXIT_IO: u8 = 2;

/// Runs one policy command and returns the process exit code.
pub fn run(cmd: &PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { file } => check(file),
        PolicyCommand::Eval { file, state, app } => eval(file, state, app.as_deref()),
        PolicyCommand::Fmt { file, write, check } => fmt(file, *write, *check),
    }
}

fn read(path: &Path, what: &str) -> Result<String, ExitCode> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(e.as_bytes());
                let (line, col) = diag::line_col(&text, at);
                eprintln!(
                    "{}:{line}:{col}: error: the {what} is not UTF-8 text (byte {at})",
                    path.display()
                );
                Err(ExitCode::from(EXIT_INVALID))
            }
        },
        Err(e) => {
            eprintln!("roamctl: cannot read the {what} {}: {e}", path.display());
            Err(ExitCode::from(EXIT_IO))
        }
    }
}

fn load(file: &Path) -> Result<(Policy, String), ExitCode> {
    let source = read(file, "policy file")?;
    Policy::parse(&source).map(|p| (p, source)).map_err(|e| {
        eprint!("{}", e.render(&file.display().to_string()));
        ExitCode::from(EXIT_INVALID)
    })
}

fn check(file: &Path) -> ExitCode {
    let source = match read(file, "policy file") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let name = file.display().to_string();
    let checked = roam_policy::check(&source);
    // Errors and warnings in source order, as a compiler prints them.
    eprint!("{}", diag::render_all(&checked.diagnostics, &name, &source));
    match &checked.policy {
        Some(policy) => {
            let warnings = checked.warnings().count();
            let note = match warnings {
                0 => String::new(),
                1 => ", 1 warning".into(),
                n => format!(", {n} warnings"),
            };
            println!("{name}: ok: {}{note}", policy.summary());
            ExitCode::SUCCESS
        }
        None => {
            let errors = checked.errors().count();
            eprintln!(
                "{name}: {} found; the policy was not accepted",
                if errors == 1 {
                    "1 error".to_owned()
                } else {
                    format!("{errors} errors")
                }
            );
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn eval(file: &Path, state_path: &Path, app: Option<&str>) -> ExitCode {
    let (policy, _) = match load(file) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let text = match read(state_path, "state file") {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut state: State = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{}:{}:{}: error: {}",
                state_path.display(),
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            );
            eprintln!(
                "  the state file's shape is in docs/policy-language.md (roamctl policy eval)"
            );
            return ExitCode::from(EXIT_IO);
        }
    };
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = state
        .interfaces
        .iter()
        .find(|i| !seen.insert(i.name.as_str()))
    {
        eprintln!(
            "{}: error: interface `{}` is listed twice; list each interface once",
            state_path.display(),
            dup.name
        );
        return ExitCode::from(EXIT_IO);
    }
    if let Some(app) = app {
        state.app = Some(app.to_owned());
    }
    let decision = policy.evaluate(&state);
    match serde_json::to_string(&decision) {
        Ok(json) => {
            let mut out = std::io::stdout().lock();
            if writeln!(out, "{json}").is_err() {
                return ExitCode::from(EXIT_IO);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("roamctl: cannot encode the decision: {e}");
            ExitCode::from(EXIT_IO)
        }
    }
}

/// serde_json appends " at line L column C"; the message leads with the position instead.
fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

fn fmt(file: &Path, write: bool, check_only: bool) -> ExitCode {
    let source = match read(file, "policy file") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let formatted = match roam_policy::fmt::format(&source) {
        Ok(f) => f,
        Err(e) => {
            eprint!("{}", e.render(&file.display().to_string()));
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if check_only {
        if formatted == source {
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "{}: not in canonical form; run `roamctl policy fmt --write {}`",
            file.display(),
            file.display()
        );
        return ExitCode::from(EXIT_INVALID);
    }
    if write {
        if formatted == source {
            return ExitCode::SUCCESS;
        }
        // Write beside the file and rename, so a crash never leaves half a policy behind.
        let tmp = file.with_extension("roam.fmt-tmp");
        let result = std::fs::write(&tmp, &formatted).and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            eprintln!("roamctl: cannot write {}: {e}", file.display());
            return ExitCode::from(EXIT_IO);
        }
        return ExitCode::SUCCESS;
    }
    print!("{formatted}");
    ExitCode::SUCCESS
}
