//! The embedded decision source: a route socket, the link table it feeds, and the policy
//! evaluated whenever a link changes, a `hold` runs out, or the session's flow crosses one of
//! its app's flow thresholds (a byte report from the session, or an age the monitor counts).

use std::sync::Arc;
use std::time::Duration;

use roam_link::socket::{RouteSocket, SocketError, Watch};
use roam_policy::{FlowThresholds, Policy, State};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::{DecisionSource, FlowFollow, FlowWatch, Snapshot, SubscribeFuture};
use crate::error::Error;
use crate::monitor::Links;

/// Decisions made in the app's process: a link monitor and a policy.
///
/// Link states are `up` or `down` only (carrier, admin state and a usable address): with no
/// prober there is no `validated` or `degraded`. The session's own stall detection covers
/// silent failures. Links, kinds, addresses and up times are roam-link's: a link
/// usable when the session subscribes counts as up since an unknown, long time for `hold`.
#[derive(Debug, Clone)]
pub struct Embedded {
    policy: Arc<Policy>,
}

impl Embedded {
    /// A source that evaluates `policy`.
    pub fn new(policy: Policy) -> Embedded {
        Embedded {
            policy: Arc::new(policy),
        }
    }

    /// A source with roam's built-in policy ([`roam_policy::DEFAULT_POLICY`]).
    pub fn default_policy() -> Embedded {
        Embedded::new(Policy::default_policy())
    }
}

impl Embedded {
    /// Subscribes, with the session's flow when it reports one.
    fn follow<'a>(&'a self, app: Option<&'a str>, flow: Option<FlowWatch>) -> SubscribeFuture<'a> {
        Box::pin(async move {
            let mut socket = RouteSocket::open(Watch::LinksAndAddresses)
                .map_err(|e| Error::io("opening the netlink route socket", e))?;
            let events = socket
                .dump()
                .await
                .map_err(|e| Error::io("dumping links and addresses", e.into()))?;
            let now = Instant::now();
            let mut links = Links::new();
            for e in &events {
                links.apply(e, now.into_std());
            }
            links.started();
            // Thresholds only for a session that reports its flow, as roamd does.
            let flow_thresholds = match flow {
                Some(_) => self.policy.flow_thresholds(app),
                None => FlowThresholds::default(),
            };
            let flow = flow.map(|watch| FlowFollow::new(watch, now.into_std()));
            let run = Monitor {
                policy: self.policy.clone(),
                holds: self.policy.hold_durations(),
                app: app.map(str::to_owned),
                links,
                flow,
                flow_thresholds,
            };
            let first = run.snapshot(now);
            let (tx, rx) = watch::channel(Arc::new(first));
            let span = tracing::info_span!("embedded_monitor", app = app.unwrap_or("default"));
            tokio::spawn(run.run(socket, tx).instrument(span));
            Ok(rx)
        })
    }
}

impl DecisionSource for Embedded {
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

    fn name(&self) -> String {
        "embedded (the app's own link monitor and policy)".into()
    }
}

struct Monitor {
    policy: Arc<Policy>,
    holds: Vec<Duration>,
    app: Option<String>,
    links: Links,
    /// The flow of a session that reports one.
    flow: Option<FlowFollow>,
    /// Its app's flow thresholds (the policy is fixed for the source's life); empty without
    /// a flow.
    flow_thresholds: FlowThresholds,
}

impl Monitor {
    async fn run(mut self, mut socket: RouteSocket, tx: watch::Sender<Arc<Snapshot>>) {
        loop {
            let wake = earliest(
                self.next_hold(Instant::now()),
                self.next_flow_age(Instant::now()),
            );
            let changed = tokio::select! {
                r = socket.next() => match r {
                    Ok(events) => {
                        let now = Instant::now().into_std();
                        let mut changed = false;
                        for e in &events {
                            changed |= self.links.apply(e, now);
                        }
                        changed
                    }
                    Err(SocketError::Overrun) => {
                        tracing::warn!("netlink notifications were dropped; dumping again");
                        self.links.begin_resync();
                        let dumped = socket.dump().await;
                        let now = Instant::now().into_std();
                        match dumped {
                            Ok(events) => {
                                for e in &events {
                                    self.links.apply(e, now);
                                }
                                self.links.end_resync(now);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "netlink dump failed; decisions frozen");
                                return;
                            }
                        }
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "netlink route socket failed; decisions frozen");
                        return;
                    }
                },
                r = FlowFollow::next_report(&mut self.flow) => match r {
                    Some(reported) => {
                        tracing::debug!(bytes = reported.bytes, age_ms = reported.age_ms, "flow report");
                        true
                    }
                    // The session is gone; the flow stays as it was.
                    None => false,
                },
                _ = sleep_until(wake) => true,
                _ = tx.closed() => return,
            };
            if changed {
                let snap = self.snapshot(Instant::now());
                tx.send_if_modified(|cur| {
                    if **cur == snap {
                        return false;
                    }
                    tracing::debug!(paths = ?snap.decision.paths, "decision updated");
                    *cur = Arc::new(snap);
                    true
                });
            }
        }
    }

    /// The earliest moment a usable link's time up crosses one of the policy's holds.
    fn next_hold(&self, now: Instant) -> Option<Instant> {
        self.links
            .next_hold(now.into_std(), &self.holds)
            .map(Instant::from_std)
    }

    /// When the flow's age reaches the next of its thresholds.
    fn next_flow_age(&self, now: Instant) -> Option<Instant> {
        self.flow
            .as_ref()?
            .clock
            .next_crossing(&self.flow_thresholds, now.into_std())
            .map(Instant::from_std)
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let state = State {
            app: self.app.clone(),
            flow: self.flow.as_ref().map(|f| f.clock.at(now.into_std())),
            interfaces: self.links.interfaces(now.into_std()),
        };
        Snapshot {
            decision: self.policy.evaluate(&state),
            links: self.links.views(),
            flow_thresholds: self.flow_thresholds.clone(),
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use roam_link::AddrFacts;
    use roam_link::rtnl::{LinkEvent, LinkSeen};
    use roam_policy::Flow;

    use super::*;

    /// A table with wlan0 and rmnet0 up, each with an address (kinds from their names).
    fn links(now: Instant) -> Links {
        let mut links = Links::with_sysfs("/nonexistent".into());
        for (index, name) in [(2, "wlan0"), (3, "rmnet0")] {
            links.apply(
                &LinkEvent::Link(LinkSeen {
                    index,
                    name: name.into(),
                    admin_up: true,
                    carrier: true,
                    loopback: false,
                    info_kind: None,
                }),
                now.into_std(),
            );
            links.apply(
                &LinkEvent::Address {
                    index,
                    facts: AddrFacts::plain(IpAddr::from([198, 18, index as u8, 2]), 24),
                    present: true,
                },
                now.into_std(),
            );
        }
        links.started();
        links
    }

    fn monitor(after: &str, flow: FlowWatch, now: Instant) -> Monitor {
        let policy = Policy::parse(&format!(
            "link wifi = kind wifi\nlink cell = kind cellular\n\
             app \"a\" {{ start on cell then add wifi after {after} }}\n"
        ))
        .unwrap();
        Monitor {
            holds: policy.hold_durations(),
            flow_thresholds: policy.flow_thresholds(Some("a")),
            policy: Arc::new(policy),
            app: Some("a".into()),
            links: links(now),
            flow: Some(FlowFollow::new(flow, now.into_std())),
        }
    }

    fn names(s: &Snapshot) -> Vec<&str> {
        s.decision
            .paths
            .iter()
            .map(|p| p.interface.as_str())
            .collect()
    }

    #[tokio::test]
    async fn the_decision_adds_wifi_once_the_session_reports_1mb() {
        let t0 = Instant::now();
        let (report, watch) = watch::channel(Flow::default());
        let mut m = monitor("1MB", watch, t0);
        let first = m.snapshot(t0);
        assert_eq!(names(&first), ["rmnet0"]);
        assert_eq!(first.flow_thresholds.bytes, [1_000_000]);
        assert_eq!(m.next_flow_age(t0), None, "no age to wake up for");
        report.send_replace(Flow {
            bytes: 1_000_000,
            age_ms: 70,
        });
        let got = FlowFollow::next_report(&mut m.flow).await;
        assert_eq!(got.map(|f| f.bytes), Some(1_000_000));
        assert_eq!(names(&m.snapshot(Instant::now())), ["wlan0", "rmnet0"]);
        // The session gone: said once, then nothing more to wait for.
        drop(report);
        assert_eq!(FlowFollow::next_report(&mut m.flow).await, None);
        let again = tokio::time::timeout(
            Duration::from_millis(20),
            FlowFollow::next_report(&mut m.flow),
        );
        assert!(
            again.await.is_err(),
            "pending for ever once the session is gone"
        );
    }

    #[tokio::test]
    async fn the_monitor_counts_the_age_and_wakes_up_when_it_reaches_the_threshold() {
        let t0 = Instant::now();
        let (_report, watch) = watch::channel(Flow::default());
        let m = monitor("30s", watch, t0);
        assert_eq!(names(&m.snapshot(t0)), ["rmnet0"]);
        // The age thresholds are the monitor's to count: nothing for the session to report.
        assert_eq!(m.flow_thresholds.age_ms, [30_000]);
        let due = m.next_flow_age(t0).expect("a wake-up at 30 s");
        let waited = due.duration_since(t0);
        assert!(
            waited <= Duration::from_secs(30) && waited > Duration::from_millis(29_900),
            "{waited:?}"
        );
        assert_eq!(
            names(&m.snapshot(due - Duration::from_millis(1))),
            ["rmnet0"]
        );
        assert_eq!(names(&m.snapshot(due)), ["wlan0", "rmnet0"]);
        assert_eq!(m.next_flow_age(due), None);
    }
}
