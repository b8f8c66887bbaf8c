//! `load-bench`: roamd under load from its own machine: many subscribers and hostile local
//! clients at once, while one more subscriber times each decision.
//!
//! ```text
//! load-bench --subscribers 1000 --hostile 100 --flaps 100 --json load.json
//! ```
//!
//! The hostile clients come in four kinds, a quarter each, each reconnecting whenever roamd
//! closes it: oversized frames (a length over the protocol's limit, then junk), one byte per
//! second (a frame that never completes), garbage (random bytes), and connect-and-drop floods.
//! Two timed subscribers report the latency from the kernel's own link notification to their
//! receipt of the decision without `wlan0` (as `agent-bench` measures reaction): one connected
//! before the others (roamd tells its subscribers in the order they connected, so it is served
//! first) and one after all of them (served last, after every other subscriber's write). Each
//! reads on a thread of its own at a real-time priority, as does the netlink socket that stamps
//! the kernel's notification: the figures time roamd, not this process's own threads (a
//! thousand subscribers' reader and the hostile clients, on the same two cores) getting round
//! to reading. Every other subscriber must receive every decision too; the last of them to be
//! read (by one tokio thread reading all thousand) is the fan-out figure, which includes that
//! thread's reading.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use rand::Rng;
use roam_ipc::proto::{MAX_FRAME, Reply, Request};
use roam_ipc::tokio_client::AsyncClient;
use roam_tests::agent::{Agent, AgentExe, StampedSubscriber};
use roam_tests::netlink::LinkWatcher;
use roam_tests::soak::{open_fds, raise_nofile, rss_kib};
use roam_tests::stats::{ms, percentile, round_to, sorted};
use roam_tests::system::roam::POLICY;
use roam_tests::topology::Topology;
use serde::Serialize;

/// The link that fails: the policy's preferred one.
const DEV: &str = "wlan0";
/// The longest wait for any one decision.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Parser)]
#[command(about = "Load roamd with subscribers and hostile local clients; time its decisions")]
struct Args {
    /// Well-behaved subscribers, each of which must receive every decision.
    #[arg(long, default_value_t = 1000)]
    subscribers: u32,
    /// Hostile local clients (a quarter of each kind).
    #[arg(long, default_value_t = 100)]
    hostile: u32,
    /// Link-down changes timed (each followed by the link's return).
    #[arg(long, default_value_t = 100)]
    flaps: u32,
    /// Sessions the listener holds at once, per transport (QUIC, then tcp-resume); 0 skips
    /// the listener's part.
    #[arg(long, default_value_t = 0)]
    sessions: u32,
    /// tcp-resume sessions, when not `--sessions` (each holds one descriptor at either end, as
    /// a QUIC session holds one UDP socket in the generator).
    #[arg(long)]
    resume_sessions: Option<u32>,
    /// Handshakes the load generator runs at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Skip roamd's part.
    #[arg(long)]
    no_roamd: bool,
    /// Write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The first argument that makes this binary the listener process: `__load-listener CA_OUT`.
const LISTENER_ARG: &str = "__load-listener";

fn main() -> ExitCode {
    if let Some(code) = roam_tests::agent::agent_main() {
        return code;
    }
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(LISTENER_ARG) {
        return match listener_main(argv.get(2).map(PathBuf::from)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("load-bench listener: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = Args::parse();
    if let Err(code) = roam_tests::binary::start("load-bench", "sudo ./target/release/load-bench") {
        return code;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// p50, p99 and max in milliseconds.
#[derive(Debug, Serialize)]
struct Ms {
    p50: f64,
    p99: f64,
    max: f64,
}

impl Ms {
    /// Of sorted samples, rounded to microseconds.
    fn of(sorted: &[f64]) -> Ms {
        Ms {
            p50: round_to(percentile(sorted, 50.0), 3),
            p99: round_to(percentile(sorted, 99.0), 3),
            max: round_to(percentile(sorted, 100.0), 3),
        }
    }
}

#[derive(Debug, Serialize)]
struct RoamdLoad {
    subscribers: u32,
    hostile: u32,
    flaps: u32,
    /// Kernel link notification -> receipt of the decision by the subscriber roamd serves
    /// first.
    reaction_ms: Ms,
    /// Kernel link notification -> receipt by the subscriber roamd serves last (connected after
    /// every other).
    reaction_last_ms: Ms,
    /// Kernel link notification -> the last of the other subscribers reading the decision.
    fanout_ms: Ms,
    /// Subscribers that missed a decision or lost their connection.
    subscribers_behind: u64,
    /// Times roamd closed a hostile connection (each reconnects).
    hostile_closed: u64,
    /// Connect-and-drop connections made.
    flood_connections: u64,
    roamd_rss_kib_start: u64,
    roamd_rss_kib_loaded: u64,
    roamd_rss_kib_end: u64,
    roamd_fds_start: u64,
    roamd_fds_end: u64,
    /// How long roamd took to close its ends once every client had gone (bounded by 5 s).
    roamd_release_ms: f64,
}

/// The listener's part: one transport's sessions.
#[derive(Debug, Serialize)]
struct ListenerLoad {
    transport: String,
    /// Sessions open at once at the end of the ramp.
    sessions: u32,
    /// Sessions that failed to open.
    failed: u32,
    /// Sessions opened per second over the ramp.
    accept_per_s: f64,
    /// The listener process's RSS growth over the sessions, per session.
    kib_per_session: f64,
    listener_rss_kib_start: u64,
    listener_rss_kib_loaded: u64,
    /// One echo session's round trip (64 bytes) during the ramp and while all are held.
    echo_rtt_ms: Ms,
}

#[derive(Debug, Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    roamd: Option<RoamdLoad>,
    listener: Vec<ListenerLoad>,
}

fn run(args: &Args) -> Result<()> {
    let roamd = if args.no_roamd {
        None
    } else {
        Some(run_roamd(args)?)
    };
    let mut listener = Vec::new();
    if args.sessions > 0 {
        let resume = args.resume_sessions.unwrap_or(args.sessions);
        // A QUIC session is a UDP socket in the generator, a tcp-resume one a TCP socket: the
        // limits are raised (the hard one too: this runs as root) so that descriptors do not
        // run out first. The listener process inherits them.
        raise_nofile(u64::from(args.sessions.max(resume)) + 1024)?;
        for (t, n) in [
            (roam::TransportPreference::Quic, args.sessions),
            (roam::TransportPreference::TcpResume, resume),
        ] {
            let l = run_listener(t, n, args.concurrency.max(1))?;
            println!(
                "listener, {} sessions over {}: {} failed; {:.0} sessions/s; {:.1} KiB per session (RSS {} -> {} KiB); echo RTT p50 {:.3} / p99 {:.3} / max {:.3} ms",
                l.sessions,
                l.transport,
                l.failed,
                l.accept_per_s,
                l.kib_per_session,
                l.listener_rss_kib_start,
                l.listener_rss_kib_loaded,
                l.echo_rtt_ms.p50,
                l.echo_rtt_ms.p99,
                l.echo_rtt_ms.max
            );
            listener.push(l);
        }
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&Report { roamd, listener })?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("json: {}", path.display());
    }
    Ok(())
}

fn run_roamd(args: &Args) -> Result<RoamdLoad> {
    if args.flaps == 0 {
        bail!("--flaps must be at least 1");
    }
    raise_nofile(u64::from(args.subscribers + args.hostile) * 2 + 256)?;
    let topo = Topology::phone().build()?;
    let hs = topo.handset();
    let exe = AgentExe::shipped_or_current()?;
    eprintln!("agent: {}", exe.program().display());
    let agent = Agent::start_unsubscribed(hs, &exe, POLICY)?;
    let pid = agent.pid();
    let socket = agent.socket().to_path_buf();
    let rss_start = rss_kib(pid)?;
    let fds_start = open_fds(pid)?;

    // The timed subscriber connects first: roamd serves its subscribers in turn, and the
    // others' wait is the fan-out, timed separately below.
    let watcher = LinkWatcher::start(hs, DEV)?;
    let timed = StampedSubscriber::connect(&socket, DEV, WAIT)?;
    timed.wait(true, WAIT).context("the first decision")?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(Received::new());
    let base = Instant::now();
    let last_at = Arc::new(AtomicU64::new(0));
    let lost = Arc::new(AtomicU64::new(0));
    let subscribers = start_subscribers(
        &socket,
        args.subscribers,
        (&received, &last_at, base),
        &lost,
        &stop,
    )?;
    let closed = Arc::new(AtomicU64::new(0));
    let floods = Arc::new(AtomicU64::new(0));
    let hostile = start_hostile(&socket, args.hostile, &closed, &floods, &stop)?;
    let last = StampedSubscriber::connect(&socket, DEV, WAIT)?;
    last.wait(true, WAIT)
        .context("the last subscriber's first decision")?;
    eprintln!(
        "{} subscribers and {} hostile clients on roamd",
        args.subscribers, args.hostile
    );

    // Each subscriber's first decision is in before the count starts.
    received.wait_for(u64::from(args.subscribers));
    let before = received.count();
    let mut samples = Vec::new();
    let mut samples_last = Vec::new();
    let mut fanout = Vec::new();
    for flap in 1..=args.flaps {
        watcher.drain();
        timed.drain();
        last.drain();
        hs.ip(&["link", "set", DEV, "down"])?;
        // The subscriber served last first: waiting on the first one would wake this thread
        // in the middle of roamd's fan-out (both stamps are taken by their own threads anyway).
        let decided_last = last
            .wait(false, WAIT)
            .with_context(|| format!("flap {flap}"))?;
        let decided = timed
            .wait(false, WAIT)
            .with_context(|| format!("flap {flap}"))?;
        let kernel = watcher.first(false, WAIT)?;
        samples.push(ms(decided.saturating_duration_since(kernel)));
        samples_last.push(ms(decided_last.saturating_duration_since(kernel)));
        // Then the last of the others to read it.
        let n = u64::from(args.subscribers);
        if received.wait_for(before + n * (2 * u64::from(flap) - 1)) {
            let last = base + Duration::from_nanos(last_at.load(Ordering::Relaxed));
            fanout.push(ms(last.saturating_duration_since(kernel)));
        }
        hs.ip(&["link", "set", DEV, "up"])?;
        last.wait(true, WAIT)
            .with_context(|| format!("flap {flap}: back up"))?;
        timed
            .wait(true, WAIT)
            .with_context(|| format!("flap {flap}: back up"))?;
        received.wait_for(before + n * 2 * u64::from(flap));
    }
    let rss_loaded = rss_kib(pid)?;
    // Every subscriber must have had two decisions per flap; give the last ones a moment.
    let want = before + u64::from(args.subscribers) * u64::from(args.flaps) * 2;
    received.wait_for(want);
    let got = received.count();
    stop.store(true, Ordering::Relaxed);
    for h in hostile {
        let _ = h.join();
    }
    let _ = subscribers.join();
    drop(timed);
    drop(last);
    // Every connection is closed: roamd's descriptors must come back (waited for, bounded).
    let closed_at = Instant::now();
    let mut fds_end = open_fds(pid)?;
    while fds_end > fds_start && closed_at.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(20));
        fds_end = open_fds(pid)?;
    }
    let release = closed_at.elapsed();
    let rss_end = rss_kib(pid)?;

    let s = sorted(samples);
    let sl = sorted(samples_last);
    let f = sorted(fanout);
    let behind_decisions = want.saturating_sub(got);
    let r = RoamdLoad {
        subscribers: args.subscribers,
        hostile: args.hostile,
        flaps: args.flaps,
        reaction_ms: Ms::of(&s),
        reaction_last_ms: Ms::of(&sl),
        fanout_ms: Ms::of(&f),
        subscribers_behind: lost.load(Ordering::Relaxed)
            + behind_decisions.div_ceil(u64::from(args.flaps) * 2),
        hostile_closed: closed.load(Ordering::Relaxed),
        flood_connections: floods.load(Ordering::Relaxed),
        roamd_rss_kib_start: rss_start,
        roamd_rss_kib_loaded: rss_loaded,
        roamd_rss_kib_end: rss_end,
        roamd_fds_start: fds_start,
        roamd_fds_end: fds_end,
        roamd_release_ms: round_to(ms(release), 1),
    };
    println!(
        "roamd, {} subscribers + {} hostile clients, {} flaps:\n  reaction (kernel notification -> subscriber) p50 {:.3} / p99 {:.3} / max {:.3} ms (served first); p50 {:.3} / p99 {:.3} / max {:.3} ms (served last)\n  fan-out (kernel notification -> last of the others) p50 {:.3} / p99 {:.3} / max {:.3} ms\n  subscribers behind {}; hostile connections closed by roamd {}; flood connections {}\n  RSS KiB {} -> {} (loaded) -> {}; descriptors {} -> {} ({:.0} ms after the clients left)",
        r.subscribers,
        r.hostile,
        r.flaps,
        r.reaction_ms.p50,
        r.reaction_ms.p99,
        r.reaction_ms.max,
        r.reaction_last_ms.p50,
        r.reaction_last_ms.p99,
        r.reaction_last_ms.max,
        r.fanout_ms.p50,
        r.fanout_ms.p99,
        r.fanout_ms.max,
        r.subscribers_behind,
        r.hostile_closed,
        r.flood_connections,
        r.roamd_rss_kib_start,
        r.roamd_rss_kib_loaded,
        r.roamd_rss_kib_end,
        r.roamd_fds_start,
        r.roamd_fds_end,
        r.roamd_release_ms
    );
    Ok(r)
}

/// The decisions the subscribers received, and the harness's wait for a number of them. The
/// harness sleeps until the subscriber that reaches the number wakes it: it used to poll
/// every 200 us, 5,000 wake-ups a second of the measuring program on the two cores roamd's
/// fan-out runs on (a wake-up of it showed up on roamd's CPU mid-round in a scheduler trace).
#[derive(Debug)]
struct Received {
    count: AtomicU64,
    /// What the harness waits for (`u64::MAX`: nothing).
    want: AtomicU64,
    harness: std::thread::Thread,
}

impl Received {
    /// Waited for by the calling thread.
    fn new() -> Received {
        Received {
            count: AtomicU64::new(0),
            want: AtomicU64::new(u64::MAX),
            harness: std::thread::current(),
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Counts one decision; wakes the harness when it is the one it waits for.
    fn add(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.want.load(Ordering::Acquire) {
            self.harness.unpark();
        }
    }

    /// Waits (bounded by [`WAIT`]) until `count` decisions were received; false if not. Only
    /// the thread that made this `Received` may wait.
    fn wait_for(&self, count: u64) -> bool {
        let deadline = Instant::now() + WAIT;
        self.want.store(count, Ordering::Release);
        let reached = loop {
            if self.count() >= count {
                break true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            std::thread::park_timeout(left);
        };
        self.want.store(u64::MAX, Ordering::Release);
        reached
    }
}

/// `n` subscribers on a runtime of their own, counting every decision into `received` and
/// noting the latest receipt (nanoseconds after `base`) in `last_at`; a lost connection counts
/// into `lost`. They end once `stop` is set.
fn start_subscribers(
    socket: &Path,
    n: u32,
    (received, last_at, base): (&Arc<Received>, &Arc<AtomicU64>, Instant),
    lost: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (socket, received, last_at, lost, stop) = (
        socket.to_path_buf(),
        received.clone(),
        last_at.clone(),
        lost.clone(),
        stop.clone(),
    );
    let h = std::thread::Builder::new()
        .name("subscribers".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(anyhow::Error::new(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut clients = Vec::with_capacity(n as usize);
                for i in 0..n {
                    let c = async {
                        let mut c = AsyncClient::connect(&socket).await?;
                        c.call(|id| Request::Subscribe {
                            id,
                            app: None,
                            flow: None,
                        })
                        .await?;
                        anyhow::Ok(c)
                    };
                    match c.await {
                        Ok(c) => clients.push(c),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.context(format!("subscriber {i}"))));
                            return;
                        }
                    }
                }
                let mut tasks = tokio::task::JoinSet::new();
                for mut c in clients {
                    let (received, last_at, lost, stop) = (
                        received.clone(),
                        last_at.clone(),
                        lost.clone(),
                        stop.clone(),
                    );
                    tasks.spawn(async move {
                        loop {
                            match c.next().await {
                                Ok(Reply::Update(_)) => {
                                    let at = base.elapsed().as_nanos() as u64;
                                    last_at.fetch_max(at, Ordering::Relaxed);
                                    received.add();
                                }
                                Ok(_) => {}
                                Err(_) => {
                                    if !stop.load(Ordering::Relaxed) {
                                        lost.fetch_add(1, Ordering::Relaxed);
                                    }
                                    return;
                                }
                            }
                        }
                    });
                }
                let _ = ready_tx.send(Ok(()));
                // Until the harness stops: polled, as the clients' tasks never end on their own.
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tasks.abort_all();
            });
        })?;
    ready_rx
        .recv_timeout(Duration::from_secs(60))
        .context("the subscribers did not connect within 60 s")??;
    Ok(h)
}

/// The hostile clients, a thread per kind, each until `stop`.
fn start_hostile(
    socket: &Path,
    n: u32,
    closed: &Arc<AtomicU64>,
    floods: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let per_kind = n.div_ceil(4) as usize;
    let mut threads = Vec::new();
    for kind in 0..4u8 {
        let (socket, closed, floods, stop) = (
            socket.to_path_buf(),
            closed.clone(),
            floods.clone(),
            stop.clone(),
        );
        threads.push(
            std::thread::Builder::new()
                .name(format!("hostile-{kind}"))
                .spawn(move || hostile_kind(kind, per_kind, &socket, &closed, &floods, &stop))?,
        );
    }
    Ok(threads)
}

/// Runs `count` clients of one kind from one thread: each step writes a little on every
/// connection (non-blocking), reconnecting those roamd closed.
fn hostile_kind(
    kind: u8,
    count: usize,
    socket: &Path,
    closed: &AtomicU64,
    floods: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut rng = rand::rng();
    if kind == 3 {
        // Connect and drop, as fast as one thread can.
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..count {
                if UnixStream::connect(socket).is_ok() {
                    floods.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        return;
    }
    let connect = || {
        let s = UnixStream::connect(socket).ok()?;
        s.set_nonblocking(true).ok()?;
        Some(s)
    };
    let mut conns: Vec<Option<UnixStream>> = (0..count).map(|_| connect()).collect();
    let mut step = 0u64;
    let mut junk = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        for c in conns.iter_mut() {
            let Some(s) = c else {
                *c = connect();
                continue;
            };
            let r = match kind {
                // A length over the limit, then junk.
                0 => {
                    rng.fill(&mut junk[..]);
                    let len = (MAX_FRAME as u32 + 1 + rng.random_range(0..1 << 20)).to_be_bytes();
                    s.write(&len).and_then(|_| s.write(&junk))
                }
                // A frame announced, then one byte per second.
                1 => {
                    if step == 0 {
                        s.write(&100u32.to_be_bytes())
                    } else if step.is_multiple_of(100) {
                        s.write(b"{")
                    } else {
                        Ok(1)
                    }
                }
                // Garbage.
                _ => {
                    rng.fill(&mut junk[..]);
                    s.write(&junk)
                }
            };
            match r {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    closed.fetch_add(1, Ordering::Relaxed);
                    *c = None;
                }
            }
        }
        step += 1;
        // The pace of the slow kind (100 steps a second) and a bound on the others' rate.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The listener process (in the server namespace): a new test PKI whose CA goes to `ca_out`,
/// a `roam::Listener` on the service address echoing every session, `ready` on standard output
/// once it listens. Runs until killed.
fn listener_main(ca_out: Option<PathBuf>) -> Result<()> {
    let ca_out = ca_out.context("usage: __load-listener CA_OUT")?;
    // A descriptor per TCP session; QUIC sessions share the endpoint's one socket.
    raise_nofile(LISTENER_FILES)?;
    let pki = roam_tests::tls::TestPki::generate()?;
    std::fs::write(&ca_out, pki.ca.as_ref())?;
    let tls = pki.roam_server()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let l = roam::Listener::bind(
            std::net::SocketAddr::new(roam_tests::topology::SERVICE_V4.into(), PORT),
            tls,
        )?;
        println!("ready");
        std::io::stdout().flush()?;
        loop {
            let mut s = l.accept().await?;
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 256];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() || s.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// The listener process's limit of open files at least: room for 19,000 TCP sessions (one
/// descriptor each) without raising the hard limit where it is 20,000; it inherits the
/// generator's limit when that is higher.
const LISTENER_FILES: u64 = 19_500;

/// The listener's port (UDP for QUIC, TCP for tcp-resume).
const PORT: u16 = 4443;

/// Opens `n` sessions of `transport` from the handset to a listener process in the server
/// namespace, `concurrency` handshakes at a time, while one echo session measures round trips.
fn run_listener(
    transport: roam::TransportPreference,
    n: u32,
    concurrency: usize,
) -> Result<ListenerLoad> {
    use roam_tests::handover::{RunConfig, bench_topology};
    use std::io::BufRead;
    let topo = bench_topology(&RunConfig::quick(Duration::ZERO))?;
    let dir = std::env::temp_dir().join(format!("load-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ca_path = dir.join("ca.der");
    let mut child = topo
        .server()
        .command(&std::env::current_exe()?.to_string_lossy())
        .arg(LISTENER_ARG)
        .arg(&ca_path)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let result = (|| {
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("the listener did not start: {line:?}");
        }
        let ca = std::fs::read(&ca_path)?;
        let rss_start = rss_kib(pid)?;
        let target = format!("{}:{PORT}", roam_tests::topology::SERVICE_V4);
        let fds_before = open_fds(std::process::id())?;
        let (opened, failed, ramp, rtts, rss_loaded) = topo.handset().block_on(async move {
            // One link monitor for every session of the generator (see `SharedSource`).
            let source = SharedSource::start().await?;
            let builder = roam::Session::builder()
                .decision_source(Arc::new(source))
                .transport(transport)
                .tls(roam::ClientTls::Ca(vec![ca.into()]))
                .server_name(roam_tests::tls::SERVER_NAME)
                .connect_timeout(Duration::from_secs(20))
                .idle_timeout(Duration::from_secs(60));
            let done = Arc::new(AtomicBool::new(false));
            // The legit session, on a thread and runtime of its own so that its round trips
            // time the listener, not this generator's one thread busy with the others.
            let (connected_tx, connected) = tokio::sync::oneshot::channel();
            let pinger = {
                let (b, t, d) = (builder.clone(), target.clone(), done.clone());
                std::thread::Builder::new()
                    .name("echo".into())
                    .spawn(move || echo_session(b, &t, &d, connected_tx))?
            };
            connected
                .await
                .context("the echo session's thread ended")??;
            let started = Instant::now();
            let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..n {
                let permit = sem.clone().acquire_owned().await?;
                let (b, t) = (builder.clone(), target.clone());
                set.spawn(async move {
                    let r = b.connect(&t).await;
                    drop(permit);
                    r
                });
            }
            let mut sessions = Vec::with_capacity(n as usize);
            let mut failed = 0u32;
            while let Some(r) = set.join_next().await {
                match r? {
                    Ok(s) => sessions.push(s),
                    Err(e) => {
                        if failed == 0 {
                            eprintln!("a session failed to open: {e}");
                        }
                        failed += 1;
                    }
                }
            }
            let ramp = started.elapsed();
            // Held for a while, all open.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss_loaded = rss_kib(pid)?;
            done.store(true, Ordering::Relaxed);
            // It ends within one round trip and 10 ms.
            let rtts = pinger
                .join()
                .map_err(|_| anyhow::anyhow!("the echo session panicked"))??;
            let opened = sessions.len() as u32;
            drop(sessions);
            // The next transport starts from as many descriptors as this one did: closing QUIC
            // endpoints linger until their connections have drained.
            let deadline = Instant::now() + Duration::from_secs(30);
            while open_fds(std::process::id())? > fds_before + 64 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            anyhow::Ok((opened, failed, ramp, rtts, rss_loaded))
        })??;
        let r = sorted(rtts);
        Ok(ListenerLoad {
            transport: format!("{transport:?}"),
            sessions: opened,
            failed,
            accept_per_s: round_to(f64::from(opened) / ramp.as_secs_f64(), 1),
            kib_per_session: round_to(
                rss_loaded.saturating_sub(rss_start) as f64 / f64::from(opened.max(1)),
                2,
            ),
            listener_rss_kib_start: rss_start,
            listener_rss_kib_loaded: rss_loaded,
            echo_rtt_ms: Ms {
                p50: round_to(percentile(&r, 50.0), 3),
                p99: round_to(percentile(&r, 99.0), 3),
                max: round_to(percentile(&r, 100.0), 3),
            },
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One echo session: a 64-byte round trip every 10 ms until `done`; says on `connected` when
/// it is open (or why not). Its round trips in milliseconds.
fn echo_session(
    builder: roam::SessionBuilder,
    target: &str,
    done: &AtomicBool,
    connected: tokio::sync::oneshot::Sender<Result<()>>,
) -> Result<Vec<f64>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut echo = match builder.connect(target).await {
            Ok(s) => {
                let _ = connected.send(Ok(()));
                s
            }
            Err(e) => {
                let _ = connected.send(Err(anyhow::anyhow!("the echo session: {e}")));
                bail!("the echo session did not open");
            }
        };
        let mut rtts = Vec::new();
        let mut buf = [0u8; 64];
        while !done.load(Ordering::Relaxed) {
            let t = Instant::now();
            echo.write_all(&[7u8; 64]).await?;
            echo.flush().await?;
            echo.read_exact(&mut buf).await?;
            rtts.push(ms(t.elapsed()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(rtts)
    })
}

/// The load generator's decision source: one embedded link monitor, subscribed once, whose
/// snapshots every session follows. A session's own embedded monitor (a netlink socket, a link
/// table, a task) is what `use_roamd(false)` gives each session; ten thousand of them cost the
/// generator ten thousand netlink sockets and the memory of each, which is the generator's
/// cost, not the listener's that this bench measures.
///
/// Its policy keeps every session on WiFi: nothing fails here, and a generator thread too busy
/// to read acknowledgements in time makes sessions see stalls that are not there; moving them
/// to a second path would put the generator's artefact into the listener's figures (a second
/// path per session, connection IDs spent on it).
#[derive(Debug)]
struct SharedSource {
    snapshots: tokio::sync::watch::Receiver<Arc<roam::Snapshot>>,
}

/// The generator's policy (see [`SharedSource`]).
const GENERATOR_POLICY: &str = "link wifi = kind wifi\ndefault {\n  use wifi only\n}\n";

impl SharedSource {
    async fn start() -> Result<SharedSource> {
        use roam::DecisionSource;
        let policy = roam_policy::Policy::parse(GENERATOR_POLICY)?;
        let snapshots = roam::Embedded::new(policy).subscribe(None).await?;
        Ok(SharedSource { snapshots })
    }
}

impl roam::DecisionSource for SharedSource {
    fn subscribe<'a>(&'a self, _app: Option<&'a str>) -> roam::decision::SubscribeFuture<'a> {
        let snapshots = self.snapshots.clone();
        Box::pin(async move { Ok(snapshots) })
    }
}
