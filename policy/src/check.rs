//! The checker: from a syntax tree to a [`Policy`] that can be evaluated, with every
//! semantic error and warning the language defines.
//!
//! Errors: undeclared class, wrong unit, unknown kind, attribute or mode, duplicate class or
//! default block, a class preferred over itself. Warnings: app blocks shadowed by an earlier
//! pattern, link classes that can never match, statements that can never apply.

use std::collections::HashMap;

use crate::ast::{self, BlockHead, Body, Item, Selector};
use crate::diag::{Diagnostic, LineIndex, Span};
use crate::glob;
use crate::lexer::CmpOp;
use crate::model::{LinkKind, MultipathMode};
use crate::suggest::closest;
use crate::units::Dim;

/// A checked, ready-to-evaluate policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) classes: Vec<Class>,
    pub(crate) default: Option<Rules>,
    pub(crate) apps: Vec<AppRules>,
}

#[cfg(test)]
impl Policy {
    /// The same policy with every line number zeroed, to compare meaning across layouts.
    pub(crate) fn without_lines(mut self) -> Self {
        for c in &mut self.classes {
            c.line = 0;
        }
        let blocks = self.default.iter_mut().chain(self.apps.iter_mut().map(|a| {
            a.line = 0;
            &mut a.rules
        }));
        for rules in blocks {
            for st in &mut rules.statements {
                st.line = 0;
            }
        }
        self
    }
}

/// A link class.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Class {
    pub name: String,
    pub selectors: Vec<Sel>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sel {
    Kind(LinkKind),
    Interface(glob::Pattern),
    Ssid(String),
}

/// The statements of one block.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rules {
    pub statements: Vec<Stmt>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AppRules {
    pub pattern: glob::Pattern,
    pub line: usize,
    pub rules: Rules,
}

/// A checked statement: class names resolved to indices, quantities to base units.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stmt {
    pub line: usize,
    /// The body in canonical form, for explanations (`prefer cell over wifi`).
    pub text: String,
    pub guard: Option<Guard>,
    pub kind: StmtKind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Guard {
    pub unless: bool,
    pub cond: Cond,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StmtKind {
    Prefer(Vec<usize>),
    Use(Vec<usize>),
    Never(usize),
    Avoid(usize),
    Start {
        on: usize,
        add: usize,
        threshold: Threshold,
    },
    Multipath(MultipathMode),
    Hold {
        ms: f64,
    },
}

/// What a `start ... after` threshold measures.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Threshold {
    pub measure: FlowMeasure,
    pub value: f64,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlowMeasure {
    Bytes,
    Age,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    Or(Vec<Cond>),
    And(Vec<Cond>),
    Not(Box<Cond>),
    State {
        class: usize,
        attr: StateAttr,
    },
    Figure {
        class: usize,
        figure: Figure,
        op: CmpOp,
        value: f64,
        text: String,
    },
    Flow {
        measure: FlowMeasure,
        op: CmpOp,
        value: f64,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateAttr {
    Down,
    Up,
    Validated,
    Degraded,
    Metered,
}

impl Stmt {
    /// Adds the points where the flow's figures can change whether this statement applies
    /// or what it does (see [`crate::FlowThresholds`]); unsorted.
    pub(crate) fn flow_points(&self, out: &mut crate::FlowThresholds) {
        if let StmtKind::Start { threshold, .. } = &self.kind {
            // `start` holds while the figure is below its quantity.
            push_points(out, threshold.measure, CmpOp::Lt, threshold.value);
        }
        if let Some(g) = &self.guard {
            g.cond.flow_points(out);
        }
    }
}

impl Cond {
    fn flow_points(&self, out: &mut crate::FlowThresholds) {
        match self {
            Cond::Or(v) | Cond::And(v) => v.iter().for_each(|c| c.flow_points(out)),
            Cond::Not(c) => c.flow_points(out),
            Cond::Flow {
                measure, op, value, ..
            } => push_points(out, *measure, *op, *value),
            Cond::State { .. } | Cond::Figure { .. } => {}
        }
    }
}

/// The whole-number figures where `figure OP value` changes its answer: for `<` and `>=` the
/// first figure at or above `value`, for `>` and `<=` the first above it, for `==` and `!=`
/// the value and the one after (none when the value is not a whole number: then the answer
/// never changes). Flow figures are whole bytes and milliseconds.
fn push_points(out: &mut crate::FlowThresholds, measure: FlowMeasure, op: CmpOp, value: f64) {
    if !value.is_finite() {
        return;
    }
    // `as` saturates: a negative point becomes 0 (never crossed), a huge one u64::MAX.
    let points: Vec<u64> = match op {
        CmpOp::Lt | CmpOp::Ge => vec![value.ceil() as u64],
        CmpOp::Gt | CmpOp::Le => vec![(value.floor() + 1.0) as u64],
        CmpOp::Eq | CmpOp::Ne if value.fract() == 0.0 => {
            vec![value as u64, (value + 1.0) as u64]
        }
        CmpOp::Eq | CmpOp::Ne => vec![],
    };
    match measure {
        FlowMeasure::Bytes => out.bytes.extend(points),
        FlowMeasure::Age => out.age_ms.extend(points),
    }
}

impl StateAttr {
    pub fn as_str(self) -> &'static str {
        match self {
            StateAttr::Down => "down",
            StateAttr::Up => "up",
            StateAttr::Validated => "validated",
            StateAttr::Degraded => "degraded",
            StateAttr::Metered => "metered",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Figure {
    Rtt,
    Loss,
    Signal,
}

impl Figure {
    pub fn as_str(self) -> &'static str {
        match self {
            Figure::Rtt => "rtt",
            Figure::Loss => "loss",
            Figure::Signal => "signal",
        }
    }

    fn dim(self) -> Dim {
        match self {
            Figure::Rtt => Dim::Duration,
            Figure::Loss => Dim::Percent,
            Figure::Signal => Dim::Signal,
        }
    }
}

const STATE_ATTRS: [&str; 5] = ["down", "up", "validated", "degraded", "metered"];
const FIGURE_ATTRS: [&str; 3] = ["rtt", "loss", "signal"];
const FLOW_ATTRS: [&str; 2] = ["bytes", "age"];
const MODES: [&str; 4] = ["off", "handover", "interactive", "aggregate"];

/// Checks a parsed file. Returns the policy when there is no error, and every diagnostic
/// (errors and warnings) in source order.
pub(crate) fn check(file: &ast::File, source: &str) -> (Option<Policy>, Vec<Diagnostic>) {
    let mut cx = Checker {
        lines: LineIndex::new(source),
        diagnostics: Vec::new(),
        class_index: HashMap::new(),
        classes: Vec::new(),
        inert_prefers: Vec::new(),
        reorders: false,
    };
    cx.declare_classes(file);
    let mut default: Option<(Rules, Span)> = None;
    let mut apps: Vec<(AppRules, Span)> = Vec::new();
    for item in &file.items {
        let Item::Block(block) = item else { continue };
        let rules = cx.rules(block);
        match &block.head {
            BlockHead::Default => {
                if let Some((_, first)) = &default {
                    let first_line = cx.lines.line(first.start);
                    cx.diagnostics.push(
                        Diagnostic::error(block.keyword, "a second `default` block").with_help(
                            format!("merge it into the `default` block on line {first_line}"),
                        ),
                    );
                } else {
                    default = Some((rules, block.keyword));
                }
            }
            BlockHead::App(pattern) => {
                cx.check_shadowing(pattern, &apps);
                apps.push((
                    AppRules {
                        pattern: glob::Pattern::new(&pattern.value),
                        line: cx.lines.line(block.keyword.start),
                        rules,
                    },
                    pattern.span,
                ));
            }
        }
    }
    if !cx.reorders {
        for (span, guard, ids) in std::mem::take(&mut cx.inert_prefers) {
            let d = cx.inert_prefer(span, &guard, &ids);
            cx.diagnostics.push(d);
        }
    }
    let mut diagnostics = cx.diagnostics;
    diagnostics.sort_by_key(|d| d.span.start);
    let policy = if diagnostics.iter().any(Diagnostic::is_error) {
        None
    } else {
        Some(Policy {
            classes: cx.classes,
            default: default.map(|(r, _)| r),
            apps: apps.into_iter().map(|(a, _)| a).collect(),
        })
    };
    (policy, diagnostics)
}

struct Checker {
    lines: LineIndex,
    diagnostics: Vec<Diagnostic>,
    class_index: HashMap<String, (usize, Span)>,
    classes: Vec<Class>,
    /// Guarded `prefer`s whose classes are already in declaration order: the statement, its
    /// guard and its classes. They change nothing unless something else reorders classes.
    inert_prefers: Vec<(Span, ast::Guard, Vec<usize>)>,
    /// Some statement can put a class before one declared earlier (`prefer` against
    /// declaration order, `start on`).
    reorders: bool,
}

impl Checker {
    fn declare_classes(&mut self, file: &ast::File) {
        for item in &file.items {
            let Item::Link(decl) = item else { continue };
            let name = &decl.name.name;
            if let Some((_, first)) = self.class_index.get(name) {
                let first_line = self.lines.line(first.start);
                self.diagnostics.push(
                    Diagnostic::error(
                        decl.name.span,
                        format!("link class `{name}` is declared twice"),
                    )
                    .with_help(format!(
                        "it is first declared on line {first_line}; rename one or join their selectors"
                    )),
                );
                continue;
            }
            if name == "flow" {
                self.diagnostics.push(
                    Diagnostic::error(decl.name.span, "`flow` cannot name a link class").with_help(
                        "`flow.bytes` and `flow.age` refer to the flow; pick another name",
                    ),
                );
                continue;
            }
            let mut selectors = Vec::new();
            let mut kinds: Vec<(LinkKind, Span)> = Vec::new();
            let mut ssids: Vec<(&str, Span)> = Vec::new();
            for sel in &decl.selectors {
                match sel {
                    Selector::Kind(k) => match k.name.parse::<LinkKind>() {
                        Ok(kind) => {
                            kinds.push((kind, k.span));
                            selectors.push(Sel::Kind(kind));
                        }
                        Err(_) => {
                            let mut d = Diagnostic::error(
                                k.span,
                                format!("unknown link kind `{}`", k.name),
                            )
                            .with_help(
                                "kinds are: wifi, cellular, bluetooth, ethernet, vpn, usb, other",
                            );
                            if let Some(s) = closest(&k.name, LinkKind::ALL.map(LinkKind::as_str)) {
                                d = d.with_label(format!("did you mean `{s}`?"));
                            }
                            self.diagnostics.push(d);
                        }
                    },
                    Selector::Interface(g) => {
                        selectors.push(Sel::Interface(glob::Pattern::new(&g.value)))
                    }
                    Selector::Ssid(s) => {
                        ssids.push((&s.value, s.span));
                        selectors.push(Sel::Ssid(s.value.clone()));
                    }
                }
            }
            let mut never_matches = false;
            if let Some((_, span)) = kinds.iter().skip(1).find(|(k, _)| *k != kinds[0].0) {
                never_matches = true;
                self.diagnostics.push(
                    Diagnostic::warning(
                        *span,
                        format!("link class `{name}` can never match: an interface has one kind"),
                    )
                    .with_help("to put several kinds in one class is not possible; declare a class per kind and list them in `use A, B only`"),
                );
            }
            if let Some((_, span)) = ssids.iter().skip(1).find(|(s, _)| *s != ssids[0].0) {
                never_matches = true;
                self.diagnostics.push(Diagnostic::warning(
                    *span,
                    format!("link class `{name}` can never match: a link has one SSID"),
                ));
            }
            // An earlier class that takes every interface this one selects leaves it nothing,
            // since an interface belongs to the FIRST class that matches.
            if let Some(earlier) = self
                .classes
                .iter()
                .filter(|_| !never_matches)
                .find(|c| selects_superset(&c.selectors, &selectors))
            {
                self.diagnostics.push(
                    Diagnostic::warning(
                        decl.name.span,
                        format!(
                            "link class `{name}` can never match: every interface it selects belongs to `{}` (line {}), declared earlier",
                            earlier.name, earlier.line
                        ),
                    )
                    .with_help(format!("declare `{name}` before `{}`", earlier.name)),
                );
            }
            self.class_index
                .insert(name.clone(), (self.classes.len(), decl.name.span));
            self.classes.push(Class {
                name: name.clone(),
                selectors,
                line: self.lines.line(decl.span.start),
            });
        }
    }

    fn class(&mut self, ident: &ast::Ident) -> Option<usize> {
        if let Some((i, _)) = self.class_index.get(&ident.name) {
            return Some(*i);
        }
        let mut d = Diagnostic::error(ident.span, format!("unknown link class `{}`", ident.name));
        let names: Vec<&str> = self.classes.iter().map(|c| c.name.as_str()).collect();
        if let Some(s) = closest(&ident.name, names.iter().copied()) {
            d = d.with_label(format!("did you mean `{s}`?"));
        }
        d = if names.is_empty() {
            d.with_help(format!(
                "declare it first, e.g. `link {} = kind wifi`",
                ident.name
            ))
        } else {
            d.with_help(format!(
                "declared classes: {}; or declare it with `link {} = ...`",
                names.join(", "),
                ident.name
            ))
        };
        self.diagnostics.push(d);
        None
    }

    fn rules(&mut self, block: &ast::Block) -> Rules {
        let mut statements = Vec::new();
        let mut first_multipath: Option<usize> = None;
        let mut first_hold: Option<usize> = None;
        for st in &block.statements {
            let line = self.lines.line(st.span.start);
            let guard = st.guard.as_ref().and_then(|g| {
                self.cond(&g.cond).map(|cond| Guard {
                    unless: g.unless,
                    cond,
                })
            });
            let guard_ok = st.guard.is_none() || guard.is_some();
            let kind = match &st.body {
                Body::Prefer(list) => {
                    let ids: Vec<Option<usize>> = list.iter().map(|i| self.class(i)).collect();
                    for pair in list.windows(2) {
                        if pair[0].name == pair[1].name {
                            self.diagnostics.push(Diagnostic::error(
                                pair[1].span,
                                format!("`{}` cannot be preferred over itself", pair[1].name),
                            ));
                        }
                    }
                    let ids = ids.into_iter().collect::<Option<Vec<_>>>();
                    if let Some(ids) = &ids {
                        if ids.windows(2).all(|p| p[0] < p[1]) {
                            if let Some(g) = &st.guard {
                                self.inert_prefers.push((st.span, g.clone(), ids.clone()));
                            }
                        } else {
                            self.reorders = true;
                        }
                    }
                    ids.map(StmtKind::Prefer)
                }
                Body::Use(list) => {
                    for (i, a) in list.iter().enumerate() {
                        if list[..i].iter().any(|b| b.name == a.name) {
                            self.diagnostics.push(Diagnostic::warning(
                                a.span,
                                format!("`{}` is listed twice", a.name),
                            ));
                        }
                    }
                    let ids: Vec<Option<usize>> = list.iter().map(|i| self.class(i)).collect();
                    ids.into_iter()
                        .collect::<Option<Vec<_>>>()
                        .map(StmtKind::Use)
                }
                Body::Never(a) => self.class(a).map(StmtKind::Never),
                Body::Avoid(a) => self.class(a).map(StmtKind::Avoid),
                Body::Start { on, add, after } => {
                    self.reorders = true;
                    let on_i = self.class(on);
                    let add_i = self.class(add);
                    if on.name == add.name {
                        self.diagnostics.push(
                            Diagnostic::error(
                                add.span,
                                format!(
                                    "`start on {0} then add {0}` adds the class it starts on",
                                    add.name
                                ),
                            )
                            .with_help("name two different classes"),
                        );
                    }
                    let measure = match after.quantity.dim() {
                        Dim::Size => Some(FlowMeasure::Bytes),
                        Dim::Duration => Some(FlowMeasure::Age),
                        other => {
                            self.diagnostics.push(
                                Diagnostic::error(
                                    after.span,
                                    format!(
                                        "`after` takes a size or a duration, not a {} (`{}`)",
                                        other.noun(),
                                        after.quantity
                                    ),
                                )
                                .with_help(
                                    "write e.g. `after 1MB` (flow bytes) or `after 30s` (flow age)",
                                ),
                            );
                            None
                        }
                    };
                    match (on_i, add_i, measure) {
                        (Some(on), Some(add), Some(measure)) => Some(StmtKind::Start {
                            on,
                            add,
                            threshold: Threshold {
                                measure,
                                value: after.quantity.value,
                                text: after.quantity.text.clone(),
                            },
                        }),
                        _ => None,
                    }
                }
                Body::Multipath(m) => match m.name.parse::<MultipathMode>() {
                    Ok(mode) => {
                        if let Some(first) = first_multipath {
                            self.diagnostics.push(
                                Diagnostic::warning(
                                    m.span,
                                    "this `multipath` never applies: the block already sets one",
                                )
                                .with_help(format!("the first one, on line {first}, counts")),
                            );
                        }
                        first_multipath.get_or_insert(line);
                        Some(StmtKind::Multipath(mode))
                    }
                    Err(_) => {
                        let mut d = Diagnostic::error(
                            m.span,
                            format!("unknown multipath mode `{}`", m.name),
                        )
                        .with_help("modes are: off, handover, interactive, aggregate");
                        if let Some(s) = closest(&m.name, MODES) {
                            d = d.with_label(format!("did you mean `{s}`?"));
                        }
                        self.diagnostics.push(d);
                        None
                    }
                },
                Body::Hold(q) => {
                    if q.quantity.dim() == Dim::Duration {
                        if let Some(first) = first_hold {
                            self.diagnostics.push(
                                Diagnostic::warning(
                                    q.span,
                                    "this `hold` never applies: the block already sets one",
                                )
                                .with_help(format!("the first one, on line {first}, counts")),
                            );
                        }
                        first_hold.get_or_insert(line);
                        Some(StmtKind::Hold {
                            ms: q.quantity.value,
                        })
                    } else {
                        self.diagnostics
                            .push(wrong_unit(q, Dim::Duration, "`hold`"));
                        None
                    }
                }
            };
            if let (Some(kind), true) = (kind, guard_ok) {
                statements.push(Stmt {
                    line,
                    text: st.body.canonical(),
                    guard,
                    kind,
                });
            }
        }
        Rules { statements }
    }

    /// The warning for a guarded `prefer` that can never change the order: its classes are
    /// tried in declaration order already, whether its condition holds or not.
    fn inert_prefer(&self, span: Span, guard: &ast::Guard, ids: &[usize]) -> Diagnostic {
        let names: Vec<&str> = ids.iter().map(|i| self.classes[*i].name.as_str()).collect();
        let reversed: Vec<&str> = names.iter().rev().copied().collect();
        let word = if guard.unless { "unless" } else { "if" };
        let d = Diagnostic::warning(
            span,
            format!(
                "this `prefer` changes nothing, with or without its `{word}`: {} already come \
                 in this order (the order their `link` lines are declared in)",
                names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        if guard.unless {
            d.with_help(format!(
                "to leave `{}` when the condition holds, write `prefer {} if ...` with the same \
                 condition",
                names[0],
                reversed.join(" over ")
            ))
        } else {
            d.with_help(format!(
                "to change the order, write `prefer {}`; or drop the statement",
                reversed.join(" over ")
            ))
        }
    }

    fn cond(&mut self, cond: &ast::Cond) -> Option<Cond> {
        match cond {
            ast::Cond::Or(v) => self.conds(v).map(Cond::Or),
            ast::Cond::And(v) => self.conds(v).map(Cond::And),
            ast::Cond::Not(c) => self.cond(c).map(|c| Cond::Not(Box::new(c))),
            ast::Cond::Atom(a) => self.atom(a),
        }
    }

    fn conds(&mut self, v: &[ast::Cond]) -> Option<Vec<Cond>> {
        // Check every operand, so every error is reported, then fail if any did.
        let checked: Vec<Option<Cond>> = v.iter().map(|c| self.cond(c)).collect();
        checked.into_iter().collect()
    }

    fn atom(&mut self, atom: &ast::Atom) -> Option<Cond> {
        let attr = atom.attr.name.as_str();
        if atom.subject.name == "flow" {
            let measure = match attr {
                "bytes" => FlowMeasure::Bytes,
                "age" => FlowMeasure::Age,
                _ => {
                    self.unknown_attr(&atom.attr, "flow", &FLOW_ATTRS);
                    return None;
                }
            };
            let dim = if measure == FlowMeasure::Bytes {
                Dim::Size
            } else {
                Dim::Duration
            };
            let Some((op, q)) = &atom.cmp else {
                self.diagnostics.push(missing_comparison(atom, dim));
                return None;
            };
            if q.quantity.dim() != dim {
                self.diagnostics
                    .push(wrong_unit(q, dim, &format!("`flow.{attr}`")));
                return None;
            }
            return Some(Cond::Flow {
                measure,
                op: *op,
                value: q.quantity.value,
                text: q.quantity.text.clone(),
            });
        }
        let class = self.class(&atom.subject);
        let state = match attr {
            "down" => Some(StateAttr::Down),
            "up" => Some(StateAttr::Up),
            "validated" => Some(StateAttr::Validated),
            "degraded" => Some(StateAttr::Degraded),
            "metered" => Some(StateAttr::Metered),
            _ => None,
        };
        let figure = match attr {
            "rtt" => Some(Figure::Rtt),
            "loss" => Some(Figure::Loss),
            "signal" => Some(Figure::Signal),
            _ => None,
        };
        match (state, figure) {
            (Some(s), _) => {
                if let Some((op, q)) = &atom.cmp {
                    self.diagnostics.push(
                        Diagnostic::error(
                            q.span.to(atom.attr.span),
                            format!(
                                "`{}.{attr}` is true or false; it cannot be compared (`{} {}`)",
                                atom.subject.name,
                                op.as_str(),
                                q.quantity
                            ),
                        )
                        .with_help(format!("write just `{}.{attr}`", atom.subject.name)),
                    );
                    return None;
                }
                class.map(|class| Cond::State { class, attr: s })
            }
            (None, Some(f)) => {
                let Some((op, q)) = &atom.cmp else {
                    self.diagnostics.push(missing_comparison(atom, f.dim()));
                    return None;
                };
                if q.quantity.dim() != f.dim() {
                    self.diagnostics.push(wrong_unit(
                        q,
                        f.dim(),
                        &format!("`{}.{attr}`", atom.subject.name),
                    ));
                    return None;
                }
                class.map(|class| Cond::Figure {
                    class,
                    figure: f,
                    op: *op,
                    value: q.quantity.value,
                    text: q.quantity.text.clone(),
                })
            }
            (None, None) => {
                let all: Vec<&str> = STATE_ATTRS.iter().chain(&FIGURE_ATTRS).copied().collect();
                self.unknown_attr(&atom.attr, &atom.subject.name, &all);
                None
            }
        }
    }

    fn unknown_attr(&mut self, attr: &ast::Ident, subject: &str, known: &[&str]) {
        let mut d = Diagnostic::error(
            attr.span,
            format!("unknown attribute `{}` of `{subject}`", attr.name),
        )
        .with_help(format!(
            "attributes of `{subject}` are: {}",
            known.join(", ")
        ));
        if let Some(s) = closest(&attr.name, known.iter().copied()) {
            d = d.with_label(format!("did you mean `{s}`?"));
        }
        self.diagnostics.push(d);
    }

    fn check_shadowing(&mut self, pattern: &ast::StrLit, earlier: &[(AppRules, Span)]) {
        if let Some((first, _)) = earlier
            .iter()
            .find(|(a, _)| glob::covers(a.pattern.as_str(), &pattern.value))
        {
            let what = if first.pattern.as_str() == pattern.value {
                format!(
                    "app \"{}\" is already matched on line {}",
                    pattern.value, first.line
                )
            } else {
                format!(
                    "app \"{}\" is shadowed by \"{}\" on line {}",
                    pattern.value,
                    first.pattern.as_str(),
                    first.line
                )
            };
            self.diagnostics.push(
                Diagnostic::warning(pattern.span, format!("{what}: this block never applies"))
                    .with_help(
                        "a flow uses the FIRST app block that matches; move this block above it",
                    ),
            );
        }
    }
}

fn wrong_unit(q: &ast::QuantityLit, want: Dim, what: &str) -> Diagnostic {
    Diagnostic::error(
        q.span,
        format!(
            "{what} takes a {} ({}), but `{}` is a {}",
            want.noun(),
            want.units(),
            q.quantity,
            q.quantity.dim().noun()
        ),
    )
    .with_help(format!("write e.g. `{}`", want.example()))
}

fn missing_comparison(atom: &ast::Atom, dim: Dim) -> Diagnostic {
    Diagnostic::error(
        atom.span,
        format!(
            "`{}.{}` is a figure: compare it",
            atom.subject.name, atom.attr.name
        ),
    )
    .with_help(format!(
        "write e.g. `{}.{} > {}`",
        atom.subject.name,
        atom.attr.name,
        dim.example()
    ))
}

/// True when every interface that `later` selects is also selected by `earlier`.
fn selects_superset(earlier: &[Sel], later: &[Sel]) -> bool {
    !earlier.is_empty()
        && earlier.iter().all(|e| {
            later.iter().any(|l| match (e, l) {
                (Sel::Kind(a), Sel::Kind(b)) => a == b,
                (Sel::Ssid(a), Sel::Ssid(b)) => a == b,
                (Sel::Interface(a), Sel::Interface(b)) => glob::covers(a.as_str(), b.as_str()),
                _ => false,
            })
        })
}
