//! Property tests: evaluation is deterministic, independent of interface order, returns only
//! usable candidates without duplicates, and honours `use ... only` and `never`; the parser
//! survives arbitrary bytes and deep nesting.

use proptest::prelude::*;
use roam_policy::{Flow, Interface, LinkKind, LinkState, Policy, State};

const CLASS_NAMES: [&str; 5] = ["wifi", "cell", "bt", "eth", "lab"];

fn kind() -> impl Strategy<Value = LinkKind> {
    prop::sample::select(LinkKind::ALL.to_vec())
}

fn state() -> impl Strategy<Value = LinkState> {
    prop::sample::select(vec![
        LinkState::Down,
        LinkState::Up,
        LinkState::Validated,
        LinkState::Degraded,
    ])
}

fn interfaces() -> impl Strategy<Value = Vec<Interface>> {
    prop::collection::vec(
        (
            kind(),
            state(),
            prop::option::of(0.0f64..500.0),
            prop::option::of(0.0f64..100.0),
            prop::option::of(-120.0f64..-30.0),
            prop::option::of(any::<bool>()),
            prop::option::of(0u64..100_000),
            prop::option::of(prop::sample::select(vec!["HomeNet", "Cafe"])),
        ),
        0..8,
    )
    .prop_map(|v| {
        // Names are unique: a device has one interface per name.
        v.into_iter()
            .enumerate()
            .map(
                |(i, (kind, state, rtt, loss, signal, metered, up_for, ssid))| Interface {
                    name: format!("{}{i}", &kind.as_str()[..3]),
                    kind,
                    state,
                    rtt_ms: rtt,
                    loss_pct: loss,
                    signal_dbm: signal,
                    metered,
                    ssid: ssid.map(str::to_owned),
                    up_for_ms: up_for,
                },
            )
            .collect()
    })
}

fn class_ref() -> impl Strategy<Value = &'static str> {
    prop::sample::select(CLASS_NAMES.to_vec())
}

fn cond() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        (
            class_ref(),
            prop::sample::select(vec!["down", "up", "validated", "degraded", "metered"])
        )
            .prop_map(|(c, a)| format!("{c}.{a}")),
        (
            class_ref(),
            prop::sample::select(vec![">", "<", ">=", "<="]),
            0u32..300
        )
            .prop_map(|(c, op, v)| format!("{c}.rtt {op} {v}ms")),
        (class_ref(), 0u32..20).prop_map(|(c, v)| format!("{c}.loss > {v}%")),
        (class_ref(), 40u32..110).prop_map(|(c, v)| format!("{c}.signal < -{v}dBm")),
        (0u32..3000).prop_map(|v| format!("flow.bytes >= {v}kB")),
    ];
    atom.prop_recursive(3, 8, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} and {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} or {b})")),
            inner.prop_map(|a| format!("not {a}")),
        ]
    })
}

fn statement() -> impl Strategy<Value = String> {
    let guard = prop::option::of((any::<bool>(), cond())).prop_map(|g| match g {
        None => String::new(),
        Some((true, c)) => format!(" if {c}"),
        Some((false, c)) => format!(" unless {c}"),
    });
    let body = prop_oneof![
        prop::collection::vec(class_ref(), 2..4)
            .prop_map(|v| format!("prefer {}", v.join(" over "))),
        prop::collection::vec(class_ref(), 1..3).prop_map(|v| format!("use {} only", v.join(", "))),
        class_ref().prop_map(|c| format!("never {c}")),
        class_ref().prop_map(|c| format!("avoid {c}")),
        (class_ref(), class_ref(), 0u32..2000)
            .prop_map(|(a, b, n)| format!("start on {a} then add {b} after {n}kB")),
    ];
    let plain = prop_oneof![
        prop::sample::select(vec!["off", "handover", "interactive", "aggregate"])
            .prop_map(|m| format!("multipath {m}")),
        (0u32..60).prop_map(|s| format!("hold {s}s")),
    ];
    prop_oneof![4 => (body, guard).prop_map(|(b, g)| format!("{b}{g}")), 1 => plain]
}

fn policy_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(statement(), 0..6),
        prop::collection::vec(
            (prop::sample::select(vec!["a.*", "a.b", "c", "*"]), prop::collection::vec(statement(), 0..4)),
            0..3,
        ),
    )
        .prop_map(|(default, apps)| {
            let mut s = String::from(
                "link lab = interface \"wlan1*\"\nlink wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\nlink eth = kind ethernet\n",
            );
            s.push_str("default {\n");
            for st in default {
                s.push_str(&format!("  {st}\n"));
            }
            s.push_str("}\n");
            for (pattern, stmts) in apps {
                s.push_str(&format!("app \"{pattern}\" {{\n"));
                for st in stmts {
                    s.push_str(&format!("  {st}\n"));
                }
                s.push_str("}\n");
            }
            s
        })
}

/// A policy that parses (generated statements may be invalid, e.g. `prefer a over a`).
fn valid_policy() -> impl Strategy<Value = (String, Policy)> {
    policy_text().prop_filter_map("policy has errors", |text| {
        Policy::parse(&text).ok().map(|p| (text, p))
    })
}

fn app() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::sample::select(vec!["a.b", "a.x", "c", "zzz"]).prop_map(str::to_owned))
}

fn flow() -> impl Strategy<Value = Flow> {
    (0u64..3_000_000, 0u64..100_000).prop_map(|(bytes, age_ms)| Flow { bytes, age_ms })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_is_deterministic_and_order_independent(
        (_text, policy) in valid_policy(),
        ifs in interfaces(),
        app in app(),
        flow in flow(),
        seed in any::<u64>(),
    ) {
        let state = State { app: app.clone(), flow: Some(flow), interfaces: ifs.clone() };
        let first = policy.evaluate(&state);
        prop_assert_eq!(&first, &policy.evaluate(&state));
        // The same interfaces listed in another order give the same decision.
        let mut shuffled = ifs.clone();
        let mut x = seed | 1;
        for i in (1..shuffled.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            shuffled.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let other = policy.evaluate(&State { app, flow: Some(flow), interfaces: shuffled });
        prop_assert_eq!(first, other);
    }

    #[test]
    fn paths_are_usable_managed_and_unique(
        (_text, policy) in valid_policy(),
        ifs in interfaces(),
        app in app(),
        flow in flow(),
    ) {
        let d = policy.evaluate(&State { app, flow: Some(flow), interfaces: ifs.clone() });
        let mut seen = std::collections::HashSet::new();
        for p in &d.paths {
            prop_assert!(seen.insert(p.interface.clone()), "duplicate {}", p.interface);
            let itf = ifs.iter().find(|i| i.name == p.interface);
            prop_assert!(itf.is_some_and(|i| i.state.is_usable()), "{} is not usable", p.interface);
        }
        if d.multipath == roam_policy::MultipathMode::Off {
            prop_assert!(d.paths.len() <= 1);
        }
    }

    #[test]
    fn use_only_and_never_are_never_violated(
        ifs in interfaces(),
        only in prop::collection::vec(class_ref(), 1..3),
        never in class_ref(),
        (_text, base) in valid_policy(),
    ) {
        // Unconditional filters in an app block apply whatever else the policy says.
        let _ = base;
        let text = format!(
            "link lab = interface \"wlan1*\"\nlink wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\nlink eth = kind ethernet\ndefault {{ prefer bt over eth over cell }}\napp \"x\" {{\n  use {} only\n  never {never}\n  avoid wifi\n}}\n",
            only.join(", ")
        );
        let policy = Policy::parse(&text).unwrap();
        let d = policy.evaluate(&State { app: Some("x".into()), flow: None, interfaces: ifs });
        for p in &d.paths {
            prop_assert!(only.contains(&p.link.as_str()), "{} not in use-only {:?}", p.link, only);
            prop_assert_ne!(p.link.as_str(), never);
        }
    }

    #[test]
    fn formatting_keeps_meaning((text, policy) in valid_policy(), ifs in interfaces(), app in app(), flow in flow()) {
        let formatted = roam_policy::fmt::format(&text).unwrap();
        prop_assert_eq!(&roam_policy::fmt::format(&formatted).unwrap(), &formatted);
        let again = Policy::parse(&formatted).unwrap();
        let state = State { app, flow: Some(flow), interfaces: ifs };
        let (a, b) = (policy.evaluate(&state), again.evaluate(&state));
        prop_assert_eq!(a.paths, b.paths);
        prop_assert_eq!(a.multipath, b.multipath);
    }

    #[test]
    fn the_parser_survives_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let text = String::from_utf8_lossy(&bytes);
        let checked = roam_policy::check(&text);
        for d in &checked.diagnostics {
            let _ = d.render("fuzz.roam", &text);
        }
    }

    #[test]
    fn the_parser_survives_policy_shaped_noise(
        words in prop::collection::vec(prop::sample::select(vec![
            "link", "kind", "wifi", "=", "{", "}", "(", ")", "default", "app", "\"x\"", "prefer",
            "over", "use", "only", "never", "avoid", "start", "on", "then", "add", "after", "if",
            "unless", "and", "or", "not", ".", "rtt", ">", "150ms", "10", "\n", ";", ",", "hold",
            "multipath", "off", "1MB", "-70dBm", "3%", "#", "\"",
        ]), 0..200)
    ) {
        let text = words.join(" ");
        let checked = roam_policy::check(&text);
        for d in &checked.diagnostics {
            let _ = d.render("noise.roam", &text);
        }
        if let Some(p) = checked.policy {
            let _ = p.evaluate(&State::default());
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 1usize..5000, nots in 0usize..5000) {
        let text = format!(
            "link a = kind wifi\ndefault {{ never a if {}{}a.up{} }}\n",
            "(".repeat(depth),
            "not ".repeat(nots),
            ")".repeat(depth)
        );
        let checked = roam_policy::check(&text);
        if depth + nots > roam_policy::parser::MAX_DEPTH {
            prop_assert!(checked.policy.is_none());
        }
    }
}
