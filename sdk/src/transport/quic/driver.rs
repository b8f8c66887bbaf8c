//! The tokio task that runs a client session's path manager: it feeds decisions, app activity,
//! timeouts and noq's counters in, and carries out the moves on the connection's paths.
//!
//! With a peer that negotiated multipath (RFC 10069) the session's links are paths of one
//! connection, each sending from its own interface's socket ([`PathSockets`]), and the
//! multipath mode says which are open and how they rank:
//! - the primary path is `Available`, every other `Backup` (noq sends data on a `Backup` path
//!   only when no `Available` one is validated);
//! - `interactive`: the best other permitted path is opened as `Backup` ahead of time, so it is
//!   validated before it is needed (a switch to it while the primary works takes no
//!   validation round trip; a failover moves the dead path onto its link, below), and pinged
//!   at a NAT-binding pace, not a detector's;
//! - `handover` (and `off`): nothing else is opened until the path manager moves the session,
//!   so no other radio carries anything until the primary dies, degrades or stalls;
//! - `aggregate`: every permitted path is open and `Available`.
//!
//! A move to a better primary while the old one still works switches paths: the target is
//! made `Available` (no validation round trip if it is open already; until it is validated the
//! old primary carries the data), the old one `Backup` (`interactive`) or closed a second
//! after its successor is established (`handover`). A move away from a primary that died or
//! went silent moves the dead path itself onto the new link ([`Driver::rehome`]), even where
//! `interactive` holds a validated path there, and what it had in flight is sent again from
//! the new link at once ([`Driver::replay_after_move`]). Handing over to the held path instead was
//! measured worse in every row: the peer's packets in flight on the closed path wait for noq's
//! discard of it, three probe timeouts (`handover-bench --multipath interactive --quick
//! --direction both`: download link-down p99 78.5 ms on plain veth against 1.5 rehoming, and
//! 279.5 against 141.4 at 50 ms RTT; upload link-down at 50 ms p50 29.8 against 1.6).
//!
//! Scheduling is noq's: it fills the open paths' congestion windows in path order, `Available`
//! before `Backup`. It has no hook for a scheduler of roam's (min-RTT, or re-sending a stalled
//! path's data on another at once), and no way to be told that packets are lost. So the one
//! re-sending roam does is below noq: the path sockets keep what each address sent recently,
//! and a move off a dead or silent link sends it again from the new link at once
//! ([`Driver::replay_after_move`], [`PathSockets::replay`]); see [`Driver::rehome`].
//!
//! With a peer that does not negotiate multipath (plain quinn, older roam) a move is an RFC 9000
//! migration, as before: the new interface's socket becomes the only one, the connection
//! switches to a fresh connection ID and pings from there, and the server follows.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use noq::{PathId, PathStatus};
use roam_policy::MultipathMode;
use tokio::sync::{Notify, broadcast, watch};
use tokio_stream::Stream as _;
use tracing::Instrument;

use super::Shared;
use super::sockets::{PathSockets, Replayed};
use crate::decision::{DecisionSource, Snapshot};
use crate::net::socket::{SocketBinder, bind_udp};
use crate::path::manager::{Action, Input, PathManager, TransportSample};
use crate::transport::TaskHandle;
use crate::transport::report::{report_rtt, report_stall};
use crate::vocab::{LocalPath, MigrationReason, SessionEvent};

/// How often an idle backup path is pinged: often enough to keep a NAT binding, not a
/// detector (the primary's stall detection moves the session; a dead backup shows then).
const BACKUP_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long an old primary that still works stays open after its successor is established:
/// long enough for its last packets to be acknowledged.
const RETIRE_AFTER: Duration = Duration::from_secs(1);

/// How much earlier than a round trip before the last ACK seen a replay off a silent link
/// starts (a silent link may have stopped one way first: see [`Driver::replay_after_move`]).
const REPLAY_MARGIN: Duration = Duration::from_millis(10);

/// How much earlier than a round trip before the last datagram received on a lost link a
/// replay off it starts: that datagram is stamped when the endpoint reads it, which may be a
/// little after it arrived.
const HEARD_MARGIN: Duration = Duration::from_millis(2);

/// The first wait before trying again to open a path noq refused.
const PATH_RETRY: Duration = Duration::from_millis(50);
/// The longest such wait.
const PATH_RETRY_MAX: Duration = Duration::from_secs(5);

/// A path this driver opened (or the handshake's) and has not seen closed.
#[derive(Debug, Clone)]
struct OpenPath {
    path: LocalPath,
    id: PathId,
}

pub(crate) struct Driver {
    pm: PathManager,
    conn: noq::Connection,
    endpoint: noq::Endpoint,
    sockets: PathSockets,
    peer: SocketAddr,
    mode: MultipathMode,
    decisions: watch::Receiver<Arc<Snapshot>>,
    /// The peer's family: the local paths must match it.
    v6: bool,
    activity: Arc<Notify>,
    events: broadcast::Sender<SessionEvent>,
    shared: Arc<Shared>,
    /// Single-path peers: a socket bound ahead on the backup (`interactive`).
    warm_socket: Option<(LocalPath, std::net::UdpSocket)>,
    /// Multipath peers: the connection's open paths, the primary among them.
    open: Vec<OpenPath>,
    /// The open paths noq reported established (validated: they carry data at once).
    established: Vec<PathId>,
    /// Paths to close once the path with this id is established (a handover's old primary).
    retire: Option<(PathId, Vec<PathId>)>,
    /// When to close the old primaries whose successor is established.
    retire_at: Option<(tokio::time::Instant, Vec<PathId>)>,
    /// `interactive`: the backup path the path manager wants open.
    backup: Option<LocalPath>,
    /// A path that should be open could not be opened yet (right after the handshake the
    /// peer has not issued connection IDs for more paths): when to try again, and the wait
    /// after that (doubling up to [`PATH_RETRY_MAX`]).
    retry: Option<(tokio::time::Instant, Duration)>,
    /// The paths the decision permits, best first.
    permitted: Vec<LocalPath>,
    /// The app's socket hook, run on every socket bound here.
    binder: Option<SocketBinder>,
    /// Keeps the source alive as long as the session, and hears its path reports.
    source: Arc<dyn DecisionSource>,
    /// When the RTT was last reported.
    reported: Option<std::time::Instant>,
    /// ACK frames received by the last sample, and the time of the sample before the last
    /// one that saw that count grow (the newest ACK came in after it): what was sent more than
    /// a round trip before then has been acknowledged, what was sent after may be in flight
    /// (see [`Driver::replay_after_move`]).
    acks_seen: u64,
    acked_at: std::time::Instant,
    /// When the last sample was taken.
    sampled_at: std::time::Instant,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pm: PathManager,
        mode: MultipathMode,
        conn: noq::Connection,
        endpoint: noq::Endpoint,
        sockets: PathSockets,
        first: LocalPath,
        peer: SocketAddr,
        decisions: watch::Receiver<Arc<Snapshot>>,
        activity: Arc<Notify>,
        events: broadcast::Sender<SessionEvent>,
        shared: Arc<Shared>,
        binder: Option<SocketBinder>,
        source: Arc<dyn DecisionSource>,
    ) -> Self {
        Driver {
            pm,
            conn,
            endpoint,
            sockets,
            v6: peer.is_ipv6(),
            peer,
            mode,
            decisions,
            activity,
            events,
            shared,
            warm_socket: None,
            open: vec![OpenPath {
                path: first,
                id: PathId::ZERO,
            }],
            // The handshake validated the first path.
            established: vec![PathId::ZERO],
            retire: None,
            retire_at: None,
            backup: None,
            retry: None,
            permitted: Vec::new(),
            binder,
            source,
            reported: None,
            acks_seen: 0,
            acked_at: std::time::Instant::now(),
            sampled_at: std::time::Instant::now(),
        }
    }

    pub(crate) fn spawn(self) -> TaskHandle {
        let span = tracing::Span::current();
        TaskHandle::new(tokio::spawn(self.run().instrument(span)).abort_handle())
    }

    fn multipath(&self) -> bool {
        self.conn.is_multipath_enabled()
    }

    async fn run(mut self) {
        let mut source_alive = true;
        let mut path_events = self.conn.path_events();
        self.permitted = self.decisions.borrow().local_paths(self.v6);
        self.follow_permitted();
        loop {
            self.act();
            let mut deadline = tokio::time::Instant::from_std(self.pm.poll_timeout());
            if let Some((at, _)) = &self.retire_at {
                deadline = deadline.min(*at);
            }
            if let Some((at, _)) = &self.retry {
                deadline = deadline.min(*at);
            }
            tokio::select! {
                r = self.decisions.changed(), if source_alive => match r {
                    Ok(()) => {
                        let snap = self.decisions.borrow_and_update().clone();
                        let _ = self.events.send(SessionEvent::DecisionUpdated(snap.decision.clone()));
                        self.permitted = snap.local_paths(self.v6);
                        self.pm.handle(now(), Input::Paths(self.permitted.clone()));
                        self.follow_permitted();
                    }
                    Err(_) => {
                        // Fail-static: keep the last decision and the stall detector.
                        tracing::warn!("the decision source ended; keeping its last decision");
                        source_alive = false;
                    }
                },
                Some(e) = next_event(&mut path_events) => {
                    match e {
                        Ok(e) => self.on_path_event(e),
                        Err(noq::Lagged(n)) => tracing::debug!(missed = n, "path events lagged"),
                    }
                }
                _ = self.activity.notified() => self.pm.handle(now(), Input::Activity),
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some((at, olds)) = self.retire_at.take() {
                        if at <= tokio::time::Instant::now() {
                            // Unless the session went back to it meanwhile.
                            let primary = self.shared.primary();
                            for old in olds.into_iter().filter(|o| *o != primary) {
                                self.close_path(old);
                            }
                        } else {
                            self.retire_at = Some((at, olds));
                        }
                    }
                    if let Some((at, wait)) = self.retry
                        && at <= tokio::time::Instant::now()
                    {
                        self.retry = None;
                        self.follow_permitted();
                        if self.backup.is_some() {
                            self.warm(self.backup.clone());
                        }
                        // Still not open: wait longer next time.
                        if let Some((at, _)) = self.retry {
                            self.retry = Some((at, (wait * 2).min(PATH_RETRY_MAX)));
                        }
                    }
                    self.pm.handle_timeout(now());
                }
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
                    let s = self.sample();
                    let t = now();
                    if let Some(path) = self.current() {
                        report_rtt(&*self.source, &mut self.reported, t, &path, s.rtt);
                    }
                    self.pm.handle(t, Input::Sample(s));
                }
                Action::Move { to, reason } => {
                    let moved = if self.multipath() {
                        self.switch(&to, reason)
                    } else {
                        self.rebind(&to, reason)
                    };
                    match moved {
                        Ok(local) => {
                            tracing::info!(%to, %local, %reason, multipath = self.multipath(), "session moved");
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
                    }
                }
                Action::Ping => {
                    let primary = if self.multipath() {
                        self.shared.primary()
                    } else {
                        PathId::ZERO
                    };
                    if let Some(p) = self.conn.path(primary) {
                        let _ = p.ping();
                    }
                }
                Action::Warm(p) => self.warm(p),
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

    /// The connection's counters (all paths: an ACK for one path's packets may come back on
    /// another), with the primary path's RTT.
    fn sample(&mut self) -> TransportSample {
        let s = self.conn.stats();
        let acks = s.frame_rx.acks + s.frame_rx.path_acks;
        let at = std::time::Instant::now();
        if acks > self.acks_seen {
            self.acks_seen = acks;
            self.acked_at = self.sampled_at;
        }
        self.sampled_at = at;
        let primary = if self.multipath() {
            self.shared.primary()
        } else {
            PathId::ZERO
        };
        TransportSample {
            ack_eliciting_sent: ack_eliciting(&s.frame_tx),
            acks_received: acks,
            rtt: self.conn.rtt(primary).unwrap_or_default(),
            received: s.udp_rx.datagrams,
            bytes: s.udp_tx.bytes + s.udp_rx.bytes,
        }
    }

    fn find(&self, path: &LocalPath) -> Option<PathId> {
        self.open.iter().find(|o| &o.path == path).map(|o| o.id)
    }

    /// Opens a path on `path` (its socket first) with `status`.
    fn open_path(&mut self, path: &LocalPath, status: PathStatus) -> std::io::Result<PathId> {
        if let Some(id) = self.find(path) {
            return Ok(id);
        }
        route_to(path, self.peer)?;
        if !self.sockets.has(path.local) {
            let socket = bind_udp(path, self.binder.as_ref())?;
            self.sockets.add(socket, false)?;
        }
        let opening = self
            .conn
            .open_path(noq::FourTuple::new(self.peer, Some(path.local)), status);
        let Some(id) = opening.path_id() else {
            // The socket stays for the retry (nothing is sent from it meanwhile: no path has
            // its address), so the app's binder sees one socket per path, not one per try.
            // A refused path's future is ready with the reason.
            let mut opening = std::pin::pin!(opening);
            let why = match opening
                .as_mut()
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
            {
                std::task::Poll::Ready(Err(e)) => e.to_string(),
                _ => "no path id".to_owned(),
            };
            let wait = self.retry.map_or(PATH_RETRY, |(_, w)| w);
            self.retry
                .get_or_insert((tokio::time::Instant::now() + wait, wait));
            return Err(std::io::Error::other(format!(
                "noq refused a path on {path}: {why}"
            )));
        };
        if status == PathStatus::Backup
            && let Some(p) = self.conn.path(id)
        {
            let _ = p.set_keep_alive_interval(Some(BACKUP_KEEP_ALIVE));
        }
        tracing::info!(%path, %id, ?status, "opening a path");
        self.open.push(OpenPath {
            path: path.clone(),
            id,
        });
        Ok(id)
    }

    fn set_status(&self, id: PathId, status: PathStatus) {
        if let Some(p) = self.conn.path(id) {
            match p.set_status(status) {
                Ok(was) if was != status => tracing::debug!(%id, ?status, "path status"),
                Ok(_) => {}
                Err(e) => tracing::debug!(%id, error = %e, "path status not set"),
            }
            let keep_alive = (status == PathStatus::Backup).then_some(BACKUP_KEEP_ALIVE);
            let _ = p.set_keep_alive_interval(keep_alive);
        }
    }

    fn close_path(&mut self, id: PathId) {
        if let Some(p) = self.conn.path(id) {
            match p.close() {
                Ok(()) => tracing::info!(%id, "closing a path"),
                // The last open path stays: the connection needs one.
                Err(e) => {
                    tracing::debug!(%id, error = %e, "path not closed");
                    return;
                }
            }
        }
        self.established.retain(|e| *e != id);
        if let Some(i) = self.open.iter().position(|o| o.id == id) {
            let o = self.open.remove(i);
            self.drop_socket(o.path.local);
        }
    }

    /// Drops the socket of `ip` when no open path uses it.
    fn drop_socket(&self, ip: IpAddr) {
        if !self.open.iter().any(|o| o.path.local == ip) {
            self.sockets.remove(ip);
        }
    }

    /// A multipath move. From a primary that still works (a better one came): `to` carries
    /// the data from now on, with no validation round trip if it is open already, and until
    /// it is validated the old primary does. From one that died or went silent: see
    /// [`Driver::rehome`].
    fn switch(&mut self, to: &LocalPath, reason: MigrationReason) -> std::io::Result<SocketAddr> {
        let old = self.shared.primary();
        if let Some(o) = self.open.iter().find(|o| o.id == old).cloned()
            && (reason != MigrationReason::PrimaryChanged || !self.permitted.contains(&o.path))
        {
            // Moved, not closed: the peer finds what the dead path had in flight lost from that
            // path's own acknowledgements on the new link, where a closed path's packets wait
            // for its discard (see the module's documentation for the figures).
            return self.rehome(o, to, reason);
        }
        let id = match self.find(to) {
            Some(id) => id,
            None => self.open_path(to, PathStatus::Available)?,
        };
        self.set_status(id, PathStatus::Available);
        self.shared.set_primary(id);
        let local = self
            .sockets
            .local_addr_of(to.local)
            .unwrap_or(SocketAddr::new(to.local, 0));
        if old == id {
            return Ok(local);
        }
        match self.mode {
            MultipathMode::Aggregate => {}
            MultipathMode::Interactive => self.set_status(old, PathStatus::Backup),
            MultipathMode::Handover | MultipathMode::Off => {
                // The old primary still works: it carries the data until the new one is
                // validated, and closes then.
                self.set_status(old, PathStatus::Backup);
                match &mut self.retire {
                    Some((n, olds)) if *n == id => olds.push(old),
                    _ => self.retire = Some((id, vec![old])),
                }
            }
        }
        Ok(local)
    }

    /// The primary's link died or went silent: the primary path itself moves to `to` (its
    /// datagrams leave from a socket there, so the peer sees it migrate), and what it had in
    /// flight goes out again from there right after the connection's first packets there
    /// ([`Driver::replay_after_move`]). A fresh path would have
    /// a packet number space of its own, and noq declares a closed path's in-flight packets
    /// lost only when it discards the path, three probe timeouts after the peer's
    /// PATH_ABANDON (noq-proto 1.4 `connection/mod.rs`: `abandon_path` keeps them in flight,
    /// `discard_path` declares them lost from the `PathDrained` timer): the stream would wait
    /// that long for those bytes (measured: a 240 ms delivery gap on a link-down on plain
    /// veth). The peer still validates the path's new address before it acknowledges anything
    /// there (noq sends ACK frames only where it may send data, on validated paths), which
    /// delays the ACKs, not the data: the replayed packets fill the stream's hole as they
    /// arrive.
    fn rehome(
        &mut self,
        old: OpenPath,
        to: &LocalPath,
        reason: MigrationReason,
    ) -> std::io::Result<SocketAddr> {
        route_to(to, self.peer)?;
        if !self.sockets.has(to.local) {
            let socket = bind_udp(to, self.binder.as_ref())?;
            self.sockets.add(socket, false)?;
        }
        if let Some(o) = self.open.iter_mut().find(|o| o.id == old.id) {
            o.path = to.clone();
        }
        // A path already open on `to` (interactive's backup, aggregate's other path) gives
        // its socket up: two paths on one address and port are one path to the peer.
        let others: Vec<PathId> = self
            .open
            .iter()
            .filter(|o| o.id != old.id && o.path.local == to.local)
            .map(|o| o.id)
            .collect();
        for id in others {
            self.close_path(id);
        }
        self.sockets.alias(old.path.local, to.local);
        self.drop_socket(old.path.local);
        self.set_status(old.id, PathStatus::Available);
        if self.open.len() == 1 {
            // The only path: tell noq its network changed (the path is recoverable, so it
            // stays). It pings at once with a fresh connection ID and, above all, drops the
            // probe timeout's backoff: a blackhole fills the congestion window with packets
            // that will never be acknowledged, and nothing new leaves until a probe does,
            // which after a 60 ms stall would be 100 ms or more away.
            self.sockets.make_default(to.local);
            self.endpoint
                .handle_network_change(Some(Arc::new(Recoverable)));
        } else if let Some(p) = self.conn.path(old.id) {
            // Other paths are open: a network change would clear their source addresses
            // too. The peer learns the new address now, data or not.
            let _ = p.ping();
        }
        self.replay_after_move(old.path.local, to.local, old.id, reason);
        Ok(self
            .sockets
            .local_addr_of(to.local)
            .unwrap_or(SocketAddr::new(to.local, 0)))
    }

    /// A single-path move (RFC 9000 migration): the socket on `to` replaces the old one and
    /// the connection pings from it with a fresh connection ID; the server follows.
    fn rebind(&mut self, to: &LocalPath, reason: MigrationReason) -> std::io::Result<SocketAddr> {
        // A link that is back (or an address that is new) often has its address before its
        // routes: moving there now would only stall until a retry. The kernel's route lookup
        // for the peer from that path says so first (a failed move keeps the session where it
        // is and the path is retried soon).
        route_to(to, self.peer)?;
        let socket = match self.warm_socket.take() {
            Some((p, s)) if &p == to => s,
            other => {
                self.warm_socket = other;
                bind_udp(to, self.binder.as_ref())?
            }
        };
        let local = self.sockets.replace_all(socket)?;
        self.endpoint.handle_network_change(None);
        if let Some(old) = self.open.first().map(|o| o.path.local) {
            self.replay_after_move(old, to.local, PathId::ZERO, reason);
        }
        if let Some(o) = self.open.first_mut() {
            o.path = to.clone();
        }
        Ok(local)
    }

    /// The path `id` left the link of `from` (dead, or silent): what it may have had in
    /// flight there goes out again at once from the socket of `via`, on the new link. Without
    /// this the gap in the stream waits until noq finds those packets lost: after the peer has
    /// validated the new address (it acknowledges nothing there before) and acknowledged later
    /// packets, two round trips or more after the move (measured at 50 ms RTT: a blackhole's
    /// gap 345 ms, a link-down's 153 ms against plain quinn's 52).
    ///
    /// What may be in flight is what was sent from a round trip (and a quarter) before the
    /// link last showed it worked. That is the latest of two pieces of evidence: the newest
    /// ACK the driver's samples saw (it came in after the sample before the one that counted
    /// it; on any path, which is where a peer may acknowledge this one's packets), and, for a
    /// link the kernel took away (down, address gone, or no longer permitted: it stopped both
    /// ways at once), the last datagram received on `from`'s own socket, stamped as read
    /// ([`PathSockets::heard`], less [`HEARD_MARGIN`]). A silent link may have gone silent one
    /// way only (the peer's packets still arriving, the session's lost), so a stall counts
    /// only the ACKs, with [`REPLAY_MARGIN`]. Too early a start costs the peer duplicates to
    /// read before the new data: measured on plain veth, a link-down replayed about 85
    /// datagrams of the last 12 ms, every one already received, in 0.45 ms of the driver's
    /// 0.55 ms move (the old start: 10 ms before the ACK seen by the last sample); now 17.
    /// A session that only receives sends few ACK-eliciting packets, so its ACK count grows
    /// rarely: from aioquic the old start replayed 86-712 of its own ACK-only datagrams, which
    /// held a download's return to WiFi 15-47 ms; the datagrams heard make it 12-16.
    ///
    /// The replay goes out once the connection has had its turn to send from the new link
    /// (the path's move woke it): its first packets there are new data, which the peer can
    /// deliver at once when nothing was lost, instead of after reading the replay's
    /// duplicates (a link-down on plain veth: a hold of 0.46-0.59 ms against 0.57-0.67). When
    /// something was lost, the replay follows within microseconds and fills the hole.
    ///
    /// After a stall the replay goes first instead, now: the silent path kept taking packets
    /// (probes, new data) the peer never saw, so the connection's first packets on the new
    /// link are far ahead of the replayed ones, and a peer decodes a truncated packet number
    /// against the largest it has received: replayed packets arriving behind those can fail
    /// to decode (31-59 failed decryption at the server in two blackhole repeats) and are
    /// lost again.
    fn replay_after_move(&self, from: IpAddr, via: IpAddr, id: PathId, reason: MigrationReason) {
        let since = self.in_flight_since(from, id, reason);
        if reason == MigrationReason::Stalled {
            // The connection sends from the new link only when its driver next runs, after
            // this returns.
            replay_logged(&self.sockets, from, via, since, reason);
            return;
        }
        let sockets = self.sockets.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            replay_logged(&sockets, from, via, since, reason);
        });
    }

    /// Where a replay off `from` starts (see [`Driver::replay_after_move`]).
    fn in_flight_since(&self, from: IpAddr, id: PathId, reason: MigrationReason) -> Instant {
        let rtt = self.conn.rtt(id).unwrap_or_default();
        let back = rtt + rtt / 4;
        let acked = self.acked_at;
        let worked = match reason {
            MigrationReason::Stalled => acked.checked_sub(REPLAY_MARGIN).unwrap_or(acked),
            _ => match self
                .sockets
                .heard(from)
                .and_then(|h| h.checked_sub(HEARD_MARGIN))
            {
                Some(heard) => heard.max(acked),
                None => acked,
            },
        };
        worked.checked_sub(back).unwrap_or(worked)
    }

    /// `interactive`: keep `p` ready as the backup (a validated `Backup` path with a multipath
    /// peer, a bound socket without); `None` lets the old one go.
    fn warm(&mut self, p: Option<LocalPath>) {
        if !self.multipath() {
            self.warm_socket = p.and_then(|p| match bind_udp(&p, self.binder.as_ref()) {
                Ok(s) => {
                    tracing::debug!(path = %p, "backup socket ready");
                    Some((p, s))
                }
                Err(e) => {
                    tracing::debug!(path = %p, error = %e, "backup socket not bound");
                    None
                }
            });
            return;
        }
        let primary = self.shared.primary();
        let stale: Vec<PathId> = self
            .open
            .iter()
            .filter(|o| o.id != primary && Some(&o.path) != p.as_ref())
            .map(|o| o.id)
            .collect();
        for id in stale {
            self.close_path(id);
        }
        self.backup = p.clone();
        if let Some(p) = p {
            match self.open_path(&p, PathStatus::Backup) {
                Ok(id) => self.set_status(id, PathStatus::Backup),
                Err(e) => tracing::debug!(path = %p, error = %e, "backup path not opened"),
            }
        }
    }

    /// After a decision: paths no longer permitted close (the primary moves first, by the
    /// path manager); `aggregate` opens every permitted path.
    fn follow_permitted(&mut self) {
        if !self.multipath() {
            return;
        }
        let primary = self.shared.primary();
        let gone: Vec<PathId> = self
            .open
            .iter()
            .filter(|o| o.id != primary && !self.permitted.contains(&o.path))
            .map(|o| o.id)
            .collect();
        for id in gone {
            self.close_path(id);
        }
        if self.mode == MultipathMode::Aggregate {
            for p in self.permitted.clone() {
                if self.find(&p).is_none()
                    && let Err(e) = self.open_path(&p, PathStatus::Available)
                {
                    tracing::debug!(path = %p, error = %e, "path not opened yet");
                }
            }
        }
    }

    fn on_path_event(&mut self, e: noq::PathEvent) {
        match e {
            noq::PathEvent::Established { id, .. } => {
                tracing::debug!(%id, "path established");
                if !self.established.contains(&id) {
                    self.established.push(id);
                }
                if let Some((n, olds)) = self.retire.take() {
                    if n == id {
                        // Not at once: what the old path has in flight must be acknowledged
                        // first (noq declares a closed path's unacknowledged packets lost only
                        // when it discards the path, three probe timeouts later).
                        let at = tokio::time::Instant::now() + RETIRE_AFTER;
                        match &mut self.retire_at {
                            Some((_, o)) => o.extend(olds),
                            None => self.retire_at = Some((at, olds)),
                        }
                    } else {
                        self.retire = Some((n, olds));
                    }
                }
            }
            noq::PathEvent::Abandoned { id, reason, .. } => {
                tracing::debug!(%id, ?reason, "path abandoned");
                self.established.retain(|e| *e != id);
                if let Some(i) = self.open.iter().position(|o| o.id == id) {
                    let o = self.open.remove(i);
                    self.drop_socket(o.path.local);
                }
            }
            _ => {}
        }
    }
}

/// Sends again what `from` sent since `since`, from `via`'s socket ([`PathSockets::replay`]),
/// and logs what went.
fn replay_logged(
    sockets: &PathSockets,
    from: IpAddr,
    via: IpAddr,
    since: Instant,
    reason: MigrationReason,
) -> Replayed {
    let r = sockets.replay(from, via, since);
    tracing::debug!(
        %from,
        %reason,
        datagrams = r.sent,
        bytes = r.bytes,
        later = r.later,
        since_ms = since.elapsed().as_secs_f64() * 1000.0,
        "sent again what was in flight on the old link"
    );
    r
}

/// Says every path survives a network change: the driver has moved the one that did not.
#[derive(Debug)]
struct Recoverable;

impl noq::NetworkChangeHint for Recoverable {
    fn is_path_recoverable(&self, _: PathId, _: noq::FourTuple) -> bool {
        true
    }
}

impl Drop for Driver {
    /// What each open path carried, for the log (the driver ends with its session).
    fn drop(&mut self) {
        for o in &self.open {
            if let Some(p) = self.conn.path(o.id) {
                let st = p.stats();
                tracing::debug!(
                    path = %o.path,
                    id = %o.id,
                    rtt = ?st.rtt,
                    cwnd = st.cwnd,
                    sent = st.udp_tx.bytes,
                    received = st.udp_rx.bytes,
                    lost = st.lost_bytes,
                    "path at the end"
                );
            }
        }
    }
}

/// The connection's next path event (`None` once the connection is gone).
async fn next_event(events: &mut noq::PathEvents) -> Option<Result<noq::PathEvent, noq::Lagged>> {
    std::future::poll_fn(|cx| Pin::new(&mut *events).poll_next(cx)).await
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

/// Frames that elicit an acknowledgement: every frame but ACK (and padding, not counted).
fn ack_eliciting(f: &noq::FrameStats) -> u64 {
    f.ack_frequency
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
        + f.path_new_connection_id
        + f.new_token
        + f.path_challenge
        + f.path_response
        + f.ping
        + f.reset_stream
        + f.retire_connection_id
        + f.path_retire_connection_id
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.stop_sending
        + f.stream
        + f.path_abandon
        + f.path_status_available
        + f.path_status_backup
        + f.max_path_id
        + f.paths_blocked
        + f.path_cids_blocked
}
