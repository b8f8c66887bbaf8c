//! When to probe, and what probing costs.
//!
//! With the shipped [`Pacing::Evidence`] a link is validated once when it comes up (a burst of
//! [`ProbeConfig::burst`] probes and the captive-portal check) and then kept valid by evidence
//! the device already has: packets received on it (the interface's counters, which the shell
//! reads every [`ProbeConfig::counter_interval`] while anyone is subscribed) and sessions'
//! progress reports. A link is probed again only on suspicion, with one burst:
//!
//! - a subscribed app reports a stall on it (at most one burst per app and link per
//!   [`ProbeConfig::report_burst_every`]: a report is evidence weighed, never obeyed; only the
//!   probes' verdict moves anyone);
//! - its transmit counter grows while its receive counter does not;
//! - a decision has sessions on it as primary while its last evidence is older than
//!   [`ProbeConfig::validity`]; as a backup only, such a refresh waits for the radio to be
//!   awake anyway on cellular (traffic within its tail), and happens at once elsewhere;
//! - it failed (or a captive portal is in the way): one probe (and a portal check) after
//!   [`RECHECK_FIRST`], doubling up to [`RECHECK_MAX`].
//!
//! [`Pacing::Periodic`] is the old pace (fast where sessions are, slow elsewhere);
//! [`Pacing::Once`] validates and rechecks failures only. In every pacing nothing is probed
//! with no subscriber, and the captive-portal check and the wireless query ride along with
//! probes, never on timers of their own.
//!
//! Every link counts the probes it sent and the radio wake-ups they caused (a probe after more
//! than [`radio_tail`] of silence on the link).
use std::collections::HashSet;
use std::time::{Duration, Instant};

use roam_ipc::proto::{LinkEnergy, ProbeMode, Readiness};
use roam_policy::LinkKind;

use crate::link::{Link, Portal};
use crate::probe::{Pacing, ProbeConfig, Verdict};
use crate::{Action, Core};

/// How often a wireless link's SSID and signal are asked again while it is probed. Asked
/// with a probe, never on a timer of its own.
pub const WIRELESS_REFRESH: Duration = Duration::from_secs(10);

/// Nothing is probed faster than this, whatever the config says: a misconfigured agent must
/// not turn into a packet generator.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

/// A failed (or captive) link is probed again this long after it failed, then at doubling
/// intervals up to [`RECHECK_MAX`].
pub const RECHECK_FIRST: Duration = Duration::from_secs(2);

/// The longest interval between rechecks of a failed link.
pub const RECHECK_MAX: Duration = Duration::from_secs(120);

/// How long a radio stays in its high-power state after a packet: the LTE RRC tail of about
/// 11.5 s for cellular (Huang et al., MobiSys 2012; 5G NR behaves alike), a WiFi or Bluetooth
/// power-save timeout of about 200 ms for the others. A packet after longer silence wakes the
/// radio up.
pub fn radio_tail(kind: LinkKind) -> Duration {
    match kind {
        LinkKind::Cellular => Duration::from_millis(11_500),
        _ => Duration::from_millis(200),
    }
}

/// Per link: the evidence that keeps it validated, the burst in progress, the counters last
/// read and what probing cost.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch {
    /// The last evidence that the link carries traffic (probe answered, packets received, a
    /// session's progress) since it came up.
    pub(crate) evidence_at: Option<Instant>,
    /// Probes of the current burst still to send.
    burst_left: u32,
    /// Something made the link suspect: a burst goes at the next pacing.
    suspect: bool,
    /// The burst a suspicion started has no verdict yet (no answer, not failed).
    confirming: bool,
    /// When counters last made it suspect (one suspicion per `report_burst_every`).
    suspected_at: Option<Instant>,
    /// When a failed or captive link is probed again, and the interval after that.
    recheck_at: Option<Instant>,
    recheck_after: Option<Duration>,
    /// Receive and transmit packet counters, and `probes_sent` then, at the last reading.
    counters: Option<(u64, u64, u64)>,
    /// When the counters are read next.
    pub(crate) next_counters: Option<Instant>,
    /// The last time the link's radio was known to be busy (counters moved, a probe left).
    active_at: Option<Instant>,
    pub(crate) energy: LinkEnergy,
}

impl Watch {
    /// Forgets the evidence (the link went down: figures from before say nothing about it),
    /// keeps what probing cost.
    pub(crate) fn reset(&mut self) {
        *self = Watch {
            energy: self.energy,
            active_at: self.active_at,
            ..Watch::default()
        };
    }

    /// A probe answered, or a trusted figure arrived: the link carries traffic now.
    pub(crate) fn proven(&mut self, now: Instant) {
        self.evidence_at = Some(now);
        self.confirming = false;
        self.recheck_at = None;
        self.recheck_after = None;
    }

    /// A suspicion (a session's stall report, counters that stopped) waits for its burst's
    /// verdict: the link may be dead, or fine.
    pub(crate) fn under_suspicion(&self) -> bool {
        self.suspect || self.confirming
    }

    fn stale(&self, now: Instant, cfg: &ProbeConfig) -> bool {
        self.evidence_at
            .is_none_or(|t| now.saturating_duration_since(t) >= cfg.validity)
    }

    fn radio_awake(&self, now: Instant, kind: LinkKind) -> bool {
        self.active_at
            .is_some_and(|t| now.saturating_duration_since(t) < radio_tail(kind))
    }
}

impl Link {
    /// How ready the link is to carry a session, given whether a decision has it as primary.
    pub(crate) fn readiness(&self, primary: bool) -> Readiness {
        if !self.state.is_usable() || self.watch.evidence_at.is_none() {
            Readiness::Cold
        } else if primary {
            Readiness::Warm
        } else {
            Readiness::Validated
        }
    }
}

impl Core {
    /// The interfaces subscribed sessions use: as primary, and in any role.
    fn used(&self) -> (HashSet<String>, HashSet<String>) {
        // Subscribers told the same share one `Arc` (`decide_subscribers`): each decision is
        // read once, not once per subscriber (a thousand subscribers' interface names cloned
        // and hashed were ~4 % of a decision round).
        let mut seen: HashSet<*const roam_policy::Decision> = HashSet::new();
        let mut previous: *const roam_policy::Decision = std::ptr::null();
        let mut primary = HashSet::new();
        let mut any = HashSet::new();
        for d in self.clients.subs.values().filter_map(|c| c.last.as_deref()) {
            let at: *const roam_policy::Decision = d;
            if std::mem::replace(&mut previous, at) == at || !seen.insert(at) {
                continue;
            }
            if let Some(p) = d.primary() {
                primary.insert(p.interface.clone());
            }
            any.extend(d.paths.iter().map(|p| p.interface.clone()));
        }
        (primary, any)
    }

    /// Each link's readiness, for `status` and `links`.
    pub(crate) fn readiness_of(&self, link: &Link) -> Readiness {
        let (primary, _) = self.used();
        link.readiness(primary.contains(&link.info.name))
    }

    pub(crate) fn pace_probes(&mut self, now: Instant) {
        let (primary, used) = self.used();
        let subscribed = !self.clients.subs.is_empty();
        let cfg = &self.probe_cfg;
        for (&index, link) in &mut self.links {
            let probeable = subscribed && link.l3_up() && !link.info.probe_targets.is_empty();
            // Counters are read while the link is probeable: they are the evidence (and
            // the radio's activity), and they cost no packet; a link roamd cannot probe has
            // no use for them, and the agent no timer for it.
            if probeable {
                if link.watch.next_counters.is_none_or(|t| t <= now) {
                    link.watch.next_counters = Some(now + cfg.counter_interval);
                    self.actions.push_back(Action::ReadCounters {
                        index,
                        interface: link.info.name.clone(),
                    });
                }
            } else {
                link.watch.next_counters = None;
            }
            let (mode, interval) = if !probeable {
                (ProbeMode::Off, None)
            } else if cfg.pacing == Pacing::Periodic {
                if used.contains(&link.info.name) {
                    (ProbeMode::Fast, Some(cfg.fast_interval))
                } else {
                    (ProbeMode::Idle, Some(cfg.idle_interval))
                }
            } else {
                if link.watch.burst_left == 0 && !link.probe.awaiting() {
                    let name = link.info.name.as_str();
                    if let Some(n) =
                        burst_due(link, now, cfg, primary.contains(name), used.contains(name))
                    {
                        link.watch.burst_left = n;
                        link.watch.confirming |= link.watch.suspect;
                        link.watch.suspect = false;
                        link.next_probe = Some(now);
                    }
                }
                if link.watch.burst_left > 0 {
                    (ProbeMode::Fast, Some(cfg.burst_gap))
                } else {
                    (ProbeMode::Idle, None)
                }
            };
            if mode != link.mode {
                tracing::debug!(interface = %link.info.name, from = ?link.mode, to = ?mode, "probe pace");
                if mode == ProbeMode::Off {
                    link.next_probe = None;
                    link.watch.burst_left = 0;
                    // No verdict will come: a suspicion must not keep backups carrying data.
                    link.watch.suspect = false;
                    link.watch.confirming = false;
                    link.probe.abandon();
                    self.actions.push_back(Action::StopProbing { index });
                } else if cfg.pacing == Pacing::Periodic
                    && let Some(iv) = interval
                {
                    let due = link.probe.last_sent().map_or(now, |t| (t + iv).max(now));
                    link.next_probe = Some(link.next_probe.map_or(due, |n| n.min(due)));
                }
                link.mode = mode;
            }
            let Some(iv) = interval else {
                link.next_probe = None;
                continue;
            };
            while let Some(due) = link.next_probe
                && due <= now
            {
                let seq = self.next_seq;
                self.next_seq += 1;
                let targets = &link.info.probe_targets;
                let target = targets[(seq % targets.len() as u64) as usize];
                let timeout = if cfg.pacing == Pacing::Periodic {
                    cfg.timeout
                } else {
                    link.probe.burst_timeout(cfg)
                };
                link.probe.sent(seq, now, timeout);
                let w = &mut link.watch;
                w.energy.probes_sent += 1;
                if !w.radio_awake(now, link.info.kind) {
                    w.energy.radio_wakeups += 1;
                }
                w.active_at = Some(now);
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
                // again while a portal is in the way (at the idle pace, or at the rechecks).
                let ask = match &link.portal {
                    Portal::Unchecked => true,
                    Portal::Captive { at, .. } => {
                        cfg.pacing != Pacing::Periodic
                            || now.saturating_duration_since(*at) >= cfg.idle_interval
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
                if cfg.pacing == Pacing::Periodic {
                    // After a long pause (the shell was late) send one probe, not a burst.
                    link.next_probe = Some((due + iv).max(now + iv / 2));
                } else {
                    link.watch.burst_left = link.watch.burst_left.saturating_sub(1);
                    link.next_probe = (link.watch.burst_left > 0).then_some(now + iv);
                }
            }
        }
    }

    /// The shell read a link's packet counters (`rx`: unicast received; `tx`: sent, less the
    /// IPv6 multicast the kernel sends on its own): received packets are evidence and, with
    /// transmitted ones, show the radio busy; transmitted packets (beyond roamd's own probes)
    /// with nothing received make the link suspect.
    pub(crate) fn counters(&mut self, now: Instant, index: u32, rx: u64, tx: u64) {
        let (primary, _) = self.used();
        let cfg = &self.probe_cfg;
        let Some(link) = self.links.get_mut(&index) else {
            return;
        };
        // Sessions send on their primary link: what it receives is their traffic. A backup
        // receives mostly neighbour housekeeping (ARP, unicast neighbour solicitations), which
        // proves the first hop, not the path: it is no evidence there.
        let warm = primary.contains(&link.info.name);
        let w = &mut link.watch;
        let probes = w.energy.probes_sent;
        if let Some((rx0, tx0, probes0)) = w.counters {
            let (drx, dtx) = (rx.saturating_sub(rx0), tx.saturating_sub(tx0));
            if drx > 0 || dtx > 0 {
                w.active_at = Some(w.active_at.map_or(now, |t| t.max(now)));
            }
            let validated = link.probe.verdict() == Verdict::Answered;
            if drx > 0 && validated && warm {
                w.evidence_at = Some(now);
            }
            let own = probes.saturating_sub(probes0);
            if cfg.pacing == Pacing::Evidence
                && validated
                && drx == 0
                && dtx > own
                && w.suspected_at
                    .is_none_or(|t| now.saturating_duration_since(t) >= cfg.report_burst_every)
            {
                tracing::debug!(interface = %link.info.name, sent = dtx - own, "sending without receiving: suspect");
                w.suspected_at = Some(now);
                w.suspect = true;
            }
        }
        w.counters = Some((rx, tx, probes));
    }

    /// An SDK session's figures for a link it uses: its RTT counts as a probe's and is
    /// evidence the link carries traffic; a stall is a suspicion, checked with one burst (at
    /// most one per app and link per `report_burst_every`), never a verdict: only the probes
    /// can turn the link down for everyone.
    pub(crate) fn path_report(
        &mut self,
        now: Instant,
        app: &str,
        interface: &str,
        rtt_ms: Option<f64>,
        stalled: bool,
    ) {
        let cfg = &self.probe_cfg;
        let Some(link) = self.links.values_mut().find(|l| l.info.name == interface) else {
            return;
        };
        // A minute is no round trip a session can measure; such a figure is a bug or a lie,
        // and either would skew the link for everyone.
        if let Some(rtt) = rtt_ms.filter(|r| (0.0..=60_000.0).contains(r)) {
            link.probe.rtt_sample(rtt);
            if !stalled && link.probe.verdict() == Verdict::Answered {
                link.watch.evidence_at = Some(now);
            }
        }
        if !stalled || link.mode == ProbeMode::Off {
            return;
        }
        match cfg.pacing {
            Pacing::Periodic => {
                // Check the link now instead of at its next turn; but no client can make the
                // agent probe faster than MIN_PROBE_INTERVAL by reporting stalls in a loop.
                let rested = link
                    .probe
                    .last_sent()
                    .is_none_or(|t| now.saturating_duration_since(t) >= MIN_PROBE_INTERVAL);
                if rested {
                    link.next_probe = Some(now);
                }
            }
            Pacing::Evidence => {
                let key = (app.to_owned(), link.info.index);
                let last = self.report_bursts.get(&key);
                if last.is_none_or(|t| now.saturating_duration_since(*t) >= cfg.report_burst_every)
                {
                    tracing::debug!(%app, %interface, "stall reported: confirming with a burst");
                    self.report_bursts.insert(key, now);
                    link.watch.suspect = true;
                } else {
                    tracing::debug!(%app, %interface, "stall reported again: rate-limited");
                }
            }
            Pacing::Once => {}
        }
    }

    /// The next instant the pacing needs a call: a recheck or counter reading due.
    pub(crate) fn pacing_deadline(&self) -> Option<Instant> {
        self.links
            .values()
            .flat_map(|l| [l.watch.recheck_at, l.watch.next_counters])
            .flatten()
            .min()
    }

    /// After probes were counted: a link that just failed, or is held by a captive portal,
    /// gets its recheck scheduled; one that answered is proven.
    pub(crate) fn schedule_rechecks(&mut self, now: Instant) {
        if self.probe_cfg.pacing == Pacing::Periodic {
            return;
        }
        for link in self.links.values_mut() {
            // Failed, or a validation burst that neither failed nor got an answer (fewer
            // probes than `miss_limit`), or a portal in the way.
            let blocked = match link.probe.verdict() {
                Verdict::Failed => true,
                Verdict::Unprobed => link.probe.last_sent().is_some(),
                Verdict::Answered => matches!(link.portal, Portal::Captive { .. }),
            };
            if link.probe.verdict() == Verdict::Failed {
                // The burst's verdict is in: down.
                link.watch.confirming = false;
            }
            if !blocked {
                link.watch.recheck_at = None;
                link.watch.recheck_after = None;
                continue;
            }
            if link.watch.recheck_at.is_none()
                && link.watch.burst_left == 0
                && !link.probe.awaiting()
            {
                let after = link
                    .watch
                    .recheck_after
                    .map_or(RECHECK_FIRST, |d| (d * 2).min(RECHECK_MAX));
                link.watch.recheck_after = Some(after);
                link.watch.recheck_at = Some(now + after);
            }
        }
    }
}

/// How many probes `link` should send now, if any (see the module documentation).
fn burst_due(
    link: &mut Link,
    now: Instant,
    cfg: &ProbeConfig,
    primary: bool,
    used: bool,
) -> Option<u32> {
    let w = &mut link.watch;
    let burst = cfg.burst.max(1);
    match link.probe.verdict() {
        // Validation when the link comes up (or first matters to a subscriber).
        Verdict::Unprobed if link.probe.last_sent().is_none() => Some(burst),
        Verdict::Unprobed | Verdict::Failed => {
            if w.recheck_at.is_some_and(|t| t <= now) {
                w.recheck_at = None;
                return Some(1);
            }
            None
        }
        Verdict::Answered => {
            if let Portal::Captive { .. } = link.portal
                && w.recheck_at.is_some_and(|t| t <= now)
            {
                w.recheck_at = None;
                return Some(1);
            }
            if cfg.pacing == Pacing::Once {
                return None;
            }
            if w.suspect {
                return Some(burst);
            }
            let stale = w.stale(now, cfg);
            if stale
                && (primary
                    || (used
                        && (link.info.kind != LinkKind::Cellular
                            || w.radio_awake(now, link.info.kind))))
            {
                tracing::debug!(interface = %link.info.name, primary, "validation stale: refreshing");
                return Some(burst);
            }
            None
        }
    }
}
