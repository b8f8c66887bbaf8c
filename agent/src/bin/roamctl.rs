//! roamctl: the roam command line.
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use roam_agent::ipc::client::{Client, ClientError, socket_path};
use roam_agent::ipc::proto::{LinkUsage, Readiness, Reply, Request};
use roam_agent::policy_cmd::{self, PolicyCommand};
use roam_policy::{Decision, Interface};

/// roamctl: inspect and steer roamd, and check or evaluate policy files.
#[derive(Debug, Parser)]
#[command(name = "roamctl", version, about)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// roamd's socket (default: $ROAM_SOCKET, else /run/roam/roamd.sock).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The agent's status (admins also see every subscriber and how each link is probed).
    Status,
    /// Every interface the agent manages, with its state and measured figures.
    Links,
    /// The decision for an app now, and why.
    Explain {
        /// The app id (default: your own; another app's needs admin rights).
        #[arg(long)]
        app: Option<String>,
    },
    /// Follow decisions and link changes live (Ctrl-C stops).
    Watch {
        /// The app id to follow (default: your own; another app's needs admin rights).
        #[arg(long)]
        app: Option<String>,
        /// Stop after this many updates.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Make roamd re-read its policy file (admin). An invalid file is reported and the
    /// policy in force stays.
    Reload,
    /// Check, evaluate or format a policy file (needs no agent).
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// The agent refused (denied, invalid policy on reload).
const EXIT_REFUSED: u8 = 1;
/// No agent, or the conversation broke.
const EXIT_UNREACHABLE: u8 = 2;
const TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Policy(cmd) = &cli.command {
        return policy_cmd::run(cmd);
    }
    match agent_command(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roamctl: {e}");
            ExitCode::from(match e {
                ClientError::Refused { .. } => EXIT_REFUSED,
                _ => EXIT_UNREACHABLE,
            })
        }
    }
}

fn agent_command(cli: &Cli) -> Result<(), ClientError> {
    let path = socket_path(cli.global.socket.as_deref());
    let mut c = Client::connect(&path, Some(TIMEOUT))?;
    let json = cli.global.json;
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| ClientError::Protocol(format!("writing to stdout: {e}"));
    match &cli.command {
        Command::Policy(_) => {}
        Command::Status => {
            let Reply::Status { status, .. } = c.call(|id| Request::Status { id })? else {
                return Err(unexpected());
            };
            if json {
                writeln!(out, "{}", to_json(&status)).map_err(io)?;
            } else {
                let rows = [
                    ("agent", status.agent.clone()),
                    ("policy", status.policy.clone()),
                    ("dry run", status.dry_run.to_string()),
                    ("interfaces", status.interfaces.to_string()),
                    ("subscribers", status.subscribers.to_string()),
                    ("mptcp connections", status.mptcp_connections.to_string()),
                ];
                let rows: Vec<Vec<String>> = rows
                    .into_iter()
                    .map(|(k, v)| vec![format!("{k}:"), v])
                    .collect();
                write!(out, "{}", table(&[], &rows)).map_err(io)?;
                if let Some(clients) = &status.clients {
                    let rows: Vec<Vec<String>> = clients
                        .iter()
                        .map(|c| {
                            vec![
                                c.client.to_string(),
                                c.app.clone(),
                                c.primary.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    writeln!(out).map_err(io)?;
                    write!(out, "{}", table(&["CLIENT", "APP", "PRIMARY"], &rows)).map_err(io)?;
                }
                if let Some(probes) = &status.probes {
                    let rows: Vec<Vec<String>> = probes
                        .iter()
                        .map(|p| {
                            vec![
                                p.interface.clone(),
                                format!("{:?}", p.mode).to_lowercase(),
                                readiness(p.readiness).into(),
                                p.validated_ms_ago.map_or_else(
                                    || "-".into(),
                                    |ms| format!("{:.1}s", ms as f64 / 1000.0),
                                ),
                                p.energy.probes_sent.to_string(),
                                p.energy.radio_wakeups.to_string(),
                                p.default_routes.to_string(),
                                p.addresses.join(" "),
                            ]
                        })
                        .collect();
                    writeln!(out).map_err(io)?;
                    write!(
                        out,
                        "{}",
                        table(
                            &[
                                "INTERFACE",
                                "PROBING",
                                "READY",
                                "EVIDENCE AGO",
                                "PROBES",
                                "WAKEUPS",
                                "DEFAULT ROUTES",
                                "ADDRESSES"
                            ],
                            &rows
                        )
                    )
                    .map_err(io)?;
                }
            }
        }
        Command::Links => {
            let Reply::Links {
                interfaces, usage, ..
            } = c.call(|id| Request::Links { id })?
            else {
                return Err(unexpected());
            };
            if json {
                // The interface array of the policy's state file, unchanged; readiness and
                // probing cost are in `status --json` (`probes`).
                writeln!(out, "{}", to_json(&interfaces)).map_err(io)?;
            } else {
                write!(out, "{}", links_table(&interfaces, &usage)).map_err(io)?;
            }
        }
        Command::Explain { app } => {
            let app = app.clone();
            let Reply::Decision { decision, .. } = c.call(|id| Request::Explain {
                id,
                app,
                flow: None,
            })?
            else {
                return Err(unexpected());
            };
            if json {
                writeln!(out, "{}", to_json(&decision)).map_err(io)?;
            } else {
                write!(out, "{}", decision_text(&decision)).map_err(io)?;
            }
        }
        Command::Reload => {
            let Reply::Reloaded { policy, .. } = c.call(|id| Request::Reload { id })? else {
                return Err(unexpected());
            };
            if json {
                writeln!(out, "{}", serde_json::json!({ "reloaded": policy })).map_err(io)?;
            } else {
                writeln!(out, "reloaded {policy}").map_err(io)?;
            }
        }
        Command::Watch { app, count } => {
            let app = app.clone();
            c.call(|id| Request::Subscribe {
                id,
                app,
                flow: None,
            })?;
            c.set_timeout(None)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            let mut seen = 0u64;
            while count.is_none_or(|n| seen < n) {
                match c.next_event()? {
                    Reply::Update(u) => {
                        seen += 1;
                        if json {
                            writeln!(out, "{}", to_json(&u)).map_err(io)?;
                        } else {
                            let paths: Vec<String> = u
                                .decision
                                .paths
                                .iter()
                                .map(|p| format!("{} {}", p.interface, p.role))
                                .collect();
                            let links: Vec<String> = u
                                .interfaces
                                .iter()
                                .map(|i| format!("{} {}", i.name, i.state))
                                .collect();
                            writeln!(
                                out,
                                "{}: {} | links: {}",
                                u.decision.app.as_deref().unwrap_or("-"),
                                if paths.is_empty() {
                                    "blocked (no permitted path)".to_owned()
                                } else {
                                    paths.join(", ")
                                },
                                links.join(", ")
                            )
                            .map_err(io)?;
                        }
                        out.flush().map_err(io)?;
                    }
                    Reply::Error { code, message, .. } => {
                        return Err(ClientError::Refused { code, message });
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn unexpected() -> ClientError {
    ClientError::Protocol("roamd answered with an unexpected message".into())
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The links as a table; with `usage` (agents that send it), each link's readiness, probes
/// sent and radio wake-ups they caused too.
fn links_table(interfaces: &[Interface], usage: &[LinkUsage]) -> String {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = interfaces
        .iter()
        .map(|i| {
            let u = usage.iter().find(|u| u.interface == i.name);
            let mut row = vec![
                i.name.clone(),
                i.kind.to_string(),
                i.state.to_string(),
                i.rtt_ms.map_or_else(dash, |r| format!("{r:.1}ms")),
                i.loss_pct.map_or_else(dash, |l| format!("{l:.0}%")),
                i.metered
                    .map_or_else(dash, |m| if m { "yes" } else { "no" }.into()),
                i.up_for_ms
                    .map_or_else(dash, |ms| format!("{:.1}s", ms as f64 / 1000.0)),
            ];
            if !usage.is_empty() {
                row.push(u.map_or_else(dash, |u| readiness(u.readiness).into()));
                row.push(u.map_or_else(dash, |u| u.energy.probes_sent.to_string()));
                row.push(u.map_or_else(dash, |u| u.energy.radio_wakeups.to_string()));
            }
            row
        })
        .collect();
    let mut header = vec!["NAME", "KIND", "STATE", "RTT", "LOSS", "METERED", "UP FOR"];
    if !usage.is_empty() {
        header.extend(["READY", "PROBES", "WAKEUPS"]);
    }
    table(&header, &rows)
}

fn readiness(r: Readiness) -> &'static str {
    match r {
        Readiness::Cold => "cold",
        Readiness::Validated => "validated",
        Readiness::Warm => "warm",
    }
}

fn decision_text(d: &Decision) -> String {
    let rows: Vec<Vec<String>> = d
        .paths
        .iter()
        .map(|p| vec![p.interface.clone(), p.link.clone(), p.role.to_string()])
        .collect();
    let mut s = format!(
        "app: {}\nmultipath: {}\n",
        d.app.as_deref().unwrap_or("-"),
        d.multipath
    );
    if rows.is_empty() {
        s.push_str("paths: none (the policy leaves this app no path: it is blocked)\n");
    } else {
        s.push_str(&table(&["INTERFACE", "LINK", "ROLE"], &rows));
    }
    for line in &d.explain {
        s.push_str(&format!("  {line}\n"));
    }
    s
}

/// Left-aligned columns, two spaces apart; no header line when `header` is empty.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut width = vec![0; cols];
    let head: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for r in rows.iter().chain((!head.is_empty()).then_some(&head)) {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let mut s = String::new();
    for r in (!head.is_empty()).then_some(&head).into_iter().chain(rows) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}
