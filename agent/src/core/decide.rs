//! The one seam between the agent and the policy engine (`roam-policy`).
//!
//! Everything the agent needs from a policy passes through [`Policy`]: parse a file, fall back
//! to the built-in default, evaluate one app's state, and tell the core which `hold` durations
//! exist so it can wake up exactly when a held link becomes eligible again (a decision may
//! change then with no event at all, and the agent must not poll to find out).
use std::time::Duration;

use roam_policy::ast::{Body, Item};
use roam_policy::{Decision, State};

/// Why a policy text was rejected: every diagnostic, with lines and columns.
/// `render(file_name)` gives the `FILE:LINE:COL: error: ...` text `roamctl policy check` prints.
pub use roam_policy::PolicyError as PolicyLoadError;

/// A checked policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    inner: roam_policy::Policy,
    holds: Vec<Duration>,
}

impl Policy {
    /// The built-in policy, used when no `--policy` file is given.
    pub fn default_policy() -> Policy {
        Policy {
            inner: roam_policy::Policy::default_policy(),
            holds: holds_of(roam_policy::DEFAULT_POLICY),
        }
    }

    /// Parses and checks a policy text. On error nothing is returned but the error: the caller
    /// keeps whatever policy it had.
    pub fn parse(source: &str) -> Result<Policy, PolicyLoadError> {
        Ok(Policy {
            inner: roam_policy::Policy::parse(source)?,
            holds: holds_of(source),
        })
    }

    /// Every `hold` duration the policy may apply.
    pub fn hold_thresholds(&self) -> Vec<Duration> {
        self.holds.clone()
    }

    /// Evaluates the policy for one app: which usable interfaces, in what order, in what role.
    pub fn evaluate(&self, state: &State) -> Decision {
        self.inner.evaluate(state)
    }

    /// One line: how many link classes and blocks.
    pub fn summary(&self) -> String {
        self.inner.summary()
    }
}

/// The `hold` durations written anywhere in `source` (only called on text that checked).
fn holds_of(source: &str) -> Vec<Duration> {
    let mut v: Vec<Duration> = roam_policy::parser::parse(source)
        .file
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Block(b) => Some(b),
            Item::Link(_) => None,
        })
        .flat_map(|b| b.statements.iter())
        .filter_map(|s| match &s.body {
            Body::Hold(q) if q.quantity.value.is_finite() && q.quantity.value >= 0.0 => {
                Some(Duration::from_secs_f64(q.quantity.value / 1000.0))
            }
            _ => None,
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_policy::{Interface, LinkKind, LinkState, Role};

    fn iface(name: &str, kind: LinkKind, state: LinkState) -> Interface {
        Interface::new(name, kind, state)
    }

    #[test]
    fn the_default_prefers_wifi_and_skips_down_links() {
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
        assert_eq!(p.hold_thresholds(), [Duration::from_secs(5)]);
    }

    #[test]
    fn holds_are_collected_from_every_block() {
        let src = "link wifi = kind wifi\nlink cell = kind cellular\n\
                   default { hold 10s }\napp \"a\" { hold 1500ms }\napp \"b\" { hold 10s }\n";
        let p = Policy::parse(src).unwrap();
        assert_eq!(
            p.hold_thresholds(),
            [Duration::from_millis(1500), Duration::from_secs(10)]
        );
    }

    #[test]
    fn errors_carry_their_location() {
        let src = "link wifi = kind wifi\ndefault {\n  prefer wifi over cel\n}\n";
        let e = Policy::parse(src).unwrap_err();
        assert_eq!(e.location(), (3, 20));
        let r = e.render("p.roam");
        assert!(r.starts_with("p.roam:3:20: error: "), "{r}");
    }
}
