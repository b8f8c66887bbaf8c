//! The policy over the link table: who is told what, and the SDK's [`DecisionSource`].
//!
//! [`Decider`] is sans-I/O: link facts and `now` in; the decisions that changed, per
//! subscriber, out. Two kinds of subscriber: listeners (the app's Java `DecisionListener`s,
//! known here by an id; the bridge owns their references) and sessions (a watch channel of
//! [`Snapshot`]s, which is what [`DecisionSource::subscribe`] returns).
//!
//! A session that follows flow-size rules (`start on cell then add wifi after 1MB`) subscribes
//! with its flow ([`DecisionSource::subscribe_with_flow`]): its snapshots carry the policy's
//! thresholds, it reports its bytes when they reach one, and the decider counts the flow's age
//! itself ([`FlowClock`]), so the decision changes at a byte report or an age point, never on a
//! timer of the session's.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use roam::decision::{DecisionSource, FlowWatch, Snapshot, SubscribeFuture};
use roam_policy::{Decision, Flow, FlowClock, FlowThresholds, Policy, State};
use tokio::sync::{Notify, watch};

use crate::links::{LinkBook, LinkUpdate, NetworkHandle, UnknownNetwork};

/// A listener's id (unique within one bridge).
pub type ListenerId = u64;

/// A session subscription's id (unique within one bridge), for its flow reports.
pub type SessionId = u64;

#[derive(Debug)]
enum Sink {
    Listener(ListenerId),
    Session {
        id: SessionId,
        tx: watch::Sender<Arc<Snapshot>>,
        /// The session's flow as last reported, when it follows flow-size rules.
        flow: Option<FlowClock>,
    },
}

#[derive(Debug)]
struct Subscriber {
    app: Option<String>,
    sink: Sink,
    last: Option<Arc<Snapshot>>,
}

impl Subscriber {
    fn flow(&self) -> Option<&FlowClock> {
        match &self.sink {
            Sink::Session { flow, .. } => flow.as_ref(),
            Sink::Listener(_) => None,
        }
    }
}

/// The link table, the policy and everyone who follows its decisions.
#[derive(Debug)]
pub struct Decider {
    policy: Policy,
    holds: Vec<Duration>,
    book: LinkBook,
    subscribers: Vec<Subscriber>,
    next_id: ListenerId,
}

impl Decider {
    /// A decider for `policy` with no link yet.
    pub fn new(policy: Policy) -> Decider {
        Decider {
            holds: policy.hold_durations(),
            policy,
            book: LinkBook::default(),
            subscribers: Vec::new(),
            next_id: 1,
        }
    }

    /// The link table.
    pub fn links(&self) -> &LinkBook {
        &self.book
    }

    /// Applies a link update; true when it changed anything.
    pub fn update(&mut self, now: Instant, u: LinkUpdate) -> bool {
        self.book.update(now, u)
    }

    /// Marks a network as losing.
    pub fn losing(&mut self, network: NetworkHandle) -> Result<bool, UnknownNetwork> {
        self.book.losing(network)
    }

    /// Forgets a lost network.
    pub fn lost(&mut self, network: NetworkHandle) -> bool {
        self.book.lost(network)
    }

    /// The decision and links for `app` at `now`, for no particular flow.
    pub fn snapshot(&self, now: Instant, app: Option<&str>) -> Snapshot {
        self.snapshot_for(now, app, None)
    }

    /// The decision and links for `app` at `now` for a session whose flow is `flow` (then
    /// with the thresholds it reports at).
    fn snapshot_for(&self, now: Instant, app: Option<&str>, flow: Option<&FlowClock>) -> Snapshot {
        let state = State {
            app: app.map(str::to_owned),
            flow: flow.map(|c| c.at(now)),
            interfaces: self.book.interfaces(now),
        };
        Snapshot {
            decision: self.policy.evaluate(&state),
            links: self.book.link_views(),
            flow_thresholds: match flow {
                Some(_) => self.policy.flow_thresholds(app),
                None => FlowThresholds::default(),
            },
        }
    }

    /// Adds a listener for `app`'s decisions; returns its id and its first decision.
    pub fn add_listener(&mut self, now: Instant, app: Option<String>) -> (ListenerId, Decision) {
        let id = self.next_id;
        self.next_id += 1;
        let snap = Arc::new(self.snapshot(now, app.as_deref()));
        let first = snap.decision.clone();
        self.subscribers.push(Subscriber {
            app,
            sink: Sink::Listener(id),
            last: Some(snap),
        });
        (id, first)
    }

    /// Removes a listener; false when there was none with that id.
    pub fn remove_listener(&mut self, id: ListenerId) -> bool {
        let before = self.subscribers.len();
        self.subscribers
            .retain(|s| !matches!(s.sink, Sink::Listener(l) if l == id));
        self.subscribers.len() != before
    }

    /// A session's subscription: a receiver holding the current snapshot.
    pub fn subscribe_session(
        &mut self,
        now: Instant,
        app: Option<&str>,
    ) -> watch::Receiver<Arc<Snapshot>> {
        self.subscribe_session_with_flow(now, app, None).1
    }

    /// A session's subscription; with `flow` (the session's first report), its decisions
    /// take the flow into account and it reports at the snapshot's thresholds through
    /// [`Decider::flow_report`] with the returned id.
    pub fn subscribe_session_with_flow(
        &mut self,
        now: Instant,
        app: Option<&str>,
        flow: Option<Flow>,
    ) -> (SessionId, watch::Receiver<Arc<Snapshot>>) {
        let id = self.next_id;
        self.next_id += 1;
        let flow = flow.map(|f| FlowClock::new(f, now));
        let snap = Arc::new(self.snapshot_for(now, app, flow.as_ref()));
        let (tx, rx) = watch::channel(snap.clone());
        self.subscribers.push(Subscriber {
            app: app.map(str::to_owned),
            sink: Sink::Session { id, tx, flow },
            last: Some(snap),
        });
        (id, rx)
    }

    /// A session's flow report: its decision is evaluated again with the flow and sent when
    /// it changed. False when no flow-following session has that id (it ended).
    pub fn flow_report(&mut self, now: Instant, session: SessionId, flow: Flow) -> bool {
        let Some(i) = self.subscribers.iter().position(
            |s| matches!(&s.sink, Sink::Session { id, flow: Some(_), .. } if *id == session),
        ) else {
            return false;
        };
        if let Sink::Session { flow: clock, .. } = &mut self.subscribers[i].sink {
            *clock = Some(FlowClock::new(flow, now));
        }
        let sub = &self.subscribers[i];
        let snap = Arc::new(self.snapshot_for(now, sub.app.as_deref(), sub.flow()));
        let sub = &mut self.subscribers[i];
        if let Sink::Session { tx, .. } = &sub.sink
            && sub.last.as_ref() != Some(&snap)
        {
            tx.send_replace(snap.clone());
        }
        sub.last = Some(snap);
        true
    }

    /// Re-evaluates for every subscriber: sessions are sent their new snapshot here; the
    /// listeners whose paths or multipath mode changed are returned for the caller to call (outside any
    /// lock: a listener may call back into the bridge). Sessions that ended are dropped.
    pub fn publish(&mut self, now: Instant) -> Vec<(ListenerId, Decision)> {
        let mut calls = Vec::new();
        let mut fresh: Vec<(Option<String>, Arc<Snapshot>)> = Vec::new();
        self.subscribers.retain(|s| match &s.sink {
            Sink::Session { tx, .. } => !tx.is_closed(),
            Sink::Listener(_) => true,
        });
        for i in 0..self.subscribers.len() {
            let sub = &self.subscribers[i];
            let app = sub.app.clone();
            // Subscribers of one app share one evaluation, except sessions with a flow of
            // their own.
            let snap = match sub.flow() {
                Some(clock) => Arc::new(self.snapshot_for(now, app.as_deref(), Some(clock))),
                None => match fresh.iter().find(|(a, _)| *a == app) {
                    Some((_, s)) => s.clone(),
                    None => {
                        let s = Arc::new(self.snapshot(now, app.as_deref()));
                        fresh.push((app, s.clone()));
                        s
                    }
                },
            };
            let sub = &mut self.subscribers[i];
            match &sub.sink {
                Sink::Listener(id) => {
                    let changed = sub
                        .last
                        .as_ref()
                        .is_none_or(|l| !same_choice(&l.decision, &snap.decision));
                    if changed {
                        calls.push((*id, snap.decision.clone()));
                    }
                }
                Sink::Session { tx, .. } => {
                    if sub.last.as_ref() != Some(&snap) {
                        tx.send_replace(snap.clone());
                    }
                }
            }
            sub.last = Some(snap);
        }
        calls
    }

    /// When a decision may next change by time alone: a link's up time crossing a `hold`,
    /// or a session's flow age reaching one of its thresholds. [`Decider::publish`] then.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let flows = self.subscribers.iter().filter_map(|s| {
            let clock = s.flow()?;
            let thresholds = &s.last.as_ref()?.flow_thresholds;
            clock.next_crossing(thresholds, now)
        });
        self.book
            .next_hold(now, &self.holds)
            .into_iter()
            .chain(flows)
            .min()
    }
}

/// Whether two decisions choose the same paths the same way; a new explanation alone is not
/// worth waking a listener for.
fn same_choice(a: &Decision, b: &Decision) -> bool {
    a.paths == b.paths && a.multipath == b.multipath
}

/// The decisions of one bridge as a [`DecisionSource`] for SDK sessions: the sessions follow
/// Android's link events instead of a netlink monitor.
#[derive(Debug, Clone)]
pub struct AndroidDecisions {
    decider: Arc<Mutex<Decider>>,
    /// Wakes the bridge's hold timer when a subscriber arrives.
    wake: Arc<Notify>,
}

impl AndroidDecisions {
    /// A source over `decider`; `wake` is notified on every new subscription.
    pub fn new(decider: Arc<Mutex<Decider>>, wake: Arc<Notify>) -> AndroidDecisions {
        AndroidDecisions { decider, wake }
    }
}

/// Locks a decider, carrying on after a panic elsewhere (the table stays consistent: every
/// change is one map operation).
pub(crate) fn lock(d: &Mutex<Decider>) -> MutexGuard<'_, Decider> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

impl DecisionSource for AndroidDecisions {
    fn subscribe<'a>(&'a self, app: Option<&'a str>) -> SubscribeFuture<'a> {
        Box::pin(async move {
            let rx = lock(&self.decider).subscribe_session(Instant::now(), app);
            self.wake.notify_one();
            Ok(rx)
        })
    }

    fn subscribe_with_flow<'a>(
        &'a self,
        app: Option<&'a str>,
        mut flow: FlowWatch,
    ) -> SubscribeFuture<'a> {
        Box::pin(async move {
            let first = *flow.borrow_and_update();
            let (id, rx) =
                lock(&self.decider).subscribe_session_with_flow(Instant::now(), app, Some(first));
            self.wake.notify_one();
            // The session's reports, until it ends (its sender drops). Each re-arms the
            // bridge's timer: the flow's next age point moved.
            let (decider, wake) = (self.decider.clone(), self.wake.clone());
            tokio::spawn(async move {
                while flow.changed().await.is_ok() {
                    let reported = *flow.borrow_and_update();
                    if !lock(&decider).flow_report(Instant::now(), id, reported) {
                        break;
                    }
                    wake.notify_one();
                }
            });
            Ok(rx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Transport;

    const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                          default {\n  prefer wifi over cell\n  hold 1s\n}\n\
                          app \"com.example.video\" {\n  use wifi only\n}\n";

    fn link(net: u64, t: Transport, name: &str, addr: &str) -> LinkUpdate {
        LinkUpdate {
            network: NetworkHandle(net),
            transport: t,
            interface: name.into(),
            addrs: vec![addr.parse().unwrap()],
            not_metered: t == Transport::Wifi,
            validated: true,
            signal_dbm: None,
        }
    }

    fn primary(d: &Decision) -> Option<&str> {
        d.primary().map(|p| p.interface.as_str())
    }

    #[test]
    fn listeners_hear_changes_only_and_sessions_follow() {
        let t0 = Instant::now();
        let mut d = Decider::new(Policy::parse(POLICY).unwrap());
        let (all, first) = d.add_listener(t0, None);
        let (video, _) = d.add_listener(t0, Some("com.example.video".into()));
        assert!(first.is_blocked());
        let mut session = d.subscribe_session(t0, Some("com.example.video"));

        d.update(t0, link(1, Transport::Cellular, "rmnet0", "198.18.1.2"));
        let calls = d.publish(t0);
        // The video app may not use cellular: its decision is still "blocked", so only the
        // default listener is called.
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].0, primary(&calls[0].1)), (all, Some("rmnet0")));
        assert!(session.has_changed().unwrap(), "links changed");
        assert!(session.borrow_and_update().decision.is_blocked());

        let t1 = t0 + Duration::from_secs(2);
        d.update(t1, link(2, Transport::Wifi, "wlan0", "198.18.0.2"));
        let calls = d.publish(t1);
        let ids: Vec<_> = calls.iter().map(|c| c.0).collect();
        assert_eq!(ids, [all, video]);
        // wlan0 just came: rmnet0 (up 2 s) is held primary until wlan0 has been up 1 s.
        assert_eq!(primary(&calls[0].1), Some("rmnet0"));
        assert_eq!(primary(&calls[1].1), Some("wlan0"));
        assert_eq!(d.next_deadline(t1), Some(t1 + Duration::from_secs(1)));
        let t2 = t1 + Duration::from_secs(1);
        let calls = d.publish(t2);
        assert_eq!(calls.len(), 1);
        assert_eq!(primary(&calls[0].1), Some("wlan0"));
        assert!(d.publish(t2).is_empty(), "nothing changed");

        assert!(d.lost(NetworkHandle(2)));
        let calls = d.publish(t2);
        assert!(calls.iter().any(|c| c.0 == video && c.1.is_blocked()));
        assert!(d.remove_listener(video));
        assert!(!d.remove_listener(video));

        drop(session.clone());
        drop(session);
        d.update(t2, link(3, Transport::Wifi, "wlan0", "198.18.0.3"));
        d.publish(t2);
        assert_eq!(d.subscribers.len(), 1, "the ended session was dropped");
    }

    const FLOW_POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                               default {\n  start on cell then add wifi after 1MB\n}\n";
    const AGE_POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                              default {\n  start on cell then add wifi after 30s\n}\n";

    fn two_links(d: &mut Decider, t: Instant) {
        d.update(t, link(1, Transport::Cellular, "rmnet0", "198.18.1.2"));
        d.update(t, link(2, Transport::Wifi, "wlan0", "198.18.0.2"));
    }

    /// The decision's interfaces, sorted (the order is the policy's preference, not at issue).
    fn interfaces(s: &Snapshot) -> Vec<&str> {
        let mut v: Vec<&str> = s
            .decision
            .paths
            .iter()
            .map(|p| p.interface.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_session_reporting_its_bytes_brings_in_wifi_and_others_stay() {
        let t0 = Instant::now();
        let mut d = Decider::new(Policy::parse(FLOW_POLICY).unwrap());
        two_links(&mut d, t0);
        let (id, mut flowing) = d.subscribe_session_with_flow(t0, None, Some(Flow::default()));
        let mut plain = d.subscribe_session(t0, None);
        let first = flowing.borrow_and_update().clone();
        assert_eq!(interfaces(&first), ["rmnet0"], "a new flow starts on cell");
        assert_eq!(
            first.flow_thresholds.bytes,
            [1_000_000],
            "it reports at 1 MB"
        );
        assert!(plain.borrow_and_update().flow_thresholds.bytes.is_empty());

        let t1 = t0 + Duration::from_millis(300);
        let mb = Flow {
            bytes: 1_000_000,
            age_ms: 300,
        };
        assert!(d.flow_report(t1, id, mb));
        assert!(flowing.has_changed().unwrap());
        assert_eq!(
            interfaces(&flowing.borrow_and_update()),
            ["rmnet0", "wlan0"]
        );
        assert!(
            !plain.has_changed().unwrap(),
            "another session's flow moves nobody else"
        );

        // A link change re-evaluates the flowing session with its own flow.
        d.publish(t1);
        assert_eq!(
            interfaces(&flowing.borrow_and_update()),
            ["rmnet0", "wlan0"]
        );
        assert_eq!(interfaces(&plain.borrow_and_update()), ["rmnet0"]);

        assert!(!d.flow_report(t1, 999, mb), "no session has that id");
        drop(flowing);
        d.publish(t1);
        assert!(!d.flow_report(t1, id, mb), "the ended session was dropped");
    }

    #[test]
    fn the_flow_age_wakes_the_decider_by_itself() {
        let t0 = Instant::now();
        let mut d = Decider::new(Policy::parse(AGE_POLICY).unwrap());
        two_links(&mut d, t0);
        assert_eq!(
            d.next_deadline(t0),
            None,
            "no flow, no hold: nothing to wake for"
        );
        let (_, mut s) = d.subscribe_session_with_flow(t0, None, Some(Flow::default()));
        assert_eq!(interfaces(&s.borrow_and_update()), ["rmnet0"]);
        let at = t0 + Duration::from_secs(30);
        assert_eq!(d.next_deadline(t0), Some(at));
        d.publish(at - Duration::from_millis(1));
        assert_eq!(interfaces(&s.borrow_and_update()), ["rmnet0"], "not yet");
        d.publish(at);
        assert_eq!(interfaces(&s.borrow_and_update()), ["rmnet0", "wlan0"]);
        assert_eq!(d.next_deadline(at), None, "past its last age point");
    }

    #[tokio::test]
    async fn the_source_follows_a_sessions_flow_reports() {
        let t0 = Instant::now();
        let mut d = Decider::new(Policy::parse(FLOW_POLICY).unwrap());
        two_links(&mut d, t0);
        let source = AndroidDecisions::new(Arc::new(Mutex::new(d)), Arc::new(Notify::new()));
        let (report, watch) = watch::channel(Flow::default());
        let mut rx = source.subscribe_with_flow(None, watch).await.unwrap();
        assert_eq!(interfaces(&rx.borrow_and_update()), ["rmnet0"]);
        report
            .send(Flow {
                bytes: 2_000_000,
                age_ms: 50,
            })
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("the report reaches the decider")
            .unwrap();
        assert_eq!(interfaces(&rx.borrow_and_update()), ["rmnet0", "wlan0"]);
    }
}
