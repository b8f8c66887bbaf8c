//! tcp-resume's standby connection: with `multipath interactive` the session keeps a
//! connection to the listener ready on the warm backup path, so when WiFi goes down at 50 ms
//! RTT it resumes on cellular after one round trip (RESUME, RESUMED) instead of three (TCP,
//! TLS, then RESUME); without it (handover mode) the same failure takes the three. Every byte
//! arrives once, in order, either way.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::*;
use roam::{SessionEvent, TransportPreference};
use roam_tests::emulator::PathConfig;
use roam_tests::privilege::require_netns;
use roam_tests::topology::Topology;

const RTT: Duration = Duration::from_millis(50);

fn policy(mode: &str) -> String {
    format!(
        "link wifi = kind wifi\nlink cell = kind cellular\n\
         default {{\n  prefer wifi over cell\n  multipath {mode}\n}}\n"
    )
}

/// WiFi down under a tcp-resume session with `mode`: how long from the session learning of it
/// (its `DecisionUpdated`) until it said it resumed on rmnet0.
fn resume_after_link_down(mode: &str) -> Result<Duration> {
    let topo = Topology::builder()
        .link("wlan0", roam_policy::LinkKind::Wifi)
        .link("rmnet0", roam_policy::LinkKind::Cellular)
        .emulated(PathConfig::with_rtt(RTT), PathConfig::with_rtt(RTT))
        .build()?;
    let pki = TestPki::generate()?;
    let builder = chat(roam::Session::builder(), &pki)
        .policy(policy(mode))
        .use_roamd(false)
        .transport(TransportPreference::TcpResume);
    let r = Run::start(&topo, &pki, builder, None)?;
    // The standby's TCP and TLS are up well within this.
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    topo.link_down("wlan0")?;
    let learned = wait_for(&r.client_rx, "the decision without wlan0", |n| {
        matches!(n, ClientNote::Event(at, SessionEvent::DecisionUpdated(d))
            if *at >= t0 && !d.paths.iter().any(|p| p.interface == "wlan0"))
    })?;
    let resumed = wait_for(
        &r.client_rx,
        "the resumption",
        |n| matches!(n, ClientNote::Event(_, SessionEvent::Resumed { path: Some(p), .. }) if p.interface == "rmnet0"),
    )?;
    let (ClientNote::Event(from, _), ClientNote::Event(to, _)) = (learned, resumed) else {
        unreachable!("matched above")
    };
    r.wait_server_sees(topo.link("rmnet0")?.handset_v4.into())?;
    r.finish()?;
    Ok(to.saturating_duration_since(from))
}

#[test]
fn a_standby_connection_makes_a_resume_one_round_trip() -> Result<()> {
    if !require_netns("a_standby_connection_makes_a_resume_one_round_trip") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    init_tracing();
    let warm = resume_after_link_down("interactive")?;
    let cold = resume_after_link_down("handover")?;
    eprintln!(
        "figure: tcp-resume at 50 ms RTT resumed after {warm:?} with a standby, {cold:?} without"
    );
    // One round trip and the link-down notice; a fresh connection takes at least three.
    assert!(warm < RTT * 2, "with a standby: {warm:?}");
    assert!(cold >= RTT * 3, "without a standby: {cold:?}");
    Ok(())
}
