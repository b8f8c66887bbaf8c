//! Handover measurements end to end: each baseline keeps its bytes intact through a link
//! failure it can survive, moves to the other path (the server sees it), dies when it cannot;
//! roam survives the blackhole quinn dies in; and the bench binary writes the documented JSON
//! with roam's rows beside the baselines'.

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;

use roam_tests::handover::{Outcome, RunConfig, bench_topology, run_once, run_with};
use roam_tests::scenario::Scenario;
use roam_tests::system::roam::Roam;
use roam_tests::system::{Direction, Transport, baseline};
use roam_tests::tls::{SERVER_NAME, TestPki, client_trusting};
use roam_tests::topology::{SERVICE_V4, Topology};

fn cfg() -> RunConfig {
    RunConfig {
        after: Duration::from_millis(800),
        timeout: Duration::from_secs(2),
        sample: true,
        ..RunConfig::quick(Duration::ZERO)
    }
}

/// Bytes the server side of link `i` received from the last sample before the failure on.
fn bytes_after_failure(o: &Outcome, i: usize) -> u64 {
    let start = o
        .samples
        .iter()
        .rev()
        .find(|s| s.at <= o.failed_at)
        .expect("no sample before the failure")
        .rx_bytes[i];
    let end = o.samples.last().unwrap().rx_bytes[i];
    end - start
}

fn measured(t: Transport, s: Scenario) -> Outcome {
    run_once(baseline(t).unwrap(), s, &cfg()).unwrap()
}

/// The client addresses the server saw, in order: the paths the session used.
fn peer_ips(o: &Outcome) -> Vec<String> {
    o.delivery
        .peers
        .iter()
        .map(|(_, p)| p.ip().to_string())
        .collect()
}

fn assert_intact(o: &Outcome) {
    assert!(o.session_error.is_none(), "{:?}", o.session_error);
    assert_eq!(o.delivered, o.sent, "messages lost");
    assert_eq!(o.corrupted, 0);
    assert!(
        o.sent > 8_000,
        "the application sent only {} messages",
        o.sent
    );
}

/// The server last saw the client on rmnet0's address, and rmnet0 carried the stream after
/// the failure.
fn assert_ended_on_rmnet0(o: &Outcome) {
    let peers = peer_ips(o);
    assert_eq!(
        peers.last().map(String::as_str),
        Some("198.18.1.2"),
        "{peers:?}"
    );
    assert!(
        bytes_after_failure(o, 1) > 100_000,
        "rmnet0 carried nothing after the failure"
    );
}

#[test]
fn quinn_survives_link_down_and_the_server_sees_it_migrate() {
    let Some(_serial) =
        roam_tests::serial::netns_test("quinn_survives_link_down_and_the_server_sees_it_migrate")
    else {
        return;
    };
    let o = measured(Transport::Quic, Scenario::LinkDown);
    assert_intact(&o);
    assert!(o.gap < Duration::from_millis(500), "gap {:?}", o.gap);
    let peers = peer_ips(&o);
    assert_eq!(
        peers.first().map(String::as_str),
        Some("198.18.0.2"),
        "{peers:?}"
    );
    assert_ended_on_rmnet0(&o);
}

#[test]
fn roam_quic_survives_a_silent_blackhole_and_says_where_it_went() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "roam_quic_survives_a_silent_blackhole_and_says_where_it_went",
    ) else {
        return;
    };
    let system = Arc::new(Roam::new(Transport::Quic).unwrap());
    let o = run_once(system.clone(), Scenario::Blackhole, &cfg()).unwrap();
    // Where plain quinn dies (see below), roam's stall detector moves the session.
    assert_intact(&o);
    assert!(o.gap < Duration::from_secs(1), "gap {:?}", o.gap);
    assert_ended_on_rmnet0(&o);
    let moved = system.events().into_iter().any(|(at, e)| {
        at >= o.failed_at
            && matches!(e, roam::SessionEvent::PathChanged { to, .. } if to.interface == "rmnet0")
    });
    assert!(moved, "no PathChanged to rmnet0: {:?}", system.events());
}

#[test]
fn roam_quic_leaves_a_silent_blackhole_while_it_downloads_at_50_ms_rtt() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "roam_quic_leaves_a_silent_blackhole_while_it_downloads_at_50_ms_rtt",
    ) else {
        return;
    };
    // The handset only receives: nothing of its own waits for an ACK, so only the ping it
    // sends when the stream stops arriving tells the dead path (before it: the next
    // keep-alive, 1.3-1.4 s of silence at this RTT; with it about 320 ms).
    let cfg = RunConfig {
        direction: Direction::Down,
        ..RunConfig::quick(Duration::from_millis(50))
    };
    let system = Arc::new(Roam::new(Transport::Quic).unwrap());
    let o = run_once(system.clone(), Scenario::Blackhole, &cfg).unwrap();
    assert_intact(&o);
    assert!(o.gap < Duration::from_secs(1), "gap {:?}", o.gap);
    let stalled = system.events().into_iter().any(|(at, e)| {
        at >= o.failed_at
            && matches!(e, roam::SessionEvent::PathChanged { to, reason: roam::path::MigrationReason::Stalled, .. } if to.interface == "rmnet0")
    });
    assert!(stalled, "no stall move to rmnet0: {:?}", system.events());
}

#[test]
fn kernel_mptcp_moves_to_the_backup_subflow_on_link_down() {
    let Some(_serial) =
        roam_tests::serial::netns_test("kernel_mptcp_moves_to_the_backup_subflow_on_link_down")
    else {
        return;
    };
    let cfg = cfg();
    let system = baseline(Transport::Mptcp).unwrap();
    let topo = Arc::new(bench_topology(&cfg).unwrap());
    system.prepare(&topo).unwrap();
    let mut before = String::new();
    let o = run_with(system, &topo, &cfg, |t| {
        // The kernel's view of the session right before the failure: one subflow per link.
        before = t
            .handset()
            .exec("ss", &["-tnH", "state", "established", "dst", "198.19.0.1"])?;
        t.link_down("wlan0")?;
        Ok(None)
    })
    .unwrap();
    assert_eq!(
        before.lines().count(),
        2,
        "subflows before the failure:\n{before}"
    );
    assert!(
        before.contains("198.18.0.2") && before.contains("198.18.1.2"),
        "{before}"
    );
    assert_intact(&o);
    assert!(
        o.gap > Duration::from_millis(2),
        "a gap of {:?} is not a handover",
        o.gap
    );
    assert!(
        bytes_after_failure(&o, 1) > 100_000,
        "the backup subflow on rmnet0 carried nothing"
    );
}

#[test]
fn tcp_reconnect_resumes_without_losing_a_message() {
    let Some(_serial) =
        roam_tests::serial::netns_test("tcp_reconnect_resumes_without_losing_a_message")
    else {
        return;
    };
    let o = measured(Transport::TcpResume, Scenario::AddrRemove);
    assert_intact(&o);
    // It can only notice by its acknowledgement timeout.
    assert!(o.gap >= Duration::from_millis(400), "gap {:?}", o.gap);
    let peers = peer_ips(&o);
    assert_eq!(
        peers.last().map(String::as_str),
        Some("198.18.1.2"),
        "{peers:?}"
    );
}

#[test]
fn quinn_on_the_wildcard_address_dies_in_a_silent_blackhole() {
    let Some(_serial) =
        roam_tests::serial::netns_test("quinn_on_the_wildcard_address_dies_in_a_silent_blackhole")
    else {
        return;
    };
    let cfg = RunConfig {
        after: Duration::from_millis(300),
        timeout: Duration::from_millis(1500),
        ..RunConfig::quick(Duration::ZERO)
    };
    let o = run_once(
        baseline(Transport::Quic).unwrap(),
        Scenario::Blackhole,
        &cfg,
    )
    .unwrap();
    assert!(
        o.session_error.is_some(),
        "survived a blackhole: gap {:?}",
        o.gap
    );
    assert_eq!(o.gap, cfg.timeout);
    assert!(o.delivered < o.sent);
    assert_eq!(o.corrupted, 0, "what did arrive must be intact");
}

#[test]
fn quic_refuses_a_server_signed_by_another_ca() {
    let Some(_serial) =
        roam_tests::serial::netns_test("quic_refuses_a_server_signed_by_another_ca")
    else {
        return;
    };
    let topo = Topology::builder()
        .link("wlan0", roam_policy::LinkKind::Wifi)
        .build()
        .unwrap();
    let server_pki = TestPki::generate().unwrap();
    let other = TestPki::generate().unwrap();
    let addr = SocketAddr::new(SERVICE_V4.into(), 4433);
    let timeout = Duration::from_secs(2);
    let server_cfg = server_pki.quic_server(timeout).unwrap();
    let server = topo
        .server()
        .spawn("quic-server", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let ep = quinn::Endpoint::server(server_cfg, addr)?;
                // One attempt (the refused one), one good handshake.
                for _ in 0..2 {
                    let Some(inc) = ep.accept().await else { break };
                    if let Ok(conn) = inc.await {
                        conn.closed().await;
                    }
                }
                anyhow::Ok(())
            })
        })
        .unwrap();
    let results = topo
        .handset()
        .block_on(async move {
            let mut ep = quinn::Endpoint::client("0.0.0.0:0".parse().unwrap()).unwrap();
            let mut out = Vec::new();
            for ca in [&other.ca, &server_pki.ca] {
                ep.set_default_client_config(client_trusting(ca, timeout).unwrap());
                let r = tokio::time::timeout(timeout, ep.connect(addr, SERVER_NAME).unwrap()).await;
                out.push(match r {
                    Ok(Ok(c)) => {
                        c.close(0u32.into(), b"done");
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                });
            }
            ep.wait_idle().await;
            out
        })
        .unwrap();
    let err = results[0].as_ref().unwrap_err();
    assert!(
        err.contains("UnknownIssuer") || err.to_lowercase().contains("certificate"),
        "{err}"
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
    server.join().unwrap().unwrap();
}

#[test]
fn bench_binary_writes_the_documented_json() {
    let Some(_serial) = roam_tests::serial::netns_test("bench_binary_writes_the_documented_json")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("roam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let svg = dir.join("timeline.svg");
    let stdout = roam_tests::binary::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_handover-bench"))
            .args([
                "--transport",
                "all",
                "--scenario",
                "link-down",
                "--repeats",
                "1",
                "--quick",
            ])
            .arg("--json")
            .arg(&json)
            .arg("--svg")
            .arg(&svg),
    );
    let v = roam_tests::binary::take_json(&json);
    let runs = v["runs"].as_array().unwrap();
    let rows: Vec<(&str, &str)> = runs
        .iter()
        .map(|r| {
            (
                r["transport"].as_str().unwrap(),
                r["system"].as_str().unwrap(),
            )
        })
        .collect();
    // roam beside each baseline, measured in the same run.
    assert_eq!(
        rows,
        [
            ("quic", "roam"),
            ("quic", "baseline-quinn"),
            ("mptcp", "roam"),
            ("mptcp", "baseline-kernel-mptcp"),
            ("tcp-resume", "roam"),
            ("tcp-resume", "baseline-tcp-reconnect"),
        ]
    );
    for r in runs {
        let r = r.as_object().unwrap();
        let mut keys: Vec<_> = r.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bytes_delivered",
                "bytes_sent",
                "corrupted",
                "direction",
                "gap_ms",
                "peer",
                "repeats",
                "rtt_ms",
                "scenario",
                "session_errors",
                "system",
                "transport"
            ]
        );
        assert_eq!(r["scenario"], "link-down");
        assert_eq!(r["direction"], "up");
        let peer = if r["system"] == "roam" {
            "roam"
        } else {
            "baseline"
        };
        assert_eq!(r["peer"], peer, "{r:?}");
        assert!(r["gap_ms"]["p50"].as_f64().unwrap() > 0.0);
        if r["system"] == "roam" {
            // Every byte of every roam session arrived, intact, through the link going down.
            assert!(r["bytes_sent"].as_u64().unwrap() > 500_000, "{r:?}");
            assert_eq!(r["bytes_sent"], r["bytes_delivered"], "{r:?}");
            assert_eq!(r["corrupted"], 0, "{r:?}");
            assert_eq!(r["session_errors"], 0, "{r:?}");
        }
    }
    // The table shows the roam rows beside the baselines.
    let table: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().take(3).collect())
        .collect();
    for t in ["quic", "mptcp", "tcp-resume"] {
        assert!(
            table.contains(&vec!["link-down", t, "roam"]),
            "no roam row for {t}:\n{stdout}"
        );
    }
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("<svg") && picture.contains("rmnet0"));
    assert!(
        picture.contains("roam (quic, peer roam)"),
        "no roam panel in the picture"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn quinn_over_ipv6_migrates_to_the_cellular_address() {
    let Some(_serial) =
        roam_tests::serial::netns_test("quinn_over_ipv6_migrates_to_the_cellular_address")
    else {
        return;
    };
    let cfg = RunConfig {
        ipv6: true,
        ..cfg()
    };
    let o = run_once(baseline(Transport::Quic).unwrap(), Scenario::LinkDown, &cfg).unwrap();
    assert_intact(&o);
    let peers = peer_ips(&o);
    assert_eq!(
        peers.first().map(String::as_str),
        Some("2001:db8::2"),
        "{peers:?}"
    );
    assert_eq!(
        peers.last().map(String::as_str),
        Some("2001:db8:0:1::2"),
        "{peers:?}"
    );
}
