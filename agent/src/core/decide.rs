//! The one seam between the agent and the policy engine.
//!
//! Everything the agent needs from a policy passes through [`Policy`]: parse a file, fall back
//! to the embedded default, evaluate one app's state, and tell the core which `hold` durations
//! exist so it can wake up exactly when a held link becomes eligible again.
//!
//! INTERIM: `roam_policy::Policy` (the real language) is being written in `policy/`. Until it
//! lands this module evaluates a deliberately small subset, so the agent can run end to end:
//! every link kind is its own class (named by its kind word), the order is the kind order of
//! the last `prefer KIND over KIND ...` line (default: wifi, cellular, bluetooth, ethernet,
//! usb, vpn, other), and `hold DURATION` lines are honoured. Anything else is an error with
//! its line and column. Switching to the engine changes this file only.
use std::fmt;
use std::time::Duration;

use roam_policy::{Decision, LinkKind, MultipathMode, Path, Role, State};

/// A parsed policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    order: Vec<LinkKind>,
    hold: Option<Duration>,
}

/// Why a policy text was rejected, with the place of the offending word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLoadError {
    /// 1-based line of the offending word.
    pub line: usize,
    /// 1-based column (in characters) of the offending word.
    pub column: usize,
    /// What is wrong, phrased for a person.
    pub message: String,
}

impl PolicyLoadError {
    /// Renders the error as `FILE:LINE:COL: error: MESSAGE`, then the source line and a caret
    /// under the offending column, the shape `roamctl policy check` prints.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let text = source
            .lines()
            .nth(self.line.saturating_sub(1))
            .unwrap_or("");
        format!(
            "{file_name}:{}:{}: error: {}\n{text}\n{}^",
            self.line,
            self.column,
            self.message,
            " ".repeat(self.column.saturating_sub(1))
        )
    }
}

impl fmt::Display for PolicyLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl std::error::Error for PolicyLoadError {}

const DEFAULT_ORDER: [LinkKind; 7] = [
    LinkKind::Wifi,
    LinkKind::Cellular,
    LinkKind::Bluetooth,
    LinkKind::Ethernet,
    LinkKind::Usb,
    LinkKind::Vpn,
    LinkKind::Other,
];

impl Policy {
    /// The policy used when no `--policy` file is given.
    pub fn default_policy() -> Policy {
        Policy {
            order: DEFAULT_ORDER.to_vec(),
            hold: None,
        }
    }

    /// Parses a policy text. On error nothing is returned but the error: the caller keeps
    /// whatever policy it had.
    pub fn parse(source: &str) -> Result<Policy, PolicyLoadError> {
        let mut policy = Policy::default_policy();
        for (n, raw) in source.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("");
            let words: Vec<(usize, &str)> = words_with_columns(line);
            let Some(&(col, first)) = words.first() else {
                continue;
            };
            let err = |column: usize, message: String| PolicyLoadError {
                line: n + 1,
                column,
                message,
            };
            match first {
                "prefer" => {
                    let mut order = Vec::new();
                    for (i, &(c, w)) in words.iter().enumerate().skip(1) {
                        if i % 2 == 0 {
                            if w != "over" {
                                return Err(err(c, format!("expected `over`, found `{w}`")));
                            }
                            continue;
                        }
                        let kind: LinkKind = w.parse().map_err(|e| err(c, format!("{e}")))?;
                        order.push(kind);
                    }
                    if order.len() < 2 || words.len() % 2 == 1 {
                        return Err(err(col, "`prefer` needs `A over B`".into()));
                    }
                    for k in DEFAULT_ORDER {
                        if !order.contains(&k) {
                            order.push(k);
                        }
                    }
                    policy.order = order;
                }
                "hold" => {
                    let Some(&(c, w)) = words.get(1) else {
                        return Err(err(col, "`hold` needs a duration such as `10s`".into()));
                    };
                    policy.hold = Some(parse_duration(w).ok_or_else(|| {
                        err(
                            c,
                            format!("`{w}` is not a duration (write e.g. 500ms, 10s, 2m)"),
                        )
                    })?);
                }
                other => {
                    return Err(err(
                        col,
                        format!(
                            "`{other}` is not understood by the agent's interim policy reader \
                             (only `prefer KIND over KIND ...` and `hold DURATION`)"
                        ),
                    ));
                }
            }
        }
        Ok(policy)
    }

    /// Every `hold` duration the policy may apply. The core wakes up when a link's `up_for`
    /// crosses one of them, because the decision may change then with no event at all.
    pub fn hold_thresholds(&self) -> Vec<Duration> {
        self.hold.into_iter().collect()
    }

    /// Evaluates the policy for one app: which usable interfaces, in what order, in what role.
    pub fn evaluate(&self, state: &State) -> Decision {
        let mut usable: Vec<_> = state
            .interfaces
            .iter()
            .filter(|i| i.state.is_usable())
            .collect();
        let class_pos = |k: LinkKind| {
            self.order
                .iter()
                .position(|o| *o == k)
                .unwrap_or(usize::MAX)
        };
        usable.sort_by(|a, b| {
            class_pos(a.kind)
                .cmp(&class_pos(b.kind))
                .then(a.state.rank().cmp(&b.state.rank()))
                .then(
                    a.rtt_ms
                        .unwrap_or(f64::INFINITY)
                        .total_cmp(&b.rtt_ms.unwrap_or(f64::INFINITY)),
                )
                .then(a.name.cmp(&b.name))
        });
        let mut explain = Vec::new();
        if let Some(hold) = self.hold {
            let held = |i: &roam_policy::Interface| {
                i.up_for_ms
                    .is_some_and(|ms| u128::from(ms) < hold.as_millis())
            };
            if usable.first().is_some_and(|i| held(i))
                && let Some(pos) = usable.iter().position(|i| !held(i))
            {
                let moved = usable.remove(pos);
                explain.push(format!(
                    "hold {}ms: {} has been up for less; {} stays first",
                    hold.as_millis(),
                    usable[0].name,
                    moved.name
                ));
                usable.insert(0, moved);
            }
        }
        let paths = usable
            .iter()
            .enumerate()
            .map(|(n, i)| Path {
                interface: i.name.clone(),
                link: i.kind.as_str().to_owned(),
                role: if n == 0 { Role::Primary } else { Role::Backup },
            })
            .collect();
        Decision {
            app: state.app.clone(),
            multipath: MultipathMode::Handover,
            paths,
            explain,
        }
    }
}

fn words_with_columns(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        if c.is_whitespace() {
            if let Some(s) = start.take() {
                out.push((line[..s].chars().count() + 1, &line[s..i]));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((line[..s].chars().count() + 1, &line[s..]));
    }
    out
}

fn parse_duration(word: &str) -> Option<Duration> {
    let split = word.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = word.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_policy::{Interface, LinkState};

    fn iface(name: &str, kind: LinkKind, state: LinkState) -> Interface {
        Interface::new(name, kind, state)
    }

    #[test]
    fn default_prefers_wifi_and_skips_down_links() {
        let p = Policy::default_policy();
        let state = State {
            app: Some("a".into()),
            flow: None,
            interfaces: vec![
                iface("rmnet0", LinkKind::Cellular, LinkState::Validated),
                iface("wlan0", LinkKind::Wifi, LinkState::Up),
                iface("bnep0", LinkKind::Bluetooth, LinkState::Down),
            ],
        };
        let d = p.evaluate(&state);
        let names: Vec<_> = d.paths.iter().map(|p| p.interface.as_str()).collect();
        assert_eq!(names, ["wlan0", "rmnet0"]);
        assert_eq!(d.paths[0].role, Role::Primary);
        assert_eq!(d.paths[1].role, Role::Backup);
    }

    #[test]
    fn prefer_line_reorders_and_errors_point_at_the_word() {
        let p = Policy::parse("# c\nprefer cellular over wifi\n").unwrap();
        let state = State {
            app: None,
            flow: None,
            interfaces: vec![
                iface("wlan0", LinkKind::Wifi, LinkState::Validated),
                iface("rmnet0", LinkKind::Cellular, LinkState::Validated),
            ],
        };
        assert_eq!(p.evaluate(&state).paths[0].interface, "rmnet0");
        let src = "prefer wifi over\n  prefer cellular over wlan\n";
        let e = Policy::parse(src).unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        let e = Policy::parse("prefer wifi over wlan").unwrap_err();
        assert_eq!((e.line, e.column), (1, 18));
        let r = e.render("p.roam", "prefer wifi over wlan");
        assert!(
            r.starts_with("p.roam:1:18: error: unknown link kind `wlan`"),
            "{r}"
        );
        assert!(
            r.ends_with("\nprefer wifi over wlan\n                 ^"),
            "{r}"
        );
    }

    #[test]
    fn hold_keeps_the_long_up_link_first() {
        let p = Policy::parse("hold 10s").unwrap();
        assert_eq!(p.hold_thresholds(), [Duration::from_secs(10)]);
        let mut wifi = iface("wlan0", LinkKind::Wifi, LinkState::Validated);
        wifi.up_for_ms = Some(2_000);
        let mut cell = iface("rmnet0", LinkKind::Cellular, LinkState::Validated);
        cell.up_for_ms = Some(600_000);
        let mut state = State {
            app: None,
            flow: None,
            interfaces: vec![wifi, cell],
        };
        assert_eq!(p.evaluate(&state).paths[0].interface, "rmnet0");
        state.interfaces[0].up_for_ms = Some(10_000);
        assert_eq!(p.evaluate(&state).paths[0].interface, "wlan0");
    }
}
