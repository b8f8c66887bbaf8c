//! The client's side of tcp-resume once connected: NEW / WELCOME ([`start`]), then the
//! supervisor that watches the decision and the connection's health through the sans-I/O
//! [`PathManager`], and on a failure reconnects over the best usable interface and resumes.
//!
//! The connection's health is TCP's own (`progress`): the path manager's stall detector judges
//! the kernel's acknowledgement progress, and the session reports its RTT and its stalls to
//! the decision source as QUIC sessions do. A move away from a path that failed (gone, stalled,
//! connection lost) reconnects at once, the old connection being useless. A move to a better
//! path while the current one works (WiFi back, say) connects there first and switches only
//! once TCP and TLS are up: a path that is not ready, or dark, costs a failed attempt in the
//! background instead of a stream held up until the connect timeout.
//!
//! Where the path manager keeps a backup warm (`multipath interactive`), the supervisor keeps
//! a standby connection there, TCP and TLS up ([`Standby`]): a move to that path then only
//! sends RESUME, the data with it, instead of TCP, TLS and RESUME first.
//!
//! RESUME carries its early flight ([`Core::early_flight`]): the data the old connection did
//! not deliver, and what the app writes until RESUMED comes back, goes out with it instead of
//! a round trip later.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::core::{Core, EARLY_FLIGHT};
use super::driver::{
    ConnError, ConnView, ResumeStream, Shared, Sock, Tls, proof, read_frame, run_connection,
};
use super::progress::{DELAYED_ACK, TcpProgress, TcpReading};
use super::wire::{Frame, Secret, SessionId};
use super::{MAGIC, RECV_WINDOW, SEND_BUFFER};
use crate::decision::{DecisionSource, Snapshot};
use crate::error::{Error, Result};
use crate::net::socket::SocketBinder;
use crate::net::tcp::{StreamProto, connect_bound};
use crate::path::manager::{Action, Config, Input, PathManager, TransportSample};
use crate::transport::TaskHandle;
use crate::transport::report::{report_rtt, report_stall};
use crate::transport::tls_stream;
use crate::vocab::{LocalPath, MigrationReason, SessionEvent};

/// How far before what the old socket never sent an early flight starts: one segment, the
/// last one handed to a device as it went down, which the device may have dropped.
const REWIND_MARGIN: u64 = 1500;

/// What the supervisor needs to reconnect.
pub(crate) struct Resumer {
    pub(crate) id: SessionId,
    pub(crate) secret: Secret,
    pub(crate) peer: SocketAddr,
    pub(crate) server_name: String,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    pub(crate) connect_timeout: Duration,
    /// How long the session may stay without a connection before it gives up.
    pub(crate) give_up_after: Duration,
    pub(crate) keep_alive: Duration,
    /// The app's socket hook, run on every reconnect's socket.
    pub(crate) binder: Option<SocketBinder>,
}

/// Starts a new session on `tls` (already connected on `path`): NEW, WELCOME, then the
/// supervisor. Returns the app's stream.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    mut tls: Tls,
    path: LocalPath,
    app: Option<&str>,
    mut r: Resumer,
    pm_cfg: Config,
    decisions: watch::Receiver<Arc<Snapshot>>,
    source: Arc<dyn DecisionSource>,
    events: broadcast::Sender<SessionEvent>,
) -> Result<ResumeStream> {
    let mut hello = MAGIC.to_vec();
    Frame::New {
        app: app.unwrap_or("").to_owned(),
    }
    .encode(&mut hello);
    tls_stream::write_flush(&mut tls, &hello)
        .await
        .map_err(|e| Error::Stream(format!("starting the resumable session: {e}")))?;
    let (f, rest) = read_frame(&mut tls)
        .await
        .map_err(|e| Error::Protocol(format!("waiting for the listener's WELCOME: {e}")))?;
    let Frame::Welcome { id, secret } = f else {
        return Err(Error::Protocol(format!("expected WELCOME, got {f:?}")));
    };
    r.id = id;
    r.secret = secret;
    let shared = Shared::new(Core::new(SEND_BUFFER, RECV_WINDOW));
    shared.lock().conn = Some(ConnView::of(tls.get_ref(), Some(path.clone())));
    let v6 = r.peer.is_ipv6();
    let now = tokio::time::Instant::now().into_std();
    // The stall detector judges TCP's ACKs, which the peer's kernel may delay longer than a
    // QUIC peer would.
    let pm_cfg = Config {
        max_ack_delay: pm_cfg.max_ack_delay.max(DELAYED_ACK),
        ..pm_cfg
    };
    let mut pm = PathManager::new(pm_cfg, path.clone(), now);
    pm.handle(now, Input::Paths(decisions.borrow().local_paths(v6)));
    let sup = Supervisor {
        r,
        shared: shared.clone(),
        pm,
        decisions,
        events,
        v6,
        source,
        progress: TcpProgress::default(),
        reported: None,
        unsent: None,
    };
    let span = tracing::Span::current();
    let task = tokio::spawn(sup.run(tls, rest).instrument(span));
    Ok(ResumeStream {
        shared,
        _driver: TaskHandle::new(task.abort_handle()),
    })
}

struct Supervisor {
    r: Resumer,
    shared: Shared,
    pm: PathManager,
    decisions: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<SessionEvent>,
    v6: bool,
    /// Keeps the source alive as long as the session, and hears its path reports.
    source: Arc<dyn DecisionSource>,
    progress: TcpProgress,
    /// When the RTT was last reported.
    reported: Option<std::time::Instant>,
    /// Bytes the connection the session left still held unsent (`None`: none left since the
    /// last resumption), for the next early flight.
    unsent: Option<u64>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

type ConnTask = tokio::task::JoinHandle<std::result::Result<(), ConnError>>;
/// A connection being made on a better path, in the background; dropped, it stops.
struct Dialing {
    to: LocalPath,
    task: tokio::task::JoinHandle<std::result::Result<Dialed, Failure>>,
}

impl Drop for Dialing {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a standby connection is kept before it is dialed again: a roam Listener closes a
/// connection that says neither NEW nor RESUME within its header timeout (10 s).
const STANDBY_REFRESH: Duration = Duration::from_secs(8);

/// A connection dialed ahead on the path the path manager keeps warm, not yet carrying the
/// session; it costs a TCP and TLS handshake on that path every [`STANDBY_REFRESH`], so it
/// exists only where the policy asks for a warm backup (`multipath interactive`).
struct Standby {
    dialing: Dialing,
    since: tokio::time::Instant,
}

impl Standby {
    fn new(sup: &Supervisor, to: LocalPath) -> Standby {
        tracing::debug!(%to, "dialing a standby connection");
        Standby {
            dialing: Dialing {
                task: tokio::spawn(sup.dial(&to).in_current_span()),
                to,
            },
            since: tokio::time::Instant::now(),
        }
    }
}

/// A fresh connection with TLS up, not yet carrying the session.
struct Dialed {
    tls: Tls,
    view: ConnView,
}

impl Supervisor {
    fn spawn_conn(&self, tls: Tls, rest: Vec<u8>) -> ConnTask {
        // No silence limit here: the client judges its path by TCP's progress (stalls).
        tokio::spawn(run_connection(tls, rest, self.shared.clone(), None).in_current_span())
    }

    async fn run(mut self, tls: Tls, rest: Vec<u8>) {
        let mut conn = Some(self.spawn_conn(tls, rest));
        let mut dialing: Option<Dialing> = None;
        let mut standby: Option<Standby> = None;
        let mut source_alive = true;
        let mut keep_alive = tokio::time::interval(self.r.keep_alive);
        loop {
            // Actions first: samples, moves, events.
            while let Some(a) = self.pm.poll_action() {
                report_stall(&*self.source, &a, Some(self.pm.current()));
                match a {
                    Action::Sample => {
                        let s = self.sample();
                        let t = now();
                        report_rtt(
                            &*self.source,
                            &mut self.reported,
                            t,
                            self.pm.current(),
                            s.rtt,
                        );
                        self.pm.handle(t, Input::Sample(s));
                    }
                    Action::Move { to, reason } => {
                        // A newer move replaces one still connecting.
                        dialing = None;
                        if conn.is_some() && reason == MigrationReason::PrimaryChanged {
                            tracing::info!(%to, %reason, "moving: connecting there first");
                            let task = tokio::spawn(self.dial(&to).in_current_span());
                            dialing = Some(Dialing { to, task });
                            continue;
                        }
                        tracing::info!(%to, %reason, "moving: reconnecting and resuming");
                        self.leave(&mut conn);
                        self.shared.lock().core.detach();
                        match standby.take() {
                            Some(s) if s.dialing.to == to => {
                                let r = self.resume_standby(&to, s).await;
                                match self.settle(to, r) {
                                    Ok(c) => conn = c,
                                    Err(e) => return self.shared.fail(e),
                                }
                            }
                            other => {
                                standby = other;
                                // In the background: a decision that arrives meanwhile (the
                                // path is dead too, a better one came) replaces this attempt
                                // instead of waiting out its connect timeout.
                                let task = tokio::spawn(self.dial(&to).in_current_span());
                                dialing = Some(Dialing { to, task });
                            }
                        }
                    }
                    Action::Warm(p) => {
                        if standby.as_ref().map(|s| &s.dialing.to) != p.as_ref() {
                            standby = p.map(|to| Standby::new(&self, to));
                        }
                    }
                    Action::Event(e) => {
                        let _ = self.events.send(e.into());
                    }
                    // Asked only of a transport that counts what it receives; this one does
                    // not (`Progress::sample`).
                    Action::Ping => {}
                }
            }
            if conn.is_none() && dialing.is_none() {
                // No move proposed (every path suspect or the same one): retry on the current
                // path, bounded by the give-up deadline in `retry_current`.
                match self.retry_current().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => return self.shared.fail(e),
                }
                continue;
            }
            let deadline = tokio::time::Instant::from_std(self.pm.poll_timeout());
            // tcp-resume sends no `Input::Activity` (a write is not a full window here): the
            // app's first write while the manager rests wakes it instead (`ResumeStream`).
            self.shared
                .resting
                .store(self.pm.resting(now()), std::sync::atomic::Ordering::Relaxed);
            tokio::select! {
                r = async { conn.as_mut().expect("guarded").await }, if conn.is_some() => {
                    conn = None;
                    let why = match r {
                        Ok(Ok(())) => {
                            tracing::info!("the peer closed the session");
                            return self.shared.fail("the peer closed the session".into());
                        }
                        Ok(Err(ConnError::Violation(why))) => {
                            return self.shared.fail(format!("the listener broke the protocol: {why}"));
                        }
                        Ok(Err(ConnError::Lost(e))) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::info!(error = %why, path = %self.pm.current(), "connection lost");
                    // Its socket is gone with what it held: the margin alone.
                    self.unsent = Some(0);
                    self.shared.lock().core.detach();
                    let cur = self.pm.current().clone();
                    self.pm.handle(now(), Input::MoveFailed(cur));
                }
                r = async { (&mut dialing.as_mut().expect("guarded").task).await }, if dialing.is_some() => {
                    let to = dialing.take().expect("guarded").to.clone();
                    let dialed = r.unwrap_or_else(|e| Err(Retry(e.to_string())));
                    let resumed = match dialed {
                        Ok(d) => {
                            // Only now does the stream leave the current connection.
                            self.leave(&mut conn);
                            self.resume_on(&to, d).await
                        }
                        Err(e) => Err(e),
                    };
                    // A failed attempt leaves the current connection as it was.
                    match self.settle(to, resumed) {
                        Ok(Some(c)) => conn = Some(c),
                        Ok(None) => {}
                        Err(e) => return self.shared.fail(e),
                    }
                }
                r = self.decisions.changed(), if source_alive => match r {
                    Ok(()) => {
                        let snap = self.decisions.borrow_and_update().clone();
                        let _ = self.events.send(SessionEvent::DecisionUpdated(snap.decision.clone()));
                        self.pm.handle(now(), Input::Paths(snap.local_paths(self.v6)));
                    }
                    Err(_) => source_alive = false,
                },
                _ = keep_alive.tick() => {
                    // Not `Input::Activity`: that would take a PING held back by a closed
                    // window for a full congestion window; TCP says what is in flight.
                    {
                        let mut st = self.shared.lock();
                        st.core.ping();
                        self.shared.doorbell.notify_one();
                    }
                    if let Some(s) = &standby
                        && s.since.elapsed() >= STANDBY_REFRESH
                    {
                        let to = s.dialing.to.clone();
                        standby = Some(Standby::new(&self, to));
                    }
                }
                _ = tokio::time::sleep_until(deadline) => self.pm.handle_timeout(now()),
                _ = self.shared.woke.notified() => self.pm.handle(now(), Input::Awake),
            }
            if self.shared.lock().error.is_some() {
                return;
            }
        }
    }

    /// Tells the path manager how a move to `to` went: the new connection, `None` after a
    /// failure worth another try elsewhere or later, `Err` when the session cannot go on.
    fn settle(
        &mut self,
        to: LocalPath,
        r: std::result::Result<ConnTask, Failure>,
    ) -> std::result::Result<Option<ConnTask>, String> {
        match r {
            Ok(c) => {
                self.pm.handle(now(), Input::Moved(to));
                Ok(Some(c))
            }
            Err(Fatal(e)) => Err(e),
            Err(Retry(e)) => {
                tracing::warn!(%to, error = %e, "resuming there failed");
                self.pm.handle(now(), Input::MoveFailed(to));
                Ok(None)
            }
        }
    }

    /// Leaves the current connection, noting how many bytes its socket never sent (they did
    /// not reach the listener: the next early flight starts before them).
    fn leave(&mut self, conn: &mut Option<ConnTask>) {
        if let Some(c) = conn.take() {
            let st = self.shared.lock();
            self.unsent = Some(
                st.conn
                    .as_ref()
                    .and_then(|c| c.with_socket(|s| TcpReading::of(std::os::fd::AsFd::as_fd(s))))
                    .and_then(|r| r.ok())
                    .map_or(0, |r| u64::from(r.unsent)),
            );
            drop(st);
            c.abort();
        }
    }

    fn sample(&mut self) -> TransportSample {
        let reading = {
            let st = self.shared.lock();
            st.conn
                .as_ref()
                .and_then(|c| c.with_socket(|s| TcpReading::of(std::os::fd::AsFd::as_fd(s))))
        };
        tracing::trace!(?reading, "TCP progress");
        let reading = reading.and_then(|r| r.ok());
        self.progress.sample(reading.unwrap_or_default())
    }

    /// Reconnects on the current path until it works or the give-up deadline passes.
    async fn retry_current(&mut self) -> std::result::Result<ConnTask, String> {
        let until = tokio::time::Instant::now() + self.r.give_up_after;
        let mut backoff = Duration::from_millis(20);
        for attempt in 0u32.. {
            // The decision may have a better path by now.
            let snap = self.decisions.borrow().clone();
            let to = snap
                .local_paths(self.v6)
                .into_iter()
                .next()
                .unwrap_or_else(|| self.pm.current().clone());
            match self.reconnect(&to).await {
                Ok(c) => {
                    if &to != self.pm.current() {
                        self.pm.handle(now(), Input::Moved(to));
                    }
                    return Ok(c);
                }
                Err(Fatal(e)) => return Err(e),
                Err(Retry(e)) => {
                    tracing::info!(%to, attempt, error = %e, "resuming failed; trying again");
                }
            }
            if tokio::time::Instant::now() + backoff > until {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        Err(format!(
            "no interface could resume the session within {:?}",
            self.r.give_up_after
        ))
    }

    /// A fresh connection on `to`, TLS, RESUME, RESUMED: the session goes on there.
    async fn reconnect(&mut self, to: &LocalPath) -> std::result::Result<ConnTask, Failure> {
        self.shared.lock().core.detach();
        let d = self.dial(to).await?;
        self.resume_on(to, d).await
    }

    /// RESUME on the standby connection dialed ahead on `to`, waiting for its dial if it is
    /// still under way; a standby that failed or went stale (the listener closed it) costs a
    /// fresh [`Supervisor::reconnect`].
    async fn resume_standby(
        &mut self,
        to: &LocalPath,
        mut s: Standby,
    ) -> std::result::Result<ConnTask, Failure> {
        self.shared.lock().core.detach();
        let dialed = (&mut s.dialing.task)
            .await
            .unwrap_or_else(|e| Err(Retry(e.to_string())));
        let r = match dialed {
            Ok(d) => self.resume_on(to, d).await,
            Err(e) => Err(e),
        };
        match r {
            Err(Retry(e)) => {
                tracing::debug!(%to, error = %e, "the standby connection failed: dialing again");
                self.reconnect(to).await
            }
            r => {
                tracing::debug!(%to, age = ?s.since.elapsed(), "resumed on the standby connection");
                r
            }
        }
    }

    /// TCP and TLS from `to`, within the connect timeout; owns what it needs, so it can run in
    /// the background while the session goes on.
    fn dial(
        &self,
        to: &LocalPath,
    ) -> impl std::future::Future<Output = std::result::Result<Dialed, Failure>> + Send + 'static
    {
        let r = &self.r;
        let (to, peer, binder) = (to.clone(), r.peer, r.binder.clone());
        let (tls_cfg, server_name, limit) =
            (r.tls.clone(), r.server_name.clone(), r.connect_timeout);
        let attempt = async move {
            let t0 = tokio::time::Instant::now();
            let sock = connect_bound(&to, peer, StreamProto::Tcp, binder.as_ref())
                .await
                .map_err(|e| Retry(format!("connecting from {to}: {e}")))?;
            let tcp = t0.elapsed();
            let sock = Sock::new(sock);
            let view = ConnView::of(&sock, Some(to.clone()));
            let tls = tls_stream::connect(sock, tls_cfg, &server_name)
                .await
                .map_err(|e| Retry(format!("TLS from {to}: {e}")))?;
            tracing::debug!(%to, ?tcp, tls = ?(t0.elapsed() - tcp), kind = ?tls.handshake_kind(), "dialed");
            Ok(Dialed { tls, view })
        };
        async move {
            tokio::time::timeout(limit, attempt)
                .await
                .map_err(|_| Retry(format!("connecting took over {limit:?}")))?
        }
    }

    /// RESUME on a dialed connection and the listener's RESUMED: the session goes on there.
    async fn resume_on(
        &mut self,
        to: &LocalPath,
        d: Dialed,
    ) -> std::result::Result<ConnTask, Failure> {
        self.shared.lock().core.detach();
        let r = &self.r;
        let Dialed { mut tls, view } = d;
        // Counted once per connection left: a second attempt starts where the first did.
        let rewind = self.unsent.take().map_or(0, |n| n + REWIND_MARGIN);
        let attempt = async {
            let proof = proof(&tls, &r.secret).map_err(|e| Fatal(e.to_string()))?;
            let mut hello = MAGIC.to_vec();
            let mut flight = Vec::new();
            {
                let mut st = self.shared.lock();
                Frame::Resume {
                    id: r.id,
                    proof,
                    received: st.core.received(),
                }
                .encode(&mut hello);
                // The data the old connection did not deliver goes right behind RESUME, in
                // the same round trip, instead of one later, after RESUMED.
                for f in st.core.early_flight(EARLY_FLIGHT, rewind) {
                    f.encode(&mut flight);
                }
            }
            // Two writes, two TLS records: RESUME's own is small, so the listener reads it as
            // soon as it arrives, even if TCP's window holds the end of the flight back.
            tls_stream::write_flush(&mut tls, &hello)
                .await
                .map_err(|e| Retry(format!("sending RESUME: {e}")))?;
            tls_stream::write_flush(&mut tls, &flight)
                .await
                .map_err(|e| Retry(format!("sending RESUME: {e}")))?;
            // Until RESUMED comes, what the app writes joins the flight (within its limit):
            // waiting for the answer would hold it up a round trip.
            let (mut rd, mut wr) = tokio::io::split(tls);
            let (f, rest) = {
                let answer = read_frame(&mut rd);
                tokio::pin!(answer);
                loop {
                    let written = self.shared.doorbell.notified();
                    tokio::select! {
                        r = &mut answer => {
                            break r.map_err(|e| Retry(format!("waiting for RESUMED: {e}")))?;
                        }
                        _ = written => {
                            let mut more = Vec::new();
                            for f in self.shared.lock().core.early_more() {
                                f.encode(&mut more);
                            }
                            if !more.is_empty() {
                                tls_stream::write_flush(&mut wr, &more)
                                    .await
                                    .map_err(|e| Retry(format!("sending RESUME: {e}")))?;
                            }
                        }
                    }
                }
            };
            let tls = rd.unsplit(wr);
            match f {
                Frame::Resumed { received } => Ok((tls, rest, received)),
                Frame::Refused { reason } => Err(Fatal(format!("the listener refused: {reason}"))),
                other => Err(Fatal(format!("expected RESUMED, got {other:?}"))),
            }
        };
        let answered = tokio::time::timeout(r.connect_timeout, attempt)
            .await
            .map_err(|_| {
                Retry(format!(
                    "resuming from {to} took over {:?}",
                    r.connect_timeout
                ))
            })
            .and_then(|r| r);
        let (tls, rest, peer_received) = match answered {
            Ok(a) => a,
            Err(e) => {
                // The early flight went nowhere: it goes out again on the next connection.
                self.shared.lock().core.detach();
                return Err(e);
            }
        };
        let resent = {
            let mut st = self.shared.lock();
            let resent = st
                .core
                .resume(peer_received)
                .map_err(|e| Fatal(format!("the listener's offset is impossible: {e}")))?;
            st.conn = Some(view);
            self.shared.wake_all(&mut st);
            resent
        };
        self.progress.new_connection();
        tracing::info!(path = %to, resent, rewind, peer_received, "session resumed");
        let _ = self.events.send(SessionEvent::Resumed {
            path: Some(to.clone()),
            resent,
        });
        Ok(self.spawn_conn(tls, rest))
    }
}

/// Why a reconnection failed.
enum Failure {
    /// This path, this time: try another or later.
    Retry(String),
    /// The session cannot be resumed anywhere (refused, impossible offsets).
    Fatal(String),
}
use Failure::{Fatal, Retry};
