//! `soak-bench` in small: one session per transport through ten handovers in a row (every
//! kind of step), with roamd running: nothing lost, damaged or broken, and neither roamd's
//! memory nor the clients' memory and descriptors grow beyond a bound.

use std::process::Command;

use roam_tests::binary::{run_ok, scratch_path, take_json};

/// roamd may grow this much over the run (the bound for 1,000 handovers).
const ROAMD_GROWTH_KIB: u64 = 1024;
/// A client may grow this much: its allocator settles during the first handovers.
const CLIENT_GROWTH_KIB: u64 = 4096;

#[test]
fn soak_bench_keeps_every_session_whole_through_ten_handovers() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "soak_bench_keeps_every_session_whole_through_ten_handovers",
    ) else {
        return;
    };
    let json = scratch_path("soak-bench", "json");
    let stdout = run_ok(
        Command::new(env!("CARGO_BIN_EXE_soak-bench"))
            .args(["--handovers", "10", "--transport", "all", "--json"])
            .arg(&json),
    );
    let v = take_json(&json);
    let runs = v["runs"].as_array().expect("runs");
    let transports: Vec<&str> = runs
        .iter()
        .map(|r| r["transport"].as_str().unwrap())
        .collect();
    assert_eq!(transports, ["quic", "mptcp", "tcp-resume"], "{stdout}");
    for r in runs {
        let what = format!("{}: {r}\n{stdout}", r["transport"]);
        let n = |k: &str| {
            r[k].as_u64()
                .unwrap_or_else(|| panic!("{k} missing; {what}"))
        };
        assert_eq!(n("handovers"), 10, "{what}");
        assert!(n("bytes_sent") > 0, "{what}");
        assert_eq!(n("bytes_delivered"), n("bytes_sent"), "{what}");
        assert_eq!(n("corrupted"), 0, "{what}");
        assert_eq!(n("session_errors"), 0, "{what}");
        let gap = &r["gap_ms"];
        let (p50, p99, max) = (
            gap["p50"].as_f64().unwrap(),
            gap["p99"].as_f64().unwrap(),
            gap["max"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{what}");
        assert!(
            n("roamd_rss_kib_end") <= n("roamd_rss_kib_start") + ROAMD_GROWTH_KIB,
            "roamd grew; {what}"
        );
        assert!(
            n("client_rss_kib_end") <= n("client_rss_kib_start") + CLIENT_GROWTH_KIB,
            "the client grew; {what}"
        );
        assert_eq!(
            n("client_fds_end"),
            n("client_fds_start"),
            "the client's descriptors changed; {what}"
        );
    }
}
