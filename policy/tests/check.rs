//! Table tests for the checker: every error and warning, at the right line and column.

use roam_policy::{Severity, check};

const CLASSES: &str =
    "link wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\n";

/// (severity, line, col, message) of every diagnostic.
fn diags(src: &str) -> Vec<(Severity, usize, usize, String)> {
    check(src)
        .diagnostics
        .iter()
        .map(|d| {
            let (l, c) = d.line_col(src);
            (d.severity, l, c, d.message.clone())
        })
        .collect()
}

/// The single error in `body` (after the three class lines), as (line, col, message, label).
fn one_error(body: &str) -> (usize, usize, String, Option<String>) {
    let src = format!("{CLASSES}{body}");
    let checked = check(&src);
    let errors: Vec<_> = checked.errors().collect();
    assert_eq!(errors.len(), 1, "{body}: {:?}", checked.diagnostics);
    assert!(checked.policy.is_none());
    let d = errors[0];
    let (l, c) = d.line_col(&src);
    (l, c, d.message.clone(), d.label.clone())
}

#[test]
fn errors_with_their_position() {
    // (body, the offending text (its last occurrence is where the error points), message)
    for (body, at, needle) in [
        (
            "default { use wfi only }",
            "wfi",
            "unknown link class `wfi`",
        ),
        (
            "default {\n  prefer cell over wify\n}",
            "wify",
            "unknown link class `wify`",
        ),
        (
            "default { never cell if wifi.rtt > 3% }",
            "3%",
            "`wifi.rtt` takes a duration",
        ),
        (
            "default { never cell if wifi.loss > 3ms }",
            "3ms",
            "`wifi.loss` takes a percentage",
        ),
        (
            "default { never cell if wifi.signal < 70% }",
            "70%",
            "`wifi.signal` takes a signal strength",
        ),
        (
            "default { never cell if flow.bytes > 10s }",
            "10s",
            "`flow.bytes` takes a size",
        ),
        (
            "default { never cell if flow.age > 1MB }",
            "1MB",
            "`flow.age` takes a duration",
        ),
        (
            "default { never cell if wifi.speed > 1MB }",
            "speed",
            "unknown attribute `speed` of `wifi`",
        ),
        (
            "default { never cell if flow.rtt > 1ms }",
            "rtt",
            "unknown attribute `rtt` of `flow`",
        ),
        (
            "default { never cell if wifi.rtt }",
            "wifi.rtt",
            "`wifi.rtt` is a figure: compare it",
        ),
        (
            "default { never cell if wifi.down > 1ms }",
            "down",
            "cannot be compared",
        ),
        ("default { hold 10MB }", "10MB", "`hold` takes a duration"),
        ("default { hold 10 }", "10", "`10` needs a unit"),
        (
            "default { never cell if wifi.rtt > 150 }",
            "150",
            "`150` needs a unit",
        ),
        (
            "default { multipath sometimes }",
            "sometimes",
            "unknown multipath mode `sometimes`",
        ),
        (
            "default { start on cell then add wifi after 5% }",
            "5%",
            "takes a size or a duration",
        ),
        (
            "default { start on cell then add cell after 1MB }",
            "cell",
            "adds the class it starts on",
        ),
        (
            "default { prefer wifi over wifi }",
            "wifi",
            "cannot be preferred over itself",
        ),
        (
            "link cell = kind wifi\n",
            "cell",
            "link class `cell` is declared twice",
        ),
        ("link x = kind wlan\n", "wlan", "unknown link kind `wlan`"),
        (
            "link flow = kind wifi\n",
            "flow",
            "`flow` cannot name a link class",
        ),
        (
            "default { }\ndefault { }\n",
            "default",
            "a second `default` block",
        ),
        (
            "default { never cell if wifi.rtt > 150mss }",
            "mss",
            "unknown unit `mss`",
        ),
    ] {
        let (l, c, msg, _) = one_error(body);
        assert!(msg.contains(needle), "{body}: {msg}");
        let pos = body.rfind(at).unwrap();
        let line = 4 + body[..pos].matches('\n').count();
        let col = 1 + body[..pos]
            .chars()
            .rev()
            .take_while(|&ch| ch != '\n')
            .count();
        assert_eq!((l, c), (line, col), "{body}: {msg}");
    }
}

#[test]
fn did_you_mean() {
    for (body, label) in [
        ("default { use wfi only }", "did you mean `wifi`?"),
        ("default { use cel only }", "did you mean `cell`?"),
        ("link x = kind cellular_\n", "did you mean `cellular`?"),
        ("link x = kind Wifi\n", ""),
        (
            "default { perfer wifi over cell }",
            "did you mean `prefer`?",
        ),
        ("default { nevr bt }", "did you mean `never`?"),
        ("default { use wifi onyl }", "did you mean `only`?"),
        (
            "default { never cell if wifi.rt > 1ms }",
            "did you mean `rtt`?",
        ),
        (
            "default { never cell if wifi.valdiated }",
            "did you mean `validated`?",
        ),
        (
            "default { multipath agregate }",
            "did you mean `aggregate`?",
        ),
        ("lnk x = kind wifi\n", "did you mean `link`?"),
        ("default { hold 10sec }", "did you mean `10s`?"),
    ] {
        let src = format!("{CLASSES}{body}");
        let checked = check(&src);
        let first = checked
            .errors()
            .next()
            .unwrap_or_else(|| panic!("{body}: no error"));
        if label.is_empty() {
            continue;
        }
        assert_eq!(first.label.as_deref(), Some(label), "{body}: {first:?}");
    }
}

#[test]
fn a_guarded_prefer_in_declaration_order_is_flagged_only_when_nothing_reorders() {
    let src = format!("{CLASSES}default {{\n  prefer wifi over cell unless wifi.rtt > 150ms\n}}\n");
    let checked = check(&src);
    let w: Vec<_> = checked.warnings().collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        w[0].help.as_deref(),
        Some(
            "to leave `wifi` when the condition holds, write `prefer cell over wifi if ...` with \
             the same condition"
        )
    );
    assert_eq!(diags(&src)[0].1, 5, "on the statement's line");
    // Another statement that can reverse wifi and cell gives it something to do: no warning.
    for other in [
        "app \"x\" { prefer cell over wifi }\n",
        "app \"x\" { start on cell then add wifi after 1MB }\n",
    ] {
        let src = format!("{src}{other}");
        assert_eq!(check(&src).warnings().count(), 0, "{other}");
    }
    // Unguarded, it documents the order: no warning either.
    let src = format!("{CLASSES}default {{ prefer wifi over cell }}\n");
    assert!(check(&src).diagnostics.is_empty());
}

#[test]
fn warnings_do_not_reject_the_policy() {
    for (body, needle) in [
        (
            "app \"org.*\" { }\napp \"org.example.maps\" { }\n",
            "shadowed by \"org.*\" on line 4",
        ),
        (
            "app \"a\" { }\napp \"a\" { }\n",
            "already matched on line 4",
        ),
        ("app \"*\" { }\napp \"x?\" { }\n", "shadowed"),
        (
            "link home = kind wifi and ssid \"Home\"\n",
            "can never match: every interface it selects belongs to `wifi`",
        ),
        (
            "link both = kind wifi and kind cellular\n",
            "an interface has one kind",
        ),
        (
            "default { multipath off\n multipath aggregate }\n",
            "this `multipath` never applies",
        ),
        (
            "default { hold 1s\n hold 2s }\n",
            "this `hold` never applies",
        ),
        (
            "default { use wifi, wifi only }\n",
            "`wifi` is listed twice",
        ),
        (
            "default { prefer wifi over cell unless wifi.rtt > 150ms }\n",
            "this `prefer` changes nothing, with or without its `unless`",
        ),
        (
            "default { prefer wifi over cell if cell.down }\n",
            "this `prefer` changes nothing, with or without its `if`",
        ),
    ] {
        let src = format!("{CLASSES}{body}");
        let checked = check(&src);
        assert!(
            checked.policy.is_some(),
            "{body}: {:?}",
            checked.diagnostics
        );
        let warnings: Vec<_> = checked.warnings().collect();
        assert_eq!(warnings.len(), 1, "{body}: {warnings:?}");
        assert!(
            warnings[0].message.contains(needle),
            "{body}: {}",
            warnings[0].message
        );
    }
    // Globs that do not cover each other: no warning.
    let src = format!("{CLASSES}app \"org.example.*\" {{ }}\napp \"org.*\" {{ }}\n");
    assert!(check(&src).diagnostics.is_empty());
    // A specific class declared BEFORE the general one is the right way round.
    let src = "link home = kind wifi and ssid \"Home\"\nlink wifi = kind wifi\n";
    assert!(check(src).diagnostics.is_empty());
}

#[test]
fn every_error_in_a_file_is_reported_in_source_order() {
    let src = format!(
        "{CLASSES}link x = kind wlan\ndefault {{\n  use wfi only\n  never cel\n  hold 3MB\n}}\n"
    );
    let d = diags(&src);
    let lines: Vec<usize> = d.iter().map(|(_, l, _, _)| *l).collect();
    assert_eq!(lines, [4, 6, 7, 8], "{d:?}");
}

#[test]
fn the_examples_check_clean() {
    for (name, src) in [
        ("handset", include_str!("../examples/handset.roam")),
        (
            "failover",
            include_str!("../examples/failover-when-down.roam"),
        ),
        ("one-app", include_str!("../examples/one-app-only.roam")),
        ("long-flows", include_str!("../examples/long-flows.roam")),
        ("metered", include_str!("../examples/metered-saver.roam")),
        ("multi-wan", include_str!("../examples/multi-wan.roam")),
    ] {
        let checked = check(src);
        assert!(
            checked.diagnostics.is_empty(),
            "{name}: {:?}",
            checked.diagnostics
        );
        let formatted = roam_policy::fmt::format(src).unwrap();
        assert_eq!(
            roam_policy::fmt::format(&formatted).unwrap(),
            formatted,
            "{name}"
        );
    }
}

#[test]
fn rendering_has_the_contract_shape() {
    let src = format!("{CLASSES}default {{\n  use wfi only\n}}\n");
    let err = roam_policy::Policy::parse(&src).unwrap_err();
    let text = err.render("phone.roam");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "phone.roam:5:7: error: unknown link class `wfi`");
    assert!(
        lines.iter().any(|l| l.ends_with("|   use wfi only")),
        "{text}"
    );
    let caret = lines.iter().find(|l| l.contains('^')).unwrap();
    assert_eq!(
        caret.find('^').unwrap() - caret.find('|').unwrap(),
        8,
        "{text}"
    );
    assert_eq!(err.location(), (5, 7));
    assert_eq!(err.to_string(), "invalid policy: unknown link class `wfi`");
}
