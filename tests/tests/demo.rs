//! The quick start's demo: with root it tells the whole story (a roam session through WiFi
//! going silent and back, beside a plain quinn client that the same failure kills), without
//! root one clear line.

use std::process::Command;

use roam_tests::privilege::require_netns;

#[test]
fn demo_survives_silent_wifi_with_every_byte_intact_where_plain_quinn_dies() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "demo_survives_silent_wifi_with_every_byte_intact_where_plain_quinn_dies",
    ) else {
        return;
    };
    let svg = std::env::temp_dir().join(format!("roam-demo-{}.svg", std::process::id()));
    // The default outage, 3 s: longer than both clients' 2 s idle timeout.
    let out = Command::new(env!("CARGO_BIN_EXE_roam-demo"))
        .arg("--svg")
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("WiFi (wlan0) goes silent"), "{stdout}");
    // The agent ran in the handset and saw the failure and the return by itself.
    assert!(
        stdout.contains("roamd    running in the handset"),
        "{stdout}"
    );
    assert!(stdout.contains("roamd decides: primary rmnet0"), "{stdout}");
    assert!(stdout.contains("roamd decides: primary wlan0"), "{stdout}");
    // A roam session subscribed to that roamd, followed its pushes and moved off WiFi.
    assert!(stdout.contains("roam::Session over quic"), "{stdout}");
    assert!(
        stdout.contains("session's decision source: roamd at"),
        "the session did not follow roamd:\n{stdout}"
    );
    assert!(
        stdout.contains("session follows roamd's push: primary rmnet0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("session follows roamd's push: primary wlan0"),
        "{stdout}"
    );
    // Moved by its own stall detection or by roamd's probes, whichever saw it first.
    assert!(stdout.contains("session moves wlan0 -> rmnet0"), "{stdout}");
    assert!(stdout.contains("-> wlan0 (primary changed)"), "{stdout}");
    assert!(
        stdout.contains("(rmnet0)"),
        "the server never saw the client on rmnet0:\n{stdout}"
    );
    assert!(stdout.contains("every byte intact"), "{stdout}");
    // The same failure under plain quinn, in the same run: it stays on the silent WiFi and its
    // idle timeout kills it, while roam paused for about the probes' detection time.
    assert!(
        stdout.contains("the quinn connection is dead"),
        "plain quinn survived the silent WiFi?\n{stdout}"
    );
    assert!(
        stdout.contains("plain quinn  dead 2."),
        "plain quinn did not die of its 2 s idle timeout:\n{stdout}"
    );
    let pause: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("roam         longest pause "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("no roam pause in the summary:\n{stdout}"));
    assert!(
        pause > 0.0 && pause < 1000.0,
        "roam paused {pause} ms:\n{stdout}"
    );
    // WiFi back: roamd finds it with its probes and the session returns to it. (Where it
    // ends is not asserted: on a loaded machine a false stall can send it off WiFi again.)
    assert!(
        stdout.contains("moved to rmnet0, back on wlan0 "),
        "the session did not return to WiFi:\n{stdout}"
    );
    assert!(
        stdout.contains("after WiFi returned, every byte intact"),
        "{stdout}"
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.contains("<svg"));
    assert!(
        picture.contains("plain quinn, the same failure: dead"),
        "{picture}"
    );
    std::fs::remove_file(&svg).unwrap();
}

#[test]
fn demo_without_privileges_says_so_in_one_line() {
    if !require_netns("demo_without_privileges_says_so_in_one_line") {
        return;
    }
    // Drop to nobody with no capabilities: the situation of a user who forgot sudo.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_roam-demo"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs root"), "{stderr}");
    assert!(out.stdout.is_empty());
}
