//! What the kernel should look like, from the link table and the policy: policy routing (a
//! table per interface, a source rule per address) and the in-kernel MPTCP endpoints (from the
//! device-wide default decision). The core emits a plan when it changes; the shell's enforcers
//! (`roam_agent::enforce`) make the kernel match it.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use roam_policy::{Interface, Role, State};

use crate::apps::AppRule;
use crate::link;
use crate::{Action, Core};

/// The main routing table's id.
pub const MAIN_TABLE: u32 = 254;

/// The initial congestion window, in segments, of a backup link's routes in its policy-routing
/// table (`ip route ... initcwnd 200`; the kernel's own is 10).
///
/// Why: when the primary dies, an MPTCP connection re-sends everything the primary had in
/// flight, and what queued while the loss was being detected, on the backup subflow at once.
/// That subflow has never sent (a backup carries nothing while the primary works), so its
/// window is still the initial one: with the kernel's 10 segments, the primary's window of
/// about a hundred segments takes 4-5 round trips of the backup to get across, 200-250 ms at
/// a cellular 50 ms. The kernel reads the initial window from the route the subflow's source
/// rule picks, when the subflow is established and again when a connection restarts after
/// idle (`tcp_slow_start_after_idle`), so a route metric is the one setting that survives the
/// backup's idle time; keeping the backup busy instead would not grow an application-limited
/// window and would keep its radio awake. 200 segments (290 kB): what a failover re-sends is
/// the primary's window (BBR's was about 150 segments on the benchmark's 50 ms WiFi path)
/// plus what the app wrote during the few hundred milliseconds a silent loss takes to
/// detect; 200 sends that in one round trip for a few Mbit/s, and stays within what a
/// cellular bearer buffers for one handset. At 50 ms RTT it cut a silent blackhole's pause
/// by about one round trip against 100 segments, and more against 10 (tests/README.md,
/// `handover-bench --rtt 50 --transport mptcp`). Subflows established before the link became
/// a backup keep their window.
///
/// Only the initial congestion window: the receive side needs no help, since an MPTCP
/// connection's receive window is the connection's, announced on every subflow alike, and the
/// peer's sending window on the backup is the peer's route, not ours.
pub const BACKUP_INITCWND: u32 = 200;

/// How long a link that stops being a backup keeps [`BACKUP_INITCWND`] on its routes.
///
/// Why: the moment a backup stops being one is usually the failover itself (its primary died
/// and it is primary now), and the connections that fail over to it are opened or re-sent in
/// the next round trips: a tcp-resume session redials at once and re-sends what it wrote
/// during the loss, an MPTCP subflow established while the link was idle restarts its window
/// from the route. Taking the window away at that moment gave those connections the kernel's
/// 10 segments exactly when they need the failover one (`handover-bench --rtt 50 --transport
/// tcp-resume`: the written data drained over an extra round trip). Three seconds covers a
/// redial, TLS and the re-send on a slow cellular link; after it the link's new connections
/// start as the kernel starts them.
pub const FAILOVER_WINDOW: Duration = Duration::from_secs(3);

/// How policy routing is laid out: one table per interface, one source rule per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Interface `i` gets table `table_base + i`.
    pub table_base: u32,
    /// Priority of the source rules (before the main table's 32766).
    pub rule_priority: u32,
    /// First priority of the per-app rules (`crate::apps`): an app's path `i` is looked up
    /// at `app_priority + i`, its `unreachable` rule right after its last path. After the
    /// source rules, so a socket bound to an address still leaves through that address's link.
    pub app_priority: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            table_base: 1000,
            rule_priority: 10000,
            app_priority: 11000,
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
    /// Per-app (uid range) rules to have: see [`crate::apps`].
    pub app_rules: BTreeSet<AppRule>,
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
    /// The route's initial congestion window in segments (`RTAX_INITCWND`, `ip route ...
    /// initcwnd N`); `None`: the kernel's. Set to [`BACKUP_INITCWND`] on the routes of a link
    /// that is a backup to a primary in the device-wide decision and primary for no app of
    /// the app map, so a failover re-sends the primary's window in one round trip; the
    /// kernel's again once the link is primary (or carries nothing).
    pub initcwnd: Option<u32>,
}

impl PlannedRoute {
    /// The route as the kernel identifies it (table, device, destination, next hop): two
    /// planned routes with the same key are one kernel route with different metrics.
    pub fn key(&self) -> (u32, u32, Option<(IpAddr, u8)>, Option<IpAddr>) {
        (self.table, self.index, self.dst, self.gateway)
    }
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

/// The address family of a planned route: true for IPv6, `None` when it says neither.
pub(crate) fn family_of(r: &PlannedRoute) -> Option<bool> {
    r.dst
        .map(|(a, _)| a.is_ipv6())
        .or(r.gateway.map(|g| g.is_ipv6()))
}

impl Core {
    /// Turns MPTCP endpoint planning on: from now on the core emits [`Action::Mptcp`] whenever
    /// the plan changes.
    pub fn enable_mptcp(&mut self, now: Instant) {
        self.mptcp = Some(MptcpPlan::default());
        self.plan_mptcp(&self.interfaces(now));
    }

    pub(crate) fn plan_mptcp(&mut self, interfaces: &[Interface]) {
        let Some(current) = &self.mptcp else {
            return;
        };
        let device = self.policy.evaluate(&State {
            app: None,
            flow: None,
            interfaces: interfaces.to_vec(),
        });
        // A primary under suspicion (a session reported it stalled; the burst that confirms
        // it has no verdict yet) has its backups' endpoints lose `backup` until the verdict:
        // the kernel's MP_PRIO tells every peer at once, so a peer that streams to the handset
        // (a download) sends what queued behind the silent subflow on the backup's, and that
        // subflow's window has grown by the time the verdict removes the dead one. Measured
        // (`handover-bench --transport mptcp --rtt 50 --scenario blackhole --direction both
        // --repeats 10`, same machine, before -> after): download gap p50/p99 436/465 ->
        // 319/350 ms, upload 272/310 -> 269/274. An answered burst flags them backup again;
        // the backup's radio carries data for that burst's ~100 ms.
        let suspect = device.paths.iter().any(|p| {
            p.role == Role::Primary
                && link::named(&self.links, &p.interface)
                    .is_some_and(|(_, l)| l.watch.under_suspicion())
        });
        let mut plan = MptcpPlan::default();
        for path in &device.paths {
            let Some((index, link)) = link::named(&self.links, &path.interface) else {
                continue;
            };
            for a in link.usable_addrs() {
                plan.endpoints.insert(
                    a,
                    MptcpEndpoint {
                        index,
                        backup: path.role == Role::Backup && !suspect,
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

    /// The interfaces (by index) that are backups to a primary in the device-wide decision
    /// (the policy's default block): their routes get [`BACKUP_INITCWND`].
    fn device_backups(&self, interfaces: &[Interface]) -> BTreeSet<u32> {
        let device = self.policy.evaluate(&State {
            app: None,
            flow: None,
            interfaces: interfaces.to_vec(),
        });
        if !device.paths.iter().any(|p| p.role == Role::Primary) {
            return BTreeSet::new();
        }
        device
            .paths
            .iter()
            .filter(|p| p.role == Role::Backup)
            .filter_map(|p| link::named(&self.links, &p.interface).map(|(i, _)| i))
            .collect()
    }

    /// Turns policy routing on: from now on the core emits [`Action::Routing`] whenever the
    /// plan changes (at once with the current one).
    pub fn enable_routing(&mut self, cfg: RoutingConfig) {
        self.routing = Some((cfg, RoutingPlan::default()));
        // The links are not known yet: app rules wait for the first reconcile.
        self.plan_routing(None);
    }

    /// `state`: now and the link states the per-app rules and the backups' window follow;
    /// `None` keeps the app rules and the windows as they are (nothing to evaluate the policy
    /// on yet).
    pub(crate) fn plan_routing(&mut self, state: Option<(Instant, &[Interface])>) {
        if self.routing.is_none() {
            return;
        }
        let interfaces = state.map(|(_, i)| i);
        if let Some((now, interfaces)) = state {
            let backups = self.device_backups(interfaces);
            // A link that just stopped backing up keeps the window for the failover to it.
            for left in self.backups.difference(&backups) {
                self.failover.insert(*left, now + FAILOVER_WINDOW);
            }
            for b in &backups {
                self.failover.remove(b);
            }
            self.failover.retain(|_, until| *until > now);
            self.backups = backups;
        }
        let Some((cfg, current)) = &self.routing else {
            return;
        };
        let windowed =
            |index: u32| self.backups.contains(&index) || self.failover.contains_key(&index);
        let mut plan = RoutingPlan::default();
        for (&index, link) in &self.links {
            if !link.info.admin_up {
                // The kernel flushes an administratively down link's IPv4 routes from every
                // table without a notification for each: the main-table routes the core
                // remembers are gone, and so are our copies. Planning them again when it
                // comes back up makes the enforcer add them again.
                continue;
            }
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
                    initcwnd: windowed(index).then_some(BACKUP_INITCWND),
                })
                .collect();
            if routes.is_empty() {
                // An empty table would send the link's addresses on to the main table: no
                // rule is better than a rule that promises what it cannot keep.
                continue;
            }
            for a in link.usable_addrs() {
                // Only if the table can reach anything in the address's family.
                if routes.iter().any(|r| family_of(r) == Some(a.is_ipv6())) {
                    plan.rules.insert(PlannedRule {
                        from: a,
                        table,
                        priority: cfg.rule_priority,
                    });
                }
            }
            plan.routes.extend(routes);
        }
        plan.app_rules = match interfaces {
            Some(i) => self.plan_app_rules(cfg, &plan, i),
            None => current.app_rules.clone(),
        };
        // A table some app of the map looks up first (its primary) serves that app's fresh
        // connections, not a failover: it keeps the kernel's initial window.
        let app_primaries: BTreeSet<u32> = plan
            .app_rules
            .iter()
            .filter(|r| r.priority == cfg.app_priority)
            .filter_map(|r| match r.action {
                crate::apps::AppRuleAction::Lookup(t) => Some(t),
                crate::apps::AppRuleAction::Unreachable => None,
            })
            .collect();
        if !app_primaries.is_empty() {
            plan.routes = std::mem::take(&mut plan.routes)
                .into_iter()
                .map(|r| PlannedRoute {
                    initcwnd: r.initcwnd.filter(|_| !app_primaries.contains(&r.table)),
                    ..r
                })
                .collect();
        }
        if &plan != current {
            self.actions.push_back(Action::Routing(plan.clone()));
            if let Some((_, cur)) = &mut self.routing {
                *cur = plan;
            }
        }
    }
}
