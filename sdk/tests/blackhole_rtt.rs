//! A silent blackhole on WiFi at 50 ms emulated round-trip time (every path runs through the
//! harness's link emulator): the session must notice the stall by itself, with PTOs ten times
//! a plain veth's, and move to cellular. Each of 3 repeats is a fresh session on the same paths;
//! the delivery gap at the server is measured and printed (issue 5 aims at p99 under 400 ms),
//! while the test asserts what must hold whatever the machine's load: the session survives and
//! every byte arrives once, in order.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::*;
use roam::path::MigrationReason;
use roam_policy::LinkKind;
use roam_tests::emulator::PathConfig;
use roam_tests::stats::{ms, percentile_duration};
use roam_tests::topology::{Direction, Topology};

const RTT: Duration = Duration::from_millis(50);
const REPEATS: usize = 3;

#[test]
fn survives_a_silent_blackhole_at_50_ms_rtt() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test("survives_a_silent_blackhole_at_50_ms_rtt")
    else {
        return Ok(());
    };
    init_tracing();
    let topo = Topology::builder()
        .link("wlan0", LinkKind::Wifi)
        .link("rmnet0", LinkKind::Cellular)
        .emulated(PathConfig::with_rtt(RTT), PathConfig::with_rtt(RTT))
        .build()?;
    let emu = topo.emulator("wlan0").context("wlan0 is not emulated")?;
    let wlan: IpAddr = topo.link("wlan0")?.handset_v4.into();
    let rmnet: IpAddr = topo.link("rmnet0")?.handset_v4.into();
    let pki = TestPki::generate()?;

    let mut gaps = Vec::new();
    let mut moved_in = Vec::new();
    // A move before the blackhole (the session's 60 ms stall detector can misjudge a healthy
    // path on a loaded machine) says nothing about the blackhole: that repeat is run again,
    // at most twice in all, and counted.
    let mut false_stalls = 0;
    let mut repeat = 0;
    while repeat < REPEATS {
        let builder = roam::Session::builder()
            .app("com.example.chat")
            .policy(POLICY)
            .use_roamd(false)
            .transport(roam::TransportPreference::Quic)
            .tls(pki.roam_client())
            .server_name(SERVER_NAME);
        let run = Run::start(&topo, &pki, builder, None)
            .with_context(|| format!("repeat {repeat}: starting the session"))?;
        let dropped_before = emu.stats(Direction::Up).blackholed;
        let t0 = Instant::now();
        emu.set_blackhole(Direction::Both, true);
        let m = wait_moved(&run.client_rx, "rmnet0")
            .with_context(|| format!("repeat {repeat}: leaving the blackhole"))?;
        if m.at < t0 && false_stalls < 2 {
            false_stalls += 1;
            eprintln!("repeat {repeat}: the session moved before the blackhole; running it again");
            emu.set_blackhole(Direction::Both, false);
            run.finish()?;
            continue;
        }
        assert_eq!(m.reason, MigrationReason::Stalled, "repeat {repeat}");
        wait_server_sees(&run.server_rx, rmnet)?;
        assert!(
            emu.stats(Direction::Up).blackholed > dropped_before,
            "repeat {repeat}: the blackhole dropped nothing"
        );
        let s = run
            .finish()
            .with_context(|| format!("repeat {repeat}: the session"))?;
        let ips: Vec<IpAddr> = s.peers.iter().map(|p| p.ip()).collect();
        assert_eq!(ips, [wlan, rmnet], "repeat {repeat}: {:?}", s.peers);
        moved_in.push(m.at - t0);
        gaps.push(s.max_gap);
        // The next session starts on WiFi again.
        emu.set_blackhole(Direction::Both, false);
        repeat += 1;
    }

    gaps.sort();
    moved_in.sort();
    // Nearest rank; with a handful of repeats p99 is the largest.
    let pct = |v: &[Duration], p: f64| percentile_duration(v, p * 100.0);
    eprintln!(
        "figure: {} ms RTT, silent blackhole on wlan0, {REPEATS} repeats: delivery gap p50 \
         {:.0} ms, p99 {:.0} ms, max {:.0} ms (issue 5 aims p99 < 400 ms); moved after p50 \
         {:.0} ms, max {:.0} ms; every byte intact; {false_stalls} repeats run again after \
         a move before the blackhole",
        RTT.as_millis(),
        ms(pct(&gaps, 0.5)),
        ms(pct(&gaps, 0.99)),
        ms(gaps[gaps.len() - 1]),
        ms(pct(&moved_in, 0.5)),
        ms(moved_in[moved_in.len() - 1]),
    );
    Ok(())
}
