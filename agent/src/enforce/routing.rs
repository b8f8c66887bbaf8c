//! Policy routing through rtnetlink: a table per interface, a source rule per address and the
//! per-app (uid range) rules, as the core plans them (`crate::core::RoutingPlan`,
//! `crate::core::apps`). Never runs `ip`.
//!
//! A backup link's routes carry the plan's initial congestion window (`RTAX_INITCWND`, see
//! `crate::core::BACKUP_INITCWND` for why); when only that changes, the route is replaced in
//! place (`NLM_F_REPLACE`), so the table is never empty in between.
//!
//! Everything added carries the routing protocol [`RTPROT_ROAM`] (routes: `rtm_protocol`,
//! rules: `FRA_PROTOCOL`), so cleanup removes exactly what roamd added, also after a crash:
//! `ip route show table all proto 177` and `ip rule show protocol 177` list it.
use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RuleUidRange};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::core::apps::{AppRule, AppRuleAction};
use crate::core::{PlannedRoute, PlannedRule, RoutingPlan};
use crate::nlreq::Requester;

/// The routing protocol number roamd marks its routes and rules with. Unassigned in
/// `/etc/iproute2/rt_protos`; written `proto 177` by `ip`.
pub const RTPROT_ROAM: u8 = 177;

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

/// The message that adds `r` (with its metrics) or, `for_delete`, names it (the kernel finds a
/// route to delete by table, device, destination and next hop, not by its metrics).
fn route_message(r: &PlannedRoute, for_delete: bool) -> Option<RouteMessage> {
    let v6 = r
        .dst
        .map(|(a, _)| a.is_ipv6())
        .or(r.gateway.map(|g| g.is_ipv6()))?;
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::Other(RTPROT_ROAM);
    m.header.kind = RouteType::Unicast;
    m.header.scope = if r.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    m.attributes.push(RouteAttribute::Table(r.table));
    m.attributes.push(RouteAttribute::Oif(r.index));
    if let Some((dst, len)) = r.dst {
        m.header.destination_prefix_length = len;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(dst)));
    }
    if let Some(gw) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(n) = r.initcwnd.filter(|_| !for_delete) {
        m.attributes
            .push(RouteAttribute::Metrics(vec![RouteMetric::InitCwnd(n)]));
    }
    Some(m)
}

fn rule_message(r: &PlannedRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family(r.from);
    m.header.src_len = if r.from.is_ipv6() { 128 } else { 32 };
    m.header.action = RuleAction::ToTable;
    m.attributes.push(RuleAttribute::Source(r.from));
    m.attributes.push(RuleAttribute::Table(r.table));
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_ROAM)));
    m
}

fn app_rule_message(r: &AppRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = if r.v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    if let Some(from) = r.from {
        m.header.src_len = if from.is_ipv6() { 128 } else { 32 };
        m.attributes.push(RuleAttribute::Source(from));
    }
    m.attributes.push(RuleAttribute::UidRange(RuleUidRange {
        start: r.first,
        end: r.last,
    }));
    match r.action {
        AppRuleAction::Lookup(table) => {
            m.header.action = RuleAction::ToTable;
            m.attributes.push(RuleAttribute::Table(table));
        }
        AppRuleAction::Unreachable => m.header.action = RuleAction::Unreachable,
    }
    m.attributes.push(RuleAttribute::Priority(r.priority));
    m.attributes
        .push(RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_ROAM)));
    m
}

/// What a person reads for a route: the `ip route` words.
fn describe_route(r: &PlannedRoute) -> String {
    let dst = r
        .dst
        .map_or_else(|| "default".to_owned(), |(a, l)| format!("{a}/{l}"));
    let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    let cwnd = r
        .initcwnd
        .map(|n| format!(" initcwnd {n}"))
        .unwrap_or_default();
    format!("{dst}{via} dev #{} table {}{cwnd}", r.index, r.table)
}

/// Keeps policy routing as planned and remembers what it added.
#[derive(Debug)]
pub struct RoutingEnforcer {
    rtnl: Requester,
    routes: BTreeSet<PlannedRoute>,
    rules: BTreeSet<PlannedRule>,
    app_rules: BTreeSet<AppRule>,
}

impl RoutingEnforcer {
    /// Opens the request socket.
    pub fn open() -> io::Result<RoutingEnforcer> {
        Ok(RoutingEnforcer {
            rtnl: Requester::open(NETLINK_ROUTE)?,
            routes: BTreeSet::new(),
            rules: BTreeSet::new(),
            app_rules: BTreeSet::new(),
        })
    }

    /// Sends one change and waits for the kernel's acknowledgement.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.rtnl.call(msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// Lists every route and rule marked [`RTPROT_ROAM`] (left by a roamd that did not stop
    /// cleanly) as `ip` words.
    pub fn stale(&mut self) -> io::Result<Vec<String>> {
        let (routes, rules) = self.stale_messages()?;
        Ok(routes
            .iter()
            .map(|m| format!("route {:?}", m.attributes))
            .chain(rules.iter().map(|m| format!("rule {:?}", m.attributes)))
            .collect())
    }

    fn stale_messages(&mut self) -> io::Result<(Vec<RouteMessage>, Vec<RuleMessage>)> {
        let mut routes = Vec::new();
        let mut rules = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut q = RouteMessage::default();
            q.header.address_family = fam;
            for m in self
                .rtnl
                .call(RouteNetlinkMessage::GetRoute(q), NLM_F_DUMP)?
            {
                if let RouteNetlinkMessage::NewRoute(r) = m
                    && r.header.protocol == RouteProtocol::Other(RTPROT_ROAM)
                {
                    routes.push(r);
                }
            }
            let mut q = RuleMessage::default();
            q.header.family = fam;
            for m in self
                .rtnl
                .call(RouteNetlinkMessage::GetRule(q), NLM_F_DUMP)?
            {
                if let RouteNetlinkMessage::NewRule(r) = m
                    && r.attributes
                        .contains(&RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_ROAM)))
                {
                    rules.push(r);
                }
            }
        }
        Ok((routes, rules))
    }

    /// Removes every route and rule marked [`RTPROT_ROAM`], whoever added it. Returns how many.
    pub fn remove_stale(&mut self) -> io::Result<usize> {
        let (routes, rules) = self.stale_messages()?;
        let n = routes.len() + rules.len();
        for r in rules {
            if let Err(e) = self.request(RouteNetlinkMessage::DelRule(r), 0) {
                tracing::warn!(error = %e, "could not remove a stale rule");
            }
        }
        for r in routes {
            if let Err(e) = self.request(RouteNetlinkMessage::DelRoute(r), 0) {
                tracing::warn!(error = %e, "could not remove a stale route");
            }
        }
        Ok(n)
    }

    /// Brings the kernel to `plan`: removes what is no longer planned (rules first, so no
    /// rule points at a table being emptied), then adds what is new (routes first, so no rule
    /// points at an empty table). A failure is logged and that item retried at the next plan.
    pub fn apply(&mut self, plan: &RoutingPlan) {
        let gone_rules: Vec<_> = self.rules.difference(&plan.rules).copied().collect();
        for r in gone_rules {
            match self.request(RouteNetlinkMessage::DelRule(rule_message(&r)), 0) {
                Ok(()) => tracing::info!(from = %r.from, table = r.table, "rule removed"),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    tracing::warn!(from = %r.from, table = r.table, error = %e, "rule not removed")
                }
            }
            self.rules.remove(&r);
        }
        // A route planned again with other metrics is replaced below, not removed.
        let planned_keys: BTreeSet<_> = plan.routes.iter().map(PlannedRoute::key).collect();
        let mut changed = BTreeSet::new();
        let gone_routes: Vec<_> = self.routes.difference(&plan.routes).copied().collect();
        for r in gone_routes {
            if planned_keys.contains(&r.key()) {
                changed.insert(r.key());
                self.routes.remove(&r);
                continue;
            }
            if let Some(m) = route_message(&r, true) {
                match self.request(RouteNetlinkMessage::DelRoute(m), 0) {
                    Ok(()) => tracing::debug!(route = %describe_route(&r), "route removed"),
                    // The kernel drops a table's routes itself when their interface goes.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)
                        ) => {}
                    Err(e) => {
                        tracing::warn!(route = %describe_route(&r), error = %e, "route not removed")
                    }
                }
            }
            self.routes.remove(&r);
        }
        let new_routes: Vec<_> = plan.routes.difference(&self.routes).copied().collect();
        for r in new_routes {
            let Some(m) = route_message(&r, false) else {
                continue;
            };
            let (flags, done) = if changed.contains(&r.key()) {
                (NLM_F_CREATE | NLM_F_REPLACE, "route replaced")
            } else {
                (NLM_F_CREATE | NLM_F_EXCL, "route added")
            };
            match self.request(RouteNetlinkMessage::NewRoute(m), flags) {
                Ok(()) => {
                    tracing::debug!(route = %describe_route(&r), "{done}");
                    self.routes.insert(r);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.routes.insert(r);
                }
                Err(e) => {
                    tracing::warn!(route = %describe_route(&r), error = %e, "route not added")
                }
            }
        }
        let new_rules: Vec<_> = plan.rules.difference(&self.rules).copied().collect();
        for r in new_rules {
            match self.request(
                RouteNetlinkMessage::NewRule(rule_message(&r)),
                NLM_F_CREATE | NLM_F_EXCL,
            ) {
                Ok(()) => {
                    tracing::info!(from = %r.from, table = r.table, "rule added");
                    self.rules.insert(r);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.rules.insert(r);
                }
                Err(e) => {
                    tracing::warn!(from = %r.from, table = r.table, error = %e, "rule not added")
                }
            }
        }
        self.apply_app_rules(&plan.app_rules);
    }

    /// Brings the per-app rules to `planned`: new ones first, then the old ones go, so a uid
    /// never finds neither its old nor its new rules (its traffic would reach the main table,
    /// possibly through a link its app is forbidden). Rules of one priority match in the
    /// order they were added, so an old `unreachable` keeps refusing until it is removed.
    fn apply_app_rules(&mut self, planned: &BTreeSet<AppRule>) {
        let new: Vec<_> = planned.difference(&self.app_rules).copied().collect();
        for r in new {
            match self.request(
                RouteNetlinkMessage::NewRule(app_rule_message(&r)),
                NLM_F_CREATE | NLM_F_EXCL,
            ) {
                Ok(()) => {
                    tracing::info!(rule = %r, "app rule added");
                    self.app_rules.insert(r);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.app_rules.insert(r);
                }
                Err(e) => tracing::warn!(rule = %r, error = %e, "app rule not added"),
            }
        }
        let gone: Vec<_> = self.app_rules.difference(planned).copied().collect();
        for r in gone {
            match self.request(RouteNetlinkMessage::DelRule(app_rule_message(&r)), 0) {
                Ok(()) => tracing::info!(rule = %r, "app rule removed"),
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => tracing::warn!(rule = %r, error = %e, "app rule not removed"),
            }
            self.app_rules.remove(&r);
        }
    }

    /// Removes everything this enforcer added (on exit).
    pub fn clear(&mut self) {
        self.apply(&RoutingPlan::default());
    }
}
