//! A session as the bridge holds it: the SDK's [`Session`] behind a lock taken for one poll at a
//! time, so one Java thread can block in `read` while another writes, and `close` from a third
//! ends both at once.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::Poll;
use std::time::Duration;

use roam::{Events, Session, SessionEvent};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::error::BridgeError;

/// One open session.
#[derive(Debug)]
pub struct SessionSlot {
    session: Mutex<Option<Session>>,
    events: tokio::sync::Mutex<Events>,
    closed: watch::Sender<bool>,
}

fn closed_error() -> BridgeError {
    BridgeError::Io {
        what: "using the session".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotConnected, "the session is closed"),
    }
}

fn io(what: &str) -> impl FnOnce(std::io::Error) -> BridgeError + '_ {
    move |source| BridgeError::Io {
        what: what.to_owned(),
        source,
    }
}

impl SessionSlot {
    /// Holds `s`.
    pub fn new(s: Session) -> SessionSlot {
        SessionSlot {
            events: tokio::sync::Mutex::new(s.events()),
            session: Mutex::new(Some(s)),
            closed: watch::channel(false).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `op` on the session until it is ready or the slot is closed.
    async fn with<T>(
        &self,
        mut op: impl FnMut(Pin<&mut Session>, &mut std::task::Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Result<std::io::Result<T>, BridgeError> {
        let mut closed = self.closed.subscribe();
        let run = poll_fn(|cx| match self.lock().as_mut() {
            Some(s) => op(Pin::new(s), cx).map(Some),
            None => Poll::Ready(None),
        });
        tokio::select! {
            r = run => r.ok_or_else(closed_error),
            _ = closed.wait_for(|c| *c) => Err(closed_error()),
        }
    }

    /// Reads at most `max` bytes; empty at the end of the peer's stream.
    pub async fn read(&self, max: usize) -> Result<Vec<u8>, BridgeError> {
        let mut buf = vec![0u8; max];
        let n = self
            .with(|s, cx| {
                let mut rb = ReadBuf::new(&mut buf);
                s.poll_read(cx, &mut rb).map_ok(|()| rb.filled().len())
            })
            .await?
            .map_err(io("reading from the session"))?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Writes all of `data`.
    pub async fn write(&self, mut data: &[u8]) -> Result<(), BridgeError> {
        while !data.is_empty() {
            let n = self
                .with(|s, cx| s.poll_write(cx, data))
                .await?
                .map_err(io("writing to the session"))?;
            if n == 0 {
                return Err(io("writing to the session")(
                    std::io::ErrorKind::WriteZero.into(),
                ));
            }
            data = &data[n..];
        }
        Ok(())
    }

    /// Ends this side of the stream (the peer reads its end); reading goes on.
    pub async fn shutdown_output(&self) -> Result<(), BridgeError> {
        self.with(|s, cx| s.poll_shutdown(cx))
            .await?
            .map_err(io("finishing the session's stream"))
    }

    /// The next event as JSON, `None` when none came within `wait`.
    pub async fn next_event(&self, wait: Duration) -> Result<Option<String>, BridgeError> {
        let mut events = self.events.lock().await;
        let mut closed = self.closed.subscribe();
        tokio::select! {
            r = tokio::time::timeout(wait, events.next()) => match r {
                Err(_) => Ok(None),
                Ok(None) => Err(closed_error()),
                Ok(Some(e)) => Ok(Some(event_json(&e).to_string())),
            },
            _ = closed.wait_for(|c| *c) => Err(closed_error()),
        }
    }

    /// The path, round-trip time and byte counts as JSON.
    pub fn path_json(&self) -> Result<String, BridgeError> {
        let g = self.lock();
        let p = g.as_ref().ok_or_else(closed_error)?.path();
        Ok(serde_json::json!({
            "interface": p.interface,
            "local": p.local.map(|a| a.to_string()),
            "remote": p.remote.to_string(),
            "rtt_ms": p.rtt.as_secs_f64() * 1000.0,
            "bytes_sent": p.bytes_sent,
            "bytes_received": p.bytes_received,
        })
        .to_string())
    }

    /// Closes the session: blocked reads, writes and event waits end at once; the close is
    /// sent to the peer before this returns (at most 1 s).
    pub async fn close(&self) {
        self.closed.send_replace(true);
        let s = self.lock().take();
        if let Some(s) = s {
            s.close_and_wait(0, b"closed by the app").await;
        }
    }
}

fn event_json(e: &SessionEvent) -> serde_json::Value {
    match e {
        SessionEvent::PathChanged { from, to, reason } => serde_json::json!({
            "event": "path_changed",
            "from": from.as_ref().map(|p| p.interface.clone()),
            "to": to.interface,
            "local": to.local.to_string(),
            "reason": reason.to_string(),
        }),
        SessionEvent::Degraded { path, reason } => serde_json::json!({
            "event": "degraded",
            "path": path.interface,
            "reason": reason.to_string(),
        }),
        SessionEvent::Recovered { path } => serde_json::json!({
            "event": "recovered",
            "path": path.interface,
        }),
        SessionEvent::DecisionUpdated(d) => serde_json::json!({
            "event": "decision",
            "decision": d,
        }),
        // Events this bridge does not name yet still reach the app, as the SDK prints them.
        other => serde_json::json!({ "event": "other", "detail": format!("{other:?}") }),
    }
}
