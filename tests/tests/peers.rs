//! The handover harness in both directions and against stock peers: every system but plain
//! quinn carries a download (the server streams to the handset) through WiFi going down with
//! every byte intact; roam's QUIC session does the same against aioquic, a server nobody on the project
//! wrote, in both directions; tcp-resume says it has no stock peer; and the bench binary's rows
//! carry the direction and the peer.

use std::sync::Arc;
use std::time::Duration;

use roam_tests::agent::AgentExe;
use roam_tests::handover::{Outcome, RunConfig, run_once};
use roam_tests::scenario::Scenario;
use roam_tests::system::roam::Roam;
use roam_tests::system::{Direction, Peer, System, Transport, baseline};

fn cfg(direction: Direction) -> RunConfig {
    RunConfig {
        after: Duration::from_millis(800),
        timeout: Duration::from_secs(3),
        direction,
        ..RunConfig::quick(Duration::ZERO)
    }
}

fn assert_intact(what: &str, o: &Outcome) {
    assert!(o.session_error.is_none(), "{what}: {:?}", o.session_error);
    assert_eq!(o.delivered, o.sent, "{what}: messages lost");
    assert_eq!(o.corrupted, 0, "{what}");
    assert!(o.sent > 8_000, "{what}: only {} messages sent", o.sent);
}

#[test]
fn every_system_carries_a_download_through_link_down() {
    let Some(_serial) =
        roam_tests::serial::netns_test("every_system_carries_a_download_through_link_down")
    else {
        return;
    };
    // The bench's own roam systems (roamd in the handset for MPTCP), started from the bench.
    let exe = AgentExe::at(env!("CARGO_BIN_EXE_handover-bench"));
    for t in Transport::ALL {
        let systems: [Arc<dyn System>; 2] = [
            Arc::new(Roam::for_bench(t, &exe).unwrap()),
            baseline(t).unwrap(),
        ];
        for system in systems {
            let what = format!("{} {t} down", system.name());
            let quinn = system.name() == "baseline-quinn";
            let o = run_once(system, Scenario::LinkDown, &cfg(Direction::Down)).unwrap();
            eprintln!("figure: {what}: gap {:?}", o.gap);
            // A plain quinn client that only downloads has nothing to send after the link
            // goes, so its server may never learn the new address (2 of 5 died in
            // handover-bench): its figure is shown, not held to.
            if !quinn {
                assert_intact(&what, &o);
            }
        }
    }
}

#[test]
fn roam_quic_against_aioquic_survives_link_down_both_ways() {
    let Some(_serial) =
        roam_tests::serial::netns_test("roam_quic_against_aioquic_survives_link_down_both_ways")
    else {
        return;
    };
    let system: Arc<dyn System> = Arc::new(
        Roam::new(Transport::Quic)
            .unwrap()
            .with_peer(Peer::Stock)
            .unwrap(),
    );
    assert_eq!(system.peer(), "stock");
    for d in Direction::ALL {
        let o = run_once(system.clone(), Scenario::LinkDown, &cfg(d)).unwrap();
        eprintln!("figure: roam quic {d} against aioquic: gap {:?}", o.gap);
        assert_intact(&format!("quic {d} against aioquic"), &o);
        // aioquic follows the migration on its own; a dead or stuck session is the timeout.
        assert!(o.gap < Duration::from_millis(500), "{d}: gap {:?}", o.gap);
    }
}

#[test]
fn tcp_resume_has_no_stock_peer_and_says_why() {
    let e = Roam::new(Transport::TcpResume)
        .unwrap()
        .with_peer(Peer::Stock)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no stock peer"), "{e}");
    assert!(e.contains("roam Listener"), "{e}");
}

#[test]
fn bench_rows_carry_direction_and_peer() {
    let Some(_serial) = roam_tests::serial::netns_test("bench_rows_carry_direction_and_peer")
    else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("roam-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("bench.json");
    let stdout = roam_tests::binary::run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_handover-bench"))
            .args([
                "--transport",
                "quic,tcp-resume",
                "--scenario",
                "link-down",
                "--direction",
                "both",
                "--peer",
                "all",
                "--repeats",
                "1",
                "--quick",
            ])
            .arg("--json")
            .arg(&json)
            .arg("--svg")
            .arg(dir.join("timeline.svg")),
    );
    let v = roam_tests::binary::take_json(&json);
    let rows: Vec<String> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r["transport"].as_str().unwrap(),
                r["direction"].as_str().unwrap(),
                r["system"].as_str().unwrap(),
                r["peer"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            "quic up roam roam",
            "quic up roam stock",
            "quic up baseline-quinn baseline",
            "quic down roam roam",
            "quic down roam stock",
            "quic down baseline-quinn baseline",
            "tcp-resume up roam roam",
            "tcp-resume up baseline-tcp-reconnect baseline",
            "tcp-resume down roam roam",
            "tcp-resume down baseline-tcp-reconnect baseline",
        ]
    );
    assert!(
        stdout.contains("note: tcp-resume has no stock peer"),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
