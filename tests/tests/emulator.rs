//! The user-space link emulator: configured round-trip times and loss are what a ping over
//! UDP measures, and settings change while traffic flows.

use std::net::SocketAddr;
use std::time::Duration;

use roam_tests::emulator::PathConfig;
use roam_tests::probe::{EchoServer, ProbeSpec, probe};
use roam_tests::topology::{Direction, SERVICE_V4, SERVICE_V6, Topology};

fn emulated() -> (Topology, EchoServer, EchoServer) {
    let topo = Topology::builder()
        .link("wlan0", roam_policy::LinkKind::Wifi)
        .link("rmnet0", roam_policy::LinkKind::Cellular)
        .emulated(PathConfig::default(), PathConfig::default())
        .seed(7)
        .build()
        .unwrap();
    let e4 = EchoServer::start(topo.server(), SocketAddr::new(SERVICE_V4.into(), 7000)).unwrap();
    let e6 = EchoServer::start(topo.server(), SocketAddr::new(SERVICE_V6.into(), 7000)).unwrap();
    (topo, e4, e6)
}

fn from_wlan0(topo: &Topology, v6: bool) -> (SocketAddr, SocketAddr) {
    let l = topo.link("wlan0").unwrap();
    if v6 {
        (
            SocketAddr::new(l.handset_v6.into(), 0),
            SocketAddr::new(SERVICE_V6.into(), 7000),
        )
    } else {
        (
            SocketAddr::new(l.handset_v4.into(), 0),
            SocketAddr::new(SERVICE_V4.into(), 7000),
        )
    }
}

#[test]
fn configured_rtt_is_what_a_ping_measures() {
    let Some(_serial) = roam_tests::serial::netns_test("configured_rtt_is_what_a_ping_measures")
    else {
        return;
    };
    let (topo, _e4, _e6) = emulated();
    let emu = topo.emulator("wlan0").unwrap();
    for (rtt_ms, v6) in [(20u64, false), (60, true), (120, false)] {
        emu.set_rtt(Duration::from_millis(rtt_ms));
        let (bind, target) = from_wlan0(&topo, v6);
        let spec = ProbeSpec {
            count: 40,
            burst: 1,
            interval: Duration::from_millis(5),
            // Generous, so a reply the loaded machine delays is not counted as lost; bounded.
            linger: Duration::from_millis(3 * rtt_ms + 500),
        };
        let r = probe(topo.handset(), Some(bind), target, spec).unwrap();
        assert_eq!(
            r.received(),
            40,
            "probes lost at {rtt_ms} ms without loss configured"
        );
        let median = r.median_rtt().unwrap().as_secs_f64() * 1000.0;
        let err = (median - rtt_ms as f64).abs() / rtt_ms as f64;
        eprintln!("configured rtt {rtt_ms} ms, measured median {median:.2} ms");
        assert!(
            err < 0.10,
            "configured {rtt_ms} ms, measured {median:.2} ms"
        );
    }
    // Plain veth is around zero for comparison: the other link has no delay set.
    let l = topo.link("rmnet0").unwrap();
    let spec = ProbeSpec {
        count: 20,
        burst: 1,
        interval: Duration::from_millis(2),
        linger: Duration::from_millis(200),
    };
    let r = probe(
        topo.handset(),
        Some(SocketAddr::new(l.handset_v4.into(), 0)),
        SocketAddr::new(SERVICE_V4.into(), 7000),
        spec,
    )
    .unwrap();
    assert!(r.median_rtt().unwrap() < Duration::from_millis(5));
}

#[test]
fn configured_loss_is_what_a_ping_measures() {
    let Some(_serial) = roam_tests::serial::netns_test("configured_loss_is_what_a_ping_measures")
    else {
        return;
    };
    let (topo, _e4, _e6) = emulated();
    let emu = topo.emulator("wlan0").unwrap();
    // Loss on both directions: a probe survives with (1-p)^2, so the one-way loss the probe
    // infers is 1 - sqrt(answered / sent). Counts give a relative standard error under 4 %.
    for (loss, count) in [(0.01, 50_000u32), (0.05, 15_000)] {
        emu.set_loss(Direction::Both, loss);
        let before = emu.stats(Direction::Both);
        let (bind, target) = from_wlan0(&topo, false);
        let spec = ProbeSpec {
            count,
            burst: 10,
            interval: Duration::from_micros(400),
            linger: Duration::from_millis(1000),
        };
        let r = probe(topo.handset(), Some(bind), target, spec).unwrap();
        let one_way = 1.0 - (1.0 - r.loss()).sqrt();
        let after = emu.stats(Direction::Both);
        eprintln!(
            "configured loss {:.1} %, measured {:.2} % one-way ({} of {} answered; emulator dropped {})",
            loss * 100.0,
            one_way * 100.0,
            r.received(),
            count,
            after.lost - before.lost
        );
        assert!(after.queue_drops == 0 && after.blackholed == 0);
        assert!(
            (one_way - loss).abs() / loss < 0.10,
            "configured {loss}, measured {one_way:.4}"
        );
    }
}

#[test]
fn settings_change_while_traffic_flows() {
    let Some(_serial) = roam_tests::serial::netns_test("settings_change_while_traffic_flows")
    else {
        return;
    };
    let (topo, _e4, _e6) = emulated();
    let emu = topo.emulator("wlan0").unwrap();
    let (bind, target) = from_wlan0(&topo, false);
    let spec = ProbeSpec {
        count: 200,
        burst: 1,
        interval: Duration::from_millis(2),
        linger: Duration::from_millis(300),
    };
    let handle = emu.clone();
    // Blackhole the uplink for a stretch in the middle of a probe run, then lift it.
    let flipper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        handle.set_blackhole(Direction::Up, true);
        std::thread::sleep(Duration::from_millis(150));
        handle.set_blackhole(Direction::Up, false);
    });
    let r = probe(topo.handset(), Some(bind), target, spec).unwrap();
    flipper.join().unwrap();
    let s = emu.stats(Direction::Up);
    assert!(
        s.blackholed >= 20,
        "blackhole dropped only {} frames",
        s.blackholed
    );
    assert!(
        r.received() < 190 && r.received() > 100,
        "answered {}",
        r.received()
    );

    // A rate limit: 200 frames of ~74 bytes at 64 kbit/s take about 1.8 s; 100 ms of queue
    // means most are tail-dropped when sent in one burst.
    emu.update(Direction::Up, |c| {
        c.rate_bps = Some(64_000);
        c.queue_limit = Duration::from_millis(100);
    });
    let burst = ProbeSpec {
        count: 200,
        burst: 200,
        interval: Duration::from_millis(1),
        linger: Duration::from_millis(500),
    };
    let r = probe(topo.handset(), Some(bind), target, burst).unwrap();
    let drops = emu.stats(Direction::Up).queue_drops;
    assert!(drops > 100, "queue drops {drops}");
    assert!(
        r.received() > 5 && r.received() < 100,
        "answered {}",
        r.received()
    );
    assert_eq!(emu.config(Direction::Up).rate_bps, Some(64_000));
    assert_eq!(emu.config(Direction::Down).rate_bps, None);
}

#[test]
fn carrier_loss_on_an_emulated_path_and_its_return() {
    let Some(_serial) =
        roam_tests::serial::netns_test("carrier_loss_on_an_emulated_path_and_its_return")
    else {
        return;
    };
    let (topo, _e4, _e6) = emulated();
    let (bind, target) = from_wlan0(&topo, false);
    let spec = ProbeSpec {
        count: 5,
        burst: 5,
        interval: Duration::from_millis(1),
        linger: Duration::from_millis(300),
    };
    topo.far_side_down("wlan0").unwrap();
    let info = topo
        .wait_link(topo.handset(), "wlan0", Duration::from_secs(1), |_| true)
        .unwrap();
    assert!(info.admin_up && !info.carrier, "{info:?}");
    assert_eq!(
        probe(topo.handset(), Some(bind), target, spec)
            .unwrap()
            .received(),
        0
    );
    topo.far_side_up("wlan0").unwrap();
    assert_eq!(
        probe(topo.handset(), Some(bind), target, spec)
            .unwrap()
            .received(),
        5
    );
    assert!(
        topo.emulator("wlan0")
            .unwrap()
            .stats(Direction::Both)
            .forwarded
            >= 10
    );
}

/// Whether `ns`'s neighbour table has `addr` on `dev` as a permanent entry at `mac`.
fn pinned(ns: &roam_tests::netns::Netns, dev: &str, addr: std::net::IpAddr, mac: &str) -> bool {
    let out = ns
        .ip(&["neigh", "show", "dev", dev, "to", &addr.to_string()])
        .unwrap();
    out.contains(&format!("lladdr {mac}")) && out.contains("PERMANENT")
}

#[test]
fn emulated_paths_resolve_no_neighbours_through_failures_and_returns() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "emulated_paths_resolve_no_neighbours_through_failures_and_returns",
    ) else {
        return;
    };
    let (topo, _e4, _e6) = emulated();
    let emu = topo.emulator("wlan0").unwrap();
    emu.set_rtt(Duration::from_millis(20));
    let l = topo.link("wlan0").unwrap().clone();
    let spec = ProbeSpec {
        count: 5,
        burst: 5,
        interval: Duration::from_millis(1),
        linger: Duration::from_millis(500),
    };
    let check = |when: &str| {
        let ends = [
            (
                "handset",
                topo.handset(),
                &l.name,
                [l.server_v4.into(), l.server_v6.into()],
                l.server_mac,
            ),
            (
                "server",
                topo.server(),
                &l.server_dev,
                [l.handset_v4.into(), l.handset_v6.into()],
                l.handset_mac,
            ),
        ];
        for (end, ns, dev, addrs, mac) in ends {
            for a in addrs {
                assert!(
                    pinned(ns, dev, a, &mac.to_string()),
                    "{when}: the {end}'s entry for {a} is not permanent at {mac}"
                );
            }
        }
        for v6 in [false, true] {
            let (bind, target) = from_wlan0(&topo, v6);
            let r = probe(topo.handset(), Some(bind), target, spec).unwrap();
            // The first burst after a return is answered in full: nothing waited for a
            // neighbour or was dropped from its queue.
            assert_eq!(r.received(), 5, "{when}: probes lost (v6: {v6})");
        }
    };
    let before = emu.stats(Direction::Both);
    check("built");
    topo.link_down("wlan0").unwrap();
    topo.link_up("wlan0").unwrap();
    check("after link down and up");
    topo.remove_addresses("wlan0").unwrap();
    topo.restore_addresses("wlan0").unwrap();
    check("after the addresses' removal and return");
    topo.far_side_down("wlan0").unwrap();
    topo.far_side_up("wlan0").unwrap();
    check("after carrier loss and return");
    let after = emu.stats(Direction::Both);
    assert!(after.forwarded - before.forwarded >= 80);
    assert_eq!(
        after.neighbour - before.neighbour,
        0,
        "ARP or NDP crossed the emulator"
    );
}
