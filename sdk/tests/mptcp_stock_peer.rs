//! MPTCP steered by roamd against a stock peer: a plain Python TLS echo server on an
//! `IPPROTO_MPTCP` (262) socket in the server namespace, nothing of roam in it. The session
//! (ALPN `echo`, so no session header) sends 1 KiB every 5 ms of a known pattern, reads the
//! echo back and checks every byte; wlan0 goes down mid-stream.
//!
//! The peer runs the kernel's own MPTCP and knows only what the wire tells it: roamd promotes
//! the backup subflow (MP_PRIO), closes the dead one and withdraws its address (REMOVE_ADDR),
//! so the server stops sending on the dead subflow and sends its unacknowledged data again on
//! the live one at once, instead of after its own retransmission timeouts. Two figures per
//! repeat, as the apps feel them: the longest pause of the echo at the client (both
//! directions: up to the server and back) and the longest pause between the server's reads
//! (up only).
//!
//! A last test takes the MPTCP transport to a peer without MPTCP (plain TCP underneath):
//! losing its only path, the session degrades and then fails with a reason, never silently.
//!
//! roamd and the reflector run as real processes: this test binary started again to run the
//! helper test `roamd_helper`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::*;
use roam_tests::agent::{REFLECT_PORT, Reflector, Roamd, probe_section};
use roam_tests::stats::{ms, percentile_duration};
use roam_tests::topology::{SERVICE_V4, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The echo server's port.
const ECHO_PORT: u16 = 5302;
/// One write of this many bytes ...
const CHUNK: usize = 1024;
/// ... every this often (the paced echo of the issue that found the 610 ms pause).
const PACE: Duration = Duration::from_millis(5);
/// The stream runs this long before wlan0 goes down, and this long after (plus
/// [`FLAP_MORE`] when wlan0 comes back and fails again).
const BEFORE: Duration = Duration::from_millis(1000);
const AFTER: Duration = Duration::from_millis(1500);
const FLAP_MORE: Duration = Duration::from_millis(4000);
/// Repeats.
const REPEATS: usize = 8;

/// Not a test of its own: roamd or its reflector in the process the tests start (returns at
/// once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(|| {});
}

/// The byte at stream offset `i`.
fn pattern(i: u64) -> u8 {
    (i % 251) as u8
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The stock echo server: Python's ssl over an MPTCP socket. Prints `ready`, then for each
/// connection that ends `gap MS`: its longest pause between two reads after the first 0.5 s.
struct EchoServer(Child, std::io::Lines<BufReader<std::process::ChildStdout>>);

impl EchoServer {
    fn start(topo: &Topology, pki: &TestPki) -> Result<EchoServer> {
        EchoServer::start_proto(topo, pki, 262)
    }

    /// The same server on protocol `proto`: 262 (MPTCP) or 6 (plain TCP, a peer without
    /// MPTCP).
    fn start_proto(topo: &Topology, pki: &TestPki, proto: u32) -> Result<EchoServer> {
        let script = format!(
            "import socket,ssl,threading,base64,tempfile,time\n\
             def pem(kind,b):\n  \
               t=base64.b64encode(b).decode()\n  \
               return '-----BEGIN %s-----\\n%s\\n-----END %s-----\\n'%(kind,'\\n'.join(t[i:i+64] for i in range(0,len(t),64)),kind)\n\
             d=tempfile.mkdtemp()\n\
             open(d+'/c.pem','w').write(pem('CERTIFICATE',bytes.fromhex('{cert}')))\n\
             open(d+'/k.pem','w').write(pem('PRIVATE KEY',bytes.fromhex('{key}')))\n\
             ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(d+'/c.pem',d+'/k.pem')\n\
             ctx.set_alpn_protocols(['echo'])\n\
             s=socket.socket(socket.AF_INET,socket.SOCK_STREAM,{proto})\n\
             s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('{SERVICE_V4}',{ECHO_PORT})); s.listen(8); print('ready',flush=True)\n\
             def echo(c):\n  \
               gap=0.0; t0=time.monotonic(); last=None\n  \
               try:\n    \
                 c=ctx.wrap_socket(c,server_side=True)\n    \
                 while True:\n      \
                   b=c.recv(65536)\n      \
                   if not b: break\n      \
                   now=time.monotonic()\n      \
                   if last is not None and now-t0>0.5: gap=max(gap,now-last)\n      \
                   last=now; c.sendall(b)\n    \
                 c.unwrap()\n  \
               except Exception as e: print('error',e,flush=True)\n  \
               print('gap',gap*1000,flush=True)\n\
             while True:\n  \
               c,_=s.accept(); threading.Thread(target=echo,args=(c,),daemon=True).start()\n",
            cert = hex(&pki.chain[0]),
            key = hex(pki.key_pkcs8_der()),
        );
        let mut child = topo
            .server()
            .command("/usr/bin/python3")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let first = lines.next().context("the echo server ended")??;
        ensure!(first == "ready", "echo server: {first:?}");
        Ok(EchoServer(child, lines))
    }

    /// The server's longest pause between reads of the last connection.
    fn gap(&mut self) -> Result<Duration> {
        let line = self.1.next().context("the echo server ended")??;
        let Some(v) = line.strip_prefix("gap ") else {
            bail!("echo server: {line}");
        };
        Ok(Duration::from_secs_f64(v.parse::<f64>()? / 1000.0))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// roamd's configuration: the userspace path manager, probes against the reflector.
fn config(reflector: SocketAddr) -> String {
    format!(
        "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n\n{}",
        probe_section(&[reflector])
    )
}

/// What the client tells the test.
#[derive(Debug)]
enum Note {
    /// The backup subflow on rmnet0 is up: the stream may be cut. With the subflows then.
    Ready(Vec<roam::Subflow>),
    /// The session's subflows changed (`SessionEvent::SubflowsChanged`).
    Subflows(Vec<roam::Subflow>),
    /// The run ended: the longest pause of the echo after the cut.
    Done(Duration),
}

/// An established subflow (one with an RTT sample: a subflow still connecting has none) from
/// `ip` that is not one of `old` (local addresses).
fn new_subflow_from(v: &[roam::Subflow], ip: IpAddr, old: &[SocketAddr]) -> bool {
    v.iter()
        .any(|f| f.local.is_some_and(|l| l.ip() == ip && !old.contains(&l)) && !f.rtt.is_zero())
}

/// The next note from the client that is not a [`Note::Subflows`], up to `within`.
fn next_result(rx: &mpsc::Receiver<Note>, within: Duration) -> Result<Note> {
    let deadline = Instant::now() + within;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))? {
            Note::Subflows(_) => {}
            n => return Ok(n),
        }
    }
}

/// One repeat: the echo's longest pause at the client and the server's longest pause
/// between reads, after wlan0 went down. With `twice`, wlan0 comes back, roamd joins a
/// subflow from it again (after the policy's hold) and it fails a second time: that
/// subflow's address has an id of its own (not the initial subflow's 0).
fn run_once(twice: bool) -> Result<(Duration, Duration)> {
    let topo = two_links()?;
    let reflector_at = SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT);
    let _reflector = Reflector::start(topo.server(), &roamd_exe()?, reflector_at)?;
    let roamd: Roamd = start_roamd(&topo, &config(reflector_at), POLICY)?;
    let pki = TestPki::generate()?;
    let mut server = EchoServer::start(&topo, &pki)?;
    let builder = roam::Session::builder()
        .app(APP)
        .roamd_socket(roamd.socket())
        .transport(roam::TransportPreference::Mptcp)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME)
        .alpn("echo");
    let (tx, rx) = mpsc::channel();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_seen = cut.clone();
    let client = topo
        .handset()
        .spawn_async("stock-echo-client", move || async move {
            let s = builder
                .connect(&format!("{SERVICE_V4}:{ECHO_PORT}"))
                .await?;
            ensure!(s.alpn() == b"echo", "ALPN {:?}", s.alpn());
            ensure!(s.transport() == roam::Transport::Mptcp, "{}", s.transport());
            // roamd's backup subflow first. Subscribed before the look at the subflows now,
            // so a change in between is not missed.
            let mut events = s.events();
            let on_rmnet =
                |v: &[roam::Subflow]| v.iter().any(|p| p.interface.as_deref() == Some("rmnet0"));
            let mut subflows = s.paths();
            if !on_rmnet(&subflows) {
                subflows =
                    next_subflows(&mut events, "roamd's subflow on rmnet0", on_rmnet).await?;
            }
            // The test waits on the subflows for roamd's second join from wlan0.
            let fwd = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    if let roam::SessionEvent::SubflowsChanged(v) = e {
                        let _ = fwd.send(Note::Subflows(v));
                    }
                }
            });
            let (mut r, mut w) = tokio::io::split(s);
            let writer = tokio::spawn(async move {
                let mut off = 0u64;
                let mut tick = tokio::time::interval(PACE);
                let end = Instant::now()
                    + BEFORE
                    + AFTER
                    + if twice { FLAP_MORE } else { Duration::ZERO };
                let mut buf = vec![0u8; CHUNK];
                while Instant::now() < end {
                    tick.tick().await;
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = pattern(off + i as u64);
                    }
                    w.write_all(&buf).await?;
                    off += CHUNK as u64;
                }
                w.shutdown().await?;
                anyhow::Ok(off)
            });
            let _ = tx.send(Note::Ready(subflows));
            let mut got = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            let mut last: Option<Instant> = None;
            let mut gap = Duration::ZERO;
            loop {
                let n = tokio::time::timeout(EVENT_TIMEOUT, r.read(&mut buf))
                    .await
                    .context("no echo for 10 s")??;
                if n == 0 {
                    break;
                }
                for (i, b) in buf[..n].iter().enumerate() {
                    ensure!(
                        *b == pattern(got + i as u64),
                        "echo byte {} differs",
                        got + i as u64
                    );
                }
                got += n as u64;
                let now = Instant::now();
                // Pauses count from the last read before the cut on.
                if cut_seen.load(Ordering::Relaxed)
                    && let Some(l) = last
                {
                    gap = gap.max(now - l);
                }
                last = Some(now);
            }
            let sent = writer.await??;
            ensure!(got == sent, "echoed {got} of {sent} bytes");
            let _ = tx.send(Note::Done(gap));
            Ok(())
        })?;
    let first = match rx.recv_timeout(EVENT_TIMEOUT) {
        Ok(Note::Ready(v)) => v,
        other => {
            let e = join(client, "client").err();
            bail!("the client did not start: {other:?} {e:?}");
        }
    };
    // The scenario: wlan0 goes down half of BEFORE into the stream.
    std::thread::sleep(BEFORE / 2);
    cut.store(true, Ordering::Relaxed);
    topo.link_down("wlan0")?;
    if twice {
        // The scenario: wlan0 is down this long before it comes back.
        std::thread::sleep(Duration::from_millis(300));
        let wlan = IpAddr::from(topo.link("wlan0")?.handset_v4);
        let old: Vec<SocketAddr> = first.iter().filter_map(|f| f.local).collect();
        topo.link_up("wlan0")?;
        let deadline = Instant::now() + FLAP_MORE - Duration::from_millis(500);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Note::Subflows(v)) if new_subflow_from(&v, wlan, &old) => break,
                Ok(Note::Subflows(_)) => {}
                other => bail!(
                    "roamd joined no subflow from wlan0 again within {:?} ({other:?}); its \
                     log:\n{}",
                    FLAP_MORE - Duration::from_millis(500),
                    roamd.log()
                ),
            }
        }
        // The scenario: the stream runs 200 ms with wlan0's new subflow before it fails too.
        std::thread::sleep(Duration::from_millis(200));
        topo.link_down("wlan0")?;
    }
    let end = next_result(&rx, BEFORE + AFTER + FLAP_MORE + EVENT_TIMEOUT);
    join(client, "client")?;
    let Ok(Note::Done(gap)) = end else {
        bail!("the client ended without its figure: {end:?}");
    };
    if gap > BOUND {
        // What roamd did, for the assertion that follows.
        eprintln!("echo paused {gap:?}; roamd's log:\n{}", roamd.log());
    }
    Ok((gap, server.gap()?))
}

/// Repeats `run_once(twice)`, prints the figures under `what`, and returns the worst echo
/// pause.
fn measure(what: &str, twice: bool) -> Result<Duration> {
    let (mut echo, mut up) = (Vec::new(), Vec::new());
    for _ in 0..REPEATS {
        let (e, u) = run_once(twice)?;
        echo.push(e);
        up.push(u);
    }
    echo.sort();
    up.sort();
    let fig = |v: &[Duration]| {
        format!(
            "p50 {:.1} p99 {:.1} max {:.1}",
            ms(percentile_duration(v, 50.0)),
            ms(percentile_duration(v, 99.0)),
            ms(percentile_duration(v, 100.0))
        )
    };
    println!(
        "figure: stock MPTCP echo, {what}: echo pause at the client (both directions) ms {} over {REPEATS} repeats",
        fig(&echo)
    );
    println!(
        "figure: stock MPTCP echo, {what}: pause between the server's reads (up) ms {}",
        fig(&up)
    );
    let each: Vec<String> = echo.iter().map(|g| format!("{:.1}", ms(*g))).collect();
    println!(
        "figure: stock MPTCP echo, {what}: every echo pause ms {}",
        each.join(" ")
    );
    Ok(percentile_duration(&echo, 100.0))
}

/// The aim is p99 <= 50 ms (read from the figure); the bound leaves room for a loaded
/// machine and still fails when the peer waits for its own retransmission timeouts (610 to
/// 860 ms when roamd told it nothing).
const BOUND: Duration = Duration::from_millis(250);

#[test]
fn a_stock_mptcp_peer_stops_using_the_dead_subflow_at_once() -> Result<()> {
    let Some(_serial) =
        roam_tests::serial::netns_test("a_stock_mptcp_peer_stops_using_the_dead_subflow_at_once")
    else {
        return Ok(());
    };
    let worst = measure("wlan0 down", false)?;
    assert!(
        worst < BOUND,
        "the echo paused {worst:?}: the stock peer kept sending on the dead subflow"
    );
    Ok(())
}

/// The second loss is of a subflow roamd joined (its address has an id of its own): the
/// peer is told as the first time.
#[test]
fn a_stock_mptcp_peer_is_told_again_when_wifi_fails_a_second_time() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "a_stock_mptcp_peer_is_told_again_when_wifi_fails_a_second_time",
    ) else {
        return Ok(());
    };
    let worst = measure("wlan0 down, back, down again", true)?;
    // Measured here: p50 10.6 / max 14.3 ms at load 3.8, but some repeats took 110-150 ms
    // at load 7-8 (two processes' timing: the return, the hold, the second cut): a wider
    // bound, still far below the 810-860 ms of a peer told nothing.
    let bound = BOUND + Duration::from_millis(150);
    assert!(
        worst < bound,
        "the echo paused {worst:?}: the stock peer kept sending on a dead subflow"
    );
    Ok(())
}

/// The MPTCP transport against a peer without MPTCP (plain TCP underneath) and no roam
/// peer to resume with: WiFi going down raises `Degraded` within the stall threshold, then
/// every write fails within the session's `idle_timeout` with what would have saved it.
#[test]
fn a_plain_tcp_fallback_that_loses_its_path_degrades_then_fails_with_a_reason() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "a_plain_tcp_fallback_that_loses_its_path_degrades_then_fails_with_a_reason",
    ) else {
        return Ok(());
    };
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let _server = EchoServer::start_proto(&topo, &pki, 6)?;
    let bound = Duration::from_secs(2);
    let builder = roam::Session::builder()
        .app(APP)
        .use_roamd(false)
        .idle_timeout(bound)
        .transport(roam::TransportPreference::Mptcp)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME)
        .alpn("echo");
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_seen = cut.clone();
    let client = topo
        .handset()
        .spawn_async("fallback-client", move || async move {
            let s = builder
                .connect(&format!("{SERVICE_V4}:{ECHO_PORT}"))
                .await?;
            ensure!(s.transport() == roam::Transport::Tcp, "{}", s.transport());
            let mut events = s.events();
            let fwd = tx.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    if let roam::SessionEvent::Degraded { path, .. } = e {
                        let _ = fwd.send((Instant::now(), format!("degraded {}", path.interface)));
                    }
                }
            });
            let (mut r, mut w) = tokio::io::split(s);
            // The echo is read and dropped, so the peer's window never closes.
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            });
            let buf = vec![7u8; CHUNK];
            let mut tick = tokio::time::interval(PACE);
            let end = Instant::now() + Duration::from_secs(20);
            while Instant::now() < end {
                tick.tick().await;
                if let Err(e) = w.write_all(&buf).await {
                    ensure!(
                        cut_seen.load(Ordering::Relaxed),
                        "failed before the cut: {e}"
                    );
                    let _ = tx.send((Instant::now(), format!("failed {e}")));
                    return Ok(());
                }
            }
            bail!("the writes never failed")
        })?;
    // The scenario: the stream runs 500 ms before wlan0 goes down.
    std::thread::sleep(Duration::from_millis(500));
    cut.store(true, Ordering::Relaxed);
    let down = Instant::now();
    topo.link_down("wlan0")?;
    let (at, what) = rx
        .recv_timeout(Duration::from_secs(3))
        .context("no Degraded")?;
    println!(
        "figure: plain TCP fallback: {what} {:.0} ms after wlan0 went down",
        ms(at - down)
    );
    ensure!(what == "degraded wlan0", "{what}");
    assert!(
        at - down < Duration::from_secs(1),
        "Degraded {:?} after the loss",
        at - down
    );
    let (at, why) = rx.recv_timeout(bound * 3).context("no error")?;
    let failed = at - down;
    println!(
        "figure: plain TCP fallback: write {why} after {:.0} ms",
        ms(failed)
    );
    assert!(
        failed >= bound && failed < bound + Duration::from_millis(1500),
        "failed {failed:?} after the loss, the bound is {bound:?}"
    );
    for hint in ["plain TCP", "roam peer", "idle_timeout"] {
        assert!(why.contains(hint), "the error does not say {hint:?}: {why}");
    }
    join(client, "client")?;
    Ok(())
}
