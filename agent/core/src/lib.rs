//! roamd's core: a sans-I/O state machine, with no tokio, netlink, socket or libc in it.
//!
//! Events and the current time go in ([`Core::handle`], [`Core::handle_timeout`]), and so do
//! clients and their requests ([`Core::connect`], [`Core::request`], [`Core::disconnect`]);
//! actions come out ([`Core::poll_action`]) together with the next deadline
//! ([`Core::poll_timeout`]). The core never reads a clock, a socket or a file, so tests drive it
//! with virtual time and the tokio shell (`roam_agent::daemon`) stays a thin loop around it.
//!
//! What it keeps: the link table (carrier, addresses, routes, probe figures), the connected
//! clients with their rights, subscriptions and MPTCP registrations, the decision each
//! subscriber was last sent, and the policy in force. After every event it recomputes link
//! states, plans the kernel (routing tables and rules, MPTCP endpoints from the device-wide
//! default decision) and emits a plan when it changed, re-evaluates every subscriber's decision
//! (once per distinct app id) and pushes only what changed; then it paces the probes: fast on
//! links a subscribed session uses or backs up on, slowly on the other usable links, and not
//! at all with no subscriber.
//!
//! Rooms, by concern:
//! - [`event`]: what goes in and what comes out ([`Event`], [`Action`]).
//! - [`link`]: link states, the usable-address rule, the link's record.
//! - [`plan`]: routing and MPTCP endpoint plans; [`apps`]: per-app (uid) rules.
//! - [`probe`] and `pacing`: probe figures and verdicts, and when to probe.
//! - `steer` and [`subflow`]: per-connection MPTCP steering and the subflow vocabulary.
//! - [`clients`]: the client table and every permission rule.
//! - [`portal`]: captive-portal checks. [`decide`]: the one seam to `roam-policy`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apps;
pub mod clients;
pub mod decide;
pub mod event;
pub mod link;
mod pacing;
pub mod plan;
pub mod portal;
pub mod probe;
mod steer;
pub mod subflow;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use roam_policy::{Decision, Flow, FlowThresholds, Interface, LinkState, State};

use clients::ClientTable;
pub use clients::{AgentFacts, MAX_TOKENS, Peer};
pub use decide::{Policy, PolicyLoadError};
pub use event::{Action, Event, Requested};
use link::{Link, Portal};
pub use link::{LinkInfo, Route};
pub use pacing::{MIN_PROBE_INTERVAL, RECHECK_FIRST, RECHECK_MAX, WIRELESS_REFRESH, radio_tail};
pub use plan::{
    BACKUP_INITCWND, FAILOVER_WINDOW, MAIN_TABLE, MptcpEndpoint, MptcpPlan, PlannedRoute,
    PlannedRule, RoutingConfig, RoutingPlan,
};
pub use portal::{PortalCheck, PortalUrl};
use probe::LinkProbe;
pub use probe::{Pacing, ProbeConfig};
/// The wire's types the core speaks in: `ProbeMode` is one enum for the pace the core sets and
/// the pace `status` shows (roam-ipc is the crate apps link, so it cannot depend on the core;
/// the core depends on it for pure wire types instead of keeping a copy and a conversion).
pub use roam_ipc::proto::{
    ClientView, LinkEnergy, LinkUsage, ProbeMode, ProbeView, Readiness, Update,
};
pub use steer::{CREATE_RETRY, MAX_CONNECTIONS};
pub use subflow::{MptcpEvent, SubflowCommand};

/// Identifies one IPC connection for the lifetime of the agent; never reused.
pub type ClientId = u64;

/// The agent's state machine. See the crate documentation.
#[derive(Debug)]
pub struct Core {
    links: BTreeMap<u32, Link>,
    clients: ClientTable,
    policy: Policy,
    probe_cfg: ProbeConfig,
    facts: AgentFacts,
    next_seq: u64,
    next_recheck: Option<Instant>,
    actions: VecDeque<Action>,
    routing: Option<(RoutingConfig, RoutingPlan)>,
    /// The links (by index) backing up a primary in the device decision at the last plan:
    /// their routes carry `plan::BACKUP_INITCWND`.
    backups: BTreeSet<u32>,
    /// Links that stopped backing up, and until when they keep that window
    /// (`plan::FAILOVER_WINDOW`).
    failover: BTreeMap<u32, Instant>,
    mptcp: Option<MptcpPlan>,
    /// The `[[app]]` map: whose sockets are whose (per-app rules, connections roamd adopts).
    apps: Vec<apps::AppUids>,
    steering: Option<steer::Steering>,
    /// Still taking in the first dump: links usable now were up before roamd started.
    starting: bool,
    /// When each (app, link) last had a stall report start a burst (`pacing`).
    report_bursts: HashMap<(String, u32), Instant>,
}

impl Core {
    /// A core with no links, no clients, this policy and these probe settings.
    pub fn new(policy: Policy, probe_cfg: ProbeConfig) -> Self {
        Core {
            links: BTreeMap::new(),
            clients: ClientTable::default(),
            policy,
            probe_cfg,
            facts: AgentFacts::default(),
            next_seq: 1,
            next_recheck: None,
            actions: VecDeque::new(),
            routing: None,
            backups: BTreeSet::new(),
            failover: BTreeMap::new(),
            mptcp: None,
            apps: Vec::new(),
            steering: None,
            starting: true,
            report_bursts: HashMap::new(),
        }
    }

    /// Ends start-up: the shell calls this once the first dump is in. Links usable until then
    /// count as up since an unknown, long time, so a policy's `hold` does not apply to them
    /// (roam-link's start-up rule, the same in the SDK and on Android).
    pub fn started(&mut self) {
        self.starting = false;
    }

    /// Feeds one event in, at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) {
        self.apply(now, event);
        self.settle(now);
    }

    /// Feeds several events that happened together (one netlink datagram, a re-dump): the
    /// decisions are made once, after the last, so no subscriber sees a half-applied state.
    pub fn handle_all(&mut self, now: Instant, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.apply(now, e);
        }
        self.settle(now);
    }

    /// After lost netlink notifications, `dump` is a fresh dump of every link, address and
    /// route: links missing from it are gone, and the others have exactly its addresses and
    /// routes. One batch, so subscribers only see the outcome.
    pub fn resync(&mut self, now: Instant, dump: Vec<Event>) {
        let seen: BTreeSet<u32> = dump
            .iter()
            .filter_map(|e| match e {
                Event::LinkUpdated(l) => Some(l.index),
                _ => None,
            })
            .collect();
        let forget = self.links.keys().map(|&index| {
            if seen.contains(&index) {
                Event::Forget { index }
            } else {
                Event::LinkRemoved { index }
            }
        });
        let events: Vec<Event> = forget.chain(dump).collect();
        self.handle_all(now, events);
    }

    /// The kernel indices of every link the core knows.
    pub fn link_indices(&self) -> Vec<u32> {
        self.links.keys().copied().collect()
    }

    fn apply(&mut self, now: Instant, event: Event) {
        match event {
            Event::LinkUpdated(info) => {
                let index = info.index;
                match self.links.get_mut(&index) {
                    Some(link) => {
                        // Taking a device administratively down makes the kernel drop its IPv4
                        // routes without an RTM_DELROUTE for them (IPv6 announces its own): forget
                        // them here, or the plan keeps routes that are gone and never adds them
                        // again when they return.
                        if link.info.admin_up && !info.admin_up {
                            link.routes.retain(|r| {
                                r.dst
                                    .map(|(a, _)| a.is_ipv6())
                                    .or(r.gateway.map(|g| g.is_ipv6()))
                                    == Some(true)
                            });
                        }
                        link.info = info;
                    }
                    None => {
                        tracing::info!(interface = %info.name, index, kind = %info.kind, "link appeared");
                        self.links.insert(
                            index,
                            Link {
                                info,
                                addrs: BTreeSet::new(),
                                routes: BTreeSet::new(),
                                probe: LinkProbe::new(),
                                portal: Portal::Unchecked,
                                state: LinkState::Down,
                                up: roam_link::UpTime::Down,
                                mode: ProbeMode::Off,
                                next_probe: None,
                                ssid: None,
                                signal_dbm: None,
                                wireless_asked: None,
                                watch: pacing::Watch::default(),
                            },
                        );
                    }
                }
            }
            Event::LinkRemoved { index } => {
                self.report_bursts.retain(|(_, i), _| *i != index);
                if let Some(link) = self.links.remove(&index) {
                    tracing::info!(interface = %link.info.name, index, "link removed");
                    if link.mode != ProbeMode::Off {
                        self.actions.push_back(Action::StopProbing { index });
                    }
                }
            }
            Event::AddressAdded {
                index,
                addr,
                prefix_len,
            } => {
                if let Some(link) = self.links.get_mut(&index) {
                    link.addrs.insert((addr, prefix_len));
                }
            }
            Event::AddressRemoved {
                index,
                addr,
                prefix_len,
            } => {
                if let Some(link) = self.links.get_mut(&index) {
                    link.addrs.remove(&(addr, prefix_len));
                }
            }
            Event::Forget { index } => {
                if let Some(link) = self.links.get_mut(&index) {
                    link.addrs.clear();
                    link.routes.clear();
                }
            }
            Event::RouteAdded(route) => {
                if let Some(link) = self.links.get_mut(&route.index) {
                    link.routes.insert(route);
                }
            }
            Event::RouteRemoved(route) => {
                if let Some(link) = self.links.get_mut(&route.index) {
                    link.routes.remove(&route);
                }
            }
            Event::ProbeReply { index, seq } => {
                if let Some(link) = self.links.get_mut(&index)
                    && link.probe.reply(seq, now, &self.probe_cfg)
                {
                    link.watch.proven(now);
                }
            }
            Event::PortalChecked { index, status } => {
                if let Some(link) = self.links.get_mut(&index)
                    && let Some(check) = &link.info.portal
                    && let Portal::Pending { at, was } = &mut link.portal
                {
                    let (at, was) = (*at, was.take());
                    link.portal = match status {
                        Ok(s) if s == check.expect => Portal::Open,
                        Ok(s) => Portal::Captive {
                            why: format!(
                                "captive portal: {} answered HTTP {s}, not {}",
                                check.url, check.expect
                            ),
                            at,
                        },
                        Err(e) => Portal::Captive {
                            why: format!("captive portal check of {} failed: {e}", check.url),
                            at,
                        },
                    };
                    if let Portal::Captive { why, .. } = &link.portal
                        && was.as_ref() != Some(why)
                    {
                        tracing::info!(interface = %link.info.name, reason = %why, "not validated");
                    }
                }
            }
            Event::ProbeSendFailed { index, seq } => {
                if let Some(link) = self.links.get_mut(&index) {
                    link.probe.send_failed(seq, &self.probe_cfg);
                }
            }
            Event::Wireless {
                index,
                ssid,
                signal_dbm,
            } => {
                if let Some(link) = self.links.get_mut(&index)
                    && link.info.wireless
                {
                    link.ssid = ssid;
                    link.signal_dbm = signal_dbm.filter(|s| s.is_finite());
                }
            }
            Event::PolicyReplaced(policy) => {
                self.policy = policy;
            }
            Event::Mptcp(e) => self.apply_mptcp_event(e),
            Event::Counters {
                index,
                rx_packets,
                rx_multicast,
                tx_packets,
                tx_multicast,
            } => self.counters(
                now,
                index,
                rx_packets.saturating_sub(rx_multicast),
                tx_packets.saturating_sub(tx_multicast),
            ),
        }
    }

    /// Processes every deadline that has passed by `now` (probe timeouts, probes due, hold
    /// thresholds crossed, subscribers' flows reaching an age their decision depends on).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.settle(now);
    }

    /// The next instant [`Core::handle_timeout`] must be called at, if any. `None`: nothing
    /// will happen until an event arrives (no periodic wakeups when idle).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self
            .links
            .values()
            .flat_map(|l| [l.next_probe, l.probe.next_expiry()].into_iter().flatten());
        // A subflow creation the kernel did not answer with an event is asked again.
        let retries = self
            .steering
            .iter()
            .flat_map(|st| st.conns.values().filter_map(steer::next_retry));
        // A subscriber's flow reaching an age its decision depends on.
        let flows = self.clients.subs.values().filter_map(|c| c.next_flow_check);
        // A promoted backup's failover window ending (`plan::FAILOVER_WINDOW`).
        let windows = self.failover.values().copied();
        links
            .chain(self.next_recheck)
            .chain(self.pacing_deadline())
            .chain(retries)
            .chain(flows)
            .chain(windows)
            .min()
    }

    /// The next action for the shell, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Every managed interface, as in the policy state file, sorted by name.
    pub fn interfaces(&self, now: Instant) -> Vec<Interface> {
        let mut v: Vec<_> = self.links.values().map(|l| l.interface(now)).collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The decision the policy in force gives `app` now, with its explanation.
    pub fn explain(&self, app: &str, flow: Option<Flow>, now: Instant) -> Decision {
        self.policy.evaluate(&State {
            app: Some(app.to_owned()),
            flow,
            interfaces: self.interfaces(now),
        })
    }

    /// The subscribers and what each is using.
    pub fn clients(&self) -> Vec<ClientView> {
        self.clients
            .subs
            .iter()
            .map(|(id, c)| ClientView {
                client: *id,
                app: c.app.clone(),
                primary: c
                    .last
                    .as_ref()
                    .and_then(|d| d.primary())
                    .map(|p| p.interface.clone()),
            })
            .collect()
    }

    /// How each link is being probed, with its addresses, default routes, readiness and
    /// what probing cost it.
    pub fn probes(&self, now: Instant) -> Vec<ProbeView> {
        self.links
            .values()
            .map(|l| ProbeView {
                interface: l.info.name.clone(),
                mode: l.mode,
                default_routes: l
                    .routes
                    .iter()
                    .filter(|r| r.dst.is_none() && r.table == MAIN_TABLE)
                    .count(),
                addresses: l.addrs.iter().map(|(a, p)| format!("{a}/{p}")).collect(),
                readiness: self.readiness_of(l),
                validated_ms_ago: l.watch.evidence_at.map(|t| {
                    u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
                }),
                energy: l.watch.energy,
            })
            .collect()
    }

    /// Every link's readiness and probing cost, sorted by name like [`Core::interfaces`].
    pub fn usage(&self) -> Vec<LinkUsage> {
        let mut v: Vec<_> = self
            .links
            .values()
            .map(|l| LinkUsage {
                interface: l.info.name.clone(),
                readiness: self.readiness_of(l),
                energy: l.watch.energy,
            })
            .collect();
        v.sort_by(|a, b| a.interface.cmp(&b.interface));
        v
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn expire(&mut self, now: Instant) {
        for link in self.links.values_mut() {
            link.probe.expire(now, &self.probe_cfg);
        }
        self.schedule_rechecks(now);
    }

    fn reconcile(&mut self, now: Instant) {
        self.update_states(now);
        let interfaces = self.interfaces(now);
        let summary: Vec<_> = interfaces
            .iter()
            .map(|i| (i.name.clone(), i.kind, i.state))
            .collect();
        // The kernel is brought in line first, then apps are told: an app that moves on the
        // news finds the routes and endpoints already there.
        self.plan_routing(Some((now, &interfaces)));
        self.plan_mptcp(&interfaces);
        let pushes = self.decide_subscribers(now, &interfaces, &summary);
        // Subflows move before apps are told: an app reading the news finds them moved.
        self.plan_steering(now);
        self.actions.extend(pushes);
        self.pace_probes(now);
        self.next_recheck = self.hold_recheck(now);
    }

    /// Re-evaluates every subscriber's decision and returns a push for each one whose
    /// decision (less its explanation), link summary or flow thresholds changed.
    ///
    /// Evaluated once per (app, flow interval, whether the subscriber reports its flow): every
    /// flow between two of the app's thresholds gets the same decision, so a thousand sessions
    /// of one app cost one evaluation per interval they are in (the explanation shows the first
    /// one's flow). What a push says is built once per such group and shared (`Arc`), so the
    /// shell encodes it once; and a group whose outcome equals what its first subscriber was
    /// last sent keeps that very `Arc`, so its other subscribers are checked by pointer. This
    /// runs after every batch of kernel events: with nothing changed, a thousand subscribers
    /// cost a thousand pointer comparisons.
    fn decide_subscribers(
        &mut self,
        now: Instant,
        interfaces: &[Interface],
        summary: &[(String, roam_policy::LinkKind, LinkState)],
    ) -> Vec<Action> {
        /// One group's outcome.
        struct Group {
            interval: (u64, u64),
            told: bool,
            decision: Arc<Decision>,
            key: clients::Pushed,
            update: Option<Arc<Update>>,
            /// The last key a subscriber of the group was found to have been told, and whether
            /// it equals `key`: the group's subscribers were mostly told one shared key last
            /// time, compared in full once instead of once each (a thousand deep compares of
            /// paths and link names were ~6 % of a round that changed the decision).
            compared: Option<(clients::Pushed, bool)>,
        }
        let mut pushes = Vec::new();
        let mut thresholds: HashMap<String, FlowThresholds> = HashMap::new();
        // By app, then the few flow intervals its subscribers are in. Subscribers come in id
        // order, which puts an app's sessions mostly in runs: the previous subscriber's app is
        // tried first (one short string compare), the index by app only when it differs (a
        // thousand SipHashes of the same app id were ~6 % of a decision round).
        let mut groups: Vec<(String, Vec<Group>)> = Vec::new();
        let mut by_app: HashMap<String, usize> = HashMap::new();
        let mut previous: Option<usize> = None;
        for (&id, client) in &mut self.clients.subs {
            let flow = client.flow.map(|f| f.at(now));
            let (interval, told) = match flow {
                Some(f) => {
                    if !thresholds.contains_key(&client.app) {
                        let t = self.policy.flow_thresholds(&client.app);
                        thresholds.insert(client.app.clone(), t);
                    }
                    let t = &thresholds[&client.app];
                    client.next_flow_check = client.flow.and_then(|c| c.next_crossing(t, now));
                    (t.interval_of(f), Some(t))
                }
                None => {
                    client.next_flow_check = None;
                    (Flow::default(), None)
                }
            };
            let interval = (interval.bytes, interval.age_ms);
            let app_at = match previous {
                Some(i) if groups[i].0 == client.app => i,
                _ => *by_app.entry(client.app.clone()).or_insert_with(|| {
                    groups.push((client.app.clone(), Vec::new()));
                    groups.len() - 1
                }),
            };
            previous = Some(app_at);
            let of_app = &mut groups[app_at].1;
            let at = match of_app
                .iter()
                .position(|g| g.interval == interval && g.told == told.is_some())
            {
                Some(i) => i,
                None => {
                    let decision = self.policy.evaluate(&State {
                        app: Some(client.app.clone()),
                        flow,
                        interfaces: interfaces.to_vec(),
                    });
                    let fresh = (
                        decision.multipath,
                        decision.paths.clone(),
                        summary.to_vec(),
                        told.cloned(),
                    );
                    let key = match &client.pushed {
                        Some(p) if **p == fresh => p.clone(),
                        _ => Arc::new(fresh),
                    };
                    of_app.push(Group {
                        interval,
                        told: told.is_some(),
                        decision: Arc::new(decision),
                        key,
                        update: None,
                        compared: None,
                    });
                    of_app.len() - 1
                }
            };
            let group = &mut of_app[at];
            let same = client.pushed.as_ref().is_some_and(|p| {
                if Arc::ptr_eq(p, &group.key) {
                    return true;
                }
                match &group.compared {
                    Some((told, same)) if Arc::ptr_eq(told, p) => *same,
                    _ => {
                        let same = **p == *group.key;
                        group.compared = Some((p.clone(), same));
                        same
                    }
                }
            });
            if !same {
                let update = group.update.get_or_insert_with(|| {
                    tracing::debug!(
                        app = %client.app,
                        primary = group.decision.primary().map(|p| p.interface.as_str()),
                        paths = group.decision.paths.len(),
                        "push"
                    );
                    Arc::new(Update {
                        decision: (*group.decision).clone(),
                        interfaces: interfaces.to_vec(),
                        flow_thresholds: group.key.3.clone(),
                    })
                });
                pushes.push(Action::Push {
                    client: id,
                    update: update.clone(),
                });
            }
            // The group's `Arc` either way: an equal one replaced by pointer, so the next
            // round compares by pointer.
            client.pushed = Some(group.key.clone());
            client.last = Some(group.decision.clone());
        }
        pushes
    }

    /// Brings everything in line after the inputs changed at `now`: probe timeouts counted,
    /// then link states, plans, pushes and probe pacing recomputed.
    pub(crate) fn settle(&mut self, now: Instant) {
        self.expire(now);
        self.reconcile(now);
    }

    /// The first instant after `now` at which a link's `up_for` crosses one of the policy's
    /// hold durations: the decision may change then with no event.
    fn hold_recheck(&self, now: Instant) -> Option<Instant> {
        // The device-wide MPTCP plan follows the default decision even with no subscriber.
        if self.clients.subs.is_empty() && self.mptcp.is_none() && self.apps.is_empty() {
            return None;
        }
        let holds = self.policy.hold_thresholds();
        self.links
            .values()
            .filter_map(|l| l.up.next_crossing(now, &holds))
            .min()
    }
}

#[cfg(test)]
mod tests;
