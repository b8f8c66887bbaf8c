//! The bridge for real: libroam_android.so, as `cargo test` builds it for the host, loaded by a
//! real JVM running `io.roam.hosttest.HostBridgeTest` (android/java). Java drives link events in
//! and checks the decisions out, the exceptions for bad arguments, closed handles and panics,
//! the socket binder, and a session through the bridge to a roam `Listener` whose data is
//! hashed at both ends. The JVM and the listener run in a network namespace of the test's own
//! whose `wlan0` (a veth, 198.18.0.2) stands in for WiFi, so the test needs root (it says why and
//! passes without, except under CI).
//!
//! Without `javac` and `java` the test says why and passes, except under CI (env `CI` set),
//! where it fails: CI must install a JDK (Debian: `openjdk-17-jdk-headless`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVER_NAME: &str = "server.roam.test";
/// The address of the namespace's `wlan0`, the session's one link.
const WLAN0: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 2);
/// The whole Java run, compile excluded.
const JAVA_TIMEOUT: Duration = Duration::from_secs(120);

fn has(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `target/<profile>`: the test executable is in its `deps/`, the cdylib next to `deps/`.
fn cdylib_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe
        .parent()
        .context("test executable without a directory")?;
    for dir in [deps.parent(), Some(deps)].into_iter().flatten() {
        if dir.join("libroam_android.so").exists() {
            return Ok(dir.to_owned());
        }
    }
    bail!(
        "libroam_android.so is not next to {}; build it with `cargo build -p roam-android`",
        deps.display()
    )
}

fn java_sources(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            java_sources(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "java") {
            out.push(p);
        }
    }
    Ok(())
}

/// A CA and a server certificate it signs.
struct Pki {
    ca: CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

fn pki() -> Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf =
        CertificateParams::new(vec![SERVER_NAME.to_owned()])?.signed_by(&leaf_key, &issuer)?;
    Ok(Pki {
        ca: ca_cert.der().clone(),
        chain: vec![leaf.der().clone()],
        key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
    })
}

/// What the server saw: the SHA-256 of the bytes it received (and echoed), their count, and
/// the app id in the session header.
#[derive(Debug)]
struct Served {
    sha256: String,
    bytes: u64,
    app: Option<String>,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts one session, echoes it to its end while hashing, and reports.
async fn serve(listener: roam::Listener, done: mpsc::Sender<Result<Served>>) {
    let r = async {
        let mut s = listener.accept().await?;
        let app = s.app().map(str::to_owned);
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            s.write_all(&buf[..n]).await?;
            bytes += n as u64;
        }
        s.shutdown().await?;
        let served = Served {
            sha256: hex(h.finish().as_ref()),
            bytes,
            app,
        };
        // Report now; keep the session until the client closes it so the echo's tail is
        // acknowledged rather than cut off.
        let _ = done.send(Ok(served));
        let _ = tokio::time::timeout(Duration::from_secs(10), s.closed()).await;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = r {
        let _ = done.send(Err(e));
    }
}

fn line_value<'a>(out: &'a str, prefix: &str, key: &str) -> Option<&'a str> {
    let line = out.lines().find(|l| l.starts_with(prefix))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn the_bridge_works_from_a_real_jvm() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test("the_bridge_works_from_a_real_jvm") else {
        return Ok(());
    };
    if !has("javac") || !has("java") {
        let why = "javac or java is not on PATH (install a JDK 17: openjdk-17-jdk-headless)";
        if std::env::var_os("CI").is_some() {
            bail!("CI is set and the JVM bridge test cannot run: {why}");
        }
        eprintln!("SKIPPED the_bridge_works_from_a_real_jvm: {why}");
        return Ok(());
    }
    let lib_dir = cdylib_dir()?;
    let work = std::env::temp_dir().join(format!("roam-android-jvm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let classes = work.join("classes");
    std::fs::create_dir_all(&classes)?;

    let java_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("java");
    let mut sources = Vec::new();
    java_sources(&java_root.join("shared"), &mut sources)?;
    java_sources(&java_root.join("host-test"), &mut sources)?;
    let javac = Command::new("javac")
        .args(["-Xlint:all", "-Werror", "-d"])
        .arg(&classes)
        .args(&sources)
        .output()?;
    ensure!(
        javac.status.success(),
        "javac failed:\n{}{}",
        String::from_utf8_lossy(&javac.stdout),
        String::from_utf8_lossy(&javac.stderr)
    );

    let pki = pki()?;
    let ca_file = work.join("ca.der");
    std::fs::write(&ca_file, pki.ca.as_ref())?;
    let tls = roam::tls::server_config(
        pki.chain.clone(),
        PrivateKeyDer::Pkcs8(pki.key.clone_key()),
        &[],
    )?;
    // A namespace whose `wlan0` (one end of a veth pair, 198.18.0.2) stands in for WiFi: roam counts
    // no loopback address as usable, and Android never reports one. The listener and the JVM
    // both run in it; the session goes from wlan0's address to the listener on the same one.
    let ns = roam_tests::netns::Netns::new("j")?;
    ns.ip(&[
        "link", "add", "wlan0", "type", "veth", "peer", "name", "wlan0p",
    ])?;
    ns.ip(&["addr", "add", &format!("{WLAN0}/24"), "dev", "wlan0"])?;
    ns.ip(&["link", "set", "wlan0p", "up"])?;
    ns.ip(&["link", "set", "wlan0", "up"])?;
    let (port_tx, port_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let _server = ns.spawn_async("jvm-listener", move || async move {
        let listener = roam::Listener::bind(SocketAddr::new(WLAN0.into(), 0), tls)?;
        port_tx.send(listener.local_addr()?.port())?;
        serve(listener, done_tx).await;
        anyhow::Ok(())
    })?;
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the listener did not start")?;

    let started = Instant::now();
    let mut java = ns.command("java");
    let mut child = java
        .arg("-Xcheck:jni")
        .arg(format!("-Djava.library.path={}", lib_dir.display()))
        .arg("--add-opens=java.base/sun.nio.ch=ALL-UNNAMED")
        .arg("-cp")
        .arg(&classes)
        .arg("io.roam.hosttest.HostBridgeTest")
        .arg(port.to_string())
        .arg(&ca_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting java")?;
    // Drain both pipes on threads so a chatty JVM cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().context("no stdout")?;
    let mut err_pipe = child.stderr.take().context("no stderr")?;
    // The JVM's stdout reaching end of file is the event that it has exited (or closed it).
    let (eof_tx, eof_rx) = std::sync::mpsc::channel::<()>();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out_pipe, &mut s);
        let _ = eof_tx.send(());
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err_pipe, &mut s);
        s
    });
    if eof_rx
        .recv_timeout(JAVA_TIMEOUT.saturating_sub(started.elapsed()))
        .is_err()
    {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the JVM ran longer than {JAVA_TIMEOUT:?} and was killed");
    }
    let status = child.wait()?;
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    println!("---- java stdout ({:?}) ----\n{stdout}", started.elapsed());
    println!("---- java stderr ----\n{stderr}");
    ensure!(
        status.success(),
        "the JVM test failed ({status}); see its output above"
    );
    ensure!(
        stdout.contains("CHECKS PASSED"),
        "the JVM exited 0 without finishing its checks"
    );
    ensure!(
        !stderr.contains("FATAL ERROR") && !stderr.contains("WARNING in native method"),
        "-Xcheck:jni found misuse of JNI; see stderr above"
    );

    let served = done_rx
        .recv_timeout(Duration::from_secs(10))
        .context("the server never reported")??;
    println!("server: {served:?}");
    let sent = line_value(&stdout, "SENT", "sha256").context("no SENT line")?;
    let got = line_value(&stdout, "RECEIVED", "sha256").context("no RECEIVED line")?;
    let sent_bytes: u64 = line_value(&stdout, "SENT", "bytes")
        .context("no SENT bytes")?
        .parse()?;
    ensure!(
        served.sha256 == sent && served.bytes == sent_bytes,
        "the server received other bytes than Java sent: {served:?} vs {sent} ({sent_bytes} bytes)"
    );
    ensure!(
        served.sha256 == got,
        "Java received other bytes than the server echoed: {got} vs {}",
        served.sha256
    );
    ensure!(
        served.app.as_deref() == Some("com.example.hosttest"),
        "the session header carried app {:?}",
        served.app
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
