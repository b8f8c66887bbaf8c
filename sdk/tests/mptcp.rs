//! MPTCP sessions between a handset and a Listener in the server namespace: the subflows sit on
//! the links the decision names (read back with the kernel's own `ss`), the stream survives
//! the preferred link going down, its address going away and a silent blackhole (both ends
//! hash it), and a path that strips MPTCP makes the session say it fell back.
//!
//! No roamd runs here: the test sets the handset's MPTCP endpoints the way roamd's enforcer
//! does for the device default decision (the backup link as a `subflow backup` endpoint), and
//! the kernel's path manager does the rest.

mod common;

use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, bail};
use common::*;
use roam::{SessionEvent, Transport, TransportPreference};
use roam_tests::privilege::require_netns;
use roam_tests::topology::{Direction, Topology};

/// Starts the server and an MPTCP (or `transport`) session from the handset.
fn start(topo: &Topology, transport: TransportPreference) -> anyhow::Result<Run> {
    let pki = TestPki::generate()?;
    let builder = chat(roam::Session::builder(), &pki).transport(transport);
    Run::spawn(topo, &pki, builder, None)
}

/// The decision's backup link as a kernel endpoint, as roamd's enforcer sets it.
fn backup_endpoint(topo: &Topology, link: &str) -> anyhow::Result<()> {
    let l = topo.link(link)?;
    topo.handset().ip(&[
        "mptcp",
        "endpoint",
        "add",
        &l.handset_v4.to_string(),
        "dev",
        &l.name,
        "subflow",
        "backup",
    ])?;
    Ok(())
}

/// Waits until the session reports subflows on exactly these interfaces.
fn wait_subflows_on(rx: &mpsc::Receiver<ClientNote>, ifaces: &[&str]) -> anyhow::Result<Instant> {
    let n = wait_for(rx, &format!("subflows on {ifaces:?}"), |n| {
        matches!(n, ClientNote::Event(_, SessionEvent::SubflowsChanged(v))
            if { let mut got: Vec<&str> = v.iter().filter_map(|s| s.interface.as_deref()).collect();
                 got.sort_unstable(); let mut want = ifaces.to_vec(); want.sort_unstable(); got == want })
    })?;
    match n {
        ClientNote::Event(at, _) => Ok(at),
        ClientNote::Connected(_) => bail!("unexpected note"),
    }
}

/// The established TCP subflows of port PORT as the handset's kernel lists them.
fn kernel_subflows(topo: &Topology) -> anyhow::Result<String> {
    topo.handset().exec(
        "ss",
        &[
            "-tniH",
            "state",
            "established",
            &format!("( dport = :{PORT} )"),
        ],
    )
}

/// Waits (on the server's per-MiB notes, bounded) until 4 MiB more arrived over `link`.
fn wait_stream_on(topo: &Topology, r: &Run, link: &str, before: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let rx = rx_bytes(topo, link)?;
        if rx > before + 4 * 1024 * 1024 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the stream did not move to {link} ({} bytes there)",
                rx - before
            );
        }
        wait_for(&r.server_rx, "more data at the server", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
    }
}

/// The MPTCP subflow flags `ss -i` prints after `tcp-ulp-mptcp` (`M`/`m`: MP_CAPABLE from
/// the remote/local end, `J`/`j`: MP_JOIN, `B`/`b`: backup, `e`: fully established).
fn ulp_flags(ss: &str) -> Vec<String> {
    ss.split("tcp-ulp-mptcp")
        .skip(1)
        .filter_map(|rest| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix("flags:"))
                .map(str::to_owned)
        })
        .collect()
}

#[test]
fn mptcp_subflows_follow_the_decision_and_survive_wifi_going_down() -> anyhow::Result<()> {
    if !require_netns("mptcp_subflows_follow_the_decision_and_survive_wifi_going_down") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    backup_endpoint(&topo, "rmnet0")?;
    let r = start(&topo, TransportPreference::Mptcp)?;
    let chosen = wait_for(&r.client_rx, "the transport", |n| {
        matches!(
            n,
            ClientNote::Event(_, SessionEvent::TransportChosen { .. })
        )
    })?;
    assert!(
        matches!(
            &chosen,
            ClientNote::Event(
                _,
                SessionEvent::TransportChosen {
                    transport: Transport::Mptcp,
                    ..
                }
            )
        ),
        "{chosen:?}"
    );
    wait_for(&r.client_rx, "the kernel path manager note", |n| {
        matches!(
            n,
            ClientNote::Event(_, SessionEvent::KernelPathManager { .. })
        )
    })?;
    wait_subflows_on(&r.client_rx, &["wlan0", "rmnet0"])?;

    // The kernel's own view: two TCP subflows with the MPTCP ULP, one from each link's address.
    let ss = kernel_subflows(&topo)?;
    let flags = ulp_flags(&ss);
    for l in ["wlan0", "rmnet0"] {
        let addr = format!("{}%{l}:", topo.link(l)?.handset_v4);
        assert!(
            ss.contains(&addr),
            "no subflow from {l} ({addr}) in ss:\n{ss}"
        );
    }
    assert_eq!(flags.len(), 2, "not two MPTCP subflows:\n{ss}");
    // One made with MP_CAPABLE answered by the server (M), one joined as a backup (J, b).
    assert!(flags.iter().any(|f| f.contains('M')), "{flags:?}");
    assert!(
        flags.iter().any(|f| f.contains('J') && f.contains('b')),
        "{flags:?}"
    );
    let msk = topo.handset().exec("ss", &["-MnH"])?;
    assert!(
        msk.contains(&format!(":{PORT}")),
        "no MPTCP socket in ss -M:\n{msk}"
    );

    let before = rx_bytes(&topo, "rmnet0")?;
    topo.link_down("wlan0")?;
    wait_stream_on(&topo, &r, "rmnet0", before)?;
    let s = r.finish()?;
    eprintln!(
        "figure: mptcp link down (kernel PM, no agent), longest delivery gap {:?}",
        s.max_gap
    );
    Ok(())
}

#[test]
fn mptcp_survives_a_silent_blackhole_and_an_address_removal() -> anyhow::Result<()> {
    if !require_netns("mptcp_survives_a_silent_blackhole_and_an_address_removal") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    for failure in ["blackhole", "addr-remove"] {
        let topo = two_links()?;
        backup_endpoint(&topo, "rmnet0")?;
        let r = start(&topo, TransportPreference::Mptcp)?;
        wait_subflows_on(&r.client_rx, &["wlan0", "rmnet0"])?;
        let before = rx_bytes(&topo, "rmnet0")?;
        match failure {
            "blackhole" => topo.blackhole("wlan0", Direction::Both)?,
            _ => topo.remove_addresses("wlan0")?,
        }
        wait_stream_on(&topo, &r, "rmnet0", before).context(failure)?;
        let s = r.finish()?;
        eprintln!(
            "figure: mptcp {failure} (kernel PM, no agent), longest delivery gap {:?}",
            s.max_gap
        );
    }
    Ok(())
}

#[test]
fn a_path_that_strips_mptcp_makes_the_session_say_it_fell_back() -> anyhow::Result<()> {
    if !require_netns("a_path_that_strips_mptcp_makes_the_session_say_it_fell_back") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    strip_mptcp(&topo, "wlan0")?;
    let r = start(&topo, TransportPreference::Mptcp)?;
    let n = wait_for(&r.client_rx, "the fallback event", |n| {
        matches!(n, ClientNote::Event(_, SessionEvent::MptcpFallback { .. }))
    })?;
    eprintln!("fallback: {n:?}");
    // The kernel's view: one subflow, MP_CAPABLE sent (m) but never answered (no M).
    let ss = kernel_subflows(&topo)?;
    let flags = ulp_flags(&ss);
    assert_eq!(flags.len(), 1, "{ss}");
    assert!(flags[0].contains('m') && !flags[0].contains('M'), "{ss}");
    // The stream still works, as plain TCP.
    for _ in 0..2 {
        wait_for(&r.server_rx, "data over the fallen-back connection", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
    }
    r.finish()?;
    Ok(())
}

#[test]
fn auto_falls_back_from_blocked_quic_to_mptcp_and_says_why() -> anyhow::Result<()> {
    if !require_netns("auto_falls_back_from_blocked_quic_to_mptcp_and_says_why") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    // A network that drops UDP to the service: QUIC cannot connect.
    topo.server().nft(&format!(
        "table inet roam_noudp {{\n chain in {{\n  type filter hook input priority 0; policy accept;\n  \
         udp dport {PORT} counter drop\n }}\n}}\n"
    ))?;
    let pki = TestPki::generate()?;
    let builder = roam::Session::builder()
        .policy(POLICY)
        .connect_timeout(std::time::Duration::from_secs(3))
        .tls(pki.roam_client())
        .server_name(SERVER_NAME);
    let r = Run::spawn(&topo, &pki, builder, None)?;
    let n = wait_for(&r.client_rx, "the transport", |n| {
        matches!(
            n,
            ClientNote::Event(_, SessionEvent::TransportChosen { .. })
        )
    })?;
    match &n {
        ClientNote::Event(_, SessionEvent::TransportChosen { transport, why }) => {
            assert_eq!(*transport, Transport::Mptcp, "{why}");
            assert!(why.contains("quic was still connecting"), "{why}");
        }
        other => bail!("unexpected {other:?}"),
    }
    for _ in 0..2 {
        wait_for(&r.server_rx, "data", |n| {
            matches!(n, ServerNote::Received(_))
        })?;
    }
    r.finish()?;
    Ok(())
}
