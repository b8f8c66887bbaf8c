//! `throughput-bench`: bulk throughput of a roam session against the plain transport it runs
//! on, in the same run, on the same handset topology: MPTCP (raw sockets) or QUIC (quinn).
//!
//! ```text
//! throughput-bench                       # unlimited veth, 500 and 100 Mbit/s paths; ~50 s
//! throughput-bench --quick --json tp.json
//! throughput-bench --regime 100 --repeats 9 --direction up
//! throughput-bench --transport quic --regime 100
//! ```
//!
//! Rows of `--transport mptcp` (the default), per link regime (each regime a topology of its
//! own, roamd and its probe reflector running through all rows, so every row's MPTCP connection
//! gets the same endpoints from it):
//!
//! * `raw-mptcp`: an `IPPROTO_MPTCP` socket pair, plaintext.
//! * `raw-mptcp-tls`: the same sockets carrying rustls TLS 1.3 with roam's own client and server
//!   configurations (same cipher suite), records pumped through 256 KiB buffers: the cost of TLS
//!   alone, so what roam adds on top of it is visible.
//! * `roam`: a `roam::Session` asked for MPTCP, following roamd, to a `roam::Listener`.
//!
//! Rows of `--transport quic` (`"transport": "quic"`, with a `mode`):
//!
//! * `baseline-quinn`: a plain quinn client on the wildcard address to a quinn server, one
//!   path (the routing table's: WiFi).
//! * `roam` mode `handover`: a `roam::Session` over QUIC (noq) following roamd, to a
//!   `roam::Listener`: one path, the primary.
//! * `roam` mode `aggregate`: the same with multipath `aggregate`, every permitted path (WiFi
//!   and cellular) carrying data at once.
//!
//! The sender writes a counter pattern (byte `p` of the stream is byte `p % 8` of the
//! little-endian `p / 8`) for a fixed time, then closes; the receiver checks every byte against
//! the pattern and the byte count against the sender's, and measures from its first byte to
//! the end of the stream. A row whose bytes are not intact fails the run; a connection that
//! stops moving data is counted as stalled (with `ss` of both ends logged) and left out of the
//! figures. A rate regime is a tbf on both ends of both paths.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use clap::Parser;
use roam_policy::{LinkKind, MultipathMode};
use roam_tests::agent::{Agent, AgentConfig, AgentExe, REFLECT_PORT, Reflector};
use roam_tests::stats::{median, round_to, sorted};
use roam_tests::system::mptcp::{connect_mptcp, listen_mptcp};
use roam_tests::system::roam::{APP, POLICY};
use roam_tests::tls::{SERVER_NAME, TestPki};
use roam_tests::tls_pump::TlsPump;
use roam_tests::topology::{SERVICE_V4, Topology};
use roam_tests::transfer::{Pattern, PatternCheck, thread_cpu};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The receiver's read buffer: as large as the TLS pump's.
const READ_BUF: usize = roam_tests::tls_pump::BUF;
/// How long connecting, the handshake and the closing exchange may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(5);
/// First port of the servers; each run gets its own so no run meets another's leftovers.
const PORT_BASE: u16 = 5300;

#[derive(Debug, Parser)]
#[command(
    about = "Bulk throughput of a roam MPTCP session against raw MPTCP sockets (plain and TLS), same run"
)]
struct Args {
    /// Link regimes, comma-separated: `unlimited` (plain veth, CPU bound) or a per-path rate in
    /// Mbit/s (a tbf on both ends of every path).
    #[arg(long, default_value = "unlimited,500,100")]
    regime: String,
    /// Repeats per regime and row (default 5, or 2 with --quick).
    #[arg(long)]
    repeats: Option<u32>,
    /// Seconds each transfer sends for (default 1.0, or 0.3 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// `down` (server to handset, as a phone mostly receives) or `up`.
    #[arg(long, default_value = "down")]
    direction: String,
    /// `mptcp` (raw MPTCP, raw MPTCP with TLS, roam) or `quic` (plain quinn, roam handover,
    /// roam aggregate).
    #[arg(long, default_value = "mptcp")]
    transport: String,
    /// Short runs: 2 repeats of 0.3 s each (about 10 s for the default regimes).
    #[arg(long)]
    quick: bool,
    /// Write the report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A measured row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Raw,
    RawTls,
    Roam,
    /// Plain quinn, one path.
    Quinn,
    /// roam over QUIC in this multipath mode.
    RoamQuic(MultipathMode),
}

impl Row {
    const MPTCP: [Row; 3] = [Row::Raw, Row::RawTls, Row::Roam];
    const QUIC: [Row; 3] = [
        Row::Quinn,
        Row::RoamQuic(MultipathMode::Handover),
        Row::RoamQuic(MultipathMode::Aggregate),
    ];

    fn name(self) -> &'static str {
        match self {
            Row::Raw => "raw-mptcp",
            Row::RawTls => "raw-mptcp-tls",
            Row::Roam | Row::RoamQuic(_) => "roam",
            Row::Quinn => "baseline-quinn",
        }
    }

    fn transport(self) -> &'static str {
        match self {
            Row::Raw | Row::RawTls | Row::Roam => "mptcp",
            Row::Quinn | Row::RoamQuic(_) => "quic",
        }
    }

    /// The multipath mode of a QUIC row (`None` for the others).
    fn mode(self) -> Option<&'static str> {
        match self {
            Row::RoamQuic(m) => Some(m.as_str()),
            _ => None,
        }
    }

    /// The row's label in the log and the table: the system, and the mode if any.
    fn label(self) -> String {
        match self.mode() {
            Some(m) => format!("{} {m}", self.name()),
            None => self.name().to_owned(),
        }
    }

    /// Short enough for a thread name (`tp-s-tls`), so a profile tells the rows apart.
    fn short(self) -> &'static str {
        match self {
            Row::Raw => "raw",
            Row::RawTls => "tls",
            Row::Roam => "roam",
            Row::Quinn => "quinn",
            Row::RoamQuic(MultipathMode::Aggregate) => "rq-agg",
            Row::RoamQuic(_) => "rq",
        }
    }
}

/// A link regime: no limit, or a rate per path.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Regime {
    Unlimited,
    Mbit(u32),
}

impl Regime {
    fn parse(s: &str) -> Result<Regime> {
        let s = s.trim();
        if s == "unlimited" {
            return Ok(Regime::Unlimited);
        }
        let mbit: u32 = s
            .parse()
            .map_err(|_| anyhow!("regime `{s}`: expected `unlimited` or a rate in Mbit/s"))?;
        ensure!(
            (1..=10_000).contains(&mbit),
            "regime `{s}`: the rate must be 1 to 10000 Mbit/s"
        );
        Ok(Regime::Mbit(mbit))
    }

    fn name(self) -> String {
        match self {
            Regime::Unlimited => "unlimited".to_owned(),
            Regime::Mbit(m) => format!("{m} Mbit/s"),
        }
    }

    fn rate_mbit(self) -> Option<u32> {
        match self {
            Regime::Unlimited => None,
            Regime::Mbit(m) => Some(m),
        }
    }
}

/// Which end sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Server to handset.
    Down,
    /// Handset to server.
    Up,
}

/// Throughput figures over the repeats, Mbit/s.
#[derive(Debug, Clone, Copy, Serialize)]
struct Mbit {
    median: f64,
    min: f64,
    max: f64,
}

/// One row of the report: one system in one regime, all repeats.
#[derive(Debug, Clone, Serialize)]
struct RowReport {
    /// `unlimited` or `N Mbit/s`.
    regime: String,
    /// The per-path rate limit; `null` when unlimited.
    rate_mbit: Option<u32>,
    /// `down` or `up`.
    direction: &'static str,
    /// `raw-mptcp`, `raw-mptcp-tls`, `baseline-quinn` or `roam`.
    system: &'static str,
    /// `mptcp` or `quic`.
    transport: &'static str,
    /// The multipath mode of a roam QUIC row (`handover`: one path; `aggregate`: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    repeats: u32,
    /// Repeats whose connection stopped moving data (left out of the throughput figures).
    stalled: u32,
    /// How long each transfer sent for.
    seconds: f64,
    throughput_mbit: Mbit,
    /// Bytes the senders wrote, all repeats.
    bytes_sent: u64,
    /// Bytes the receivers got, each checked against the pattern, all repeats.
    bytes_delivered: u64,
    /// Whether every repeat delivered exactly what was sent, in order, unaltered.
    intact: bool,
    /// The TLS cipher suite (for the TLS rows).
    cipher_suite: Option<String>,
    /// CPU time of the sending and receiving threads per delivered byte, ns (median).
    cpu_ns_per_byte: f64,
    /// Decisions roamd pushed during the transfers (link state changes it saw), all repeats.
    roamd_updates: u64,
    /// The largest fraction of a transfer's bytes that crossed `rmnet0`, the backup path.
    backup_share_max: f64,
}

/// roam's median against the raw rows' in one regime.
#[derive(Debug, Clone, Serialize)]
struct Ratio {
    regime: String,
    rate_mbit: Option<u32>,
    roam_over_raw: f64,
    roam_over_raw_tls: f64,
}

/// roam's QUIC medians against plain quinn's in one regime.
#[derive(Debug, Clone, Serialize)]
struct QuicRatio {
    regime: String,
    rate_mbit: Option<u32>,
    /// roam on one path (handover) over quinn on one path: the aim is >= 0.95.
    handover_over_quinn: f64,
    /// roam on every path (aggregate) over quinn on one path.
    aggregate_over_quinn: f64,
}

/// The file `--json` writes.
#[derive(Debug, Clone, Serialize)]
struct Report {
    runs: Vec<RowReport>,
    ratios: Vec<Ratio>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    quic_ratios: Vec<QuicRatio>,
}

fn main() -> ExitCode {
    // Re-executed inside the namespaces as roamd and as its reflector.
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    let args = Args::parse();
    if let Err(code) = roam_tests::binary::start(
        "throughput-bench",
        "sudo ./target/release/throughput-bench --quick",
    ) {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("throughput-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let regimes = args
        .regime
        .split(',')
        .map(Regime::parse)
        .collect::<Result<Vec<_>>>()?;
    let flow = match args.direction.as_str() {
        "down" => Flow::Down,
        "up" => Flow::Up,
        other => bail!("--direction {other}: expected down or up"),
    };
    let repeats = args
        .repeats
        .unwrap_or(if args.quick { 2 } else { 5 })
        .max(1);
    let seconds = args.seconds.unwrap_or(if args.quick { 0.3 } else { 1.0 });
    ensure!(
        (0.05..=60.0).contains(&seconds),
        "--seconds must be between 0.05 and 60"
    );
    let send_for = Duration::from_secs_f64(seconds);
    let rows = match args.transport.as_str() {
        "mptcp" => Row::MPTCP,
        "quic" => Row::QUIC,
        other => bail!("--transport {other}: expected mptcp or quic"),
    };
    let exe = AgentExe::current()?;
    let pki = Arc::new(TestPki::generate()?);
    let started = Instant::now();
    let mut runs = Vec::new();
    let mut port = PORT_BASE;
    for regime in &regimes {
        let bench = Bench::new(*regime, &exe)?;
        let mut results: [Vec<Transfer>; 3] = Default::default();
        let mut stalls = [0u32; 3];
        for repeat in 0..repeats {
            // The rows take turns repeat by repeat: all meet the same machine.
            for ((row, out), stalled) in rows.iter().zip(&mut results).zip(&mut stalls) {
                port += 1;
                let what = format!(
                    "{} / {} / repeat {}",
                    row.label(),
                    regime.name(),
                    repeat + 1
                );
                let t = match bench.transfer(*row, flow, send_for, &pki, port) {
                    Ok(t) => t,
                    // A stalled connection is a result (counted, shown); anything else, a
                    // damaged stream above all, ends the run.
                    Err(e) if is_stall(&e) => {
                        eprintln!("  {what}: STALLED: {e:#}");
                        *stalled += 1;
                        continue;
                    }
                    Err(e) => return Err(e.context(what)),
                };
                eprintln!(
                    "  {:<14} {:<14} #{:<2} {:>9.1} Mbit/s  {:>11} bytes intact  cpu {:.2} ns/B  \
                     rmnet0 {:.1}%",
                    row.label(),
                    regime.name(),
                    repeat + 1,
                    t.mbit(),
                    t.delivered,
                    t.cpu_ns_per_byte(),
                    t.backup_share * 100.0
                );
                out.push(t);
            }
        }
        for ((row, out), stalled) in rows.iter().zip(&results).zip(stalls) {
            runs.push(row_report(*regime, flow, *row, seconds, out, stalled));
        }
    }
    let ratios = ratios(&runs);
    let quic_ratios = quic_ratios(&runs);
    println!();
    print!("{}", table(&runs, &ratios, &quic_ratios));
    println!(
        "direction {}, {repeats} repeats of {seconds} s per row, total {:.1} s",
        flow_name(flow),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&Report {
            runs,
            ratios,
            quic_ratios,
        })?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

fn flow_name(flow: Flow) -> &'static str {
    match flow {
        Flow::Down => "down",
        Flow::Up => "up",
    }
}

/// One regime's topology, with roamd in the handset and its reflector in the server namespace.
struct Bench {
    // Field order is drop order: the agent and reflector stop before the namespaces go.
    agent: Agent,
    _reflector: Reflector,
    topo: Topology,
}

impl Bench {
    fn new(regime: Regime, exe: &AgentExe) -> Result<Bench> {
        let topo = Topology::builder()
            .link("wlan0", LinkKind::Wifi)
            .link("rmnet0", LinkKind::Cellular)
            .build()?;
        if let Some(mbit) = regime.rate_mbit() {
            shape(&topo, mbit)?;
        }
        let reflector = Reflector::start(
            topo.server(),
            exe,
            SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT),
        )
        .context("starting the probe reflector")?;
        let agent = Agent::start_with(
            topo.handset(),
            exe,
            POLICY,
            APP,
            &AgentConfig::probing(&[reflector.addr()]),
        )
        .context("starting roamd in the handset")?;
        // The rows start once roamd has probed both links good, not while it still validates.
        agent.wait_for("both links validated", SETUP_TIMEOUT, |u| {
            u.links.len() == 2 && u.links.iter().all(|l| l.ends_with("=validated"))
        })?;
        tracing::info!(
            endpoints = %topo.handset().ip(&["mptcp", "endpoint", "show"])?.trim(),
            "roamd's MPTCP endpoints"
        );
        Ok(Bench {
            agent,
            _reflector: reflector,
            topo,
        })
    }

    /// One transfer of `row`: a server in the server namespace, a client in the handset,
    /// `flow` says which one sends.
    fn transfer(
        &self,
        row: Row,
        flow: Flow,
        send_for: Duration,
        pki: &Arc<TestPki>,
        port: u16,
    ) -> Result<Transfer> {
        let addr = SocketAddr::new(IpAddr::V4(SERVICE_V4), port);
        let began = Instant::now();
        let counters_before = self.path_bytes()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let limit = send_for + SETUP_TIMEOUT * 2;
        let server_role = match flow {
            Flow::Down => Role::Send(send_for),
            Flow::Up => Role::Receive,
        };
        let client_role = match flow {
            Flow::Down => Role::Receive,
            Flow::Up => Role::Send(send_for),
        };
        let server_pki = pki.clone();
        let server = self
            .topo
            .server()
            .spawn(&format!("tp-s-{}", row.short()), move || {
                on_runtime(limit, async move {
                    let end = server_end(row, addr, &server_pki, ready_tx).await?;
                    end.run(server_role).await
                })
            })?;
        if ready_rx.recv_timeout(SETUP_TIMEOUT).is_err() {
            return Err(join(server)
                .err()
                .unwrap_or_else(|| anyhow!("the server did not listen within {SETUP_TIMEOUT:?}")));
        }
        let client_pki = pki.clone();
        let socket = self.agent.socket().to_path_buf();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let client = self
            .topo
            .handset()
            .spawn(&format!("tp-c-{}", row.short()), move || {
                let r = on_runtime(limit, async move {
                    let end = client_end(row, addr, &client_pki, &socket).await?;
                    end.run(client_role).await
                });
                let _ = done_tx.send(());
                r
            })?;
        // A transfer still going well after it should have ended is stuck: say how the
        // connections look while it is, then wait for the runtime's limit to end it.
        let overdue = send_for + SETUP_TIMEOUT;
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(overdue) {
            for ns in [self.topo.handset(), self.topo.server()] {
                let ss = ns.exec("ss", &["-tanMi"]).unwrap_or_default();
                tracing::warn!(
                    netns = ns.name(),
                    "{} stuck after {overdue:?}:\n{ss}",
                    row.name()
                );
            }
        }
        let client = join(client).context("client");
        let server = join(server).context("server");
        let (client, server) = match (client, server) {
            (Ok(c), Ok(s)) => (c, s),
            // An end that failed leaves the other waiting: its error is the one that counts.
            // Only when both merely waited did the connection itself stall.
            (Err(c), Err(s)) if is_stall(&c) && is_stall(&s) => {
                return Err(anyhow::Error::new(Stalled(limit)).context(format!("{c:#}; {s:#}")));
            }
            (Err(c), Err(s)) if is_stall(&c) => return Err(s),
            (Err(c), Err(s)) if is_stall(&s) => return Err(c),
            (Err(c), Err(s)) => bail!("{c:#}; {s:#}"),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        let (sent, recv) = match flow {
            Flow::Down => (server, client),
            Flow::Up => (client, server),
        };
        let (
            Side::Sent {
                bytes,
                cpu: send_cpu,
            },
            Side::Received(r),
        ) = (sent, recv)
        else {
            bail!("the ends did not play their roles");
        };
        ensure!(
            r.bytes == bytes,
            "the receiver got {} bytes, the sender wrote {bytes}",
            r.bytes
        );
        ensure!(bytes > 0, "nothing was sent");
        // A decision during a transfer means roamd saw a link change state: on these steady
        // paths, a false alarm (probes missed on a busy link or by a starved CPU).
        let roamd_updates = self
            .agent
            .updates()
            .iter()
            .filter(|u| u.at >= began)
            .count() as u64;
        let counters_after = self.path_bytes()?;
        let moved: Vec<u64> = counters_after
            .iter()
            .zip(&counters_before)
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let total = moved.iter().sum::<u64>().max(1);
        Ok(Transfer {
            backup_share: moved.iter().skip(1).sum::<u64>() as f64 / total as f64,
            roamd_updates,
            sent: bytes,
            delivered: r.bytes,
            elapsed: r.elapsed,
            cpu: send_cpu + r.cpu,
            cipher_suite: r.cipher_suite,
        })
    }
}

/// A tbf of `mbit` on both ends of every path. Its bucket holds 2 ms at the rate (at least
/// 4 kB, as [`Topology::rate_limit`]'s): a 4 kB bucket at hundreds of Mbit/s costs a timer
/// every few tens of microseconds, CPU this 2-core machine's endpoints then lack. The queue
/// holds 100 ms, as a phone's link buffers do.
fn shape(topo: &Topology, mbit: u32) -> Result<()> {
    let rate = format!("{mbit}mbit");
    let burst = format!("{}", (u64::from(mbit) * 1_000_000 / 8 / 500).max(4096));
    for l in topo.links() {
        for (ns, dev) in [(topo.handset(), &l.name), (topo.server(), &l.server_dev)] {
            ns.exec(
                "tc",
                &[
                    "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
                    "latency", "100ms",
                ],
            )
            .with_context(|| format!("shaping {dev} to {rate}"))?;
        }
    }
    Ok(())
}

impl Bench {
    /// Bytes through each path's server end (received plus sent), in link order.
    fn path_bytes(&self) -> Result<Vec<u64>> {
        Ok(self
            .topo
            .server_stats()?
            .into_iter()
            .map(|(_, s)| s.rx_bytes + s.tx_bytes)
            .collect())
    }
}

fn join<T>(h: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    h.join().map_err(|_| anyhow!("thread panicked"))?
}

/// Runs `fut` on a current-thread runtime, at most `limit`.
fn on_runtime<T>(limit: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        tokio::time::timeout(limit, fut)
            .await
            .map_err(|_| anyhow::Error::new(Stalled(limit)))?
    })
}

/// A transfer that did not end within its time limit: the connection stopped moving data.
#[derive(Debug)]
struct Stalled(Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the transfer stalled (not over after {:?})", self.0)
    }
}

impl std::error::Error for Stalled {}

fn is_stall(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Stalled>())
}

/// What one end does.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Write the pattern for this long, then close.
    Send(Duration),
    /// Read and check to the end of the stream, then close.
    Receive,
}

/// What one end reports.
enum Side {
    Sent { bytes: u64, cpu: Duration },
    Received(Received),
}

struct Received {
    bytes: u64,
    elapsed: Duration,
    cpu: Duration,
    cipher_suite: Option<String>,
}

/// One transfer's figures.
struct Transfer {
    /// The fraction of the bytes on the paths that crossed `rmnet0` (the backup).
    backup_share: f64,
    roamd_updates: u64,
    sent: u64,
    delivered: u64,
    elapsed: Duration,
    cpu: Duration,
    cipher_suite: Option<String>,
}

impl Transfer {
    fn mbit(&self) -> f64 {
        self.delivered as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e6
    }

    fn cpu_ns_per_byte(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.delivered.max(1) as f64
    }
}

/// A connected end of one row.
enum End {
    /// A plain stream: raw MPTCP or a roam session.
    Plain(Box<dyn Stream>),
    /// Raw MPTCP with TLS pumped here.
    Tls(Box<TlsPump>),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl End {
    async fn run(self, role: Role) -> Result<Side> {
        match (self, role) {
            (End::Plain(mut s), Role::Send(d)) => {
                let cpu0 = thread_cpu();
                let mut pattern = Pattern::default();
                let end = Instant::now() + d;
                // Bounded by the clock.
                while Instant::now() < end {
                    s.write_all(pattern.next_chunk()).await.context("write")?;
                }
                s.shutdown().await.context("shutdown")?;
                wait_close(&mut s).await?;
                Ok(Side::Sent {
                    bytes: pattern.offset(),
                    cpu: thread_cpu() - cpu0,
                })
            }
            (End::Plain(mut s), Role::Receive) => {
                let cpu0 = thread_cpu();
                let mut check = PatternCheck::default();
                let mut buf = vec![0u8; READ_BUF];
                loop {
                    let n = s.read(&mut buf).await.context("read")?;
                    if n == 0 {
                        break;
                    }
                    check.feed(&buf[..n])?;
                }
                let elapsed = check.elapsed()?;
                let cpu = thread_cpu() - cpu0;
                s.shutdown().await.context("shutdown")?;
                Ok(Side::Received(Received {
                    bytes: check.offset(),
                    elapsed,
                    cpu,
                    cipher_suite: None,
                }))
            }
            (End::Tls(mut t), Role::Send(d)) => {
                let cpu0 = thread_cpu();
                let mut pattern = Pattern::default();
                let end = Instant::now() + d;
                while Instant::now() < end {
                    t.write_all(pattern.next_chunk()).await?;
                }
                t.close().await?;
                t.wait_close(SETUP_TIMEOUT).await?;
                Ok(Side::Sent {
                    bytes: pattern.offset(),
                    cpu: thread_cpu() - cpu0,
                })
            }
            (End::Tls(mut t), Role::Receive) => {
                let cpu0 = thread_cpu();
                let mut check = PatternCheck::default();
                t.read_to_end(|b| check.feed(b)).await?;
                let elapsed = check.elapsed()?;
                let cpu = thread_cpu() - cpu0;
                let suite = t.cipher_suite();
                t.close().await?;
                Ok(Side::Received(Received {
                    bytes: check.offset(),
                    elapsed,
                    cpu,
                    cipher_suite: suite,
                }))
            }
        }
    }
}

/// After our close: the peer's close (end of stream) with nothing before it.
async fn wait_close<S: AsyncRead + Unpin + ?Sized>(s: &mut S) -> Result<()> {
    let mut rest = Vec::new();
    tokio::time::timeout(SETUP_TIMEOUT, s.read_to_end(&mut rest))
        .await
        .context("the receiver did not close")?
        .context("waiting for the receiver's close")?;
    ensure!(rest.is_empty(), "the receiver sent {} bytes", rest.len());
    Ok(())
}

async fn server_end(
    row: Row,
    addr: SocketAddr,
    pki: &TestPki,
    ready: std::sync::mpsc::SyncSender<()>,
) -> Result<End> {
    match row {
        Row::Raw | Row::RawTls => {
            let listener = listen_mptcp(addr)?;
            let _ = ready.send(());
            let (s, _) = tokio::time::timeout(SETUP_TIMEOUT, listener.accept())
                .await
                .context("no connection arrived")??;
            if row == Row::Raw {
                return Ok(End::Plain(Box::new(s)));
            }
            let tls = rustls::ServerConnection::new(Arc::new(pki.roam_server()?))?;
            Ok(End::Tls(Box::new(
                TlsPump::handshake(s, tls.into(), SETUP_TIMEOUT).await?,
            )))
        }
        Row::Roam | Row::RoamQuic(_) => {
            let listener =
                roam::Listener::bind(addr, pki.roam_server()?).context("binding the listener")?;
            let _ = ready.send(());
            let s = tokio::time::timeout(SETUP_TIMEOUT, listener.accept())
                .await
                .context("no session arrived")??;
            let want = row_transport(row);
            ensure!(
                s.transport() == want,
                "the session came over {:?}, not {want:?}",
                s.transport()
            );
            Ok(match want {
                roam::Transport::Quic => End::Plain(Box::new(Linger::new(s))),
                _ => End::Plain(Box::new(s)),
            })
        }
        Row::Quinn => {
            let endpoint = quinn::Endpoint::server(pki.quic_server(SETUP_TIMEOUT)?, addr)
                .context("binding the quinn server")?;
            let _ = ready.send(());
            let conn = tokio::time::timeout(SETUP_TIMEOUT, async {
                let incoming = endpoint.accept().await.context("the endpoint closed")?;
                anyhow::Ok(incoming.await?)
            })
            .await
            .context("no connection arrived")??;
            let (send, mut recv) = tokio::time::timeout(SETUP_TIMEOUT, conn.accept_bi())
                .await
                .context("no stream arrived")??;
            // The client's hello (a stream shows up only once it carries data).
            recv.read_exact(&mut [0u8]).await?;
            Ok(End::Plain(Box::new(Linger::new(Quinn {
                send,
                recv,
                _conn: (endpoint, conn),
            }))))
        }
    }
}

/// The transport a roam row's session must run on.
fn row_transport(row: Row) -> roam::Transport {
    match row.transport() {
        "quic" => roam::Transport::Quic,
        _ => roam::Transport::Mptcp,
    }
}

/// A quinn stream pair as one byte stream, holding its connection and endpoint.
struct Quinn {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _conn: (quinn::Endpoint, quinn::Connection),
}

impl AsyncRead for Quinn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Quinn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// How long a QUIC end lingers after its end of stream, written or read.
const LINGER: Duration = Duration::from_millis(100);

/// A QUIC stream (quinn's or a roam session's) that lingers [`LINGER`] after it wrote its end
/// of stream and after it read the peer's: an end's runtime stops as soon as the row is done
/// with it, and with it the transport's tasks, so the end of stream (and the acknowledgement
/// of the peer's) would otherwise never leave. The throughput clock stops at the end of
/// stream, before any lingering; sleeping costs no CPU.
struct Linger<S> {
    inner: S,
    /// Written the end of stream / read the peer's, and the wait under way.
    shut: bool,
    eof: bool,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Linger<S> {
    fn new(inner: S) -> Self {
        Linger {
            inner,
            shut: false,
            eof: false,
            wait: None,
        }
    }

    fn poll_wait(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let wait = self
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
        std::task::ready!(wait.as_mut().poll(cx));
        self.wait = None;
        Poll::Ready(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Linger<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.eof {
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            if buf.filled().len() > before || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            this.eof = true;
        }
        this.poll_wait(cx).map(Ok)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Linger<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.shut {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.shut = true;
        }
        this.poll_wait(cx).map(Ok)
    }
}

async fn client_end(
    row: Row,
    addr: SocketAddr,
    pki: &TestPki,
    roamd: &std::path::Path,
) -> Result<End> {
    match row {
        Row::Raw => Ok(End::Plain(Box::new(connect_mptcp(addr).await?))),
        Row::RawTls => {
            let cfg = pki.roam_client().build(&[])?;
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)?;
            let tls = rustls::ClientConnection::new(Arc::new(cfg), name)?;
            let s = connect_mptcp(addr).await?;
            Ok(End::Tls(Box::new(
                TlsPump::handshake(s, tls.into(), SETUP_TIMEOUT).await?,
            )))
        }
        Row::Roam | Row::RoamQuic(_) => {
            let mut b = roam::Session::builder()
                .app(APP)
                .policy(POLICY)
                .roamd_socket(roamd)
                .tls(pki.roam_client())
                .server_name(SERVER_NAME)
                .connect_timeout(SETUP_TIMEOUT);
            b = match row {
                Row::RoamQuic(mode) => b.transport(roam::TransportPreference::Quic).multipath(mode),
                _ => b.transport(roam::TransportPreference::Mptcp),
            };
            let s = b
                .connect(&addr.to_string())
                .await
                .context("connecting the roam session")?;
            let want = row_transport(row);
            ensure!(
                s.transport() == want,
                "the session runs over {:?}, not {want:?}",
                s.transport()
            );
            Ok(match want {
                roam::Transport::Quic => End::Plain(Box::new(Linger::new(s))),
                _ => End::Plain(Box::new(s)),
            })
        }
        Row::Quinn => {
            let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
            endpoint.set_default_client_config(pki.quic_client(SETUP_TIMEOUT)?);
            let conn = endpoint
                .connect(addr, SERVER_NAME)?
                .await
                .context("QUIC handshake")?;
            let (mut send, recv) = conn.open_bi().await?;
            // A hello, so the server sees the stream whichever end sends the pattern.
            send.write_all(&[0]).await?;
            Ok(End::Plain(Box::new(Linger::new(Quinn {
                send,
                recv,
                _conn: (endpoint, conn),
            }))))
        }
    }
}

fn row_report(
    regime: Regime,
    flow: Flow,
    row: Row,
    seconds: f64,
    t: &[Transfer],
    stalled: u32,
) -> RowReport {
    let mbit = sorted(t.iter().map(Transfer::mbit).collect());
    let cpu = sorted(t.iter().map(Transfer::cpu_ns_per_byte).collect());
    let round = |x: f64| round_to(x, 1);
    RowReport {
        regime: regime.name(),
        rate_mbit: regime.rate_mbit(),
        direction: flow_name(flow),
        system: row.name(),
        transport: row.transport(),
        mode: row.mode(),
        repeats: t.len() as u32 + stalled,
        stalled,
        seconds,
        throughput_mbit: Mbit {
            median: round(median(&mbit)),
            min: round(mbit.first().copied().unwrap_or(0.0)),
            max: round(mbit.last().copied().unwrap_or(0.0)),
        },
        bytes_sent: t.iter().map(|x| x.sent).sum(),
        bytes_delivered: t.iter().map(|x| x.delivered).sum(),
        // A transfer returns only once its receiver checked every byte against the pattern and
        // the count against the sender's; anything else fails the run.
        intact: !t.is_empty() && t.iter().all(|x| x.sent == x.delivered),
        cipher_suite: t.iter().find_map(|x| x.cipher_suite.clone()),
        cpu_ns_per_byte: round_to(median(&cpu), 2),
        roamd_updates: t.iter().map(|x| x.roamd_updates).sum(),
        backup_share_max: round_to(t.iter().map(|x| x.backup_share).fold(0.0, f64::max), 3),
    }
}

fn ratios(runs: &[RowReport]) -> Vec<Ratio> {
    let mut out = Vec::new();
    let mut regimes: Vec<&str> = runs.iter().map(|r| r.regime.as_str()).collect();
    regimes.dedup();
    for regime in regimes {
        let find = |sys: &str| {
            runs.iter()
                .find(|r| r.regime == regime && r.system == sys)
                .map(|r| (r.throughput_mbit.median, r.rate_mbit))
        };
        if let (Some((raw, rate)), Some((tls, _)), Some((roam, _))) =
            (find("raw-mptcp"), find("raw-mptcp-tls"), find("roam"))
            && raw > 0.0
            && tls > 0.0
        {
            let ratio = |a: f64, b: f64| round_to(a / b, 3);
            out.push(Ratio {
                regime: regime.to_owned(),
                rate_mbit: rate,
                roam_over_raw: ratio(roam, raw),
                roam_over_raw_tls: ratio(roam, tls),
            });
        }
    }
    out
}

/// roam's QUIC rows against plain quinn's, per regime.
fn quic_ratios(runs: &[RowReport]) -> Vec<QuicRatio> {
    let mut out = Vec::new();
    let mut regimes: Vec<&str> = runs.iter().map(|r| r.regime.as_str()).collect();
    regimes.dedup();
    for regime in regimes {
        let find = |sys: &str, mode: Option<&str>| {
            runs.iter()
                .find(|r| {
                    r.regime == regime && r.transport == "quic" && r.system == sys && r.mode == mode
                })
                .map(|r| (r.throughput_mbit.median, r.rate_mbit))
        };
        if let (Some((quinn, rate)), Some((handover, _)), Some((aggregate, _))) = (
            find("baseline-quinn", None),
            find("roam", Some("handover")),
            find("roam", Some("aggregate")),
        ) && quinn > 0.0
        {
            out.push(QuicRatio {
                regime: regime.to_owned(),
                rate_mbit: rate,
                handover_over_quinn: round_to(handover / quinn, 3),
                aggregate_over_quinn: round_to(aggregate / quinn, 3),
            });
        }
    }
    out
}

fn table(runs: &[RowReport], ratios: &[Ratio], quic_ratios: &[QuicRatio]) -> String {
    let header = [
        "regime",
        "system",
        "repeats",
        "stalled",
        "median",
        "min",
        "max",
        "cpu ns/B",
        "delivered",
        "intact",
        "roamd updates",
    ]
    .map(String::from);
    let mut rows: Vec<[String; 11]> = runs
        .iter()
        .map(|r| {
            [
                r.regime.clone(),
                match r.mode {
                    Some(m) => format!("{} {m}", r.system),
                    None => r.system.to_owned(),
                },
                r.repeats.to_string(),
                r.stalled.to_string(),
                format!("{:.1}", r.throughput_mbit.median),
                format!("{:.1}", r.throughput_mbit.min),
                format!("{:.1}", r.throughput_mbit.max),
                format!("{:.2}", r.cpu_ns_per_byte),
                format!("{:.1} MB", r.bytes_delivered as f64 / 1e6),
                if r.intact { "yes" } else { "NO" }.to_owned(),
                r.roamd_updates.to_string(),
            ]
        })
        .collect();
    rows.insert(0, header.clone());
    let mut out = aligned(&rows, 2);
    out.push_str(
        "throughput in Mbit/s over repeats; cpu = sender + receiver thread CPU per byte (median); \
         roamd updates = decisions roamd pushed during the transfers (a link changed state)\n\n",
    );
    let mut r: Vec<[String; 3]> = vec![["regime", "roam/raw", "roam/raw+TLS"].map(String::from)];
    for x in ratios {
        r.push([
            x.regime.clone(),
            format!("{:.3}", x.roam_over_raw),
            format!("{:.3}", x.roam_over_raw_tls),
        ]);
    }
    if !ratios.is_empty() {
        out.push_str(&aligned(&r, 1));
        out.push_str("ratios of medians; the aim is roam/raw >= 0.97\n");
    }
    if !quic_ratios.is_empty() {
        let mut q: Vec<[String; 3]> =
            vec![["regime", "roam handover/quinn", "roam aggregate/quinn"].map(String::from)];
        for x in quic_ratios {
            q.push([
                x.regime.clone(),
                format!("{:.3}", x.handover_over_quinn),
                format!("{:.3}", x.aggregate_over_quinn),
            ]);
        }
        out.push_str(&aligned(&q, 1));
        out.push_str(
            "ratios of medians; the aims are handover/quinn >= 0.95 and, at 100 Mbit/s per path, \
             aggregate >= 180 Mbit/s\n",
        );
    }
    out
}

/// Rows as an aligned table: the first `text` columns left, the rest right, a rule under the
/// header (the first row).
fn aligned<const N: usize>(rows: &[[String; N]], text: usize) -> String {
    let mut width = [0usize; N];
    for row in rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let rule = width.map(|w| "-".repeat(w));
    for (k, row) in rows.iter().enumerate() {
        for (i, (c, w)) in row.iter().zip(width).enumerate() {
            if i < text {
                out.push_str(&format!("{c:<w$}  "));
            } else {
                out.push_str(&format!("{c:>w$}  "));
            }
        }
        out.truncate(out.trim_end().len());
        out.push('\n');
        if k == 0 {
            for (c, w) in rule.iter().zip(width) {
                out.push_str(&format!("{c:<w$}  "));
            }
            out.truncate(out.trim_end().len());
            out.push('\n');
        }
    }
    out
}
