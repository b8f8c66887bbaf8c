//! A backup that died silently while nobody probed it does not strand a real session.
//!
//! The handset has wlan0 (WiFi, preferred), rmnet0 (cellular) and bnep0 (Bluetooth); roamd runs
//! at the shipped `evidence` pacing with a probe target and a short validity (13 s, so the test
//! does not wait ten minutes; it still outlasts the cellular tail after the validation burst).
//! A session follows roamd and streams on wlan0. rmnet0 is then blackholed at the handset's
//! device, silently, and left alone until its validation is stale by roamd's own account. wlan0
//! goes down: the decision moves to rmnet0, whose stale validation (or the session's stall
//! report) gets a probe burst, the burst fails, and the session must end on bnep0 with every
//! byte intact. The longest delivery pause is printed as a `figure:` line; the bound asserted is
//! loose (what a user would call stranded), the figure is what matters.
//!
//! roamd and its reflector run as real processes: this test binary started again to run the
//! helper test `roamd_helper`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::*;
use roam::TransportPreference;
use roam_ipc::client::Client;
use roam_ipc::proto::{ProbeView, Readiness, Reply, Request};
use roam_tests::agent::{REFLECT_PORT, Reflector, probe_section};
use roam_tests::privilege::require_netns;
use roam_tests::topology::{Direction, SERVICE_V4, Topology};

/// roamd's validity for this test (the shipped value is 600 s).
const VALIDITY_S: u64 = 13;
/// The policy: WiFi, then cellular, then Bluetooth.
const POLICY3: &str = "link wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\n\
                       default {\n  prefer wifi over cell over bt\n}\n";
/// Loose: a session stranded on the dead backup would pause for its transport's own timeouts
/// (seconds) or die; the figure printed is the measurement.
const GAP_BOUND: Duration = Duration::from_secs(3);

/// Not a test of its own: roamd or its reflector in the process the tests start (returns at
/// once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(|| {});
}

/// roamd as shipped (evidence pacing) plus the probe target and the short validity; MPTCP
/// through the userspace path manager, so roamd steers MPTCP sessions' subflows.
fn agent_config() -> String {
    let target = SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT);
    format!(
        "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n\n{}validity_s = {VALIDITY_S}\n",
        probe_section(&[target])
    )
}

/// roamd's probe view of every link (`status`, as root).
fn probes(socket: &Path) -> Result<Vec<ProbeView>> {
    let mut c = Client::connect(socket, Some(EVENT_TIMEOUT))?;
    match c.call(|id| Request::Status { id })? {
        Reply::Status { status, .. } => Ok(status.probes.unwrap_or_default()),
        other => bail!("unexpected {other:?}"),
    }
}

/// Polls roamd's status (every 100 ms, until `limit`) until `pred` holds for `link`'s view.
fn wait_probe(
    socket: &Path,
    link: &str,
    what: &str,
    limit: Duration,
    pred: impl Fn(&ProbeView) -> bool,
) -> Result<ProbeView> {
    let deadline = Instant::now() + limit;
    loop {
        let view = probes(socket)?.into_iter().find(|p| p.interface == link);
        match view {
            Some(v) if pred(&v) => return Ok(v),
            v if Instant::now() > deadline => bail!("{link}: {what} within {limit:?}: {v:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Polls the server's counters of `link` (every 10 ms, up to [`EVENT_TIMEOUT`]) until it has
/// received `bytes`; returns when.
fn wait_bytes(topo: &Topology, link: &str, bytes: u64) -> Result<Instant> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let now = Instant::now();
        let got = rx_bytes(topo, link)?;
        if got >= bytes {
            return Ok(now);
        }
        if now > deadline {
            bail!("the server's {link} received {got} of {bytes} bytes in {EVENT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stranded_on_a_dead_backup(transport: TransportPreference) -> Result<()> {
    let name = format!("silent_backup_{}", transport.as_str());
    if !require_netns(&name) {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    init_tracing();
    let topo = Topology::phone().build()?;
    let _reflector = Reflector::start(
        topo.server(),
        &roamd_exe()?,
        SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT),
    )?;
    let agent = start_roamd(&topo, &agent_config(), POLICY3)?;
    let socket = agent.socket().to_path_buf();
    let pki = TestPki::generate()?;
    let builder = chat(roam::Session::builder(), &pki)
        .policy(POLICY3)
        .roamd_socket(&socket)
        .transport(transport);
    let run = Run::start(&topo, &pki, builder, None)?;
    // roamd validates links once someone subscribes (with no subscriber it sends nothing).
    for link in ["wlan0", "rmnet0", "bnep0"] {
        wait_probe(&socket, link, "validated", EVENT_TIMEOUT, |p| {
            p.readiness != Readiness::Cold
        })?;
    }

    // rmnet0 dies silently; nobody sends on it, nobody notices, until roamd's validation of it
    // is older than the validity.
    topo.blackhole("rmnet0", Direction::Both)?;
    let stale = wait_probe(
        &socket,
        "rmnet0",
        "validation stale",
        Duration::from_secs(VALIDITY_S + 10),
        |p| p.validated_ms_ago.is_none_or(|ms| ms > VALIDITY_S * 1000),
    )?;
    eprintln!(
        "rmnet0 before wlan0 goes: {:?}, validated {:?} ms ago, {} probes sent",
        stale.readiness, stale.validated_ms_ago, stale.energy.probes_sent
    );

    let bnep0 = rx_bytes(&topo, "bnep0")?;
    let t0 = Instant::now();
    topo.link_down("wlan0")?;
    // What the server's bnep0 receives first (the data's truth: an MPTCP server's peer address
    // stays the first subflow's), then what the session said.
    let on_bnep = wait_bytes(&topo, "bnep0", bnep0 + (1 << 20))?;
    let moved = run
        .wait_moved("bnep0")
        .context("data flows over bnep0, but the session never said it moved there")?;
    let rmnet_drops = topo.blackhole_drops("rmnet0", Direction::Up)?;
    let server = run.finish()?;
    eprintln!(
        "figure: {} session, wlan0 down with rmnet0 silently dead: 1 MiB over bnep0 after \
         {:?}, the session said bnep0 after {:?} ({:?}); {}; {rmnet_drops} packets dropped on \
         rmnet0",
        transport.as_str(),
        on_bnep.saturating_duration_since(t0),
        moved.at.saturating_duration_since(t0),
        moved.reason,
        server.summary()
    );
    ensure!(
        server.max_gap < GAP_BOUND,
        "the session paused {:?} (bound {GAP_BOUND:?}) before carrying on over bnep0",
        server.max_gap
    );
    Ok(())
}

#[test]
fn a_quic_session_is_not_stranded_on_a_silently_dead_backup() -> Result<()> {
    stranded_on_a_dead_backup(TransportPreference::Quic)
}

#[test]
fn an_mptcp_session_is_not_stranded_on_a_silently_dead_backup() -> Result<()> {
    stranded_on_a_dead_backup(TransportPreference::Mptcp)
}

#[test]
fn a_tcp_resume_session_is_not_stranded_on_a_silently_dead_backup() -> Result<()> {
    stranded_on_a_dead_backup(TransportPreference::TcpResume)
}
