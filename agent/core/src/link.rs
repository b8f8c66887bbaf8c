//! Link states: what the core keeps per interface (flags, addresses, routes, probe figures,
//! captive-portal check, wireless facts) and the rule that turns it into a [`LinkState`].
//!
//! A link is `down` without admin-up, carrier or a usable address; with them it is `up`, and
//! probes make it `validated`, `degraded` or `down` again (a configured portal check must
//! answer as expected before it is `validated`).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use roam_ipc::proto::ProbeMode;
use roam_link::{UpTime, usable_ip};
use roam_policy::{Interface, LinkKind, LinkState};

use crate::pacing::Watch;
use crate::probe::{LinkProbe, Verdict};
use crate::{Action, Core, PortalCheck};

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

/// Where a link's captive-portal check stands since the link last came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Portal {
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

/// One route the monitor saw: roam-link's, the same type the SDK's route socket reports.
pub use roam_link::Route;

/// What the core keeps about one interface: the monitor's facts, what probing and the portal
/// check concluded, and the state and pace derived from them.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) info: LinkInfo,
    pub(crate) addrs: BTreeSet<(IpAddr, u8)>,
    pub(crate) routes: BTreeSet<Route>,
    pub(crate) probe: LinkProbe,
    pub(crate) portal: Portal,
    pub(crate) state: LinkState,
    /// How long the link has been usable: roam-link's rule, so a link usable when roamd
    /// starts is not held (see `roam_link::table`).
    pub(crate) up: UpTime,
    pub(crate) mode: ProbeMode,
    pub(crate) next_probe: Option<Instant>,
    pub(crate) ssid: Option<String>,
    pub(crate) signal_dbm: Option<f64>,
    pub(crate) wireless_asked: Option<Instant>,
    /// Evidence, bursts, counters and what probing cost.
    pub(crate) watch: Watch,
}

impl Link {
    pub(crate) fn has_usable_address(&self) -> bool {
        self.addrs.iter().any(|(a, _)| usable_ip(*a))
    }

    /// The addresses that make a link usable (roam-link's [`usable_ip`]; the monitor already
    /// dropped tentative and DAD-failed ones).
    pub(crate) fn usable_addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs.iter().map(|(a, _)| *a).filter(|a| usable_ip(*a))
    }

    pub(crate) fn l3_up(&self) -> bool {
        self.info.admin_up && self.info.carrier && self.has_usable_address()
    }

    pub(crate) fn interface(&self, now: Instant) -> Interface {
        let mut i = Interface::new(self.info.name.clone(), self.info.kind, self.state);
        // Three decimals: sub-microsecond digits of a smoothed figure are noise.
        i.rtt_ms = self.probe.rtt_ms().map(|r| (r * 1000.0).round() / 1000.0);
        i.loss_pct = self.probe.loss_pct();
        i.metered = self.info.metered;
        i.ssid = self.ssid.clone();
        i.signal_dbm = self.signal_dbm;
        i.up_for_ms = self.up.up_for_ms(now);
        i
    }
}

/// The link named `name` (a decision names paths by interface name), with its index.
pub(crate) fn named<'a>(links: &'a BTreeMap<u32, Link>, name: &str) -> Option<(u32, &'a Link)> {
    links
        .iter()
        .find(|(_, l)| l.info.name == name)
        .map(|(i, l)| (*i, l))
}

impl Core {
    pub(crate) fn update_states(&mut self, now: Instant) {
        for link in self.links.values_mut() {
            let l3 = link.l3_up();
            if !l3 && link.probe.verdict() != Verdict::Unprobed {
                // Figures from before a link lost carrier or address say nothing about it when
                // it returns: it starts again as `up`.
                link.probe.reset();
            }
            if !l3 {
                link.portal = Portal::Unchecked;
                if link.watch.evidence_at.is_some() {
                    link.watch.reset();
                }
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
                        link.up.track(true, self.starting, now);
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
                        link.up = UpTime::Down;
                        link.ssid = None;
                        link.signal_dbm = None;
                    }
                    _ => {}
                }
                link.state = new;
            }
        }
    }
}
