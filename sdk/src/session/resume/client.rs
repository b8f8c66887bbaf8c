//! The client's side of tcp-resume: the first connection (NEW / WELCOME), and the supervisor
//! that watches the decision and the connection's health through the sans-I/O
//! [`PathManager`], and on a failure reconnects over the best usable interface and resumes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, watch};
use tracing::Instrument;

use super::core::Core;
use super::driver::{ConnView, ResumeStream, Shared, proof, read_frame, run_connection};
use super::wire::{Frame, Secret, SessionId};
use super::{MAGIC, RECV_WINDOW, SEND_BUFFER};
use crate::decision::{DecisionSource, Snapshot};
use crate::error::{Error, Result};
use crate::events::SessionEvent;
use crate::path::LocalPath;
use crate::path::manager::{Action, Config, Input, PathManager, TransportSample};
use crate::session::driver::Handle;
use crate::session::tcp::{StreamProto, connect_bound};
use crate::session::tls_stream::{self, TlsStream};

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
    pub(crate) binder: Option<crate::session::socket::SocketBinder>,
}

/// Starts a new session on `tls` (already connected on `path`): NEW, WELCOME, then the
/// supervisor. Returns the app's stream.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start(
    mut tls: TlsStream<TcpStream>,
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
    let mut pm = PathManager::new(pm_cfg, path.clone(), now);
    pm.handle(now, Input::Paths(decisions.borrow().local_paths(v6)));
    let sup = Supervisor {
        r,
        shared: shared.clone(),
        pm,
        decisions,
        events,
        v6,
        _source: source,
    };
    let span = tracing::Span::current();
    let task = tokio::spawn(sup.run(tls, rest).instrument(span));
    Ok(ResumeStream {
        shared,
        _driver: Handle::new(task.abort_handle()),
    })
}

struct Supervisor {
    r: Resumer,
    shared: Shared,
    pm: PathManager,
    decisions: watch::Receiver<Arc<Snapshot>>,
    events: broadcast::Sender<SessionEvent>,
    v6: bool,
    _source: Arc<dyn DecisionSource>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

type ConnTask = tokio::task::JoinHandle<std::io::Result<()>>;

impl Supervisor {
    fn spawn_conn(&self, tls: TlsStream<TcpStream>, rest: Vec<u8>) -> ConnTask {
        tokio::spawn(run_connection(tls, rest, self.shared.clone()).in_current_span())
    }

    async fn run(mut self, tls: TlsStream<TcpStream>, rest: Vec<u8>) {
        let mut conn = Some(self.spawn_conn(tls, rest));
        let mut source_alive = true;
        let mut keep_alive = tokio::time::interval(self.r.keep_alive);
        loop {
            // Actions first: samples, moves, events.
            while let Some(a) = self.pm.poll_action() {
                match a {
                    Action::Sample => {
                        let s = self.sample();
                        self.pm.handle(now(), Input::Sample(s));
                    }
                    Action::Move { to, reason } => {
                        tracing::info!(%to, %reason, "moving: reconnecting and resuming");
                        if let Some(c) = conn.take() {
                            c.abort();
                        }
                        match self.reconnect(&to).await {
                            Ok(c) => {
                                conn = Some(c);
                                self.pm.handle(now(), Input::Moved(to));
                            }
                            Err(Fatal(e)) => return self.shared.fail(e),
                            Err(Retry(e)) => {
                                tracing::warn!(%to, error = %e, "resuming there failed");
                                self.pm.handle(now(), Input::MoveFailed(to));
                            }
                        }
                    }
                    Action::Warm(_) => {}
                    Action::Event(e) => {
                        let _ = self.events.send(e);
                    }
                }
            }
            if conn.is_none() {
                // No move proposed (every path suspect or the same one): retry on the current
                // path, bounded by the give-up deadline in `retry_current`.
                match self.retry_current().await {
                    Ok(c) => conn = Some(c),
                    Err(e) => return self.shared.fail(e),
                }
                continue;
            }
            let deadline = tokio::time::Instant::from_std(self.pm.poll_timeout());
            tokio::select! {
                r = async { conn.as_mut().expect("checked above").await } => {
                    conn = None;
                    let why = match r {
                        Ok(Ok(())) => {
                            tracing::info!("the peer closed the session");
                            return self.shared.fail("the peer closed the session".into());
                        }
                        Ok(Err(e)) => e.to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::info!(error = %why, path = %self.pm.current(), "connection lost");
                    self.shared.lock().core.detach();
                    let cur = self.pm.current().clone();
                    self.pm.handle(now(), Input::MoveFailed(cur));
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
                    let mut st = self.shared.lock();
                    st.core.ping();
                    self.shared.doorbell.notify_one();
                    drop(st);
                    self.pm.handle(now(), Input::Activity);
                }
                _ = tokio::time::sleep_until(deadline) => self.pm.handle_timeout(now()),
            }
            if self.shared.lock().error.is_some() {
                return;
            }
        }
    }

    fn sample(&self) -> TransportSample {
        let st = self.shared.lock();
        let rtt = st
            .conn
            .as_ref()
            .and_then(|c| c.fd.as_ref())
            .and_then(|fd| crate::mptcp::sockopt::tcp_info(std::os::fd::AsFd::as_fd(fd)).ok())
            .map(|t| Duration::from_micros(t.rtt_us.into()))
            .unwrap_or_default();
        TransportSample {
            ack_eliciting_sent: st.core.eliciting_sent,
            acks_received: st.core.acks_received,
            rtt,
        }
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
        let r = &self.r;
        let attempt = async {
            let sock = connect_bound(to, r.peer, StreamProto::Tcp, r.binder.as_ref())
                .await
                .map_err(|e| Retry(format!("connecting from {to}: {e}")))?;
            let conn_view = ConnView::of(&sock, Some(to.clone()));
            let mut tls = tls_stream::connect(sock, r.tls.clone(), &r.server_name)
                .await
                .map_err(|e| Retry(format!("TLS from {to}: {e}")))?;
            let received = self.shared.lock().core.received();
            let proof = proof(&tls, &r.secret).map_err(|e| Fatal(e.to_string()))?;
            let mut hello = MAGIC.to_vec();
            Frame::Resume {
                id: r.id,
                proof,
                received,
            }
            .encode(&mut hello);
            tls_stream::write_flush(&mut tls, &hello)
                .await
                .map_err(|e| Retry(format!("sending RESUME: {e}")))?;
            let (f, rest) = read_frame(&mut tls)
                .await
                .map_err(|e| Retry(format!("waiting for RESUMED: {e}")))?;
            match f {
                Frame::Resumed { received } => Ok((tls, rest, received, conn_view)),
                Frame::Refused { reason } => Err(Fatal(format!("the listener refused: {reason}"))),
                other => Err(Fatal(format!("expected RESUMED, got {other:?}"))),
            }
        };
        let (tls, rest, peer_received, view) = tokio::time::timeout(r.connect_timeout, attempt)
            .await
            .map_err(|_| {
                Retry(format!(
                    "resuming from {to} took over {:?}",
                    r.connect_timeout
                ))
            })??;
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
        tracing::info!(path = %to, resent, "session resumed");
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

/// Connects a tcp-resume session: over `existing` (an MPTCP connection that fell back, TLS
/// already up) or a fresh TCP connection raced over the candidates.
pub(crate) async fn connect(
    b: crate::session::SessionBuilder,
    p: crate::session::connect::Prepared,
    existing: Option<(LocalPath, TlsStream<TcpStream>)>,
    connect_events: Vec<SessionEvent>,
) -> Result<crate::session::Session> {
    let tls_cfg = Arc::new(b.tls.build(&b.alpn)?);
    let (path, tls) = match existing {
        Some(e) => e,
        None => {
            let (path, sock) = crate::session::tcp::race(
                &p.cands,
                b.attempt_delay,
                StreamProto::Tcp,
                b.binder.clone(),
            )
            .await?;
            let peer = sock
                .peer_addr()
                .map_err(|e| Error::io("reading the peer's address", e))?;
            let tls = tls_stream::connect(sock, tls_cfg.clone(), &p.server_name)
                .await
                .map_err(|e| crate::session::mptcp::tls_connect_error(peer, e))?;
            (path, tls)
        }
    };
    let alpn = tls.alpn();
    if alpn != crate::tls::ALPN {
        return Err(Error::Protocol(
            "tcp-resume needs ALPN roam/1, and the server chose another protocol".into(),
        ));
    }
    let peer = tls
        .get_ref()
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))?;
    let (events, _) = broadcast::channel(64);
    let r = Resumer {
        id: [0; 16],
        secret: [0; 16],
        peer,
        server_name: p.server_name.clone(),
        tls: tls_cfg,
        connect_timeout: b.connect_timeout,
        give_up_after: b.idle_timeout,
        keep_alive: b.keep_alive,
        binder: b.binder.clone(),
    };
    tracing::info!(%path, %peer, "tcp-resume session connecting");
    let stream = start(
        tls,
        path,
        b.app.as_deref(),
        r,
        b.path.clone(),
        p.decisions,
        p.source,
        events.clone(),
    )
    .await?;
    Ok(crate::session::Session {
        inner: crate::session::Inner::Resume(Box::new(stream)),
        events,
        app: b.app,
        alpn,
        transport: crate::session::Transport::TcpResume,
        connect_events,
    })
}
