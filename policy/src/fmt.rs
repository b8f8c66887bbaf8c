//! `roamctl policy fmt`: prints a policy in canonical form, keeping its comments.
//!
//! Canonical form: two-space indentation, one statement per line, single spaces, conditions
//! with only the parentheses precedence needs, `=` of consecutive `link` lines aligned,
//! trailing comments aligned within their group, at most one blank line where the source had
//! any, and a blank line around every block. Formatting a formatted file changes nothing.

use crate::ast::{Block, BlockHead, File, Item, LinkDecl, Selector, Statement};
use crate::diag::LineIndex;
use crate::lexer::Comment;
use crate::parser::parse;
use crate::{PolicyError, check};

/// Formats `source`. A file with errors is not formatted: the errors come back instead.
pub fn format(source: &str) -> Result<String, PolicyError> {
    let checked = check(source);
    if checked.policy.is_none() {
        return Err(PolicyError {
            diagnostics: checked.diagnostics,
            source_text: source.to_owned(),
        });
    }
    let parsed = parse(source);
    let mut f = Formatter {
        source,
        lines: LineIndex::new(source),
        comments: &parsed.comments,
        next_comment: 0,
        out: Vec::new(),
        last_end: 0,
    };
    f.file(&parsed.file);
    Ok(f.finish())
}

/// One output line: its code and the trailing comment to align after it.
struct Line {
    code: String,
    trailing: Option<String>,
    /// Lines sharing a group align their trailing comments.
    group: usize,
}

struct Formatter<'a> {
    source: &'a str,
    lines: LineIndex,
    comments: &'a [Comment],
    next_comment: usize,
    out: Vec<Line>,
    /// Byte offset where the last emitted construct ended (for blank-line detection).
    last_end: usize,
}

impl Formatter<'_> {
    fn push(&mut self, code: String, trailing: Option<String>, group: usize) {
        self.out.push(Line {
            code,
            trailing,
            group,
        });
    }

    fn blank(&mut self) {
        // Never right after a block's opening line, never two in a row.
        if self
            .out
            .last()
            .is_some_and(|l| !l.code.is_empty() && !l.code.ends_with('{'))
        {
            self.push(String::new(), None, usize::MAX);
        }
    }

    /// True when the source has an empty line between the last construct and `start`.
    fn gap_before(&self, start: usize) -> bool {
        let between = &self.source[self.last_end.min(start)..start];
        between.matches('\n').count() >= 2
    }

    /// Emits the full-line comments that stand before `start`.
    fn leading_comments(&mut self, start: usize, indent: &str, group: usize) {
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start >= start {
                break;
            }
            if self.gap_before(c.span.start) && !self.out.is_empty() {
                self.blank();
            }
            self.push(format!("{indent}{}", c.text), None, group);
            self.next_comment += 1;
            self.last_end = c.span.end;
        }
    }

    /// The comments on the lines from `start` to `end`, joined.
    fn trailing_comments(&mut self, end: usize) -> Option<String> {
        let last_line = self.lines.line(end.saturating_sub(1));
        let mut parts = Vec::new();
        while let Some(c) = self.comments.get(self.next_comment) {
            if self.lines.line(c.span.start) > last_line {
                break;
            }
            parts.push(c.text.clone());
            self.next_comment += 1;
            self.last_end = self.last_end.max(c.span.end);
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    fn file(&mut self, file: &File) {
        let mut group = 0;
        let mut prev_was_link = false;
        for item in &file.items {
            match item {
                Item::Link(decl) => {
                    if !prev_was_link {
                        group += 1;
                    }
                    if !self.out.is_empty() && (!prev_was_link || self.gap_before(decl.span.start))
                    {
                        self.blank();
                    }
                    self.leading_comments(decl.span.start, "", group);
                    self.link(decl, group);
                    prev_was_link = true;
                }
                Item::Block(block) => {
                    group += 1;
                    if !self.out.is_empty() {
                        self.blank();
                    }
                    self.leading_comments(block.keyword.start, "", group);
                    group = self.block(block, group);
                    prev_was_link = false;
                }
            }
        }
        if self.next_comment < self.comments.len() {
            if self.gap_before(self.comments[self.next_comment].span.start) {
                self.blank();
            }
            self.leading_comments(self.source.len() + 1, "", group + 1);
        }
    }

    fn link(&mut self, decl: &LinkDecl, group: usize) {
        let selectors: Vec<String> = decl
            .selectors
            .iter()
            .map(|s| match s {
                Selector::Kind(k) => format!("kind {}", k.name),
                Selector::Interface(g) => format!("interface {}", quote(&g.value)),
                Selector::Ssid(s) => format!("ssid {}", quote(&s.value)),
            })
            .collect();
        // `\u{0}` marks where `=` goes; `finish` aligns it within the group.
        let code = format!("link {}\u{0}= {}", decl.name.name, selectors.join(" and "));
        self.last_end = decl.span.end;
        let trailing = self.trailing_comments(decl.span.end);
        self.push(code, trailing, group);
    }

    fn block(&mut self, block: &Block, group: usize) -> usize {
        let head = match &block.head {
            BlockHead::Default => "default {".to_owned(),
            BlockHead::App(p) => format!("app {} {{", quote(&p.value)),
        };
        // The header's own trailing comment: the comments on the line of `{`.
        let brace_line_end = block
            .statements
            .first()
            .map_or(block.close.start, |s| s.span.start);
        let header_end = self.source[block.keyword.start..brace_line_end]
            .find('{')
            .map_or(block.keyword.end, |i| block.keyword.start + i + 1);
        self.last_end = header_end;
        // Statements on the header's own line: its comments belong to the last of them.
        let same_line = block
            .statements
            .first()
            .is_some_and(|s| self.lines.line(s.span.start) == self.lines.line(header_end));
        let trailing = if same_line {
            None
        } else {
            self.trailing_comments(header_end)
        };
        if block.statements.is_empty()
            && trailing.is_none()
            && !self.has_comment_before(block.close.start)
        {
            self.push(format!("{}}}", head), None, group);
            self.last_end = block.close.end;
            return group;
        }
        self.push(head, trailing, group);
        let inner = group + 1;
        for (i, st) in block.statements.iter().enumerate() {
            self.leading_comments(st.span.start, "  ", inner);
            if self.gap_before(st.span.start) {
                self.blank();
            }
            // A comment after `a; b` belongs to `b`, the last statement on its line.
            let shares_line = block.statements.get(i + 1).is_some_and(|next| {
                self.lines.line(next.span.start) == self.lines.line(st.span.end)
            });
            self.statement(st, inner, !shares_line);
        }
        self.leading_comments(block.close.start, "  ", inner);
        self.last_end = block.close.end;
        let trailing = if block.close.end > block.close.start {
            self.trailing_comments(block.close.end)
        } else {
            None
        };
        self.push("}".into(), trailing, group);
        inner
    }

    fn has_comment_before(&self, pos: usize) -> bool {
        self.comments
            .get(self.next_comment)
            .is_some_and(|c| c.span.start < pos)
    }

    fn statement(&mut self, st: &Statement, group: usize, take_comments: bool) {
        let mut code = format!("  {}", st.body.canonical());
        if let Some(g) = &st.guard {
            code.push_str(if g.unless { " unless " } else { " if " });
            code.push_str(&g.cond.canonical());
        }
        self.last_end = st.span.end;
        let trailing = if take_comments {
            self.trailing_comments(st.span.end)
        } else {
            None
        };
        self.push(code, trailing, group);
    }

    fn finish(self) -> String {
        let mut lines = self.out;
        while lines.last().is_some_and(|l| l.code.is_empty()) {
            lines.pop();
        }
        // Align `=` of link lines within a group.
        let eq_col = |l: &Line| l.code.find('\u{0}');
        let groups: Vec<usize> = lines.iter().map(|l| l.group).collect();
        for g in groups
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
        {
            let width = lines
                .iter()
                .filter(|l| l.group == g)
                .filter_map(eq_col)
                .max();
            if let Some(width) = width {
                for l in lines.iter_mut().filter(|l| l.group == g) {
                    if let Some(at) = eq_col(l) {
                        let pad = " ".repeat(width - at + 1);
                        l.code = l.code.replacen('\u{0}', &pad, 1);
                    }
                }
            }
        }
        // Align trailing comments within a group, two spaces after the longest code line.
        let mut text = String::new();
        for l in &lines {
            text.push_str(&l.code);
            if let Some(c) = &l.trailing {
                let width = lines
                    .iter()
                    .filter(|o| o.group == l.group && o.trailing.is_some())
                    .map(|o| o.code.chars().count())
                    .max()
                    .unwrap_or(0);
                let pad = width - l.code.chars().count() + 2;
                text.push_str(&" ".repeat(pad));
                text.push_str(c);
            }
            text.push('\n');
        }
        text
    }
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn formats_canonically_and_keeps_comments() {
        let src = "# head\nlink wifi=kind wifi # w\nlink bluetooth = kind bluetooth\n\n\n\ndefault{prefer wifi over bluetooth;hold 10s   # h\n# inner\n\n avoid bluetooth if not(wifi.down or wifi.rtt>150ms)}\napp \"x\" { }\n# tail\n";
        let out = format(src).unwrap();
        assert_eq!(
            out,
            "# head\nlink wifi      = kind wifi  # w\nlink bluetooth = kind bluetooth\n\ndefault {\n  prefer wifi over bluetooth\n  hold 10s  # h\n  # inner\n\n  avoid bluetooth if not (wifi.down or wifi.rtt > 150ms)\n}\n\napp \"x\" {}\n# tail\n"
        );
    }

    #[test]
    fn formatting_is_idempotent_on_the_examples() {
        for src in [
            include_str!("../examples/handset.roam"),
            include_str!("default.roam"),
        ] {
            let once = format(src).unwrap();
            let twice = format(&once).unwrap();
            assert_eq!(once, twice);
            // Formatting never changes meaning.
            assert_eq!(
                crate::Policy::parse(src).unwrap().without_lines(),
                crate::Policy::parse(&once).unwrap().without_lines()
            );
        }
    }

    #[test]
    fn a_file_with_errors_is_not_formatted() {
        let err = format("default { use wfi only }").unwrap_err();
        assert!(err.to_string().contains("unknown link class `wfi`"));
    }
}
