//! The tcp-resume transport (sdk/RESUME.md): a session layer over TLS on TCP with a session
//! id, byte offsets and acknowledgements, that resumes over a fresh TCP connection.
//!
//! - `wire`: the frames.
//! - `core`: the stream state machine, sans I/O, with its tests.
//! - `driver`: the connection tasks and the app's stream.
//! - `client`: the first connection and the supervisor that reconnects.
//! - `progress`: TCP's acknowledgement progress in the path manager's terms (stalls).
//! - [`Registry`] (here): the listener's sessions, new ones, resumptions, forged attempts and
//!   the grace period of a detached session.

mod client;
mod core;
mod driver;
mod progress;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tracing::Instrument;

pub(crate) use client::connect as connect_client;
pub(crate) use driver::ResumeStream;

use self::core::Core;
use self::driver::{
    ConnView, Shared, proof, proofs_match, read_frame, run_connection, write_frame,
};
use self::wire::{Frame, Secret, SessionId};
use super::tls_stream::TlsStream;
use super::{Inner, Session, Transport};
use crate::error::{Error, Result};
use crate::events::SessionEvent;

/// The first four bytes of a tcp-resume connection (inside TLS).
pub(crate) const MAGIC: &[u8; 4] = b"RRES";
/// How long a listener keeps a detached session by default.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Bytes an end keeps until the peer acknowledges them.
pub(crate) const SEND_BUFFER: usize = 4 << 20;
/// The receive window: bytes received and not yet read by the app.
pub(crate) const RECV_WINDOW: u64 = 4 << 20;
/// A server connection that hears nothing for this long is dropped (the session detaches).
const SERVER_USER_TIMEOUT: Duration = Duration::from_secs(10);

struct Entry {
    secret: Secret,
    attach: mpsc::Sender<(TlsStream<TcpStream>, Vec<u8>, u64)>,
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

    /// Handles a connection whose magic was [`MAGIC`]: a new session (returned), or a
    /// resumption (handed to its session; `None`), or a refusal (an error, after telling the
    /// client why).
    pub(crate) async fn accept(
        self: &Arc<Self>,
        mut tls: TlsStream<TcpStream>,
        peer: SocketAddr,
    ) -> Result<Option<Session>> {
        let _ =
            socket2::SockRef::from(tls.get_ref()).set_tcp_user_timeout(Some(SERVER_USER_TIMEOUT));
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
        mut tls: TlsStream<TcpStream>,
        rest: Vec<u8>,
        app: String,
        peer: SocketAddr,
    ) -> Result<Session> {
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
        Ok(Session {
            inner: Inner::Resume(Box::new(ResumeStream {
                shared,
                _driver: super::driver::Handle::new(task.abort_handle()),
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
    tls: TlsStream<TcpStream>,
    rest: Vec<u8>,
    mut attach: mpsc::Receiver<(TlsStream<TcpStream>, Vec<u8>, u64)>,
) {
    // However this task ends (the session dropped, the grace run out), the id goes.
    let _forget = Forget(reg.clone(), id);
    let mut conn = Some(tokio::spawn(
        run_connection(tls, rest, shared.clone()).in_current_span(),
    ));
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
                    Ok(Err(e)) => tracing::info!(error = %e, "connection lost; session detached"),
                    Err(e) => tracing::info!(error = %e, "connection task ended"),
                }
                shared.lock().core.detach();
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
                    let r = st.core.resume(peer_received);
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
                    shared.lock().core.detach();
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
                conn = Some(tokio::spawn(run_connection(tls, rest, shared.clone()).in_current_span()));
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
