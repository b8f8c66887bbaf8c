//! The roam policy language: parse, check, evaluate, explain.
//!
//! A policy file (`*.roam`) says, for every app, which links its sessions may use, in what
//! order, and how many at once. The language is specified in `docs/policy-language.md`.
//!
//! ```
//! use roam_policy::{Interface, LinkKind, LinkState, Policy, State};
//!
//! let policy = Policy::parse(r#"
//!     link wifi = kind wifi
//!     link cell = kind cellular
//!     app "com.example.video" { use wifi only }
//! "#)?;
//! let state = State {
//!     app: Some("com.example.video".into()),
//!     flow: None,
//!     interfaces: vec![
//!         Interface::new("wlan0", LinkKind::Wifi, LinkState::Down),
//!         Interface::new("rmnet0", LinkKind::Cellular, LinkState::Validated),
//!     ],
//! };
//! // WiFi is down and the video app may only use WiFi: it is blocked, never sent on cellular.
//! assert!(policy.evaluate(&state).is_blocked());
//! # Ok::<(), roam_policy::PolicyError>(())
//! ```
//!
//! This crate is pure: no I/O, no clock, no async. Time (a link's `up_for_ms`, a flow's
//! `age_ms`) is passed in. Layout: [`lexer`] and [`parser`] make an [`ast`]; the checker turns
//! it into a [`Policy`]; evaluation and explanation live in `eval`; [`fmt`] prints a file
//! back in canonical form; [`diag`] renders errors; [`model`] holds the JSON shapes every
//! roam crate speaks.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ast;
mod check;
pub mod diag;
mod eval;
pub mod fmt;
pub mod glob;
pub mod lexer;
pub mod model;
pub mod parser;
mod suggest;
pub mod units;

use std::str::FromStr;

pub use check::Policy;
pub use diag::{Diagnostic, Severity, Span};
pub use model::{
    Decision, Flow, FlowClock, FlowThresholds, Interface, LinkKind, LinkState, MultipathMode, Path,
    Role, State,
};

/// The policy used when none is given: a VPN first (sessions must not bypass it), then WiFi,
/// Ethernet, cellular, USB; Bluetooth only when nothing else works; a link that just came
/// back must stay up 5 s before it is primary again.
pub const DEFAULT_POLICY: &str = include_str!("default.roam");

/// The outcome of checking a policy source: the policy when it has no error, and every
/// diagnostic (errors and warnings) in source order.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The policy, when there is no error.
    pub policy: Option<Policy>,
    /// Every error and warning, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }
}

/// Parses and checks a policy source, keeping warnings. Never panics, whatever the input.
pub fn check(source: &str) -> Checked {
    let parsed = parser::parse(source);
    let (policy, mut diagnostics) = check::check(&parsed.file, source);
    let syntax_errors = !parsed.diagnostics.is_empty();
    diagnostics.extend(parsed.diagnostics);
    diagnostics.sort_by_key(|d| d.span.start);
    diagnostics.truncate(parser::MAX_ERRORS);
    Checked {
        // A file with syntax errors was only partly understood: it is never used.
        policy: if syntax_errors { None } else { policy },
        diagnostics,
    }
}

/// A policy source with at least one error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", summary(.diagnostics))]
pub struct PolicyError {
    /// Every error and warning, in source order (at least one error).
    pub diagnostics: Vec<Diagnostic>,
    /// The source the positions refer to.
    pub source_text: String,
}

fn summary(diagnostics: &[Diagnostic]) -> String {
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    match errors.first() {
        Some(first) if errors.len() == 1 => format!("invalid policy: {}", first.message),
        Some(first) => format!(
            "invalid policy: {} (and {} more errors)",
            first.message,
            errors.len() - 1
        ),
        None => "invalid policy".into(),
    }
}

impl PolicyError {
    /// Renders every diagnostic as `FILE:LINE:COL: error: MESSAGE` with the source line and a
    /// caret, as `roamctl policy check` prints it.
    pub fn render(&self, file_name: &str) -> String {
        diag::render_all(&self.diagnostics, file_name, &self.source_text)
    }

    /// The 1-based line and column of the first error.
    pub fn location(&self) -> (usize, usize) {
        self.diagnostics
            .iter()
            .find(|d| d.is_error())
            .map_or((1, 1), |d| d.line_col(&self.source_text))
    }
}

impl Policy {
    /// Parses and checks a policy source. Warnings are dropped; use [`check`] to see them.
    pub fn parse(source: &str) -> Result<Policy, PolicyError> {
        let checked = check(source);
        checked.policy.ok_or_else(|| PolicyError {
            diagnostics: checked.diagnostics,
            source_text: source.to_owned(),
        })
    }

    /// The built-in policy ([`DEFAULT_POLICY`]).
    pub fn default_policy() -> Policy {
        // The text is part of this crate and checked by its tests.
        #[allow(clippy::expect_used)]
        Policy::parse(DEFAULT_POLICY).expect("the built-in default policy is valid")
    }

    /// Every `hold` duration the policy may apply, ascending, without repeats. A decision can
    /// change when a link's `up_for_ms` crosses one of them, with no other event: an agent
    /// re-evaluates at those moments.
    pub fn hold_durations(&self) -> Vec<std::time::Duration> {
        self.time_thresholds(|k| match k {
            check::StmtKind::Hold { ms } => vec![*ms],
            _ => vec![],
        })
    }

    /// Every flow age at which some app's decision may change (the age points of
    /// [`Policy::flow_thresholds`] over every block), ascending, without repeats.
    pub fn flow_age_thresholds(&self) -> Vec<std::time::Duration> {
        let mut all = model::FlowThresholds::default();
        for st in self.statements() {
            st.flow_points(&mut all);
        }
        finish_points(&mut all);
        all.age_ms
            .into_iter()
            .map(std::time::Duration::from_millis)
            .collect()
    }

    /// The points where the flow's figures can change the decision for `app` (`None`: the
    /// default block alone): those of the app block that applies to it and of the default
    /// block. Empty when no statement that applies looks at the flow; a session then never
    /// reports its flow.
    pub fn flow_thresholds(&self, app: Option<&str>) -> model::FlowThresholds {
        let mut t = model::FlowThresholds::default();
        let app_rules = app.and_then(|id| self.apps.iter().find(|a| a.pattern.matches(id)));
        for st in app_rules
            .into_iter()
            .map(|a| &a.rules)
            .chain(self.default.iter())
            .flat_map(|r| &r.statements)
        {
            st.flow_points(&mut t);
        }
        finish_points(&mut t);
        t
    }

    fn statements(&self) -> impl Iterator<Item = &check::Stmt> {
        self.default
            .iter()
            .chain(self.apps.iter().map(|a| &a.rules))
            .flat_map(|r| &r.statements)
    }

    fn time_thresholds(
        &self,
        of: impl Fn(&check::StmtKind) -> Vec<f64>,
    ) -> Vec<std::time::Duration> {
        let mut v: Vec<std::time::Duration> = self
            .statements()
            .flat_map(|st| of(&st.kind))
            .map(duration_ms)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The link class names, in declaration order.
    pub fn link_classes(&self) -> impl Iterator<Item = &str> {
        self.classes.iter().map(|c| c.name.as_str())
    }

    /// The app patterns, in file order.
    pub fn app_patterns(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(|a| a.pattern.as_str())
    }

    /// Whether the file has a `default` block.
    pub fn has_default_block(&self) -> bool {
        self.default.is_some()
    }

    /// A one-line summary (`4 link classes, a default block, 4 app blocks`).
    pub fn summary(&self) -> String {
        let plural = |n: usize, one: &str, many: &str| {
            if n == 1 {
                format!("1 {one}")
            } else {
                format!("{n} {many}")
            }
        };
        format!(
            "{}, {}, {}",
            plural(self.classes.len(), "link class", "link classes"),
            if self.default.is_some() {
                "a default block"
            } else {
                "no default block"
            },
            plural(self.apps.len(), "app block", "app blocks")
        )
    }
}

/// Sorts the points and drops repeats and zeros (a flow starts at zero: a point there is
/// never crossed).
fn finish_points(t: &mut model::FlowThresholds) {
    for v in [&mut t.bytes, &mut t.age_ms] {
        v.retain(|&p| p > 0);
        v.sort_unstable();
        v.dedup();
    }
}

fn duration_ms(ms: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64((ms / 1000.0).clamp(0.0, 1e12))
}

impl FromStr for Policy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::parse(s)
    }
}
