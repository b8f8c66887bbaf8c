//! The policy over the link table: who is told what, and the SDK's [`DecisionSource`].
//!
//! [`Decider`] is sans-I/O: link facts and `now` in; the decisions that changed, per
//! subscriber, out. Two kinds of subscriber: listeners (the app's Java `DecisionListener`s,
//! known here by an id; the bridge owns their references) and sessions (a watch channel of
//! [`Snapshot`]s, which is what [`DecisionSource::subscribe`] returns).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use roam::decision::{DecisionSource, Snapshot, SubscribeFuture};
use roam_policy::{Decision, Policy, State};
use tokio::sync::{Notify, watch};

use crate::links::{LinkBook, LinkUpdate, NetworkHandle, UnknownNetwork};

/// A listener's id (unique within one bridge).
pub type ListenerId = u64;

#[derive(Debug)]
enum Sink {
    Listener(ListenerId),
    Session(watch::Sender<Arc<Snapshot>>),
}

#[derive(Debug)]
struct Subscriber {
    app: Option<String>,
    sink: Sink,
    last: Option<Arc<Snapshot>>,
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

    /// The decision and links for `app` at `now`.
    pub fn snapshot(&self, now: Instant, app: Option<&str>) -> Snapshot {
        let state = State {
            app: app.map(str::to_owned),
            flow: None,
            interfaces: self.book.interfaces(now),
        };
        Snapshot {
            decision: self.policy.evaluate(&state),
            links: self.book.link_views(),
            // Android sessions report no flow yet: decisions for zero bytes and zero age.
            flow_thresholds: Default::default(),
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
        let snap = Arc::new(self.snapshot(now, app));
        let (tx, rx) = watch::channel(snap.clone());
        self.subscribers.push(Subscriber {
            app: app.map(str::to_owned),
            sink: Sink::Session(tx),
            last: Some(snap),
        });
        rx
    }

    /// Re-evaluates for every subscriber: sessions are sent their new snapshot here; the
    /// listeners whose paths or multipath mode changed are returned for the caller to call (outside any
    /// lock: a listener may call back into the bridge). Sessions that ended are dropped.
    pub fn publish(&mut self, now: Instant) -> Vec<(ListenerId, Decision)> {
        let mut calls = Vec::new();
        let mut fresh: Vec<(Option<String>, Arc<Snapshot>)> = Vec::new();
        self.subscribers.retain(|s| match &s.sink {
            Sink::Session(tx) => !tx.is_closed(),
            Sink::Listener(_) => true,
        });
        for i in 0..self.subscribers.len() {
            let app = self.subscribers[i].app.clone();
            // Subscribers of one app share one evaluation.
            let snap = match fresh.iter().find(|(a, _)| *a == app) {
                Some((_, s)) => s.clone(),
                None => {
                    let s = Arc::new(self.snapshot(now, app.as_deref()));
                    fresh.push((app, s.clone()));
                    s
                }
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
                Sink::Session(tx) => {
                    if sub.last.as_ref() != Some(&snap) {
                        tx.send_replace(snap.clone());
                    }
                }
            }
            sub.last = Some(snap);
        }
        calls
    }

    /// When the decision may next change by time alone (a link's up time crossing a `hold`).
    pub fn next_hold(&self, now: Instant) -> Option<Instant> {
        self.book.next_hold(now, &self.holds)
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
        assert_eq!(d.next_hold(t1), Some(t1 + Duration::from_secs(1)));
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
}
