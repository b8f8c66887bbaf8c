//! The syntax tree of a policy file, as written, with spans. The checker turns it into a
//! [`Policy`](crate::Policy); the formatter prints it back in canonical form.

use crate::diag::Span;
use crate::lexer::CmpOp;
use crate::units::Quantity;

/// A name (a link class, a kind, an attribute, a mode) and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where.
    pub span: Span,
}

/// A string literal, escapes resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct StrLit {
    /// The value.
    pub value: String,
    /// Where (including the quotes).
    pub span: Span,
}

/// A quantity literal (`150ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantityLit {
    /// The value and unit.
    pub quantity: Quantity,
    /// Where.
    pub span: Span,
}

/// A whole policy file.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    /// The items in file order.
    pub items: Vec<Item>,
}

/// A top-level item.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// `link NAME = SELECTOR`
    Link(LinkDecl),
    /// `default { ... }` or `app "PATTERN" { ... }`
    Block(Block),
}

/// `link NAME = SELECTOR [and SELECTOR ...]`
#[derive(Debug, Clone, PartialEq)]
pub struct LinkDecl {
    /// The class name.
    pub name: Ident,
    /// The selectors, all of which must match.
    pub selectors: Vec<Selector>,
    /// The whole declaration.
    pub span: Span,
}

/// One part of a link selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// `kind KIND`
    Kind(Ident),
    /// `interface "GLOB"`
    Interface(StrLit),
    /// `ssid "TEXT"`
    Ssid(StrLit),
}

/// What a block applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum BlockHead {
    /// `default`
    Default,
    /// `app "PATTERN"`
    App(StrLit),
}

/// `default { ... }` or `app "PATTERN" { ... }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// Default or app.
    pub head: BlockHead,
    /// The `default` or `app` keyword.
    pub keyword: Span,
    /// The statements in order.
    pub statements: Vec<Statement>,
    /// The closing brace (empty at the end of the file when it is missing).
    pub close: Span,
}

/// One statement of a block, with its optional condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// What it says.
    pub body: Body,
    /// `if COND` or `unless COND`.
    pub guard: Option<Guard>,
    /// From the first keyword to the end of the statement.
    pub span: Span,
}

/// What a statement says.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `prefer A over B [over C ...]`
    Prefer(Vec<Ident>),
    /// `use A[, B ...] only`
    Use(Vec<Ident>),
    /// `never A`
    Never(Ident),
    /// `avoid A`
    Avoid(Ident),
    /// `start on A then add B after QUANTITY`
    Start {
        /// The class the flow starts on.
        on: Ident,
        /// The class added once the flow is long enough.
        add: Ident,
        /// The flow size or age at which `add` joins.
        after: QuantityLit,
    },
    /// `multipath MODE`
    Multipath(Ident),
    /// `hold DURATION`
    Hold(QuantityLit),
}

impl Body {
    /// The statement's keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Body::Prefer(_) => "prefer",
            Body::Use(_) => "use",
            Body::Never(_) => "never",
            Body::Avoid(_) => "avoid",
            Body::Start { .. } => "start",
            Body::Multipath(_) => "multipath",
            Body::Hold(_) => "hold",
        }
    }

    /// The statement in canonical form, without its condition (`prefer cell over wifi`).
    pub fn canonical(&self) -> String {
        let names = |v: &[Ident], sep: &str| {
            v.iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(sep)
        };
        match self {
            Body::Prefer(v) => format!("prefer {}", names(v, " over ")),
            Body::Use(v) => format!("use {} only", names(v, ", ")),
            Body::Never(a) => format!("never {}", a.name),
            Body::Avoid(a) => format!("avoid {}", a.name),
            Body::Start { on, add, after } => format!(
                "start on {} then add {} after {}",
                on.name, add.name, after.quantity
            ),
            Body::Multipath(m) => format!("multipath {}", m.name),
            Body::Hold(q) => format!("hold {}", q.quantity),
        }
    }
}

/// `if COND` or `unless COND`.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// True for `unless`.
    pub unless: bool,
    /// The `if` or `unless` keyword.
    pub keyword: Span,
    /// The condition.
    pub cond: Cond,
}

/// A condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `A or B [or C ...]`: two or more, kept flat so a long chain is not a deep tree.
    Or(Vec<Cond>),
    /// `A and B [and C ...]`: two or more, kept flat.
    And(Vec<Cond>),
    /// `not A`
    Not(Box<Cond>),
    /// `class.attr` or `class.attr OP QUANTITY`
    Atom(Atom),
}

impl Cond {
    /// The condition in canonical form, with only the parentheses precedence needs.
    pub fn canonical(&self) -> String {
        self.render(0)
    }

    // Precedence: or = 1, and = 2, not = 3, atom = 4.
    fn render(&self, outer: u8) -> String {
        let (prec, text) = match self {
            Cond::Or(v) => (1, join(v, " or ", 2)),
            Cond::And(v) => (2, join(v, " and ", 3)),
            Cond::Not(a) => (3, format!("not {}", a.render(3))),
            Cond::Atom(a) => (4, a.canonical()),
        };
        if prec < outer {
            format!("({text})")
        } else {
            text
        }
    }
}

// Operands of a flat `or` are rendered at `and` precedence or tighter; a nested `or` inside an
// `or` (only from parentheses) keeps its parentheses, as written.
fn join(v: &[Cond], sep: &str, operand: u8) -> String {
    v.iter()
        .map(|c| c.render(operand))
        .collect::<Vec<_>>()
        .join(sep)
}

/// `subject.attr` with an optional comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Atom {
    /// A link class, or `flow`.
    pub subject: Ident,
    /// `down`, `up`, `validated`, `degraded`, `metered`, `rtt`, `loss`, `signal`, `bytes`, `age`.
    pub attr: Ident,
    /// The comparison, for figures.
    pub cmp: Option<(CmpOp, QuantityLit)>,
    /// The whole atom.
    pub span: Span,
}

impl Atom {
    /// The atom in canonical form.
    pub fn canonical(&self) -> String {
        match &self.cmp {
            Some((op, q)) => format!(
                "{}.{} {} {}",
                self.subject.name,
                self.attr.name,
                op.as_str(),
                q.quantity
            ),
            None => format!("{}.{}", self.subject.name, self.attr.name),
        }
    }
}
