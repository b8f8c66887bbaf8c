//! `soak-bench`: one long-lived roam session per transport through many handovers in a row,
//! with roamd running in the handset (probing both links against a reflector, as
//! `handover-bench` runs it): what is lost, damaged or broken, how long each handover paused
//! delivery, and whether roamd's memory or the client's memory and descriptors grow.
//!
//! ```text
//! soak-bench --handovers 1000 --transport all --json soak.json
//! soak-bench --quick
//! ```
//!
//! The sessions of every transport run at once, in one topology, through the same failures
//! ([`Step::CYCLE`]: link down, link return, address removal and return, silent blackhole and
//! its end, flap). Each client is a process of its own (this binary, re-executed in the
//! handset), so its memory and descriptors are measured alone; the server is a `roam::Listener`
//! in the server namespace checking every message and the stream's digest.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitCode, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use roam_tests::agent::{Agent, AgentConfig, AgentExe, REFLECT_PORT, Reflector};
use roam_tests::bench::GapMs;
use roam_tests::handover::{FAILED_LINK, RunConfig, bench_topology};
use roam_tests::soak::{self, ClientArgs, Step};
use roam_tests::stats::{percentile, round_to};
use roam_tests::system::Transport;
use roam_tests::system::roam::{APP, POLICY, PORT};
use roam_tests::tls::TestPki;
use roam_tests::topology::{SERVICE_V4, Topology};
use roam_tests::traffic::{MSG_LEN, Recorder, expected_digest};
use serde::Serialize;
use tokio::io::AsyncReadExt;

#[derive(Debug, Parser)]
#[command(
    about = "Run long-lived roam sessions through many handovers; report loss, pauses and growth"
)]
struct Args {
    /// Handovers (failures and returns of the preferred link) to run through.
    #[arg(long, default_value_t = 1000)]
    handovers: u64,
    /// quic, mptcp, tcp-resume, a comma-separated list, or all.
    #[arg(long, default_value = "all")]
    transport: String,
    /// 14 handovers (two cycles of every step).
    #[arg(long)]
    quick: bool,
    /// One 64-byte message every this many milliseconds, per session.
    #[arg(long, default_value_t = 1.0)]
    interval_ms: f64,
    /// Least time between two handovers, in milliseconds; the next one waits further until
    /// every session has caught up.
    #[arg(long, default_value_t = 300)]
    dwell_ms: u64,
    /// A session that has not caught up this many seconds after a handover is stalled; the
    /// soak goes on (the pause shows it). Also the sessions' idle timeout.
    #[arg(long, default_value_t = 10)]
    timeout_s: u64,
    /// Write the report as JSON: `{"runs": [one row per transport]}`.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Re-executed as roamd and its reflector (in the namespaces), or as a soak client.
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    if let Some(code) = soak::client_main() {
        return code;
    }
    let args = Args::parse();
    if let Err(code) =
        roam_tests::binary::start("soak-bench", "sudo ./target/release/soak-bench --quick")
    {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One row of the report: one transport's session through the whole soak.
#[derive(Debug, Serialize)]
struct Row {
    transport: String,
    /// Handovers run through.
    handovers: u64,
    bytes_sent: u64,
    bytes_delivered: u64,
    /// Messages damaged, missing or out of order, plus one if the stream digests differ.
    corrupted: u64,
    /// Session failures: the client's session ending, a server-side read error, or the
    /// listener accepting the transport's session more than once (a new session, not a resume).
    session_errors: u64,
    /// Longest delivery pause after each handover: percentiles over handovers.
    gap_ms: GapMs,
    roamd_rss_kib_start: u64,
    roamd_rss_kib_end: u64,
    client_rss_kib_start: u64,
    client_rss_kib_end: u64,
    client_fds_start: u64,
    client_fds_end: u64,
    /// Wall time of the soak (every transport ran at once).
    seconds: f64,
    /// The first session error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize)]
struct Report {
    runs: Vec<Row>,
}

/// What the server saw of one transport's sessions.
#[derive(Default)]
struct ServerSide {
    accepted: u64,
    errors: Vec<String>,
}

/// The SDK's transport as the bench's (an MPTCP session that fell back to TCP is the MPTCP
/// row's).
fn bench_transport(t: roam::Transport) -> Transport {
    match t {
        roam::Transport::Quic => Transport::Quic,
        roam::Transport::TcpResume => Transport::TcpResume,
        _ => Transport::Mptcp,
    }
}

/// One client process and what it printed.
struct Client {
    transport: Transport,
    child: Child,
    lines: Receiver<String>,
    failure: Option<String>,
    sent: Option<u64>,
}

impl Client {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one starts with `prefix` (returned without it) or `timeout`;
    /// remembers a failure line.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(rest) = l.strip_prefix(prefix) {
                        return Ok(rest.to_owned());
                    }
                    if let Some(why) = l.strip_prefix(soak::FAILED) {
                        self.failure.get_or_insert_with(|| why.to_owned());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "the {} client printed no `{prefix}` within {timeout:?}",
                        self.transport
                    )
                }
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "the {} client ended: {}",
                    self.transport,
                    self.failure.as_deref().unwrap_or("without saying why")
                ),
            }
        }
    }

    /// Whether the process has ended (its session failed; it is killed only at the end).
    fn ended(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_transports(s: &str) -> Result<Vec<Transport>> {
    if s == "all" {
        return Ok(Transport::ALL.to_vec());
    }
    s.split(',')
        .map(|w| w.trim().parse::<Transport>().map_err(anyhow::Error::msg))
        .collect()
}

fn run(args: &Args) -> Result<()> {
    let transports = parse_transports(&args.transport)?;
    let handovers = if args.quick { 14 } else { args.handovers };
    if !(0.05..=100.0).contains(&args.interval_ms) {
        bail!("--interval-ms must be between 0.05 and 100");
    }
    let interval = Duration::from_secs_f64(args.interval_ms / 1000.0);
    let timeout = Duration::from_secs(args.timeout_s.max(1));
    let dwell = Duration::from_millis(args.dwell_ms);
    let exe = AgentExe::current()?;

    let topo = Arc::new(bench_topology(&RunConfig::quick(Duration::ZERO))?);
    let pki = TestPki::generate()?;
    let scratch = tempdir()?;
    let ca = scratch.0.join("ca.der");
    std::fs::write(&ca, pki.ca.as_ref())?;

    let reflector = Reflector::start(
        topo.server(),
        &exe,
        SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT),
    )
    .context("starting the probe reflector")?;
    let agent = Agent::start_with(
        topo.handset(),
        &exe,
        POLICY,
        APP,
        &AgentConfig::probing(&[reflector.addr()]),
    )
    .context("starting roamd in the handset")?;

    // The server: one listener for every transport, a recorder per transport.
    let recorders: HashMap<Transport, Arc<Recorder>> =
        transports.iter().map(|t| (*t, Recorder::new())).collect();
    let server_side: Arc<Mutex<HashMap<Transport, ServerSide>>> = Arc::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let target = SocketAddr::new(SERVICE_V4.into(), PORT);
    let server = {
        let recorders = recorders.clone();
        let side = server_side.clone();
        let tls = pki.roam_server()?;
        topo.server().spawn("soak-server", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(serve(target, tls, recorders, side, ready_tx, stop_rx))
        })?
    };
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("the listener did not start within 5 s")?;

    let mut clients = Vec::new();
    for t in &transports {
        clients.push(start_client(
            &topo,
            &ClientArgs {
                transport: *t,
                target,
                ca: ca.clone(),
                roamd: agent.socket().to_path_buf(),
                interval,
                timeout,
            },
            &scratch.0,
        )?);
    }
    for c in &mut clients {
        c.wait_line(soak::CONNECTED, timeout + Duration::from_secs(5))?;
    }
    // Warm up: a second of traffic on every session, then the starting figures.
    let warm = (1.0 / interval.as_secs_f64()) as u64;
    for (t, r) in &recorders {
        if r.wait_for(warm, Instant::now() + Duration::from_secs(10)) < warm {
            bail!("the {t} session delivered less than {warm} messages in 10 s");
        }
    }
    let roamd_rss_start = soak::rss_kib(agent.pid())?;
    let client_start: Vec<(u64, u64)> = clients
        .iter()
        .map(|c| Ok((soak::rss_kib(c.pid())?, soak::open_fds(c.pid())?)))
        .collect::<Result<_>>()?;

    let started = Instant::now();
    let mut events = Vec::with_capacity(handovers as usize);
    let lag = Duration::from_millis(20);
    for n in 0..handovers {
        let step = Step::nth(n);
        let before: Vec<u64> = clients
            .iter()
            .map(|c| recorders[&c.transport].delivered())
            .collect();
        let at = Instant::now();
        step.inject(&topo, FAILED_LINK)
            .with_context(|| format!("handover {}", n + 1))?;
        events.push(at);
        // Dwell, then wait for every live session to carry what was produced since.
        std::thread::sleep(dwell.saturating_sub(at.elapsed()));
        let deadline = at + timeout;
        let mut stalled = Vec::new();
        for (c, before) in clients.iter_mut().zip(&before) {
            if c.ended() {
                continue;
            }
            let r = &recorders[&c.transport];
            let due = ((at.elapsed().saturating_sub(lag)).as_nanos() / interval.as_nanos()) as u64;
            if r.wait_for(before + due, deadline) < before + due {
                stalled.push(c.transport.as_str());
            }
        }
        if (n + 1) % 50 == 0 || !stalled.is_empty() {
            eprintln!(
                "  handover {:>5}/{handovers} {:<16} {:>7.1} s{}",
                n + 1,
                step.as_str(),
                started.elapsed().as_secs_f64(),
                if stalled.is_empty() {
                    String::new()
                } else {
                    format!("  stalled: {}", stalled.join(", "))
                }
            );
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let roamd_rss_end = soak::rss_kib(agent.pid())?;
    let client_end: Vec<(u64, u64)> = clients
        .iter()
        .map(|c| Ok((soak::rss_kib(c.pid())?, soak::open_fds(c.pid())?)))
        .collect::<Result<_>>()?;
    let end = Instant::now();

    // Stop sending, let everything arrive, then end the clients and the server.
    for c in &mut clients {
        drop(c.child.stdin.take());
    }
    for c in &mut clients {
        match c.wait_line(soak::SENT, timeout) {
            Ok(n) => c.sent = n.trim().parse().ok(),
            Err(e) => {
                c.failure.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        if let Some(sent) = c.sent {
            recorders[&c.transport].wait_for(sent, Instant::now() + timeout);
        }
    }
    let _ = stop_tx.send(true);
    for c in &mut clients {
        let _ = c.child.kill();
    }
    let _ = server.join();
    let side = server_side.lock().unwrap_or_else(|e| e.into_inner());

    let mut rows = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let d = recorders[&c.transport].snapshot();
        let s = side.get(&c.transport);
        let sent = c.sent.unwrap_or(d.delivered);
        let mut corrupted = d.corrupted;
        if corrupted == 0 && d.delivered == sent && d.digest != expected_digest(sent) {
            corrupted += 1;
        }
        let mut errors: Vec<String> = c.failure.iter().map(|f| format!("client: {f}")).collect();
        if let Some(s) = s {
            errors.extend(s.errors.iter().map(|e| format!("server: {e}")));
            if s.accepted > 1 {
                errors.push(format!(
                    "the listener accepted {} sessions for one client",
                    s.accepted
                ));
            }
        }
        let mut gaps: Vec<f64> = soak::pauses_after(&d.arrivals, &events, end)
            .into_iter()
            .map(|g| g.as_secs_f64() * 1000.0)
            .collect();
        gaps.sort_by(f64::total_cmp);
        rows.push(Row {
            transport: c.transport.to_string(),
            handovers: events.len() as u64,
            bytes_sent: sent * MSG_LEN as u64,
            bytes_delivered: d.delivered * MSG_LEN as u64,
            corrupted,
            session_errors: errors.len() as u64,
            gap_ms: GapMs {
                p50: round_to(percentile(&gaps, 50.0), 1),
                p99: round_to(percentile(&gaps, 99.0), 1),
                max: round_to(gaps.last().copied().unwrap_or(0.0), 1),
            },
            roamd_rss_kib_start: roamd_rss_start,
            roamd_rss_kib_end: roamd_rss_end,
            client_rss_kib_start: client_start[i].0,
            client_rss_kib_end: client_end[i].0,
            client_fds_start: client_start[i].1,
            client_fds_end: client_end[i].1,
            seconds: round_to(seconds, 1),
            error: errors.into_iter().next(),
        });
    }
    drop(agent);
    drop(reflector);

    println!();
    print!("{}", table(&rows));
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&Report { runs: rows })?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

/// The listener: accepts sessions until stopped, feeding each transport's recorder.
async fn serve(
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    recorders: HashMap<Transport, Arc<Recorder>>,
    side: Arc<Mutex<HashMap<Transport, ServerSide>>>,
    ready: std::sync::mpsc::SyncSender<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let listener = roam::Listener::bind(addr, tls).context("binding the roam listener")?;
    let _ = ready.send(());
    loop {
        let mut s = tokio::select! {
            s = listener.accept() => s.context("accepting")?,
            _ = stop.changed() => return Ok(()),
        };
        let t = bench_transport(s.transport());
        let Some(recorder) = recorders.get(&t).cloned() else {
            continue;
        };
        side.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(t)
            .or_default()
            .accepted += 1;
        let side = side.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) => return,
                    Ok(n) => recorder.feed(Instant::now(), &buf[..n]),
                    Err(e) => {
                        // After the stop, the client being killed is the end, not an error.
                        if !*stop.borrow() {
                            side.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .entry(t)
                                .or_default()
                                .errors
                                .push(format!("{e:#}"));
                        }
                        return;
                    }
                }
            }
        });
    }
}

/// Starts one client process in the handset, its lines on a channel, its standard error in a
/// log in `dir`.
fn start_client(topo: &Topology, a: &ClientArgs, dir: &std::path::Path) -> Result<Client> {
    let exe = std::env::current_exe()?;
    let log = dir.join(format!("client-{}.log", a.transport));
    let mut child = topo
        .handset()
        .command(&exe.to_string_lossy())
        .args(a.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting the {} client", a.transport))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, lines) = std::sync::mpsc::channel();
    // Ends with the process; reads on so the pipe never fills.
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Ok(Client {
        transport: a.transport,
        child,
        lines,
        failure: None,
        sent: None,
    })
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

fn tempdir() -> Result<TempDir> {
    let d = std::env::temp_dir().join(format!("soak-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(TempDir(d))
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<11} {:>9} {:>12} {:>12} {:>9} {:>7} {:>24} {:>17} {:>17} {:>9}\n",
        "transport",
        "handovers",
        "sent",
        "delivered",
        "corrupted",
        "errors",
        "gap ms p50/p99/max",
        "roamd RSS KiB",
        "client RSS KiB",
        "client fds"
    );
    for r in rows {
        out += &format!(
            "{:<11} {:>9} {:>12} {:>12} {:>9} {:>7} {:>24} {:>17} {:>17} {:>9}\n",
            r.transport,
            r.handovers,
            r.bytes_sent,
            r.bytes_delivered,
            r.corrupted,
            r.session_errors,
            format!(
                "{:.1}/{:.1}/{:.1}",
                r.gap_ms.p50, r.gap_ms.p99, r.gap_ms.max
            ),
            format!("{}->{}", r.roamd_rss_kib_start, r.roamd_rss_kib_end),
            format!("{}->{}", r.client_rss_kib_start, r.client_rss_kib_end),
            format!("{}->{}", r.client_fds_start, r.client_fds_end),
        );
        if let Some(e) = &r.error {
            out += &format!("  {}: {e}\n", r.transport);
        }
    }
    if let Some(r) = rows.first() {
        out += &format!(
            "{} handovers in {:.1} s, every transport at once\n",
            r.handovers, r.seconds
        );
    }
    out
}
