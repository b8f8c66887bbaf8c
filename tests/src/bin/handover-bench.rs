//! `handover-bench`: measures how long sessions stall when the handset's preferred link fails,
//! for roam and the baseline of each transport, in the same run, on real namespaces and kernels.
//!
//! ```text
//! handover-bench --transport all --scenario all --quick --json bench.json
//! handover-bench --transport mptcp --scenario blackhole --rtt 50 --repeats 20
//! handover-bench --quick --direction both --peer stock
//! ```
//!
//! `--direction down` has the server stream to the handset (what a phone mostly does) and
//! measures the gap where the handset's app reads; `--peer stock` serves the roam session with
//! a server nobody on the project wrote (aioquic for QUIC, socat under mptcpize for MPTCP;
//! tcp-resume has none and says so). The baselines run beside roam, against their own plain
//! servers, in every direction.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use roam_tests::agent::AgentExe;
use roam_tests::bench::{Report, RunReport, table};
use roam_tests::handover::{FAILED_LINK, Outcome, RunConfig, run_once};
use roam_tests::scenario::Scenario;
use roam_tests::system::roam::{APP, Roam, policy_with_multipath};
use roam_tests::system::{Direction, Peer, System, Transport, baseline, stock};
use roam_tests::timeline::{Panel, write_svg};

#[derive(Debug, Parser)]
#[command(about = "Measure the delivery gap of sessions when the handset's preferred link fails")]
struct Args {
    /// quic, mptcp, tcp-resume or all.
    #[arg(long, default_value = "all")]
    transport: String,
    /// link-down, addr-remove, blackhole, link-return, flap or all.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// up (the handset sends), down (the server streams to the handset; the gap is measured
    /// where the handset's app reads) or both.
    #[arg(long, default_value = "up")]
    direction: String,
    /// What serves the roam session: roam (a roam Listener), stock (aioquic for QUIC, socat
    /// under mptcpize for MPTCP; tcp-resume has no stock peer and is skipped with a note) or
    /// all. Stock peers need `mptcpize`, `socat` and Python's aioquic (scripts/common.sh).
    #[arg(long, default_value = "roam")]
    peer: String,
    /// The roam rows' multipath mode (off, handover, interactive, aggregate), written into
    /// their policy's default block; without it the policy says none (handover).
    /// `interactive` keeps the backup warm: tcp-resume keeps a standby connection there.
    #[arg(long)]
    multipath: Option<String>,
    /// Emulated round-trip time of every path in ms (0: plain veth, no emulator).
    #[arg(long, default_value_t = 0.0)]
    rtt: f64,
    /// Repeats per scenario and system (default 20, or 5 with --quick).
    #[arg(long)]
    repeats: Option<u32>,
    /// Run over IPv6 instead of IPv4.
    #[arg(long)]
    ipv6: bool,
    /// Short runs: 5 repeats, a 3 s timeout; one transport takes under two minutes.
    #[arg(long)]
    quick: bool,
    /// Write the report as JSON (the shape in docs/benchmarks.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to draw the timeline of the first scenario's first repeat, per system.
    #[arg(long, default_value = "handover-timeline.svg")]
    svg: PathBuf,
}

fn parse_list<T: std::str::FromStr<Err = String> + Copy>(s: &str, all: &[T]) -> Result<Vec<T>> {
    if s == "all" || s == "both" {
        return Ok(all.to_vec());
    }
    s.split(',')
        .map(|w| w.trim().parse::<T>().map_err(anyhow::Error::msg))
        .collect()
}

fn main() -> ExitCode {
    // Re-executed inside a handset as the agent (the MPTCP rows run roamd there).
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    let args = Args::parse();
    if let Err(code) = roam_tests::binary::start(
        "handover-bench",
        "sudo ./target/release/handover-bench --quick",
    ) {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handover-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let transports = parse_list(&args.transport, &Transport::ALL)?;
    let scenarios = parse_list(&args.scenario, &Scenario::ALL)?;
    let directions = parse_list(&args.direction, &Direction::ALL)?;
    let peers = parse_list(&args.peer, &Peer::ALL)?;
    if let Some(mode) = &args.multipath
        && !["off", "handover", "interactive", "aggregate"].contains(&mode.as_str())
    {
        anyhow::bail!("--multipath {mode}: expected off, handover, interactive or aggregate");
    }
    if !(0.0..=2000.0).contains(&args.rtt) {
        anyhow::bail!("--rtt must be between 0 and 2000 ms");
    }
    let rtt = Duration::from_secs_f64(args.rtt / 1000.0);
    let base = RunConfig {
        ipv6: args.ipv6,
        ..if args.quick {
            RunConfig::quick(rtt)
        } else {
            RunConfig::full(rtt)
        }
    };
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 5 } else { 20 })
        .max(1);
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut panels = Vec::new();
    let mut notes = Vec::new();
    let agent = AgentExe::current()?;
    for transport in &transports {
        // roam (against each peer asked for) and the baseline take turns repeat by repeat:
        // all meet the same machine.
        let mut systems: Vec<Arc<dyn System>> = Vec::new();
        for peer in &peers {
            if *peer == Peer::Stock
                && let Some(why) = stock::missing(*transport)
            {
                eprintln!("  {why}; no stock row");
                notes.push(why);
                continue;
            }
            let mut roam = Roam::for_bench(*transport, &agent)?.with_peer(*peer)?;
            if let Some(mode) = &args.multipath {
                roam = roam.with_policy(&policy_with_multipath(mode), APP);
            }
            systems.push(Arc::new(roam));
        }
        systems.push(baseline(*transport)?);
        let t0 = Instant::now();
        for direction in &directions {
            for (si, scenario) in scenarios.iter().enumerate() {
                let mut outcomes: Vec<Vec<Outcome>> = systems.iter().map(|_| Vec::new()).collect();
                for repeat in 0..repeats {
                    for (system, outcomes) in systems.iter().zip(&mut outcomes) {
                        let cfg = RunConfig {
                            sample: si == 0 && repeat == 0 && *direction == directions[0],
                            seed: base.seed + repeat as u64,
                            direction: *direction,
                            ..base.clone()
                        };
                        let o = run_once(system.clone(), *scenario, &cfg).with_context(|| {
                            format!(
                                "{} (peer {}) / {direction} / {scenario} / repeat {}",
                                system.name(),
                                system.peer(),
                                repeat + 1
                            )
                        })?;
                        eprintln!(
                            "  {:<24} {:<10} {:<4} {:<8} {:<12} #{:<3} gap {:>8.1} ms  delivered {}/{}{}",
                            system.name(),
                            transport,
                            direction,
                            system.peer(),
                            scenario,
                            repeat + 1,
                            o.gap.as_secs_f64() * 1000.0,
                            o.delivered,
                            o.sent,
                            o.session_error
                                .as_deref()
                                .map(|e| format!("  DEAD: {e}"))
                                .unwrap_or_default()
                        );
                        if cfg.sample {
                            panels.push(panel(system.as_ref(), *scenario, &o));
                        }
                        outcomes.push(o);
                    }
                }
                for (system, outcomes) in systems.iter().zip(&outcomes) {
                    runs.push(RunReport::from_outcomes(
                        *scenario,
                        *transport,
                        system.name(),
                        (*direction, system.peer()),
                        rtt,
                        outcomes,
                    ));
                }
            }
        }
        eprintln!("{transport} done in {:.1} s", t0.elapsed().as_secs_f64());
    }
    println!();
    print!("{}", table(&runs));
    for note in &notes {
        println!("note: {note}");
    }
    println!("over {}", if args.ipv6 { "IPv6" } else { "IPv4" });
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&Report { runs })?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    if !panels.is_empty() {
        write_svg(
            &args.svg,
            &panels,
            -300.0,
            (base.timeout.as_secs_f64() * 1000.0).min(1500.0),
        )
        .with_context(|| format!("drawing {}", args.svg.display()))?;
        let shown = std::fs::canonicalize(&args.svg).unwrap_or_else(|_| args.svg.clone());
        println!("timeline: {}", shown.display());
    }
    Ok(())
}

/// The timeline picture of one repeat.
fn panel(system: &dyn System, scenario: Scenario, o: &Outcome) -> Panel {
    Panel {
        title: format!(
            "{} ({}, peer {}), {}: gap {:.1} ms{}",
            system.name(),
            system.transport(),
            system.peer(),
            scenario.describe(FAILED_LINK),
            o.gap.as_secs_f64() * 1000.0,
            if o.session_error.is_some() {
                " (session died)"
            } else {
                ""
            }
        ),
        links: o.links.clone(),
        samples: o.samples.clone(),
        arrivals: o.delivery.arrivals.clone(),
        origin: o.failed_at,
        marks: Vec::new(),
    }
}
