//! A session from a handset to a Listener in the server namespace survives what a phone meets:
//! WiFi going down and returning, its address going away, a silent blackhole. Both ends hash
//! the stream; the server's view of the client's address is checked at each step.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use roam::path::MigrationReason;
use roam_tests::privilege::require_netns;
use roam_tests::topology::{Direction, Topology};

/// Two links (wlan0 preferred, rmnet0), a server, and a session on wlan0 carrying data.
fn start() -> anyhow::Result<(Topology, Run)> {
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let run = Run::start(&topo, &pki, chat(roam::Session::builder(), &pki), None)?;
    Ok((topo, run))
}

#[test]
fn survives_wifi_going_down_and_returns_when_it_comes_back() -> anyhow::Result<()> {
    if !require_netns("survives_wifi_going_down_and_returns_when_it_comes_back") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let (topo, r) = start()?;
    let wlan = topo.link("wlan0")?.handset_v4;
    let rmnet = topo.link("rmnet0")?.handset_v4;

    let t0 = Instant::now();
    topo.link_down("wlan0")?;
    let m = wait_moved(&r.client_rx, "rmnet0")?;
    eprintln!(
        "figure: wlan0 link down -> session moved in {:?}",
        m.at - t0
    );
    assert_eq!(m.reason, MigrationReason::LinkLost);
    assert_eq!(m.to.local, std::net::IpAddr::from(rmnet));
    assert_eq!(m.from.map(|f| f.interface).as_deref(), Some("wlan0"));
    wait_server_sees(&r.server_rx, rmnet.into())?;

    // WiFi returns; after the policy's 1 s hold it is primary again and the session goes back.
    let t0 = Instant::now();
    topo.link_up("wlan0")?;
    let m = wait_moved(&r.client_rx, "wlan0")?;
    eprintln!(
        "figure: wlan0 back up -> session back on it in {:?} (hold 1 s)",
        m.at - t0
    );
    assert_eq!(m.reason, MigrationReason::PrimaryChanged);
    assert!(
        m.at - t0 >= Duration::from_millis(900),
        "the hold was not respected"
    );
    wait_server_sees(&r.server_rx, wlan.into())?;

    let s = r.finish()?;
    eprintln!(
        "figure: link down and return, longest delivery gap {:?}",
        s.max_gap
    );
    assert_peers(&s, &["198.18.0.2", "198.18.1.2", "198.18.0.2"]);
    Ok(())
}

#[test]
fn survives_the_wifi_address_going_away() -> anyhow::Result<()> {
    if !require_netns("survives_the_wifi_address_going_away") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let (topo, r) = start()?;
    let rmnet = topo.link("rmnet0")?.handset_v4;
    let t0 = Instant::now();
    topo.remove_addresses("wlan0")?;
    let m = wait_moved(&r.client_rx, "rmnet0")?;
    eprintln!(
        "figure: wlan0 address removed -> session moved in {:?}",
        m.at - t0
    );
    assert_eq!(m.reason, MigrationReason::LinkLost);
    wait_server_sees(&r.server_rx, rmnet.into())?;
    let s = r.finish()?;
    eprintln!(
        "figure: address removal, longest delivery gap {:?}",
        s.max_gap
    );
    assert_peers(&s, &["198.18.0.2", "198.18.1.2"]);
    Ok(())
}

#[test]
fn survives_a_silent_blackhole_on_wifi() -> anyhow::Result<()> {
    if !require_netns("survives_a_silent_blackhole_on_wifi") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let (topo, r) = start()?;
    let rmnet = topo.link("rmnet0")?.handset_v4;
    // The link stays up with its address and routes: only the session can notice.
    let t0 = Instant::now();
    topo.blackhole("wlan0", Direction::Both)?;
    let m = wait_moved(&r.client_rx, "rmnet0")?;
    eprintln!(
        "figure: wlan0 silent blackhole -> session moved in {:?}",
        m.at - t0
    );
    assert_eq!(m.reason, MigrationReason::Stalled);
    wait_server_sees(&r.server_rx, rmnet.into())?;
    assert!(
        topo.blackhole_drops("wlan0", Direction::Up)? > 0,
        "the blackhole dropped nothing"
    );
    let s = r.finish()?;
    eprintln!(
        "figure: silent blackhole, longest delivery gap {:?}",
        s.max_gap
    );
    assert_peers(&s, &["198.18.0.2", "198.18.1.2"]);
    Ok(())
}

/// WiFi back with its address but none of its routes yet (DHCP and router advertisements
/// often come after the link): the session does not move there until the kernel can route to
/// the peer from it, so it never leaves the working cellular path for a dead end.
#[test]
fn a_returning_wifi_without_routes_yet_is_not_moved_to_until_they_come() -> anyhow::Result<()> {
    if !require_netns("a_returning_wifi_without_routes_yet_is_not_moved_to_until_they_come") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let (topo, r) = start()?;
    let wlan = topo.link("wlan0")?.clone();
    let rmnet = topo.link("rmnet0")?.handset_v4;
    topo.link_down("wlan0")?;
    wait_moved(&r.client_rx, "rmnet0")?;
    wait_server_sees(&r.server_rx, rmnet.into())?;

    // Up again: the IPv4 address survived `link set down`, the routes through it did not.
    topo.handset().ip(&["link", "set", &wlan.name, "up"])?;
    topo.wait_link(topo.handset(), &wlan.name, EVENT_TIMEOUT, |i| {
        i.operstate == roam_tests::netlink::OperState::Up
    })?;
    // Past the policy's hold (1 s) and a few quick retries, the session stays on rmnet0.
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match r.client_rx.recv_timeout(left) {
            Ok(ClientNote::Event(_, roam::SessionEvent::PathChanged { to, .. })) => {
                anyhow::ensure!(
                    to.interface != "wlan0",
                    "the session moved to wlan0 while it had no route to the peer"
                );
            }
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(e) => anyhow::bail!("the client stopped: {e}"),
        }
    }
    wait_server_sees(&r.server_rx, rmnet.into())?;

    // The routes arrive: the session returns to WiFi.
    let t = Instant::now();
    topo.configure_link(&wlan)?;
    let m = wait_moved(&r.client_rx, "wlan0")?;
    eprintln!(
        "figure: wlan0's routes back -> session moved back in {:?}",
        m.at.saturating_duration_since(t)
    );
    wait_server_sees(&r.server_rx, wlan.handset_v4.into())?;
    let s = r.finish()?;
    eprintln!("figure: longest delivery gap {:?}", s.max_gap);
    Ok(())
}
