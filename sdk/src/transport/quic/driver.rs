//! The tokio task that runs a client session's path manager: it feeds decisions, app activity,
//! timeouts and quinn's counters in, and carries out the moves (bind a socket on the new
//! interface, `Endpoint::rebind`).
//!
//! What quinn 0.11 allows: one path per connection. A move is a rebind: the client switches to
//! a new connection ID and sends a PING from the new socket; the server (migration on) follows
//! the new address and validates it while already sending. What it does not allow: validating
//! a second path ahead of time or keeping its congestion window warm. So `interactive` mode
//! here keeps a socket bound and ready on the backup interface (no bind at move time); the path
//! validation round trip and the congestion window restart still happen at the move.

use std::sync::Arc;

use quinn::ConnectionStats;
use tokio::sync::{Notify, broadcast, watch};
use tracing::Instrument;

use super::Shared;
use crate::decision::{DecisionSource, Snapshot};
use crate::net::socket::{SocketBinder, bind_udp};
use crate::path::manager::{Action, Input, PathManager, TransportSample};
use crate::transport::TaskHandle;
use crate::transport::report::{report_rtt, report_stall};
use crate::vocab::{LocalPath, SessionEvent};

pub(crate) struct Driver {
    pub(crate) pm: PathManager,
    pub(crate) conn: quinn::Connection,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) decisions: watch::Receiver<Arc<Snapshot>>,
    /// The peer's family: the local paths must match it.
    pub(crate) v6: bool,
    pub(crate) activity: Arc<Notify>,
    pub(crate) events: broadcast::Sender<SessionEvent>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) warm: Option<(LocalPath, std::net::UdpSocket)>,
    /// The app's socket hook, run on every socket bound here.
    pub(crate) binder: Option<SocketBinder>,
    /// Keeps the source alive as long as the session, and hears its path reports.
    pub(crate) source: Arc<dyn DecisionSource>,
    /// When the RTT was last reported.
    pub(crate) reported: Option<std::time::Instant>,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    pub(crate) fn spawn(self) -> TaskHandle {
        let span = tracing::Span::current();
        TaskHandle::new(tokio::spawn(self.run().instrument(span)).abort_handle())
    }

    async fn run(mut self) {
        let mut source_alive = true;
        loop {
            self.act();
            let deadline = tokio::time::Instant::from_std(self.pm.poll_timeout());
            tokio::select! {
                r = self.decisions.changed(), if source_alive => match r {
                    Ok(()) => {
                        let snap = self.decisions.borrow_and_update().clone();
                        let _ = self.events.send(SessionEvent::DecisionUpdated(snap.decision.clone()));
                        self.pm.handle(now(), Input::Paths(snap.local_paths(self.v6)));
                    }
                    Err(_) => {
                        // Fail-static: keep the last decision and the stall detector.
                        tracing::warn!("the decision source ended; keeping its last decision");
                        source_alive = false;
                    }
                },
                _ = self.activity.notified() => self.pm.handle(now(), Input::Activity),
                _ = tokio::time::sleep_until(deadline) => self.pm.handle_timeout(now()),
                reason = self.conn.closed() => {
                    tracing::info!(%reason, "session closed");
                    return;
                }
            }
        }
    }

    fn act(&mut self) {
        while let Some(a) = self.pm.poll_action() {
            report_stall(&*self.source, &a, self.current().as_ref());
            match a {
                Action::Sample => {
                    let s = sample(&self.conn.stats());
                    let t = now();
                    if let Some(path) = self.current() {
                        report_rtt(&*self.source, &mut self.reported, t, &path, s.rtt);
                    }
                    self.pm.handle(t, Input::Sample(s));
                }
                Action::Move { to, reason } => match self.rebind(&to) {
                    Ok(local) => {
                        tracing::info!(%to, %local, %reason, "session moved");
                        *self.shared.path.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((to.clone(), local));
                        self.pm.handle(now(), Input::Moved(to));
                    }
                    Err(e) => {
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::EHOSTUNREACH | libc::ENETUNREACH)
                        ) {
                            // Routes not there yet: looked up again shortly (path manager).
                            tracing::debug!(%to, error = %e, "not moving there yet");
                        } else {
                            tracing::warn!(%to, error = %e, "could not move the session there");
                        }
                        self.pm.handle(now(), Input::MoveFailed(to));
                    }
                },
                Action::Warm(p) => {
                    self.warm = p.and_then(|p| match bind_udp(&p, self.binder.as_ref()) {
                        Ok(s) => {
                            tracing::debug!(path = %p, "backup socket ready");
                            Some((p, s))
                        }
                        Err(e) => {
                            tracing::debug!(path = %p, error = %e, "backup socket not bound");
                            None
                        }
                    });
                }
                Action::Event(e) => {
                    let _ = self.events.send(e.into());
                }
            }
        }
    }

    fn current(&self) -> Option<LocalPath> {
        let p = self.shared.path.lock().unwrap_or_else(|p| p.into_inner());
        p.as_ref().map(|(p, _)| p.clone())
    }

    fn rebind(&mut self, to: &LocalPath) -> std::io::Result<std::net::SocketAddr> {
        // A link that is back (or an address that is new) often has its address before its
        // routes: moving there now would only stall until a retry. The kernel's route lookup
        // for the peer from that path says so first (a failed move keeps the session where it
        // is and the path is retried soon).
        route_to(to, self.conn.remote_address())?;
        let socket = match self.warm.take() {
            Some((p, s)) if &p == to => s,
            other => {
                self.warm = other;
                bind_udp(to, self.binder.as_ref())?
            }
        };
        let local = socket.local_addr()?;
        self.endpoint.rebind(socket)?;
        Ok(local)
    }
}

/// Whether a route of the kernel's takes traffic from `path` to `peer`. A socket bound to a
/// device gets the kernel's on-link guess when no route matches (its packets then go nowhere),
/// so the tables themselves are asked (`ip route get fibmatch`). Only "no route" refuses the
/// move: when the kernel cannot be asked (no such interface index, netlink refused in a
/// sandbox), the move goes ahead as before.
fn route_to(path: &LocalPath, peer: std::net::SocketAddr) -> std::io::Result<()> {
    let Some(oif) = roam_link::socket::if_nametoindex(&path.interface) else {
        return Ok(());
    };
    match crate::monitor::netlink::fib_route(path.local, peer.ip(), oif) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EHOSTUNREACH | libc::ENETUNREACH)
            ) =>
        {
            Err(e)
        }
        Err(e) => {
            tracing::debug!(%path, error = %e, "route lookup failed; moving anyway");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// quinn's counters in the manager's terms: every frame but ACK (and padding, not counted)
/// elicits an acknowledgement.
fn sample(s: &ConnectionStats) -> TransportSample {
    let f = &s.frame_tx;
    let ack_eliciting_sent = f.ack_frequency
        + f.crypto
        + f.data_blocked
        + f.datagram
        + u64::from(f.handshake_done)
        + f.immediate_ack
        + f.max_data
        + f.max_stream_data
        + f.max_streams_bidi
        + f.max_streams_uni
        + f.new_connection_id
        + f.new_token
        + f.path_challenge
        + f.path_response
        + f.ping
        + f.reset_stream
        + f.retire_connection_id
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.stop_sending
        + f.stream;
    TransportSample {
        ack_eliciting_sent,
        acks_received: s.frame_rx.acks,
        rtt: s.path.rtt,
    }
}
