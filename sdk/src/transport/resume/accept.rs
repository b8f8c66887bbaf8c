//! The listener's side of tcp-resume: a table of its sessions. A connection whose magic was
//! [`super::MAGIC`] starts a new session (NEW) or resumes a detached one (RESUME, with its proof);
//! a detached session waits out its grace period for its client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

use super::core::Core;
use super::driver::{
    ConnError, ConnView, ResumeStream, Shared, Sock, Tls, proof, proofs_match, read_frame,
    run_connection, write_frame,
};
use super::wire::{Frame, Secret, SessionId};
use super::{RECV_WINDOW, SEND_BUFFER};
use crate::error::{Error, Result};
use crate::transport::tls_stream::TlsStream;
use crate::transport::{Connection, Stream, TaskHandle};
use crate::vocab::{SessionEvent, Transport};

/// A server connection that hears nothing for this long is dropped and the session detaches
/// (then waits out its grace period): its data unacknowledged for this long
/// (`TCP_USER_TIMEOUT`), or no byte from the client for this long (a client pings every
/// keep-alive interval, 1 s by default; one that vanished, or stopped its pings, is freed
/// after this plus the grace period).
pub(crate) const SERVER_SILENCE: Duration = Duration::from_secs(10);

struct Entry {
    secret: Secret,
    attach: mpsc::Sender<(Tls, Vec<u8>, u64)>,
}

/// The listener's table of tcp-resume sessions.
pub(crate) struct Registry {
    grace: Duration,
    sessions: Mutex<HashMap<SessionId, Entry>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("grace", &self.grace)
            .finish()
    }
}

fn random16() -> Result<[u8; 16]> {
    let mut b = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut b)
        .map_err(|_| Error::TlsConfig("the system random generator failed".into()))?;
    Ok(b)
}

impl Registry {
    pub(crate) fn new(grace: Duration) -> Arc<Registry> {
        Arc::new(Registry {
            grace,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles a connection whose magic was [`super::MAGIC`]: a new session (returned), or a
    /// resumption (handed to its session; `None`), or a refusal (an error, after telling the
    /// client why).
    pub(crate) async fn accept(
        self: &Arc<Self>,
        tls: TlsStream<TcpStream>,
        peer: SocketAddr,
    ) -> Result<Option<Connection>> {
        let _ = socket2::SockRef::from(tls.get_ref()).set_tcp_user_timeout(Some(SERVER_SILENCE));
        let mut tls = tls.map_io(Sock::new);
        let (f, rest) = read_frame(&mut tls)
            .await
            .map_err(|e| Error::Protocol(format!("reading the first resume frame: {e}")))?;
        match f {
            Frame::New { app } => self.new_session(tls, rest, app, peer).await.map(Some),
            Frame::Resume {
                id,
                proof: claimed,
                received,
            } => {
                let found = self.table().get(&id).map(|e| (e.secret, e.attach.clone()));
                let ok = match &found {
                    Some((secret, _)) => {
                        let expected =
                            proof(&tls, secret).map_err(|e| Error::io("TLS exporter", e))?;
                        proofs_match(&expected, &claimed)
                    }
                    None => false,
                };
                match (ok, found) {
                    (true, Some((_, attach))) => {
                        tracing::info!(%peer, received, "resumption accepted");
                        attach
                            .send((tls, rest, received))
                            .await
                            .map_err(|_| Error::Resume("the session ended meanwhile".into()))?;
                        Ok(None)
                    }
                    _ => {
                        // One answer for an unknown id and a wrong proof: a stranger learns
                        // nothing about which sessions exist.
                        let _ = write_frame(
                            &mut tls,
                            &Frame::Refused {
                                reason: "unknown session or wrong proof".into(),
                            },
                        )
                        .await;
                        Err(Error::Resume(format!(
                            "refused a resumption attempt from {peer}: unknown session or wrong proof"
                        )))
                    }
                }
            }
            other => Err(Error::Protocol(format!(
                "expected NEW or RESUME first, got {other:?}"
            ))),
        }
    }

    async fn new_session(
        self: &Arc<Self>,
        mut tls: Tls,
        rest: Vec<u8>,
        app: String,
        peer: SocketAddr,
    ) -> Result<Connection> {
        let (id, secret) = (random16()?, random16()?);
        write_frame(&mut tls, &Frame::Welcome { id, secret })
            .await
            .map_err(|e| Error::Stream(format!("sending WELCOME: {e}")))?;
        let shared = Shared::new(Core::new(SEND_BUFFER, RECV_WINDOW));
        shared.lock().conn = Some(ConnView::of(tls.get_ref(), None));
        let (attach, attach_rx) = mpsc::channel(4);
        self.table().insert(id, Entry { secret, attach });
        let (events, _) = broadcast::channel(64);
        let alpn = tls.alpn();
        let span = tracing::info_span!("resume-session", %peer);
        let task = tokio::spawn(
            serve(
                self.clone(),
                id,
                shared.clone(),
                events.clone(),
                tls,
                rest,
                attach_rx,
            )
            .instrument(span),
        );
        let app = (!app.is_empty()).then_some(app);
        Ok(Connection {
            stream: Stream::Resume(Box::new(ResumeStream {
                shared,
                _driver: TaskHandle::new(task.abort_handle()),
            })),
            events,
            app,
            alpn,
            transport: Transport::TcpResume,
            connect_events: Vec::new(),
        })
    }

    fn forget(&self, id: &SessionId) {
        self.table().remove(id);
    }
}

/// The listener's side of one session: runs its connection; when it fails, waits up to the
/// grace period for the client to resume, then frees the session.
async fn serve(
    reg: Arc<Registry>,
    id: SessionId,
    shared: Shared,
    events: broadcast::Sender<SessionEvent>,
    tls: Tls,
    rest: Vec<u8>,
    mut attach: mpsc::Receiver<(Tls, Vec<u8>, u64)>,
) {
    // However this task ends (the session dropped, the grace run out), the id goes.
    let _forget = Forget(reg.clone(), id);
    let run = |tls, rest| {
        tokio::spawn(
            run_connection(tls, rest, shared.clone(), Some(SERVER_SILENCE)).in_current_span(),
        )
    };
    let mut conn = Some(run(tls, rest));
    let mut detached_at: Option<tokio::time::Instant> = None;
    // Bounded: each turn ends on a connection event, an attachment or the grace deadline.
    loop {
        let grace_end = detached_at.map(|t| t + reg.grace);
        tokio::select! {
            r = async { conn.as_mut().expect("guarded").await }, if conn.is_some() => {
                conn = None;
                match r {
                    Ok(Ok(())) => {
                        // CLOSE: the session is over on purpose.
                        reg.forget(&id);
                        shared.fail("the client closed the session".into());
                        return;
                    }
                    Ok(Err(ConnError::Violation(why))) => {
                        // Not a network failure: resuming would replay the same bytes.
                        reg.forget(&id);
                        shared.fail(format!("the client broke the protocol: {why}"));
                        return;
                    }
                    Ok(Err(ConnError::Lost(e))) => tracing::info!(error = %e, "connection lost; session detached"),
                    Err(e) => tracing::info!(error = %e, "connection task ended"),
                }
                shared.lock().detach();
                detached_at = Some(tokio::time::Instant::now());
            }
            a = attach.recv() => {
                let Some((mut tls, rest, peer_received)) = a else { return };
                if let Some(c) = conn.take() {
                    // The old connection may still look alive (a silent blackhole): the
                    // client knows better.
                    c.abort();
                }
                let (resent, received) = {
                    let mut st = shared.lock();
                    st.core.detach();
                    // The client's early flight may follow its RESUME.
                    let r = st.core.resume_listener(peer_received);
                    st.conn = Some(ConnView::of(tls.get_ref(), None));
                    (r, st.core.received())
                };
                let resent = match resent {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = write_frame(&mut tls, &Frame::Refused { reason: e.to_string() }).await;
                        reg.forget(&id);
                        shared.fail(format!("the client's resume offset is impossible: {e}"));
                        return;
                    }
                };
                if let Err(e) = write_frame(&mut tls, &Frame::Resumed { received }).await {
                    tracing::info!(error = %e, "sending RESUMED failed; still detached");
                    shared.lock().detach();
                    detached_at.get_or_insert_with(tokio::time::Instant::now);
                    continue;
                }
                {
                    let mut st = shared.lock();
                    shared.wake_all(&mut st);
                }
                tracing::info!(resent, "session resumed");
                let _ = events.send(SessionEvent::Resumed { path: None, resent });
                detached_at = None;
                conn = Some(run(tls, rest));
            }
            _ = async { tokio::time::sleep_until(grace_end.expect("guarded")).await }, if grace_end.is_some() => {
                reg.forget(&id);
                shared.fail(format!("the client did not come back within {:?}", reg.grace));
                return;
            }
        }
    }
}

/// Removes a session from the registry when dropped.
struct Forget(Arc<Registry>, SessionId);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.forget(&self.1);
    }
}
