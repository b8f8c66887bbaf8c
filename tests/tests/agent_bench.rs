//! `agent-bench` with small numbers: it runs roamd in a handset, every flap yields a decision,
//! and the JSON has the documented shape.

use std::process::Command;

use roam_tests::binary::{run_ok, scratch_path, take_json};

#[test]
fn agent_bench_times_every_flap_and_writes_its_json() {
    let Some(_serial) =
        roam_tests::serial::netns_test("agent_bench_times_every_flap_and_writes_its_json")
    else {
        return;
    };
    let json = scratch_path("agent-bench", "json");
    let stdout = run_ok(
        Command::new(env!("CARGO_BIN_EXE_agent-bench"))
            .args([
                "--flaps",
                "10",
                "--subscribers",
                "50",
                "--idle-secs",
                "2",
                "--json",
            ])
            .arg(&json),
    );
    assert!(
        stdout.contains("kernel notification -> subscriber"),
        "{stdout}"
    );
    let v = take_json(&json);
    let num = |path: &[&str]| -> f64 {
        let mut at = &v;
        for k in path {
            at = &at[*k];
        }
        at.as_f64()
            .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
    };
    // Every flap produced a decision, each timed from the kernel's notification.
    assert_eq!(num(&["reaction_ms", "samples"]), 10.0, "{v}");
    let (p50, p99, max) = (
        num(&["reaction_ms", "p50"]),
        num(&["reaction_ms", "p99"]),
        num(&["reaction_ms", "max"]),
    );
    assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{v}");
    // Loose bounds for a debug build on a shared two-core machine; the figures are printed.
    assert!(max < 1000.0, "{v}");
    assert!(num(&["idle", "seconds"]) >= 2.0, "{v}");
    assert!(num(&["idle", "wakeups_per_s"]) >= 0.0, "{v}");
    assert!(num(&["idle", "cpu_pct"]) >= 0.0, "{v}");
    let rss = num(&["rss_mib"]);
    assert!(rss > 0.5 && rss < 256.0, "{v}");
    assert_eq!(num(&["fanout_ms", "subscribers"]), 50.0, "{v}");
    assert!(num(&["fanout_ms", "repeats"]) >= 1.0, "{v}");
    assert!(
        num(&["fanout_ms", "p50"]) <= num(&["fanout_ms", "max"]),
        "{v}"
    );
}
