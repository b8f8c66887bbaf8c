//! "Did you mean": the closest known word to a misspelt one.

/// The candidate closest to `word`, if it is close enough to be what was meant.
///
/// Close enough: a Damerau-Levenshtein distance of at most a third of the longer word (at
/// least 1), or the same word in another case.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &'a str)> = None;
    for cand in candidates {
        if cand == word {
            continue;
        }
        let distance = if cand.eq_ignore_ascii_case(word) {
            0
        } else {
            strsim::damerau_levenshtein(word, cand)
        };
        let limit = (word.chars().count().max(cand.chars().count()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, cand));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn finds_typos_and_not_strangers() {
        let classes = ["wifi", "cell", "bt"];
        assert_eq!(closest("wfi", classes), Some("wifi"));
        assert_eq!(closest("cel", classes), Some("cell"));
        assert_eq!(closest("ifwi", classes), None);
        assert_eq!(closest("video", classes), None);
        assert_eq!(closest("perfer", ["prefer", "never"]), Some("prefer"));
        assert_eq!(closest("mb", ["MB", "ms"]), Some("MB"));
    }
}
