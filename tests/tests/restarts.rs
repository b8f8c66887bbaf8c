//! Processes dying under live sessions.
//!
//! - roamd killed with SIGKILL while it steers ten MPTCP sessions (routing and MPTCP endpoints
//!   enforced, links probed), then started again: every session keeps delivering, in order and
//!   intact, through the death, the restart and a handover the new roamd steers, and the
//!   handset's rules, routes and MPTCP endpoints end as they were before the kill.
//! - The listener's process restarted (its runtime and sockets gone at once, a new listener on
//!   the same address): QUIC and tcp-resume sessions end with an error that says they cannot go
//!   on, within a bounded time; nothing hangs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roam_tests::agent::{AgentExe, REFLECT_PORT, Reflector, Roamd, probe_section};
use roam_tests::handover::{FAILED_LINK, RunConfig, bench_topology};
use roam_tests::system::roam::{APP, POLICY, PORT};
use roam_tests::tls::{SERVER_NAME, TestPki};
use roam_tests::topology::{SERVICE_V4, Topology};
use roam_tests::traffic::{Recorder, encode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sessions roamd steers when it is killed.
const SESSIONS: usize = 10;
/// One message per session every this long.
const PACE: Duration = Duration::from_millis(5);
/// The bound of every wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

fn exe() -> AgentExe {
    AgentExe::at(env!("CARGO_BIN_EXE_soak-bench"))
}

/// The handset's policy routing and MPTCP endpoints, as `ip` prints them (sorted lines; the
/// local table left out).
fn kernel_state(topo: &Topology) -> String {
    let h = topo.handset();
    let mut out = String::new();
    for args in [
        &["-4", "rule", "show"][..],
        &["-6", "rule", "show"],
        &["-4", "route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["mptcp", "endpoint", "show"],
    ] {
        let text = h.ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e:#}"));
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains("table local"))
            .collect();
        lines.sort_unstable();
        out += &format!("# ip {}\n{}\n", args.join(" "), lines.join("\n"));
    }
    out
}

/// Waits until the handset's kernel state is `want` (roamd applies it from a worker thread,
/// and the kernel sends no event for every part of it).
fn wait_kernel_state(topo: &Topology, want: &str, what: &str, roamd: &Roamd) {
    let end = Instant::now() + WAIT;
    loop {
        let now = kernel_state(topo);
        if now == want {
            return;
        }
        assert!(
            Instant::now() < end,
            "{what}: the kernel state never returned within {WAIT:?}\nwanted:\n{want}\nis:\n{now}\nroamd's log:\n{}",
            roamd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sessions a listener accepted: each one's transport and recorder.
type Sessions = Arc<Mutex<Vec<(roam::Transport, Arc<Recorder>)>>>;

/// The server of the first test: a listener that gives every session a recorder of its own.
struct Server {
    recorders: Sessions,
    errors: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    fn start(topo: &Topology, pki: &TestPki) -> Server {
        let recorders: Sessions = Arc::default();
        let errors: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let tls = pki.roam_server().unwrap();
        let (recs, errs) = (recorders.clone(), errors.clone());
        let thread = topo
            .server()
            .spawn_async("restart-server", move || async move {
                let l = roam::Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
                let _ = ready_tx.send(());
                loop {
                    let mut s = tokio::select! {
                        s = l.accept() => s?,
                        _ = stop_rx.changed() => return Ok(()),
                    };
                    let r = Recorder::new();
                    recs.lock().unwrap().push((s.transport(), r.clone()));
                    let errs = errs.clone();
                    let stop = stop_rx.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            match s.read(&mut buf).await {
                                Ok(0) => return,
                                Ok(n) => r.feed(Instant::now(), &buf[..n]),
                                Err(e) => {
                                    if !*stop.borrow() {
                                        errs.lock().unwrap().push(format!("{e:#}"));
                                    }
                                    return;
                                }
                            }
                        }
                    });
                }
            })
            .unwrap();
        ready_rx.recv_timeout(WAIT).expect("the listener started");
        Server {
            recorders,
            errors,
            stop,
            thread: Some(thread),
        }
    }

    /// Messages delivered so far, per session.
    fn delivered(&self) -> Vec<u64> {
        self.recorders
            .lock()
            .unwrap()
            .iter()
            .map(|(_, r)| r.delivered())
            .collect()
    }

    /// Waits until every one of `n` sessions delivered more than `than` (index by index).
    fn wait_all_beyond(&self, than: &[u64], what: &str) -> Vec<u64> {
        let end = Instant::now() + WAIT;
        loop {
            let now = self.delivered();
            if now.len() == than.len() && now.iter().zip(than).all(|(a, b)| a > b) {
                return now;
            }
            assert!(
                Instant::now() < end,
                "{what}: not every session delivered more within {WAIT:?}: before {than:?}, now {now:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn roamd_killed_under_ten_mptcp_sessions_restarts_and_leaves_the_kernel_as_it_was() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "roamd_killed_under_ten_mptcp_sessions_restarts_and_leaves_the_kernel_as_it_was",
    ) else {
        return;
    };
    let topo = Arc::new(bench_topology(&RunConfig::quick(Duration::ZERO)).unwrap());
    let exe = exe();
    let reflector = Reflector::start(
        topo.server(),
        &exe,
        SocketAddr::new(SERVICE_V4.into(), REFLECT_PORT),
    )
    .unwrap();
    let config = format!(
        "[routing]\nenabled = true\n\n[mptcp]\nenabled = true\n\n{}",
        probe_section(&[reflector.addr()])
    );
    let mut roamd = Roamd::start(topo.handset(), &exe, POLICY, &config).unwrap();
    let pki = TestPki::generate().unwrap();
    let server = Server::start(&topo, &pki);

    // Ten sessions in the handset, each writing a numbered message every PACE until told to
    // stop; each returns how many it wrote, or its error.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let builder = roam::Session::builder()
        .app(APP)
        .policy(POLICY)
        .transport(roam::TransportPreference::Mptcp)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME)
        .connect_timeout(WAIT)
        .idle_timeout(WAIT)
        .roamd_socket(roamd.socket());
    let clients = topo
        .handset()
        .spawn_async("restart-clients", move || async move {
            let mut tasks = Vec::new();
            for _ in 0..SESSIONS {
                let builder = builder.clone();
                let mut stop = stop_rx.clone();
                let mut done = done_rx.clone();
                tasks.push(tokio::spawn(async move {
                    let target = SocketAddr::new(SERVICE_V4.into(), PORT).to_string();
                    let mut s = builder.connect(&target).await?;
                    let mut tick = tokio::time::interval(PACE);
                    let mut seq = 0u64;
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {
                                s.write_all(&encode(seq)).await?;
                                seq += 1;
                            }
                            _ = stop.changed() => break,
                        }
                    }
                    s.flush().await?;
                    // Open until the harness has seen everything arrive.
                    let _ = done.changed().await;
                    anyhow::Ok(seq)
                }));
            }
            let mut sent = Vec::new();
            for t in tasks {
                sent.push(t.await?);
            }
            anyhow::Ok(sent)
        })
        .unwrap();

    let zero = vec![0; SESSIONS];
    let mut counts = server.wait_all_beyond(&zero, "the sessions starting");
    let transports: Vec<_> = server
        .recorders
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.0)
        .collect();
    assert!(
        transports.iter().all(|t| *t == roam::Transport::Mptcp),
        "{transports:?}"
    );
    let before = kernel_state(&topo);
    assert!(
        before.contains("proto 177") || before.contains("lookup"),
        "roamd's routing is in place before the kill:\n{before}"
    );

    // Killed: nothing of roamd's clean-up runs. The sessions go on alone.
    roamd.kill();
    counts = server.wait_all_beyond(&counts, "after roamd was killed");
    counts = server.wait_all_beyond(&counts, "after roamd was killed, later");

    // Back: the same rules, routes and endpoints, replaced rather than duplicated.
    roamd.launch(&[]).unwrap();
    wait_kernel_state(&topo, &before, "after the restart", &roamd);
    counts = server.wait_all_beyond(&counts, "after the restart");

    // The new roamd steers: WiFi goes and returns, the sessions keep delivering, and the
    // kernel ends as it was.
    topo.link_down(FAILED_LINK).unwrap();
    counts = server.wait_all_beyond(&counts, "after wlan0 went down");
    topo.link_up(FAILED_LINK).unwrap();
    wait_kernel_state(&topo, &before, "after wlan0 returned", &roamd);
    server.wait_all_beyond(&counts, "after wlan0 returned");

    let _ = stop_tx.send(true);
    let deadline = Instant::now() + WAIT;
    let mut sent: Vec<u64> = loop {
        // The writers stop at once; their counts come back once the harness says done, so
        // compare what arrived with a bounded wait for the totals to settle.
        std::thread::sleep(Duration::from_millis(200));
        let a = server.delivered();
        std::thread::sleep(Duration::from_millis(200));
        if server.delivered() == a || Instant::now() > deadline {
            // Everything arrived: from now on a session ending is the harness's doing.
            let _ = server.stop.send(true);
            let _ = done_tx.send(true);
            break clients
                .join()
                .unwrap()
                .unwrap()
                .into_iter()
                .map(|r| r.unwrap_or_else(|e| panic!("a session failed: {e:#}")))
                .collect();
        }
    };
    let recs = server.recorders.lock().unwrap().clone();
    let mut delivered: Vec<u64> = recs.iter().map(|(_, r)| r.delivered()).collect();
    for (_, r) in &recs {
        let d = r.snapshot();
        assert_eq!(d.corrupted, 0, "a session's stream was damaged");
    }
    sent.sort_unstable();
    delivered.sort_unstable();
    assert_eq!(delivered, sent, "every message of every session arrived");
    let errors = server.errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "server-side session errors: {errors:?}");
    drop(server);
    drop(roamd);
    drop(reflector);
}

/// A listener on its own thread and runtime: `kill` drops both at once (tasks, sockets and
/// session state gone, as when its process dies; the kernel closes its sockets).
struct Listener {
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    accepted: Arc<Mutex<Vec<roam::Transport>>>,
    recorders: Arc<Mutex<Vec<Arc<Recorder>>>>,
}

impl Listener {
    fn start(topo: &Topology, pki: &TestPki) -> Listener {
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let accepted: Arc<Mutex<Vec<roam::Transport>>> = Arc::default();
        let recorders: Arc<Mutex<Vec<Arc<Recorder>>>> = Arc::default();
        let tls = pki.roam_server().unwrap();
        let (acc, recs) = (accepted.clone(), recorders.clone());
        let thread = topo
            .server()
            .spawn_async("listener", move || async move {
                // One stateless-reset key for every run of this server, as a deployment keeps
                // one: the restarted listener's resets end the old QUIC sessions at once.
                let config = roam::ListenerConfig {
                    stateless_reset_key: Some(RESET_KEY),
                    ..roam::ListenerConfig::default()
                };
                let l = roam::Listener::bind_with(
                    SocketAddr::new(SERVICE_V4.into(), PORT),
                    tls,
                    config,
                )?;
                let _ = ready_tx.send(());
                let serve = async {
                    loop {
                        let mut s = l.accept().await?;
                        acc.lock().unwrap().push(s.transport());
                        let r = Recorder::new();
                        recs.lock().unwrap().push(r.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            while let Ok(n) = s.read(&mut buf).await {
                                if n == 0 {
                                    break;
                                }
                                r.feed(Instant::now(), &buf[..n]);
                            }
                        });
                    }
                };
                tokio::select! {
                    r = serve => r,
                    _ = killed => Ok(()),
                }
            })
            .unwrap();
        ready_rx.recv_timeout(WAIT).expect("the listener started");
        Listener {
            kill: Some(kill),
            thread: Some(thread),
            accepted,
            recorders,
        }
    }

    fn kill(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a session may take to report that its server is gone: its idle timeout and a
/// margin for a loaded machine.
const IDLE: Duration = Duration::from_secs(3);
/// The listener's stateless-reset key, the same for the first run and the restarted one.
const RESET_KEY: [u8; 32] = [7; 32];
const REPORT_BOUND: Duration = Duration::from_secs(10);

#[test]
fn a_restarted_listener_ends_quic_and_tcp_resume_sessions_clearly_and_nothing_hangs() {
    let Some(_serial) = roam_tests::serial::netns_test(
        "a_restarted_listener_ends_quic_and_tcp_resume_sessions_clearly_and_nothing_hangs",
    ) else {
        return;
    };
    let topo = Arc::new(bench_topology(&RunConfig::quick(Duration::ZERO)).unwrap());
    let pki = TestPki::generate().unwrap();
    let mut first = Listener::start(&topo, &pki);

    // Each session writes a message every PACE and reads (the server never writes) until the
    // session fails; it returns how long after the kill it failed and the error.
    let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut clients = Vec::new();
    for pref in [
        roam::TransportPreference::Quic,
        roam::TransportPreference::TcpResume,
    ] {
        let builder = roam::Session::builder()
            .app(APP)
            .policy(POLICY)
            .use_roamd(false)
            .transport(pref)
            .tls(pki.roam_client())
            .server_name(SERVER_NAME)
            .connect_timeout(IDLE)
            .idle_timeout(IDLE);
        let killed_at = killed_at.clone();
        clients.push((
            pref,
            topo.handset()
                .spawn_async("client", move || async move {
                    let target = SocketAddr::new(SERVICE_V4.into(), PORT).to_string();
                    let mut s = builder.connect(&target).await?;
                    let mut tick = tokio::time::interval(PACE);
                    let mut seq = 0u64;
                    let mut buf = [0u8; 64];
                    let work = async {
                        loop {
                            tokio::select! {
                                _ = tick.tick() => {
                                    s.write_all(&encode(seq)).await?;
                                    seq += 1;
                                }
                                r = s.read(&mut buf) => match r {
                                    Ok(0) => anyhow::bail!("the session ended without an error"),
                                    Ok(_) => anyhow::bail!("the server wrote"),
                                    Err(e) => return Err(anyhow::Error::new(e)),
                                }
                            }
                        }
                    };
                    // Bounded: a session that neither fails nor ends has hung.
                    let err = match tokio::time::timeout(Duration::from_secs(60), work).await {
                        Ok(Err(e)) => e,
                        Ok(Ok(())) => unreachable!(),
                        Err(_) => anyhow::bail!("the session hung for 60 s"),
                    };
                    let after = killed_at
                        .lock()
                        .unwrap()
                        .map(|k| k.elapsed())
                        .unwrap_or_default();
                    anyhow::Ok((after, format!("{err:#}")))
                })
                .unwrap(),
        ));
    }
    let end = Instant::now() + WAIT;
    while first
        .recorders
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.delivered() > 20)
        .count()
        < 2
    {
        assert!(
            Instant::now() < end,
            "both sessions deliver before the restart"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut kinds = first.accepted.lock().unwrap().clone();
    kinds.sort_by_key(|t| format!("{t:?}"));
    assert_eq!(kinds, [roam::Transport::Quic, roam::Transport::TcpResume]);

    // The listener's process dies and a new one takes the address.
    *killed_at.lock().unwrap() = Some(Instant::now());
    first.kill();
    let second = Listener::start(&topo, &pki);

    for (pref, c) in clients {
        let (after, err) = c
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("{pref:?}: {e:#}"));
        eprintln!("figure: {pref:?} session reported after {after:?}: {err}");
        assert!(after < REPORT_BOUND, "{pref:?} took {after:?}: {err}");
        // tcp-resume asks the new listener to resume and is refused by name; QUIC gets the
        // new listener's stateless reset (the same key) and ends well before its idle timeout.
        let says = match pref {
            roam::TransportPreference::TcpResume => err.contains("unknown session"),
            _ => err.contains("reset") && after < IDLE,
        };
        assert!(
            says,
            "{pref:?}: the error does not say what happened: {err}"
        );
    }
    // The new listener took none of them for a new session: the data would have restarted.
    assert_eq!(*second.accepted.lock().unwrap(), []);
}
