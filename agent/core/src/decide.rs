//! The one seam between the agent and the policy engine (`roam-policy`).
//!
//! Everything the agent needs from a policy passes through [`Policy`]: parse a file, fall back
//! to the built-in default, evaluate one app's state, and tell the core which `hold` durations
//! exist so it can wake up exactly when a held link becomes eligible again (a decision may
//! change then with no event at all, and the agent must not poll to find out).
use std::time::Duration;

use roam_policy::{Decision, State};

/// Why a policy text was rejected: every diagnostic, with lines and columns.
/// `render(file_name)` gives the `FILE:LINE:COL: error: ...` text `roamctl policy check` prints.
pub use roam_policy::PolicyError as PolicyLoadError;

/// A checked policy, ready to evaluate.
#[derive(Debug, Clone)]
pub struct Policy {
    inner: roam_policy::Policy,
}

impl Policy {
    /// The built-in policy, used when no `--policy` file is given.
    pub fn default_policy() -> Policy {
        Policy {
            inner: roam_policy::Policy::default_policy(),
        }
    }

    /// Parses and checks a policy text. On error nothing is returned but the error: the caller
    /// keeps whatever policy it had.
    pub fn parse(source: &str) -> Result<Policy, PolicyLoadError> {
        Ok(Policy {
            inner: roam_policy::Policy::parse(source)?,
        })
    }

    /// Every `hold` duration the policy may apply.
    pub fn hold_thresholds(&self) -> Vec<Duration> {
        self.inner.hold_durations()
    }

    /// Where the flow's figures can change `app`'s decision: what its subscribers are told to
    /// report at, and the ages the core wakes up at.
    pub fn flow_thresholds(&self, app: &str) -> roam_policy::FlowThresholds {
        self.inner.flow_thresholds(Some(app))
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
