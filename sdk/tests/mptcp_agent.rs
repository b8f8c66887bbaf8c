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
//! roamd and the reflector run as real processes: this test binary started again to run the
//! helper test `roamd_helper` (`common::start_roamd`).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::*;
use roam_agent::enforce::userspace_pm::{PmEvent, PmEvents};
use roam_ipc::client::{Client, ClientError};
use roam_ipc::proto::Request;
use roam_tests::agent::{REFLECT_PORT, Reflector, Roamd, probe_section};
use roam_tests::privilege::require_netns;
use roam_tests::stats::{ms, percentile_duration};
use roam_tests::topology::{Direction, SERVICE_V4, Topology};
use roam_tests::traffic::{MSG_LEN, Recorder, encode, expected_digest};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Port of the kernel baseline's plain MPTCP server.
const BASELINE_PORT: u16 = 5201;
/// roamd without probe targets: the only RTTs it has are the sessions' reports.
const NO_PROBES: &str =
    "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n";
/// One message per this interval.
const PACE: Duration = Duration::from_micros(100);
/// Repeats per system and failure.
const REPEATS: usize = 10;
/// A session that delivers nothing for this long after the failure is dead (its gap counts as
/// this, and as an error).
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Delivered after the failure before a repeat ends: 300 ms of messages.
const AFTER: u64 = 3000;

/// Not a test of its own: roamd or its reflector in the process the tests start (returns at
/// once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(|| {});
}

/// The reflector's address: the service address, where every link reaches it.
fn reflector_addr() -> SocketAddr {
    SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT)
}

/// [`NO_PROBES`] plus the reflector as probe target, at roamd's shipped pacing: links
/// validated once, then probed only on suspicion (the session's per-subflow stall report)
/// with a burst of 3 probes 10 ms apart, each given its RTT and margin (50 to 100 ms): a
/// silent link is `down` 70 to 120 ms after the session reported it stalled.
fn agent_config() -> String {
    format!("{NO_PROBES}\n{}", probe_section(&[reflector_addr()]))
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

    /// roamd's configuration for the comparison. A link going down is seen by netlink, at the
    /// shipped pacing. A silent blackhole is seen only by probes: at the shipped (evidence)
    /// pacing it costs the session's stall report plus a probe burst, about as long as the
    /// kernel's own retransmission timeout (230-330 ms; `handover-bench` measures it), so this
    /// test pins `pacing = "periodic"` (every 20 ms, 40 ms timeout), the setting a user picks
    /// to trade the radios' sleep for a blackhole found within about 100 ms, and asserts that
    /// roamd's steering then beats the kernel.
    fn agent_config(self) -> String {
        match self {
            Failure::LinkDown => agent_config(),
            Failure::Blackhole => format!(
                "{}pacing = \"periodic\"\nfast_interval_ms = 20\ntimeout_ms = 40\n",
                agent_config()
            ),
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
        let thread = topo
            .handset()
            .spawn_async("pm-events", move || async move {
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

/// roamd and its reflector for one repeat; both killed on drop, roamd's directory removed.
struct Agent {
    roamd: Roamd,
    _reflector: Reflector,
}

impl Agent {
    fn start(topo: &Topology) -> Result<Agent> {
        Agent::start_with(topo, &agent_config(), POLICY)
    }

    /// roamd with this configuration and policy.
    fn start_with(topo: &Topology, config: &str, policy: &str) -> Result<Agent> {
        let reflector = Reflector::start(topo.server(), &roamd_exe()?, reflector_addr())?;
        Ok(Agent {
            roamd: start_roamd(topo, config, policy)?,
            _reflector: reflector,
        })
    }

    fn socket(&self) -> PathBuf {
        self.roamd.socket().to_path_buf()
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

/// [`send_paced`] until `stop`, then half-closes and waits for the server's end of stream
/// (everything sent was read); returns how many messages were sent.
async fn send_until_closed<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    stop: &AtomicBool,
) -> Result<u64> {
    let sent = send_paced(s, stop).await?;
    s.shutdown().await.context("client shutdown")?;
    let mut rest = Vec::new();
    tokio::time::timeout(EVENT_TIMEOUT, s.read_to_end(&mut rest))
        .await
        .context("the server did not close")??;
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
    topo.server().spawn_async("receiver", move || async move {
        match system {
            System::Roam => {
                let listener = roam::Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
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
}

/// The client of one repeat: connects, sends paced messages until `stop`, half-closes and
/// waits for the server's end of stream (everything it sent was read).
fn start_sender(
    topo: &Topology,
    system: System,
    roam_setup: Option<(PathBuf, roam::ClientTls)>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<u64>>> {
    topo.handset().spawn_async("sender", move || async move {
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
                let sent = send_until_closed(&mut s, &stop).await?;
                s.close_and_wait(0, b"done").await;
                Ok(sent)
            }
            (System::Kernel, None) => {
                let mut s = roam_tests::system::mptcp::connect_mptcp(SocketAddr::new(
                    SERVICE_V4.into(),
                    BASELINE_PORT,
                ))
                .await?;
                send_until_closed(&mut s, &stop).await
            }
            _ => bail!("a roam sender needs roamd's socket and TLS"),
        }
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

fn establish(system: System) -> Result<Running> {
    establish_with(system, &agent_config())
}

/// As [`establish`], roamd (for [`System::Roam`]) with `config`.
fn establish_with(system: System, config: &str) -> Result<Running> {
    let topo = two_links()?;
    let wlan = v4(topo.link("wlan0")?.handset_v4);
    let rmnet = v4(topo.link("rmnet0")?.handset_v4);
    let agent = match system {
        System::Roam => Some(Agent::start_with(&topo, config, POLICY)?),
        System::Kernel => {
            let addr = rmnet.to_string();
            topo.handset().ip(&[
                "mptcp", "endpoint", "add", &addr, "dev", "rmnet0", "subflow", "backup",
            ])?;
            None
        }
    };
    let watch = Watch::start(&topo)?;
    let pki = TestPki::generate()?;
    let rec = Recorder::new();
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = start_receiver(&topo, system, pki.roam_server()?, rec.clone(), ready_tx)?;
    ready_rx
        .recv_timeout(EVENT_TIMEOUT)
        .context("the server did not listen")?;
    let stop = Arc::new(AtomicBool::new(false));
    let setup = agent.as_ref().map(|a| (a.socket(), pki.roam_client()));
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
fn run_once(system: System, failure: Failure) -> Result<Option<Duration>> {
    let r = establish_with(system, &failure.agent_config())?;
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
    (
        percentile_duration(gaps, 50.0),
        percentile_duration(gaps, 99.0),
        percentile_duration(gaps, 100.0),
    )
}

/// Runs both systems `REPEATS` times, alternating, and prints and returns their p99s.
fn compare(failure: Failure) -> Result<()> {
    let mut gaps = [Vec::new(), Vec::new()];
    let mut dead = [0usize, 0];
    let systems = [System::Roam, System::Kernel];
    for _ in 0..REPEATS {
        for (k, system) in systems.into_iter().enumerate() {
            match run_once(system, failure)? {
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
    let r = establish(System::Roam)?;
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
    let forged = as_nobody(|| -> Result<Result<(), ClientError>> {
        let mut c = Client::connect(&socket, Some(EVENT_TIMEOUT))?;
        Ok(c.call(request).map(|_| ()))
    })?;
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

/// The backup flag of the subflow on `iface`: `None` when there is no such subflow.
fn backup_on(v: &[roam::Subflow], iface: &str) -> Option<Option<bool>> {
    v.iter()
        .find(|s| s.interface.as_deref() == Some(iface))
        .map(|s| s.backup)
}

/// Checks each subflow's `backup` against the kernel's `ss` flags (`b` or `B`).
fn agrees_with_ss(topo: &Topology, v: &[roam::Subflow]) -> Result<()> {
    let ss = ss_subflows(topo)?;
    for s in v {
        let local = s.local.context("a subflow without a local address")?;
        let k = ss
            .iter()
            .find(|k| k.local == local)
            .with_context(|| format!("ss does not list the subflow from {local}: {ss:?}"))?;
        let kernel = k.flags.contains('b') || k.flags.contains('B');
        assert_eq!(
            s.backup,
            Some(kernel),
            "paths() and ss disagree on {local} ({:?}): ss flags {:?}",
            s.interface,
            k.flags
        );
    }
    Ok(())
}

/// `paths()` reports each subflow's backup flag from sock_diag, agreeing with `ss -tni`: the
/// backup subflow roamd opens on rmnet0, then wlan0's flag set and cleared through roamd
/// (`set_backup`), each change a `SubflowsChanged` event. An unprivileged process reads the same
/// flags; the cost of the reads is printed.
#[test]
fn paths_report_each_subflows_backup_flag_as_ss_does() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("paths_report_each_subflows_backup_flag_as_ss_does")
    else {
        return Ok(());
    };
    let topo = two_links()?;
    let agent = Agent::start(&topo)?;
    let pki = TestPki::generate()?;
    let (_server_rx, server) = start_server_ready(&topo, &pki)?;
    let (note_tx, note_rx) = mpsc::channel::<Vec<roam::Subflow>>();
    let (go_tx, mut go_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let builder = steered_builder(agent.socket(), &pki);
    let client = topo
        .handset()
        .spawn_async("backup-client", move || async move {
            let s = builder.connect(&format!("{SERVICE_V4}:{PORT}")).await?;
            let mut ev = s.events();
            let mut step = async |v: Vec<roam::Subflow>| -> Result<()> {
                note_tx.send(v)?;
                tokio::time::timeout(EVENT_TIMEOUT, go_rx.recv())
                    .await
                    .context("the test did not go on")?;
                Ok(())
            };
            let v = next_subflows(&mut ev, "wlan0 primary, rmnet0 backup", |v| {
                backup_on(v, "wlan0") == Some(Some(false))
                    && backup_on(v, "rmnet0") == Some(Some(true))
            })
            .await?;
            let id = v
                .iter()
                .find(|s| s.interface.as_deref() == Some("wlan0"))
                .context("no wlan0 subflow")?
                .id;
            step(v).await?;
            // What an app's `paths()` costs (MPTCP_FULL_INFO, a sock_diag socket, a lookup
            // per subflow).
            let t = Instant::now();
            for _ in 0..200 {
                std::hint::black_box(s.paths());
            }
            let per_paths = t.elapsed() / 200;
            for backup in [true, false] {
                s.set_backup(id, backup).await?;
                let v = next_subflows(&mut ev, &format!("wlan0 backup={backup}"), |v| {
                    backup_on(v, "wlan0") == Some(Some(backup))
                })
                .await?;
                step(v).await?;
            }
            finish_session(s).await?;
            Ok(per_paths)
        })?;
    let next = || -> Result<Vec<roam::Subflow>> {
        note_rx
            .recv_timeout(EVENT_TIMEOUT + EVENT_TIMEOUT)
            .context("the client did not report its subflows")
    };

    let first = next()?;
    agrees_with_ss(&topo, &first)?;
    // The same read from another uid (nobody): no CAP_NET_ADMIN, no relation to the socket.
    let rm = first
        .iter()
        .find(|s| s.interface.as_deref() == Some("rmnet0"))
        .context("no rmnet0 subflow")?;
    let (local, remote) = (rm.local.context("local")?, rm.remote.context("remote")?);
    let (flags, per_read) = topo.handset().run(|| {
        as_nobody(|| {
            let ifindex = roam_link::socket::if_nametoindex("rmnet0").context("no rmnet0")?;
            let mut d = roam::mptcp::diag::Diag::open()?;
            let flags = d.subflow_flags(local, remote, ifindex)?;
            let t = Instant::now();
            for _ in 0..1000 {
                std::hint::black_box(d.subflow_flags(local, remote, ifindex)?);
            }
            Ok((flags, t.elapsed() / 1000))
        })
    })??;
    assert_eq!(
        flags.map(|f| f.backup_local()),
        Some(true),
        "an unprivileged process does not read rmnet0's backup flag: {flags:?}"
    );
    go_tx.send(())?;

    let backup = next()?;
    assert_eq!(backup_on(&backup, "wlan0"), Some(Some(true)));
    agrees_with_ss(&topo, &backup)?;
    go_tx.send(())?;
    let cleared = next()?;
    agrees_with_ss(&topo, &cleared)?;
    go_tx.send(())?;
    let per_paths = join(client, "the client")?;
    join(server, "the server")?;
    // The session's subflow watcher reads every 50 ms.
    let tick = Duration::from_millis(50);
    eprintln!(
        "figure: sock_diag backup-flag read {per_read:?} per subflow (as nobody, 1000 reads); \
         paths() with 2 subflows {per_paths:?}; 2 reads per {tick:?} watcher tick = {:.3}% of it",
        200.0 * per_read.as_secs_f64() / tick.as_secs_f64()
    );
    Ok(())
}

/// roamd without probes (no figure of its own for any link) hears the RTT of the MPTCP
/// session's subflow on wlan0: its `links` answer carries it.
#[test]
fn roamd_hears_the_mptcp_subflows_rtt() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test("roamd_hears_the_mptcp_subflows_rtt") else {
        return Ok(());
    };
    let topo = two_links()?;
    let agent = Agent::start_with(&topo, NO_PROBES, POLICY)?;
    let rtt_of = |v: &[roam_policy::model::Interface], name: &str| {
        v.iter().find(|i| i.name == name).and_then(|i| i.rtt_ms)
    };
    let before = links(&agent.socket())?;
    assert_eq!(
        rtt_of(&before, "wlan0"),
        None,
        "roamd has an RTT for wlan0 before any session: {before:?}"
    );
    let pki = TestPki::generate()?;
    let builder = steered_builder(agent.socket(), &pki);
    let r = Run::start(&topo, &pki, builder, None)?;
    // The server's per-MiB notes are the clock: one `links` call per note, bounded.
    let deadline = Instant::now() + EVENT_TIMEOUT;
    let (rtt, waited) = loop {
        let now = links(&agent.socket())?;
        if let Some(rtt) = rtt_of(&now, "wlan0") {
            break (rtt, now);
        }
        if Instant::now() > deadline {
            bail!("roamd never heard wlan0's RTT: {now:?}");
        }
        wait_for(&r.server_rx, "more data at the server", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
    };
    let kernel = ss_rtt_ms(&topo, "wlan0")?;
    let s = r.finish()?;
    eprintln!(
        "figure: roamd's wlan0 rtt_ms {rtt:.3} from the MPTCP session's reports (kernel srtt of \
         the subflow {kernel:.3} ms), {} bytes intact",
        s.bytes
    );
    assert!(
        rtt > 0.0 && rtt < 1000.0,
        "an implausible RTT for a veth: {rtt} ms ({waited:?})"
    );
    Ok(())
}

/// roamd's view of the interfaces (`links`, what `roamctl links --json` prints).
fn links(socket: &std::path::Path) -> Result<Vec<roam_policy::model::Interface>> {
    let mut c = Client::connect(socket, Some(EVENT_TIMEOUT))?;
    match c.call(|id| Request::Links { id })? {
        roam_ipc::proto::Reply::Links { interfaces, .. } => Ok(interfaces),
        other => bail!("links answered {other:?}"),
    }
}

/// Waits, one `links` call per MiB the server receives, until roamd has seen `link` up for
/// `d` (or up since it started, which shows no up time): the policy's hold keeps a returning
/// link from being first only while another one has been up for the hold.
fn wait_up_for(
    agent: &Agent,
    notes: &mpsc::Receiver<ServerNote>,
    link: &str,
    d: Duration,
) -> Result<()> {
    let deadline = Instant::now() + d + EVENT_TIMEOUT;
    loop {
        let v = links(&agent.socket())?;
        // A usable link with no up time was up when roamd started: longer than any hold.
        let held_long_enough = v.iter().find(|i| i.name == link).is_some_and(|i| {
            i.state.is_usable() && i.up_for_ms.is_none_or(|ms| ms as u128 >= d.as_millis())
        });
        if held_long_enough {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("roamd did not see {link} up for {d:?}: {v:?}");
        }
        wait_for(notes, "more data at the server", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
    }
}

/// The smoothed RTT `ss -tni` shows for the subflow from `link`'s address, in ms.
fn ss_rtt_ms(topo: &Topology, link: &str) -> Result<f64> {
    let ip = IpAddr::from(topo.link(link)?.handset_v4);
    let ss = ss_subflows(topo)?;
    ss.iter()
        .find(|k| k.local.ip() == ip)
        .and_then(|k| k.rtt_ms)
        .with_context(|| format!("no subflow with an RTT from {ip} in ss: {ss:?}"))
}

/// Waits, on the server's per-MiB notes (bounded by `within`), until the stream runs over
/// `to` rather than `from`: a MiB of the stream of which at least three quarters came over
/// `to`. Returns when it saw that.
fn wait_stream_moved(
    topo: &Topology,
    notes: &mpsc::Receiver<ServerNote>,
    to: &str,
    from: &str,
    within: Duration,
) -> Result<Instant> {
    let deadline = Instant::now() + within;
    let mut last = (rx_bytes(topo, to)?, rx_bytes(topo, from)?);
    loop {
        wait_for(notes, "more data at the server", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
        let now = (rx_bytes(topo, to)?, rx_bytes(topo, from)?);
        let (d_to, d_from) = (now.0 - last.0, now.1 - last.1);
        if d_to > 3 * d_from && d_to > 512 * 1024 {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "the stream did not move from {from} to {to} within {within:?}; the handset's \
                 subflows: {:?}",
                ss_subflows(topo)
            );
        }
        last = now;
    }
}

/// Waits for the stream to come back to wlan0 after it came up at `up_at`, then checks the
/// kernel's view (the wlan0 subflow is joined and no backup, any subflow left on rmnet0 is one)
/// against the session's `paths()` (its `SubflowsChanged`), that it took at least `hold`, and
/// both ends' hashes (`common::finish`). Returns the server's side and the time it took.
fn back_on_wifi(
    topo: &Topology,
    r: Run,
    up_at: Instant,
    hold: Duration,
) -> Result<(ServerSide, Duration)> {
    let back = wait_stream_moved(topo, &r.server_rx, "wlan0", "rmnet0", 4 * EVENT_TIMEOUT)?;
    let n = wait_for(
        &r.client_rx,
        "wlan0 primary again in the session's subflows",
        |n| {
            matches!(n, ClientNote::Event(_, roam::SessionEvent::SubflowsChanged(v))
            if backup_on(v, "wlan0") == Some(Some(false))
                && backup_on(v, "rmnet0").is_none_or(|b| b == Some(true)))
        },
    )?;
    let ClientNote::Event(_, roam::SessionEvent::SubflowsChanged(v)) = n else {
        bail!("unexpected {n:?}");
    };
    agrees_with_ss(topo, &v)?;
    let wlan = IpAddr::from(topo.link("wlan0")?.handset_v4);
    let ss = ss_subflows(topo)?;
    assert!(
        ss.iter()
            .any(|k| k.local.ip() == wlan && !k.flags.contains('b') && k.flags.contains('J')),
        "no joined, non-backup subflow from wlan0 in ss: {ss:?}"
    );
    let s = r.finish()?;
    let held = back.saturating_duration_since(up_at);
    assert!(
        held >= hold,
        "back on wlan0 {held:?} after it came up: the {hold:?} hold was not respected"
    );
    Ok((s, held))
}

/// An MPTCP session of `com.example.chat` following (and steered by) the roamd at `socket`.
fn steered_builder(socket: PathBuf, pki: &TestPki) -> roam::SessionBuilder {
    roam::Session::builder()
        .app("com.example.chat")
        .roamd_socket(socket)
        .transport(roam::TransportPreference::Mptcp)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME)
}

/// A hashed stream (`common::run`) over an MPTCP session that `agent` steers, once roamd's
/// backup subflow on rmnet0 is up (the session's `paths()` says so).
fn start_steered(topo: &Topology, agent: &Agent) -> Result<Run> {
    let pki = TestPki::generate()?;
    let builder = steered_builder(agent.socket(), &pki);
    let r = Run::start(topo, &pki, builder, None)?;
    wait_for(&r.client_rx, "roamd's backup subflow on rmnet0", |n| {
        matches!(n, ClientNote::Event(_, roam::SessionEvent::SubflowsChanged(v))
            if backup_on(v, "rmnet0") == Some(Some(true)))
    })?;
    Ok(r)
}

/// The preferred link returning, roamd steering: WiFi goes down, the stream moves to cellular;
/// WiFi comes back, and once it has been up for the policy's hold (1 s) roamd opens a subflow
/// on it and makes cellular the backup: the stream is back on WiFi (the server's per-link
/// bytes, the kernel's `ss` flags, the session's `paths()`), every byte intact.
#[test]
fn the_stream_returns_to_wifi_after_the_hold() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test("the_stream_returns_to_wifi_after_the_hold")
    else {
        return Ok(());
    };
    const HOLD: Duration = Duration::from_secs(1);
    let topo = two_links()?;
    let agent = Agent::start(&topo)?;
    let r = start_steered(&topo, &agent)?;
    wait_up_for(&agent, &r.server_rx, "rmnet0", HOLD)?;

    let down_at = Instant::now();
    topo.link_down("wlan0")?;
    let on_cell = wait_stream_moved(&topo, &r.server_rx, "rmnet0", "wlan0", EVENT_TIMEOUT)?;
    let up_at = Instant::now();
    topo.link_up("wlan0")?;
    let (s, held) = back_on_wifi(&topo, r, up_at, HOLD)?;
    eprintln!(
        "figure: mptcp (roamd) wifi down -> stream on cellular within {:?}; wifi back -> stream on \
         wifi {held:?} after `ip link set up` (hold {HOLD:?}); {}",
        on_cell - down_at,
        s.summary()
    );
    Ok(())
}

/// 20 flaps of WiFi (50 ms down, 150 ms up: every return shorter than the 4 s hold) under a
/// stream hashed at both ends, roamd steering: the stream leaves WiFi at the first loss, stays
/// on cellular while WiFi flaps, and is back on WiFi once WiFi stayed up for the hold. The
/// hold is 4 s for the reason `flap.rs` gives (an up phase lasts up to a linkwatch second).
#[test]
fn steered_by_roamd_survives_twenty_wifi_flaps_and_returns_after_the_hold() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "steered_by_roamd_survives_twenty_wifi_flaps_and_returns_after_the_hold",
    ) else {
        return Ok(());
    };
    const CYCLES: u32 = 20;
    const DOWN: Duration = Duration::from_millis(50);
    const UP: Duration = Duration::from_millis(150);
    const HOLD: Duration = Duration::from_secs(4);
    let topo = Arc::new(two_links()?);
    let policy = POLICY.replace("hold 1s", &format!("hold {}s", HOLD.as_secs()));
    let agent = Agent::start_with(&topo, &agent_config(), &policy)?;
    let r = start_steered(&topo, &agent)?;
    wait_up_for(&agent, &r.server_rx, "rmnet0", HOLD)?;

    let flapper = topo.flap("wlan0", DOWN, UP, CYCLES)?;
    let first_down = Instant::now();
    wait_stream_moved(&topo, &r.server_rx, "rmnet0", "wlan0", EVENT_TIMEOUT)?;
    let wlan_before = rx_bytes(&topo, "wlan0")?;
    let cell_before = rx_bytes(&topo, "rmnet0")?;
    let flaps = flapper.wait().context("flapping wlan0")?;
    // While WiFi flapped, the stream stayed on cellular: WiFi carried handshakes at most.
    let (wlan_flapping, cell_flapping) = (
        rx_bytes(&topo, "wlan0")? - wlan_before,
        rx_bytes(&topo, "rmnet0")? - cell_before,
    );
    let Flaps {
        last_up,
        longest_up,
        ..
    } = check_flaps(&flaps, CYCLES, HOLD)?;
    assert!(
        wlan_flapping < cell_flapping / 20,
        "the stream went back to wlan0 while it flapped: {wlan_flapping} bytes there, \
         {cell_flapping} on rmnet0"
    );
    let (s, held) = back_on_wifi(&topo, r, last_up, HOLD)?;
    eprintln!(
        "figure: mptcp (roamd) {CYCLES} flaps of wlan0 ({DOWN:?} down, {UP:?} up, {:?} in all, \
         longest up phase {longest_up:?}): {wlan_flapping} bytes over wlan0 and {cell_flapping} \
         over rmnet0 while it flapped; stream back on wlan0 {held:?} after its last return (hold \
         {HOLD:?}); longest delivery gap {:?}, {} bytes intact",
        last_up - first_down,
        s.max_gap,
        s.bytes
    );
    Ok(())
}

/// A policy condition on WiFi's RTT acts on an MPTCP session: roamd, with no probes of its own,
/// learns wlan0's RTT only from the session's reports; when the path to the server over wlan0
/// slows to 400 ms, `prefer cell over wifi if wifi.rtt > 150ms` applies, and roamd moves the
/// stream to rmnet0 (the server's per-link bytes), with wlan0's subflow made the backup (`ss`,
/// the session's `paths()`).
#[test]
fn a_wifi_rtt_condition_moves_an_mptcp_session_to_cellular() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("a_wifi_rtt_condition_moves_an_mptcp_session_to_cellular")
    else {
        return Ok(());
    };
    const SLOW: Duration = Duration::from_millis(400);
    // (`prefer wifi over cell unless wifi.rtt > 150ms` alone would keep WiFi first: without an
    // applicable `prefer`, the base order is the classes' declaration order.)
    const RTT_POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                              default {\n  prefer cell over wifi if wifi.rtt > 150ms\n  \
                              prefer wifi over cell\n}\n";
    init_tracing();
    let plain = roam_tests::emulator::PathConfig::default();
    let topo = Topology::builder()
        .link("wlan0", roam_policy::LinkKind::Wifi)
        .link("rmnet0", roam_policy::LinkKind::Cellular)
        .emulated(plain, plain)
        .build()?;
    let agent = Agent::start_with(&topo, NO_PROBES, RTT_POLICY)?;
    let r = start_steered(&topo, &agent)?;
    let fast = links(&agent.socket())?;
    topo.emulator("wlan0")
        .context("wlan0 is not emulated")?
        .set_rtt(SLOW);
    let slowed = Instant::now();
    let moved = wait_stream_moved(&topo, &r.server_rx, "rmnet0", "wlan0", 4 * EVENT_TIMEOUT)
        .with_context(|| format!("roamd's view: {:?}", links(&agent.socket())))?;
    let rtt_of = |v: &[roam_policy::model::Interface]| {
        v.iter().find(|i| i.name == "wlan0").and_then(|i| i.rtt_ms)
    };
    // The stream may leave wlan0 before roamd has the slow RTT: with no acknowledgement for
    // 400 ms the session (or the kernel's scheduler, which stops using a stale subflow) can act
    // on the stall first. What this test is about is that roamd learns the RTT from the
    // session's reports and its decision keeps the stream on rmnet0 with wlan0 the backup.
    // A bounded poll, as no event says it: roamd pushes an `update` (whose interfaces carry
    // `rtt_ms`) only when the app's decision changes, and whether learning the RTT changes it
    // depends on what the stall did first; the session's events do not carry roamd's RTT.
    let learnt = Instant::now() + 4 * EVENT_TIMEOUT;
    let seen = loop {
        let v = links(&agent.socket())?;
        if rtt_of(&v).is_some_and(|r| r > 150.0) || Instant::now() > learnt {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let n = wait_for(&r.client_rx, "wlan0's subflow made the backup", |n| {
        matches!(n, ClientNote::Event(_, roam::SessionEvent::SubflowsChanged(v))
            if backup_on(v, "wlan0") == Some(Some(true))
                && backup_on(v, "rmnet0") == Some(Some(false)))
    })?;
    let ClientNote::Event(_, roam::SessionEvent::SubflowsChanged(v)) = n else {
        bail!("unexpected {n:?}");
    };
    agrees_with_ss(&topo, &v)?;
    let s = r.finish()?;
    eprintln!(
        "figure: mptcp (roamd, no probes) wlan0 slowed to {SLOW:?} RTT -> stream on rmnet0 {:?} \
         later; roamd's wlan0 rtt_ms {:?} before, {:?} after the move; longest delivery gap {:?}, {} \
         bytes intact",
        moved - slowed,
        rtt_of(&fast),
        rtt_of(&seen),
        s.max_gap,
        s.bytes
    );
    assert!(
        rtt_of(&seen).is_some_and(|r| r > 150.0),
        "the stream moved, but roamd's wlan0 RTT is {:?}",
        rtt_of(&seen)
    );
    Ok(())
}
