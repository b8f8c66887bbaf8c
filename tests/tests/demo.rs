//! The README's "run it" command: the demo tells a whole story with root, and one clear line
//! without.

use std::process::Command;

use roam_tests::privilege::require_netns;

#[test]
fn demo_survives_wifi_down_and_back_with_every_byte_intact() {
    let Some(_serial) =
        roam_tests::serial::netns_test("demo_survives_wifi_down_and_back_with_every_byte_intact")
    else {
        return;
    };
    let svg = std::env::temp_dir().join(format!("roam-demo-{}.svg", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_roam-demo"))
        .args(["--outage-ms", "300", "--svg"])
        .arg(&svg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("WiFi (wlan0) goes down"), "{stdout}");
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
    assert!(
        stdout.contains("session moves wlan0 -> rmnet0 (link lost)"),
        "{stdout}"
    );
    assert!(stdout.contains("-> wlan0 (primary changed)"), "{stdout}");
    assert!(
        stdout.contains("(rmnet0)"),
        "the server never saw the client on rmnet0:\n{stdout}"
    );
    // WiFi back: the session returns to it and stays, whether or not the first try stalled.
    assert!(
        stdout.contains("session ends on wlan0"),
        "the session did not end on the returned WiFi:\n{stdout}"
    );
    assert!(stdout.contains("every byte intact"), "{stdout}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
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
