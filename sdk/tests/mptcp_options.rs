//! TCP options of MPTCP sessions, read back from the kernel's own view (`ss -tnio` in the
//! handset: each subflow's congestion control and its `timer:(keepalive,...)`).
//!
//! - Connection-wide (`Session::set_tcp_options`, no agent): the options reach the subflow
//!   the connection has and the one the kernel's path manager opens afterwards.
//! - Per subflow (`Session::open_path_with`, roamd with the userspace path manager and its BPF
//!   sock_ops program): a subflow on rmnet0 with `reno` and keepalive while the one on wlan0
//!   keeps the connection's `cubic` and no keepalive.
//!
//! roamd runs as a real process: this test binary started again to run the helper test
//! `roamd_helper` (`common::start_roamd`).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use common::*;
use roam::{TcpOptions, TransportPreference};
use roam_ipc::client::Client;
use roam_ipc::proto::Request;
use roam_tests::topology::{SERVICE_V4, Topology};

/// roamd steering nothing by itself (no session subscribes) but serving subflow requests.
const AGENT_CONFIG: &str =
    "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n";

/// Not a test of its own: roamd in the process the tests start (returns at once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(mount_cgroup2);
}

/// `ip netns exec` gives the process a mount namespace of its own with a fresh sysfs, which
/// hides the host's cgroup mounts: mount the cgroup2 hierarchy again there, where roamd looks
/// for it by default. The mount stays in this process's private mount namespace.
fn mount_cgroup2() {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    if roam_agent::enforce::subflow_opts::cgroup2_root(&info).is_some() {
        return;
    }
    // SAFETY: NUL-terminated literals; a plain mount of a kernel file system.
    let r = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            c"/sys/fs/cgroup".as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(
        r,
        0,
        "mounting cgroup2: {}",
        std::io::Error::last_os_error()
    );
}

/// [`ss_subflows_text`] once no subflow has data in flight: `ss` shows one timer per socket, and while
/// a segment waits for its ACK that is the retransmission timer (`on,...`), not keepalive.
/// Re-read until then (an ACK on veth takes microseconds), at most for [`EVENT_TIMEOUT`].
/// Prints what `ss` said, `when` saying at what point of the test.
fn ss_view_idle(topo: &Topology, when: &str) -> Result<Vec<SsSubflow>> {
    let deadline = std::time::Instant::now() + EVENT_TIMEOUT;
    loop {
        let (raw, v) = ss_subflows_text(topo)?;
        let busy = v
            .iter()
            .any(|s| s.timer.as_deref().is_some_and(|t| t.starts_with("on,")));
        if !busy || std::time::Instant::now() > deadline {
            eprintln!("ss -tnioH in the handset{when}:\n{raw}");
            return Ok(v);
        }
    }
}

fn on(v: &[SsSubflow], ip: IpAddr) -> Result<&SsSubflow> {
    v.iter()
        .find(|s| s.local.ip() == ip)
        .with_context(|| format!("ss lists no subflow from {ip}: {v:#?}"))
}

/// What the client thread tells the test.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// The options are set (connection-wide test) / the subflow was asked for (per-subflow).
    Set,
    /// The session's subflows now include one on rmnet0.
    Both,
    /// `set_path_options` replaced rmnet0's subflow.
    Changed,
}

/// The client's next note, which must be `want`; when it has none (it stopped), the client's
/// own error.
fn expect_note<T>(
    rx: &mpsc::Receiver<Note>,
    client: &mut Option<std::thread::JoinHandle<Result<T>>>,
    want: Note,
    what: &str,
) -> Result<()> {
    match rx.recv_timeout(EVENT_TIMEOUT + EVENT_TIMEOUT) {
        Ok(n) if n == want => Ok(()),
        Ok(n) => bail!("the client told {n:?} where {what} ({want:?}) was due"),
        Err(e) => {
            let why = match client.take().map(|c| c.join()) {
                Some(Ok(Err(e))) => format!("{e:#}"),
                Some(Err(_)) => "it panicked".into(),
                _ => e.to_string(),
            };
            bail!("the client did not tell {what}: {why}")
        }
    }
}

/// Waits until the session's subflows include one on `iface`.
async fn wait_subflow_on(ev: &mut roam::Events, iface: &str) -> Result<()> {
    let what = format!("a subflow on {iface}");
    next_subflows(ev, &what, |v| {
        v.iter().any(|s| s.interface.as_deref() == Some(iface))
    })
    .await
    .map(drop)
}

/// An MPTCP session of [`APP`] that follows its embedded policy (roamd steers nothing) and asks
/// the roamd at `socket` for subflows.
fn asking_roamd(pki: &TestPki, socket: &Path) -> roam::SessionBuilder {
    chat(roam::Session::builder(), pki)
        .use_roamd(false)
        .roamd_socket(socket)
        .transport(TransportPreference::Mptcp)
}

/// `set_tcp_options` on an MPTCP session without roamd: congestion control, keepalive,
/// nodelay and notsent_lowat reach the subflow on wlan0 and the subflow on rmnet0 that the
/// kernel's path manager opens afterwards (an endpoint added once the options are set), as
/// `ss` shows; a congestion control the kernel lacks is refused with an error naming it.
#[test]
fn connection_options_reach_every_subflow_present_and_future() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("connection_options_reach_every_subflow_present_and_future")
    else {
        return Ok(());
    };
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let (_server_rx, server) = start_server_ready(&topo, &pki)?;
    let (note_tx, note_rx) = mpsc::channel::<Note>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let builder = roam::Session::builder()
        .app("com.example.chat")
        .policy(POLICY)
        .transport(TransportPreference::Mptcp)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME);
    let mut client = Some(
        topo.handset()
            .spawn_async("options-client", move || async move {
                let s = builder.connect(&format!("{SERVICE_V4}:{PORT}")).await?;
                let mut ev = s.events();
                let refused = s
                    .set_tcp_options(&TcpOptions::new().congestion("nosuchcc"))
                    .expect_err("a congestion control the kernel lacks was taken");
                s.set_tcp_options(
                    &TcpOptions::new()
                        .nodelay(true)
                        .keepalive(45, 5, 3)
                        .congestion("reno")
                        .notsent_lowat(16384),
                )?;
                note_tx.send(Note::Set)?;
                wait_subflow_on(&mut ev, "rmnet0").await?;
                note_tx.send(Note::Both)?;
                go_rx.recv_timeout(EVENT_TIMEOUT + EVENT_TIMEOUT)?;
                finish_session(s).await?;
                Ok(refused.to_string())
            })?,
    );
    expect_note(&note_rx, &mut client, Note::Set, "the options are set")?;
    let rm = topo.link("rmnet0")?;
    topo.handset().ip(&[
        "mptcp",
        "endpoint",
        "add",
        &rm.handset_v4.to_string(),
        "dev",
        &rm.name,
        "subflow",
    ])?;
    expect_note(&note_rx, &mut client, Note::Both, "a subflow on rmnet0")?;
    let v = ss_view_idle(&topo, "")?;
    let wlan = on(&v, topo.link("wlan0")?.handset_v4.into())?;
    let cell = on(&v, rm.handset_v4.into())?;
    for s in [wlan, cell] {
        assert_eq!(s.congestion.as_deref(), Some("reno"), "{}", s.text);
        assert!(s.keepalive(), "no keepalive timer: {}", s.text);
    }
    go_tx.send(())?;
    let refused = join(client.take().context("client gone")?, "the client")?;
    assert!(
        refused.contains("TCP_CONGESTION") && refused.contains("nosuchcc"),
        "the refusal does not name the option and value: {refused}"
    );
    join(server, "the server")?;
    Ok(())
}

/// `open_path_with` through roamd: the connection runs `cubic` (set connection-wide), the
/// subflow opened on rmnet0 gets `reno` and keepalive from roamd's sock_ops program, and the
/// subflow on wlan0, which has no entry in the program's map, keeps `cubic` and no keepalive.
/// A congestion control the kernel lacks, and `notsent_lowat` (the connection's), are refused
/// before any subflow is made, and another uid naming the connection is denied. Then
/// `set_path_options` replaces rmnet0's subflow by one with `bbr` and no keepalive (make
/// before break): still two subflows, rmnet0's on a new port.
#[test]
fn a_subflow_opened_with_options_differs_from_the_others() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("a_subflow_opened_with_options_differs_from_the_others")
    else {
        return Ok(());
    };
    let topo = two_links()?;
    let agent = start_roamd(&topo, AGENT_CONFIG, POLICY)?;
    let pki = TestPki::generate()?;
    let (_server_rx, server) = start_server_ready(&topo, &pki)?;
    let (note_tx, note_rx) = mpsc::channel::<Note>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let socket = agent.socket().to_path_buf();
    let builder = asking_roamd(&pki, &socket);
    let rmnet: IpAddr = topo.link("rmnet0")?.handset_v4.into();
    let mut client = Some(topo.handset().spawn_async(
        "per-subflow-client",
        move || async move {
            let s = builder.connect(&format!("{SERVICE_V4}:{PORT}")).await?;
            let mut ev = s.events();
            // Registered on a connection that stays open as long as the session.
            let (reg, token) = register_mptcp(&socket, &s)?;
            s.set_tcp_options(&TcpOptions::new().congestion("cubic"))?;
            let remote = s.path().remote;
            let local = SocketAddr::new(rmnet, 0);
            // Another uid (nobody) naming this connection is denied before anything else.
            let forged = {
                let socket = socket.clone();
                as_nobody(move || -> Result<String> {
                    let mut c = Client::connect(&socket, Some(EVENT_TIMEOUT))?;
                    Ok(
                        match c.call(|id| Request::MptcpSubflowCreate {
                            id,
                            token,
                            local,
                            remote,
                            backup: false,
                            options: Some(TcpOptions::new().congestion("reno")),
                        }) {
                            Err(roam_ipc::ClientError::Refused { code, .. }) => code,
                            other => format!("{other:?}"),
                        },
                    )
                })?
            };
            assert_eq!(forged, "denied", "another uid's subflow with options");
            let refused = s
                .open_path_with(local, remote, &TcpOptions::new().congestion("nosuchcc"))
                .await
                .expect_err("a congestion control the kernel lacks was taken");
            let lowat = s
                .open_path_with(local, remote, &TcpOptions::new().notsent_lowat(4096))
                .await
                .expect_err("a subflow's own TCP_NOTSENT_LOWAT was taken");
            assert!(lowat.to_string().contains("TCP_NOTSENT_LOWAT"), "{lowat}");
            s.open_path_with(
                local,
                remote,
                &TcpOptions::new().congestion("reno").keepalive(45, 5, 3),
            )
            .await?;
            note_tx.send(Note::Set)?;
            wait_subflow_on(&mut ev, "rmnet0").await?;
            note_tx.send(Note::Both)?;
            go_rx.recv_timeout(EVENT_TIMEOUT + EVENT_TIMEOUT)?;
            // Make before break: rmnet0's subflow replaced by one with other options.
            let id = s
                .paths()
                .iter()
                .find(|p| p.local.is_some_and(|l| l.ip() == rmnet))
                .context("no subflow from rmnet0 in paths()")?
                .id;
            s.set_path_options(id, &TcpOptions::new().congestion("bbr").nodelay(true))
                .await?;
            note_tx.send(Note::Changed)?;
            go_rx.recv_timeout(EVENT_TIMEOUT + EVENT_TIMEOUT)?;
            finish_session(s).await?;
            drop(reg);
            Ok(refused.to_string())
        },
    )?);
    expect_note(
        &note_rx,
        &mut client,
        Note::Set,
        "the subflow was asked for",
    )?;
    expect_note(&note_rx, &mut client, Note::Both, "a subflow on rmnet0")?;
    let v = ss_view_idle(&topo, "")?;
    let wlan = on(&v, topo.link("wlan0")?.handset_v4.into())?;
    let cell = on(&v, rmnet)?;
    assert_eq!(cell.congestion.as_deref(), Some("reno"), "{}", cell.text);
    assert!(
        cell.keepalive(),
        "no keepalive timer on rmnet0: {}",
        cell.text
    );
    assert_eq!(wlan.congestion.as_deref(), Some("cubic"), "{}", wlan.text);
    assert!(
        !wlan.keepalive(),
        "wlan0 got rmnet0's keepalive: {}",
        wlan.text
    );
    assert_eq!(v.len(), 2, "one subflow per link, no more: {v:#?}");
    let old_port = cell.local.port();
    go_tx.send(())?;
    expect_note(
        &note_rx,
        &mut client,
        Note::Changed,
        "rmnet0's subflow replaced",
    )?;
    let v = ss_view_idle(&topo, " after set_path_options")?;
    let cell = on(&v, rmnet)?;
    assert_ne!(
        cell.local.port(),
        old_port,
        "rmnet0's subflow was not replaced: {v:#?}"
    );
    assert_eq!(cell.congestion.as_deref(), Some("bbr"), "{}", cell.text);
    assert!(
        !cell.keepalive(),
        "the new subflow kept the old one's keepalive: {}",
        cell.text
    );
    let wlan = on(&v, topo.link("wlan0")?.handset_v4.into())?;
    assert_eq!(wlan.congestion.as_deref(), Some("cubic"), "{}", wlan.text);
    assert_eq!(v.len(), 2, "the old subflow was not closed: {v:#?}");
    go_tx.send(())?;
    let refused = join(client.take().context("client gone")?, "the client")?;
    assert!(
        refused.contains("nosuchcc") && refused.contains("failed"),
        "the refusal does not say what failed: {refused}"
    );
    join(server, "the server")?;
    Ok(())
}

/// roamd that cannot use BPF (here: its `[mptcp] bpf_cgroup` does not exist) still starts,
/// still opens plain subflows, and answers `open_path_with` with a `failed` that says why and
/// what to do; no subflow is made for it.
#[test]
fn without_bpf_roamd_says_why_and_plain_subflows_still_work() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("without_bpf_roamd_says_why_and_plain_subflows_still_work")
    else {
        return Ok(());
    };
    let topo = two_links()?;
    let config = format!("{AGENT_CONFIG}bpf_cgroup = \"/nonexistent/roam-test\"\n");
    let agent = start_roamd(&topo, &config, POLICY)?;
    let pki = TestPki::generate()?;
    let (_server_rx, server) = start_server_ready(&topo, &pki)?;
    let socket = agent.socket().to_path_buf();
    let builder = asking_roamd(&pki, &socket);
    let rmnet: IpAddr = topo.link("rmnet0")?.handset_v4.into();
    let client = topo
        .handset()
        .spawn_async("no-bpf-client", move || async move {
            let s = builder.connect(&format!("{SERVICE_V4}:{PORT}")).await?;
            let mut ev = s.events();
            let (reg, _) = register_mptcp(&socket, &s)?;
            let remote = s.path().remote;
            let local = SocketAddr::new(rmnet, 0);
            let refused = s
                .open_path_with(local, remote, &TcpOptions::new().congestion("reno"))
                .await
                .expect_err("per-subflow options without BPF were taken");
            let plain_before = s.paths().len();
            s.open_path(local, remote).await?;
            wait_subflow_on(&mut ev, "rmnet0").await?;
            finish_session(s).await?;
            drop(reg);
            Ok((refused, plain_before))
        })?;
    let (refused, before) = join(client, "the client")?;
    assert_eq!(before, 1, "the refused request made a subflow anyway");
    assert!(
        matches!(&refused, roam::Error::Agent { code, .. } if code == "failed"),
        "{refused:?}"
    );
    let text = refused.to_string();
    assert!(
        text.contains("/nonexistent/roam-test") && text.contains("bpf_cgroup"),
        "the error does not say why and what to do: {text}"
    );
    join(server, "the server")?;
    Ok(())
}
