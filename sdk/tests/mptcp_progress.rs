//! An MPTCP session judged by its own progress, in namespaces (handset and server, wlan0 and
//! rmnet0), against a roam Listener:
//!
//! - with no way to survive a loss (no roamd, no kernel endpoint: one subflow), WiFi going
//!   down raises `Degraded` within the stall threshold and then fails every write with an error
//!   that says what would have saved it, within the session's `idle_timeout`: never a silent
//!   block;
//! - with the kernel's path manager alone (rmnet0 a `subflow backup` endpoint), when the kernel
//!   moves the stream to rmnet0 the session says so (`PathChanged`) and `path()` names rmnet0:
//!   the carrier is the subflow whose bytes move, whoever moved it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::*;
use roam::{SessionEvent, TransportPreference};
use roam_tests::topology::{SERVICE_V4, Topology};
use tokio::io::AsyncWriteExt;

/// What the client tells the test.
#[derive(Debug)]
enum Note {
    /// Connected on this interface.
    Connected(Option<String>),
    /// A session event and when it came.
    Event(Instant, SessionEvent),
    /// `path().interface` and the interfaces of `paths()`, every 50 ms.
    Path(Option<String>, Vec<Option<String>>),
    /// A write failed: when, and the error's text.
    Failed(Instant, String),
}

/// Starts an MPTCP session from the handset that writes 16 KiB a millisecond until `stop`
/// (or 30 s), reporting to `notes`.
fn start_client(
    topo: &Topology,
    builder: roam::SessionBuilder,
    notes: mpsc::Sender<Note>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<Result<()>>> {
    topo.handset()
        .spawn_async("roam-client", move || async move {
            let target = format!("{SERVICE_V4}:{PORT}");
            let mut s = builder.connect(&target).await?;
            let _ = notes.send(Note::Connected(s.path().interface));
            let mut events = s.events();
            let fwd = notes.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    let _ = fwd.send(Note::Event(Instant::now(), e));
                }
            });
            let chunk = vec![7u8; 16 * 1024];
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut told = Instant::now();
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                tick.tick().await;
                if told.elapsed() >= Duration::from_millis(50) {
                    told = Instant::now();
                    let ifaces = s.paths().into_iter().map(|p| p.interface).collect();
                    let _ = notes.send(Note::Path(s.path().interface, ifaces));
                }
                // A write blocked on a dead path is bounded by the session itself.
                if let Err(e) = s.write_all(&chunk).await {
                    let _ = notes.send(Note::Failed(Instant::now(), e.to_string()));
                    return Ok(());
                }
            }
            Ok(())
        })
}

/// Waits for a note matching `pred`, up to `within`.
fn wait_note(
    rx: &mpsc::Receiver<Note>,
    what: &str,
    within: Duration,
    mut pred: impl FnMut(&Note) -> bool,
) -> Result<Note> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) if pred(&n) => return Ok(n),
            Ok(_) => {}
            Err(_) => bail!("no {what} within {within:?}"),
        }
    }
}

fn builder(pki: &TestPki, idle: Duration) -> roam::SessionBuilder {
    chat(roam::Session::builder(), pki)
        .transport(TransportPreference::Mptcp)
        .use_roamd(false)
        .idle_timeout(idle)
}

#[test]
fn an_mptcp_session_that_cannot_survive_a_loss_degrades_then_fails_with_a_reason() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "an_mptcp_session_that_cannot_survive_a_loss_degrades_then_fails_with_a_reason",
    ) else {
        return Ok(());
    };
    let topo = two_links()?;
    let pki = TestPki::generate()?;
    let (server_rx, _server) = start_server_ready(&topo, &pki)?;
    let bound = Duration::from_secs(2);
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let client = start_client(&topo, builder(&pki, bound), tx, stop.clone())?;
    let c = wait_note(&rx, "connection", EVENT_TIMEOUT, |n| {
        matches!(n, Note::Connected(_))
    })?;
    ensure!(
        matches!(&c, Note::Connected(Some(i)) if i == "wlan0"),
        "{c:?}"
    );
    wait_server_sees(&server_rx, topo.link("wlan0")?.handset_v4.into())?;
    let down = Instant::now();
    topo.link_down("wlan0")?;
    // The stall threshold at this RTT is 60 ms, read every 50 ms; generous for a loaded CI.
    let Note::Event(at, SessionEvent::Degraded { path, .. }) =
        wait_note(&rx, "Degraded", Duration::from_secs(3), |n| {
            matches!(n, Note::Event(_, SessionEvent::Degraded { .. }))
        })?
    else {
        unreachable!()
    };
    let degraded = at - down;
    println!(
        "figure: Degraded {:.0} ms after wlan0 went down",
        ms(degraded)
    );
    assert_eq!(path.interface, "wlan0");
    assert!(
        degraded < Duration::from_secs(1),
        "Degraded came {degraded:?} after the loss"
    );
    let Note::Failed(at, why) = wait_note(&rx, "the write's error", bound * 3, |n| {
        matches!(n, Note::Failed(..))
    })?
    else {
        unreachable!()
    };
    let failed = at - down;
    println!(
        "figure: the write failed {:.0} ms after wlan0 went down: {why}",
        ms(failed)
    );
    assert!(
        failed >= bound && failed < bound + Duration::from_millis(1500),
        "failed {failed:?} after the loss, the bound is {bound:?}"
    );
    for hint in ["no progress", "roamd", "ip mptcp endpoint", "roam peer"] {
        assert!(why.contains(hint), "the error does not say {hint:?}: {why}");
    }
    stop.store(true, Ordering::Relaxed);
    join(client, "client")?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn the_carrying_subflow_is_the_one_whose_bytes_move_whoever_moved_it() -> Result<()> {
    let Some(_serial) = roam_tests::serial::netns_test(
        "the_carrying_subflow_is_the_one_whose_bytes_move_whoever_moved_it",
    ) else {
        return Ok(());
    };
    let topo = two_links()?;
    // The kernel's path manager alone moves the stream: rmnet0 a backup endpoint.
    let rmnet = topo.link("rmnet0")?;
    topo.handset().ip(&[
        "mptcp",
        "endpoint",
        "add",
        &rmnet.handset_v4.to_string(),
        "dev",
        "rmnet0",
        "subflow",
        "backup",
    ])?;
    let pki = TestPki::generate()?;
    let (server_rx, _server) = start_server_ready(&topo, &pki)?;
    let (tx, rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let client = start_client(
        &topo,
        builder(&pki, Duration::from_secs(30)),
        tx,
        stop.clone(),
    )?;
    wait_server_sees(&server_rx, topo.link("wlan0")?.handset_v4.into())?;
    // Both subflows up, wlan0 carrying: path() says wlan0.
    let n = wait_note(
        &rx,
        "both subflows, wlan0 carrying",
        EVENT_TIMEOUT,
        |n| matches!(n, Note::Path(Some(c), all) if c == "wlan0" && all.len() == 2),
    )?;
    println!("before: {n:?}");
    topo.link_down("wlan0")?;
    // The kernel gives up on wlan0's subflow by itself (its stale detection) and sends on
    // the backup: the session tells, and path() follows.
    let moved = wait_note(
        &rx,
        "PathChanged to rmnet0",
        EVENT_TIMEOUT,
        |n| matches!(n, Note::Event(_, SessionEvent::PathChanged { to, .. }) if to.interface == "rmnet0"),
    )?;
    println!("moved: {moved:?}");
    if let Note::Event(_, SessionEvent::PathChanged { from, .. }) = &moved {
        assert_eq!(from.as_ref().map(|f| f.interface.as_str()), Some("wlan0"));
    }
    wait_note(
        &rx,
        "path() on rmnet0",
        Duration::from_secs(2),
        |n| matches!(n, Note::Path(Some(c), _) if c == "rmnet0"),
    )?;
    // And it stays there: no event says otherwise while wlan0 is down.
    let settle = Instant::now() + Duration::from_millis(500);
    while let Ok(n) = rx.recv_timeout(settle.saturating_duration_since(Instant::now())) {
        match n {
            Note::Path(c, _) => ensure!(c.as_deref() == Some("rmnet0"), "path() said {c:?}"),
            Note::Event(_, SessionEvent::PathChanged { to, .. }) => {
                bail!("moved again, to {to}")
            }
            Note::Failed(_, why) => bail!("the session failed: {why}"),
            _ => {}
        }
    }
    stop.store(true, Ordering::Relaxed);
    join(client, "client").context("the client")?;
    Ok(())
}
