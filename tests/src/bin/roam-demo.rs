//! `roam-demo`: a phone in network namespaces, a session to a server, WiFi failing and coming
//! back, and what happened, told briefly.
//!
//! Real roam on both sides of the handset: the agent (`roam_agent::daemon`, run by this very
//! binary re-executed inside the handset namespace, since `cargo run -p roam-tests` builds no
//! `roamd`) watching the links and deciding, and a `roam::Session` to a `roam::Listener` in the
//! server namespace. The session subscribes to that roamd on its socket (the first session
//! event says so) and follows the decisions it pushes; the timeline shows roamd deciding and the
//! session following, and where the server sees the client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use roam::SessionEvent;
use roam_tests::agent::AgentExe;
use roam_tests::emulator::PathConfig;
use roam_tests::handover::{RunConfig, run_with};
use roam_tests::system::roam::Roam;
use roam_tests::system::{System, Transport};
use roam_tests::timeline::{Panel, write_svg};
use roam_tests::topology::{SERVICE_V4, Topology};
use roam_tests::traffic::{MSG_LEN, expected_digest};

/// The policy the demo handset runs: WiFi first, then cellular, Bluetooth as a last resort.
const DEMO_POLICY: &str = r#"
link wifi = kind wifi
link cell = kind cellular
link bt   = kind bluetooth

default {
  prefer wifi over cell over bt
  avoid bt unless cell.down
}
"#;
const APP: &str = "com.example.demo";

#[derive(Debug, Parser)]
#[command(about = "A handset in network namespaces: a session survives WiFi failing and returning")]
struct Args {
    /// Emulated round-trip time of every path in ms (0: plain veth).
    #[arg(long, default_value_t = 0.0)]
    rtt: f64,
    /// How long WiFi stays down, in ms.
    #[arg(long, default_value_t = 1000)]
    outage_ms: u64,
    /// The session's transport: quic, mptcp or tcp-resume.
    #[arg(long, default_value = "quic")]
    transport: String,
    /// Where to draw the timeline.
    #[arg(long, default_value = "roam-demo-timeline.svg")]
    svg: PathBuf,
}

fn main() -> ExitCode {
    // Re-executed inside the handset as the agent.
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    let args = Args::parse();
    if let Err(code) = roam_tests::binary::start(
        "roam-demo",
        "sudo -E cargo run --release -p roam-tests --bin roam-demo",
    ) {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roam-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let transport: Transport = args.transport.parse().map_err(anyhow::Error::msg)?;
    let rtt = Duration::from_secs_f64(args.rtt.clamp(0.0, 2000.0) / 1000.0);
    let mut builder = Topology::phone();
    if !rtt.is_zero() {
        builder = builder.emulated(PathConfig::with_rtt(rtt), PathConfig::with_rtt(rtt));
    }
    let topo = Arc::new(builder.build().context("building the handset")?);
    println!("handset  namespace {}", topo.handset().name());
    for l in topo.links() {
        println!(
            "  {:<7} {:<9} {}  -> server path {}",
            l.name,
            l.kind.to_string(),
            l.handset_v4,
            l.server_v4
        );
    }
    println!(
        "server   namespace {}, roam::Listener on {SERVICE_V4}:{}, paths {}",
        topo.server().name(),
        roam_tests::system::roam::PORT,
        if rtt.is_zero() {
            "plain veth".to_owned()
        } else {
            format!("emulated, rtt {} ms", args.rtt)
        }
    );
    println!("policy   prefer wifi over cell over bt (bt only when cell is down), for {APP}");

    let system = Arc::new(
        Roam::new(transport)?
            .with_policy(DEMO_POLICY, APP)
            .with_agent(AgentExe::current()?),
    );
    system.prepare(&topo)?;
    let first = system.agent_updates();
    println!(
        "roamd    running in the handset (this binary as the agent: roam_agent::daemon); primary {}",
        first
            .first()
            .and_then(|u| u.primary.as_deref())
            .unwrap_or("none")
    );
    println!(
        "session  roam::Session over {transport}, TLS verified against a test CA, subscribing to roamd"
    );
    println!(
        "         on {} for its decisions",
        system.agent_socket().unwrap_or_default().display()
    );

    let outage = Duration::from_millis(args.outage_ms.clamp(10, 10_000));
    let cfg = RunConfig {
        warmup: Duration::from_millis(500),
        after: outage + Duration::from_millis(1000),
        timeout: Duration::from_secs(5),
        sample: true,
        ..RunConfig::quick(rtt)
    };
    let mut marks: Vec<(Instant, String)> = Vec::new();
    let o = run_with(system.clone(), &topo, &cfg, |t| {
        marks.push((Instant::now(), "WiFi (wlan0) goes down".into()));
        t.link_down("wlan0")?;
        // The outage is the story being told: WiFi stays away this long.
        std::thread::sleep(outage);
        marks.push((Instant::now(), "WiFi (wlan0) comes back".into()));
        t.link_up("wlan0")?;
        Ok(None)
    });
    let agent_updates = system.agent_updates();
    let session_events = system.events();
    system.finish();
    let o = o?;

    let secs = |t: Instant| t.saturating_duration_since(o.paced_from).as_secs_f64();
    let down_at = marks.first().map(|m| m.0).unwrap_or(o.failed_at);
    let back_at = marks.get(1).map(|m| m.0).unwrap_or(o.failed_at);
    let gap_of = |from: Instant, to: Option<Instant>| -> f64 {
        let d = match to {
            Some(to) => o.delivery.until(to),
            None => o.delivery.clone(),
        };
        let pause = d.longest_pause_after(from).unwrap_or_default();
        let hold = d
            .longest_hold_after(from, o.paced_from, cfg.interval)
            .unwrap_or_default();
        pause.max(hold).as_secs_f64() * 1000.0
    };
    println!();
    println!("timeline (s since the session started sending)");
    let mut events: Vec<(Instant, String)> = marks.clone();
    for (at, peer) in &o.delivery.peers {
        let link = topo
            .links()
            .iter()
            .find(|l| peer.ip() == std::net::IpAddr::from(l.handset_v4))
            .map(|l| l.name.as_str())
            .unwrap_or("?");
        events.push((*at, format!("server sees the client at {peer} ({link})")));
    }
    let follows_roamd = session_events.iter().any(|(_, e)| {
        matches!(e, SessionEvent::DecisionSourceChosen { source, .. } if source.starts_with("roamd"))
    });
    // Where the session ended: the last move's destination.
    let ended_on = session_events.iter().rev().find_map(|(_, e)| match e {
        SessionEvent::PathChanged { to, .. } => Some(to.interface.clone()),
        _ => None,
    });
    let mut last: Option<Option<String>> = None;
    for u in agent_updates {
        if last.as_ref() == Some(&u.primary) {
            continue;
        }
        let what = match &u.primary {
            Some(p) => format!("roamd decides: primary {p} ({})", u.links.join(", ")),
            None => format!("roamd decides: no usable link ({})", u.links.join(", ")),
        };
        if last.is_some() {
            events.push((u.at, what));
        }
        last = Some(u.primary);
    }
    for (at, e) in session_events {
        let what = match e {
            SessionEvent::PathChanged { from, to, reason } => format!(
                "session moves {} -> {} ({reason})",
                from.map(|f| f.interface)
                    .unwrap_or_else(|| "nothing".into()),
                to.interface
            ),
            SessionEvent::DecisionSourceChosen { source, why } => {
                format!("session's decision source: {source} ({why})")
            }
            SessionEvent::DecisionUpdated(d) => format!(
                "session {}: primary {}",
                if follows_roamd {
                    "follows roamd's push"
                } else {
                    "hears its embedded monitor"
                },
                d.primary().map(|p| p.interface.as_str()).unwrap_or("none")
            ),
            SessionEvent::Degraded { path, reason } => {
                format!("session degraded on {} ({reason})", path.interface)
            }
            SessionEvent::Recovered { path } => format!("session recovered on {}", path.interface),
            SessionEvent::Resumed { path, resent } => format!(
                "session resumed on {} ({resent} bytes sent again)",
                path.map(|p| p.interface).unwrap_or_default()
            ),
            SessionEvent::TransportChosen { .. } | SessionEvent::SubflowsChanged(_) => continue,
            other => format!("session: {other:?}"),
        };
        events.push((at, what));
    }
    events.sort_by_key(|e| e.0);
    for (at, what) in &events {
        // Events before the failure are the setup, already told above.
        if *at < down_at
            && !what.starts_with("server sees")
            && !what.starts_with("session's decision source")
        {
            continue;
        }
        println!("  {:>7.3}  {what}", secs(*at));
        if *at == down_at {
            println!(
                "           longest pause in delivery until WiFi is back: {:.1} ms",
                gap_of(*at, Some(back_at))
            );
        } else if *at == back_at {
            println!(
                "           longest pause in delivery from then on: {:.1} ms",
                gap_of(*at, None)
            );
        }
    }
    let intact =
        o.corrupted == 0 && o.delivered == o.sent && o.delivery.digest == expected_digest(o.sent);
    println!(
        "  {:>7.3}  session ends on {}: {} of {} bytes delivered, {}",
        secs(Instant::now().min(o.delivery.arrivals.last().copied().unwrap_or(o.failed_at))),
        ended_on.as_deref().unwrap_or("the link it started on"),
        o.delivered * MSG_LEN as u64,
        o.sent * MSG_LEN as u64,
        if intact {
            "every byte intact (the server's hash of the stream matches what was sent)".to_owned()
        } else {
            format!(
                "{} messages corrupted or missing",
                o.corrupted + o.sent - o.delivered
            )
        }
    );
    if let Some(e) = &o.session_error {
        println!("           the session died: {e}");
    }
    let panel = Panel {
        title: format!(
            "{}: WiFi down for {} ms, then back",
            system.name(),
            outage.as_millis()
        ),
        links: o.links.clone(),
        samples: o.samples.clone(),
        arrivals: o.delivery.arrivals.clone(),
        origin: o.failed_at,
        marks: vec![(back_at, "WiFi back".into())],
    };
    let to_ms = (outage + Duration::from_millis(900)).as_secs_f64() * 1000.0;
    write_svg(&args.svg, &[panel], -400.0, to_ms)?;
    let shown = std::fs::canonicalize(&args.svg).unwrap_or_else(|_| args.svg.clone());
    println!();
    println!("picture: {}", shown.display());
    if o.session_error.is_some() || !intact {
        anyhow::bail!("the session did not survive intact");
    }
    Ok(())
}
