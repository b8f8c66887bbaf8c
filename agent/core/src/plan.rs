//! What the kernel should look like, from the link table and the policy: policy routing (a
//! table per interface, a source rule per address) and the in-kernel MPTCP endpoints (from the
//! device-wide default decision). The core emits a plan when it changes; the shell's enforcers
//! (`roam_agent::enforce`) make the kernel match it.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use roam_policy::{Interface, State};

use crate::apps::AppRule;
use crate::link;
use crate::{Action, Core};

/// The main routing table's id.
pub const MAIN_TABLE: u32 = 254;

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
        // The links are not known yet: app rules wait for the first reconcile.
        self.plan_routing(None);
    }

    /// `interfaces`: the link states the per-app rules follow; `None` keeps the app rules as
    /// they are (nothing to evaluate the policy on yet).
    pub(crate) fn plan_routing(&mut self, interfaces: Option<&[Interface]>) {
        let Some((cfg, current)) = &self.routing else {
            return;
        };
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
        if &plan != current {
            self.actions.push_back(Action::Routing(plan.clone()));
            if let Some((_, cur)) = &mut self.routing {
                *cur = plan;
            }
        }
    }
}
