//! Per-link probe bookkeeping: outstanding probes, moving RTT and loss, the probe verdict.
//!
//! Pure: the core hands in `now`; sockets live in the shell (`crate::probe`).
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use roam_policy::LinkState;

/// When links are probed (`[probe] pacing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// The default: a link is validated once when it comes up (a burst of probes and the
    /// captive-portal check), then kept valid by evidence (traffic received on it, sessions'
    /// progress reports) for [`ProbeConfig::validity`]. Probes go only on suspicion (a
    /// session's stall report, transmit counters growing while nothing is received, a
    /// decision about to use a link whose validation is stale), as one short burst.
    Evidence,
    /// Probes every [`ProbeConfig::fast_interval`] on links a subscribed session uses or
    /// backs up on and every [`ProbeConfig::idle_interval`] on the others: the fastest
    /// detection of a silent link, and a cellular radio that never sleeps.
    Periodic,
    /// Validated once when a link comes up, never probed again while it stays up (Android's
    /// behaviour without its data-stall detector): the energy floor, and no detection of a
    /// link that dies silently.
    Once,
}

/// How the prober paces itself and judges a link. All of it comes from the config's `[probe]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeConfig {
    /// When links are probed at all.
    pub pacing: Pacing,
    /// [`Pacing::Periodic`]: interval for links a subscribed session uses or backs up on.
    pub fast_interval: Duration,
    /// [`Pacing::Periodic`]: interval for usable links no session uses, while at least one
    /// app is subscribed.
    pub idle_interval: Duration,
    /// A probe unanswered after this long counts as missed (a burst's probe on a link whose
    /// RTT is known sooner: that RTT plus the larger of half of it and four RTT variations, at
    /// least [`MIN_BURST_TIMEOUT`]).
    pub timeout: Duration,
    /// Consecutive misses that turn a link `down`.
    pub miss_limit: u32,
    /// How many recent probes the loss figure is taken over.
    pub loss_window: usize,
    /// Smoothed RTT above which a validated link is `degraded`.
    pub degraded_rtt: Duration,
    /// Loss (percent) above which a validated link is `degraded`.
    pub degraded_loss_pct: f64,
    /// [`Pacing::Evidence`]: how long one piece of evidence keeps a link validated. A
    /// decision about to put sessions on a link whose last evidence is older is preceded by
    /// a burst.
    pub validity: Duration,
    /// Probes in one burst (validation, suspicion).
    pub burst: u32,
    /// Time between the probes of a burst.
    pub burst_gap: Duration,
    /// One app's stall reports about one link start at most one burst per this long: a
    /// hostile app can neither drain the battery nor flood a link.
    pub report_burst_every: Duration,
    /// How often the shell reads the packet counters of usable links while anyone is
    /// subscribed (no packet is sent for it).
    pub counter_interval: Duration,
}

impl Default for ProbeConfig {
    /// The shipped pacing: evidence, a 10-minute validity, bursts of 3 probes 10 ms apart.
    /// A burst on a silent link turns it down `2 * burst_gap` plus the burst's probe timeout
    /// (the RTT plus its margin, 50 to 100 ms) after it started: 70 to 120 ms; 95 ms on a
    /// steady 50 ms link.
    fn default() -> Self {
        ProbeConfig {
            pacing: Pacing::Evidence,
            fast_interval: Duration::from_millis(50),
            idle_interval: Duration::from_secs(2),
            timeout: Duration::from_millis(100),
            miss_limit: 3,
            loss_window: 20,
            degraded_rtt: Duration::from_millis(500),
            degraded_loss_pct: 10.0,
            validity: Duration::from_secs(600),
            burst: 3,
            // Apart at all so one dropped frame or a wireless hiccup of a few ms does not
            // take all three; close, as each 10 ms here is 10 ms more of a silent link's pause.
            burst_gap: Duration::from_millis(10),
            report_burst_every: Duration::from_secs(10),
            counter_interval: Duration::from_secs(1),
        }
    }
}

/// The shortest a burst's probe is waited for, however short the link's RTT: scheduling and
/// the reflector's own delay on a busy machine stay well below it.
pub const MIN_BURST_TIMEOUT: Duration = Duration::from_millis(50);

/// Loss is judged only over at least this many probes.
const MIN_LOSS_SAMPLES: usize = 5;

/// What probing has concluded about a link since it last came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No probe answered or failed yet.
    Unprobed,
    /// The last probe (or report) got through.
    Answered,
    /// `miss_limit` probes in a row went unanswered.
    Failed,
}

/// The probe figures of one link.
#[derive(Debug, Clone)]
pub(crate) struct LinkProbe {
    /// Sequence number, when it left, and when it counts as missed.
    outstanding: VecDeque<(u64, Instant, Instant)>,
    srtt_ms: Option<f64>,
    /// RFC 6298's RTT variation, beside `srtt_ms`.
    rttvar_ms: f64,
    window: VecDeque<bool>,
    consecutive_misses: u32,
    verdict: Verdict,
    last_sent: Option<Instant>,
}

impl LinkProbe {
    pub(crate) fn new() -> Self {
        LinkProbe {
            outstanding: VecDeque::new(),
            srtt_ms: None,
            rttvar_ms: 0.0,
            window: VecDeque::new(),
            consecutive_misses: 0,
            verdict: Verdict::Unprobed,
            last_sent: None,
        }
    }

    /// Forgets everything: figures from before a link went down say nothing about it now.
    pub(crate) fn reset(&mut self) {
        *self = LinkProbe::new();
    }

    /// Probe `seq` left at `now`; it is missed when unanswered after `timeout` (the config's,
    /// or a burst's shorter one, [`LinkProbe::burst_timeout`]).
    pub(crate) fn sent(&mut self, seq: u64, now: Instant, timeout: Duration) {
        self.outstanding.push_back((seq, now, now + timeout));
        self.last_sent = Some(now);
    }

    /// How long a probe of a burst is waited for: the smoothed RTT plus the larger of half of
    /// it and four RTT variations (RFC 6298's margin), at least [`MIN_BURST_TIMEOUT`], at most
    /// the config's timeout. A burst confirms a suspicion (a session's stall report, counters
    /// that stopped): a link that answered in 50 ms is not going to answer in 100 after three
    /// silent probes, and every millisecond waited here is a millisecond of the session's
    /// pause. On a link of unknown RTT it is the config's timeout.
    pub(crate) fn burst_timeout(&self, cfg: &ProbeConfig) -> Duration {
        match self.srtt_ms {
            Some(ms) => {
                let margin = (ms / 2.0).max(4.0 * self.rttvar_ms);
                Duration::from_secs_f64((ms + margin) / 1000.0)
                    .max(MIN_BURST_TIMEOUT)
                    .min(cfg.timeout)
            }
            None => cfg.timeout,
        }
    }

    pub(crate) fn last_sent(&self) -> Option<Instant> {
        self.last_sent
    }

    /// A reply arrived. Returns false when `seq` is not outstanding (late, duplicate or
    /// forged): such a reply says nothing.
    pub(crate) fn reply(&mut self, seq: u64, now: Instant, cfg: &ProbeConfig) -> bool {
        let Some(pos) = self.outstanding.iter().position(|(s, ..)| *s == seq) else {
            return false;
        };
        let (_, sent, _) = self.outstanding[pos];
        // Older outstanding probes are not counted lost yet: UDP may reorder.
        self.outstanding.remove(pos);
        self.rtt_sample(now.saturating_duration_since(sent).as_secs_f64() * 1000.0);
        if self.verdict == Verdict::Failed {
            // The outage is over; counting it as loss would keep the link degraded for a
            // whole window after it came back.
            self.window.clear();
        }
        self.record(true, cfg);
        self.consecutive_misses = 0;
        self.verdict = Verdict::Answered;
        true
    }

    /// The probe could not even be sent (no route, interface gone): a miss, now.
    pub(crate) fn send_failed(&mut self, seq: u64, cfg: &ProbeConfig) -> bool {
        let Some(pos) = self.outstanding.iter().position(|(s, ..)| *s == seq) else {
            return false;
        };
        self.outstanding.remove(pos);
        self.miss(cfg);
        true
    }

    /// An RTT measured by someone else (an SDK session's path report).
    pub(crate) fn rtt_sample(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        // RFC 6298 smoothing: one sample moves the RTT by an eighth and its variation by a
        // quarter of the sample's distance from the RTT before it.
        match self.srtt_ms {
            None => {
                self.srtt_ms = Some(ms);
                self.rttvar_ms = ms / 2.0;
            }
            Some(s) => {
                self.rttvar_ms += ((s - ms).abs() - self.rttvar_ms) / 4.0;
                self.srtt_ms = Some(s + (ms - s) / 8.0);
            }
        }
    }

    /// Counts every outstanding probe past its timeout as missed, oldest first. Returns true
    /// when anything was counted.
    pub(crate) fn expire(&mut self, now: Instant, cfg: &ProbeConfig) -> bool {
        let mut any = false;
        while let Some(pos) = self
            .outstanding
            .iter()
            .position(|&(_, _, deadline)| deadline <= now)
        {
            self.outstanding.remove(pos);
            self.miss(cfg);
            any = true;
        }
        any
    }

    fn miss(&mut self, cfg: &ProbeConfig) {
        self.record(false, cfg);
        self.consecutive_misses = self.consecutive_misses.saturating_add(1);
        if self.consecutive_misses >= cfg.miss_limit {
            self.verdict = Verdict::Failed;
        }
    }

    fn record(&mut self, answered: bool, cfg: &ProbeConfig) {
        self.window.push_back(answered);
        while self.window.len() > cfg.loss_window.max(1) {
            self.window.pop_front();
        }
    }

    /// Stops waiting for outstanding probes (probing was switched off for this link).
    pub(crate) fn abandon(&mut self) {
        self.outstanding.clear();
    }

    /// Whether probes are still awaited.
    pub(crate) fn awaiting(&self) -> bool {
        !self.outstanding.is_empty()
    }

    /// When the first outstanding probe times out.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.outstanding
            .iter()
            .map(|&(.., deadline)| deadline)
            .min()
    }

    pub(crate) fn rtt_ms(&self) -> Option<f64> {
        self.srtt_ms
    }

    pub(crate) fn loss_pct(&self) -> Option<f64> {
        if self.window.is_empty() {
            return None;
        }
        let lost = self.window.iter().filter(|a| !**a).count();
        Some(lost as f64 * 100.0 / self.window.len() as f64)
    }

    pub(crate) fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// The state probing gives a link that has carrier and an address.
    pub(crate) fn state(&self, cfg: &ProbeConfig) -> LinkState {
        match self.verdict {
            Verdict::Unprobed => LinkState::Up,
            Verdict::Failed => LinkState::Down,
            Verdict::Answered => {
                let slow = self
                    .srtt_ms
                    .is_some_and(|r| r > cfg.degraded_rtt.as_secs_f64() * 1000.0);
                // One loss among the first two probes is 50 %: too few samples to call a link
                // degraded on.
                let lossy = self.window.len() >= MIN_LOSS_SAMPLES
                    && self.loss_pct().is_some_and(|l| l > cfg.degraded_loss_pct);
                if slow || lossy {
                    LinkState::Degraded
                } else {
                    LinkState::Validated
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_misses_fail_a_link_and_one_reply_restores_it() {
        let cfg = ProbeConfig::default();
        let t0 = Instant::now();
        let mut p = LinkProbe::new();
        assert_eq!(p.state(&cfg), LinkState::Up);
        p.sent(1, t0, cfg.timeout);
        assert!(p.reply(1, t0 + Duration::from_millis(4), &cfg));
        assert_eq!(p.state(&cfg), LinkState::Validated);
        assert_eq!(p.rtt_ms(), Some(4.0));
        for seq in 2..=4 {
            p.sent(seq, t0 + Duration::from_millis(50 * seq), cfg.timeout);
        }
        assert!(!p.expire(t0 + Duration::from_millis(149), &cfg));
        assert!(p.expire(t0 + Duration::from_millis(250), &cfg));
        // Two misses are not three, and three probes are too few to judge loss on.
        assert_eq!(p.state(&cfg), LinkState::Validated);
        assert!(p.expire(t0 + Duration::from_millis(300), &cfg));
        assert_eq!(p.state(&cfg), LinkState::Down);
        assert_eq!(p.loss_pct(), Some(75.0));
        p.sent(5, t0 + Duration::from_millis(400), cfg.timeout);
        assert!(
            !p.reply(4, t0 + Duration::from_millis(401), &cfg),
            "expired seq says nothing"
        );
        assert!(p.reply(5, t0 + Duration::from_millis(408), &cfg));
        assert_eq!(p.rtt_ms(), Some(4.5));
        assert_eq!(p.state(&cfg), LinkState::Validated);
    }

    #[test]
    fn slow_or_lossy_links_are_degraded() {
        let cfg = ProbeConfig {
            degraded_rtt: Duration::from_millis(100),
            ..ProbeConfig::default()
        };
        let t0 = Instant::now();
        let mut p = LinkProbe::new();
        p.sent(1, t0, cfg.timeout);
        p.reply(1, t0 + Duration::from_millis(300), &cfg);
        assert_eq!(p.state(&cfg), LinkState::Degraded);

        let mut q = LinkProbe::new();
        q.sent(1, t0, cfg.timeout);
        q.expire(t0 + cfg.timeout, &cfg);
        q.sent(2, t0 + cfg.timeout, cfg.timeout);
        q.reply(2, t0 + cfg.timeout + Duration::from_millis(1), &cfg);
        assert_eq!(q.loss_pct(), Some(50.0));
        assert_eq!(
            q.state(&cfg),
            LinkState::Validated,
            "two probes are too few to judge"
        );
        for seq in 3..=5 {
            let t = t0 + Duration::from_millis(10 * seq);
            q.sent(seq, t, cfg.timeout);
            q.reply(seq, t + Duration::from_millis(1), &cfg);
        }
        assert_eq!(q.loss_pct(), Some(20.0));
        assert_eq!(q.state(&cfg), LinkState::Degraded);
    }

    #[test]
    fn a_burst_waits_for_the_rtt_and_its_margin() {
        let cfg = ProbeConfig::default();
        let mut p = LinkProbe::new();
        assert_eq!(p.burst_timeout(&cfg), cfg.timeout, "unknown RTT");
        // One 50 ms sample: its variation is half of it, so the margin is 100 ms (capped).
        p.rtt_sample(50.0);
        assert_eq!(p.burst_timeout(&cfg), cfg.timeout);
        // A steady 50 ms link: the variation decays and half the RTT is the margin.
        for _ in 0..20 {
            p.rtt_sample(50.0);
        }
        let steady = p.burst_timeout(&cfg).as_secs_f64() * 1000.0;
        assert!((75.0..76.0).contains(&steady), "{steady} ms");
        // A jittery one (40 to 60 ms) keeps a larger margin.
        let mut q = LinkProbe::new();
        for i in 0..20 {
            q.rtt_sample(if i % 2 == 0 { 40.0 } else { 60.0 });
        }
        let jittery = q.burst_timeout(&cfg);
        assert!(jittery > Duration::from_millis(85), "{jittery:?}");
        // A fast link waits the floor, a slow one the config's timeout.
        let mut fast = LinkProbe::new();
        let mut slow = LinkProbe::new();
        for _ in 0..20 {
            fast.rtt_sample(2.0);
            slow.rtt_sample(80.0);
        }
        assert_eq!(fast.burst_timeout(&cfg), MIN_BURST_TIMEOUT);
        assert_eq!(slow.burst_timeout(&cfg), cfg.timeout);
    }
}
