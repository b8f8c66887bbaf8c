//! Tokens of the policy language, with byte spans into the source.
//!
//! The lexer never fails: a malformed piece of input becomes an [`TokKind::Invalid`] token
//! plus a diagnostic, so the parser can go on and report every problem in one run.

use crate::diag::{Diagnostic, Span};
use crate::units::{Dim, Quantity, Unit};

/// A reserved word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Kw {
    Link,
    Kind,
    Interface,
    Ssid,
    Default,
    App,
    Prefer,
    Over,
    Use,
    Only,
    Never,
    Avoid,
    Start,
    On,
    Then,
    Add,
    After,
    Multipath,
    Hold,
    If,
    Unless,
    And,
    Or,
    Not,
}

/// Every keyword with its spelling.
pub const KEYWORDS: [(&str, Kw); 24] = [
    ("link", Kw::Link),
    ("kind", Kw::Kind),
    ("interface", Kw::Interface),
    ("ssid", Kw::Ssid),
    ("default", Kw::Default),
    ("app", Kw::App),
    ("prefer", Kw::Prefer),
    ("over", Kw::Over),
    ("use", Kw::Use),
    ("only", Kw::Only),
    ("never", Kw::Never),
    ("avoid", Kw::Avoid),
    ("start", Kw::Start),
    ("on", Kw::On),
    ("then", Kw::Then),
    ("add", Kw::Add),
    ("after", Kw::After),
    ("multipath", Kw::Multipath),
    ("hold", Kw::Hold),
    ("if", Kw::If),
    ("unless", Kw::Unless),
    ("and", Kw::And),
    ("or", Kw::Or),
    ("not", Kw::Not),
];

impl Kw {
    /// The keyword's spelling.
    pub fn as_str(self) -> &'static str {
        KEYWORDS
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(s, _)| *s)
            .unwrap_or("?")
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    /// The operator's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
        }
    }

    /// The operator that holds exactly when this one does not.
    pub fn negated(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Ge,
            CmpOp::Le => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Le,
            CmpOp::Ge => CmpOp::Lt,
            CmpOp::Eq => CmpOp::Ne,
            CmpOp::Ne => CmpOp::Eq,
        }
    }

    /// Applies the operator.
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            CmpOp::Lt => left < right,
            CmpOp::Le => left <= right,
            CmpOp::Gt => left > right,
            CmpOp::Ge => left >= right,
            CmpOp::Eq => left == right,
            CmpOp::Ne => left != right,
        }
    }
}

/// What a token is.
#[derive(Debug, Clone, PartialEq)]
pub enum TokKind {
    /// `[a-z_][a-z0-9_-]*` that is not a keyword.
    Ident(String),
    /// A reserved word.
    Kw(Kw),
    /// A string literal, escapes resolved.
    Str(String),
    /// A number with a unit (`150ms`, `1MB`, `-71dBm`).
    Quantity(Quantity),
    /// A number without a unit: always an error where it stands, kept to say so precisely.
    Number(String),
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `=`
    Assign,
    /// `,`
    Comma,
    /// `;`
    Semi,
    /// `.`
    Dot,
    /// A comparison operator.
    Cmp(CmpOp),
    /// The end of a line.
    Newline,
    /// Input the lexer could not make sense of (already reported).
    Invalid,
    /// The end of the input.
    Eof,
}

impl TokKind {
    /// How the token is named in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            TokKind::Ident(s) => format!("`{s}`"),
            TokKind::Kw(k) => format!("keyword `{}`", k.as_str()),
            TokKind::Str(s) => format!("string \"{s}\""),
            TokKind::Quantity(q) => format!("`{}`", q.text),
            TokKind::Number(n) => format!("number `{n}`"),
            TokKind::LBrace => "`{`".into(),
            TokKind::RBrace => "`}`".into(),
            TokKind::LParen => "`(`".into(),
            TokKind::RParen => "`)`".into(),
            TokKind::Assign => "`=`".into(),
            TokKind::Comma => "`,`".into(),
            TokKind::Semi => "`;`".into(),
            TokKind::Dot => "`.`".into(),
            TokKind::Cmp(op) => format!("`{}`", op.as_str()),
            TokKind::Newline => "end of line".into(),
            TokKind::Invalid => "invalid input".into(),
            TokKind::Eof => "end of file".into(),
        }
    }
}

/// A token and where it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// What it is.
    pub kind: TokKind,
    /// Its bytes in the source.
    pub span: Span,
}

/// A `#` comment, kept for `roamctl policy fmt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    /// The comment text, starting with `#`, without the line end.
    pub text: String,
    /// Its bytes in the source.
    pub span: Span,
    /// True when code stands before it on the same line.
    pub trailing: bool,
}

/// The result of lexing a whole source.
#[derive(Debug, Default)]
pub struct Lexed {
    /// The tokens, ending with [`TokKind::Eof`].
    pub tokens: Vec<Token>,
    /// The comments, in source order.
    pub comments: Vec<Comment>,
    /// Problems found.
    pub diagnostics: Vec<Diagnostic>,
}

/// Splits `source` into tokens. Never fails and never panics.
pub fn lex(source: &str) -> Lexed {
    let mut out = Lexed::default();
    let bytes = source.as_bytes();
    let mut i = 0;
    let mut code_on_line = false;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let single = |kind: TokKind| Token {
            kind,
            span: Span::new(start, start + 1),
        };
        match c {
            b'\n' => {
                out.tokens.push(single(TokKind::Newline));
                code_on_line = false;
                i += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                let end = source[i..].find('\n').map_or(bytes.len(), |n| i + n);
                out.comments.push(Comment {
                    text: source[i..end].trim_end().to_owned(),
                    span: Span::new(i, end),
                    trailing: code_on_line,
                });
                i = end;
                continue;
            }
            _ => {}
        }
        code_on_line = true;
        let punct = match c {
            b'{' => Some(TokKind::LBrace),
            b'}' => Some(TokKind::RBrace),
            b'(' => Some(TokKind::LParen),
            b')' => Some(TokKind::RParen),
            b',' => Some(TokKind::Comma),
            b';' => Some(TokKind::Semi),
            b'.' => Some(TokKind::Dot),
            _ => None,
        };
        if let Some(kind) = punct {
            out.tokens.push(single(kind));
            i += 1;
            continue;
        }
        match c {
            b'<' | b'>' | b'=' | b'!' => {
                let next_eq = bytes.get(i + 1) == Some(&b'=');
                let (kind, len) = match (c, next_eq) {
                    (b'<', true) => (TokKind::Cmp(CmpOp::Le), 2),
                    (b'<', false) => (TokKind::Cmp(CmpOp::Lt), 1),
                    (b'>', true) => (TokKind::Cmp(CmpOp::Ge), 2),
                    (b'>', false) => (TokKind::Cmp(CmpOp::Gt), 1),
                    (b'=', true) => (TokKind::Cmp(CmpOp::Eq), 2),
                    (b'=', false) => (TokKind::Assign, 1),
                    (b'!', true) => (TokKind::Cmp(CmpOp::Ne), 2),
                    _ => {
                        out.diagnostics.push(
                            Diagnostic::error(Span::new(i, i + 1), "unexpected `!`")
                                .with_help("to negate a condition, write `not COND`"),
                        );
                        (TokKind::Invalid, 1)
                    }
                };
                out.tokens.push(Token {
                    kind,
                    span: Span::new(i, i + len),
                });
                i += len;
            }
            b'"' => i = lex_string(source, i, &mut out),
            b'0'..=b'9' => i = lex_number(source, i, &mut out),
            b'-' if bytes.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i = lex_number(source, i, &mut out)
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric()
                        || bytes[end] == b'_'
                        || bytes[end] == b'-')
                {
                    end += 1;
                }
                let word = &source[i..end];
                let span = Span::new(i, end);
                let kind = if word.bytes().any(|b| b.is_ascii_uppercase()) {
                    out.diagnostics.push(
                        Diagnostic::error(span, format!("`{word}`: names are lowercase"))
                            .with_help(format!("write `{}`", word.to_ascii_lowercase())),
                    );
                    TokKind::Ident(word.to_ascii_lowercase())
                } else if let Some((_, kw)) = KEYWORDS.iter().find(|(s, _)| *s == word) {
                    TokKind::Kw(*kw)
                } else {
                    TokKind::Ident(word.to_owned())
                };
                out.tokens.push(Token { kind, span });
                i = end;
            }
            _ => {
                let ch = source[i..].chars().next().unwrap_or('\u{fffd}');
                let len = ch.len_utf8();
                let span = Span::new(i, i + len);
                let what = if ch.is_control() {
                    format!("unexpected control character U+{:04X}", ch as u32)
                } else {
                    format!("unexpected character `{ch}`")
                };
                let diag = if ch == '\'' {
                    Diagnostic::error(span, what).with_help("strings use double quotes: \"...\"")
                } else {
                    Diagnostic::error(span, what)
                };
                out.diagnostics.push(diag);
                // One token for a run of junk, so a binary file gives one error, not thousands.
                let mut end = i + len;
                while let Some(next) = source[end..].chars().next() {
                    if next.is_ascii_alphanumeric()
                        || next.is_ascii_whitespace()
                        || "{}(),;.#\"<>=!".contains(next)
                    {
                        break;
                    }
                    end += next.len_utf8();
                }
                out.tokens.push(Token {
                    kind: TokKind::Invalid,
                    span: Span::new(i, end),
                });
                i = end;
            }
        }
    }
    out.tokens.push(Token {
        kind: TokKind::Eof,
        span: Span::new(bytes.len(), bytes.len()),
    });
    out
}

fn lex_string(source: &str, start: usize, out: &mut Lexed) -> usize {
    let mut value = String::new();
    let mut chars = source[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        let at = start + 1 + off;
        match ch {
            '"' => {
                out.tokens.push(Token {
                    kind: TokKind::Str(value),
                    span: Span::new(start, at + 1),
                });
                return at + 1;
            }
            '\\' => match chars.next() {
                Some((_, '"')) => value.push('"'),
                Some((_, '\\')) => value.push('\\'),
                Some((eoff, other)) if other != '\n' => {
                    let esc_end = start + 1 + eoff + other.len_utf8();
                    out.diagnostics.push(
                        Diagnostic::error(
                            Span::new(at, esc_end),
                            format!("unknown escape `\\{other}` in a string"),
                        )
                        .with_help("only `\\\"` and `\\\\` are escapes"),
                    );
                    value.push(other);
                }
                _ => break,
            },
            '\n' => break,
            _ => value.push(ch),
        }
    }
    let end = source[start..]
        .find('\n')
        .map_or(source.len(), |n| start + n);
    out.diagnostics.push(
        Diagnostic::error(Span::new(start, start + 1), "unterminated string")
            .with_label("this string is never closed")
            .with_help("close it with `\"` on the same line"),
    );
    out.tokens.push(Token {
        kind: TokKind::Invalid,
        span: Span::new(start, end),
    });
    end
}

fn lex_number(source: &str, start: usize, out: &mut Lexed) -> usize {
    let bytes = source.as_bytes();
    let mut end = start;
    if bytes[end] == b'-' {
        end += 1;
    }
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
    }
    let number_end = end;
    while end < bytes.len() && (bytes[end].is_ascii_alphabetic() || bytes[end] == b'%') {
        end += 1;
    }
    let number = &source[start..number_end];
    let unit_text = &source[number_end..end];
    let span = Span::new(start, end);
    if unit_text.is_empty() {
        out.tokens.push(Token {
            kind: TokKind::Number(number.to_owned()),
            span,
        });
        return end;
    }
    let value: f64 = match number.parse() {
        Ok(v) => v,
        Err(_) => {
            out.diagnostics.push(Diagnostic::error(
                span,
                format!("`{number}` is not a number"),
            ));
            out.tokens.push(Token {
                kind: TokKind::Invalid,
                span,
            });
            return end;
        }
    };
    match Unit::parse(unit_text) {
        Some(unit) => {
            let q = Quantity::new(value, unit, &source[start..end]);
            if !q.value.is_finite() {
                out.diagnostics.push(Diagnostic::error(
                    span,
                    format!("`{}` is too large", q.text),
                ));
                out.tokens.push(Token {
                    kind: TokKind::Invalid,
                    span,
                });
            } else if q.value < 0.0 && unit.dim() != Dim::Signal {
                out.diagnostics.push(Diagnostic::error(
                    span,
                    format!("`{}`: a {} cannot be negative", q.text, unit.dim().noun()),
                ));
                out.tokens.push(Token {
                    kind: TokKind::Invalid,
                    span,
                });
            } else {
                out.tokens.push(Token {
                    kind: TokKind::Quantity(q),
                    span,
                });
            }
        }
        None => {
            let mut diag = Diagnostic::error(
                Span::new(number_end, end),
                format!("unknown unit `{unit_text}`"),
            )
            .with_help(format!("units are: {}", Unit::ALL_TEXT));
            if let Some(close) = Unit::alias(unit_text)
                .map(Unit::as_str)
                .or_else(|| crate::suggest::closest(unit_text, Unit::SPELLINGS.iter().copied()))
            {
                diag = diag.with_label(format!("did you mean `{number}{close}`?"));
            }
            out.diagnostics.push(diag);
            out.tokens.push(Token {
                kind: TokKind::Invalid,
                span,
            });
        }
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokKind> {
        let lexed = lex(src);
        assert!(lexed.diagnostics.is_empty(), "{:?}", lexed.diagnostics);
        lexed.tokens.into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn statement_tokens() {
        let k = kinds("prefer cell over wifi if wifi.rtt > 150ms # why\n");
        assert_eq!(k[0], TokKind::Kw(Kw::Prefer));
        assert_eq!(k[1], TokKind::Ident("cell".into()));
        assert_eq!(k[5], TokKind::Ident("wifi".into()));
        assert_eq!(k[6], TokKind::Dot);
        assert_eq!(k[8], TokKind::Cmp(CmpOp::Gt));
        match &k[9] {
            TokKind::Quantity(q) => {
                assert_eq!(q.value, 150.0);
                assert_eq!(q.unit, Unit::Ms);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(k[10], TokKind::Newline);
        assert_eq!(k[11], TokKind::Eof);
    }

    #[test]
    fn comments_are_kept_and_marked_trailing() {
        let lexed = lex("# head\nuse wifi only # tail\n");
        assert_eq!(lexed.comments.len(), 2);
        assert!(!lexed.comments[0].trailing);
        assert!(lexed.comments[1].trailing);
        assert_eq!(lexed.comments[1].text, "# tail");
    }

    #[test]
    fn units_scale() {
        let q = |s: &str| match &kinds(s)[0] {
            TokKind::Quantity(q) => q.value,
            other => panic!("{other:?}"),
        };
        assert_eq!(q("1kB"), 1000.0);
        assert_eq!(q("1KiB"), 1024.0);
        assert_eq!(q("2MB"), 2_000_000.0);
        assert_eq!(q("2MiB"), 2.0 * 1024.0 * 1024.0);
        assert_eq!(q("1GB"), 1e9);
        assert_eq!(q("1GiB"), 1024.0 * 1024.0 * 1024.0);
        assert_eq!(q("3s"), 3000.0);
        assert_eq!(q("2m"), 120_000.0);
        assert_eq!(q("1.5s"), 1500.0);
        assert_eq!(q("-71dBm"), -71.0);
        assert_eq!(q("3%"), 3.0);
        assert_eq!(q("12B"), 12.0);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(kinds(r#""a\"b\\c""#)[0], TokKind::Str("a\"b\\c".into()));
        let lexed = lex("\"open\nx");
        assert_eq!(lexed.diagnostics.len(), 1);
        assert!(lexed.diagnostics[0].message.contains("unterminated"));
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        for (src, needle) in [
            ("10sec", "unknown unit `sec`"),
            ("Wifi", "lowercase"),
            ("'x'", "unexpected character"),
            ("!x", "unexpected `!`"),
            ("-5ms", "cannot be negative"),
            ("\"a\\q\"", "unknown escape"),
            (
                "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999999GB",
                "too large",
            ),
        ] {
            let lexed = lex(src);
            assert!(
                lexed.diagnostics.iter().any(|d| d.message.contains(needle)),
                "{src}: {:?}",
                lexed.diagnostics
            );
        }
    }

    #[test]
    fn bare_numbers_are_tokens() {
        assert_eq!(kinds("10")[0], TokKind::Number("10".into()));
    }

    #[test]
    fn a_run_of_junk_is_one_error() {
        let lexed = lex("\u{1}\u{2}\u{3}\u{fffd}\u{fffd}");
        assert_eq!(lexed.diagnostics.len(), 1);
    }
}
