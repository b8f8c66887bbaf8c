//! Globs on app ids and interface names: `*` is any run of characters, `?` one character.
//! Everything else matches itself. Matching is linear-space and never backtracks
//! exponentially, whatever the pattern.

/// A glob compiled once, so matching it on every decision does no scanning it can avoid:
/// most app patterns are an exact id or `prefix.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No wildcard.
    Exact,
    /// One trailing `*` and no other wildcard: a prefix of this many bytes.
    Prefix(usize),
    /// Anything else.
    General,
}

impl Pattern {
    /// Compiles `text`.
    pub fn new(text: &str) -> Self {
        let wild = |c: char| c == '*' || c == '?';
        let shape = match text.find(wild) {
            None => Shape::Exact,
            Some(i) if i == text.len() - 1 && text.ends_with('*') => Shape::Prefix(i),
            Some(_) => Shape::General,
        };
        Pattern {
            text: text.to_owned(),
            shape,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self.shape {
            Shape::Exact => self.text == text,
            Shape::Prefix(n) => text.as_bytes().starts_with(&self.text.as_bytes()[..n]),
            Shape::General => run(&self.text, text, |pc, tc| pc == '?' || pc == tc),
        }
    }
}

/// True when `text` matches `pattern`.
pub fn matches(pattern: &str, text: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return pattern == text;
    }
    run(pattern, text, |pc, tc| pc == '?' || pc == tc)
}

/// True when every text `specific` matches is matched by `general` too, so a block with
/// pattern `general` placed first leaves nothing to one with `specific`.
///
/// Exact for literal `specific` patterns; for globs it is the usual sufficient test (a `*` in
/// `specific` must be met by a `*` in `general`, a `?` by `?` or `*`), so a warning built on
/// it is never wrong, though a rare shadowing may go unreported.
pub fn covers(general: &str, specific: &str) -> bool {
    run(general, specific, |gc, sc| match (gc, sc) {
        (_, '*') => false,
        ('?', _) => true,
        (a, b) => a == b,
    })
}

/// The classic one-star-backtrack matcher with a pluggable one-symbol test; a `*` in the
/// pattern consumes any run of text symbols. Works on the strings in place (no allocation:
/// it runs for every app block on every decision).
fn run(p: &str, t: &str, one: impl Fn(char, char) -> bool) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = t[ti..].chars().next() {
        let pc = p[pi..].chars().next();
        if pc == Some('*') {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some(pc) = pc.filter(|&pc| one(pc, tc)) {
            pi += pc.len_utf8();
            ti += tc.len_utf8();
        } else if let Some((sp, st)) = star {
            let next = st + t[st..].chars().next().map_or(1, char::len_utf8);
            pi = sp + 1;
            ti = next;
            star = Some((sp, next));
        } else {
            return false;
        }
    }
    p[pi..].chars().all(|c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        for (p, t, want) in [
            ("org.example.*", "org.example.maps", true),
            ("org.example.*", "org.example", false),
            ("org.example*", "org.example", true),
            ("usb*", "usb0", true),
            ("usb?", "usb0", true),
            ("usb?", "usb10", false),
            ("*", "", true),
            ("", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("com.x", "com.x", true),
            ("com.x", "com.y", false),
            ("wl?n*", "wlän0", true),
            ("*.*.*", "a.b", false),
        ] {
            assert_eq!(matches(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn compiled_patterns_agree_with_matches() {
        let texts = [
            "",
            "a",
            "ab",
            "abc",
            "a.b",
            "org.example",
            "org.example.maps",
            "x*",
            "é",
            "éa",
        ];
        for p in [
            "",
            "*",
            "a*",
            "ab*",
            "a?",
            "*b",
            "a*c",
            "org.example.*",
            "org.*.maps",
            "é*",
            "?a",
            "x\\*",
        ] {
            let compiled = Pattern::new(p);
            for t in texts {
                assert_eq!(compiled.matches(t), matches(p, t), "{p} ~ {t}");
            }
        }
    }

    #[test]
    fn hostile_patterns_stay_fast() {
        let p = "*a".repeat(2000) + "b";
        let t = "a".repeat(5000);
        assert!(!matches(&p, &t));
    }

    #[test]
    fn covering() {
        for (g, s, want) in [
            ("*", "anything.*", true),
            ("org.*", "org.example.*", true),
            ("org.*", "org.example.maps", true),
            ("org.example.*", "org.*", false),
            ("com.a", "com.a", true),
            ("com.?", "com.a", true),
            ("com.a", "com.?", false),
            ("com.*", "com.?", true),
            ("a*", "b*", false),
        ] {
            assert_eq!(covers(g, s), want, "{g} covers {s}");
        }
    }
}
