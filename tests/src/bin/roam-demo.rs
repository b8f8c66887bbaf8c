//! `roam-demo`: a phone in network namespaces, a session to a server, WiFi going silent and
//! coming back, and what happened, told briefly; then a plain quinn client through the same
//! failure in the same handset, to show why roam exists.
//!
//! Real roam on both sides of the handset: the agent (`roam_agent::daemon`, run by this very
//! binary re-executed inside the handset namespace, since `cargo run -p roam-tests` builds no
//! `roamd`) watching the links and deciding, and a `roam::Session` to a `roam::Listener` in the
//! server namespace. The session subscribes to that roamd on its socket (the first session
//! event says so) and follows the decisions it pushes; the timeline shows roamd deciding and the
//! session following, and where the server sees the client.
//!
//! The failure is the one a phone meets most and notices least: WiFi stays associated, with its
//! address and routes, and carries nothing (an access point whose uplink died). The kernel sees
//! no change, so a plain QUIC client on the wildcard address keeps sending into the silence
//! until its idle timeout kills the connection. The roam session sees its own traffic stall
//! and moves to cellular within about 100 ms; roamd, at its shipped pacing (links validated
//! once, then probed against a reflector on the server only on suspicion), confirms with a
//! probe burst and moves the device's decision too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use roam::SessionEvent;
use roam_tests::agent::AgentExe;
use roam_tests::emulator::PathConfig;
use roam_tests::handover::Outcome;
use roam_tests::handover::{RunConfig, run_with};
use roam_tests::system::quic::BaselineQuinn;
use roam_tests::system::roam::Roam;
use roam_tests::system::{ClientCtx, ServerCtx, System, Task, Transport};
use roam_tests::timeline::{Panel, write_svg};
use roam_tests::topology::{Direction, SERVICE_V4, Topology};
use roam_tests::traffic::expected_digest;

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

/// How long the roam session is watched after WiFi comes back: roamd rechecks a failed link
/// after 2 s, doubling, and found WiFi again 3.2 s after its return in a run here.
const RETURN_WINDOW: Duration = Duration::from_secs(5);

/// Both clients' idle timeout: a connection that hears nothing from its peer this long is dead.
/// Also how long the run waits for a stalled session.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(
    about = "A handset in network namespaces: a roam session survives WiFi going silent and \
             returning, and a plain quinn client through the same failure does not"
)]
struct Args {
    /// Emulated round-trip time of every path in ms (0: plain veth).
    #[arg(long, default_value_t = 0.0)]
    rtt: f64,
    /// How long WiFi stays silent, in ms (longer than the clients' 2 s idle timeout, the
    /// plain quinn client dies).
    #[arg(long, default_value_t = 3000)]
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
            .with_agent(AgentExe::current()?)
            .with_probes(),
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
        "         shipped probe pacing: links validated once, then probed only on suspicion, against a reflector on {SERVICE_V4}"
    );
    println!(
        "session  roam::Session over {transport}, TLS verified against a test CA, subscribing to roamd"
    );
    println!(
        "         on {} for its decisions; idle timeout {} s",
        system.agent_socket().unwrap_or_default().display(),
        IDLE_TIMEOUT.as_secs()
    );

    let outage = Duration::from_millis(args.outage_ms.clamp(10, 10_000));
    let cfg = RunConfig {
        warmup: Duration::from_millis(500),
        // WiFi's return is seen by roamd's recheck of a failed link: the session gets a while
        // to go back.
        after: outage + RETURN_WINDOW,
        timeout: IDLE_TIMEOUT,
        sample: true,
        ..RunConfig::quick(rtt)
    };
    let mut marks: Vec<(Instant, String)> = Vec::new();
    let o = run_with(system.clone(), &topo, &cfg, |t| {
        silence(t, outage, &mut marks)
    });
    let agent_updates = system.agent_updates();
    let session_events = system.events();
    system.finish();
    let o = o?;

    let secs = |t: Instant| t.saturating_duration_since(o.paced_from).as_secs_f64();
    let down_at = marks.first().map(|m| m.0).unwrap_or(o.failed_at);
    let back_at = marks.get(1).map(|m| m.0).unwrap_or(o.failed_at);
    println!();
    println!("timeline of the roam session (s since it started sending)");
    let mut events: Vec<(Instant, String)> = marks.clone();
    events.extend(server_sightings(&topo, &o));
    let follows_roamd = session_events.iter().any(|(_, e)| {
        matches!(e, SessionEvent::DecisionSourceChosen { source, .. } if source.starts_with("roamd"))
    });
    // Where the session ended: the last move's destination.
    let ended_on = session_events.iter().rev().find_map(|(_, e)| match e {
        SessionEvent::PathChanged { to, .. } => Some(to.interface.clone()),
        _ => None,
    });
    // Where it went when WiFi fell silent: the first move after the failure.
    let moved_to = session_events.iter().find_map(|(at, e)| match e {
        SessionEvent::PathChanged { to, .. } if *at >= down_at => Some(to.interface.clone()),
        _ => None,
    });
    // When it went back to WiFi after WiFi's return.
    let returned_at = session_events.iter().find_map(|(at, e)| match e {
        SessionEvent::PathChanged { to, .. } if *at >= back_at && to.interface == "wlan0" => {
            Some(*at)
        }
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
    let roam_pause = gap_ms(&o, &cfg, down_at, Some(back_at));
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
            println!("           longest pause in delivery until WiFi is back: {roam_pause:.1} ms");
        } else if *at == back_at {
            println!(
                "           longest pause in delivery from then on: {:.1} ms",
                gap_ms(&o, &cfg, *at, None)
            );
        }
    }
    let intact = is_intact(&o);
    println!(
        "  {:>7.3}  session ends on {}: {} of {} bytes delivered, {}",
        secs(Instant::now().min(o.delivery.arrivals.last().copied().unwrap_or(o.failed_at))),
        ended_on.as_deref().unwrap_or("the link it started on"),
        o.bytes_delivered(),
        o.bytes_sent(),
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

    // The same failure under the client an app would otherwise write.
    let quinn = Arc::new(Watched::new(Arc::new(BaselineQuinn::new()?)));
    println!();
    println!(
        "plain quinn: the same handset, the same failure, a quinn client on the wildcard address"
    );
    println!(
        "         (as an app would write it; server with migration on; idle timeout {} s)",
        IDLE_TIMEOUT.as_secs()
    );
    let mut qmarks: Vec<(Instant, String)> = Vec::new();
    // Nothing comes back to a dead connection: a second after WiFi's return is enough to see.
    let qcfg = RunConfig {
        after: outage + Duration::from_secs(1),
        ..cfg.clone()
    };
    let q = run_with(quinn.clone(), &topo, &qcfg, |t| {
        silence(t, outage, &mut qmarks)
    })?;
    let qsecs = |t: Instant| t.saturating_duration_since(q.paced_from).as_secs_f64();
    let q_down = qmarks.first().map(|m| m.0).unwrap_or(q.failed_at);
    let q_back = qmarks.get(1).map(|m| m.0).unwrap_or(q.failed_at);
    let mut qevents: Vec<(Instant, String)> = qmarks.clone();
    qevents.extend(server_sightings(&topo, &q).filter(|(at, _)| *at >= q_down));
    let q_end = quinn.ended();
    if let Some((at, why)) = &q_end {
        qevents.push((*at, format!("the quinn connection is dead: {why}")));
    }
    if let Some(last) = q.delivery.arrivals.iter().rev().find(|a| **a >= q_down) {
        qevents.push((*last, "last byte delivered after WiFi went silent".into()));
    }
    qevents.sort_by_key(|e| e.0);
    for (at, what) in &qevents {
        println!("  {:>7.3}  {what}", qsecs(*at));
    }
    let q_intact = is_intact(&q);
    let q_fate = match (&q_end, q_intact) {
        (Some((at, _)), _) => format!(
            "dead {:.1} s after WiFi went silent{}",
            at.saturating_duration_since(q_down).as_secs_f64(),
            if *at < q_back {
                ", before WiFi came back"
            } else {
                ""
            }
        ),
        (None, true) => format!(
            "survived: longest pause {:.1} ms (it waits on the silent WiFi until it returns)",
            gap_ms(&q, &qcfg, q_down, None)
        ),
        (None, false) => "stalled: not everything arrived".to_owned(),
    };
    println!(
        "           {} of {} bytes delivered; the app would have to notice, reconnect and resend",
        q.bytes_delivered(),
        q.bytes_sent()
    );

    println!();
    println!(
        "why roam: WiFi silent for {} ms (still up, addresses and routes in place), in one run",
        outage.as_millis()
    );
    let back = match returned_at {
        Some(at) => format!(
            "back on wlan0 {:.1} s after WiFi returned",
            at.saturating_duration_since(back_at).as_secs_f64()
        ),
        None => format!(
            "ended on {}",
            ended_on.as_deref().unwrap_or("the link it started on")
        ),
    };
    println!(
        "  roam         longest pause {roam_pause:.1} ms, moved to {}, {back}, {}",
        moved_to.as_deref().unwrap_or("nothing"),
        if intact && o.session_error.is_none() {
            "every byte intact"
        } else {
            "NOT intact"
        }
    );
    println!("  plain quinn  {q_fate}");

    let panel = |o: &Outcome, title: String, back: Instant| Panel {
        title,
        links: o.links.clone(),
        samples: o.samples.clone(),
        arrivals: o.delivery.arrivals.clone(),
        origin: o.failed_at,
        marks: vec![(back, "WiFi back".into())],
    };
    let panels = [
        panel(
            &o,
            format!(
                "roam over {transport}: WiFi silent for {} ms, then back; longest pause {roam_pause:.0} ms",
                outage.as_millis()
            ),
            back_at,
        ),
        panel(
            &q,
            format!("plain quinn, the same failure: {q_fate}"),
            q_back,
        ),
    ];
    let to_ms = (outage + RETURN_WINDOW).as_secs_f64() * 1000.0;
    write_svg(&args.svg, &panels, -400.0, to_ms)?;
    let shown = std::fs::canonicalize(&args.svg).unwrap_or_else(|_| args.svg.clone());
    println!();
    println!("picture: {}", shown.display());
    if o.session_error.is_some() || !intact {
        anyhow::bail!("the roam session did not survive intact");
    }
    Ok(())
}

/// The failure: WiFi goes silent both ways for `outage` (link up, addresses and routes in
/// place), then carries traffic again. Notes both instants in `marks`.
fn silence(
    t: &Arc<Topology>,
    outage: Duration,
    marks: &mut Vec<(Instant, String)>,
) -> Result<Option<roam_tests::inject::Flapper>> {
    marks.push((
        Instant::now(),
        "WiFi (wlan0) goes silent: still up, passes nothing".into(),
    ));
    t.blackhole("wlan0", Direction::Both)?;
    // The outage is the story being told: WiFi stays silent this long.
    std::thread::sleep(outage);
    marks.push((Instant::now(), "WiFi (wlan0) comes back".into()));
    t.clear_blackhole("wlan0", Direction::Both)?;
    Ok(None)
}

/// Where the server saw the client, as timeline entries.
fn server_sightings<'a>(
    topo: &'a Topology,
    o: &'a Outcome,
) -> impl Iterator<Item = (Instant, String)> + 'a {
    o.delivery.peers.iter().map(|(at, peer)| {
        let link = topo
            .links()
            .iter()
            .find(|l| peer.ip() == std::net::IpAddr::from(l.handset_v4))
            .map(|l| l.name.as_str())
            .unwrap_or("?");
        (*at, format!("server sees the client at {peer} ({link})"))
    })
}

/// The longest pause in delivery from `from` (until `to`), in ms: the larger of the longest
/// gap between deliveries and the longest hold-up of a message.
fn gap_ms(o: &Outcome, cfg: &RunConfig, from: Instant, to: Option<Instant>) -> f64 {
    let d = match to {
        Some(to) => o.delivery.until(to),
        None => o.delivery.clone(),
    };
    let pause = d.longest_pause_after(from).unwrap_or_default();
    let hold = d
        .longest_hold_after(from, o.paced_from, cfg.interval)
        .unwrap_or_default();
    pause.max(hold).as_secs_f64() * 1000.0
}

/// Everything sent arrived, in order, undamaged.
fn is_intact(o: &Outcome) -> bool {
    o.corrupted == 0 && o.delivered == o.sent && o.delivery.digest == expected_digest(o.sent)
}

/// A system whose client's end is noted: when and why it failed.
struct Watched {
    inner: Arc<dyn System>,
    ended: Arc<std::sync::Mutex<Option<(Instant, String)>>>,
}

impl Watched {
    fn new(inner: Arc<dyn System>) -> Watched {
        Watched {
            inner,
            ended: Arc::default(),
        }
    }

    /// When and why the client failed, if it did.
    fn ended(&self) -> Option<(Instant, String)> {
        self.ended.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl System for Watched {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn transport(&self) -> Transport {
        self.inner.transport()
    }

    fn prepare(&self, topo: &Topology) -> Result<()> {
        self.inner.prepare(topo)
    }

    fn finish(&self) {
        self.inner.finish()
    }

    fn server(&self, ctx: ServerCtx) -> Task {
        self.inner.server(ctx)
    }

    fn client(&self, ctx: ClientCtx) -> Task {
        let task = self.inner.client(ctx);
        let ended = self.ended.clone();
        Box::pin(async move {
            let r = task.await;
            if let Err(e) = &r {
                *ended.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), format!("{e:#}")));
            }
            r
        })
    }
}
