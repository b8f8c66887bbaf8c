//! `roam-demo`: a phone in network namespaces, a session to a server, WiFi failing and coming
//! back, and what happened, told briefly.
//!
//! The roam SDK's sessions do not exist yet, so the session is the best real transport there is
//! today (a quinn QUIC session, TLS verified against a test CA, server migration on), and the
//! decision side is roam's policy engine (`roam_policy`) evaluated on the handset's link states
//! at each event.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use roam_policy::{Decision, Interface, LinkState, Policy, State};
use roam_tests::agent::{self, Agent};
use roam_tests::emulator::PathConfig;
use roam_tests::handover::{RunConfig, run_with};
use roam_tests::system::{Transport, baseline};
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
    /// Where to draw the timeline.
    #[arg(long, default_value = "roam-demo-timeline.svg")]
    svg: PathBuf,
}

fn main() -> ExitCode {
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

fn primary(d: &Decision) -> String {
    match d.primary() {
        Some(p) => format!("{} ({})", p.interface, p.link),
        None => "none (blocked)".into(),
    }
}

fn run(args: &Args) -> Result<()> {
    let policy = Policy::parse(DEMO_POLICY).map_err(|e| anyhow::anyhow!(e.render("demo.roam")))?;
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
        "server   namespace {}, service {SERVICE_V4}, paths {}",
        topo.server().name(),
        if rtt.is_zero() {
            "plain veth".to_owned()
        } else {
            format!("emulated, rtt {} ms", args.rtt)
        }
    );
    let decide = |down: &[&str]| -> Decision {
        let interfaces = topo
            .links()
            .iter()
            .map(|l| {
                let state = if down.contains(&l.name.as_str()) {
                    LinkState::Down
                } else {
                    LinkState::Validated
                };
                Interface::new(l.name.clone(), l.kind, state)
            })
            .collect();
        policy.evaluate(&State {
            app: Some(APP.into()),
            flow: None,
            interfaces,
        })
    };
    println!(
        "policy   prefer wifi over cell over bt; for {APP} the primary is {}",
        primary(&decide(&[]))
    );
    // The agent, when it was built beside this binary: it watches the handset's links itself.
    let agent = match agent::beside_current_exe() {
        Some((roamd, roamctl)) => {
            match Agent::start(topo.handset(), &roamd, &roamctl, DEMO_POLICY, APP) {
                Ok(a) => {
                    println!(
                        "roamd    running in the handset (dry run: it watches and decides, changes nothing)"
                    );
                    Some(a)
                }
                Err(e) => {
                    println!(
                        "roamd    did not start ({e:#}); decisions come from roam_policy alone"
                    );
                    None
                }
            }
        }
        None => {
            println!(
                "roamd    not built beside roam-demo (cargo build --release -p roam-agent adds it); decisions come from roam_policy alone"
            );
            None
        }
    };
    println!(
        "session  roam's SDK sessions are not there yet: the session is the best real transport today"
    );
    println!(
        "         (quinn QUIC from the wildcard address, TLS verified against a test CA, server migration on)"
    );

    let system = baseline(Transport::Quic)?;
    system.prepare(&topo)?;
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
        marks.push((
            Instant::now(),
            format!("policy: primary is now {}", primary(&decide(&["wlan0"]))),
        ));
        // The outage is the story being told: WiFi stays away this long.
        std::thread::sleep(outage);
        marks.push((Instant::now(), "WiFi (wlan0) comes back".into()));
        t.link_up("wlan0")?;
        marks.push((
            Instant::now(),
            format!("policy: primary is now {}", primary(&decide(&[]))),
        ));
        Ok(None)
    })?;

    let secs = |t: Instant| t.saturating_duration_since(o.paced_from).as_secs_f64();
    let back_at = marks.get(2).map(|m| m.0).unwrap_or(o.failed_at);
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
    if let Some(a) = &agent {
        let mut last: Option<Option<String>> = None;
        for u in a.updates() {
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
    }
    events.sort_by_key(|e| e.0);
    for (at, what) in &events {
        println!("  {:>7.3}  {what}", secs(*at));
        if Some(at) == marks.first().map(|m| &m.0) && what.starts_with("WiFi") {
            println!(
                "           longest pause in delivery: {:.1} ms",
                gap_of(*at, Some(back_at))
            );
        } else if *at == back_at && what.starts_with("WiFi") {
            println!(
                "           longest pause in delivery: {:.1} ms",
                gap_of(*at, None)
            );
        }
    }
    let intact =
        o.corrupted == 0 && o.delivered == o.sent && o.delivery.digest == expected_digest(o.sent);
    println!(
        "  {:>7.3}  session ends: {} of {} bytes delivered, {}",
        secs(Instant::now().min(o.delivery.arrivals.last().copied().unwrap_or(o.failed_at))),
        o.delivered * MSG_LEN as u64,
        o.sent * MSG_LEN as u64,
        if intact {
            "every byte intact (digests match)".to_owned()
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
