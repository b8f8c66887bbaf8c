//! `roam serve --reset-key FILE`: a restarted server given the same key ends its predecessor's
//! QUIC sessions at once (a stateless reset the client verifies), not at their 30 s idle
//! timeout; and a key file that is not a key is one clear line naming it and what to do.

mod built;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use built::{Running, Scratch};
use roam_policy::LinkKind;
use roam_tests::topology::{SERVICE_V4, Topology};

const PORT: u16 = 4443;
/// A session ended by the restarted server's reset must end well before the client's idle
/// timeout (30 s): its keep-alive (every second) meets the reset within about a second.
const AT_ONCE: Duration = Duration::from_secs(6);

/// `roam serve --echo --json --reset-key KEY` in the server namespace, once it listens.
fn serve(topo: &Topology, dir: &Scratch) -> Running {
    let mut serve = topo.server().command(built::roam().to_str().unwrap());
    let addr = format!("{SERVICE_V4}:{PORT}");
    serve
        .args(["serve", "--listen", &addr, "--echo", "--json"])
        .arg("--cert")
        .arg(dir.join("cert.pem"))
        .arg("--key")
        .arg(dir.join("key.pem"))
        .arg("--reset-key")
        .arg(dir.join("reset.key"));
    let mut server = Running::start(serve);
    let listening = server.wait_for("listening line", Duration::from_secs(10), |l| {
        l.contains("\"listening\"")
    });
    assert!(listening.contains(&addr), "{listening}");
    server
}

#[test]
fn a_restarted_serve_with_the_same_reset_key_ends_the_old_quic_session_at_once() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "a_restarted_serve_with_the_same_reset_key_ends_the_old_quic_session_at_once",
    ) else {
        return;
    };
    let dir = Scratch::new("cli-reset");
    built::certificate(&dir, &[&SERVICE_V4.to_string()]);
    // As the help says to make one: `openssl rand -hex 32`.
    let key: String = (0..32).map(|i| format!("{:02x}", i * 7 + 3)).collect();
    std::fs::write(dir.join("reset.key"), key + "\n").unwrap();
    let topo = Topology::builder()
        .link("wlan0", LinkKind::Wifi)
        .build()
        .unwrap();

    let mut first = serve(&topo, &dir);
    let mut connect = built::connect(topo.handset(), PORT, &dir.0.join("cert.pem"), &dir);
    connect.args(["--transport", "quic"]).stderr(Stdio::piped());
    let mut client = Running::start(connect);
    client.type_line("before the restart");
    let echoed = client.wait_for("the echo", Duration::from_secs(15), |l| {
        l == "before the restart"
    });
    assert_eq!(echoed, "before the restart");

    // The server dies without a word to its clients, and comes back with the same key.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _second = serve(&topo, &dir);
    let restarted = Instant::now();
    let code = client.finish(Duration::from_secs(40));
    let after = restarted.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut client.child.stderr.take().unwrap(), &mut stderr).unwrap();
    println!("figure: the old QUIC session ended {after:?} after the restart: {stderr}");
    assert_eq!(code, Some(1), "the session should have failed: {stderr}");
    assert!(
        stderr.contains("reset"),
        "ended by the stateless reset: {stderr}"
    );
    assert!(
        after < AT_ONCE,
        "the old session took {after:?} to end (its idle timeout is 30 s): {stderr}"
    );
}

/// Runs `roam ARGS` and returns (exit code, stderr).
fn roam(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(built::roam()).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reset_key_file_that_is_not_a_key_is_one_clear_line() {
    let dir = Scratch::new("cli-reset-bad");
    let (cert, key) = built::certificate(&dir, &["127.0.0.1"]);
    let serve = |reset: &std::path::Path| {
        roam(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--reset-key",
            reset.to_str().unwrap(),
        ])
    };

    let short = dir.join("short.key");
    std::fs::write(&short, "0123abcd\n").unwrap();
    let (code, err) = serve(&short);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "roam serve: --reset-key {}: 8 hexadecimal digits;",
            short.display()
        )),
        "{err}"
    );
    assert!(err.contains("openssl rand -hex 32"), "says how: {err}");

    let missing = dir.join("missing.key");
    let (code, err) = serve(&missing);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "roam serve: cannot read --reset-key {}: ",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("openssl rand -hex 32"), "says how: {err}");
}
