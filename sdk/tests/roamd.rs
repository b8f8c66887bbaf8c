//! A session that follows roamd: it says so, it keeps going when roamd is killed (fail-static:
//! last decision plus its own stall detector), and it subscribes again when roamd returns.
//!
//! roamd runs as a real process inside the handset: this test binary started again to run the
//! helper test `roamd_helper` (`roam_tests::agent::AgentExe::test_helper`), which runs the
//! agent's own shell (`roam_agent::daemon::run`) until it is killed.

mod common;

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, bail};
use common::*;
use roam::SessionEvent;
use roam_ipc::client::Client;
use roam_ipc::proto::{Reply, Request};
use roam_tests::privilege::require_netns;

const AGENT_CONFIG: &str = "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\n";

/// Not a test of its own: roamd in the process the tests start (returns at once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(|| {});
}

/// The agent's view of its subscribers (as root: admin detail).
fn subscribers(socket: &Path) -> Result<Vec<String>> {
    let mut c = Client::connect(socket, Some(EVENT_TIMEOUT))?;
    match c.call(|id| Request::Status { id })? {
        Reply::Status { status, .. } => Ok(status
            .clients
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.app)
            .collect()),
        other => bail!("unexpected {other:?}"),
    }
}

#[test]
fn a_session_follows_roamd_survives_its_death_and_subscribes_again() -> Result<()> {
    if !require_netns("a_session_follows_roamd_survives_its_death_and_subscribes_again") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let mut agent = start_roamd(&topo, AGENT_CONFIG, POLICY)?;
    let socket = agent.socket().to_path_buf();

    let pki = TestPki::generate()?;
    // A policy text the session would use without roamd: cellular first. Following roamd
    // (WiFi first) is what puts the session on wlan0.
    let builder = chat(roam::Session::builder(), &pki)
        .policy(
            "link wifi = kind wifi\nlink cell = kind cellular\ndefault { prefer cell over wifi }",
        )
        .roamd_socket(&socket)
        .transport(roam::TransportPreference::Quic);
    let r = Run::spawn(&topo, &pki, builder, None)?;
    let chosen = wait_for(&r.client_rx, "the decision source", |n| {
        matches!(
            n,
            ClientNote::Event(_, SessionEvent::DecisionSourceChosen { .. })
        )
    })?;
    let ClientNote::Event(_, SessionEvent::DecisionSourceChosen { source, why }) = chosen else {
        unreachable!()
    };
    assert!(source.starts_with("roamd at "), "{source}: {why}");
    let wlan = topo.link("wlan0")?.handset_v4;
    let rmnet = topo.link("rmnet0")?.handset_v4;
    r.wait_server_sees(wlan.into())?;
    assert_eq!(subscribers(&socket)?, ["com.example.chat"]);

    // roamd dies: the stream goes on on the last decision's path.
    agent.kill();
    let t0 = Instant::now();
    r.wait_server_sees(wlan.into())?;
    eprintln!(
        "figure: 2 MiB more delivered over wlan0 {:?} after roamd was killed",
        t0.elapsed()
    );

    // roamd returns; the session subscribes again and follows it: WiFi going down now
    // reaches the session only as a decision pushed by the new roamd.
    let t1 = Instant::now();
    agent.restart()?;
    // WiFi goes down at once: only the new roamd can tell the session (no embedded monitor
    // runs beside it, and fail-static keeps the old decision), so the decision below arrives
    // only once the session has subscribed again; the wait is bounded by EVENT_TIMEOUT (the
    // follower's backoff is at most 1 s).
    topo.link_down("wlan0")?;
    let n = wait_for(
        &r.client_rx,
        "a decision without wlan0 from the new roamd",
        |n| {
            matches!(n, ClientNote::Event(_, SessionEvent::DecisionUpdated(d))
            if !d.paths.is_empty() && d.paths.iter().all(|p| p.interface != "wlan0"))
        },
    )?;
    if let ClientNote::Event(at, _) = n {
        eprintln!(
            "figure: decision from the restarted roamd at the session {:?} after the restart",
            at.saturating_duration_since(t1)
        );
    }
    assert_eq!(subscribers(&socket)?, ["com.example.chat"]);
    let m = wait_moved(&r.client_rx, "rmnet0")?;
    assert_eq!(m.to.local, std::net::IpAddr::from(rmnet));
    r.wait_server_sees(rmnet.into())?;

    let s = r.finish()?;
    assert_peers(&s, &["198.18.0.2", "198.18.1.2"]);
    Ok(())
}
