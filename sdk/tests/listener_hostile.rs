//! The Listener under hostile tcp-resume clients and TCP floods (issue 16):
//! - a client that breaks the protocol right after NEW (DATA leaving a gap, a 70,000-byte
//!   frame) ends its session at once, and its TCP connection closes then, not when the grace
//!   period ends;
//! - a client that goes silent after NEW (no pings) loses its connection after the listener's
//!   silence limit, and its session is freed after the grace period;
//! - 1,100 idle TCP connections to a listener limited to 1,024 descriptors do not hold up a
//!   new tcp-resume client.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::*;
use roam::{Listener, TransportPreference};
use roam_tests::privilege::require_netns;
use roam_tests::tls::TestPki;
use roam_tests::topology::{SERVICE_V4, Topology};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;

/// The listener's silence limit for a tcp-resume connection (`SERVER_SILENCE` in
/// sdk/src/transport/resume/accept.rs).
const SERVER_SILENCE: Duration = Duration::from_secs(10);
/// How long the listener may take to close a connection it is done with (at once, really;
/// shorter than the server's own wait, so the client's verdict comes first).
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// A listener with `grace` in the server namespace that accepts one session and reads it
/// until it fails; returns the error and how long after the session's arrival it came.
fn server_reading_one(
    topo: &Topology,
    pki: &TestPki,
    grace: Duration,
    limit: Duration,
) -> Result<JoinHandle<Result<(String, Duration)>>> {
    let tls = pki.roam_server()?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let h = topo.server().spawn("hostile-server", move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let l =
                Listener::bind_with_grace(SocketAddr::new(SERVICE_V4.into(), PORT), tls, grace)?;
            let _ = ready_tx.send(());
            let mut s = tokio::time::timeout(EVENT_TIMEOUT, l.accept())
                .await
                .context("no session arrived")??;
            let t = Instant::now();
            let mut buf = [0u8; 1024];
            loop {
                match tokio::time::timeout(limit, s.read(&mut buf)).await {
                    Err(_) => bail!("the session still stood after {limit:?}"),
                    Ok(Ok(0)) => bail!("the session ended cleanly"),
                    Ok(Ok(_)) => continue,
                    Ok(Err(e)) => return Ok((e.to_string(), t.elapsed())),
                }
            }
        })
    })?;
    ready_rx
        .recv_timeout(EVENT_TIMEOUT)
        .context("the listener did not start")?;
    Ok(h)
}

/// A tcp-resume client speaking the wire format of sdk/RESUME.md by hand: TLS (ALPN roam/1),
/// `RRES`, NEW; returns its TLS stream once the listener's WELCOME arrived, and the WELCOME.
fn hostile_new(
    pki: &TestPki,
    peer: SocketAddr,
) -> Result<(
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    [u8; 37],
)> {
    let mut tls = raw_tls(pki, peer)?;
    let mut msg = b"RRES".to_vec();
    msg.push(0x01); // NEW
    msg.extend_from_slice(&7u32.to_be_bytes());
    msg.extend_from_slice(b"hostile");
    tls.write_all(&msg)?;
    tls.flush()?;
    let mut welcome = [0u8; 5 + 32];
    tls.read_exact(&mut welcome)
        .context("reading the listener's WELCOME")?;
    anyhow::ensure!(
        welcome[..5] == [0x02, 0, 0, 0, 32],
        "not WELCOME: {welcome:?}"
    );
    Ok((tls, welcome))
}

/// Waits up to `limit` for the listener to close `tls`'s connection; returns how long it took.
fn wait_closed(
    tls: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    limit: Duration,
) -> Result<Duration> {
    let t = Instant::now();
    tls.sock.set_read_timeout(Some(limit))?;
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return Ok(t.elapsed()),
            Ok(n) => {
                eprintln!("the listener sent {n} bytes");
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!(
                    "the listener's socket was still open after {:?}",
                    t.elapsed()
                )
            }
            // A reset or an EOF without close_notify: closed too.
            Err(e) => {
                eprintln!("the listener's connection ended: {e}");
                return Ok(t.elapsed());
            }
        }
    }
}

/// After NEW, the client sends `bad`: the session must end as a protocol violation at once
/// and its socket close, though the grace period is 60 s.
fn violation_ends_the_session(name: &str, bad: &[u8]) -> Result<()> {
    if !require_netns(name) {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let server = server_reading_one(&topo, &pki, Duration::from_secs(60), EVENT_TIMEOUT)?;
    let peer = SocketAddr::new(SERVICE_V4.into(), PORT);
    let closed = topo.handset().run(|| -> Result<Duration> {
        let (mut tls, _) = hostile_new(&pki, peer)?;
        tls.write_all(bad)?;
        tls.flush()?;
        wait_closed(&mut tls, CLOSE_LIMIT)
    })??;
    let (why, after) = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    eprintln!(
        "figure: {name}: socket closed after {closed:?}, session over after {after:?}: {why}"
    );
    assert!(why.contains("protocol"), "not a protocol violation: {why}");
    Ok(())
}

#[test]
fn data_leaving_a_gap_ends_the_session_and_closes_its_socket() -> Result<()> {
    // DATA at offset 1000 when the listener expects 0.
    let mut bad = vec![0x10];
    bad.extend_from_slice(&12u32.to_be_bytes());
    bad.extend_from_slice(&1000u64.to_be_bytes());
    bad.extend_from_slice(b"gap!");
    violation_ends_the_session(
        "data_leaving_a_gap_ends_the_session_and_closes_its_socket",
        &bad,
    )
}

#[test]
fn an_oversized_frame_ends_the_session_and_closes_its_socket() -> Result<()> {
    // A DATA frame announcing 70,000 bytes (the limit is 65,544), then some of them.
    let mut bad = vec![0x10];
    bad.extend_from_slice(&70_000u32.to_be_bytes());
    bad.extend_from_slice(&[0u8; 1024]);
    violation_ends_the_session(
        "an_oversized_frame_ends_the_session_and_closes_its_socket",
        &bad,
    )
}

#[test]
fn a_client_silent_after_new_is_dropped_and_its_session_freed() -> Result<()> {
    if !require_netns("a_client_silent_after_new_is_dropped_and_its_session_freed") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let grace = Duration::from_secs(1);
    // The session must be over by the silence limit plus the grace, with room for a busy
    // machine; without a limit it never ends.
    let bound = SERVER_SILENCE + grace + EVENT_TIMEOUT;
    let server = server_reading_one(&topo, &pki, grace, bound)?;
    let peer = SocketAddr::new(SERVICE_V4.into(), PORT);
    let closed = topo.handset().run(|| -> Result<Duration> {
        // NEW, then nothing: no PING, no ACK; the socket stays open on this side.
        let (mut tls, _) = hostile_new(&pki, peer)?;
        wait_closed(&mut tls, SERVER_SILENCE + CLOSE_LIMIT)
    })??;
    let (why, after) = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    eprintln!(
        "figure: silent client: socket closed after {closed:?}, session freed after {after:?}: {why}"
    );
    assert!(
        closed >= SERVER_SILENCE - Duration::from_millis(500),
        "closed after {closed:?}, before the silence limit"
    );
    assert!(why.contains("did not come back"), "{why}");
    Ok(())
}

/// Environment variable naming the directory of the flood test's listener helper.
const FLOOD_DIR: &str = "ROAM_TEST_FLOOD_LISTENER_DIR";
/// The descriptor limit of the listener's process, as in the issue (`ulimit -n 1024`).
const FD_LIMIT: u64 = 1024;
/// Idle TCP connections opened before the real client: more than the listener can hold.
const IDLE: usize = 1100;
/// How long the real client may take to connect (it took 4.19 s without the cap; a few ms
/// with it, on a quiet machine).
const CONNECT_LIMIT: Duration = Duration::from_secs(2);

/// The flood test's listener, as a process of its own (a descriptor limit is per process): a
/// `#[test]` that returns at once unless [`FLOOD_DIR`] names a directory holding `cert.der`
/// and `key.der`; then it lowers its descriptor limit to [`FD_LIMIT`], listens, prints
/// `listener-ready` and holds every session it accepts until it is killed.
#[test]
fn flood_listener_helper() {
    let Some(dir) = std::env::var_os(FLOOD_DIR).map(std::path::PathBuf::from) else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let lim = libc::rlimit {
        rlim_cur: FD_LIMIT,
        rlim_max: FD_LIMIT,
    };
    // SAFETY: setrlimit reads a valid rlimit for the duration of the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let cert = CertificateDer::from(std::fs::read(dir.join("cert.der")).expect("cert.der"));
    let key = PrivatePkcs8KeyDer::from(std::fs::read(dir.join("key.der")).expect("key.der"));
    let tls = roam::tls::server_config(vec![cert], PrivateKeyDer::Pkcs8(key), &[]).expect("tls");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let l = Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls).expect("bind");
        println!("listener-ready");
        let mut held = Vec::new();
        while let Ok(s) = l.accept().await {
            held.push(s);
        }
    });
}

#[test]
fn idle_tcp_connections_past_the_descriptor_limit_hold_up_no_new_client() -> Result<()> {
    if !require_netns("idle_tcp_connections_past_the_descriptor_limit_hold_up_no_new_client") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let dir = std::env::temp_dir().join(format!("roam-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("cert.der"), &pki.chain[0])?;
    std::fs::write(dir.join("key.der"), pki.key_pkcs8_der())?;
    let _listener = HelperProc::start(
        topo.server(),
        "flood_listener_helper",
        (FLOOD_DIR, dir.as_os_str()),
        "listener-ready",
        "ROAM_TEST_LOG",
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _listener = _listener?;
    let peer = SocketAddr::new(SERVICE_V4.into(), PORT);
    let client_tls = pki.roam_client();
    let (opened, took) = topo.handset().block_on(async move {
        // Idle connections: TCP up, then not a byte (no TLS ClientHello).
        let mut idle = Vec::with_capacity(IDLE);
        for _ in 0..IDLE {
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(peer),
            )
            .await
            {
                idle.push(s);
            }
        }
        let t = Instant::now();
        let s = tokio::time::timeout(
            EVENT_TIMEOUT,
            roam::Session::builder()
                .app("com.example.chat")
                .policy(POLICY)
                .use_roamd(false)
                .transport(TransportPreference::TcpResume)
                .tls(client_tls)
                .server_name(SERVER_NAME)
                .connect(&peer.to_string()),
        )
        .await;
        let took = t.elapsed();
        let s = s
            .context("the tcp-resume client did not connect in time")?
            .context("the tcp-resume client failed")?;
        assert_eq!(s.transport(), roam::Transport::TcpResume);
        let opened = idle.len();
        drop(idle);
        Ok::<_, anyhow::Error>((opened, took))
    })??;
    eprintln!(
        "figure: a new tcp-resume client connected in {took:?} after {opened} idle TCP \
         connections to a listener limited to {FD_LIMIT} descriptors"
    );
    assert!(
        took < CONNECT_LIMIT,
        "the new client took {took:?} to connect"
    );
    Ok(())
}

/// Environment variable naming the directory the seed capture writes to.
const SEEDS_DIR: &str = "ROAM_FUZZ_SEEDS";

/// A TLS server (ALPN roam/1) that records what one real client sends inside TLS: after
/// `RRES` and NEW it answers a WELCOME, as a Listener would; it reads until the client's
/// stream ends (EOF, or a tcp-resume FIN frame) and returns everything.
fn record_one_client(pki: &TestPki, listener: std::net::TcpListener) -> Result<Vec<u8>> {
    let cfg = Arc::new(pki.roam_server()?);
    let (sock, _) = listener.accept()?;
    sock.set_read_timeout(Some(EVENT_TIMEOUT))?;
    let mut tls = rustls::StreamOwned::new(rustls::ServerConnection::new(cfg)?, sock);
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let mut welcomed = false;
    loop {
        let n = match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        };
        got.extend_from_slice(&buf[..n]);
        if got.starts_with(b"RRES") && !welcomed && got.len() >= 9 {
            let len = u32::from_be_bytes(got[5..9].try_into()?) as usize;
            if got.len() >= 9 + len {
                let mut welcome = vec![0x02, 0, 0, 0, 32];
                welcome.extend_from_slice(&[0x42; 32]);
                tls.write_all(&welcome)?;
                tls.flush()?;
                welcomed = true;
            }
        }
        // tcp-resume: the stream's FIN frame ends what the client has to say.
        if welcomed && got.windows(5).any(|w| w == [0x13, 0, 0, 0, 8]) {
            break;
        }
    }
    Ok(got)
}

/// Captures fuzz seeds of sdk/fuzz from real runs (a `#[test]` that returns at once unless
/// [`SEEDS_DIR`] names a directory): what the SDK's client sends inside TLS over MPTCP (the
/// session header, then the app's bytes) and over tcp-resume (NEW, DATA, PING, FIN), and
/// the WELCOME a real Listener answers.
#[test]
fn capture_fuzz_seeds() -> Result<()> {
    let Some(dir) = std::env::var_os(SEEDS_DIR).map(std::path::PathBuf::from) else {
        return Ok(());
    };
    let topo = two_links()?;
    let pki = Arc::new(TestPki::generate()?);
    let peer = SocketAddr::new(SERVICE_V4.into(), PORT);
    for (transport, file) in [
        (
            TransportPreference::Mptcp,
            "session_header/sdk_client_mptcp",
        ),
        (
            TransportPreference::TcpResume,
            "resume_frames/sdk_client_new_data_fin",
        ),
    ] {
        // An MPTCP socket, so that the MPTCP client does not fall back to tcp-resume.
        let listener = topo.server().run(|| -> Result<std::net::TcpListener> {
            let s = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::STREAM,
                Some(socket2::Protocol::MPTCP),
            )?;
            s.set_reuse_address(true)?;
            s.bind(&peer.into())?;
            s.listen(8)?;
            Ok(s.into())
        })??;
        let p = pki.clone();
        let (done_tx, done_rx) = mpsc::channel();
        let server = topo.server().spawn("recorder", move || {
            let r = record_one_client(&p, listener);
            let _ = done_tx.send(());
            r
        })?;
        let client_tls = pki.roam_client();
        topo.handset().block_on(async move {
            use tokio::io::AsyncWriteExt;
            let mut s = roam::Session::builder()
                .app("com.example.chat")
                .policy(POLICY)
                .use_roamd(false)
                .transport(transport)
                .tls(client_tls)
                .server_name(SERVER_NAME)
                .connect(&peer.to_string())
                .await?;
            for i in 0..3u8 {
                s.write_all(&[i; 700]).await?;
            }
            s.shutdown().await?;
            // The session stays until the recorder has everything.
            let _ = tokio::task::spawn_blocking(move || done_rx.recv_timeout(EVENT_TIMEOUT)).await;
            drop(s);
            Ok::<_, anyhow::Error>(())
        })??;
        let got = server
            .join()
            .map_err(|_| anyhow::anyhow!("recorder panicked"))??;
        // tcp-resume's frames start after its magic.
        let got = got.strip_prefix(b"RRES").unwrap_or(&got);
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().context("a parent")?)?;
        std::fs::write(&path, got)?;
        eprintln!("captured {} bytes to {}", got.len(), path.display());
    }
    // The WELCOME of a real Listener.
    let server = server_reading_one(&topo, &pki, Duration::from_secs(1), EVENT_TIMEOUT)?;
    let welcome = topo.handset().run(|| -> Result<[u8; 37]> {
        let (mut tls, welcome) = hostile_new(&pki, peer)?;
        tls.write_all(&[0x14, 0, 0, 0, 0])?; // CLOSE: the session ends
        tls.flush()?;
        Ok(welcome)
    })??;
    let _ = server.join();
    let path = dir.join("resume_frames/listener_welcome");
    std::fs::write(&path, welcome)?;
    eprintln!("captured {} bytes to {}", welcome.len(), path.display());
    Ok(())
}

/// This test binary started again inside a namespace to run one helper "test" (the flooded
/// Listener, under its own descriptor limit): the filter names it, an environment variable
/// hands it its arguments, and it prints a ready line when it serves. Killed on drop.
struct HelperProc {
    child: std::process::Child,
}

impl HelperProc {
    fn start(
        ns: &roam_tests::netns::Netns,
        filter: &str,
        env: (&str, &std::ffi::OsStr),
        ready: &str,
        log_var: &str,
    ) -> Result<HelperProc> {
        use std::io::BufRead;
        let exe = std::env::current_exe()?;
        let mut cmd = ns.command(exe.to_str().context("exe path")?);
        cmd.args([filter, "--exact", "--nocapture", "--test-threads=1"])
            .env(env.0, env.1)
            .env(
                "RUST_LOG",
                std::env::var(log_var).unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| format!("starting {filter}"))?;
        let out = child.stdout.take().context("helper stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            // Ends with the process (its stdout closes).
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(());
                }
            }
        });
        let mut p = HelperProc { child };
        if rx.recv_timeout(EVENT_TIMEOUT).is_err() {
            p.kill();
            anyhow::bail!("{filter} did not become ready within {EVENT_TIMEOUT:?}");
        }
        Ok(p)
    }

    /// Kills it (SIGKILL) and reaps it. `ip netns exec` execs the program: the pid is its own.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HelperProc {
    fn drop(&mut self) {
        self.kill();
    }
}
