//! Diagnostics: what is wrong, where (line and column), and what to do about it.
//!
//! Rendering follows the `roamctl policy check` contract: a first line
//! `FILE:LINE:COL: error: MESSAGE`, then the source line with a caret under the offending
//! column (drawn by codespan-reporting), then any help.

use std::fmt;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::{Files, SimpleFile};
use codespan_reporting::term::{self, Chars, Config};

/// A range of bytes in a policy source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// The bytes `start..end`.
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// How bad a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The policy cannot be used.
    Error,
    /// The policy works, but probably not as meant.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem in a policy source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
    /// Where: the offending word or construct.
    pub span: Span,
    /// A short note shown under the caret (e.g. "did you mean `wifi`?").
    pub label: Option<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            help: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(span, message)
        }
    }

    /// Adds a note under the caret.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Adds a line of help.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Whether this is an error (as opposed to a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The 1-based line and column (in characters) where the diagnostic points.
    pub fn line_col(&self, source: &str) -> (usize, usize) {
        line_col(source, self.span.start)
    }

    /// Renders `FILE:LINE:COL: SEVERITY: MESSAGE`, the source line, a caret under the
    /// offending column, and the help, as `roamctl policy check` prints it.
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let (line, col) = self.line_col(source);
        let header = format!(
            "{file_name}:{line}:{col}: {}: {}",
            self.severity, self.message
        );
        let file = SimpleFile::new(file_name, source);
        let start = clamp_to_char(source, self.span.start);
        let end = clamp_to_char(source, self.span.end.max(start)).max(start);
        let mut label = Label::primary((), start..end);
        if let Some(text) = &self.label {
            label = label.with_message(text.clone());
        }
        let severity = match self.severity {
            Severity::Error => codespan_reporting::diagnostic::Severity::Error,
            Severity::Warning => codespan_reporting::diagnostic::Severity::Warning,
        };
        let mut diag = CsDiagnostic::new(severity)
            .with_message(self.message.clone())
            .with_labels(vec![label]);
        if let Some(help) = &self.help {
            diag = diag.with_notes(vec![format!("help: {help}")]);
        }
        let config = Config {
            chars: Chars::ascii(),
            ..Config::default()
        };
        let mut snippet = String::new();
        let rendered = term::emit_to_string(&mut snippet, &config, &file, &diag);
        if rendered.is_err() {
            // Only reachable if the span is outside the file; the header alone still says
            // where, so the user loses nothing that matters.
            return header + "\n";
        }
        // codespan draws "error: MESSAGE" then " --> FILE:LINE:COL"; the contract wants both
        // in one first line, so those two lines are replaced by the header.
        let body: Vec<&str> = snippet.lines().skip(2).collect();
        let mut out = header;
        for line in body {
            out.push('\n');
            out.push_str(line.trim_end());
        }
        while out.ends_with('\n') {
            out.pop();
        }
        out.push('\n');
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = clamp_to_char(source, offset);
    let file = SimpleFile::new("", source);
    match file.location((), offset) {
        Ok(loc) => (loc.line_number, loc.column_number),
        Err(_) => (1, 1),
    }
}

/// Where every line of a source starts, to find line numbers in O(log n) (the checker and
/// the formatter ask for one per construct).
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes `source`.
    pub fn new(source: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    /// The 1-based line number of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

fn clamp_to_char(source: &str, offset: usize) -> usize {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// Renders every diagnostic, errors and warnings in source order.
pub fn render_all(diagnostics: &[Diagnostic], file_name: &str, source: &str) -> String {
    let mut out = String::new();
    for d in diagnostics {
        out.push_str(&d.render(file_name, source));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_contract_shape() {
        let src = "link wifi = kind wifi\ndefault {\n  use wfi only\n}\n";
        let at = src.find("wfi ").unwrap();
        let d = Diagnostic::error(Span::new(at, at + 3), "unknown link class `wfi`")
            .with_label("did you mean `wifi`?")
            .with_help("declare it with `link wfi = ...`");
        let out = d.render("p.roam", src);
        assert_eq!(
            out,
            "p.roam:3:7: error: unknown link class `wfi`\n  |\n3 |   use wfi only\n  |       ^^^ did you mean `wifi`?\n  |\n  = help: declare it with `link wfi = ...`\n"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let src = "# é\napp \"ü\" { nevr bt }\n";
        let at = src.find("nevr").unwrap();
        let d = Diagnostic::error(Span::new(at, at + 4), "x");
        assert_eq!(d.line_col(src), (2, 11));
        let out = d.render("f", src);
        let caret_line = out.lines().nth(3).unwrap();
        assert_eq!(caret_line.find('^'), Some(4 + 10));
    }

    #[test]
    fn line_index_agrees_with_line_col() {
        let src = "a\n\nbc\nd";
        let index = LineIndex::new(src);
        for offset in 0..=src.len() {
            assert_eq!(
                index.line(offset),
                line_col(src, offset).0,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn spans_past_the_end_do_not_panic() {
        let d = Diagnostic::error(Span::new(100, 200), "x");
        let out = d.render("f", "ab");
        assert!(out.starts_with("f:1:3: error: x"), "{out}");
        let d = Diagnostic::error(Span::new(1, 2), "x");
        assert!(d.render("f", "é").starts_with("f:1:1: error: x"));
    }
}
