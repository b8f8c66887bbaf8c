//! `throughput-bench` in its quickest form: every row (raw MPTCP, raw MPTCP with TLS, a roam
//! session) moves its bytes intact in an unlimited and a rate-limited regime, and the JSON holds
//! positive, finite figures. Speed itself is the benchmark's to print, not this test's to judge.

use std::process::Command;

use roam_tests::binary::{run_ok, scratch_path, take_json};

#[test]
fn throughput_bench_delivers_every_row_intact_and_writes_its_json() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "throughput_bench_delivers_every_row_intact_and_writes_its_json",
    ) else {
        return;
    };
    let json = scratch_path("throughput-bench", "json");
    let stdout = run_ok(
        Command::new(env!("CARGO_BIN_EXE_throughput-bench"))
            .args([
                "--quick",
                "--regime",
                "unlimited,100",
                "--repeats",
                "1",
                "--json",
            ])
            .arg(&json),
    );
    assert!(stdout.contains("roam/raw+TLS"), "{stdout}");
    let v = take_json(&json);
    let positive = |x: &serde_json::Value, what: &str| -> f64 {
        let f = x
            .as_f64()
            .unwrap_or_else(|| panic!("{what} is not a number: {x}"));
        assert!(f.is_finite() && f > 0.0, "{what} = {f}");
        f
    };

    let runs = v["runs"].as_array().expect("runs");
    let mut seen = Vec::new();
    for r in runs {
        let what = format!("{} / {}", r["system"], r["regime"]);
        seen.push((r["regime"].as_str().unwrap(), r["system"].as_str().unwrap()));
        assert_eq!(r["transport"], "mptcp", "{what}");
        assert_eq!(r["repeats"], 1, "{what}");
        assert_eq!(
            r["stalled"], 0,
            "{what}: the connection stopped moving data"
        );
        assert_eq!(r["intact"], true, "{what}");
        let sent = r["bytes_sent"].as_u64().unwrap();
        assert!(sent > 0, "{what}: nothing sent");
        assert_eq!(r["bytes_delivered"].as_u64(), Some(sent), "{what}");
        let t = &r["throughput_mbit"];
        let (min, median, max) = (
            positive(&t["min"], &what),
            positive(&t["median"], &what),
            positive(&t["max"], &what),
        );
        assert!(min <= median && median <= max, "{what}: {t}");
        positive(&r["cpu_ns_per_byte"], &what);
    }
    let mut want = Vec::new();
    for regime in ["unlimited", "100 Mbit/s"] {
        for system in ["raw-mptcp", "raw-mptcp-tls", "roam"] {
            want.push((regime, system));
        }
    }
    assert_eq!(seen, want);
    // The shaped regime cannot exceed its rate (plus the shaper's burst): the limit applied.
    for r in runs.iter().filter(|r| r["rate_mbit"] == 100) {
        assert!(r["throughput_mbit"]["max"].as_f64().unwrap() < 110.0, "{r}");
    }

    let ratios = v["ratios"].as_array().expect("ratios");
    assert_eq!(ratios.len(), 2, "{v}");
    for x in ratios {
        positive(&x["roam_over_raw"], "roam_over_raw");
        positive(&x["roam_over_raw_tls"], "roam_over_raw_tls");
    }
}
