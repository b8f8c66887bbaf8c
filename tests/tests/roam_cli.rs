//! The `roam` command line: `roam serve --echo` in the server namespace, `roam connect --bytes
//! --json` in a handset whose WiFi is lost mid-transfer; and bad input told in one line.

mod built;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use built::{Running, Scratch};
use roam_policy::LinkKind;
use roam_tests::topology::{SERVICE_V4, Topology};
use serde_json::Value;

const PORT: u16 = 4443;
const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                      default {\n  prefer wifi over cell\n}\n";

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
}

#[test]
fn connect_bytes_survive_wifi_loss_intact_against_serve_echo() {
    let Some(_serial) =
        roam_tests::serial::netns_test("connect_bytes_survive_wifi_loss_intact_against_serve_echo")
    else {
        return;
    };
    let dir = Scratch::new("cli");
    let (cert, key) = built::certificate(&dir, &[&SERVICE_V4.to_string()]);
    std::fs::write(dir.join("policy.roam"), POLICY).unwrap();
    let topo = Topology::builder()
        .link("wlan0", LinkKind::Wifi)
        .link("rmnet0", LinkKind::Cellular)
        .build()
        .unwrap();

    let mut server = built::serve_echo(topo.server(), (SERVICE_V4, PORT).into(), (&cert, &key));

    // 6 MB at 16 Mbit/s: 3 s, WiFi lost after the first second.
    let total: u64 = 6_000_000;
    let mut connect = built::connect(topo.handset(), PORT, &cert, &dir);
    connect
        .args(["--transport", "quic"])
        .args(["--bytes", "6M", "--rate", "16", "--json"])
        .arg("--policy")
        .arg(dir.join("policy.roam"));
    let mut client = Running::start(connect);
    let connected = client.wait_for("connected line", Duration::from_secs(15), |l| {
        l.contains("\"connected\"")
    });
    assert_eq!(json(&connected)["interface"], "wlan0", "{connected}");
    // WiFi goes once the server has 1 MB from it (its veth counters, polled), mid-transfer.
    let wlan0_rx = || {
        topo.server_stats()
            .unwrap()
            .into_iter()
            .find(|(n, _)| n == "wlan0")
            .map_or(0, |(_, s)| s.rx_bytes)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wlan0_rx() < 1_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the server's wlan0 received {} bytes in 10 s",
            wlan0_rx()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    topo.link_down("wlan0").unwrap();

    let code = client.finish(Duration::from_secs(30));
    let lines: Vec<Value> = client.seen.iter().map(|l| json(l)).collect();
    let all = client.seen.join("\n");
    assert_eq!(code, Some(0), "roam connect failed:\n{all}");
    eprintln!("roam connect's output:\n{all}");
    let source = lines
        .iter()
        .find(|v| v["event"] == "decision_source")
        .expect(&all);
    assert!(
        source["source"].as_str().unwrap().contains("mbedded"),
        "ROAM_SOCKET names no roamd, so the session decides alone:\n{all}"
    );
    let moved = lines
        .iter()
        .find(|v| v["event"] == "path_changed" && v["to"] == "rmnet0")
        .unwrap_or_else(|| panic!("no path_changed to rmnet0:\n{all}"));
    assert_eq!(moved["from"], "wlan0", "{all}");
    assert!(
        moved["reason"].is_string() && moved["t_ms"].is_u64(),
        "{all}"
    );
    let done = lines.last().unwrap();
    assert_eq!(done["event"], "done", "{all}");
    assert_eq!(done["bytes_sent"], total, "{all}");
    assert_eq!(done["bytes_echoed"], total, "{all}");
    assert_eq!(done["intact"], true, "{all}");
    let gap = done["max_echo_gap_ms"].as_f64().unwrap();
    assert!(gap > 0.0 && gap < 3000.0, "{all}");

    // The server saw the session, the client move to rmnet0's address, and a clean end.
    let rmnet0 = topo.link("rmnet0").unwrap().handset_v4.to_string();
    server.wait_for("the peer's move", Duration::from_secs(5), |l| {
        l.contains("\"peer_changed\"") && l.contains(&rmnet0)
    });
    server.wait_for("the session's end", Duration::from_secs(15), |l| {
        l.contains("\"ended\"") && l.contains("\"error\":null")
    });

    // Netcat mode, WiFi still gone: standard input comes back on standard output, sentences
    // on standard error, a clean end is exit 0.
    let mut nc = built::connect(topo.handset(), PORT, &cert, &dir);
    nc.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = nc.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello roam\nsecond line\n")
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("roam connect in netcat mode did not end")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello roam\nsecond line\n",
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "connected to {SERVICE_V4}:{PORT} over quic on rmnet0"
        )),
        "{stderr}"
    );
}

/// Runs `roam ARGS` and returns (exit code, stderr).
fn roam(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(built::roam()).args(args).output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = Scratch::new("cli-bad");
    let missing = dir.join("missing.pem");
    let missing = missing.to_str().unwrap();
    let (code, err) = roam(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--cert",
        missing,
        "--key",
        missing,
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("roam serve: cannot read --cert "), "{err}");
    assert!(err.contains("No such file"), "{err}");

    std::fs::write(dir.join("not.pem"), "hello").unwrap();
    let not_pem = dir.join("not.pem");
    let (code, err) = roam(&["connect", "127.0.0.1:9", "--ca", not_pem.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--ca") && err.contains("no certificate"),
        "{err}"
    );

    let (code, err) = roam(&["connect", "127.0.0.1:9", "--bytes", "ten"]);
    assert_eq!(code, Some(2), "usage errors are clap's: {err}");
    assert!(err.contains("not a byte count"), "{err}");
}
