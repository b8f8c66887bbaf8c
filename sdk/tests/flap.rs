//! WiFi flapping: 20 down/up cycles of wlan0 under a hashed QUIC stream. The session leaves
//! WiFi at the first loss, stays on cellular while WiFi keeps flapping (each return is shorter
//! than the policy's hold), and goes back to WiFi once it has stayed up for the hold.
//!
//! A cycle takes one to two seconds whatever `DOWN` and `UP` say: bringing the link up waits
//! for its operstate, which the kernel's linkwatch reports at most once a second per device,
//! and the link has carrier (usable, for the session's monitor) while the harness waits. So the
//! hold here is 4 s, not the other tests' 1 s: with 1 s an up phase sometimes outlasts it and
//! the session rightly goes back to WiFi in the middle of the flapping.

mod common;

use std::net::IpAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, Result};
use common::*;
use roam::SessionEvent;
use roam::path::MigrationReason;

const CYCLES: u32 = 20;
/// Down, then up, per cycle: WiFi comes back for less than the hold each time.
const DOWN: Duration = Duration::from_millis(50);
const UP: Duration = Duration::from_millis(150);
const HOLD: Duration = Duration::from_secs(4);

#[test]
fn survives_twenty_wifi_flaps_and_returns_after_the_hold() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("survives_twenty_wifi_flaps_and_returns_after_the_hold")
    else {
        return Ok(());
    };
    let topo = Arc::new(two_links()?);
    let wlan: IpAddr = topo.link("wlan0")?.handset_v4.into();
    let rmnet: IpAddr = topo.link("rmnet0")?.handset_v4.into();
    let pki = TestPki::generate()?;
    let builder = roam::Session::builder()
        .app("com.example.chat")
        .policy(POLICY.replace("hold 1s", &format!("hold {}s", HOLD.as_secs())))
        .use_roamd(false)
        .transport(roam::TransportPreference::Quic)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME);
    let run = Run::start(&topo, &pki, builder, None)?;
    let (client_rx, server_rx) = (&run.client_rx, &run.server_rx);

    let flapper = topo.flap("wlan0", DOWN, UP, CYCLES)?;
    let first = wait_moved(client_rx, "rmnet0")?;
    assert_eq!(first.reason, MigrationReason::LinkLost);
    let Flaps {
        first: first_down,
        last_up,
        longest_up,
    } = check_flaps(&flapper.wait().context("flapping wlan0")?, CYCLES, HOLD)?;
    let flapping = last_up - first_down;

    // Every move until WiFi stayed up; none back to WiFi while it flapped.
    let mut moves = vec![first];
    let back = loop {
        let m = wait_moved_any(client_rx)?;
        if m.to.interface == "wlan0" {
            break m;
        }
        moves.push(m);
    };
    assert!(
        back.at > last_up,
        "the session went back to wlan0 while it was still flapping ({:?} before the last up)",
        last_up - back.at
    );
    assert_eq!(back.reason, MigrationReason::PrimaryChanged);
    let held = back.at - last_up;
    assert!(
        held >= HOLD - Duration::from_millis(100),
        "back on wlan0 {held:?} after it came up: the {HOLD:?} hold was not respected"
    );
    wait_server_sees(server_rx, wlan)?;

    let s = run.finish()?;
    eprintln!(
        "figure: {CYCLES} flaps of wlan0 ({DOWN:?} down, {UP:?} up, {flapping:?} in all, longest up phase {longest_up:?}): \
         {} moves to rmnet0, back on wlan0 {held:?} after its last return (hold {HOLD:?}), longest delivery gap {:?}, {} bytes \
         intact",
        moves.len(),
        s.max_gap,
        s.bytes
    );
    let ips: Vec<IpAddr> = s.peers.iter().map(|p| p.ip()).collect();
    assert_eq!(ips.first(), Some(&wlan), "{:?}", s.peers);
    assert_eq!(
        ips.last(),
        Some(&wlan),
        "the server does not see the client on WiFi at the end: {:?}",
        s.peers
    );
    assert!(ips.contains(&rmnet), "{:?}", s.peers);
    Ok(())
}

/// The next move of the session, wherever to.
fn wait_moved_any(rx: &mpsc::Receiver<ClientNote>) -> Result<Moved> {
    match wait_for(rx, "the session moving", |n| {
        matches!(n, ClientNote::Event(_, SessionEvent::PathChanged { .. }))
    })? {
        ClientNote::Event(at, SessionEvent::PathChanged { from, to, reason }) => Ok(Moved {
            at,
            from,
            to,
            reason,
        }),
        other => anyhow::bail!("unexpected {other:?}"),
    }
}
