//! The agent's config file (TOML). Parsing is separate from reading the file
//! ([`Config::from_str`]); unknown keys are errors; every error names the line and column.
//!
//! ```toml
//! socket = "/run/roam/roamd.sock"   # --socket and ROAM_SOCKET win over this
//! policy = "/etc/roam/policy.roam"  # --policy wins over this
//! admin_group = "roam"              # group name or number; root is always admin
//!
//! [[app]]                           # who is who: Android gives each app its own uid
//! uid = 10123
//! id = "com.example.voip"
//!
//! [[app]]                           # or a range (inclusive), as Android allots per user
//! uids = "20000-29999"
//! id = "com.example.work"
//!
//! [probe]
//! targets = ["198.18.0.1:7777"]     # `roamd reflect --listen ADDR` runs there
//! pacing = "evidence"               # or "periodic" (fast_interval_ms, idle_interval_ms), "once"
//! validity_s = 600                  # evidence keeps a link validated this long
//! burst = 3                         # probes per validation or suspicion, burst_gap_ms apart
//! burst_gap_ms = 10
//! timeout_ms = 100
//! miss_limit = 3
//! portal_url = "http://198.18.0.1/generate_204"  # captive-portal check; plain http, address literal
//! portal_status = 204               # what it answers when no portal is in the way
//!
//! [[interface]]                     # overrides, first match wins
//! name = "eth1"                     # glob on the interface name
//! kind = "cellular"
//! metered = true
//! probe_targets = ["198.18.1.1:7777"]
//! portal_url = "http://198.18.1.1/generate_204"
//! ```
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use roam_policy::LinkKind;
use serde::Deserialize;
use toml::Spanned;

use crate::core::apps::AppUids;
use crate::core::{MIN_PROBE_INTERVAL, Pacing, PortalCheck, PortalUrl, ProbeConfig, RoutingConfig};

/// What a captive-portal URL answers when nothing stands in the way, unless the config says
/// otherwise.
pub const DEFAULT_PORTAL_STATUS: u16 = 204;
use crate::monitor::classify::{KindOverride, glob_match};

/// The parsed, checked config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Socket path from the file, if it gave one.
    pub socket: Option<PathBuf>,
    /// Policy path from the file, if it gave one.
    pub policy: Option<PathBuf>,
    /// Members of this group (primary or supplementary) may make admin calls.
    pub admin_group: Option<GroupRef>,
    /// The `[[app]]` map, in file order: uids (one or a range) -> app id. No two entries
    /// share a uid.
    pub apps: Vec<AppUids>,
    /// Probe pacing and thresholds.
    pub probe: ProbeConfig,
    /// Probe targets for interfaces without their own.
    pub probe_targets: Vec<SocketAddr>,
    /// The captive-portal check for interfaces without their own (`[probe] portal_url`).
    pub portal: Option<PortalCheck>,
    /// The status `portal_url` answers with when nothing is in the way (`[probe]
    /// portal_status`, default 204).
    pub portal_status: u16,
    /// Per-interface overrides, in file order.
    pub interfaces: Vec<InterfaceOverride>,
    /// Policy routing; `None` when the config turns it off.
    pub routing: Option<RoutingConfig>,
    /// Whether roamd manages the in-kernel MPTCP endpoints.
    pub mptcp: bool,
    /// Whether roamd runs the userspace MPTCP path manager for registered connections
    /// (`[mptcp] userspace = true`). Off by default: `net.mptcp.pm_type` is per network
    /// namespace, so turning it on changes how every MPTCP connection in the namespace gets
    /// its subflows (only roamd opens them, and only for connections apps registered).
    pub mptcp_userspace: bool,
    /// The cgroup v2 roamd attaches its per-subflow TCP options program to (`[mptcp]
    /// bpf_cgroup`); `None`: the cgroup2 mount's root, found in /proc/self/mountinfo. Only
    /// used with `userspace = true`, and only apps in this cgroup get per-subflow options.
    pub mptcp_bpf_cgroup: Option<PathBuf>,
}

impl Default for Config {
    /// No file: every setting at its default, policy routing on.
    fn default() -> Self {
        Config {
            socket: None,
            policy: None,
            admin_group: None,
            apps: Vec::new(),
            probe: ProbeConfig::default(),
            probe_targets: Vec::new(),
            portal: None,
            portal_status: DEFAULT_PORTAL_STATUS,
            interfaces: Vec::new(),
            routing: Some(RoutingConfig::default()),
            mptcp: true,
            mptcp_userspace: false,
            mptcp_bpf_cgroup: None,
        }
    }
}

/// `"FIRST-LAST"` (inclusive, FIRST <= LAST) as two uids.
fn uid_range(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// A group named in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    /// A numeric gid.
    Id(u32),
    /// A group name, looked up in `/etc/group` when the agent starts.
    Name(String),
}

/// Settings for interfaces whose name matches a glob.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceOverride {
    /// Glob on the interface name.
    pub name: String,
    /// Kind to use instead of the classifier's.
    pub kind: Option<LinkKind>,
    /// Whether traffic on it costs money.
    pub metered: Option<bool>,
    /// Probe targets to use instead of the global ones.
    pub probe_targets: Option<Vec<SocketAddr>>,
    /// The captive-portal URL to fetch instead of the global one.
    pub portal_url: Option<PortalUrl>,
}

/// A config file that could not be used: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    /// The file name (for messages).
    pub file: String,
    /// 1-based line, 0 when the error has no place (the file could not be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The offending source line.
    pub source_line: String,
}

impl ConfigError {
    /// `FILE:LINE:COL: error: MESSAGE`, the source line, a caret under the column.
    pub fn render(&self) -> String {
        if self.line == 0 {
            return format!("{}: error: {}", self.file, self.message);
        }
        format!(
            "{}:{}:{}: error: {}\n{}\n{}^",
            self.file,
            self.line,
            self.column,
            self.message,
            self.source_line,
            " ".repeat(self.column.saturating_sub(1))
        )
    }

    fn at(file: &str, source: &str, span: Option<Range<usize>>, message: String) -> Self {
        let start = span.map_or(0, |s| s.start.min(source.len()));
        let before = &source[..floor_char_boundary(source, start)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ConfigError {
            file: file.to_owned(),
            line,
            column,
            message,
            source_line: source.lines().nth(line - 1).unwrap_or("").to_owned(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl From<ConfigError> for std::io::Error {
    fn from(e: ConfigError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.render())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: Option<PathBuf>,
    policy: Option<PathBuf>,
    admin_group: Option<Spanned<RawGroup>>,
    #[serde(default)]
    app: Vec<RawApp>,
    #[serde(default)]
    probe: Option<RawProbe>,
    #[serde(default)]
    interface: Vec<RawInterface>,
    routing: Option<RawRouting>,
    mptcp: Option<RawMptcp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMptcp {
    enabled: Option<bool>,
    userspace: Option<bool>,
    bpf_cgroup: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    enabled: Option<bool>,
    table_base: Option<Spanned<u32>>,
    rule_priority: Option<Spanned<u32>>,
    app_priority: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawGroup {
    Id(u32),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    uid: Option<Spanned<u32>>,
    /// `"FIRST-LAST"`, inclusive.
    uids: Option<Spanned<String>>,
    id: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    pacing: Option<Spanned<String>>,
    fast_interval_ms: Option<Spanned<u64>>,
    idle_interval_ms: Option<Spanned<u64>>,
    validity_s: Option<Spanned<u64>>,
    burst: Option<Spanned<u32>>,
    burst_gap_ms: Option<Spanned<u64>>,
    timeout_ms: Option<Spanned<u64>>,
    miss_limit: Option<Spanned<u32>>,
    loss_window: Option<Spanned<usize>>,
    degraded_rtt_ms: Option<u64>,
    degraded_loss_pct: Option<Spanned<f64>>,
    portal_url: Option<Spanned<String>>,
    portal_status: Option<Spanned<u16>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    name: Spanned<String>,
    kind: Option<Spanned<String>>,
    metered: Option<bool>,
    probe_targets: Option<Vec<Spanned<String>>>,
    portal_url: Option<Spanned<String>>,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}; check the path given to --config"),
            source_line: String::new(),
        })?;
        Config::from_str(&file, &source)
    }

    /// Parses config text; `file` names it in errors.
    pub fn from_str(file: &str, source: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(source)
            .map_err(|e| ConfigError::at(file, source, e.span(), e.message().to_owned()))?;
        let err = |span: Range<usize>, msg: String| ConfigError::at(file, source, Some(span), msg);

        let mut apps: Vec<AppUids> = Vec::new();
        for a in raw.app {
            let id = a.id.get_ref();
            if id.is_empty() || id.starts_with("uid:") || id.chars().any(char::is_whitespace) {
                return Err(err(
                    a.id.span(),
                    format!("`{id}` is not a usable app id (non-empty, no spaces, not `uid:N`)"),
                ));
            }
            let (first, last, span) = match (&a.uid, &a.uids) {
                (Some(u), None) => (*u.get_ref(), *u.get_ref(), u.span()),
                (None, Some(r)) => {
                    let (first, last) = uid_range(r.get_ref())
                        .ok_or_else(|| err(r.span(), format!("`{}` is not a uid range: write \"FIRST-LAST\" with FIRST <= LAST, e.g. \"10000-19999\"", r.get_ref())))?;
                    (first, last, r.span())
                }
                _ => {
                    return Err(err(
                        a.id.span(),
                        "give this [[app]] either `uid = N` or `uids = \"FIRST-LAST\"`".into(),
                    ));
                }
            };
            if let Some(other) = apps.iter().find(|o| o.first <= last && first <= o.last) {
                return Err(err(
                    span,
                    if first == last && other.first == other.last {
                        format!("uid {first} is mapped twice; keep one [[app]] entry for it")
                    } else {
                        format!(
                            "uids {first}-{last} overlap those of `{}` ({}-{}); a uid belongs to one app",
                            other.app, other.first, other.last
                        )
                    },
                ));
            }
            apps.push(AppUids {
                first,
                last,
                app: id.clone(),
            });
        }

        let mut probe = ProbeConfig::default();
        let mut probe_targets = Vec::new();
        let mut portal_url = None;
        let mut portal_status = DEFAULT_PORTAL_STATUS;
        if let Some(p) = raw.probe {
            let interval = |v: &Option<Spanned<u64>>, dflt: Duration| match v {
                None => Ok(dflt),
                Some(s) if Duration::from_millis(*s.get_ref()) < MIN_PROBE_INTERVAL => Err(err(
                    s.span(),
                    format!("must be at least {} ms", MIN_PROBE_INTERVAL.as_millis()),
                )),
                Some(s) => Ok(Duration::from_millis(*s.get_ref())),
            };
            if let Some(m) = &p.pacing {
                probe.pacing = match m.get_ref().as_str() {
                    "evidence" => Pacing::Evidence,
                    "periodic" => Pacing::Periodic,
                    "once" => Pacing::Once,
                    other => {
                        return Err(err(
                            m.span(),
                            format!(
                                "`{other}` is no pacing: \"evidence\" (the default: validate once, \
                                 probe on suspicion), \"periodic\" (probe every fast_interval_ms / \
                                 idle_interval_ms) or \"once\" (validate when a link comes up only)"
                            ),
                        ));
                    }
                };
            }
            // These two keys paced the old default; under any other pacing they would be
            // silently ignored, and an integrator who set them expects them to matter.
            for key in [&p.fast_interval_ms, &p.idle_interval_ms]
                .into_iter()
                .flatten()
            {
                if probe.pacing != Pacing::Periodic {
                    return Err(err(
                        key.span(),
                        "fast_interval_ms and idle_interval_ms pace `pacing = \"periodic\"` only, which \
                         is no longer the default: links are now validated once and probed on \
                         suspicion (`burst`, `burst_gap_ms`, `validity_s`). Add `pacing = \"periodic\"` \
                         to keep probing on a timer (a cellular backup radio then never sleeps), or \
                         remove the key"
                            .into(),
                    ));
                }
            }
            probe.fast_interval = interval(&p.fast_interval_ms, probe.fast_interval)?;
            probe.idle_interval = interval(&p.idle_interval_ms, probe.idle_interval)?;
            probe.burst_gap = interval(&p.burst_gap_ms, probe.burst_gap)?;
            if let Some(v) = &p.validity_s {
                if !(1..=86_400).contains(v.get_ref()) {
                    return Err(err(v.span(), "must be between 1 and 86400 seconds".into()));
                }
                probe.validity = Duration::from_secs(*v.get_ref());
            }
            if let Some(b) = &p.burst {
                if !(1..=10).contains(b.get_ref()) {
                    return Err(err(b.span(), "must be between 1 and 10 probes".into()));
                }
                probe.burst = *b.get_ref();
            }
            probe.timeout = interval(&p.timeout_ms, probe.timeout)?;
            if let Some(m) = p.miss_limit {
                if *m.get_ref() == 0 {
                    return Err(err(m.span(), "must be at least 1".into()));
                }
                probe.miss_limit = *m.get_ref();
            }
            if let Some(w) = p.loss_window {
                if !(1..=1000).contains(w.get_ref()) {
                    return Err(err(w.span(), "must be between 1 and 1000".into()));
                }
                probe.loss_window = *w.get_ref();
            }
            if let Some(r) = p.degraded_rtt_ms {
                probe.degraded_rtt = Duration::from_millis(r);
            }
            if let Some(l) = p.degraded_loss_pct {
                if !(0.0..=100.0).contains(l.get_ref()) {
                    return Err(err(l.span(), "must be a percentage from 0 to 100".into()));
                }
                probe.degraded_loss_pct = *l.get_ref();
            }
            probe_targets = targets(&p.targets, &err)?;
            portal_url = p.portal_url.as_ref().map(|u| url(u, &err)).transpose()?;
            if let Some(st) = p.portal_status {
                if !(100..=599).contains(st.get_ref()) {
                    return Err(err(
                        st.span(),
                        "must be an HTTP status from 100 to 599".into(),
                    ));
                }
                portal_status = *st.get_ref();
            }
        }

        let mut interfaces = Vec::new();
        for i in raw.interface {
            let kind = match &i.kind {
                None => None,
                Some(k) => Some(
                    k.get_ref()
                        .parse::<LinkKind>()
                        .map_err(|e| err(k.span(), e.to_string()))?,
                ),
            };
            let probe_targets = match &i.probe_targets {
                None => None,
                Some(t) => Some(targets(t, &err)?),
            };
            interfaces.push(InterfaceOverride {
                name: i.name.into_inner(),
                kind,
                metered: i.metered,
                probe_targets,
                portal_url: i.portal_url.as_ref().map(|u| url(u, &err)).transpose()?,
            });
        }

        let mut routing = Some(RoutingConfig::default());
        if let Some(r) = raw.routing {
            let mut cfg = RoutingConfig::default();
            if let Some(t) = r.table_base {
                // 253..=255 are default, main and local; 0 is "unspecified".
                if *t.get_ref() == 0 || *t.get_ref() > u32::MAX - 1_000_000 {
                    return Err(err(t.span(), "must be between 1 and 4293967295".into()));
                }
                cfg.table_base = *t.get_ref();
            }
            if let Some(p) = r.rule_priority {
                if *p.get_ref() == 0 || *p.get_ref() >= 32766 {
                    return Err(err(
                        p.span(),
                        "must be between 1 and 32765, so the rules come before the main table's (32766)".into(),
                    ));
                }
                cfg.rule_priority = *p.get_ref();
            }
            if let Some(p) = r.app_priority {
                let max = 32766 - crate::core::apps::MAX_APP_PATHS;
                if *p.get_ref() == 0 || *p.get_ref() >= max {
                    return Err(err(
                        p.span(),
                        format!(
                            "must be between 1 and {}, so every app's rules come before the main table's (32766)",
                            max - 1
                        ),
                    ));
                }
                cfg.app_priority = *p.get_ref();
            }
            routing = r.enabled.unwrap_or(true).then_some(cfg);
        }

        Ok(Config {
            routing,
            mptcp: raw.mptcp.as_ref().is_none_or(|m| m.enabled.unwrap_or(true)),
            mptcp_userspace: raw
                .mptcp
                .as_ref()
                .is_some_and(|m| m.userspace.unwrap_or(false)),
            mptcp_bpf_cgroup: raw.mptcp.as_ref().and_then(|m| m.bpf_cgroup.clone()),
            socket: raw.socket,
            policy: raw.policy,
            admin_group: raw.admin_group.map(|g| match g.into_inner() {
                RawGroup::Id(n) => GroupRef::Id(n),
                RawGroup::Name(s) => GroupRef::Name(s),
            }),
            apps,
            probe,
            probe_targets,
            portal: portal_url.map(|url| PortalCheck {
                url,
                expect: portal_status,
            }),
            portal_status,
            interfaces,
        })
    }

    /// The app id of a peer uid: from the `[[app]]` map, else `uid:N`.
    pub fn app_of(&self, uid: u32) -> String {
        crate::core::apps::app_of(&self.apps, uid)
    }

    /// Whether any link has probe targets.
    pub fn probes_anything(&self) -> bool {
        !self.probe_targets.is_empty() || self.interfaces.iter().any(|i| i.probe_targets.is_some())
    }

    /// Drops every probe target: no link is probed (roamd cannot bind probes to links).
    pub fn without_probes(&mut self) {
        self.probe_targets.clear();
        for i in &mut self.interfaces {
            i.probe_targets = None;
        }
    }

    /// Kind overrides for the classifier, in file order.
    pub fn kind_overrides(&self) -> Vec<KindOverride> {
        self.interfaces
            .iter()
            .filter_map(|i| {
                i.kind.map(|kind| KindOverride {
                    pattern: i.name.clone(),
                    kind,
                })
            })
            .collect()
    }

    /// Metered flag and probe targets for interface `name`: the first override that sets each
    /// wins, else unknown and the global targets.
    pub fn link_settings(&self, name: &str) -> (Option<bool>, Vec<SocketAddr>) {
        let matching = || self.interfaces.iter().filter(|i| glob_match(&i.name, name));
        let metered = matching().find_map(|i| i.metered);
        let targets = matching()
            .find_map(|i| i.probe_targets.clone())
            .unwrap_or_else(|| self.probe_targets.clone());
        (metered, targets)
    }

    /// The captive-portal check of interface `name`: its own URL (first override that sets
    /// one), else the global one; `None` when neither is configured.
    pub fn portal_for(&self, name: &str) -> Option<PortalCheck> {
        self.interfaces
            .iter()
            .filter(|i| glob_match(&i.name, name))
            .find_map(|i| i.portal_url.clone())
            .map(|url| PortalCheck {
                url,
                expect: self.portal_status,
            })
            .or_else(|| self.portal.clone())
    }
}

fn url(
    u: &Spanned<String>,
    err: &impl Fn(Range<usize>, String) -> ConfigError,
) -> Result<PortalUrl, ConfigError> {
    u.get_ref().parse().map_err(|e| err(u.span(), e))
}

fn targets(
    list: &[Spanned<String>],
    err: &impl Fn(Range<usize>, String) -> ConfigError,
) -> Result<Vec<SocketAddr>, ConfigError> {
    list.iter()
        .map(|t| {
            t.get_ref().parse::<SocketAddr>().map_err(|_| {
                err(
                    t.span(),
                    format!("`{}` is not ADDRESS:PORT (e.g. \"198.18.0.1:7777\" or \"[2001:db8::1]:7777\")", t.get_ref()),
                )
            })
        })
        .collect()
}

/// Resolves a group to its gid: numbers as they are, names through `/etc/group`.
pub fn resolve_group(group: &GroupRef, etc_group: &str) -> Option<u32> {
    match group {
        GroupRef::Id(n) => Some(*n),
        GroupRef::Name(name) => etc_group.lines().find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then_some(())?;
            f.nth(1)?.parse().ok()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
socket = "/tmp/r.sock"
admin_group = "wheel"

[[app]]
uid = 10123
id = "com.example.voip"

[probe]
targets = ["198.18.0.1:7777", "[2001:db8::1]:7777"]
pacing = "periodic"
fast_interval_ms = 40
miss_limit = 4

[[interface]]
name = "eth1"
kind = "cellular"
metered = true
probe_targets = ["198.18.1.1:7"]

[[interface]]
name = "eth*"
metered = false
"#;

    #[test]
    fn a_full_config_parses() {
        let c = Config::from_str("roamd.toml", FULL).unwrap();
        assert_eq!(c.socket.as_deref(), Some(Path::new("/tmp/r.sock")));
        assert_eq!(c.admin_group, Some(GroupRef::Name("wheel".into())));
        assert_eq!(c.app_of(10123), "com.example.voip");
        assert_eq!(c.app_of(10124), "uid:10124");
        let r = Config::from_str(
            "r",
            "[[app]]\nuids = \"10000-19999\"\nid = \"work\"\n[[app]]\nuid = 20000\nid = \"x\"\n",
        )
        .unwrap();
        assert_eq!(
            (
                r.app_of(9999),
                r.app_of(10000),
                r.app_of(19999),
                r.app_of(20000)
            ),
            ("uid:9999".into(), "work".into(), "work".into(), "x".into())
        );
        assert_eq!(c.probe.pacing, Pacing::Periodic);
        assert_eq!(c.probe.fast_interval, Duration::from_millis(40));
        assert_eq!(c.probe.miss_limit, 4);
        assert_eq!(c.probe.timeout, ProbeConfig::default().timeout);
        assert_eq!(c.probe_targets.len(), 2);
        assert_eq!(c.kind_overrides().len(), 1);
        let (m, t) = c.link_settings("eth1");
        assert_eq!(m, Some(true));
        assert_eq!(t, ["198.18.1.1:7".parse().unwrap()]);
        let (m, t) = c.link_settings("eth0");
        assert_eq!((m, t.len()), (Some(false), 2));
        assert_eq!(c.link_settings("wlan0").0, None);
        assert_eq!(Config::from_str("empty", "").unwrap(), Config::default());
        let off = Config::from_str("r", "[routing]\nenabled = false\n").unwrap();
        assert_eq!(off.routing, None);
        assert!(off.mptcp);
        assert!(
            !Config::from_str("m", "[mptcp]\nenabled = false\n")
                .unwrap()
                .mptcp
        );
        let r = Config::from_str("r", "[routing]\ntable_base = 5000\n").unwrap();
        assert_eq!(
            r.routing.map(|r| (r.table_base, r.rule_priority)),
            Some((5000, 10000))
        );
    }

    #[test]
    fn errors_point_at_line_and_column() {
        let cases = [
            ("sockett = \"x\"\n", 1, 1, "unknown field `sockett`"),
            (
                "[probe]\npacing = \"periodic\"\nfast_interval_ms = 5\n",
                3,
                20,
                "at least 10 ms",
            ),
            // The old default's keys, without the pacing they now belong to: refused, with
            // what replaces them.
            (
                "[probe]\nfast_interval_ms = 20\n",
                2,
                20,
                "Add `pacing = \"periodic\"`",
            ),
            ("[probe]\npacing = \"fast\"\n", 2, 10, "is no pacing"),
            ("[probe]\nvalidity_s = 0\n", 2, 14, "between 1 and 86400"),
            (
                "[probe]\nportal_url = \"https://198.18.0.1/\"\n",
                2,
                14,
                "not a plain http:// URL",
            ),
            ("[probe]\nportal_status = 42\n", 2, 17, "HTTP status"),
            (
                "[probe]\ntargets = [\"198.18.0.1\"]\n",
                2,
                12,
                "not ADDRESS:PORT",
            ),
            (
                "[[interface]]\nname = \"x\"\nkind = \"wlan\"\n",
                3,
                8,
                "unknown link kind `wlan`",
            ),
            (
                "[[app]]\nuid = 1\nid = \"a\"\n[[app]]\nuid = 1\nid = \"b\"\n",
                5,
                7,
                "mapped twice",
            ),
            (
                "[[app]]\nuids = \"10-20\"\nid = \"a\"\n[[app]]\nuids = \"20-30\"\nid = \"b\"\n",
                5,
                8,
                "overlap those of `a` (10-20)",
            ),
            (
                "[[app]]\nuids = \"20-10\"\nid = \"a\"\n",
                2,
                8,
                "not a uid range",
            ),
            (
                "[[app]]\nuid = 3\nuids = \"1-5\"\nid = \"a\"\n",
                4,
                6,
                "either `uid = N` or `uids",
            ),
            (
                "[[app]]\nuid = 1\nid = \"uid:2\"\n",
                3,
                6,
                "not a usable app id",
            ),
            ("[probe]\nmiss_limit = -1\n", 2, 14, ""),
            ("[probe\n", 1, 7, ""),
            (
                "[routing]\nrule_priority = 32766\n",
                2,
                17,
                "before the main table",
            ),
        ];
        for (src, line, col, msg) in cases {
            let e = Config::from_str("c.toml", src).unwrap_err();
            assert_eq!((e.line, e.column), (line, col), "{src:?}: {}", e.render());
            assert!(e.message.contains(msg), "{src:?}: {}", e.render());
            let r = e.render();
            assert!(
                r.starts_with(&format!("c.toml:{line}:{col}: error: ")),
                "{r}"
            );
            assert!(r.ends_with(&format!("\n{}^", " ".repeat(col - 1))), "{r}");
        }
    }

    #[test]
    fn the_shipped_pacing_is_evidence_and_its_keys_parse() {
        let d = Config::default().probe;
        assert_eq!(
            (d.pacing, d.validity, d.burst, d.burst_gap),
            (
                Pacing::Evidence,
                Duration::from_secs(600),
                3,
                Duration::from_millis(10)
            )
        );
        let c = Config::from_str(
            "t.toml",
            "[probe]\npacing = \"once\"\nvalidity_s = 5\nburst = 4\nburst_gap_ms = 30\n",
        )
        .unwrap()
        .probe;
        assert_eq!(
            (c.pacing, c.validity, c.burst, c.burst_gap),
            (
                Pacing::Once,
                Duration::from_secs(5),
                4,
                Duration::from_millis(30)
            )
        );
        // The shipped example parses, and ships the default pacing.
        let example = include_str!("../dist/roamd.example.toml");
        let e = Config::from_str("roamd.example.toml", example).unwrap();
        assert_eq!(e.probe, ProbeConfig::default());
    }

    #[test]
    fn portal_checks_come_from_the_interface_else_the_probe_section() {
        let c = Config::from_str(
            "t.toml",
            "[probe]\nportal_url = \"http://198.18.0.1/generate_204\"\n\
             [[interface]]\nname = \"wlan*\"\nportal_url = \"http://198.18.1.1:8080/g\"\n",
        )
        .unwrap();
        let w = c.portal_for("wlan0").unwrap();
        assert_eq!(w.url.addr, "198.18.1.1:8080".parse().unwrap());
        assert_eq!(w.expect, DEFAULT_PORTAL_STATUS);
        assert_eq!(c.portal_for("rmnet0").unwrap().url.path, "/generate_204");
        let none = Config::from_str("t.toml", "").unwrap();
        assert_eq!(none.portal_for("wlan0"), None);
        let st = Config::from_str(
            "t.toml",
            "[probe]\nportal_url = \"http://198.18.0.1/\"\nportal_status = 200\n",
        )
        .unwrap();
        assert_eq!(st.portal_for("x").unwrap().expect, 200);
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../dist/roamd.example.toml");
        let c = Config::from_str("roamd.example.toml", text).unwrap();
        assert_eq!(
            c.policy.as_deref(),
            Some(Path::new("/etc/roam/policy.roam"))
        );
        assert_eq!(c.probe, ProbeConfig::default());
        assert_eq!(c.routing, Some(RoutingConfig::default()));
        assert!(c.mptcp);
        assert!(!c.mptcp_userspace, "the userspace path manager is opt-in");
        let us = Config::from_str("u", "[mptcp]\nuserspace = true\n").unwrap();
        assert!(us.mptcp && us.mptcp_userspace);
        assert_eq!(
            us.mptcp_bpf_cgroup, None,
            "default: the cgroup2 mount's root"
        );
        let cg = Config::from_str(
            "c",
            "[mptcp]\nuserspace = true\nbpf_cgroup = \"/sys/fs/cgroup/apps\"\n",
        )
        .unwrap();
        assert_eq!(
            cg.mptcp_bpf_cgroup,
            Some(PathBuf::from("/sys/fs/cgroup/apps"))
        );
    }

    #[test]
    fn groups_resolve_by_name_or_number() {
        let etc = "root:x:0:\nwheel:x:10:alice\nroam:x:990:\n";
        assert_eq!(
            resolve_group(&GroupRef::Name("roam".into()), etc),
            Some(990)
        );
        assert_eq!(resolve_group(&GroupRef::Name("nope".into()), etc), None);
        assert_eq!(resolve_group(&GroupRef::Id(7), etc), Some(7));
    }
}
