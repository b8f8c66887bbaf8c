//! `energy-bench`: what roamd's probing costs the radios of a handset.
//!
//! ```text
//! energy-bench --json energy-bench.json
//! energy-bench --quick
//! energy-bench --sessions --quick
//! ```
//!
//! A handset (`wlan0` WiFi, `rmnet0` cellular, `bnep0` Bluetooth), a probe reflector on the
//! service address in the server namespace, and roamd in three configurations, one after the
//! other: the shipped defaults plus the probe target (`evidence`), the old pace (`periodic`:
//! every 50 ms where a session is, 2 s elsewhere) and validate-once (`once`, Android without
//! its stall detector). For each, after the links' first validation, three windows:
//!
//! - (a) `idle`: one app subscribed, its session idle on WiFi (no traffic);
//! - (b) `busy`: the same app, its session busy on WiFi (100 datagrams a second each way on
//!   wlan0, to an echo in the server);
//! - (c) `none`: no subscriber.
//!
//! Per link and window: the probes roamd sent (its own count, `status`), the packets on the
//! interface (its counters, sampled every 100 ms), and for cellular the modelled radio-on
//! fraction and energy: the radio is on from a promotion ([`PROMOTION`]) before the first
//! packet after idle until [`TAIL`] after the last packet, at [`RADIO_ON_W`] (LTE RRC, Huang
//! et al., MobiSys 2012); a 100 ms sample with packets counts as one packet. IPv6 is off on
//! the handset's links, so the kernel's own chatter (router solicitations, MLD) is not
//! counted against roamd.
//!
//! With `--sessions`, what one idle session costs instead (`roam_tests::idle`): a plain TCP
//! connection (the baseline: what an unmodified app holds) and a roam session per transport,
//! each established and left idle for a window on WiFi, then for one on cellular alone (WiFi
//! down before it connects), no roamd. Per row: the packets on that link per second, the
//! modelled radio-on fraction (cellular), and the session thread's CPU wake-ups per second.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use roam::TransportPreference;
use roam_ipc::client::Client;
use roam_ipc::proto::{Reply, Request};
use roam_tests::agent::{Agent, AgentConfig, AgentExe, REFLECT_PORT, Reflector};
use roam_tests::idle::{IdleSession, IdleSystem};
use roam_tests::netlink::Rtnl;
use roam_tests::system::roam::{APP, POLICY};
use roam_tests::topology::{SERVICE_V4, Topology};
use serde::Serialize;

/// The LTE RRC tail: the radio stays in its high-power state this long after a packet.
const TAIL: Duration = Duration::from_millis(11_500);
/// The LTE promotion from idle to connected, paid before the first packet after idle.
const PROMOTION: Duration = Duration::from_millis(260);
/// The power of a cellular radio in its high-power state, in watts.
const RADIO_ON_W: f64 = 1.0;
/// How often the interfaces' counters are sampled.
const SAMPLE: Duration = Duration::from_millis(100);
/// From the app's subscription to the first window.
const SETTLE: Duration = Duration::from_secs(8);
/// Links, in table order.
const LINKS: [&str; 3] = ["wlan0", "rmnet0", "bnep0"];

#[derive(Debug, Parser)]
#[command(about = "Measure what roamd's probing costs a handset's radios")]
struct Args {
    /// Length of each window, in seconds.
    #[arg(long, default_value_t = 40)]
    window_secs: u64,
    /// 10-second windows (the whole run takes under two minutes).
    #[arg(long)]
    quick: bool,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Measure idle sessions (each transport against a plain TCP connection) instead of
    /// roamd's probing.
    #[arg(long)]
    sessions: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Model {
    tail_s: f64,
    promotion_s: f64,
    radio_on_w: f64,
    sample_ms: u64,
}

#[derive(Debug, Serialize)]
struct Report<R> {
    model: Model,
    window_s: f64,
    rows: Vec<R>,
}

/// Writes the figures as JSON when `--json` asked for them.
fn write_json<R: Serialize>(
    path: Option<&PathBuf>,
    model: Model,
    window: Duration,
    rows: Vec<R>,
) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let report = Report {
        model,
        window_s: window.as_secs_f64(),
        rows,
    };
    std::fs::write(path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))
}

#[derive(Debug, Clone, Serialize)]
struct Row {
    config: &'static str,
    window: &'static str,
    link: &'static str,
    /// Probes roamd sent on the link in the window.
    roamd_packets: u64,
    /// Packets on the interface (sent + received) in the window.
    interface_packets: u64,
    /// roamd's probes per second.
    roamd_per_s: f64,
    /// Modelled radio-on fraction (cellular only).
    radio_on: Option<f64>,
    /// Modelled energy per hour at that fraction, in joules (cellular only).
    joules_per_hour: Option<f64>,
}

fn main() -> ExitCode {
    // Re-executed inside the handset as the agent, or in the server as the reflector.
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    let args = Args::parse();
    if let Err(code) =
        roam_tests::binary::start("energy-bench", "sudo ./target/release/energy-bench")
    {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("energy-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let window = Duration::from_secs(if args.quick {
        10
    } else {
        args.window_secs.max(1)
    });
    let model = Model {
        tail_s: TAIL.as_secs_f64(),
        promotion_s: PROMOTION.as_secs_f64(),
        radio_on_w: RADIO_ON_W,
        sample_ms: SAMPLE.as_millis() as u64,
    };
    println!(
        "radio model (cellular): on from a {:.0} ms promotion before the first packet after idle \
         until {:.1} s after the last packet, {:.1} W while on; counters sampled every {} ms",
        PROMOTION.as_secs_f64() * 1000.0,
        TAIL.as_secs_f64(),
        RADIO_ON_W,
        SAMPLE.as_millis()
    );
    if args.sessions {
        return sessions(args, window, model);
    }
    let exe = AgentExe::current()?;
    let mut rows = Vec::new();
    for (config, keys) in [
        ("evidence", ""),
        (
            "periodic",
            "pacing = \"periodic\"\nfast_interval_ms = 50\nidle_interval_ms = 2000\n",
        ),
        ("once", "pacing = \"once\"\n"),
    ] {
        eprintln!("energy-bench: {config}: 3 windows of {window:?}");
        rows.extend(measure(&exe, config, keys, window).with_context(|| config.to_owned())?);
    }
    print_table(&rows);
    write_json(args.json.as_ref(), model, window, rows)
}

/// One configuration: a fresh handset, roamd, and the three windows.
fn measure(
    exe: &AgentExe,
    config: &'static str,
    probe_keys: &str,
    window: Duration,
) -> Result<Vec<Row>> {
    let topo = Topology::phone().build()?;
    quiet_ipv6(&topo)?;
    let reflector = Reflector::start(
        topo.server(),
        exe,
        std::net::SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT),
    )
    .context("starting the probe reflector")?;
    let cfg = AgentConfig::probing_with(&[reflector.addr()], probe_keys);
    let agent = Agent::start_unsubscribed_with(topo.handset(), exe, POLICY, &cfg)?;
    let socket = agent.socket().to_path_buf();
    let mut admin = Client::connect(&socket, Some(Duration::from_secs(5)))?;

    // The app subscribes (and reads its updates) until told to stop; its links are
    // validated before the first window starts.
    let stop_sub = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = {
        let (stop, socket) = (stop_sub.clone(), socket.clone());
        std::thread::spawn(move || -> Result<()> {
            let mut sub = Client::connect(&socket, Some(Duration::from_secs(5)))?;
            sub.call(|id| Request::Subscribe {
                id,
                app: Some(APP.to_owned()),
                flow: None,
            })?;
            let _ = ready_tx.send(());
            sub.set_timeout(Some(Duration::from_millis(100)))?;
            while !stop.load(Ordering::Relaxed) {
                let _ = sub.next_event();
            }
            Ok(()) // the connection closes: the app is no longer subscribed
        })
    };
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the app could not subscribe")?;
    // The links' validation (one burst each) and what it sets off on these veths (the
    // kernel's ARP re-confirmation 5 s later, `delay_first_probe_time`; a real rmnet0 has no
    // ARP) are over before the first window.
    std::thread::sleep(SETTLE);

    let mut rows = window_of(&topo, &mut admin, config, "idle", window)?;
    let busy = busy_wifi(&topo)?;
    let measured = window_of(&topo, &mut admin, config, "busy", window);
    drop(busy);
    rows.extend(measured?);
    stop_sub.store(true, Ordering::Relaxed);
    subscriber
        .join()
        .map_err(|_| anyhow::anyhow!("the subscriber thread panicked"))??;
    std::thread::sleep(Duration::from_secs(1));
    rows.extend(window_of(&topo, &mut admin, config, "none", window)?);
    drop(agent);
    drop(reflector);
    Ok(rows)
}

/// One row of `--sessions`.
#[derive(Debug, Clone, Serialize)]
struct SessionRow {
    system: &'static str,
    link: &'static str,
    /// Packets on the link (sent + received) per second.
    packets_per_s: f64,
    /// Modelled radio-on fraction (cellular only).
    radio_on: Option<f64>,
    /// Modelled energy per hour at that fraction, in joules (cellular only).
    joules_per_hour: Option<f64>,
    /// The session thread's wake-ups per second.
    wakeups_per_s: f64,
}

/// `--sessions`: every system idle on WiFi, then on cellular alone.
fn sessions(args: &Args, window: Duration, model: Model) -> Result<()> {
    let systems = [
        IdleSystem::PlainTcp,
        IdleSystem::Roam(TransportPreference::Quic),
        IdleSystem::Roam(TransportPreference::Mptcp),
        IdleSystem::Roam(TransportPreference::TcpResume),
    ];
    let mut rows = Vec::new();
    for link in ["wlan0", "rmnet0"] {
        for system in systems {
            eprintln!(
                "energy-bench: {} idle on {link} for {window:?}",
                system.name()
            );
            rows.push(
                idle_window(system, link, window)
                    .with_context(|| format!("{} on {link}", system.name()))?,
            );
        }
    }
    println!(
        "{:<16} {:<7} {:>9} {:>9} {:>8} {:>10}",
        "SYSTEM", "LINK", "PKTS/S", "RADIO ON", "J/HOUR", "WAKEUPS/S"
    );
    for r in &rows {
        let (on, j) = radio_cells(r.radio_on, r.joules_per_hour);
        println!(
            "{:<16} {:<7} {:>9.2} {:>9} {:>8} {:>10.1}",
            r.system, r.link, r.packets_per_s, on, j, r.wakeups_per_s
        );
    }
    write_json(args.json.as_ref(), model, window, rows)
}

/// One system idle on `link` (the only link up besides Bluetooth, which the policy does not
/// use, when it is cellular) for `window`.
fn idle_window(system: IdleSystem, link: &'static str, window: Duration) -> Result<SessionRow> {
    let topo = Topology::phone().build()?;
    quiet_ipv6(&topo)?;
    if link != "wlan0" {
        topo.link_down("wlan0")?;
    }
    let session = IdleSession::start(&topo, system)?;
    // As for roamd's windows: the kernel's ARP re-confirmation of the gateway the handshake
    // used (5 s later on these veths; a real rmnet0 has no ARP) falls before the window.
    std::thread::sleep(SETTLE);
    let before = session.wakeups()?;
    let samples = sample(&topo, window)?;
    let after = session.wakeups()?;
    session.stop()?;
    let i = LINKS
        .iter()
        .position(|l| *l == link)
        .context("not a link of the phone")?;
    let f = LinkFigures::of(&samples, i, window);
    Ok(SessionRow {
        system: system.name(),
        link,
        packets_per_s: f.packets as f64 / f.secs,
        radio_on: f.radio_on,
        joules_per_hour: f.radio_on.map(|f| f * RADIO_ON_W * 3600.0),
        wakeups_per_s: after.saturating_sub(before) as f64 / f.secs,
    })
}

/// A busy session on WiFi: 100 datagrams a second from the handset's wlan0 (bound to it) to
/// an echo in the server, each echoed back; it stops when dropped.
struct Busy {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<()>>>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// UDP port of the busy window's echo in the server.
const ECHO_PORT: u16 = 9999;

fn busy_wifi(topo: &Topology) -> Result<Busy> {
    let stop = Arc::new(AtomicBool::new(false));
    let wlan = topo.link("wlan0")?;
    let echo_addr = std::net::SocketAddr::new(wlan.server_v4.into(), ECHO_PORT);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let echo = {
        let stop = stop.clone();
        topo.server().spawn("busy-echo", move || -> Result<()> {
            let s = std::net::UdpSocket::bind(echo_addr)?;
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
            let _ = ready_tx.send(());
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
            Ok(())
        })?
    };
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the busy window's echo did not start")?;
    let sender = {
        let stop = stop.clone();
        topo.handset().spawn("busy-send", move || -> Result<()> {
            use socket2::{Domain, Protocol, Socket, Type};
            let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            s.bind_device(Some(b"wlan0"))?;
            s.set_read_timeout(Some(Duration::from_millis(1)))?;
            let s: std::net::UdpSocket = s.into();
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let _ = s.send_to(&[0u8; 200], echo_addr);
                let _ = s.recv(&mut buf);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        })?
    };
    Ok(Busy {
        stop,
        threads: vec![echo, sender],
    })
}

/// IPv6 off on the handset's links before roamd starts: the kernel's router solicitations
/// and MLD reports would otherwise be counted as radio traffic roamd did not cause (a real
/// rmnet0 carries no such chatter after it comes up).
fn quiet_ipv6(topo: &Topology) -> Result<()> {
    for l in LINKS {
        topo.handset()
            .sysctl(&format!("net.ipv6.conf.{l}.disable_ipv6"), "1")?;
    }
    Ok(())
}

/// Probes roamd says it sent, per link in [`LINKS`] order.
fn probes_sent(admin: &mut Client) -> Result<[u64; 3]> {
    let Reply::Status { status, .. } = admin.call(|id| Request::Status { id })? else {
        bail!("roamd did not answer `status` with a status");
    };
    let probes = status
        .probes
        .context("roamd gave no per-link detail (is this client admin?)")?;
    let mut out = [0; 3];
    for (i, name) in LINKS.iter().enumerate() {
        out[i] = probes
            .iter()
            .find(|p| p.interface == *name)
            .map_or(0, |p| p.energy.probes_sent);
    }
    Ok(out)
}

/// Packets (sent + received) on each link of [`LINKS`], every [`SAMPLE`] for `window`.
fn sample(topo: &Topology, window: Duration) -> Result<Vec<(Duration, [u64; 3])>> {
    topo.handset()
        .run(move || -> Result<Vec<(Duration, [u64; 3])>> {
            let mut rtnl = Rtnl::open()?;
            let t0 = Instant::now();
            let mut out = Vec::new();
            let mut next = t0;
            while next <= t0 + window {
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let links = rtnl.links()?;
                let mut v = [0; 3];
                for (i, name) in LINKS.iter().enumerate() {
                    v[i] = links
                        .iter()
                        .find(|l| l.name == *name)
                        .and_then(|l| l.stats)
                        .map_or(0, |s| s.rx_packets + s.tx_packets);
                }
                out.push((t0.elapsed(), v));
                next += SAMPLE;
            }
            Ok(out)
        })?
}

/// The modelled radio-on time over a window of `length`: from a promotion before the first
/// packet after idle until [`TAIL`] after the last, clipped to the window. `packets` are the
/// instants (from the window's start) of the samples in which the counters moved.
fn radio_on(packets: &[Duration], length: Duration) -> Duration {
    let mut on = Duration::ZERO;
    let mut until: Option<Duration> = None;
    for &p in packets {
        match until {
            Some(u) if p <= u => {
                let end = (p + TAIL).min(length);
                on += end.saturating_sub(u);
                until = Some(end.max(u));
            }
            _ => {
                let end = (p + TAIL).min(length);
                on += PROMOTION + end.saturating_sub(p);
                until = Some(end);
            }
        }
    }
    on.min(length)
}

fn window_of(
    topo: &Topology,
    admin: &mut Client,
    config: &'static str,
    window_name: &'static str,
    window: Duration,
) -> Result<Vec<Row>> {
    let before = probes_sent(admin)?;
    let samples = sample(topo, window)?;
    let after = probes_sent(admin)?;
    let mut rows = Vec::new();
    for (i, link) in LINKS.iter().enumerate() {
        let f = LinkFigures::of(&samples, i, window);
        rows.push(Row {
            config,
            window: window_name,
            link,
            roamd_packets: after[i].saturating_sub(before[i]),
            interface_packets: f.packets,
            roamd_per_s: after[i].saturating_sub(before[i]) as f64 / f.secs,
            radio_on: f.radio_on,
            joules_per_hour: f.radio_on.map(|f| f * RADIO_ON_W * 3600.0),
        });
    }
    Ok(rows)
}

/// What a window's counter samples say of link `i` of [`LINKS`].
struct LinkFigures {
    /// Packets on the link (sent + received) in the window.
    packets: u64,
    /// The window's measured length in seconds.
    secs: f64,
    /// The modelled radio-on fraction (cellular only).
    radio_on: Option<f64>,
}

impl LinkFigures {
    fn of(samples: &[(Duration, [u64; 3])], i: usize, window: Duration) -> LinkFigures {
        let length = samples.last().map_or(window, |s| s.0);
        let secs = length.as_secs_f64().max(f64::EPSILON);
        let first = samples.first().map_or(0, |s| s.1[i]);
        let last = samples.last().map_or(0, |s| s.1[i]);
        let packets: Vec<Duration> = samples
            .windows(2)
            .filter(|w| w[1].1[i] > w[0].1[i])
            .map(|w| w[1].0)
            .collect();
        let cellular = LINKS[i] == "rmnet0";
        LinkFigures {
            packets: last.saturating_sub(first),
            secs,
            radio_on: cellular.then(|| radio_on(&packets, length).as_secs_f64() / secs),
        }
    }
}

/// The radio-on and energy cells of a table row ("-" for a link that is not cellular).
fn radio_cells(radio_on: Option<f64>, joules_per_hour: Option<f64>) -> (String, String) {
    (
        radio_on.map_or("-".to_owned(), |f| format!("{:.1}%", f * 100.0)),
        joules_per_hour.map_or("-".to_owned(), |j| format!("{j:.0}")),
    )
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<9} {:<6} {:<7} {:>8} {:>9} {:>10} {:>9} {:>8}",
        "CONFIG", "WINDOW", "LINK", "ROAMD", "ROAMD/S", "IFACE PKTS", "RADIO ON", "J/HOUR"
    );
    for r in rows {
        let (on, j) = radio_cells(r.radio_on, r.joules_per_hour);
        println!(
            "{:<9} {:<6} {:<7} {:>8} {:>9.2} {:>10} {:>9} {:>8}",
            r.config, r.window, r.link, r.roamd_packets, r.roamd_per_s, r.interface_packets, on, j
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_radio_model_pays_a_promotion_per_wakeup_and_a_tail_per_burst() {
        let s = Duration::from_secs;
        let len = s(100);
        assert_eq!(radio_on(&[], len), Duration::ZERO);
        // One packet: promotion plus the whole tail.
        assert_eq!(radio_on(&[s(10)], len), PROMOTION + TAIL);
        // A second packet within the tail extends it; no second promotion.
        assert_eq!(radio_on(&[s(10), s(15)], len), PROMOTION + s(5) + TAIL);
        // After the tail: a new wake-up.
        assert_eq!(radio_on(&[s(10), s(40)], len), 2 * (PROMOTION + TAIL));
        // Every 50 ms for the whole window: on all the time.
        let all: Vec<Duration> = (0..2000).map(|i| Duration::from_millis(50 * i)).collect();
        assert_eq!(radio_on(&all, len), len);
        // Clipped to the window.
        assert_eq!(radio_on(&[s(95)], len), PROMOTION + s(5));
    }
}
