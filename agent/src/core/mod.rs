//! The agent's core: a sans-I/O state machine.
//!
//! Events and the current time go in ([`Core::handle`], [`Core::handle_timeout`]); actions come
//! out ([`Core::poll_action`]) together with the next deadline ([`Core::poll_timeout`]). The
//! core never reads a clock, a socket or a file, so tests drive it with virtual time and the
//! tokio shell (`crate::daemon`) stays a thin loop around it.
//!
//! What it keeps: the link table (carrier, addresses, routes, probe figures), the subscribed
//! clients and the decision each was last sent, and the policy in force. After every event it
//! recomputes link states, plans the kernel (routing tables and rules, MPTCP endpoints from the
//! device-wide default decision) and emits a plan when it changed, re-evaluates every
//! subscriber's decision (once per distinct app id) and pushes only what changed; then it paces
//! the probes: fast on links a subscribed session uses or backs up on, slowly on the other
//! usable links, and not at all with no subscriber.
pub mod decide;
pub mod probe;
mod steer;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use roam_policy::{Decision, Flow, Interface, LinkKind, LinkState, MultipathMode, Path, State};

use crate::probe::portal::PortalUrl;
pub use decide::{Policy, PolicyLoadError};
pub use probe::ProbeConfig;
use probe::{LinkProbe, Verdict};
pub use roam_ipc::proto::{ClientView, ProbeMode, ProbeView, Update};

/// Identifies one IPC connection for the lifetime of the agent; never reused.
pub type ClientId = u64;

/// What the monitor knows about one interface (kernel index, name, flags) plus what the shell
/// derived for it from sysfs and the config (kind, metered, probe targets).
#[derive(Debug, Clone, PartialEq)]
pub struct LinkInfo {
    /// Kernel interface index.
    pub index: u32,
    /// Kernel interface name.
    pub name: String,
    /// Classification (sysfs, name rules, config overrides).
    pub kind: LinkKind,
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Has carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// Whether the config says the link costs money; `None` when nobody said.
    pub metered: Option<bool>,
    /// Where to send echo probes from this link; empty: the link is never probed.
    pub probe_targets: Vec<SocketAddr>,
    /// sysfs says it is an 802.11 interface: nl80211 can tell its SSID and signal.
    pub wireless: bool,
    /// The captive-portal check: until it answers as expected the link is not `validated`,
    /// whatever the echo probes say. `None`: echo probes alone validate it.
    pub portal: Option<PortalCheck>,
}

/// A URL to fetch from a link and the HTTP status that means "no portal in the way".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalCheck {
    /// What to fetch.
    pub url: PortalUrl,
    /// The status of open internet (204 unless configured).
    pub expect: u16,
}

/// Where a link's captive-portal check stands since the link last came up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Portal {
    /// Not asked yet.
    Unchecked,
    /// Asked at this instant; no answer yet. Keeps the reason of the last captive answer,
    /// so a portal that stays is logged once.
    Pending { at: Instant, was: Option<String> },
    /// The expected status came back.
    Open,
    /// Something else came back (a portal's page, a redirect) or nothing did; asked at this
    /// instant, and asked again at the idle probe pace (the user may log in).
    Captive { why: String, at: Instant },
}

/// How often a wireless link's SSID and signal are asked again while it is probed. Asked
/// with a probe, never on a timer of its own.
pub const WIRELESS_REFRESH: Duration = Duration::from_secs(10);

/// One route the monitor saw; only its owner, table and destination matter to the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// Output interface index.
    pub index: u32,
    /// Routing table id.
    pub table: u32,
    /// Destination prefix; `None` for a default route.
    pub dst: Option<(IpAddr, u8)>,
    /// Next hop, for routes through a gateway.
    pub gateway: Option<IpAddr>,
}

/// The main routing table's id.
pub const MAIN_TABLE: u32 = 254;

/// How policy routing is laid out: one table per interface, one source rule per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Interface `i` gets table `table_base + i`.
    pub table_base: u32,
    /// Priority of the source rules (before the main table's 32766).
    pub rule_priority: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            table_base: 1000,
            rule_priority: 10000,
        }
    }
}

/// What policy routing should look like: for each interface with routes in the main table, a
/// table holding copies of them, and a rule sending traffic from each of its addresses there,
/// so a socket bound to an interface's address leaves through that interface whatever the
/// main table prefers (`ip rule add from ADDR lookup TABLE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingPlan {
    /// Routes to have, each with its table.
    pub routes: BTreeSet<PlannedRoute>,
    /// Source rules to have.
    pub rules: BTreeSet<PlannedRule>,
}

/// One route of a [`RoutingPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedRoute {
    /// Table id.
    pub table: u32,
    /// Output interface.
    pub index: u32,
    /// Destination; `None` for the default route (of the gateway's family).
    pub dst: Option<(IpAddr, u8)>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
}

/// What the in-kernel MPTCP endpoints should be, from the device-wide default decision (the
/// policy's default block): an endpoint per address of every path, `backup` on backup paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MptcpPlan {
    /// Local address -> endpoint.
    pub endpoints: BTreeMap<IpAddr, MptcpEndpoint>,
}

/// One endpoint of an [`MptcpPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MptcpEndpoint {
    /// Interface index the address is on.
    pub index: u32,
    /// Subflows from it carry data only when no other can.
    pub backup: bool,
}

/// One rule of a [`RoutingPlan`]: `from addr lookup table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedRule {
    /// The source address (a host prefix).
    pub from: IpAddr,
    /// The table to look up.
    pub table: u32,
    /// Rule priority.
    pub priority: u32,
}

/// Something that happened, as the shell saw it.
#[derive(Debug, Clone)]
pub enum Event {
    /// An interface appeared or changed (flags, name, classification).
    LinkUpdated(LinkInfo),
    /// An interface disappeared.
    LinkRemoved {
        /// Its kernel index.
        index: u32,
    },
    /// An address became usable on an interface (tentative addresses are not reported).
    AddressAdded {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// An address went away (or failed duplicate address detection).
    AddressRemoved {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// Forget a link's addresses and routes: a fresh dump follows in the same batch
    /// ([`Core::handle_all`]) after notifications were lost.
    Forget {
        /// Interface index.
        index: u32,
    },
    /// A route was added.
    RouteAdded(Route),
    /// A route was removed.
    RouteRemoved(Route),
    /// A probe reply with this sequence number came back on this interface.
    ProbeReply {
        /// Interface index the probe was sent from.
        index: u32,
        /// The sequence number from the reply.
        seq: u64,
    },
    /// A probe could not be sent at all (no route, interface gone): counts as a miss now.
    ProbeSendFailed {
        /// Interface index.
        index: u32,
        /// The sequence number that was to be sent.
        seq: u64,
    },
    /// An SDK session's report about the path it uses.
    PathReport {
        /// The reporting client.
        client: ClientId,
        /// Interface name the session uses.
        interface: String,
        /// RTT the session measured, in milliseconds.
        rtt_ms: Option<f64>,
        /// The session saw no progress: probe that link now rather than at its next turn.
        stalled: bool,
    },
    /// The captive-portal check of this interface finished.
    PortalChecked {
        /// Interface index.
        index: u32,
        /// The HTTP status, or why there is none.
        status: Result<u16, String>,
    },
    /// nl80211's answer about a wireless link.
    Wireless {
        /// Interface index.
        index: u32,
        /// SSID, when associated.
        ssid: Option<String>,
        /// Signal in dBm, when associated.
        signal_dbm: Option<f64>,
    },
    /// A client subscribed to the decisions for an app id (already checked by the shell).
    ClientSubscribed {
        /// The client.
        client: ClientId,
        /// The app id it subscribed as.
        app: String,
        /// The flow its decision is for, if it said.
        flow: Option<Flow>,
    },
    /// A client unsubscribed or went away.
    ClientUnsubscribed {
        /// The client.
        client: ClientId,
    },
    /// A new policy replaces the one in force (it parsed; the shell checked that).
    PolicyReplaced(Policy),
    /// The kernel created or established an MPTCP connection (`mptcp_pm_events`).
    MptcpConnection {
        /// Its token.
        token: u32,
        /// Local address and port of its first subflow.
        local: SocketAddr,
        /// Remote address and port of its first subflow.
        remote: SocketAddr,
    },
    /// An MPTCP connection closed.
    MptcpClosed {
        /// Its token.
        token: u32,
    },
    /// A subflow of an MPTCP connection is established (or changed priority).
    MptcpSubflowUp {
        /// The connection's token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
        /// Its backup flag.
        backup: bool,
    },
    /// A subflow closed, or a join failed.
    MptcpSubflowClosed {
        /// The connection's token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
    },
    /// A subscribed client registered an MPTCP connection: steer it by its decision.
    MptcpRegistered {
        /// The client.
        client: ClientId,
        /// The connection's token.
        token: u32,
    },
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this update to this client.
    Push {
        /// The subscriber.
        client: ClientId,
        /// What changed for it.
        update: Update,
    },
    /// Send one echo probe from this interface (bound to it) to this target.
    SendProbe {
        /// Interface index.
        index: u32,
        /// Interface name (for `SO_BINDTODEVICE`).
        interface: String,
        /// Where the reflector listens.
        target: SocketAddr,
        /// Sequence number to put in the probe; the reply carries it back.
        seq: u64,
    },
    /// Ask nl80211 for this wireless interface's SSID and signal (answer: [`Event::Wireless`]).
    QueryWireless {
        /// Interface index.
        index: u32,
    },
    /// Fetch this URL from this interface (bound to it) and answer with
    /// [`Event::PortalChecked`].
    CheckPortal {
        /// Interface index.
        index: u32,
        /// Interface name (for `SO_BINDTODEVICE`).
        interface: String,
        /// What to fetch.
        url: PortalUrl,
    },
    /// Probing of this interface stopped: its socket can be closed.
    StopProbing {
        /// Interface index.
        index: u32,
    },
    /// Policy routing should now look like this (sent when it changes).
    Routing(RoutingPlan),
    /// The MPTCP endpoints should now look like this (sent when it changes).
    Mptcp(MptcpPlan),
    /// Open a subflow of a registered connection (userspace path manager).
    SubflowCreate {
        /// The connection's token.
        token: u32,
        /// Local address, port 0.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
        /// Join as backup.
        backup: bool,
        /// Interface of the local address.
        index: u32,
        /// The local address's MPTCP address id (stable per address and connection).
        id: u8,
    },
    /// Set or clear a subflow's backup flag (MP_PRIO).
    SubflowSetBackup {
        /// The connection's token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
        /// The new flag.
        backup: bool,
    },
    /// Close a subflow whose link is gone.
    SubflowDestroy {
        /// The connection's token.
        token: u32,
        /// Local address and port.
        local: SocketAddr,
        /// Remote address and port.
        remote: SocketAddr,
    },
}

#[derive(Debug)]
struct Link {
    info: LinkInfo,
    addrs: BTreeSet<(IpAddr, u8)>,
    routes: BTreeSet<Route>,
    probe: LinkProbe,
    portal: Portal,
    state: LinkState,
    up_since: Option<Instant>,
    mode: ProbeMode,
    next_probe: Option<Instant>,
    ssid: Option<String>,
    signal_dbm: Option<f64>,
    wireless_asked: Option<Instant>,
}

impl Link {
    fn has_usable_address(&self) -> bool {
        self.addrs.iter().any(|(a, _)| usable_address(a))
    }

    fn l3_up(&self) -> bool {
        self.info.admin_up && self.info.carrier && self.has_usable_address()
    }

    fn interface(&self, now: Instant) -> Interface {
        let mut i = Interface::new(self.info.name.clone(), self.info.kind, self.state);
        // Three decimals: sub-microsecond digits of a smoothed figure are noise.
        i.rtt_ms = self.probe.rtt_ms().map(|r| (r * 1000.0).round() / 1000.0);
        i.loss_pct = self.probe.loss_pct();
        i.metered = self.info.metered;
        i.ssid = self.ssid.clone();
        i.signal_dbm = self.signal_dbm;
        i.up_for_ms = self.up_since.map(|t| {
            u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)
        });
        i
    }
}

/// The address family of a planned route: true for IPv6, `None` when it says neither.
fn family_of(r: &PlannedRoute) -> Option<bool> {
    r.dst
        .map(|(a, _)| a.is_ipv6())
        .or(r.gateway.map(|g| g.is_ipv6()))
}

/// Link-local, loopback, multicast and unspecified addresses do not make a link usable.
fn usable_address(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_loopback() || a.is_link_local() || a.is_unspecified() || a.is_multicast())
        }
        IpAddr::V6(a) => {
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_unicast_link_local())
        }
    }
}

/// What a client was last sent, less the explanation: a new explanation alone (a figure in it
/// moved) is not worth a push.
type Pushed = (MultipathMode, Vec<Path>, Vec<(String, LinkKind, LinkState)>);

#[derive(Debug)]
struct Client {
    app: String,
    flow: Option<Flow>,
    /// What was last pushed: decision without its explanation, and the link summary.
    pushed: Option<Pushed>,
    last: Option<Decision>,
}

/// The agent's state machine. See the module documentation.
#[derive(Debug)]
pub struct Core {
    links: BTreeMap<u32, Link>,
    clients: BTreeMap<ClientId, Client>,
    policy: Policy,
    probe_cfg: ProbeConfig,
    next_seq: u64,
    next_recheck: Option<Instant>,
    actions: VecDeque<Action>,
    routing: Option<(RoutingConfig, RoutingPlan)>,
    mptcp: Option<MptcpPlan>,
    steering: Option<steer::Steering>,
}

impl Core {
    /// A core with no links, no clients, this policy and these probe settings.
    pub fn new(policy: Policy, probe_cfg: ProbeConfig) -> Self {
        Core {
            links: BTreeMap::new(),
            clients: BTreeMap::new(),
            policy,
            probe_cfg,
            next_seq: 1,
            next_recheck: None,
            actions: VecDeque::new(),
            routing: None,
            mptcp: None,
            steering: None,
        }
    }

    /// Turns per-connection MPTCP steering on (the userspace path manager runs): registered
    /// connections get subflows on their decision's paths, and the backup is promoted and the
    /// dead subflow closed when a path fails ([`Action::SubflowCreate`] and friends).
    pub fn enable_steering(&mut self) {
        self.steering = Some(steer::Steering::default());
    }

    /// Whether the kernel told about a client-side MPTCP connection with this token, and the
    /// subflows it has: `(local, remote)` pairs.
    pub fn mptcp_subflows(&self, token: u32) -> Option<Vec<(SocketAddr, SocketAddr)>> {
        let c = self.steering.as_ref()?.conns.get(&token)?;
        Some(c.subflows.keys().copied().collect())
    }

    /// The MPTCP address id for a subflow of connection `token` from `local` (an app's own
    /// `mptcp_subflow_create`): the same allocation as roamd's own subflows, so the two never
    /// collide. `None` for an unknown connection or when its ids are exhausted.
    pub fn mptcp_local_id(&mut self, token: u32, local: IpAddr) -> Option<u8> {
        self.steering
            .as_mut()?
            .conns
            .get_mut(&token)?
            .local_id(local)
    }

    fn plan_steering(&mut self, now: Instant) {
        let Some(st) = &mut self.steering else { return };
        for (&token, conn) in st.conns.iter_mut() {
            let Some(decision) = conn
                .client
                .and_then(|c| self.clients.get(&c))
                .and_then(|c| c.last.as_ref())
            else {
                // Nobody steers it: no creation of ours is waiting for an answer.
                conn.creating.clear();
                continue;
            };
            let mut wants = Vec::new();
            for path in &decision.paths {
                let Some((&index, link)) = self
                    .links
                    .iter()
                    .find(|(_, l)| l.info.name == path.interface)
                else {
                    continue;
                };
                if !link.state.is_usable() {
                    continue;
                }
                for (a, _) in link.addrs.iter().filter(|(a, _)| usable_address(a)) {
                    wants.push(steer::Want {
                        addr: *a,
                        index,
                        backup: path.role == roam_policy::Role::Backup,
                    });
                }
            }
            for step in steer::plan(conn, &wants, now) {
                tracing::info!(token, ?step, "steering");
                self.actions.push_back(match step {
                    steer::Step::Promote {
                        local,
                        remote,
                        backup,
                    } => Action::SubflowSetBackup {
                        token,
                        local,
                        remote,
                        backup,
                    },
                    steer::Step::Create {
                        local,
                        remote,
                        backup,
                        index,
                        id,
                    } => Action::SubflowCreate {
                        token,
                        local,
                        remote,
                        backup,
                        index,
                        id,
                    },
                    steer::Step::Destroy { local, remote } => Action::SubflowDestroy {
                        token,
                        local,
                        remote,
                    },
                });
            }
        }
    }

    /// Turns MPTCP endpoint planning on: from now on the core emits [`Action::Mptcp`] whenever
    /// the plan changes.
    pub fn enable_mptcp(&mut self, now: Instant) {
        self.mptcp = Some(MptcpPlan::default());
        self.plan_mptcp(&self.interfaces(now));
    }

    fn plan_mptcp(&mut self, interfaces: &[Interface]) {
        let Some(current) = &self.mptcp else {
            return;
        };
        let device = self.policy.evaluate(&State {
            app: None,
            flow: None,
            interfaces: interfaces.to_vec(),
        });
        let mut plan = MptcpPlan::default();
        for path in &device.paths {
            let Some((&index, link)) = self
                .links
                .iter()
                .find(|(_, l)| l.info.name == path.interface)
            else {
                continue;
            };
            for (a, _) in link.addrs.iter().filter(|(a, _)| usable_address(a)) {
                plan.endpoints.insert(
                    *a,
                    MptcpEndpoint {
                        index,
                        backup: path.role == roam_policy::Role::Backup,
                    },
                );
            }
        }
        if plan.endpoints.is_empty() && !current.endpoints.is_empty() {
            // No usable path left: removing the last endpoints would only make the kernel
            // close the subflows connections still have (a link judged down by probes on an
            // overloaded device may still carry them), with nothing to move to. They stay
            // until a path is usable again.
            tracing::info!("no usable path: MPTCP endpoints kept as they are");
            return;
        }
        if &plan != current {
            self.actions.push_back(Action::Mptcp(plan.clone()));
            self.mptcp = Some(plan);
        }
    }

    /// Turns policy routing on: from now on the core emits [`Action::Routing`] whenever the
    /// plan changes (at once with the current one).
    pub fn enable_routing(&mut self, cfg: RoutingConfig) {
        self.routing = Some((cfg, RoutingPlan::default()));
        self.plan_routing();
    }

    fn plan_routing(&mut self) {
        let Some((cfg, current)) = &self.routing else {
            return;
        };
        let mut plan = RoutingPlan::default();
        for (&index, link) in &self.links {
            let table = cfg.table_base.saturating_add(index);
            let routes: Vec<PlannedRoute> = link
                .routes
                .iter()
                .filter(|r| r.table == MAIN_TABLE)
                .map(|r| PlannedRoute {
                    table,
                    index,
                    dst: r.dst,
                    gateway: r.gateway,
                })
                .collect();
            if routes.is_empty() {
                // An empty table would send the link's addresses on to the main table: no
                // rule is better than a rule that promises what it cannot keep.
                continue;
            }
            for (a, _) in link.addrs.iter().filter(|(a, _)| usable_address(a)) {
                // Only if the table can reach anything in the address's family.
                if routes.iter().any(|r| family_of(r) == Some(a.is_ipv6())) {
                    plan.rules.insert(PlannedRule {
                        from: *a,
                        table,
                        priority: cfg.rule_priority,
                    });
                }
            }
            plan.routes.extend(routes);
        }
        if &plan != current {
            self.actions.push_back(Action::Routing(plan.clone()));
            if let Some((_, cur)) = &mut self.routing {
                *cur = plan;
            }
        }
    }

    /// Feeds one event in, at `now`.
    pub fn handle(&mut self, now: Instant, event: Event) {
        self.apply(now, event);
        self.expire(now);
        self.reconcile(now);
    }

    /// Feeds several events that happened together (one netlink datagram, a re-dump): the
    /// decisions are made once, after the last, so no subscriber sees a half-applied state.
    pub fn handle_all(&mut self, now: Instant, events: impl IntoIterator<Item = Event>) {
        for e in events {
            self.apply(now, e);
        }
        self.expire(now);
        self.reconcile(now);
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
                    Some(link) => link.info = info,
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
                                up_since: None,
                                mode: ProbeMode::Off,
                                next_probe: None,
                                ssid: None,
                                signal_dbm: None,
                                wireless_asked: None,
                            },
                        );
                    }
                }
            }
            Event::LinkRemoved { index } => {
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
                if let Some(link) = self.links.get_mut(&index) {
                    link.probe.reply(seq, now, &self.probe_cfg);
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
            Event::PathReport {
                client,
                interface,
                rtt_ms,
                stalled,
            } => {
                if !self.clients.contains_key(&client) {
                    return;
                }
                if let Some(link) = self.links.values_mut().find(|l| l.info.name == interface) {
                    // A minute is no round trip a session can measure; such a figure is a bug or
                    // a lie, and either would skew the link for everyone.
                    if let Some(rtt) = rtt_ms.filter(|r| (0.0..=60_000.0).contains(r)) {
                        link.probe.rtt_sample(rtt);
                    }
                    // A stalled session is the cheapest failure detector there is: check the
                    // link now instead of at its next turn; but no client can make the agent
                    // probe faster than MIN_PROBE_INTERVAL by reporting stalls in a loop.
                    let rested = link
                        .probe
                        .last_sent()
                        .is_none_or(|t| now.saturating_duration_since(t) >= MIN_PROBE_INTERVAL);
                    if stalled && link.mode != ProbeMode::Off && rested {
                        link.next_probe = Some(now);
                    }
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
            Event::ClientSubscribed { client, app, flow } => {
                self.clients.insert(
                    client,
                    Client {
                        app,
                        flow,
                        pushed: None,
                        last: None,
                    },
                );
            }
            Event::ClientUnsubscribed { client } => {
                self.clients.remove(&client);
                if let Some(st) = &mut self.steering {
                    for c in st.conns.values_mut().filter(|c| c.client == Some(client)) {
                        c.client = None;
                    }
                }
            }
            Event::PolicyReplaced(policy) => {
                self.policy = policy;
            }
            Event::MptcpConnection {
                token,
                local,
                remote,
            } => {
                if let Some(st) = &mut self.steering {
                    let c = st.conn(token);
                    c.remote = Some(remote);
                    // CREATED then ESTABLISHED name the same first subflow.
                    c.subflows.entry((local, remote)).or_insert(false);
                }
            }
            Event::MptcpClosed { token } => {
                if let Some(st) = &mut self.steering {
                    st.conns.remove(&token);
                }
            }
            Event::MptcpSubflowUp {
                token,
                local,
                remote,
                backup,
            } => {
                if let Some(st) = &mut self.steering
                    && let Some(c) = st.conns.get_mut(&token)
                {
                    // The event's flag is the peer's (MP_JOIN's answer, or its MP_PRIO): ours
                    // is the one we asked for, and stays what we last set.
                    let asked = c.creating.remove(&local.ip()).map(|(_, b)| b);
                    c.subflows
                        .entry((local, remote))
                        .or_insert(asked.unwrap_or(backup));
                }
            }
            Event::MptcpSubflowClosed {
                token,
                local,
                remote,
            } => {
                if let Some(st) = &mut self.steering
                    && let Some(c) = st.conns.get_mut(&token)
                {
                    c.subflows.remove(&(local, remote));
                    c.destroying.remove(&(local, remote));
                }
            }
            Event::MptcpRegistered { client, token } => {
                if self.clients.contains_key(&client)
                    && let Some(st) = &mut self.steering
                {
                    st.conn(token).client = Some(client);
                }
            }
        }
    }

    /// Processes every deadline that has passed by `now` (probe timeouts, probes due, hold
    /// thresholds crossed).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire(now);
        self.reconcile(now);
    }

    /// The next instant [`Core::handle_timeout`] must be called at, if any. `None`: nothing
    /// will happen until an event arrives (no periodic wakeups when idle).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.links.values().flat_map(|l| {
            [l.next_probe, l.probe.next_expiry(&self.probe_cfg)]
                .into_iter()
                .flatten()
        });
        // A subflow creation the kernel did not answer with an event is asked again.
        let retries = self
            .steering
            .iter()
            .flat_map(|st| st.conns.values().filter_map(steer::next_retry));
        links.chain(self.next_recheck).chain(retries).min()
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

    /// How each link is being probed, with its addresses and default routes.
    pub fn probes(&self) -> Vec<ProbeView> {
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
            })
            .collect()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    fn expire(&mut self, now: Instant) {
        for link in self.links.values_mut() {
            link.probe.expire(now, &self.probe_cfg);
        }
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
        self.plan_routing();
        self.plan_mptcp(&interfaces);
        let mut pushes = Vec::new();
        // Evaluate once per (app, flow): a thousand sessions of one app cost one evaluation.
        let mut cache: HashMap<(String, Option<(u64, u64)>), Decision> = HashMap::new();
        for (&id, client) in &mut self.clients {
            let decision = cache
                .entry((client.app.clone(), client.flow.map(|f| (f.bytes, f.age_ms))))
                .or_insert_with(|| {
                    self.policy.evaluate(&State {
                        app: Some(client.app.clone()),
                        flow: client.flow,
                        interfaces: interfaces.clone(),
                    })
                })
                .clone();
            let key = (decision.multipath, decision.paths.clone(), summary.clone());
            if client.pushed.as_ref() != Some(&key) {
                let _span = tracing::debug_span!("client", id, app = %client.app).entered();
                tracing::debug!(
                    primary = decision.primary().map(|p| p.interface.as_str()),
                    paths = decision.paths.len(),
                    "push"
                );
                client.pushed = Some(key);
                pushes.push(Action::Push {
                    client: id,
                    update: Update {
                        decision: decision.clone(),
                        interfaces: interfaces.clone(),
                    },
                });
            }
            client.last = Some(decision);
        }
        // Subflows move before apps are told: an app reading the news finds them moved.
        self.plan_steering(now);
        self.actions.extend(pushes);
        self.pace_probes(now);
        self.next_recheck = self.hold_recheck(now);
    }

    fn update_states(&mut self, now: Instant) {
        for link in self.links.values_mut() {
            let l3 = link.l3_up();
            if !l3 && link.probe.verdict() != Verdict::Unprobed {
                // Figures from before a link lost carrier or address say nothing about it when
                // it returns: it starts again as `up`.
                link.probe.reset();
            }
            if !l3 {
                link.portal = Portal::Unchecked;
            }
            let new = if l3 {
                let probed = link.probe.state(&self.probe_cfg);
                // Echo replies prove a path to the reflector, not to the internet: with a
                // portal check configured, only its expected answer validates.
                let portal_open = link.info.portal.is_none() || link.portal == Portal::Open;
                if probed.is_usable() && probed != LinkState::Up && !portal_open {
                    LinkState::Up
                } else {
                    probed
                }
            } else {
                LinkState::Down
            };
            if new != link.state {
                let _span = tracing::info_span!("link", interface = %link.info.name).entered();
                let why = if new.is_usable() && !link.state.is_usable() {
                    match link.probe.verdict() {
                        Verdict::Unprobed => "carrier and a usable address",
                        _ => "probe answered",
                    }
                } else if !link.info.admin_up {
                    "administratively down"
                } else if !link.info.carrier {
                    "no carrier"
                } else if !link.has_usable_address() {
                    "no usable address"
                } else if link.probe.verdict() == Verdict::Failed {
                    "probes unanswered"
                } else if let Portal::Captive { why, .. } = &link.portal {
                    why.as_str()
                } else {
                    "probe figures"
                };
                tracing::info!(from = %link.state, to = %new, reason = why, "link state");
                match (link.state.is_usable(), new.is_usable()) {
                    (false, true) => {
                        link.up_since = Some(now);
                        if link.info.wireless {
                            // Associated to what, and how well: asked once now, then with
                            // probes.
                            link.wireless_asked = Some(now);
                            self.actions.push_back(Action::QueryWireless {
                                index: link.info.index,
                            });
                        }
                    }
                    (true, false) => {
                        link.up_since = None;
                        link.ssid = None;
                        link.signal_dbm = None;
                    }
                    _ => {}
                }
                link.state = new;
            }
        }
    }

    fn pace_probes(&mut self, now: Instant) {
        let used: HashSet<&str> = self
            .clients
            .values()
            .filter_map(|c| c.last.as_ref())
            .flat_map(|d| d.paths.iter().map(|p| p.interface.as_str()))
            .collect();
        let subscribed = !self.clients.is_empty();
        for (&index, link) in &mut self.links {
            let mode = if !subscribed || !link.l3_up() || link.info.probe_targets.is_empty() {
                ProbeMode::Off
            } else if used.contains(link.info.name.as_str()) {
                ProbeMode::Fast
            } else {
                ProbeMode::Idle
            };
            let interval = match mode {
                ProbeMode::Off => None,
                ProbeMode::Idle => Some(self.probe_cfg.idle_interval),
                ProbeMode::Fast => Some(self.probe_cfg.fast_interval),
            };
            if mode != link.mode {
                tracing::debug!(interface = %link.info.name, from = ?link.mode, to = ?mode, "probe pace");
                link.mode = mode;
                match interval {
                    None => {
                        link.next_probe = None;
                        link.probe.abandon();
                        self.actions.push_back(Action::StopProbing { index });
                    }
                    Some(iv) => {
                        let due = link.probe.last_sent().map_or(now, |t| (t + iv).max(now));
                        link.next_probe = Some(link.next_probe.map_or(due, |n| n.min(due)));
                    }
                }
            }
            let Some(iv) = interval else { continue };
            while let Some(due) = link.next_probe
                && due <= now
            {
                let seq = self.next_seq;
                self.next_seq += 1;
                let targets = &link.info.probe_targets;
                let target = targets[(seq % targets.len() as u64) as usize];
                link.probe.sent(seq, now);
                if link.info.wireless
                    && link
                        .wireless_asked
                        .is_none_or(|t| now.saturating_duration_since(t) >= WIRELESS_REFRESH)
                {
                    link.wireless_asked = Some(now);
                    self.actions.push_back(Action::QueryWireless { index });
                }
                self.actions.push_back(Action::SendProbe {
                    index,
                    interface: link.info.name.clone(),
                    target,
                    seq,
                });
                // With a probe, never on a timer of its own: once when the link comes up,
                // again at the idle pace while a portal is in the way.
                let ask = match &link.portal {
                    Portal::Unchecked => true,
                    Portal::Captive { at, .. } => {
                        now.saturating_duration_since(*at) >= self.probe_cfg.idle_interval
                    }
                    Portal::Pending { .. } | Portal::Open => false,
                };
                if ask && let Some(check) = &link.info.portal {
                    let was = match &link.portal {
                        Portal::Captive { why, .. } => Some(why.clone()),
                        _ => None,
                    };
                    link.portal = Portal::Pending { at: now, was };
                    self.actions.push_back(Action::CheckPortal {
                        index,
                        interface: link.info.name.clone(),
                        url: check.url.clone(),
                    });
                }
                // After a long pause (the shell was late) send one probe, not a burst.
                link.next_probe = Some((due + iv).max(now + iv / 2));
            }
        }
    }

    /// The first instant after `now` at which a link's `up_for` crosses one of the policy's
    /// hold durations: the decision may change then with no event.
    fn hold_recheck(&self, now: Instant) -> Option<Instant> {
        // The device-wide MPTCP plan follows the default decision even with no subscriber.
        if self.clients.is_empty() && self.mptcp.is_none() {
            return None;
        }
        let holds = self.policy.hold_thresholds();
        self.links
            .values()
            .filter_map(|l| l.up_since)
            .flat_map(|t| holds.iter().map(move |d| t + *d))
            .filter(|t| *t > now)
            .min()
    }
}

/// Nothing is probed faster than this, whatever the config says: a misconfigured agent must
/// not turn into a packet generator.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests;
