//! One handover measurement: build a topology, start a system's server and client, pace
//! numbered messages, inject a scenario's failure on the preferred link once traffic flows, and
//! measure the longest pause in delivery around it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use roam_policy::LinkKind;

use crate::emulator::PathConfig;
use crate::inject::Flapper;
use crate::scenario::Scenario;
use crate::system::{ClientCtx, Direction, ServerCtx, System, Task};
use crate::timeline::{LinkSample, Sampler};
use crate::topology::{SERVICE_V4, SERVICE_V6, Topology};
use crate::traffic::{Delivery, MSG_LEN, Recorder, expected_digest};

/// The link every scenario fails: the preferred one.
pub const FAILED_LINK: &str = "wlan0";

/// How one measurement runs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Emulated round-trip time of every path; zero means plain veth, no emulator.
    pub rtt: Duration,
    /// One message every `interval`.
    pub interval: Duration,
    /// Traffic delivered before the failure (as a duration of messages).
    pub warmup: Duration,
    /// How long the application keeps sending after the failure.
    pub after: Duration,
    /// A session that has not delivered everything this long after the failure is dead; its gap
    /// counts as this.
    pub timeout: Duration,
    /// Record per-interface counters for a timeline picture.
    pub sample: bool,
    /// Seed of the emulators' random draws.
    pub seed: u64,
    /// Run over IPv6 (the service's `2001:db8:ffff::1`) instead of IPv4.
    pub ipv6: bool,
    /// Which way the messages flow: the handset sends (up) or receives (down).
    pub direction: Direction,
}

impl RunConfig {
    /// Short runs (`handover-bench --quick`, tests).
    pub fn quick(rtt: Duration) -> Self {
        RunConfig {
            rtt,
            interval: Duration::from_micros(100),
            warmup: Duration::from_millis(300),
            after: Duration::from_millis(1000),
            timeout: Duration::from_secs(3),
            sample: false,
            seed: 1,
            ipv6: false,
            direction: Direction::Up,
        }
    }

    /// The service address of the run's family.
    pub fn service(&self) -> std::net::IpAddr {
        if self.ipv6 {
            SERVICE_V6.into()
        } else {
            SERVICE_V4.into()
        }
    }

    /// Full runs: the same traffic, a longer wait before a session is called dead.
    pub fn full(rtt: Duration) -> Self {
        RunConfig {
            timeout: Duration::from_secs(8),
            after: Duration::from_millis(1500),
            ..Self::quick(rtt)
        }
    }
}

/// What one measurement found.
#[derive(Debug)]
pub struct Outcome {
    /// The scenario run, when it was one of the benchmark's.
    pub scenario: Option<Scenario>,
    /// The system's `system` name.
    pub system: &'static str,
    /// Longest pause in delivery around the failure; the timeout when the session died. The
    /// larger of the longest pause between deliveries and the longest time a message was held
    /// up beyond the usual delay (see [`Delivery::longest_hold_after`]).
    pub gap: Duration,
    /// Messages the application produced.
    pub sent: u64,
    /// Messages delivered in order.
    pub delivered: u64,
    /// Messages damaged, missing or out of order (plus one if the stream digest differs).
    pub corrupted: u64,
    /// Why the session counts as dead, if it does.
    pub session_error: Option<String>,
    /// When the failure was injected.
    pub failed_at: Instant,
    /// Message `n` was due at `paced_from + n * interval`.
    pub paced_from: Instant,
    /// Everything the receiver recorded.
    pub delivery: Delivery,
    /// Server-side interface counters over the run (when sampled), per link of `links`.
    pub samples: Vec<LinkSample>,
    /// Link names in the order of the samples.
    pub links: Vec<String>,
}

impl Outcome {
    /// Bytes the application produced.
    pub fn bytes_sent(&self) -> u64 {
        self.sent * MSG_LEN as u64
    }

    /// Bytes delivered in order.
    pub fn bytes_delivered(&self) -> u64 {
        self.delivered * MSG_LEN as u64
    }
}

/// The two-link handset the benchmark uses (WiFi preferred, cellular as the way out).
pub fn bench_topology(cfg: &RunConfig) -> Result<Topology> {
    let mut b = Topology::builder()
        .link(FAILED_LINK, LinkKind::Wifi)
        .link("rmnet0", LinkKind::Cellular)
        .seed(cfg.seed);
    if !cfg.rtt.is_zero() {
        b = b.emulated(PathConfig::with_rtt(cfg.rtt), PathConfig::with_rtt(cfg.rtt));
    }
    b.build()
}

/// Runs `task` on a current-thread runtime inside `ns` until it ends or `stop` flips; what the
/// task returns after `stop` flipped counts as a clean end.
fn spawn_task(
    ns: &crate::netns::Netns,
    name: &str,
    task: Task,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    ns.spawn(name, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            tokio::select! {
                // An end that comes after the harness stopped the run is the other side
                // going away (a TLS stream without close_notify, say), not a session error.
                r = task => if *stop.borrow() { Ok(()) } else { r },
                _ = stop.changed() => Ok(()),
            }
        })
    })
}

/// Measures `system` through `scenario` once, on a topology of its own.
pub fn run_once(system: Arc<dyn System>, scenario: Scenario, cfg: &RunConfig) -> Result<Outcome> {
    let topo = Arc::new(bench_topology(cfg)?);
    system
        .prepare(&topo)
        .with_context(|| format!("preparing {}", system.name()))?;
    let o = scenario.before(&topo, FAILED_LINK).and_then(|()| {
        run_with(system.clone(), &topo, cfg, |t| {
            scenario.inject(t, FAILED_LINK)
        })
    });
    system.finish();
    let mut o = o?;
    o.scenario = Some(scenario);
    Ok(o)
}

/// What a script does to the topology once traffic flows. It may take its time (the
/// application keeps sending meanwhile) and may leave a flap running, which is waited for.
pub type Script<'a> = Box<dyn FnOnce(&Arc<Topology>) -> Result<Option<Flapper>> + 'a>;

/// Runs `system` on a prepared topology: starts server and client, paces messages (from the
/// client, or with [`Direction::Down`] from the server), runs
/// `script` once `cfg.warmup` worth of messages arrived (that instant is the failure), keeps
/// sending for `cfg.after`, and waits up to `cfg.timeout` after the script for the rest.
pub fn run_with<'a>(
    system: Arc<dyn System>,
    topo: &Arc<Topology>,
    cfg: &RunConfig,
    script: impl FnOnce(&Arc<Topology>) -> Result<Option<Flapper>> + 'a,
) -> Result<Outcome> {
    let recorder = Recorder::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let (seq_tx, seq_rx) = tokio::sync::mpsc::unbounded_channel();
    let (server_seqs, client_seqs) = match cfg.direction {
        Direction::Up => (None, Some(seq_rx)),
        Direction::Down => (Some(seq_rx), None),
    };
    let server_task = system.server(ServerCtx {
        recorder: recorder.clone(),
        seqs: server_seqs,
        ready: ready_tx,
        timeout: cfg.timeout,
        service: cfg.service(),
    });
    let server = spawn_task(topo.server(), "bench-server", server_task, stop_rx.clone())?;
    if ready_rx.recv_timeout(Duration::from_secs(5)).is_err() {
        let _ = stop_tx.send(true);
        let err = match server.join() {
            Ok(Err(e)) => e,
            _ => anyhow!("server did not start within 5 s"),
        };
        return Err(err.context(format!("starting the {} server", system.name())));
    }

    let client_task = system.client(ClientCtx {
        seqs: client_seqs,
        recorder: recorder.clone(),
        timeout: cfg.timeout,
        service: cfg.service(),
    });
    let client = spawn_task(topo.handset(), "bench-client", client_task, stop_rx)?;
    let sampler = if cfg.sample {
        Some(Sampler::start(
            topo,
            Duration::from_millis(2),
            cfg.warmup + cfg.timeout + Duration::from_secs(10),
        )?)
    } else {
        None
    };
    let pacer = Pacer::start(cfg.interval, seq_tx)?;
    let paced_from = pacer.started;

    // The failure comes once the session demonstrably carries traffic.
    let warm = (cfg.warmup.as_nanos() / cfg.interval.as_nanos().max(1)) as u64;
    let warmed = recorder.wait_for(warm, Instant::now() + cfg.warmup + Duration::from_secs(5));
    let result = if warmed < warm {
        Err(anyhow!(
            "the session delivered only {warmed} of {warm} warm-up messages"
        ))
    } else {
        catch_up(&recorder, paced_from, cfg);
        measure(topo, Box::new(script), cfg, &recorder, pacer)
    };
    let _ = stop_tx.send(true);
    let client_result = client
        .join()
        .map_err(|_| anyhow!("client thread panicked"))?;
    let server_result = server
        .join()
        .map_err(|_| anyhow!("server thread panicked"))?;
    let samples = sampler.map(Sampler::finish).unwrap_or_default();
    let (failed_at, sent, flap_result) = result?;
    flap_result?;

    let delivery = recorder.snapshot();
    let mut corrupted = delivery.corrupted;
    if delivery.delivered == sent && corrupted == 0 && delivery.digest != expected_digest(sent) {
        corrupted += 1;
    }
    let mut session_error = None;
    if delivery.delivered < sent {
        session_error = Some(format!(
            "delivered {} of {sent} messages within {:?} of the failure",
            delivery.delivered, cfg.timeout
        ));
    } else if let Err(e) = client_result {
        session_error = Some(format!("client: {e:#}"));
    } else if let Err(e) = server_result {
        session_error = Some(format!("server: {e:#}"));
    }
    let gap = match session_error {
        Some(_) => cfg.timeout,
        None => {
            let pause = delivery
                .longest_pause_after(failed_at)
                .unwrap_or(Duration::ZERO);
            let hold = delivery
                .longest_hold_after(failed_at, paced_from, cfg.interval)
                .unwrap_or(Duration::ZERO);
            pause.max(hold)
        }
    };
    tracing::info!(
        system = system.name(),
        gap_ms = gap.as_secs_f64() * 1000.0,
        sent,
        delivered = delivery.delivered,
        error = session_error.as_deref().unwrap_or(""),
        "measured"
    );
    Ok(Outcome {
        scenario: None,
        system: system.name(),
        gap,
        sent,
        delivered: delivery.delivered,
        corrupted,
        session_error,
        failed_at,
        paced_from,
        delivery,
        samples,
        links: topo.links().iter().map(|l| l.name.clone()).collect(),
    })
}

/// Waits (by delivery events, at most 5 s) until the receiver is within the one-way delay plus
/// 10 ms of what the application produced: the backlog of the handshake and slow start is gone,
/// and stays so for two round trips: the failure meets a session in its steady state.
fn catch_up(recorder: &Recorder, paced_from: Instant, cfg: &RunConfig) {
    let step = cfg.interval.as_nanos().max(1);
    let lag = ((cfg.rtt / 2 + Duration::from_millis(10)).as_nanos() / step) as u64;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = Instant::now();
        let produced = ((now - paced_from).as_nanos() / step) as u64;
        let target = produced.saturating_sub(lag);
        let got = recorder.wait_for(target, deadline.min(now + Duration::from_millis(50)));
        if got >= target {
            // Then stay caught up for two more round trips (slow start is over), waiting on
            // the delivery of the message due then rather than on a clock.
            let settle = Instant::now() + cfg.rtt * 2 + Duration::from_millis(20);
            let due = ((settle - paced_from).as_nanos() / step) as u64;
            recorder.wait_for(due.saturating_sub(lag), deadline);
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                got,
                target,
                "the session never caught up before the failure"
            );
            return;
        }
    }
}

/// Injects the failure, keeps the application sending for `cfg.after`, then waits (bounded by
/// the timeout) for everything sent to arrive. Returns the failure time, messages sent and the
/// flapper's result.
fn measure(
    topo: &Arc<Topology>,
    script: Script<'_>,
    cfg: &RunConfig,
    recorder: &Recorder,
    pacer: Pacer,
) -> Result<(Instant, u64, Result<()>)> {
    let failed_at = Instant::now();
    let flapper = script(topo)?;
    // The application goes on writing through the failure: this wait is the measured window.
    std::thread::sleep(cfg.after.saturating_sub(failed_at.elapsed()));
    let sent = pacer.stop();
    let flap_result = match flapper {
        Some(f) => f.wait().map(|_| ()),
        None => Ok(()),
    };
    let script_done = Instant::now();
    recorder.wait_for(
        sent,
        (failed_at + cfg.timeout).max(script_done + cfg.timeout / 2),
    );
    Ok((failed_at, sent, flap_result))
}

/// Produces sequence numbers at a steady pace on its own thread (tokio's timer has millisecond
/// resolution; messages are due every 100 µs). When the consumer is slow, due numbers are handed
/// over together: the application "wrote" them on time.
struct Pacer {
    /// Message `n` is due at `started + n * interval`.
    started: Instant,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

/// Upper bound of one pacer's life, whatever the caller does.
const PACER_LIMIT: Duration = Duration::from_secs(60);

impl Pacer {
    fn start(
        interval: Duration,
        tx: tokio::sync::mpsc::UnboundedSender<u64>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let started = Instant::now();
        let thread = crate::traffic::pace("pacer", started, interval, PACER_LIMIT, tx, st)?;
        Ok(Pacer {
            started,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops producing; returns how many numbers were produced.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
