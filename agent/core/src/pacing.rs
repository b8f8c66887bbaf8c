//! Probe pacing: fast on links a subscribed session uses or backs up on, slowly on the other
//! usable links, not at all with no subscriber; the captive-portal check and the wireless query
//! ride along with probes, never on timers of their own. The figures of each probe are
//! `crate::probe`'s.
use std::collections::HashSet;
use std::time::{Duration, Instant};

use roam_ipc::proto::ProbeMode;

use crate::link::Portal;
use crate::{Action, Core};

/// How often a wireless link's SSID and signal are asked again while it is probed. Asked
/// with a probe, never on a timer of its own.
pub const WIRELESS_REFRESH: Duration = Duration::from_secs(10);

/// Nothing is probed faster than this, whatever the config says: a misconfigured agent must
/// not turn into a packet generator.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);

impl Core {
    pub(crate) fn pace_probes(&mut self, now: Instant) {
        let used: HashSet<&str> = self
            .clients
            .subs
            .values()
            .filter_map(|c| c.last.as_ref())
            .flat_map(|d| d.paths.iter().map(|p| p.interface.as_str()))
            .collect();
        let subscribed = !self.clients.subs.is_empty();
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

    /// An SDK session's figures for the link it uses: its RTT counts as a probe's, and a
    /// stall has the link probed now rather than at its next turn.
    pub(crate) fn path_report(
        &mut self,
        now: Instant,
        interface: &str,
        rtt_ms: Option<f64>,
        stalled: bool,
    ) {
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
}
