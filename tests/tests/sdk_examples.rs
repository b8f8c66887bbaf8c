//! The SDK's examples (`sdk/examples/`), built and run in a handset: the chat goes on through
//! a WiFi loss, a file sent while WiFi dies arrives intact, and an app's own decision source
//! moves a session when the app says so.

mod built;

use std::time::Duration;

use built::{Running, Scratch};
use roam_policy::LinkKind;
use roam_tests::topology::{Direction, SERVICE_V4, Topology};

fn handset() -> Topology {
    Topology::builder()
        .link("wlan0", LinkKind::Wifi)
        .link("rmnet0", LinkKind::Cellular)
        .build()
        .unwrap()
}

/// A command running `program` inside `ns` with `args`; no roamd is followed (the sessions
/// decide with their embedded monitor, or the app's source).
fn command(
    ns: &roam_tests::netns::Netns,
    program: &std::path::Path,
    args: &[&str],
    dir: &Scratch,
) -> std::process::Command {
    let mut cmd = ns.command(program.to_str().unwrap());
    cmd.args(args).env("ROAM_SOCKET", dir.join("no-roamd.sock"));
    cmd
}

const WAIT: Duration = Duration::from_secs(15);

#[test]
fn chat_goes_on_through_wifi_loss() {
    let Some(_serial) = roam_tests::serial::netns_test("chat_goes_on_through_wifi_loss") else {
        return;
    };
    let dir = Scratch::new("chat");
    let (cert, key) = built::certificate(&dir, &[&SERVICE_V4.to_string()]);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let topo = handset();
    let listen = format!("{SERVICE_V4}:4444");
    let server_exe = built::example("chat_server");
    let client_exe = built::example("chat_client");
    let mut server = Running::start(command(
        topo.server(),
        &server_exe,
        &["--listen", &listen, "--cert", cert, "--key", key],
        &dir,
    ));
    server.wait_for("the server's start", WAIT, |l| {
        l.starts_with("chat server on")
    });
    let client = |name: &str| {
        Running::start(command(
            topo.handset(),
            &client_exe,
            &[&listen, "--ca", cert, "--name", name],
            &dir,
        ))
    };
    let mut alice = client("alice");
    server.wait_for("alice joining", WAIT, |l| l.starts_with("alice joined"));
    let mut bob = client("bob");
    server.wait_for("bob joining", WAIT, |l| l.starts_with("bob joined"));
    alice.wait_for("bob's arrival", WAIT, |l| l == "* bob joined");
    alice.type_line("hello bob");
    bob.wait_for("alice's line", WAIT, |l| l == "alice: hello bob");

    topo.link_down("wlan0").unwrap();
    bob.type_line("still here after WiFi went");
    alice.wait_for("bob's line over cellular", WAIT, |l| {
        l == "bob: still here after WiFi went"
    });
    alice.type_line("me too");
    bob.wait_for("alice's line over cellular", WAIT, |l| l == "alice: me too");
    // Both sessions moved: the server saw no one leave.
    drop((alice, bob));
    assert!(
        !server.seen.iter().any(|l| l.ends_with(" left")),
        "{:?}",
        server.seen
    );
}

#[test]
fn file_transfer_survives_wifi_loss_intact() {
    let Some(_serial) = roam_tests::serial::netns_test("file_transfer_survives_wifi_loss_intact")
    else {
        return;
    };
    let dir = Scratch::new("files");
    let (cert, key) = built::certificate(&dir, &[&SERVICE_V4.to_string()]);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // 4 MB that no shifted or repeated chunk reproduces (an LCG's high bytes).
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let data: Vec<u8> = (0..4_000_000)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            (x >> 56) as u8
        })
        .collect();
    let file = dir.join("photos.tar");
    std::fs::write(&file, &data).unwrap();
    let incoming = dir.join("in");
    std::fs::create_dir_all(&incoming).unwrap();

    let topo = handset();
    // 20 Mbit/s on both links: the transfer takes about 1.6 s, WiFi dies in the middle.
    for link in ["wlan0", "rmnet0"] {
        topo.rate_limit(link, Direction::Both, 20_000).unwrap();
    }
    let exe = built::example("file_transfer");
    let listen = format!("{SERVICE_V4}:4445");
    let mut receiver = Running::start(command(
        topo.server(),
        &exe,
        &[
            "receive",
            "--listen",
            &listen,
            "--cert",
            cert,
            "--key",
            key,
            "--dir",
            incoming.to_str().unwrap(),
        ],
        &dir,
    ));
    receiver.wait_for("the receiver's start", WAIT, |l| {
        l.starts_with("receiving into")
    });
    let mut sender = Running::start(command(
        topo.handset(),
        &exe,
        &["send", file.to_str().unwrap(), &listen, "--ca", cert],
        &dir,
    ));
    sender.wait_for("the start of sending", WAIT, |l| {
        l.starts_with("sending photos.tar (4000000 bytes)") && l.ends_with("on wlan0")
    });
    std::thread::sleep(Duration::from_millis(500));
    topo.link_down("wlan0").unwrap();
    let code = sender.finish(Duration::from_secs(30));
    let said = sender.seen.join("\n");
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("moved wlan0 -> rmnet0"), "{said}");
    assert!(said.contains("sent photos.tar: 4000000 bytes in"), "{said}");
    assert!(said.contains("intact"), "{said}");
    receiver.wait_for("the receiver's account", WAIT, |l| {
        l.starts_with("received photos.tar: 4000000 bytes")
    });
    assert!(
        std::fs::read(incoming.join("photos.tar")).unwrap() == data,
        "the received file differs"
    );
}

#[test]
fn the_apps_own_decision_source_moves_the_session() {
    let Some(_serial) =
        roam_tests::serial::netns_test("the_apps_own_decision_source_moves_the_session")
    else {
        return;
    };
    let dir = Scratch::new("custom-source");
    let (cert, key) = built::certificate(&dir, &[&SERVICE_V4.to_string()]);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let topo = handset();
    let listen = format!("{SERVICE_V4}:4446");
    let mut echo = Running::start(command(
        topo.server(),
        &built::roam(),
        &[
            "serve", "--listen", &listen, "--cert", cert, "--key", key, "--echo", "--json",
        ],
        &dir,
    ));
    echo.wait_for("the echo server's start", WAIT, |l| {
        l.contains("\"listening\"")
    });
    let link =
        |name: &str, kind: &str| format!("{name}={kind}={}", topo.link(name).unwrap().handset_v4);
    let (wlan0, rmnet0) = (link("wlan0", "wifi"), link("rmnet0", "cellular"));
    let mut app = Running::start(command(
        topo.handset(),
        &built::example("custom_source"),
        &[&listen, "--ca", cert, "--link", &wlan0, "--link", &rmnet0],
        &dir,
    ));
    app.wait_for("the first echo", WAIT, |l| {
        l.starts_with("echo via wlan0: ping")
    });
    assert!(
        app.seen
            .iter()
            .any(|l| l == "decisions from the app's own choice"),
        "{:?}",
        app.seen
    );
    app.type_line("use rmnet0");
    app.wait_for("the move", WAIT, |l| {
        l == "path changed: wlan0 -> rmnet0 (primary changed)"
    });
    app.wait_for("an echo over rmnet0", WAIT, |l| {
        l.starts_with("echo via rmnet0: ping")
    });
    app.type_line("drop rmnet0");
    app.wait_for("the move back", WAIT, |l| {
        l.starts_with("path changed: rmnet0 -> wlan0")
    });
    app.wait_for("an echo over wlan0", WAIT, |l| {
        l.starts_with("echo via wlan0: ping")
    });
}
