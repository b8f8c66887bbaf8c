//! Recursive-descent parser: tokens to [`ast::File`](crate::ast::File).
//!
//! It recovers from errors at statement and item boundaries so one run reports every
//! problem, stops after [`MAX_ERRORS`], and bounds condition nesting at [`MAX_DEPTH`] so no
//! input can overflow the stack.

use crate::ast::*;
use crate::diag::{Diagnostic, Span};
use crate::lexer::{Comment, Kw, TokKind, Token, lex};
use crate::suggest::closest;
use crate::units::{Dim, Quantity};

/// The deepest nesting of parentheses and `not` a condition may have.
pub const MAX_DEPTH: usize = 64;
/// After this many errors the parser stops: the rest would mostly be echoes.
pub const MAX_ERRORS: usize = 50;

const STATEMENT_WORDS: [&str; 7] = [
    "prefer",
    "use",
    "never",
    "avoid",
    "start",
    "multipath",
    "hold",
];
const ITEM_WORDS: [&str; 3] = ["link", "default", "app"];

/// The parse of a whole source: the tree, the comments (for `fmt`) and the problems found.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The syntax tree (partial when there were errors).
    pub file: File,
    /// The comments in source order.
    pub comments: Vec<Comment>,
    /// Lexing and parsing problems, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

/// Parses a policy source. Never panics, whatever the input.
pub fn parse(source: &str) -> Parsed {
    let lexed = lex(source);
    let mut p = Parser {
        tokens: lexed.tokens,
        pos: 0,
        diagnostics: lexed.diagnostics,
        depth: 0,
    };
    let file = p.file();
    let mut diagnostics = p.diagnostics;
    diagnostics.sort_by_key(|d| d.span.start);
    diagnostics.truncate(MAX_ERRORS);
    Parsed {
        file,
        comments: lexed.comments,
        diagnostics,
    }
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    diagnostics: Vec<Diagnostic>,
    depth: usize,
}

/// A parse error already reported; the caller recovers.
struct Reported;

type PResult<T> = Result<T, Reported>;

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends with Eof, and `bump` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn kind(&self) -> &TokKind {
        &self.peek().kind
    }

    fn bump(&mut self) -> Token {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn at_kw(&self, kw: Kw) -> bool {
        *self.kind() == TokKind::Kw(kw)
    }

    fn eat_kw(&mut self, kw: Kw) -> Option<Span> {
        if self.at_kw(kw) {
            Some(self.bump().span)
        } else {
            None
        }
    }

    fn skip_newlines(&mut self) {
        while matches!(self.kind(), TokKind::Newline) {
            self.bump();
        }
    }

    fn too_many_errors(&self) -> bool {
        self.diagnostics.len() >= MAX_ERRORS
    }

    fn error(&mut self, diag: Diagnostic) -> Reported {
        // An invalid token was already reported by the lexer: one message per place.
        let overlaps = |d: &Diagnostic| {
            d.span.start < diag.span.end.max(diag.span.start + 1)
                && diag.span.start < d.span.end.max(d.span.start + 1)
        };
        let dup = self.diagnostics.iter().any(overlaps);
        if !dup {
            self.diagnostics.push(diag);
        }
        Reported
    }

    fn unexpected(&mut self, expected: &str) -> Reported {
        let tok = self.peek().clone();
        let found = tok.kind.describe();
        self.error(Diagnostic::error(
            tok.span,
            format!("expected {expected}, found {found}"),
        ))
    }

    fn expect_kw(&mut self, kw: Kw, context: &str) -> PResult<Span> {
        if let Some(span) = self.eat_kw(kw) {
            return Ok(span);
        }
        let tok = self.peek().clone();
        let mut diag = Diagnostic::error(
            tok.span,
            format!(
                "expected `{}` {context}, found {}",
                kw.as_str(),
                tok.kind.describe()
            ),
        );
        if let TokKind::Ident(word) = &tok.kind
            && closest(word, [kw.as_str()]).is_some()
        {
            diag = diag.with_label(format!("did you mean `{}`?", kw.as_str()));
        }
        Err(self.error(diag))
    }

    fn ident(&mut self, what: &str) -> PResult<Ident> {
        let tok = self.peek().clone();
        match tok.kind {
            TokKind::Ident(name) => {
                self.bump();
                Ok(Ident {
                    name,
                    span: tok.span,
                })
            }
            TokKind::Kw(kw) => Err(self.error(
                Diagnostic::error(
                    tok.span,
                    format!("expected {what}, found keyword `{}`", kw.as_str()),
                )
                .with_help("keywords are reserved and cannot name a link class"),
            )),
            _ => Err(self.unexpected(what)),
        }
    }

    fn string(&mut self, what: &str) -> PResult<StrLit> {
        let tok = self.peek().clone();
        match tok.kind {
            TokKind::Str(value) => {
                self.bump();
                Ok(StrLit {
                    value,
                    span: tok.span,
                })
            }
            TokKind::Ident(word) => Err(self.error(
                Diagnostic::error(tok.span, format!("expected {what}, found `{word}`"))
                    .with_help(format!("quote it: \"{word}\"")),
            )),
            _ => Err(self.unexpected(what)),
        }
    }

    /// A quantity; `dim` (when known) lets a bare number's error say which unit to add.
    fn quantity(&mut self, what: &str, dim: Option<Dim>) -> PResult<QuantityLit> {
        let tok = self.peek().clone();
        match tok.kind {
            TokKind::Quantity(quantity) => {
                self.bump();
                Ok(QuantityLit {
                    quantity,
                    span: tok.span,
                })
            }
            TokKind::Number(n) => {
                self.bump();
                // `10 s`: the unit is there, one space too far.
                if let TokKind::Ident(word) = self.kind().clone()
                    && crate::units::Unit::parse(&word).is_some()
                {
                    let unit_span = self.bump().span;
                    return Err(self.error(
                        Diagnostic::error(
                            tok.span.to(unit_span),
                            format!("`{n} {word}`: a space between number and unit"),
                        )
                        .with_label(format!("write `{n}{word}`")),
                    ));
                }
                let help = match dim {
                    Some(d) => format!(
                        "write the unit right after the number, no space: `{n}{}` ({} takes {})",
                        d.example().trim_start_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '.'),
                        d.noun(),
                        d.units()
                    ),
                    None => "write the unit right after the number, no space: `150ms`, `1MB`, `3%`, `-70dBm`".into(),
                };
                Err(self.error(
                    Diagnostic::error(tok.span, format!("`{n}` needs a unit"))
                        .with_label("bare number")
                        .with_help(help),
                ))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// Skips to the end of the current statement (newline or `;`), or to a `}` left in place.
    fn recover_statement(&mut self) {
        loop {
            match self.kind() {
                TokKind::Newline | TokKind::Semi => {
                    self.bump();
                    return;
                }
                TokKind::RBrace | TokKind::Eof => return,
                _ => {
                    self.bump();
                }
            }
        }
    }

    /// Skips to the next line that starts a top-level item.
    fn recover_item(&mut self) {
        let mut depth = 0usize;
        loop {
            match self.kind() {
                TokKind::Eof => return,
                TokKind::LBrace => depth += 1,
                TokKind::RBrace => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.bump();
                        return;
                    }
                }
                TokKind::Newline if depth == 0 => {
                    self.bump();
                    if matches!(self.kind(), TokKind::Kw(Kw::Link | Kw::Default | Kw::App)) {
                        return;
                    }
                    continue;
                }
                _ => {}
            }
            self.bump();
        }
    }

    /// After a statement or item: a newline, `;`, `}` (left in place) or the end.
    fn end_of_statement(&mut self) -> PResult<()> {
        match self.kind() {
            TokKind::Newline | TokKind::Semi => {
                self.bump();
                Ok(())
            }
            TokKind::RBrace | TokKind::Eof => Ok(()),
            TokKind::Kw(Kw::If | Kw::Unless) => {
                let tok = self.peek().clone();
                Err(self.error(Diagnostic::error(
                    tok.span,
                    "only `prefer`, `use`, `never`, `avoid` and `start` may have a condition",
                ).with_help("`multipath` and `hold` always apply in their block; put them in an app block of their own")))
            }
            _ => Err(self.unexpected("the end of the statement (a new line or `;`)")),
        }
    }

    fn file(&mut self) -> File {
        let mut items = Vec::new();
        loop {
            self.skip_newlines();
            while matches!(self.kind(), TokKind::Semi) {
                self.bump();
                self.skip_newlines();
            }
            if matches!(self.kind(), TokKind::Eof) || self.too_many_errors() {
                break;
            }
            match self.item() {
                Ok(item) => items.push(item),
                Err(Reported) => self.recover_item(),
            }
        }
        File { items }
    }

    fn item(&mut self) -> PResult<Item> {
        let tok = self.peek().clone();
        match &tok.kind {
            TokKind::Kw(Kw::Link) => self.link_decl().map(Item::Link),
            TokKind::Kw(Kw::Default) => {
                self.bump();
                self.block(BlockHead::Default, tok.span).map(Item::Block)
            }
            TokKind::Kw(Kw::App) => {
                self.bump();
                let pattern = self.string("an app id or pattern in quotes")?;
                self.block(BlockHead::App(pattern), tok.span)
                    .map(Item::Block)
            }
            TokKind::Kw(kw) if STATEMENT_WORDS.contains(&kw.as_str()) => Err(self.error(
                Diagnostic::error(
                    tok.span,
                    format!("`{}` statements belong inside a block", kw.as_str()),
                )
                .with_help("put it in `default { ... }` or `app \"APP_ID\" { ... }`"),
            )),
            TokKind::Ident(word) => {
                let mut diag = Diagnostic::error(tok.span, format!("unknown item `{word}`"))
                    .with_help("a policy file holds `link NAME = ...`, `default { ... }` and `app \"ID\" { ... }`");
                if let Some(s) = closest(word, ITEM_WORDS.into_iter().chain(STATEMENT_WORDS)) {
                    diag = diag.with_label(format!("did you mean `{s}`?"));
                }
                Err(self.error(diag))
            }
            _ => Err(self.unexpected("`link`, `default` or `app`")),
        }
    }

    fn link_decl(&mut self) -> PResult<LinkDecl> {
        let start = self.bump().span;
        let name = self.ident("a link class name")?;
        if !matches!(self.kind(), TokKind::Assign) {
            return Err(self.unexpected("`=` after the link class name"));
        }
        self.bump();
        let mut selectors = vec![self.selector()?];
        while self.eat_kw(Kw::And).is_some() {
            self.skip_newlines();
            selectors.push(self.selector()?);
        }
        let end = self.tokens[self.pos.saturating_sub(1)].span;
        self.end_of_statement()?;
        Ok(LinkDecl {
            name,
            selectors,
            span: start.to(end),
        })
    }

    fn selector(&mut self) -> PResult<Selector> {
        let tok = self.peek().clone();
        match tok.kind {
            TokKind::Kw(Kw::Kind) => {
                self.bump();
                Ok(Selector::Kind(
                    self.ident("a link kind (wifi, cellular, ...)")?,
                ))
            }
            TokKind::Kw(Kw::Interface) => {
                self.bump();
                Ok(Selector::Interface(
                    self.string("an interface name or glob in quotes")?,
                ))
            }
            TokKind::Kw(Kw::Ssid) => {
                self.bump();
                Ok(Selector::Ssid(
                    self.string("a WiFi network name in quotes")?,
                ))
            }
            TokKind::Ident(word) => {
                let mut diag =
                    Diagnostic::error(tok.span, format!("unknown selector `{word}`")).with_help(
                        "a link is selected by `kind KIND`, `interface \"GLOB\"` or `ssid \"NAME\"`",
                    );
                if let Some(s) = closest(&word, ["kind", "interface", "ssid"]) {
                    diag = diag.with_label(format!("did you mean `{s}`?"));
                }
                Err(self.error(diag))
            }
            _ => Err(self.unexpected("`kind`, `interface` or `ssid`")),
        }
    }

    fn block(&mut self, head: BlockHead, keyword: Span) -> PResult<Block> {
        self.skip_newlines();
        if !matches!(self.kind(), TokKind::LBrace) {
            return Err(self.unexpected("`{`"));
        }
        let open = self.bump().span;
        let mut statements = Vec::new();
        loop {
            self.skip_newlines();
            match self.kind() {
                TokKind::Semi => {
                    self.bump();
                }
                TokKind::RBrace => {
                    let close = self.bump().span;
                    return Ok(Block {
                        head,
                        keyword,
                        statements,
                        close,
                    });
                }
                TokKind::Eof => {
                    let eof = self.peek().span;
                    self.error(
                        Diagnostic::error(open, "this block is never closed")
                            .with_label("opened here")
                            .with_help("add `}` after its last statement"),
                    );
                    return Ok(Block {
                        head,
                        keyword,
                        statements,
                        close: eof,
                    });
                }
                TokKind::Kw(Kw::Link | Kw::Default | Kw::App) => {
                    let tok = self.peek().clone();
                    self.error(
                        Diagnostic::error(open, "this block is never closed")
                            .with_label("opened here")
                            .with_help(format!(
                                "add `}}` before the `{}` on line {}",
                                tok.kind.describe().trim_start_matches("keyword "),
                                "below"
                            )),
                    );
                    return Ok(Block {
                        head,
                        keyword,
                        statements,
                        close: Span::new(tok.span.start, tok.span.start),
                    });
                }
                _ => {
                    if self.too_many_errors() {
                        return Err(Reported);
                    }
                    match self.statement() {
                        Ok(s) => statements.push(s),
                        Err(Reported) => self.recover_statement(),
                    }
                }
            }
        }
    }

    fn statement(&mut self) -> PResult<Statement> {
        // An error deep in the previous statement's condition may have left levels counted.
        self.depth = 0;
        let tok = self.peek().clone();
        let start = tok.span;
        let body = match &tok.kind {
            TokKind::Kw(Kw::Prefer) => {
                self.bump();
                let mut classes = vec![self.ident("a link class")?];
                self.expect_kw(Kw::Over, "after the first class of `prefer`")?;
                loop {
                    self.skip_newlines();
                    classes.push(self.ident("a link class")?);
                    if self.eat_kw(Kw::Over).is_none() {
                        break;
                    }
                }
                Body::Prefer(classes)
            }
            TokKind::Kw(Kw::Use) => {
                self.bump();
                let mut classes = vec![self.ident("a link class")?];
                while matches!(self.kind(), TokKind::Comma) {
                    self.bump();
                    self.skip_newlines();
                    classes.push(self.ident("a link class")?);
                }
                self.expect_kw(Kw::Only, "after the classes of `use` (`use wifi only`)")?;
                Body::Use(classes)
            }
            TokKind::Kw(Kw::Never) => {
                self.bump();
                Body::Never(self.ident("a link class")?)
            }
            TokKind::Kw(Kw::Avoid) => {
                self.bump();
                Body::Avoid(self.ident("a link class")?)
            }
            TokKind::Kw(Kw::Start) => {
                self.bump();
                self.expect_kw(Kw::On, "after `start` (`start on A then add B after 1MB`)")?;
                let on = self.ident("a link class")?;
                self.expect_kw(Kw::Then, "(`start on A then add B after 1MB`)")?;
                self.expect_kw(Kw::Add, "after `then`")?;
                let add = self.ident("a link class")?;
                self.expect_kw(Kw::After, "(`start on A then add B after 1MB`)")?;
                let after = self.quantity("a size or a duration (`1MB`, `30s`)", None)?;
                Body::Start { on, add, after }
            }
            TokKind::Kw(Kw::Multipath) => {
                self.bump();
                Body::Multipath(
                    self.ident("a multipath mode (off, handover, interactive, aggregate)")?,
                )
            }
            TokKind::Kw(Kw::Hold) => {
                self.bump();
                Body::Hold(self.quantity("a duration (`10s`)", Some(Dim::Duration))?)
            }
            TokKind::Ident(word) => {
                let mut diag = Diagnostic::error(tok.span, format!("unknown statement `{word}`"))
                    .with_help("statements are: prefer, use, never, avoid, start, multipath, hold");
                if let Some(s) = closest(word, STATEMENT_WORDS) {
                    diag = diag.with_label(format!("did you mean `{s}`?"));
                }
                return Err(self.error(diag));
            }
            _ => {
                return Err(self.unexpected(
                    "a statement (prefer, use, never, avoid, start, multipath, hold)",
                ));
            }
        };
        let conditional = !matches!(body, Body::Multipath(_) | Body::Hold(_));
        let guard = match self.kind() {
            TokKind::Kw(kw @ (Kw::If | Kw::Unless)) if conditional => {
                let unless = *kw == Kw::Unless;
                let keyword = self.bump().span;
                self.skip_newlines();
                let cond = self.cond_or()?;
                Some(Guard {
                    unless,
                    keyword,
                    cond,
                })
            }
            _ => None,
        };
        let end = self.tokens[self.pos.saturating_sub(1)].span;
        self.end_of_statement()?;
        Ok(Statement {
            body,
            guard,
            span: start.to(end),
        })
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let span = self.peek().span;
            return Err(self.error(
                Diagnostic::error(
                    span,
                    format!("condition nested deeper than {MAX_DEPTH} levels"),
                )
                .with_help("split it: a policy this deep cannot be read by a person either"),
            ));
        }
        Ok(())
    }

    fn cond_or(&mut self) -> PResult<Cond> {
        self.enter()?;
        let result = (|| {
            let mut terms = vec![self.cond_and()?];
            while self.eat_kw(Kw::Or).is_some() {
                self.skip_newlines();
                terms.push(self.cond_and()?);
            }
            Ok(if terms.len() == 1 {
                terms.remove(0)
            } else {
                Cond::Or(terms)
            })
        })();
        self.depth -= 1;
        result
    }

    fn cond_and(&mut self) -> PResult<Cond> {
        let mut terms = vec![self.cond_not()?];
        while self.eat_kw(Kw::And).is_some() {
            self.skip_newlines();
            terms.push(self.cond_not()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Cond::And(terms)
        })
    }

    fn cond_not(&mut self) -> PResult<Cond> {
        // Each `not` is a level of the tree, so it counts against the nesting limit.
        let mut nots = 0usize;
        while self.eat_kw(Kw::Not).is_some() {
            nots += 1;
            self.skip_newlines();
            if let Err(e) = self.enter() {
                self.depth -= nots;
                return Err(e);
            }
        }
        let cond = self.cond_primary();
        self.depth -= nots;
        let mut cond = cond?;
        for _ in 0..nots {
            cond = Cond::Not(Box::new(cond));
        }
        Ok(cond)
    }

    fn cond_primary(&mut self) -> PResult<Cond> {
        if matches!(self.kind(), TokKind::LParen) {
            let open = self.bump().span;
            self.skip_newlines();
            let inner = self.cond_or()?;
            self.skip_newlines();
            if !matches!(self.kind(), TokKind::RParen) {
                let tok = self.peek().clone();
                return Err(self.error(
                    Diagnostic::error(
                        tok.span,
                        format!("expected `)`, found {}", tok.kind.describe()),
                    )
                    .with_help(format!("the `(` at byte {} is not closed", open.start)),
                ));
            }
            self.bump();
            return Ok(inner);
        }
        self.atom().map(Cond::Atom)
    }

    fn atom(&mut self) -> PResult<Atom> {
        let subject = self.ident("a condition such as `wifi.down` or `wifi.rtt > 150ms`")?;
        if !matches!(self.kind(), TokKind::Dot) {
            let tok = self.peek().clone();
            return Err(self.error(
                Diagnostic::error(
                    subject.span,
                    format!("`{}` alone is not a condition", subject.name),
                )
                .with_help(format!(
                    "name an attribute: `{0}.down`, `{0}.validated`, `{0}.rtt > 150ms` ... (found {1} after it)",
                    subject.name,
                    tok.kind.describe()
                )),
            ));
        }
        self.bump();
        let attr =
            self.ident("an attribute (down, up, validated, degraded, metered, rtt, loss, signal)")?;
        let cmp = if let TokKind::Cmp(op) = *self.kind() {
            self.bump();
            let dim = match attr.name.as_str() {
                "rtt" | "age" => Some(Dim::Duration),
                "loss" => Some(Dim::Percent),
                "signal" => Some(Dim::Signal),
                "bytes" => Some(Dim::Size),
                _ => None,
            };
            let q = self.quantity("a quantity (`150ms`, `3%`, `-70dBm`, `1MB`)", dim)?;
            Some((op, q))
        } else {
            None
        };
        let end = cmp.as_ref().map_or(attr.span, |(_, q)| q.span);
        Ok(Atom {
            span: subject.span.to(end),
            subject,
            attr,
            cmp,
        })
    }
}

/// Builds a quantity literal without a source, for tests and generated policies.
pub fn quantity_lit(quantity: Quantity) -> QuantityLit {
    QuantityLit {
        quantity,
        span: Span::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(src: &str) -> File {
        let p = parse(src);
        assert!(p.diagnostics.is_empty(), "{src}: {:?}", p.diagnostics);
        p.file
    }

    fn err(src: &str) -> Vec<String> {
        let p = parse(src);
        assert!(!p.diagnostics.is_empty(), "expected an error in {src:?}");
        p.diagnostics.into_iter().map(|d| d.message).collect()
    }

    #[test]
    fn the_handset_example_parses() {
        let f = ok(include_str!("../examples/handset.roam"));
        assert_eq!(f.items.len(), 9);
    }

    #[test]
    fn one_line_blocks_and_semicolons() {
        let f = ok("app \"x\" { never bt }\ndefault { use wifi only; hold 10s }");
        let Item::Block(b) = &f.items[1] else {
            panic!()
        };
        assert_eq!(b.statements.len(), 2);
    }

    #[test]
    fn precedence_not_and_or() {
        let f = ok("default { avoid bt if not a.down and b.up or c.up }");
        let Item::Block(b) = &f.items[0] else {
            panic!()
        };
        let g = b.statements[0].guard.as_ref().unwrap();
        assert_eq!(g.cond.canonical(), "not a.down and b.up or c.up");
        assert!(matches!(&g.cond, Cond::Or(v) if v.len() == 2));
        let f = ok("default { avoid bt if not (a.down and (b.up or c.up)) }");
        let Item::Block(b) = &f.items[0] else {
            panic!()
        };
        let g = b.statements[0].guard.as_ref().unwrap();
        assert_eq!(g.cond.canonical(), "not (a.down and (b.up or c.up))");
    }

    #[test]
    fn continuation_lines_after_operators() {
        ok("default {\n  prefer wifi over\n    cell\n  avoid bt if wifi.down or\n    cell.down\n}");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert!(err("default { hold 10 }")[0].contains("`10` needs a unit"));
        assert!(err("default { hold 10 s }")[0].contains("a space between number and unit"));
        assert!(err("default { perfer wifi over cell }")[0].contains("unknown statement `perfer`"));
        assert!(err("default { use wifi }")[0].contains("expected `only`"));
        assert!(err("prefer wifi over cell")[0].contains("belong inside a block"));
        assert!(err("default { prefer wifi }")[0].contains("expected `over`"));
        assert!(err("default { hold 10s if wifi.up }")[0].contains("may have a condition"));
        assert!(err("default { avoid bt if wifi }")[0].contains("alone is not a condition"));
        assert!(err("link link = kind wifi")[0].contains("keyword `link`"));
        assert!(err("default { use wifi only")[0].contains("never closed"));
        assert!(err("app com.x { }")[0].contains("expected an app id"));
        assert!(err("link w = knd wifi")[0].contains("unknown selector `knd`"));
    }

    #[test]
    fn recovers_and_reports_every_error() {
        let p = parse("default {\n  perfer a over b\n  use c\n  hold 3\n}\nlnk x = kind wifi\n");
        assert_eq!(p.diagnostics.len(), 4, "{:?}", p.diagnostics);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(
            "default {{ avoid bt if {}a.up{} }}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(err(&deep)[0].contains("nested deeper"));
        let nots = format!("default {{ avoid bt if {}a.up }}", "not ".repeat(100_000));
        assert!(err(&nots)[0].contains("nested deeper"));
        // Long flat chains are fine: they are vectors, not deep trees.
        let chain = format!(
            "default {{ avoid bt if a.up{} }}",
            " and a.up or a.down".repeat(50_000)
        );
        let p = parse(&chain);
        assert!(p.diagnostics.is_empty());
        let ok_depth = format!(
            "default {{ avoid bt if {}a.up{} }}",
            "(not ".repeat(30),
            ")".repeat(30)
        );
        assert!(parse(&ok_depth).diagnostics.is_empty());
    }

    #[test]
    fn too_many_errors_stop() {
        let junk = "default { x }\n".repeat(10_000);
        assert_eq!(parse(&junk).diagnostics.len(), MAX_ERRORS);
    }
}
