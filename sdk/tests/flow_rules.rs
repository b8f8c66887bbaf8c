//! Flow-size rules end to end, read from the server side: with `start on cell then add wifi
//! after 1MB`, a session starts on rmnet0 and, once it has carried 1 MB, wlan0 carries its data
//! too (the server's veth counters of each path).
//!
//! - MPTCP with roamd (userspace path manager): the session reports its flow on its
//!   subscription when it reaches 1 MB, roamd re-evaluates its decision (WiFi added, primary)
//!   and opens a subflow on wlan0 for the registered connection.
//! - QUIC with no roamd: the embedded evaluator takes the same report and publishes a decision
//!   that adds wlan0; today's single-path QUIC moves to it (the decision's new primary), a
//!   multipath one opens a path on it: either way wlan0 carries the data after 1 MB.
//! - tcp-resume with no roamd: one path, so it follows the new primary to wlan0 and says why
//!   (`primary changed`).
//!
//! roamd runs as a real process: this test binary started again to run the helper test
//! `roamd_helper` (`common::start_roamd`).

mod common;

use std::hash::Hasher;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::*;
use roam::{SessionEvent, TransportPreference};
use roam_tests::privilege::require_netns;
use roam_tests::topology::{SERVICE_V4, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The chat app starts on cellular and brings WiFi in once its flow has carried 1 MB.
const FLOW_POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                           app \"com.example.chat\" {\n  start on cell then add wifi after 1MB\n}\n";

/// roamd steering MPTCP subflows (userspace path manager), no routing, no probes.
const AGENT_CONFIG: &str =
    "[routing]\nenabled = false\n\n[mptcp]\nenabled = false\nuserspace = true\n";

/// What the client writes before the test reads the counters: below the 1 MB threshold
/// (the session counts bytes both ways; the server answers only at the end).
const BEFORE: u64 = 600_000;
/// What wlan0 must carry after the threshold.
const ON_WIFI: u64 = 2_000_000;
/// At most this much may reach the server over wlan0 before the threshold: the path is not
/// the session's, only stray neighbour discovery may cross it.
const STRAY: u64 = 16_000;

/// Not a test of its own: roamd in the process the tests start (returns at once otherwise).
#[test]
fn roamd_helper() {
    roam_tests::agent::test_helper_main(|| {});
}

/// What the client tells the test.
#[derive(Debug)]
enum Note {
    Connected(Option<String>),
    /// [`BEFORE`] bytes written.
    Written,
    Event(SessionEvent),
}

/// Bytes the server received over each path: (wlan0, rmnet0).
fn received(topo: &Topology) -> Result<(u64, u64)> {
    Ok((rx_bytes(topo, "wlan0")?, rx_bytes(topo, "rmnet0")?))
}

/// Waits, reading the counters every 10 ms, until `pred` holds for them or [`EVENT_TIMEOUT`]
/// passes; returns the last reading.
fn wait_counters(
    topo: &Topology,
    what: &str,
    pred: impl Fn((u64, u64)) -> bool,
) -> Result<(u64, u64)> {
    let deadline = Instant::now() + EVENT_TIMEOUT;
    loop {
        let now = received(topo)?;
        if pred(now) {
            return Ok(now);
        }
        if Instant::now() > deadline {
            bail!("waiting for {what}: the server received (wlan0, rmnet0) = {now:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The chunk `i` of the stream: numbered, so a lost or repeated chunk changes the hash.
fn chunk(i: u64, buf: &mut [u8]) {
    for (j, b) in buf.iter_mut().enumerate() {
        *b = (i as usize).wrapping_mul(31).wrapping_add(j) as u8;
    }
    buf[..8].copy_from_slice(&i.to_be_bytes());
}

/// One session with [`FLOW_POLICY`]: [`BEFORE`] bytes, the counters read (rmnet0 carried them,
/// wlan0 nothing), then a steady stream until wlan0 has carried [`ON_WIFI`]; every byte checked
/// at the server. Returns the session's events.
fn starts_on_cell_then_adds_wifi(
    topo: &Topology,
    builder: roam::SessionBuilder,
) -> Result<Vec<SessionEvent>> {
    let pki = TestPki::generate()?;
    let (_server_rx, server) = start_server_ready(topo, &pki)?;
    let builder = builder
        .app(APP)
        .tls(pki.roam_client())
        .server_name(SERVER_NAME);
    let (note_tx, note_rx) = mpsc::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let client = topo
        .handset()
        .spawn_async("flow-client", move || async move {
            let mut s = builder.connect(&format!("{SERVICE_V4}:{PORT}")).await?;
            let mut events = s.events();
            let _ = note_tx.send(Note::Connected(s.path().interface));
            let fwd = note_tx.clone();
            tokio::spawn(async move {
                while let Some(e) = events.next().await {
                    let _ = fwd.send(Note::Event(e));
                }
            });
            let mut h = std::hash::DefaultHasher::new();
            let mut buf = vec![0u8; 16 * 1024];
            let mut sent = 0u64;
            let mut i = 0u64;
            while sent < BEFORE {
                chunk(i, &mut buf);
                s.write_all(&buf).await.context("client write")?;
                h.write(&buf);
                sent += buf.len() as u64;
                i += 1;
            }
            let _ = note_tx.send(Note::Written);
            go_rx.await.context("the test went away")?;
            // 16 KiB a millisecond until told to stop (a minute at most).
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let deadline = tokio::time::sleep(Duration::from_secs(60));
            tokio::pin!(deadline, stop_rx);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = &mut deadline => break,
                    _ = tick.tick() => {}
                }
                chunk(i, &mut buf);
                s.write_all(&buf).await.context("client write")?;
                h.write(&buf);
                sent += buf.len() as u64;
                i += 1;
            }
            s.shutdown().await.context("client shutdown")?;
            let mut answer = String::new();
            tokio::time::timeout(EVENT_TIMEOUT, s.read_to_string(&mut answer))
                .await
                .context("no answer from the server")??;
            s.close_and_wait(0, b"done").await;
            ensure!(
                answer == format!("{sent} {}", h.finish()),
                "the server received something else than the {sent} bytes sent: {answer}"
            );
            Ok(sent)
        })?;

    let mut events = Vec::new();
    let mut note = |what: &str, pred: &dyn Fn(&Note) -> bool| -> Result<Note> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match note_rx.recv_timeout(left) {
                Ok(n) if pred(&n) => return Ok(n),
                Ok(Note::Event(e)) => events.push(e),
                Ok(other) => tracing::debug!(?other, "while waiting for {what}"),
                Err(e) => bail!("waiting for {what}: {e}"),
            }
        }
    };
    let connected = note("the session", &|n| matches!(n, Note::Connected(_)))?;
    ensure!(
        matches!(&connected, Note::Connected(Some(i)) if i == "rmnet0"),
        "the session did not start on cellular: {connected:?}"
    );
    note("the first bytes written", &|n| matches!(n, Note::Written))?;
    // Below the threshold: everything went over rmnet0, nothing over wlan0.
    let (wlan, rmnet) = wait_counters(topo, "the first bytes over rmnet0", |(_, r)| r >= BEFORE)?;
    eprintln!("figure: below 1 MB the server received wlan0 {wlan} B, rmnet0 {rmnet} B");
    ensure!(
        wlan <= STRAY,
        "wlan0 carried {wlan} bytes before the flow reached 1 MB"
    );
    let _ = go_tx.send(());
    let t0 = Instant::now();
    let (wlan_after, rmnet_after) = wait_counters(topo, "wlan0 carrying the data", |(w, _)| {
        w >= wlan + ON_WIFI
    })?;
    eprintln!(
        "figure: wlan0 carried {} B within {:?} of passing 1 MB (rmnet0 {} B more)",
        wlan_after - wlan,
        t0.elapsed(),
        rmnet_after - rmnet
    );
    let _ = stop_tx.send(());
    let sent = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?
        .context("client session")?;
    let side = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))?
        .context("server session")?;
    assert_eq!(side.bytes, sent, "bytes lost or duplicated");
    while let Ok(n) = note_rx.try_recv() {
        if let Note::Event(e) = n {
            events.push(e);
        }
    }
    // The decision that added WiFi reached the session.
    let added = events.iter().position(|e| {
        matches!(e, SessionEvent::DecisionUpdated(d)
            if d.paths.iter().any(|p| p.interface == "wlan0"))
    });
    ensure!(
        added.is_some(),
        "no decision adding wlan0 reached the session: {events:?}"
    );
    Ok(events)
}

#[test]
fn mptcp_with_roamd_starts_on_cellular_and_gets_a_wifi_subflow_after_1mb() -> Result<()> {
    if !require_netns("mptcp_with_roamd_starts_on_cellular_and_gets_a_wifi_subflow_after_1mb") {
        return Ok(());
    }
    let _serial = roam_tests::serial::exclusive();
    let topo = two_links()?;
    let agent = start_roamd(&topo, AGENT_CONFIG, FLOW_POLICY)?;
    let events = starts_on_cell_then_adds_wifi(
        &topo,
        roam::Session::builder()
            .roamd_socket(agent.socket())
            .transport(TransportPreference::Mptcp),
    )?;
    ensure!(
        events.iter().any(|e| matches!(e,
            SessionEvent::DecisionSourceChosen { source, .. } if source.starts_with("roamd"))),
        "the session did not follow roamd: {events:?}"
    );
    // The session saw the subflow roamd opened on wlan0.
    ensure!(
        events
            .iter()
            .any(|e| matches!(e, SessionEvent::SubflowsChanged(v)
            if v.iter().any(|s| s.interface.as_deref() == Some("wlan0")))),
        "no subflow on wlan0 in the session's events: {events:?}"
    );
    Ok(())
}

#[test]
fn quic_with_the_embedded_evaluator_adds_wifi_after_1mb() -> Result<()> {
    if !require_netns("quic_with_the_embedded_evaluator_adds_wifi_after_1mb") {
        return Ok(());
    }
    let topo = two_links()?;
    let events = starts_on_cell_then_adds_wifi(
        &topo,
        roam::Session::builder()
            .use_roamd(false)
            .policy(FLOW_POLICY)
            .transport(TransportPreference::Quic),
    )?;
    ensure!(
        events.iter().any(|e| matches!(e,
            SessionEvent::DecisionSourceChosen { source, .. } if source.starts_with("embedded"))),
        "{events:?}"
    );
    Ok(())
}

#[test]
fn tcp_resume_follows_the_primary_the_flow_rule_brings_in() -> Result<()> {
    if !require_netns("tcp_resume_follows_the_primary_the_flow_rule_brings_in") {
        return Ok(());
    }
    let topo = two_links()?;
    let events = starts_on_cell_then_adds_wifi(
        &topo,
        roam::Session::builder()
            .use_roamd(false)
            .policy(FLOW_POLICY)
            .transport(TransportPreference::TcpResume),
    )?;
    ensure!(
        events.iter().any(|e| matches!(e,
            SessionEvent::PathChanged { to, reason: roam::path::MigrationReason::PrimaryChanged, .. }
                if to.interface == "wlan0")),
        "tcp-resume did not say it moved to the new primary: {events:?}"
    );
    Ok(())
}
