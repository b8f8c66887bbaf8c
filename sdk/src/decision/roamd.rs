//! Decisions from roamd: a subscription over its Unix socket (crate `roam-ipc`), the link table
//! it pushes, and path reports sent back on the same connection.
//!
//! Fail-static: when roamd goes away the last decision stays in force (the watch channel simply
//! stops changing) and the session's own stall detector keeps working; the follower reconnects
//! with a bounded backoff, subscribes again, registers its MPTCP connections again, and the
//! first update after that replaces the kept decision.
//!
//! A session that reports its flow ([`DecisionSource::subscribe_with_flow`]) subscribes with a
//! `flow`: roamd's updates then carry the app's flow thresholds, and each report of the
//! session goes to roamd as `subscribe` again on the same connection with the flow (its age
//! counted here from the report, so a reconnect sends the age it has reached).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roam_ipc::client::ClientError;
use roam_ipc::proto::{Reply, Request, Update};
use roam_ipc::tokio_client::AsyncClient;
use roam_link::socket::{RouteSocket, Watch};
use roam_policy::Flow;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::{
    DecisionSource, FlowFollow, FlowWatch, LinkView, PathReport, Snapshot, SubscribeFuture,
};
use crate::error::{Error, Result};
use crate::monitor::Links;

/// How long connecting, hello, subscribe and the first update may take before the agent is
/// taken as absent.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The reconnect backoff after roamd went away: from the first to the last, doubling.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_secs(1));

/// Reports a session may queue while the follower is busy; beyond that they are dropped
/// (figures are advisory, the next one will do).
const REPORT_QUEUE: usize = 64;

/// Decisions pushed by roamd, the device's agent.
#[derive(Debug)]
pub struct Roamd {
    socket: PathBuf,
    /// One sender per live subscription; reports go to the first still open.
    reports: Mutex<Vec<mpsc::Sender<PathReport>>>,
}

impl Roamd {
    /// roamd at `ROAM_SOCKET`, else `/run/roam/roamd.sock`.
    pub fn from_env() -> Roamd {
        Roamd::at(roam_ipc::socket_path(None))
    }

    /// roamd at `socket`.
    pub fn at(socket: impl Into<PathBuf>) -> Roamd {
        Roamd {
            socket: socket.into(),
            reports: Mutex::new(Vec::new()),
        }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Roamd {
    /// Subscribes, with the session's flow when it reports one.
    fn follow<'a>(&'a self, app: Option<&'a str>, flow: Option<FlowWatch>) -> SubscribeFuture<'a> {
        Box::pin(async move {
            let app = app.map(str::to_owned);
            let flow = flow.map(|watch| FlowFollow::new(watch, std::time::Instant::now()));
            let first_flow = flow.as_ref().map(|f| f.clock.at(std::time::Instant::now()));
            let (client, update) = tokio::time::timeout(
                SUBSCRIBE_TIMEOUT,
                connect_and_subscribe(&self.socket, app.as_deref(), first_flow),
            )
            .await
            .map_err(|_| Error::AgentRequired {
                what: "following roamd".into(),
                detail: format!(
                    "roamd at {} did not subscribe us within {SUBSCRIBE_TIMEOUT:?}",
                    self.socket.display()
                ),
            })??;
            let mut routes = RouteSocket::open(Watch::Nothing)
                .map_err(|e| Error::io("opening the netlink route socket", e))?;
            let first = snapshot(&mut routes, update).await?;
            let (tx, rx) = watch::channel(Arc::new(first));
            let (report_tx, report_rx) = mpsc::channel(REPORT_QUEUE);
            {
                let mut senders = self.reports.lock().unwrap_or_else(|p| p.into_inner());
                senders.retain(|s| !s.is_closed());
                senders.push(report_tx);
            }
            let follower = Follower {
                socket: self.socket.clone(),
                app: app.clone(),
                routes,
                tokens: Vec::new(),
                flow,
            };
            let span = tracing::info_span!("roamd_follower", app = app.as_deref().unwrap_or("own"));
            tokio::spawn(follower.run(client, tx, report_rx).instrument(span));
            Ok(rx)
        })
    }
}

impl DecisionSource for Roamd {
    fn subscribe<'a>(&'a self, app: Option<&'a str>) -> SubscribeFuture<'a> {
        self.follow(app, None)
    }

    fn subscribe_with_flow<'a>(
        &'a self,
        app: Option<&'a str>,
        flow: FlowWatch,
    ) -> SubscribeFuture<'a> {
        self.follow(app, Some(flow))
    }

    fn report(&self, report: PathReport) {
        let senders = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = senders.iter().find(|s| !s.is_closed())
            && s.try_send(report).is_err()
        {
            tracing::debug!("path report dropped (queue full)");
        }
    }

    fn steers_mptcp(&self) -> bool {
        true
    }

    fn name(&self) -> String {
        format!("roamd at {}", self.socket.display())
    }
}

fn agent_error(socket: &Path, e: ClientError) -> Error {
    match e {
        ClientError::Refused { code, message } => Error::Agent {
            what: "subscribing to roamd".into(),
            code,
            message,
        },
        other => Error::AgentRequired {
            what: "following roamd".into(),
            detail: format!("{} ({})", other, socket.display()),
        },
    }
}

/// The app id to name in `subscribe`: only an admin may name one, and only when roamd does not
/// already know us by it.
fn named_app(hello: &Reply, app: Option<&str>) -> Option<String> {
    let (our_app, admin) = match hello {
        Reply::Hello { app, admin, .. } => (app.as_str(), *admin),
        _ => ("", false),
    };
    app.filter(|a| admin && *a != our_app).map(str::to_owned)
}

/// Hello, subscribe (with the flow of a session that reports one), and the update the agent
/// sends right after.
async fn connect_and_subscribe(
    socket: &Path,
    app: Option<&str>,
    flow: Option<Flow>,
) -> Result<(AsyncClient, Update)> {
    let mut c = AsyncClient::connect(socket)
        .await
        .map_err(|e| agent_error(socket, e))?;
    // The agent knows who we are from SO_PEERCRED; only an admin may name an app, so the
    // app id goes along only then (tests and system services run as root).
    let named = named_app(&c.hello, app);
    if let (Some(a), Reply::Hello { app: ours, .. }) = (app, &c.hello)
        && named.is_none()
        && a != ours
    {
        tracing::info!(asked = a, agent_says = %ours, "roamd knows this process as another app id; following its decisions for that one");
    }
    c.call(|id| Request::Subscribe {
        id,
        app: named,
        flow,
    })
    .await
    .map_err(|e| agent_error(socket, e))?;
    // Bounded: the update follows the `subscribed` reply at once.
    for _ in 0..16 {
        match c.next().await.map_err(|e| agent_error(socket, e))? {
            Reply::Update(u) => return Ok((c, u)),
            other => tracing::debug!(?other, "before the first update"),
        }
    }
    Err(Error::AgentRequired {
        what: "following roamd".into(),
        detail: "roamd sent no update after subscribing".into(),
    })
}

/// roamd's link table with the addresses the session binds to (read here: the agent's
/// interface objects carry none).
async fn snapshot(routes: &mut RouteSocket, u: Update) -> Result<Snapshot> {
    let events = routes
        .dump()
        .await
        .map_err(|e| Error::io("dumping addresses", e.into()))?;
    let now = std::time::Instant::now();
    let mut table = Links::new();
    for e in &events {
        table.apply(e, now);
    }
    let links = u
        .interfaces
        .iter()
        .map(|i| LinkView {
            name: i.name.clone(),
            kind: i.kind,
            state: i.state,
            addrs: table.usable_addrs(&i.name),
        })
        .collect();
    Ok(Snapshot {
        decision: u.decision,
        links,
        flow_thresholds: u.flow_thresholds.unwrap_or_default(),
    })
}

struct Follower {
    socket: PathBuf,
    app: Option<String>,
    routes: RouteSocket,
    /// MPTCP connections to register again after a reconnect.
    tokens: Vec<u32>,
    /// The flow of a session that reports one.
    flow: Option<FlowFollow>,
}

impl Follower {
    async fn run(
        mut self,
        mut client: AsyncClient,
        tx: watch::Sender<Arc<Snapshot>>,
        mut reports: mpsc::Receiver<PathReport>,
    ) {
        // Each turn: follow until the connection breaks, then reconnect. Ends when every
        // session using these decisions is gone.
        loop {
            if self.follow(&mut client, &tx, &mut reports).await.is_none() {
                return;
            }
            tracing::warn!(socket = %self.socket.display(), "roamd went away; keeping the last decision");
            match self.reconnect(&tx, &mut reports).await {
                Some(c) => client = c,
                None => return,
            }
        }
    }

    /// Follows one connection; `None` when the sessions are gone, `Some` when roamd is.
    async fn follow(
        &mut self,
        client: &mut AsyncClient,
        tx: &watch::Sender<Arc<Snapshot>>,
        reports: &mut mpsc::Receiver<PathReport>,
    ) -> Option<()> {
        loop {
            tokio::select! {
                r = client.next() => match r {
                    Ok(Reply::Update(u)) => self.publish(tx, u).await,
                    Ok(Reply::Error { id, code, message }) => {
                        tracing::debug!(?id, %code, %message, "roamd refused a report");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "roamd connection ended");
                        return Some(());
                    }
                },
                r = reports.recv() => match r {
                    Some(report) => {
                        if self.send(client, report).await.is_err() {
                            return Some(());
                        }
                    }
                    None => return None,
                },
                r = FlowFollow::next_report(&mut self.flow) => {
                    if r.is_some() && self.send_flow(client).await.is_err() {
                        return Some(());
                    }
                }
                _ = tx.closed() => return None,
            }
        }
    }

    /// The flow as last reported, its age brought up to now: what roamd is told.
    fn flow_now(&self) -> Option<Flow> {
        self.flow
            .as_ref()
            .map(|f| f.clock.at(std::time::Instant::now()))
    }

    /// Sends the session's flow: `subscribe` again on this connection, same app.
    async fn send_flow(&mut self, client: &mut AsyncClient) -> Result<u64, ClientError> {
        let flow = self.flow_now();
        let app = named_app(&client.hello, self.app.as_deref());
        tracing::debug!(?flow, "flow report to roamd");
        client.send(|id| Request::Subscribe { id, app, flow }).await
    }

    async fn send(
        &mut self,
        client: &mut AsyncClient,
        report: PathReport,
    ) -> Result<u64, ClientError> {
        match report {
            PathReport::Path {
                interface,
                rtt,
                stalled,
            } => {
                client
                    .send(|id| Request::ReportPath {
                        id,
                        interface,
                        rtt_ms: rtt.map(|r| r.as_secs_f64() * 1e3),
                        stalled,
                    })
                    .await
            }
            PathReport::MptcpConnected { token } => {
                if !self.tokens.contains(&token) {
                    self.tokens.push(token);
                }
                client.send(|id| Request::RegisterMptcp { id, token }).await
            }
        }
    }

    async fn reconnect(
        &mut self,
        tx: &watch::Sender<Arc<Snapshot>>,
        reports: &mut mpsc::Receiver<PathReport>,
    ) -> Option<AsyncClient> {
        let mut wait = BACKOFF.0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                r = reports.recv() => match r {
                    // Figures while roamd is away are stale by the time it returns; tokens
                    // are kept for the re-registration.
                    Some(PathReport::MptcpConnected { token }) => {
                        if !self.tokens.contains(&token) {
                            self.tokens.push(token);
                        }
                        continue;
                    }
                    Some(_) => continue,
                    None => return None,
                },
                // Kept for the subscription below.
                _ = FlowFollow::next_report(&mut self.flow) => continue,
                _ = tx.closed() => return None,
            }
            let attempt = tokio::time::timeout(
                SUBSCRIBE_TIMEOUT,
                connect_and_subscribe(&self.socket, self.app.as_deref(), self.flow_now()),
            )
            .await;
            match attempt {
                Ok(Ok((mut client, update))) => {
                    tracing::info!(socket = %self.socket.display(), "roamd is back; subscribed again");
                    for token in self.tokens.clone() {
                        if client
                            .send(|id| Request::RegisterMptcp { id, token })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    self.publish(tx, update).await;
                    return Some(client);
                }
                Ok(Err(e)) => tracing::trace!(error = %e, "roamd not back yet"),
                Err(_) => tracing::debug!("roamd answered but did not subscribe us in time"),
            }
            wait = (wait * 2).min(BACKOFF.1);
        }
    }

    async fn publish(&mut self, tx: &watch::Sender<Arc<Snapshot>>, u: Update) {
        let snap = match snapshot(&mut self.routes, u).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "reading addresses failed; keeping the last decision");
                return;
            }
        };
        tx.send_if_modified(|cur| {
            if **cur == snap {
                return false;
            }
            tracing::debug!(paths = ?snap.decision.paths, "decision from roamd");
            *cur = Arc::new(snap);
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_ipc::proto::{self, Request};
    use roam_policy::{Decision, FlowThresholds, Interface, LinkKind, LinkState, Path, Role};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{UnixListener, UnixStream};

    /// The next request on the fake agent's end.
    async fn next(s: &mut UnixStream, buf: &mut Vec<u8>) -> Request {
        loop {
            if let Some(r) = proto::take_frame::<Request>(buf).unwrap() {
                return r;
            }
            assert!(s.read_buf(buf).await.unwrap() > 0, "the session hung up");
        }
    }

    fn update(paths: &[&str], thresholds: Option<FlowThresholds>) -> Reply {
        let path = |(i, name): (usize, &&str)| Path {
            interface: (*name).into(),
            link: (*name).into(),
            role: if i == 0 { Role::Primary } else { Role::Backup },
        };
        Reply::Update(Update {
            decision: Decision {
                app: Some("com.example.backup".into()),
                multipath: roam_policy::MultipathMode::Handover,
                paths: paths.iter().enumerate().map(path).collect(),
                explain: vec![],
            },
            interfaces: vec![
                Interface::new("rmnet0", LinkKind::Cellular, LinkState::Validated),
                Interface::new("wlan0", LinkKind::Wifi, LinkState::Validated),
            ],
            flow_thresholds: thresholds,
        })
    }

    /// A session that reports its flow subscribes with one, takes the thresholds from
    /// roamd's update, and its report goes to roamd as `subscribe` again on the same
    /// connection; roamd's next update reaches the session.
    #[tokio::test]
    async fn a_flow_report_goes_to_roamd_on_the_subscription_and_its_answer_comes_back() {
        let dir = std::env::temp_dir().join(format!("roam-flow-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("roamd.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let thresholds = FlowThresholds {
            bytes: vec![1_000_000],
            age_ms: vec![],
        };
        let told = thresholds.clone();
        let agent = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            assert_eq!(next(&mut s, &mut buf).await, Request::Hello { version: 1 });
            let hello = Reply::Hello {
                version: 1,
                agent: "fake".into(),
                app: "com.example.backup".into(),
                uid: 1000,
                admin: false,
            };
            s.write_all(&proto::encode(&hello)).await.unwrap();
            let Request::Subscribe { id, app, flow } = next(&mut s, &mut buf).await else {
                panic!("expected subscribe")
            };
            assert_eq!(app, None, "roamd knows the app from its uid");
            assert_eq!(
                flow.map(|f| f.bytes),
                Some(0),
                "a reporter subscribes with a flow"
            );
            let subscribed = Reply::Subscribed {
                id,
                app: "com.example.backup".into(),
            };
            s.write_all(&proto::encode(&subscribed)).await.unwrap();
            s.write_all(&proto::encode(&update(&["rmnet0"], Some(told.clone()))))
                .await
                .unwrap();
            // The report: the same connection, subscribe again with the flow.
            let Request::Subscribe { id, app, flow } = next(&mut s, &mut buf).await else {
                panic!("expected the flow report")
            };
            assert_eq!(app, None);
            let flow = flow.expect("a flow");
            assert_eq!(flow.bytes, 1_048_576);
            assert!(
                flow.age_ms >= 200,
                "the age counts from the report: {flow:?}"
            );
            let subscribed = Reply::Subscribed {
                id,
                app: "com.example.backup".into(),
            };
            s.write_all(&proto::encode(&subscribed)).await.unwrap();
            s.write_all(&proto::encode(&update(&["wlan0", "rmnet0"], Some(told))))
                .await
                .unwrap();
            // Held open until the session is gone.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let source = Roamd::at(&path);
        let (report, watch) = tokio::sync::watch::channel(Flow::default());
        let mut rx = source
            .subscribe_with_flow(Some("com.example.backup"), watch)
            .await
            .unwrap();
        let first = rx.borrow_and_update().clone();
        assert_eq!(first.flow_thresholds, thresholds);
        assert_eq!(first.decision.paths.len(), 1);
        // Reported 200 ms into the flow: sent on at once, with the age it has by then.
        tokio::time::sleep(Duration::from_millis(50)).await;
        report.send_replace(Flow {
            bytes: 1_048_576,
            age_ms: 200,
        });
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("roamd's answer within 5 s")
            .unwrap();
        let names: Vec<String> = rx
            .borrow()
            .decision
            .paths
            .iter()
            .map(|p| p.interface.clone())
            .collect();
        assert_eq!(names, ["wlan0", "rmnet0"]);
        drop(rx);
        drop(report);
        tokio::time::timeout(Duration::from_secs(5), agent)
            .await
            .expect("the follower hung up")
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
