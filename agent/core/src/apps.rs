//! Per-app kernel rules: the `[[app]]` map's uids bound to their app's decision in the kernel,
//! for programs that never talk to roamd (they do not link the SDK).
//!
//! For every app in the map and each address family, the plan holds, at consecutive
//! priorities from [`RoutingConfig::app_priority`]:
//!
//! - `uidrange FIRST-LAST lookup TABLE` for each usable path of the app's decision, in the
//!   decision's order (primary first), where TABLE is that interface's policy-routing table
//!   and it has routes of the family;
//! - then `uidrange FIRST-LAST unreachable`: whatever the app's tables cannot reach fails at
//!   once. `connect()` returns `ENETUNREACH` ("Network is unreachable"), `sendto()` on UDP the
//!   same; no packet leaves. An app whose decision has no path gets only this rule.
//!
//! and, one priority before the source rules (`rule_priority - 1`), for every usable address
//! of a link the decision does not name: `from ADDR uidrange FIRST-LAST unreachable`, so a
//! program that binds to a forbidden link's address explicitly is refused too instead of
//! leaving through that link's source rule.
//!
//! The app rules come after the source rules on purpose: a socket bound to an address (every
//! MPTCP subflow roamd opens) leaves through that address's link, whoever owns it.
//! Destinations in the local table (loopback, the handset's own addresses) are looked up at
//! priority 0, before all of this, and stay reachable.
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use roam_policy::{Interface, State};

use crate::Core;
use crate::link;
use crate::plan::{RoutingConfig, RoutingPlan};

/// How many paths of one app's decision get a rule; later ones are left out (the
/// `unreachable` rule then covers them).
pub const MAX_APP_PATHS: u32 = 64;

/// The errno a program of an app sees when its decision leaves it no path to a destination
/// (`ENETUNREACH`, 101 on Linux): what an `unreachable` rule answers.
pub const BLOCKED_ERRNO: i32 = 101;

/// One entry of the `[[app]]` map: the uids `first..=last` (one uid: `first == last`) are the
/// app `app`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUids {
    /// The first uid.
    pub first: u32,
    /// The last uid (inclusive).
    pub last: u32,
    /// The app id the policy names.
    pub app: String,
}

impl AppUids {
    /// Whether `uid` is one of these.
    pub fn contains(&self, uid: u32) -> bool {
        (self.first..=self.last).contains(&uid)
    }
}

/// The app id of `uid`: its `[[app]]` entry's, else `uid:N` (the policy's default block
/// applies to it).
pub fn app_of(apps: &[AppUids], uid: u32) -> String {
    apps.iter()
        .find(|a| a.contains(uid))
        .map_or_else(|| format!("uid:{uid}"), |a| a.app.clone())
}

/// What an [`AppRule`] does with a packet it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AppRuleAction {
    /// Look the destination up in this table; no route there: on to the next rule.
    Lookup(u32),
    /// Refuse: the socket gets [`BLOCKED_ERRNO`].
    Unreachable,
}

/// One per-app rule of a [`RoutingPlan`] (`ip rule add uidrange FIRST-LAST ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppRule {
    /// Rule priority.
    pub priority: u32,
    /// The first uid it matches.
    pub first: u32,
    /// The last uid it matches (inclusive).
    pub last: u32,
    /// Its address family: true for IPv6.
    pub v6: bool,
    /// Matches only this source address (the guard on a forbidden link's address).
    pub from: Option<IpAddr>,
    /// What it does.
    pub action: AppRuleAction,
}

impl fmt::Display for AppRule {
    /// The `ip rule` words, as `ip -4 rule show` / `ip -6 rule show` print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.priority,
            if self.v6 { "-6" } else { "-4" }
        )?;
        if let Some(a) = self.from {
            write!(f, " from {a}")?;
        }
        write!(f, " uidrange {}-{}", self.first, self.last)?;
        match self.action {
            AppRuleAction::Lookup(t) => write!(f, " lookup {t}"),
            AppRuleAction::Unreachable => write!(f, " unreachable"),
        }
    }
}

impl Core {
    /// Sets the `[[app]]` map at `now`: per-app rules follow it from now on (with policy
    /// routing on), and MPTCP connections of these uids are steered as their app's decision
    /// says.
    ///
    /// Takes effect at the next event or timeout: the shell sets it before the first dump,
    /// when no link is known and every app would be refused.
    pub fn set_apps(&mut self, apps: Vec<AppUids>) {
        self.apps = apps;
    }

    /// The app id of `uid` under the `[[app]]` map (`uid:N` when it has no entry).
    pub fn app_of_uid(&self, uid: u32) -> String {
        app_of(&self.apps, uid)
    }

    /// The per-app rules in force for `app` (the last routing plan emitted), best first.
    pub fn app_rules(&self, app: &str) -> Vec<AppRule> {
        let Some((_, plan)) = &self.routing else {
            return Vec::new();
        };
        let mut v: Vec<AppRule> = plan
            .app_rules
            .iter()
            .filter(|r| {
                self.apps
                    .iter()
                    .any(|a| a.app == app && a.first == r.first && a.last == r.last)
            })
            .copied()
            .collect();
        v.sort_by_key(|r| (r.v6, r.priority, r.from));
        v
    }

    /// The lines `explain` adds for `app`: the kernel rules that hold its uids to its
    /// decision, or why there are none.
    pub(crate) fn app_rule_lines(&self, app: &str) -> Vec<String> {
        let uids: Vec<String> = self
            .apps
            .iter()
            .filter(|a| a.app == app)
            .map(|a| {
                if a.first == a.last {
                    a.first.to_string()
                } else {
                    format!("{}-{}", a.first, a.last)
                }
            })
            .collect();
        if uids.is_empty() {
            return Vec::new();
        }
        if self.routing.is_none() {
            return vec![format!(
                "uids {}: no kernel rules (policy routing is off)",
                uids.join(", ")
            )];
        }
        std::iter::once(format!("kernel rules for uids {}:", uids.join(", ")))
            .chain(self.app_rules(app).iter().map(|r| format!("  {r}")))
            .collect()
    }

    /// The per-app rules for `plan`'s tables and the links' states `interfaces`.
    pub(crate) fn plan_app_rules(
        &self,
        cfg: &RoutingConfig,
        plan: &RoutingPlan,
        interfaces: &[Interface],
    ) -> BTreeSet<AppRule> {
        let mut rules = BTreeSet::new();
        let guard_priority = cfg.rule_priority.saturating_sub(1).max(1);
        for entry in &self.apps {
            let decision = self.policy.evaluate(&State {
                app: Some(entry.app.clone()),
                flow: None,
                interfaces: interfaces.to_vec(),
            });
            let usable: Vec<(u32, &link::Link)> = decision
                .paths
                .iter()
                .filter_map(|p| link::named(&self.links, &p.interface))
                .filter(|(_, l)| l.state.is_usable())
                .collect();
            for v6 in [false, true] {
                let rule = |priority, from, action| AppRule {
                    priority,
                    first: entry.first,
                    last: entry.last,
                    v6,
                    from,
                    action,
                };
                let mut at = 0;
                for (index, _) in &usable {
                    let table = cfg.table_base.saturating_add(*index);
                    let has_family = plan
                        .routes
                        .iter()
                        .any(|r| r.table == table && crate::plan::family_of(r) == Some(v6));
                    if has_family && at + 1 < MAX_APP_PATHS {
                        rules.insert(rule(
                            cfg.app_priority + at,
                            None,
                            AppRuleAction::Lookup(table),
                        ));
                        at += 1;
                    }
                }
                rules.insert(rule(
                    cfg.app_priority + at,
                    None,
                    AppRuleAction::Unreachable,
                ));
                for (index, l) in &self.links {
                    if usable.iter().any(|(i, _)| i == index) {
                        continue;
                    }
                    for a in l.usable_addrs().filter(|a| a.is_ipv6() == v6) {
                        rules.insert(rule(guard_priority, Some(a), AppRuleAction::Unreachable));
                    }
                }
            }
        }
        rules
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use roam_policy::LinkKind;

    use super::*;
    use crate::tests::{addr, default_route, info};
    use crate::{Action, Event, Policy, ProbeConfig};

    const WLAN: u32 = 2;
    const RMNET: u32 = 3;
    const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                          default { prefer wifi over cell }\n\
                          app \"video\" { use wifi only }\n";

    /// wlan0 and rmnet0 up with a default route each, policy routing on, uid 40001 the
    /// `video` app and 10000-19999 the `other` app (the default block applies to it).
    fn handset(t0: Instant) -> Core {
        let mut core = Core::new(Policy::parse(POLICY).unwrap(), ProbeConfig::default());
        core.enable_routing(RoutingConfig::default());
        for (i, n, k) in [
            (WLAN, "wlan0", LinkKind::Wifi),
            (RMNET, "rmnet0", LinkKind::Cellular),
        ] {
            core.handle_all(
                t0,
                [
                    Event::LinkUpdated(info(i, n, k, false)),
                    addr(i),
                    default_route(i),
                ],
            );
        }
        core.started();
        core.set_apps(vec![
            AppUids {
                first: 40001,
                last: 40001,
                app: "video".into(),
            },
            AppUids {
                first: 10000,
                last: 19999,
                app: "other".into(),
            },
        ]);
        core.handle_timeout(t0);
        core
    }

    /// The IPv4 rules of the last routing plan among `actions` for uids starting at `first`.
    fn v4_rules(actions: &[Action], first: u32) -> Option<Vec<String>> {
        actions.iter().rev().find_map(|a| match a {
            Action::Routing(p) => Some(
                p.app_rules
                    .iter()
                    .filter(|r| r.first == first && !r.v6)
                    .map(ToString::to_string)
                    .collect(),
            ),
            _ => None,
        })
    }

    fn drain(core: &mut Core) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    #[test]
    fn each_app_looks_up_its_decisions_tables_in_order_then_is_refused() {
        let t0 = Instant::now();
        let mut core = handset(t0);
        let actions = drain(&mut core);
        assert_eq!(
            v4_rules(&actions, 40001).unwrap(),
            [
                // rmnet0's address is forbidden to `video`, even bound explicitly.
                "9999: -4 from 198.18.3.2 uidrange 40001-40001 unreachable",
                "11000: -4 uidrange 40001-40001 lookup 1002",
                "11001: -4 uidrange 40001-40001 unreachable",
            ]
        );
        assert_eq!(
            v4_rules(&actions, 10000).unwrap(),
            [
                "11000: -4 uidrange 10000-19999 lookup 1002",
                "11001: -4 uidrange 10000-19999 lookup 1003",
                "11002: -4 uidrange 10000-19999 unreachable",
            ]
        );
        // No IPv6 route anywhere: IPv6 is refused for both rather than left to the main
        // table.
        let v6: Vec<String> = core
            .app_rules("video")
            .iter()
            .filter(|r| r.v6)
            .map(ToString::to_string)
            .collect();
        assert_eq!(v6, ["11000: -6 uidrange 40001-40001 unreachable"]);
        assert_eq!(core.app_of_uid(15000), "other");
        assert_eq!(core.app_of_uid(40002), "uid:40002");
    }

    #[test]
    fn rules_follow_the_decision_when_wifi_goes_and_returns() {
        let t0 = Instant::now();
        let mut core = handset(t0);
        drain(&mut core);
        let mut down = info(WLAN, "wlan0", LinkKind::Wifi, false);
        down.carrier = false;
        let t1 = t0 + std::time::Duration::from_secs(1);
        core.handle(t1, Event::LinkUpdated(down));
        let actions = drain(&mut core);
        assert_eq!(
            v4_rules(&actions, 40001).unwrap(),
            [
                "9999: -4 from 198.18.2.2 uidrange 40001-40001 unreachable",
                "9999: -4 from 198.18.3.2 uidrange 40001-40001 unreachable",
                "11000: -4 uidrange 40001-40001 unreachable",
            ],
            "no path: every connection of `video` fails at once"
        );
        assert_eq!(
            v4_rules(&actions, 10000).unwrap(),
            [
                "9999: -4 from 198.18.2.2 uidrange 10000-19999 unreachable",
                "11000: -4 uidrange 10000-19999 lookup 1003",
                "11001: -4 uidrange 10000-19999 unreachable",
            ]
        );
        // The explanation roamctl prints shows the rules in force.
        let lines = core.app_rule_lines("video");
        assert_eq!(lines[0], "kernel rules for uids 40001:");
        assert!(lines.contains(&"  11000: -4 uidrange 40001-40001 unreachable".to_owned()));

        let t2 = t1 + std::time::Duration::from_secs(1);
        core.handle(
            t2,
            Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
        );
        let actions = drain(&mut core);
        assert_eq!(
            v4_rules(&actions, 40001).unwrap(),
            [
                "9999: -4 from 198.18.3.2 uidrange 40001-40001 unreachable",
                "11000: -4 uidrange 40001-40001 lookup 1002",
                "11001: -4 uidrange 40001-40001 unreachable",
            ]
        );
    }

    #[test]
    fn no_app_map_means_no_app_rules_and_routing_off_means_none_at_all() {
        let t0 = Instant::now();
        let mut core = handset(t0);
        core.set_apps(Vec::new());
        core.handle_timeout(t0);
        let actions = drain(&mut core);
        assert_eq!(v4_rules(&actions, 40001).unwrap(), Vec::<String>::new());

        let mut off = Core::new(Policy::parse(POLICY).unwrap(), ProbeConfig::default());
        off.set_apps(vec![AppUids {
            first: 1,
            last: 1,
            app: "video".into(),
        }]);
        assert!(off.app_rules("video").is_empty());
        assert_eq!(
            off.app_rule_lines("video"),
            ["uids 1: no kernel rules (policy routing is off)"]
        );
    }

    fn subflow_commands(actions: &[Action]) -> Vec<crate::SubflowCommand> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Subflow { command, .. } => Some(*command),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_unregistered_connection_is_steered_by_its_owners_app() {
        use crate::{MptcpEvent, SubflowCommand};
        use std::net::SocketAddr;
        let t0 = Instant::now();
        let mut core = handset(t0);
        core.enable_steering(Err("no BPF in this test".into()));
        drain(&mut core);
        let server = SocketAddr::from(([198, 18, 200, 1], 5000));
        let first = SocketAddr::from(([198, 18, WLAN as u8, 2], 40000));
        let connect = |core: &mut Core, token: u32, uid: u32| {
            core.handle_all(
                t0,
                [
                    Event::Mptcp(MptcpEvent::Connection {
                        token,
                        local: first,
                        remote: server,
                    }),
                    Event::Mptcp(MptcpEvent::Owner { token, uid }),
                ],
            );
            subflow_commands(&drain(core))
        };
        // uid 15000 is `other`, under the default block: a backup subflow on rmnet0 ahead of
        // time.
        let made = connect(&mut core, 7, 15000);
        assert!(
            matches!(made[..], [SubflowCommand::Create { token: 7, local, backup: true, index: RMNET, .. }]
                if local.ip() == IpAddr::from([198, 18, 3, 2])),
            "{made:?}"
        );
        // uid 40001 is `video`, wifi only: nothing on rmnet0.
        assert_eq!(connect(&mut core, 8, 40001), []);
        // A connection with no owner known is left alone.
        core.handle(
            t0,
            Event::Mptcp(MptcpEvent::Connection {
                token: 9,
                local: first,
                remote: server,
            }),
        );
        assert_eq!(subflow_commands(&drain(&mut core)), []);

        // The backup is established; wifi goes: it is promoted, then the wifi subflow closed.
        let backup = SocketAddr::from(([198, 18, 3, 2], 40001));
        core.handle(
            t0,
            Event::Mptcp(MptcpEvent::SubflowUp {
                token: 7,
                local: backup,
                remote: server,
                backup: true,
            }),
        );
        drain(&mut core);
        let mut down = info(WLAN, "wlan0", LinkKind::Wifi, false);
        down.carrier = false;
        core.handle(t0, Event::LinkUpdated(down));
        let moved = subflow_commands(&drain(&mut core));
        assert_eq!(
            moved,
            [
                SubflowCommand::SetBackup {
                    token: 7,
                    local: backup,
                    remote: server,
                    backup: false
                },
                SubflowCommand::Destroy {
                    token: 7,
                    local: first,
                    remote: server
                },
                // The first subflow's address is id 0: the server is told to drop it.
                SubflowCommand::RemoveAddr { token: 7, id: 0 },
            ]
        );
    }
}
