//! `roam connect --policy FILE` honours flow-size rules: with `start on cell then add wifi
//! after 1MB` (and no roamd) the session starts on rmnet0, its `--json` lines name wlan0 added
//! once the transfer passed 1 MB, every byte of the echo comes back, and the server's counters
//! show wlan0 carried the rest.

mod built;

use std::time::Duration;

use built::{Running, Scratch};
use roam_policy::LinkKind;
use roam_tests::topology::{SERVICE_V4, Topology};
use serde_json::Value;

const PORT: u16 = 4444;
const FLOW_POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                           default {\n  start on cell then add wifi after 1MB\n}\n";

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

fn server_rx(topo: &Topology, link: &str) -> u64 {
    topo.server_stats()
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == link)
        .map(|(_, s)| s.rx_bytes)
        .unwrap()
}

#[test]
fn connect_with_a_flow_rule_starts_on_cellular_and_names_wifi_added_after_1mb() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "connect_with_a_flow_rule_starts_on_cellular_and_names_wifi_added_after_1mb",
    ) else {
        return;
    };
    let dir = Scratch::new("cli-flow");
    let (cert, key) = built::certificate(&dir, &[&SERVICE_V4.to_string()]);
    std::fs::write(dir.join("flow.roam"), FLOW_POLICY).unwrap();
    let topo = Topology::builder()
        .link("wlan0", LinkKind::Wifi)
        .link("rmnet0", LinkKind::Cellular)
        .build()
        .unwrap();
    let _server = built::serve_echo(topo.server(), (SERVICE_V4, PORT).into(), (&cert, &key));
    let wlan_before = server_rx(&topo, "wlan0");

    // 4 MB echoed at 32 Mbit/s: 8 MB both ways, past 1 MB within the first 150 ms.
    let mut connect = built::connect(topo.handset(), PORT, &cert, &dir);
    connect
        .args([
            "--transport",
            "quic",
            "--bytes",
            "4M",
            "--rate",
            "32",
            "--json",
        ])
        .arg("--policy")
        .arg(dir.join("flow.roam"));
    let mut client = Running::start(connect);
    let code = client.finish(Duration::from_secs(30));
    let all = client.seen.join("\n");
    eprintln!("roam connect's output:\n{all}");
    assert_eq!(code, Some(0), "roam connect failed:\n{all}");
    let lines: Vec<Value> = client.seen.iter().map(|l| json(l)).collect();
    let connected = lines
        .iter()
        .find(|v| v["event"] == "connected")
        .expect(&all);
    assert_eq!(connected["interface"], "rmnet0", "{all}");
    // Every path line names its interface; the first is rmnet0, and wlan0 is added later.
    let paths: Vec<(&str, &str)> = lines
        .iter()
        .filter(|v| v["event"] == "path_added" || v["event"] == "path_removed")
        .map(|v| {
            (
                v["event"].as_str().unwrap(),
                v["interface"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a path line without its interface:\n{all}")),
            )
        })
        .collect();
    assert_eq!(paths.first(), Some(&("path_added", "rmnet0")), "{all}");
    assert!(paths.contains(&("path_added", "wlan0")), "{all}");
    let decision = lines
        .iter()
        .find(|v| {
            v["event"] == "decision"
                && v["paths"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["interface"] == "wlan0"))
        })
        .unwrap_or_else(|| panic!("no decision adding wlan0:\n{all}"));
    assert!(decision["t_ms"].is_u64(), "{all}");
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done", "{all}");
    assert_eq!(done["intact"], true, "{all}");
    // What the server saw over wlan0: most of the transfer.
    let on_wifi = server_rx(&topo, "wlan0") - wlan_before;
    eprintln!("figure: the server received {on_wifi} B over wlan0 of a 4 MB transfer");
    assert!(on_wifi > 1_000_000, "wlan0 carried only {on_wifi} B");
}
