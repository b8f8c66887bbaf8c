//! Evaluation: (policy, interfaces, app, flow) -> decision, steps 1 to 8 of the language
//! specification, with the explanation of every step that changed the result.

use crate::check::{
    Class, Cond, Figure, FlowMeasure, Policy, Sel, StateAttr, Stmt, StmtKind, Threshold,
};
use crate::glob;
use crate::model::{Decision, Flow, Interface, LinkState, MultipathMode, Path, Role, State};
use crate::units::{bytes, duration, figure};

/// One managed interface during evaluation.
#[derive(Debug, Clone, Copy)]
struct Cand<'a> {
    itf: &'a Interface,
    class: usize,
    /// Position in the base order (step 4).
    base: usize,
}

/// What the conditions look at: every class's best usable interface, and the flow.
struct Ctx<'a> {
    /// For each class, its best usable interface in base order, if any.
    best: Vec<Option<&'a Interface>>,
    flow: Flow,
    classes: &'a [Class],
}

impl Policy {
    /// Evaluates the policy for the state's app, flow and interfaces.
    ///
    /// Deterministic, and independent of the order interfaces are listed in. Interfaces that
    /// match no link class are not managed and never appear. When two interfaces share a
    /// name, only the one that ranks first in the base order counts.
    pub fn evaluate(&self, state: &State) -> Decision {
        self.decide(
            state.app.as_deref(),
            state.flow.unwrap_or_default(),
            &state.interfaces,
        )
    }

    /// Evaluates the policy for `app` (None: only the default block), `flow` and `interfaces`.
    pub fn decide(&self, app: Option<&str>, flow: Flow, interfaces: &[Interface]) -> Decision {
        let mut explain = Vec::new();

        // Step 1: classify; keep managed interfaces, in base order (step 4), one per name.
        let mut all: Vec<Cand<'_>> = interfaces
            .iter()
            .filter_map(|itf| {
                self.classify(itf).map(|class| Cand {
                    itf,
                    class,
                    base: 0,
                })
            })
            .collect();
        all.sort_by(|a, b| base_key(a).cmp(&base_key(b)));
        let mut seen_names: Vec<&str> = Vec::with_capacity(all.len());
        all.retain(|c| {
            if seen_names.contains(&c.itf.name.as_str()) {
                false
            } else {
                seen_names.push(&c.itf.name);
                true
            }
        });

        let mut ctx = Ctx {
            best: vec![None; self.classes.len()],
            flow,
            classes: &self.classes,
        };
        for c in all.iter().filter(|c| c.itf.state.is_usable()) {
            ctx.best[c.class].get_or_insert(c.itf);
        }
        let mut cands: Vec<Cand<'_>> = all
            .iter()
            .copied()
            .filter(|c| c.itf.state.is_usable())
            .collect();
        for (i, c) in cands.iter_mut().enumerate() {
            c.base = i;
        }

        // Step 2: the statement list, and which statements are applicable.
        let app_rules = app.and_then(|id| self.apps.iter().find(|a| glob::matches(&a.pattern, id)));
        let list: Vec<&Stmt> = app_rules
            .into_iter()
            .flat_map(|a| &a.rules.statements)
            .chain(self.default.iter().flat_map(|d| &d.statements))
            .collect();
        // Why a condition holds is worked out only when an explanation needs it: formatting
        // every condition on every decision would cost more than deciding.
        let applicable: Vec<&Stmt> = list
            .into_iter()
            .filter(|st| {
                st.guard
                    .as_ref()
                    .is_none_or(|g| ctx.holds(&g.cond) != g.unless)
            })
            .collect();

        // Step 3: filters.
        for &st in &applicable {
            let before = cands.len();
            let mut removed: Vec<&str> = Vec::new();
            let mut note = None;
            match &st.kind {
                StmtKind::Use(keep) => cands.retain(|c| {
                    let ok = keep.contains(&c.class);
                    if !ok {
                        removed.push(&c.itf.name);
                    }
                    ok
                }),
                StmtKind::Never(drop) => cands.retain(|c| {
                    let ok = c.class != *drop;
                    if !ok {
                        removed.push(&c.itf.name);
                    }
                    ok
                }),
                StmtKind::Start { add, threshold, .. } if below(flow, threshold) => {
                    note = Some(flow_note(flow, threshold));
                    cands.retain(|c| {
                        let ok = c.class != *add;
                        if !ok {
                            removed.push(&c.itf.name);
                        }
                        ok
                    })
                }
                _ => continue,
            }
            if cands.len() != before {
                let mut parts: Vec<String> = ctx.why_applies(st).into_iter().collect();
                parts.extend(note);
                parts.push(format!("removes {}", removed.join(", ")));
                explain.push(entry(st, &parts));
            }
        }

        // Step 5: order constraints between classes, in list order, cycles dropped.
        let n = self.classes.len();
        let mut order = Reach::new(n);
        for &st in &applicable {
            let pairs: Vec<(usize, usize)> = match &st.kind {
                StmtKind::Prefer(list) => list.windows(2).map(|w| (w[0], w[1])).collect(),
                StmtKind::Start { on, threshold, .. } if below(flow, threshold) => {
                    (0..n).filter(|&c| c != *on).map(|c| (*on, c)).collect()
                }
                _ => continue,
            };
            let mut changed = false;
            for (a, b) in pairs {
                let fresh = !order.before(a, b);
                if order.add(a, b) && fresh {
                    // The constraint changed the result when base order had some B first.
                    changed |= cands.iter().any(|x| {
                        x.class == a && cands.iter().any(|y| y.class == b && y.base < x.base)
                    });
                }
            }
            if changed {
                let mut parts: Vec<String> = ctx.why_applies(st).into_iter().collect();
                if let StmtKind::Start { threshold, .. } = &st.kind {
                    parts.push(flow_note(flow, threshold));
                }
                explain.push(entry(st, &parts));
            }
        }
        let mut ordered = topological(&cands, &order);

        // Step 5, end: applicable `avoid` classes go last, keeping their relative order.
        let mut avoided: Vec<usize> = Vec::new();
        for &st in &applicable {
            let StmtKind::Avoid(class) = st.kind else {
                continue;
            };
            if avoided.contains(&class) {
                continue;
            }
            avoided.push(class);
            let moves = ordered
                .iter()
                .position(|c| c.class == class)
                .is_some_and(|i| ordered[i..].iter().any(|c| !avoided.contains(&c.class)));
            if moves {
                let mut parts: Vec<String> = ctx.why_applies(st).into_iter().collect();
                let names: Vec<&str> = ordered
                    .iter()
                    .filter(|c| c.class == class)
                    .map(|c| c.itf.name.as_str())
                    .collect();
                parts.push(format!("{} moved last", names.join(", ")));
                explain.push(entry(st, &parts));
            }
        }
        if !avoided.is_empty() {
            let (rest, last): (Vec<Cand<'_>>, Vec<Cand<'_>>) = ordered
                .into_iter()
                .partition(|c| !avoided.contains(&c.class));
            ordered = rest;
            ordered.extend(last);
        }

        // Step 6: hold.
        if let Some((st, hold_ms)) = applicable.iter().find_map(|st| match st.kind {
            StmtKind::Hold { ms } => Some((*st, ms)),
            _ => None,
        }) {
            let held = |c: &Cand<'_>| c.itf.up_for_ms.is_none_or(|up| up as f64 >= hold_ms);
            if let Some(first) = ordered.first()
                && !held(first)
                && let Some(pos) = ordered.iter().position(held)
            {
                let moved = ordered.remove(pos);
                let first_name = &ordered[0].itf.name;
                let up = ordered[0].itf.up_for_ms.unwrap_or(0) as f64;
                explain.push(entry(
                    st,
                    &[format!(
                        "{first_name} up {} < {}: {} first",
                        duration(up),
                        duration(hold_ms),
                        moved.itf.name
                    )],
                ));
                ordered.insert(0, moved);
            }
        }

        // Step 7: roles.
        let mode_stmt = applicable.iter().find_map(|st| match st.kind {
            StmtKind::Multipath(m) => Some((*st, m)),
            _ => None,
        });
        let multipath = mode_stmt.map_or(MultipathMode::default(), |(_, m)| m);
        if let Some((st, m)) = mode_stmt
            && matches!(m, MultipathMode::Off | MultipathMode::Aggregate)
            && ordered.len() > 1
        {
            explain.push(entry(st, &[]));
        }
        if multipath == MultipathMode::Off {
            ordered.truncate(1);
        }
        let paths: Vec<Path> = ordered
            .iter()
            .enumerate()
            .map(|(i, c)| Path {
                interface: c.itf.name.clone(),
                link: self.classes[c.class].name.clone(),
                role: match (multipath, i) {
                    (MultipathMode::Aggregate, _) => Role::Active,
                    (_, 0) => Role::Primary,
                    _ => Role::Backup,
                },
            })
            .collect();

        if paths.is_empty() && explain.is_empty() {
            explain.push(no_usable_interface(interfaces, &all));
        }

        Decision {
            app: app.map(str::to_owned),
            multipath,
            paths,
            explain,
        }
    }

    /// The class an interface belongs to: the first whose selectors all match.
    fn classify(&self, itf: &Interface) -> Option<usize> {
        self.classes.iter().position(|class| {
            class.selectors.iter().all(|sel| match sel {
                Sel::Kind(k) => itf.kind == *k,
                Sel::Interface(g) => glob::matches(g, &itf.name),
                Sel::Ssid(s) => itf.ssid.as_deref() == Some(s.as_str()),
            })
        })
    }
}

/// Base order key (step 4): class declaration order; validated before up before degraded;
/// lower RTT, unknown last; name. Down interfaces sort after their usable peers.
fn base_key<'a>(c: &Cand<'a>) -> (usize, u8, RttKey, &'a str) {
    (
        c.class,
        c.itf.state.rank(),
        RttKey(c.itf.rtt_ms),
        &c.itf.name,
    )
}

/// RTT ordering: known values ascending, then unknown (and NaN, which is no figure at all).
#[derive(Debug, Clone, Copy, PartialEq)]
struct RttKey(Option<f64>);

impl Eq for RttKey {}
impl PartialOrd for RttKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RttKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let known = |v: Option<f64>| v.filter(|x| !x.is_nan());
        match (known(self.0), known(other.0)) {
            (Some(a), Some(b)) => a.total_cmp(&b),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
}

fn below(flow: Flow, t: &Threshold) -> bool {
    match t.measure {
        FlowMeasure::Bytes => (flow.bytes as f64) < t.value,
        FlowMeasure::Age => (flow.age_ms as f64) < t.value,
    }
}

fn flow_note(flow: Flow, t: &Threshold) -> String {
    match t.measure {
        FlowMeasure::Bytes => format!("flow.bytes {} < {}", bytes(flow.bytes as f64), t.text),
        FlowMeasure::Age => format!("flow.age {} < {}", duration(flow.age_ms as f64), t.text),
    }
}

fn entry(st: &Stmt, parts: &[String]) -> String {
    if parts.is_empty() {
        format!("line {}: {}", st.line, st.text)
    } else {
        format!("line {}: {} ({})", st.line, st.text, parts.join("; "))
    }
}

fn no_usable_interface(interfaces: &[Interface], managed: &[Cand<'_>]) -> String {
    if interfaces.is_empty() {
        return "no interface at all".into();
    }
    let mut parts = Vec::new();
    // By name, so the explanation does not depend on the order interfaces were listed in.
    let mut sorted: Vec<&Interface> = interfaces.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for itf in sorted {
        if let Some(c) = managed.iter().find(|c| std::ptr::eq(c.itf, itf)) {
            if itf.state == LinkState::Down {
                parts.push(format!("{} down", c.itf.name));
            }
        } else {
            parts.push(format!("{} matches no link class", itf.name));
        }
    }
    format!("no usable managed interface ({})", parts.join("; "))
}

/// Orders candidates: the topological order of the class constraints that always takes the
/// lowest base position among the interfaces free to go next.
fn topological<'a>(cands: &[Cand<'a>], order: &Reach) -> Vec<Cand<'a>> {
    let mut left: Vec<Cand<'a>> = cands.to_vec();
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        // `left` stays in base order, so the first free one has the lowest base position.
        let free = left
            .iter()
            .position(|x| {
                !left
                    .iter()
                    .any(|y| y.class != x.class && order.before(y.class, x.class))
            })
            // The constraints are acyclic by construction; this fallback is never taken, but
            // it keeps the loop total.
            .unwrap_or(0);
        out.push(left.remove(free));
    }
    out
}

/// The transitive closure of the order constraints taken so far, as bit rows.
struct Reach {
    words: usize,
    rows: Vec<u64>,
}

impl Reach {
    fn new(n: usize) -> Self {
        let words = n.div_ceil(64).max(1);
        Reach {
            words,
            rows: vec![0; n * words],
        }
    }

    /// Whether `a` must come before `b`.
    fn before(&self, a: usize, b: usize) -> bool {
        self.rows[a * self.words + b / 64] & (1 << (b % 64)) != 0
    }

    /// Takes "a before b" unless it would close a cycle; returns whether it was taken.
    fn add(&mut self, a: usize, b: usize) -> bool {
        if a == b || self.before(b, a) {
            return false;
        }
        if self.before(a, b) {
            return true;
        }
        let n = self.rows.len() / self.words;
        // Everything that reaches `a` (and `a` itself) now reaches `b` and all `b` reaches.
        // Row `b` is not among those updated (`b` does not reach `a`), so it is read in place.
        for w in 0..self.words {
            let mut bits = self.rows[b * self.words + w];
            if w == b / 64 {
                bits |= 1 << (b % 64);
            }
            for x in 0..n {
                if x == a || self.before(x, a) {
                    self.rows[x * self.words + w] |= bits;
                }
            }
        }
        true
    }
}

impl Ctx<'_> {
    /// Whether a condition holds (the fast path: no text).
    fn holds(&self, cond: &Cond) -> bool {
        match cond {
            Cond::Or(v) => v.iter().any(|c| self.holds(c)),
            Cond::And(v) => v.iter().all(|c| self.holds(c)),
            Cond::Not(c) => !self.holds(c),
            Cond::State { class, attr } => {
                let best = self.best[*class];
                match attr {
                    StateAttr::Down => best.is_none(),
                    StateAttr::Up => best.is_some(),
                    StateAttr::Validated => best.is_some_and(|i| i.state == LinkState::Validated),
                    StateAttr::Degraded => best.is_some_and(|i| i.state == LinkState::Degraded),
                    StateAttr::Metered => best.is_some_and(|i| i.metered == Some(true)),
                }
            }
            Cond::Figure {
                class,
                figure: f,
                op,
                value,
                ..
            } => self.best[*class]
                .and_then(|best| measured(best, *f))
                .is_some_and(|m| op.holds(m, *value)),
            Cond::Flow {
                measure, op, value, ..
            } => op.holds(self.flow_figure(*measure), *value),
        }
    }

    fn flow_figure(&self, measure: FlowMeasure) -> f64 {
        match measure {
            FlowMeasure::Bytes => self.flow.bytes as f64,
            FlowMeasure::Age => self.flow.age_ms as f64,
        }
    }

    /// Why an applicable statement applies, for its explanation (None: it has no condition).
    fn why_applies(&self, st: &Stmt) -> Option<String> {
        st.guard.as_ref().map(|g| self.eval(&g.cond).1)
    }

    /// Evaluates a condition and says why it came out as it did: for a true `or`, its first
    /// true operand; for a false `and`, its first false one; otherwise every operand.
    fn eval(&self, cond: &Cond) -> (bool, String) {
        match cond {
            Cond::Or(v) => {
                let results: Vec<(bool, String)> = v.iter().map(|c| self.eval(c)).collect();
                match results.iter().find(|(b, _)| *b) {
                    Some((_, why)) => (true, why.clone()),
                    None => (false, join_why(results)),
                }
            }
            Cond::And(v) => {
                let results: Vec<(bool, String)> = v.iter().map(|c| self.eval(c)).collect();
                match results.iter().find(|(b, _)| !*b) {
                    Some((_, why)) => (false, why.clone()),
                    None => (true, join_why(results)),
                }
            }
            Cond::Not(c) => {
                let (b, why) = self.eval(c);
                (!b, why)
            }
            Cond::State { class, attr } => {
                let name = &self.classes[*class].name;
                let best = self.best[*class];
                let value = match attr {
                    StateAttr::Down => best.is_none(),
                    StateAttr::Up => best.is_some(),
                    StateAttr::Validated => best.is_some_and(|i| i.state == LinkState::Validated),
                    StateAttr::Degraded => best.is_some_and(|i| i.state == LinkState::Degraded),
                    StateAttr::Metered => best.is_some_and(|i| i.metered == Some(true)),
                };
                let why = match (attr, value) {
                    (StateAttr::Down, true) | (StateAttr::Up, false) => format!("{name} down"),
                    (StateAttr::Down, false) | (StateAttr::Up, true) => format!("{name} up"),
                    (a, true) => format!("{name} {}", a.as_str()),
                    (a, false) => format!("{name} not {}", a.as_str()),
                };
                (value, why)
            }
            Cond::Figure {
                class,
                figure: f,
                op,
                value,
                text,
            } => {
                let name = &self.classes[*class].name;
                let Some(best) = self.best[*class] else {
                    return (false, format!("{name} down"));
                };
                let unit = match f {
                    Figure::Rtt => "ms",
                    Figure::Loss => "%",
                    Figure::Signal => "dBm",
                };
                match measured(best, *f) {
                    None => (false, format!("{name}.{} unknown", f.as_str())),
                    Some(m) => {
                        let holds = op.holds(m, *value);
                        let shown_op = if holds { *op } else { op.negated() };
                        (
                            holds,
                            format!(
                                "{name}.{} {}{unit} {} {text}",
                                f.as_str(),
                                figure(m),
                                shown_op.as_str()
                            ),
                        )
                    }
                }
            }
            Cond::Flow {
                measure,
                op,
                value,
                text,
            } => {
                let (m, shown) = match measure {
                    FlowMeasure::Bytes => {
                        let b = self.flow.bytes as f64;
                        (b, format!("flow.bytes {}", bytes(b)))
                    }
                    FlowMeasure::Age => {
                        let a = self.flow.age_ms as f64;
                        (a, format!("flow.age {}", duration(a)))
                    }
                };
                let holds = op.holds(m, *value);
                let shown_op = if holds { *op } else { op.negated() };
                (holds, format!("{shown} {} {text}", shown_op.as_str()))
            }
        }
    }
}

/// A figure of an interface; NaN counts as unknown.
fn measured(itf: &Interface, f: Figure) -> Option<f64> {
    let v = match f {
        Figure::Rtt => itf.rtt_ms,
        Figure::Loss => itf.loss_pct,
        Figure::Signal => itf.signal_dbm,
    };
    v.filter(|x| !x.is_nan())
}

fn join_why(results: Vec<(bool, String)>) -> String {
    results
        .into_iter()
        .map(|(_, w)| w)
        .collect::<Vec<_>>()
        .join(", ")
}
