//! Evaluation: (policy, interfaces, app, flow) -> decision, steps 1 to 8 of the language
//! specification, with the explanation of every step that changed the result.

use crate::check::{
    Class, Cond, Figure, FlowMeasure, Policy, Sel, StateAttr, Stmt, StmtKind, Threshold,
};
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
        let mut kept = 0;
        for i in 0..all.len() {
            if !all[..kept].iter().any(|k| k.itf.name == all[i].itf.name) {
                all[kept] = all[i];
                kept += 1;
            }
        }
        all.truncate(kept);

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
        let app_rules = app.and_then(|id| self.apps.iter().find(|a| a.pattern.matches(id)));
        // Why a condition holds is worked out only when an explanation needs it: formatting
        // every condition on every decision would cost more than deciding.
        let applicable: Vec<&Stmt> = app_rules
            .into_iter()
            .flat_map(|a| &a.rules.statements)
            .chain(self.default.iter().flat_map(|d| &d.statements))
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
            let mut changed = false;
            let mut take = |a: usize, b: usize| {
                let fresh = !order.before(a, b);
                if order.add(a, b) && fresh {
                    // The constraint changed the result when base order had some B first.
                    changed |= cands.iter().any(|x| {
                        x.class == a && cands.iter().any(|y| y.class == b && y.base < x.base)
                    });
                }
            };
            match &st.kind {
                StmtKind::Prefer(list) => list.windows(2).for_each(|w| take(w[0], w[1])),
                StmtKind::Start { on, threshold, .. } if below(flow, threshold) => {
                    (0..n).filter(|&c| c != *on).for_each(|c| take(*on, c))
                }
                _ => continue,
            }
            if changed {
                let mut parts: Vec<String> = ctx.why_applies(st).into_iter().collect();
                if let StmtKind::Start { threshold, .. } = &st.kind {
                    parts.push(flow_note(flow, threshold));
                }
                explain.push(entry(st, &parts));
            }
        }
        let mut ordered = cands;
        topological(&mut ordered, &order);

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
            // A stable sort on "is avoided" moves them last and keeps every relative order.
            ordered.sort_by_key(|c| avoided.contains(&c.class));
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
                Sel::Interface(g) => g.matches(&itf.name),
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

/// Orders candidates (given in base order) in place: the topological order of the class
/// constraints that always takes the lowest base position among the interfaces free to go
/// next.
fn topological(cands: &mut [Cand<'_>], order: &Reach) {
    for i in 0..cands.len() {
        // `cands[i..]` stays in base order, so the first free one has the lowest position.
        let left = &cands[i..];
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
        cands[i..=i + free].rotate_right(1);
    }
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
        st.guard.as_ref().map(|g| {
            let mut out = String::new();
            self.explain(&g.cond, &mut out);
            out
        })
    }

    /// Says why a condition came out as it did, into `out`: for a true `or`, its first true
    /// operand; for a false `and`, its first false one; otherwise every operand.
    fn explain(&self, cond: &Cond, out: &mut String) {
        use std::fmt::Write;
        match cond {
            Cond::Or(v) | Cond::And(v) => {
                let want = matches!(cond, Cond::Or(_));
                if let Some(decider) = v.iter().find(|c| self.holds(c) == want) {
                    self.explain(decider, out);
                } else {
                    for (i, c) in v.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        self.explain(c, out);
                    }
                }
            }
            Cond::Not(c) => self.explain(c, out),
            Cond::State { class, attr } => {
                let name = &self.classes[*class].name;
                let value = self.holds(cond);
                let _ = match (attr, value) {
                    (StateAttr::Down, true) | (StateAttr::Up, false) => write!(out, "{name} down"),
                    (StateAttr::Down, false) | (StateAttr::Up, true) => write!(out, "{name} up"),
                    (a, true) => write!(out, "{name} {}", a.as_str()),
                    (a, false) => write!(out, "{name} not {}", a.as_str()),
                };
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
                    let _ = write!(out, "{name} down");
                    return;
                };
                let unit = match f {
                    Figure::Rtt => "ms",
                    Figure::Loss => "%",
                    Figure::Signal => "dBm",
                };
                let _ = match measured(best, *f) {
                    None => write!(out, "{name}.{} unknown", f.as_str()),
                    Some(m) => {
                        let shown = if op.holds(m, *value) {
                            *op
                        } else {
                            op.negated()
                        };
                        write!(
                            out,
                            "{name}.{} {}{unit} {} {text}",
                            f.as_str(),
                            figure(m),
                            shown.as_str()
                        )
                    }
                };
            }
            Cond::Flow {
                measure,
                op,
                value,
                text,
            } => {
                let m = self.flow_figure(*measure);
                let shown_value = match measure {
                    FlowMeasure::Bytes => format!("flow.bytes {}", bytes(m)),
                    FlowMeasure::Age => format!("flow.age {}", duration(m)),
                };
                let shown = if op.holds(m, *value) {
                    *op
                } else {
                    op.negated()
                };
                let _ = write!(out, "{shown_value} {} {text}", shown.as_str());
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
