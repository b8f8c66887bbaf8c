//! The link and decision model every roam crate speaks.
//!
//! These types are the JSON shapes of the `roamctl policy` contract
//! (`docs/policy-language.md`): [`State`] is the state file `roamctl policy eval
//! --state` reads, [`Interface`] one entry of its `interfaces` array (and of `roamctl links`),
//! and [`Decision`] what an evaluation returns. The agent's IPC and the SDK send the same shapes.
//!
//! Every figure is optional: a figure nobody measured stays `None`, it is never invented.
//! Unknown JSON fields are rejected, so a typo in a state file is an error, not a silent default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What kind of link an interface is. A policy's `link NAME = kind KIND` selects on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// IEEE 802.11 (`wlan0`).
    Wifi,
    /// A mobile data bearer (`rmnet0`, `ccmni0`, `wwan0`).
    Cellular,
    /// Bluetooth PAN (`bnep0`).
    Bluetooth,
    /// Wired Ethernet (`eth0`, `enp3s0`).
    Ethernet,
    /// A tunnel (`tun0`, `wg0`).
    Vpn,
    /// USB tethering or a USB gadget (`usb0`, `rndis0`).
    Usb,
    /// Anything else.
    Other,
}

impl LinkKind {
    /// Every kind, in the order the policy language lists them.
    pub const ALL: [LinkKind; 7] = [
        LinkKind::Wifi,
        LinkKind::Cellular,
        LinkKind::Bluetooth,
        LinkKind::Ethernet,
        LinkKind::Vpn,
        LinkKind::Usb,
        LinkKind::Other,
    ];

    /// The keyword used in policy files and JSON (`wifi`, `cellular`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Wifi => "wifi",
            LinkKind::Cellular => "cellular",
            LinkKind::Bluetooth => "bluetooth",
            LinkKind::Ethernet => "ethernet",
            LinkKind::Vpn => "vpn",
            LinkKind::Usb => "usb",
            LinkKind::Other => "other",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that names no [`LinkKind`], [`LinkState`], [`MultipathMode`] or [`Role`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{word}`; expected one of: {expected}")]
pub struct UnknownWord {
    /// What was being parsed (`link kind`, `link state`, ...).
    pub what: &'static str,
    /// The word that was given.
    pub word: String,
    /// The accepted words, comma separated.
    pub expected: &'static str,
}

impl FromStr for LinkKind {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LinkKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownWord {
                what: "link kind",
                word: s.to_owned(),
                expected: "wifi, cellular, bluetooth, ethernet, vpn, usb, other",
            })
    }
}

/// How usable an interface is, as the agent's prober sees it.
///
/// Ordered from worst to best for nothing in particular: the policy's base order ranks
/// `validated` before `up` before `degraded` (see [`LinkState::rank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// No carrier, no usable address, or probes failed for the detection window (a silent
    /// failure counts as down).
    Down,
    /// Carrier and address, not yet validated by a probe.
    Up,
    /// A probe succeeded.
    Validated,
    /// Validated, but over the agent's RTT or loss thresholds.
    Degraded,
}

impl LinkState {
    /// Usable means not down: only usable interfaces are candidates for a session.
    pub fn is_usable(self) -> bool {
        self != LinkState::Down
    }

    /// Position within a class in the base order: validated (0) before up (1) before
    /// degraded (2). Down interfaces are never ranked (they are not candidates).
    pub fn rank(self) -> u8 {
        match self {
            LinkState::Validated => 0,
            LinkState::Up => 1,
            LinkState::Degraded => 2,
            LinkState::Down => 3,
        }
    }

    /// The word used in JSON and in explanations.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Down => "down",
            LinkState::Up => "up",
            LinkState::Validated => "validated",
            LinkState::Degraded => "degraded",
        }
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LinkState {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            LinkState::Down,
            LinkState::Up,
            LinkState::Validated,
            LinkState::Degraded,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownWord {
            what: "link state",
            word: s.to_owned(),
            expected: "down, up, validated, degraded",
        })
    }
}

/// One network interface and what is known about it.
///
/// The JSON shape of one entry of the state file's `interfaces` array and of `roamctl links`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// The kernel's interface name (`wlan0`).
    pub name: String,
    /// What kind of link it is.
    pub kind: LinkKind,
    /// How usable it is.
    pub state: LinkState,
    /// Smoothed round-trip time to the probe target, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Recent probe loss, in percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
    /// Received signal strength, in dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_dbm: Option<f64>,
    /// Whether traffic on this link costs the user money. Unknown counts as not metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metered: Option<bool>,
    /// The WiFi network name, where the link has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssid: Option<String>,
    /// How long the link has been usable without interruption, in milliseconds. Unknown counts
    /// as up for ever (for `hold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_for_ms: Option<u64>,
}

impl Interface {
    /// An interface with a name, kind and state and no figures.
    pub fn new(name: impl Into<String>, kind: LinkKind, state: LinkState) -> Self {
        Interface {
            name: name.into(),
            kind,
            state,
            rtt_ms: None,
            loss_pct: None,
            signal_dbm: None,
            metered: None,
            ssid: None,
            up_for_ms: None,
        }
    }
}

/// The flow a decision is made for. A missing flow counts as zero bytes and zero age.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    /// Bytes carried so far (both directions).
    #[serde(default)]
    pub bytes: u64,
    /// Age of the flow, in milliseconds.
    #[serde(default)]
    pub age_ms: u64,
}

/// The points where a flow's figures can change an app's decision: the app's `start ... after`
/// quantities and the `flow.bytes` / `flow.age` comparisons of its statements
/// ([`crate::Policy::flow_thresholds`]).
///
/// Each point `T` splits a figure in two: below `T` and at `T` or above. Every comparison of
/// the policy gives the same answer for every figure between two neighbouring points, so the
/// decision for a flow changes only when one of its figures reaches a point: that is when a
/// session tells its decision source about its flow, and never more often. The JSON shape is
/// the `flow_thresholds` of roamd's `update` (`ipc/PROTOCOL.md`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowThresholds {
    /// Byte counts (both directions), ascending, without repeats; none is 0.
    #[serde(default)]
    pub bytes: Vec<u64>,
    /// Flow ages in milliseconds, ascending, without repeats; none is 0.
    #[serde(default)]
    pub age_ms: Vec<u64>,
}

impl FlowThresholds {
    /// True when no figure of the flow can change the decision: nothing to report, ever.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty() && self.age_ms.is_empty()
    }

    /// The first byte count above `bytes` at which the decision may change.
    pub fn next_bytes(&self, bytes: u64) -> Option<u64> {
        next_point(&self.bytes, bytes)
    }

    /// The first age (ms) above `age_ms` at which the decision may change.
    pub fn next_age_ms(&self, age_ms: u64) -> Option<u64> {
        next_point(&self.age_ms, age_ms)
    }

    /// The flow at the start of `flow`'s interval: each figure lowered to the greatest point
    /// at or below it (0 when none is). Every flow of one interval gets the same decision, so
    /// an agent evaluates once per (app, interval) however many sessions it serves.
    pub fn interval_of(&self, flow: Flow) -> Flow {
        let floor = |points: &[u64], v: u64| {
            points
                .iter()
                .take_while(|&&p| p <= v)
                .last()
                .copied()
                .unwrap_or(0)
        };
        Flow {
            bytes: floor(&self.bytes, flow.bytes),
            age_ms: floor(&self.age_ms, flow.age_ms),
        }
    }
}

fn next_point(points: &[u64], v: u64) -> Option<u64> {
    points.iter().copied().find(|&p| p > v)
}

/// A flow as a decision source follows it between reports: the bytes last reported and when
/// the flow began, so the age is counted, not reported.
///
/// A session reports its bytes when they reach one of its [`FlowThresholds`] (bytes are only
/// known where the data flows); the source (roamd, the embedded evaluator) keeps this clock
/// and wakes up when the age reaches a threshold ([`FlowClock::next_crossing`]), with no
/// message at all. Instants are given, never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowClock {
    /// Bytes both ways, as last reported.
    bytes: u64,
    /// When the flow began: the report's instant less its age.
    began: std::time::Instant,
}

impl FlowClock {
    /// The flow `reported` at `now`.
    pub fn new(reported: Flow, now: std::time::Instant) -> FlowClock {
        FlowClock {
            bytes: reported.bytes,
            began: now
                .checked_sub(std::time::Duration::from_millis(reported.age_ms))
                .unwrap_or(now),
        }
    }

    /// The flow at `now`: the reported bytes, the age counted since it began.
    pub fn at(&self, now: std::time::Instant) -> Flow {
        Flow {
            bytes: self.bytes,
            age_ms: u64::try_from(now.saturating_duration_since(self.began).as_millis())
                .unwrap_or(u64::MAX),
        }
    }

    /// When the flow's age reaches the first of `thresholds` after `now`, if any: the
    /// decision may change then with no other event.
    pub fn next_crossing(
        &self,
        thresholds: &FlowThresholds,
        now: std::time::Instant,
    ) -> Option<std::time::Instant> {
        let ms = thresholds.next_age_ms(self.at(now).age_ms)?;
        self.began.checked_add(std::time::Duration::from_millis(ms))
    }
}

/// The input of one evaluation: the state file of `roamctl policy eval --state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// The app id the decision is for. `None`: only the policy's default block applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The flow; `None` counts as zero bytes and zero age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// Every interface the device has, usable or not.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
}

/// How a session uses the paths it is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MultipathMode {
    /// One path only.
    Off,
    /// One primary path; the others are backups brought in when it fails (the default).
    #[default]
    Handover,
    /// Like handover, but backups are kept validated and warm so a move costs no round trip.
    Interactive,
    /// Every path carries traffic at once.
    Aggregate,
}

impl MultipathMode {
    /// The word used in policy files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            MultipathMode::Off => "off",
            MultipathMode::Handover => "handover",
            MultipathMode::Interactive => "interactive",
            MultipathMode::Aggregate => "aggregate",
        }
    }
}

impl fmt::Display for MultipathMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MultipathMode {
    type Err = UnknownWord;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            MultipathMode::Off,
            MultipathMode::Handover,
            MultipathMode::Interactive,
            MultipathMode::Aggregate,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownWord {
            what: "multipath mode",
            word: s.to_owned(),
            expected: "off, handover, interactive, aggregate",
        })
    }
}

/// What a path is for in a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Carries the session now.
    Primary,
    /// Takes over when the primary fails (kept warm in `interactive` mode).
    Backup,
    /// Carries traffic alongside the others (`aggregate` mode).
    Active,
}

impl Role {
    /// The word used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Active => "active",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One interface a decision lets the session use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Path {
    /// The interface name.
    pub interface: String,
    /// The policy's link class the interface belongs to.
    pub link: String,
    /// What the path is for.
    pub role: Role,
}

/// The result of evaluating a policy for one app and flow: the paths it may use, in order.
///
/// An empty `paths` means the app has no permitted path: it is blocked, never silently sent
/// elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The app id the decision is for (`null` when only the default block applied).
    pub app: Option<String>,
    /// How the paths are used.
    pub multipath: MultipathMode,
    /// The permitted paths, best first.
    pub paths: Vec<Path>,
    /// For each evaluation step that changed the result, the statement, its line and why.
    pub explain: Vec<String>,
}

impl Decision {
    /// The path with role `primary` (or the first `active` one), if any.
    pub fn primary(&self) -> Option<&Path> {
        self.paths.first()
    }

    /// True when the policy leaves this app no path at all.
    pub fn is_blocked(&self) -> bool {
        self.paths.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_of_the_contract_parses() {
        let text = r#"{"app": "com.example.voip",
 "flow": {"bytes": 0, "age_ms": 0},
 "interfaces": [
   {"name": "wlan0", "kind": "wifi", "state": "validated", "rtt_ms": 210, "loss_pct": 0.5,
    "signal_dbm": -71, "metered": false, "ssid": "HomeNet", "up_for_ms": 600000},
   {"name": "rmnet0", "kind": "cellular", "state": "validated", "rtt_ms": 48, "metered": true,
    "up_for_ms": 600000}]}"#;
        let state: State = serde_json::from_str(text).expect("contract example parses");
        assert_eq!(state.app.as_deref(), Some("com.example.voip"));
        assert_eq!(state.interfaces.len(), 2);
        assert_eq!(state.interfaces[0].rtt_ms, Some(210.0));
        assert_eq!(state.interfaces[0].signal_dbm, Some(-71.0));
        assert_eq!(state.interfaces[1].kind, LinkKind::Cellular);
        assert_eq!(state.interfaces[1].loss_pct, None);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let text =
            r#"{"interfaces": [{"name": "wlan0", "kind": "wifi", "state": "up", "rtt": 3}]}"#;
        let err = serde_json::from_str::<State>(text).unwrap_err().to_string();
        assert!(err.contains("unknown field `rtt`"), "{err}");
        let err = serde_json::from_str::<State>(r#"{"apps": "x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `apps`"), "{err}");
    }

    #[test]
    fn decision_serialises_as_the_contract() {
        let d = Decision {
            app: Some("com.example.voip".into()),
            multipath: MultipathMode::Interactive,
            paths: vec![
                Path {
                    interface: "rmnet0".into(),
                    link: "cell".into(),
                    role: Role::Primary,
                },
                Path {
                    interface: "wlan0".into(),
                    link: "wifi".into(),
                    role: Role::Backup,
                },
            ],
            explain: vec!["line 17: prefer cell over wifi (wifi.rtt 210ms > 150ms)".into()],
        };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(
            json,
            r#"{"app":"com.example.voip","multipath":"interactive","paths":[{"interface":"rmnet0","link":"cell","role":"primary"},{"interface":"wlan0","link":"wifi","role":"backup"}],"explain":["line 17: prefer cell over wifi (wifi.rtt 210ms > 150ms)"]}"#
        );
        let back: Decision = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn a_flow_clock_counts_the_age_from_the_report_and_crosses_on_time() {
        use std::time::{Duration, Instant};
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let c = FlowClock::new(
            Flow {
                bytes: 7,
                age_ms: 400,
            },
            t0 + ms(1000),
        );
        assert_eq!(
            c.at(t0 + ms(1600)),
            Flow {
                bytes: 7,
                age_ms: 1000
            }
        );
        let t = FlowThresholds {
            bytes: vec![],
            age_ms: vec![500, 30_000],
        };
        // Began at t0 + 600 ms: 500 ms of age at t0 + 1100 ms, then 30 s at t0 + 30.6 s.
        assert_eq!(c.next_crossing(&t, t0 + ms(1000)), Some(t0 + ms(1100)));
        assert_eq!(c.next_crossing(&t, t0 + ms(1100)), Some(t0 + ms(30_600)));
        assert_eq!(c.next_crossing(&t, t0 + ms(31_000)), None);
    }

    #[test]
    fn words_round_trip() {
        for k in LinkKind::ALL {
            assert_eq!(k.as_str().parse::<LinkKind>().unwrap(), k);
        }
        assert!("wlan".parse::<LinkKind>().is_err());
        assert_eq!(
            "aggregate".parse::<MultipathMode>().unwrap(),
            MultipathMode::Aggregate
        );
        assert_eq!(
            "degraded".parse::<LinkState>().unwrap(),
            LinkState::Degraded
        );
    }
}
