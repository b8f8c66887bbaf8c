//! MPTCP steered by roamd (userspace path manager) against the kernel's own path manager, on
//! link down and on a silent blackhole.
//!
//! `roam`: roamd in the handset with `[mptcp] userspace = true` and probe targets; its UDP
//! reflector (`roamd reflect`) in the server namespace. The session registers its connection,
//! roamd opens a backup subflow on rmnet0 ahead of time, and when wlan0 fails (link down, or
//! the prober's misses for a blackhole) it promotes the backup and then closes the dead subflow.
//! `kernel`: no roamd, plain MPTCP sockets, an in-kernel endpoint on rmnet0 with the `subflow
//! backup` flags, as `baseline-kernel-mptcp` in the benchmark.
//!
//! The gap: the client sends 64-byte sequence-numbered messages at a steady pace (one per
//! 100 µs, written every millisecond), the server timestamps each delivery, and the gap is the
//! longest pause in delivery from the last message before the failure on. Every repeat builds
//! its own namespaces; p50/p99/max over the repeats are printed as `figure:` lines.
//!
//! roamd and the reflector run as real processes: this test binary started again with the
//! filter `agent_process_helper` / `reflect_process_helper` (see `common::helper`).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::helper::HelperProc;
use common::*;
use roam_agent::enforce::userspace_pm::{PmEvent, PmEvents};
use roam_ipc::client::{Client, ClientError};
use roam_ipc::proto::Request;
use roam_tests::privilege::require_netns;
use roam_tests::topology::{Direction, SERVICE_V4, Topology};
use roam_tests::traffic::{MSG_LEN, Recorder, encode, expected_digest};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const AGENT_ENV: &str = "ROAM_SDK_TEST_AGENT_MPTCP";
const REFLECT_ENV: &str = "ROAM_SDK_TEST_REFLECT";
const REFLECT_PORT: u16 = 7777;
/// Port of the kernel baseline's plain MPTCP server.
const BASELINE_PORT: u16 = 5201;
/// Probes every 20 ms where a session is, each given 40 ms: a silent link is `down` after
/// 3 misses, at most 3 x 20 + 40 = 100 ms after it died.
const AGENT_CONFIG: &str = "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n\n\
                            [probe]\ntargets = [\"198.19.0.1:7777\"]\nfast_interval_ms = 20\ntimeout_ms = 40\n";
/// One message per this interval.
const PACE: Duration = Duration::from_micros(100);
/// Repeats per system and failure.
const REPEATS: usize = 10;
/// A session that delivers nothing for this long after the failure is dead (its gap counts as
/// this, and as an error).
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Delivered after the failure before a repeat ends: 300 ms of messages.
const AFTER: u64 = 3000;

/// Not a test of its own: the body of the agent process the tests start. Returns at once
/// unless `ROAM_SDK_TEST_AGENT_MPTCP` names a directory.
#[test]
fn agent_process_helper() {
    let Some(dir) = std::env::var_os(AGENT_ENV).map(PathBuf::from) else {
        return;
    };
    init_tracing();
    let config = roam_agent::config::Config::from_str("roamd.toml", AGENT_CONFIG)
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let opts = roam_agent::daemon::Options {
        config,
        policy_path: Some(dir.join("policy.roam")),
        socket: dir.join("roamd.sock"),
        dry_run: false,
        sysfs_root: PathBuf::from("/sys/class/net"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(roam_agent::daemon::run(opts, |_| {
        println!("agent-ready");
    }));
    r.expect("roamd failed");
}

/// Not a test of its own: `roamd reflect --listen ADDR` in the server namespace. Returns at
/// once unless `ROAM_SDK_TEST_REFLECT` names the address.
#[test]
fn reflect_process_helper() {
    let Some(addr) = std::env::var_os(REFLECT_ENV) else {
        return;
    };
    let listen: SocketAddr = addr
        .to_str()
        .and_then(|a| a.parse().ok())
        .expect("ROAM_SDK_TEST_REFLECT is ip:port");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(roam_agent::probe::reflect::run(listen, |a| {
        println!("reflect-ready {a}");
    }))
    .expect("reflector failed");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    /// roamd with the userspace path manager steers the session's connection.
    Roam,
    /// The in-kernel path manager alone, rmnet0 a `subflow backup` endpoint.
    Kernel,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Roam => "roam (roamd userspace PM)",
            System::Kernel => "kernel PM alone (backup endpoint)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    LinkDown,
    Blackhole,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::LinkDown => "link-down",
            Failure::Blackhole => "blackhole",
        }
    }

    fn inject(self, topo: &Topology) -> Result<()> {
        match self {
            Failure::LinkDown => topo.link_down("wlan0"),
            // nftables drop at wlan0's device, both directions; the link stays up.
            Failure::Blackhole => topo.blackhole("wlan0", Direction::Both),
        }
    }
}

/// The kernel's MPTCP events in the handset (`mptcp_pm_events`, what `ip mptcp monitor`
/// prints), subscribed before the first connection exists.
struct Watch {
    rx: mpsc::Receiver<PmEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Watch {
    fn start(topo: &Topology) -> Result<Watch> {
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = topo.handset().spawn("pm-events", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let mut ev = PmEvents::open().context("subscribing to mptcp_pm_events")?;
                let _ = ready_tx.send(());
                // Bounded: it stops when told, and after two minutes whatever happens.
                let end = Instant::now() + Duration::from_secs(120);
                while !st.load(Ordering::Relaxed) && Instant::now() < end {
                    if let Ok(r) = tokio::time::timeout(Duration::from_millis(100), ev.next()).await
                    {
                        for e in r? {
                            let _ = tx.send(e);
                        }
                    }
                }
                Ok(())
            })
        })?;
        ready_rx
            .recv_timeout(EVENT_TIMEOUT)
            .context("the event watcher did not subscribe")?;
        Ok(Watch {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The next kernel event matching `pred`, others skipped, up to [`EVENT_TIMEOUT`].
    fn wait(&self, what: &str, pred: impl FnMut(&PmEvent) -> bool) -> Result<PmEvent> {
        wait_for(&self.rx, what, pred)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// roamd and its reflector for one repeat; both killed on drop, the directory removed.
struct Agent {
    _agent: HelperProc,
    _reflector: HelperProc,
    dir: PathBuf,
}

impl Agent {
    fn start(topo: &Topology, tag: &str) -> Result<Agent> {
        let dir =
            std::env::temp_dir().join(format!("roam-sdk-mptcp-agent-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("policy.roam"), POLICY)?;
        let listen = SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT).to_string();
        let reflector = HelperProc::start(
            topo.server(),
            "reflect_process_helper",
            (REFLECT_ENV, listen.as_ref()),
            "reflect-ready",
            "ROAM_AGENT_LOG",
        )?;
        let agent = HelperProc::start(
            topo.handset(),
            "agent_process_helper",
            (AGENT_ENV, dir.as_os_str()),
            "agent-ready",
            "ROAM_AGENT_LOG",
        )?;
        Ok(Agent {
            _agent: agent,
            _reflector: reflector,
            dir,
        })
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("roamd.sock")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads `r` to its end into `rec`, timestamping every read.
async fn receive<R: AsyncRead + Unpin>(r: &mut R, rec: &Recorder) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf).await.context("server read")?;
        if n == 0 {
            return Ok(());
        }
        rec.feed(Instant::now(), &buf[..n]);
    }
}

/// Writes message `seq` once it is due (`seq * PACE` after the start), every millisecond,
/// until `stop` or a minute passes; returns how many were sent.
async fn send_paced<W: AsyncWrite + Unpin>(w: &mut W, stop: &AtomicBool) -> Result<u64> {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut sent = 0u64;
    let mut buf = Vec::with_capacity(MSG_LEN * 64);
    // Bounded: a minute at most.
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
        tick.tick().await;
        let due = (start.elapsed().as_micros() / PACE.as_micros()) as u64;
        buf.clear();
        for seq in sent..due {
            buf.extend_from_slice(&encode(seq));
        }
        w.write_all(&buf).await.context("client write")?;
        sent = due;
    }
    Ok(sent)
}

/// The server of one repeat: takes one connection, records every message to its end.
fn start_receiver(
    topo: &Topology,
    system: System,
    tls: rustls::ServerConfig,
    rec: Arc<Recorder>,
    ready: mpsc::Sender<()>,
) -> Result<JoinHandle<Result<()>>> {
    topo.server().spawn("receiver", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            match system {
                System::Roam => {
                    let listener =
                        roam::Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
                    let _ = ready.send(());
                    let mut s = tokio::time::timeout(EVENT_TIMEOUT, listener.accept())
                        .await
                        .context("no session arrived")??;
                    receive(&mut s, &rec).await?;
                    s.shutdown().await?;
                    let _ = tokio::time::timeout(EVENT_TIMEOUT, s.closed()).await;
                }
                System::Kernel => {
                    let addr = SocketAddr::new(SERVICE_V4.into(), BASELINE_PORT);
                    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::MPTCP))?;
                    sock.set_reuse_address(true)?;
                    sock.bind(&addr.into())?;
                    sock.listen(8)?;
                    sock.set_nonblocking(true)?;
                    let listener = tokio::net::TcpListener::from_std(sock.into())?;
                    let _ = ready.send(());
                    let (mut s, _) = tokio::time::timeout(EVENT_TIMEOUT, listener.accept())
                        .await
                        .context("no connection arrived")??;
                    receive(&mut s, &rec).await?;
                    s.shutdown().await?;
                }
            }
            Ok(())
        })
    })
}

/// The client of one repeat: connects, sends paced messages until `stop`, half-closes and
/// waits for the server's end of stream (everything it sent was read).
fn start_sender(
    topo: &Topology,
    system: System,
    roam_setup: Option<(PathBuf, roam::ClientTls)>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<u64>>> {
    topo.handset().spawn("sender", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            match (system, roam_setup) {
                (System::Roam, Some((socket, tls))) => {
                    let mut s = roam::Session::builder()
                        .app("com.example.chat")
                        .roamd_socket(&socket)
                        .transport(roam::TransportPreference::Mptcp)
                        .tls(tls)
                        .server_name(SERVER_NAME)
                        .connect(&format!("{SERVICE_V4}:{PORT}"))
                        .await?;
                    let sent = send_paced(&mut s, &stop).await?;
                    s.shutdown().await.context("client shutdown")?;
                    let mut rest = Vec::new();
                    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut rest))
                        .await
                        .context("the server did not close")??;
                    s.close_and_wait(0, b"done").await;
                    Ok(sent)
                }
                (System::Kernel, None) => {
                    let mut s = roam_tests::system::mptcp::connect_mptcp(SocketAddr::new(
                        SERVICE_V4.into(),
                        BASELINE_PORT,
                    ))
                    .await?;
                    let sent = send_paced(&mut s, &stop).await?;
                    s.shutdown().await.context("client shutdown")?;
                    let mut rest = Vec::new();
                    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut rest))
                        .await
                        .context("the server did not close")??;
                    Ok(sent)
                }
                _ => bail!("a roam sender needs roamd's socket and TLS"),
            }
        })
    })
}

/// A session of `system` from wlan0 with a backup subflow from rmnet0 established (the
/// kernel's event says so), its connection token, and the way to stop it.
struct Running {
    topo: Topology,
    watch: Watch,
    agent: Option<Agent>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    sender: JoinHandle<Result<u64>>,
    receiver: JoinHandle<Result<()>>,
    token: u32,
    server: SocketAddr,
}

fn v4(ip: std::net::Ipv4Addr) -> IpAddr {
    IpAddr::V4(ip)
}

fn establish(system: System, tag: &str) -> Result<Running> {
    let topo = two_links()?;
    let wlan = v4(topo.link("wlan0")?.handset_v4);
    let rmnet = v4(topo.link("rmnet0")?.handset_v4);
    let agent = match system {
        System::Roam => Some(Agent::start(&topo, tag)?),
        System::Kernel => {
            let addr = rmnet.to_string();
            topo.handset().ip(&[
                "mptcp", "endpoint", "add", &addr, "dev", "rmnet0", "subflow", "backup",
            ])?;
            None
        }
    };
    let watch = Watch::start(&topo)?;
    let pki = Pki::generate()?;
    let rec = Recorder::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = start_receiver(&topo, system, pki.server_tls()?, rec.clone(), ready_tx)?;
    ready_rx
        .recv_timeout(EVENT_TIMEOUT)
        .context("the server did not listen")?;
    let stop = Arc::new(AtomicBool::new(false));
    let setup = agent.as_ref().map(|a| (a.socket(), pki.client_tls()));
    let sender = start_sender(&topo, system, setup, stop.clone())?;
    let Ok(PmEvent::Connection { token, remote, .. }) = watch.wait(
        "the connection from wlan0",
        |e| matches!(e, PmEvent::Connection { local, .. } if local.ip() == wlan),
    ) else {
        bail!("no MPTCP connection from wlan0");
    };
    // The backup subflow made ahead of time: by roamd (its endpoints are off), or by the
    // kernel from its endpoint. (The event's backup bit is the server's, not ours.)
    watch.wait("a backup subflow from rmnet0", |e| {
        matches!(e, PmEvent::SubflowUp { token: t, local, .. }
            if *t == token && local.ip() == rmnet)
    })?;
    Ok(Running {
        topo,
        watch,
        agent,
        rec,
        stop,
        sender,
        receiver,
        token,
        server: remote,
    })
}

/// One repeat: returns the gap, or `None` when the session did not recover within
/// [`RUN_TIMEOUT`] (dead).
fn run_once(system: System, failure: Failure, tag: &str) -> Result<Option<Duration>> {
    let r = establish(system, tag)?;
    let wlan = v4(r.topo.link("wlan0")?.handset_v4);
    // Steady flow first: 200 ms of messages delivered after the backup subflow came.
    let now = r.rec.delivered();
    if r.rec.wait_for(now + 2000, Instant::now() + EVENT_TIMEOUT) < now + 2000 {
        bail!("the stream does not flow before the failure");
    }
    let _ = r.watch.rx.try_iter().count();
    let at = Instant::now();
    let before = r.rec.delivered();
    failure.inject(&r.topo)?;
    let got = r.rec.wait_for(before + AFTER, at + RUN_TIMEOUT);
    let dead = got < before + AFTER;
    if system == System::Roam && !dead {
        // roamd closed wlan0's subflow (the kernel alone keeps it). The promotion of rmnet0's
        // before it raises no event on this end (MP_PRIO is an event at the peer): its order
        // is checked in the core's virtual-time tests.
        r.watch.wait("wlan0's subflow closed", |e| {
            matches!(e, PmEvent::SubflowClosed { token, local, .. }
                if *token == r.token && local.ip() == wlan)
        })?;
    }
    r.stop.store(true, Ordering::Relaxed);
    let sent = r
        .sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))?;
    let received = r
        .receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    if dead {
        return Ok(None);
    }
    let sent = sent.context("sender")?;
    received.context("receiver")?;
    let d = r.rec.snapshot();
    assert_eq!(
        d.corrupted, 0,
        "{failure:?} {system:?}: damaged or missing messages"
    );
    assert_eq!(d.delivered, sent, "{failure:?} {system:?}: messages lost");
    assert_eq!(d.digest, expected_digest(sent), "the stream differs");
    drop(r.agent);
    Ok(d.longest_pause_after(at))
}

/// p50, p99 and max (nearest rank) of `gaps`.
fn percentiles(gaps: &mut [Duration]) -> (Duration, Duration, Duration) {
    gaps.sort();
    let rank = |p: f64| {
        let i = ((p * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len());
        gaps[i - 1]
    };
    (rank(0.50), rank(0.99), gaps[gaps.len() - 1])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs both systems `REPEATS` times, alternating, and prints and returns their p99s.
fn compare(failure: Failure) -> Result<()> {
    let mut gaps = [Vec::new(), Vec::new()];
    let mut dead = [0usize, 0];
    let systems = [System::Roam, System::Kernel];
    for i in 0..REPEATS {
        for (k, system) in systems.into_iter().enumerate() {
            let tag = format!("{}-{i}", failure.name());
            match run_once(system, failure, &tag)? {
                Some(g) => gaps[k].push(g),
                None => {
                    dead[k] += 1;
                    gaps[k].push(RUN_TIMEOUT);
                }
            }
        }
    }
    let mut p = Vec::new();
    for (k, system) in systems.into_iter().enumerate() {
        let (p50, p99, max) = percentiles(&mut gaps[k]);
        println!(
            "figure: mptcp {} {}: gap_ms p50 {:.1} p99 {:.1} max {:.1} over {} repeats, {} dead",
            failure.name(),
            system.name(),
            ms(p50),
            ms(p99),
            ms(max),
            REPEATS,
            dead[k]
        );
        p.push((p50, p99));
    }
    assert_eq!(dead[0], 0, "{failure:?}: a roam session died");
    // roamd must beat the kernel alone on every repeat that matters: its worst case below
    // the kernel's median.
    assert!(
        p[0].1 < p[1].0,
        "{failure:?}: roam p99 {:?} is not below the kernel's p50 {:?}",
        p[0].1,
        p[1].0
    );
    Ok(())
}

#[test]
fn link_down_gap_roamd_against_the_kernel_path_manager() -> Result<()> {
    if !require_netns("link_down_gap_roamd_against_the_kernel_path_manager") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    compare(Failure::LinkDown)
}

#[test]
fn blackhole_gap_roamd_against_the_kernel_path_manager() -> Result<()> {
    if !require_netns("blackhole_gap_roamd_against_the_kernel_path_manager") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    compare(Failure::Blackhole)
}

/// A client of another uid names the session's token: `denied`, while the session's own uid
/// is served by the kernel.
#[test]
fn a_subflow_request_for_another_uids_connection_is_denied() -> Result<()> {
    if !require_netns("a_subflow_request_for_another_uids_connection_is_denied") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let r = establish(System::Roam, "forged")?;
    let socket = r.agent.as_ref().context("roamd")?.socket();
    let rmnet = v4(r.topo.link("rmnet0")?.handset_v4);
    let token = r.token;
    let server = r.server;
    let request = move |id| Request::MptcpSubflowSetBackup {
        id,
        token,
        local: SocketAddr::new(rmnet, 0),
        remote: server,
        backup: true,
    };
    // Another uid (nobody), on a thread of its own: SO_PEERCRED takes the connecting
    // thread's credentials, and setresuid through the raw system call changes only this one.
    let sock = socket.clone();
    let forged = std::thread::spawn(move || -> Result<Result<(), ClientError>> {
        // SAFETY: plain system call; it changes the credentials of this thread alone.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        if rc != 0 {
            bail!("setresuid: {}", std::io::Error::last_os_error());
        }
        let mut c = Client::connect(&sock, Some(EVENT_TIMEOUT))?;
        Ok(c.call(request).map(|_| ()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("forging thread panicked"))??;
    match forged {
        Err(ClientError::Refused { code, .. }) if code == "denied" => {}
        other => panic!("another uid's request was not denied: {other:?}"),
    }
    // The session's own uid is let through to the kernel (which sets the flag it has).
    let mut c = Client::connect(&socket, Some(EVENT_TIMEOUT))?;
    c.call(request)
        .context("the session's own uid was refused")?;
    r.stop.store(true, Ordering::Relaxed);
    let _ = r.sender.join();
    let _ = r.receiver.join();
    Ok(())
}
