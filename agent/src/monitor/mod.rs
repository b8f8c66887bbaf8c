//! Watching the kernel: the netlink route socket ([`netlink`]), what kind of link each
//! interface is ([`classify`]), WiFi facts ([`nl80211`]) and packet counters ([`counters`]);
//! [`LinkFacts`] turns what the route socket says into the core's events.
pub mod classify;
pub mod counters;
pub mod netlink;
pub mod nl80211;

use std::path::Path;

use crate::config::Config;
use crate::core::{Event, LinkInfo};
use classify::{KindOverride, SysfsFacts};
use netlink::MonitorEvent;

/// What the core is told about a link besides what netlink says: its kind (sysfs and the
/// classifier, with the config's overrides) and the config's settings for it (metered, probe
/// targets, captive-portal check).
#[derive(Debug, Clone, Copy)]
pub struct LinkFacts<'a> {
    /// Where interfaces' sysfs entries are (`/sys/class/net`).
    pub sysfs_root: &'a Path,
    /// The config in force.
    pub config: &'a Config,
    /// The config's kind overrides.
    pub overrides: &'a [KindOverride],
}

impl LinkFacts<'_> {
    /// The core's event for one fact from the route socket; `None` for the loopback.
    pub fn event(&self, e: MonitorEvent) -> Option<Event> {
        Some(match e {
            MonitorEvent::Link(l) if l.loopback => return None,
            MonitorEvent::Link(l) => {
                let facts = SysfsFacts::read(self.sysfs_root, &l.name);
                let kind =
                    classify::classify(&l.name, &facts, l.info_kind.as_deref(), self.overrides);
                let (metered, probe_targets) = self.config.link_settings(&l.name);
                let portal = self.config.portal_for(&l.name);
                Event::LinkUpdated(LinkInfo {
                    index: l.index,
                    name: l.name,
                    kind,
                    admin_up: l.admin_up,
                    carrier: l.carrier,
                    metered,
                    probe_targets,
                    wireless: facts.is_wireless(),
                    portal,
                })
            }
            MonitorEvent::LinkGone { index } => Event::LinkRemoved { index },
            MonitorEvent::Address {
                index,
                addr,
                prefix_len,
                present: true,
            } => Event::AddressAdded {
                index,
                addr,
                prefix_len,
            },
            MonitorEvent::Address {
                index,
                addr,
                prefix_len,
                present: false,
            } => Event::AddressRemoved {
                index,
                addr,
                prefix_len,
            },
            MonitorEvent::Route {
                route,
                present: true,
            } => Event::RouteAdded(route),
            MonitorEvent::Route {
                route,
                present: false,
            } => Event::RouteRemoved(route),
        })
    }
}
