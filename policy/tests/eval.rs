//! Table tests for evaluation: every statement and every step of the specification.

use roam_policy::{Decision, Flow, Interface, LinkKind, LinkState, MultipathMode, Policy, State};

use LinkKind::{Bluetooth as Bt, Cellular as Cell, Ethernet as Eth, Usb, Wifi};
use LinkState::{Degraded, Down, Up, Validated};

const CLASSES: &str =
    "link wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\n";

fn itf(name: &str, kind: LinkKind, state: LinkState) -> Interface {
    Interface::new(name, kind, state)
}

trait With {
    fn rtt(self, ms: f64) -> Self;
    fn loss(self, pct: f64) -> Self;
    fn signal(self, dbm: f64) -> Self;
    fn metered(self) -> Self;
    fn up_for(self, ms: u64) -> Self;
    fn ssid(self, s: &str) -> Self;
}

impl With for Interface {
    fn rtt(mut self, ms: f64) -> Self {
        self.rtt_ms = Some(ms);
        self
    }
    fn loss(mut self, pct: f64) -> Self {
        self.loss_pct = Some(pct);
        self
    }
    fn signal(mut self, dbm: f64) -> Self {
        self.signal_dbm = Some(dbm);
        self
    }
    fn metered(mut self) -> Self {
        self.metered = Some(true);
        self
    }
    fn up_for(mut self, ms: u64) -> Self {
        self.up_for_ms = Some(ms);
        self
    }
    fn ssid(mut self, s: &str) -> Self {
        self.ssid = Some(s.into());
        self
    }
}

fn policy(body: &str) -> Policy {
    let src = format!("{CLASSES}{body}");
    Policy::parse(&src).unwrap_or_else(|e| panic!("{}", e.render("test.roam")))
}

fn decide(p: &Policy, app: Option<&str>, flow: Flow, ifs: &[Interface]) -> Decision {
    p.evaluate(&State {
        app: app.map(str::to_owned),
        flow: Some(flow),
        interfaces: ifs.to_vec(),
    })
}

/// The decision's paths as "name:role" words.
fn paths(d: &Decision) -> Vec<String> {
    d.paths
        .iter()
        .map(|p| format!("{}:{}", p.interface, p.role))
        .collect()
}

fn names(d: &Decision) -> Vec<&str> {
    d.paths.iter().map(|p| p.interface.as_str()).collect()
}

fn three() -> Vec<Interface> {
    vec![
        itf("wlan0", Wifi, Validated),
        itf("rmnet0", Cell, Validated),
        itf("bnep0", Bt, Validated),
    ]
}

const NO_FLOW: Flow = Flow {
    bytes: 0,
    age_ms: 0,
};

// ---- Step 1: classification and usability -------------------------------------------------

#[test]
fn step1_unmatched_and_down_interfaces_are_never_candidates() {
    let p = policy("");
    let ifs = vec![
        itf("wlan0", Wifi, Down),
        itf("rmnet0", Cell, Up),
        itf("eth0", Eth, Validated), // matches no class: not managed
    ];
    let d = decide(&p, None, NO_FLOW, &ifs);
    assert_eq!(paths(&d), ["rmnet0:primary"]);
    assert_eq!(d.paths[0].link, "cell");
}

#[test]
fn step1_an_interface_belongs_to_the_first_matching_class() {
    let p = Policy::parse(
        "link home = kind wifi and ssid \"HomeNet\"\nlink wifi = kind wifi\nlink lab = interface \"usb*\"\nlink usb = kind usb\n",
    )
    .unwrap();
    let ifs = vec![
        itf("wlan1", Wifi, Validated).ssid("Cafe"),
        itf("wlan0", Wifi, Validated).ssid("HomeNet"),
        itf("usb0", Usb, Validated),
    ];
    let d = decide(&p, None, NO_FLOW, &ifs);
    let links: Vec<(&str, &str)> = d
        .paths
        .iter()
        .map(|p| (p.interface.as_str(), p.link.as_str()))
        .collect();
    assert_eq!(
        links,
        [("wlan0", "home"), ("wlan1", "wifi"), ("usb0", "lab")]
    );
}

// ---- Step 2: which statements ------------------------------------------------------------

#[test]
fn step2_first_matching_app_block_then_default() {
    let p = policy(
        "default { never bt }\napp \"org.example.*\" { use cell only }\napp \"org.example.maps\" { use wifi only }\n",
    );
    // The glob block comes first in the file, so it wins for maps too (the checker warns).
    assert_eq!(
        names(&decide(&p, Some("org.example.maps"), NO_FLOW, &three())),
        ["rmnet0"]
    );
    // An app no block matches gets the default block only.
    assert_eq!(
        names(&decide(&p, Some("com.other"), NO_FLOW, &three())),
        ["wlan0", "rmnet0"]
    );
    // No app id: the default block only.
    assert_eq!(
        names(&decide(&p, None, NO_FLOW, &three())),
        ["wlan0", "rmnet0"]
    );
    // The app block's statements come before the default's: both filters apply.
    let p = policy("default { never cell }\napp \"a\" { never bt }\n");
    assert_eq!(names(&decide(&p, Some("a"), NO_FLOW, &three())), ["wlan0"]);
}

#[test]
fn step2_conditions_decide_applicability() {
    let p = policy("default {\n  never cell if wifi.up\n  never bt unless wifi.down\n}\n");
    assert_eq!(names(&decide(&p, None, NO_FLOW, &three())), ["wlan0"]);
    let mut ifs = three();
    ifs[0].state = Down;
    assert_eq!(names(&decide(&p, None, NO_FLOW, &ifs)), ["rmnet0", "bnep0"]);
}

// ---- Step 3: filters ---------------------------------------------------------------------

#[test]
fn step3_use_only_intersects_every_applicable_use() {
    let p = policy("default {\n  use wifi, cell only\n  use cell, bt only\n}\n");
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(paths(&d), ["rmnet0:primary"]);
    assert_eq!(d.explain.len(), 2, "{:?}", d.explain);
    assert_eq!(d.explain[0], "line 5: use wifi, cell only (removes bnep0)");
    assert_eq!(d.explain[1], "line 6: use cell, bt only (removes wlan0)");
}

#[test]
fn step3_use_only_may_leave_nothing_and_then_the_app_is_blocked() {
    let p = policy("app \"com.example.video\" { use wifi only }\n");
    let mut ifs = three();
    ifs[0].state = Down;
    let d = decide(&p, Some("com.example.video"), NO_FLOW, &ifs);
    assert!(d.is_blocked());
    assert_eq!(d.explain, ["line 4: use wifi only (removes rmnet0, bnep0)"]);
}

#[test]
fn step3_never_removes() {
    let p = policy("default { never wifi }\n");
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(names(&d), ["rmnet0", "bnep0"]);
    assert_eq!(d.explain, ["line 4: never wifi (removes wlan0)"]);
}

#[test]
fn step3_start_then_add_by_bytes_with_si_and_binary_units() {
    for (threshold, bytes, wifi_added) in [
        ("1MB", 0, false),
        ("1MB", 999_999, false),
        ("1MB", 1_000_000, true),
        ("1kB", 1000, true),
        ("1KiB", 1000, false),
        ("1KiB", 1024, true),
        ("1MiB", 1_000_000, false),
        ("1MiB", 1_048_576, true),
        ("1GB", 999_999_999, false),
        ("1GiB", 1_073_741_824, true),
    ] {
        let p = policy(&format!(
            "default {{ start on cell then add wifi after {threshold} }}\n"
        ));
        let flow = Flow { bytes, age_ms: 0 };
        let d = decide(&p, None, flow, &three());
        let has_wifi = names(&d).contains(&"wlan0");
        assert_eq!(has_wifi, wifi_added, "{threshold} at {bytes} bytes");
        assert_eq!(
            d.paths[0].interface,
            if wifi_added { "wlan0" } else { "rmnet0" }
        );
    }
}

#[test]
fn step3_start_then_add_by_age_and_a_missing_flow_counts_as_zero() {
    let p = policy("default { start on cell then add wifi after 30s }\n");
    let young = decide(
        &p,
        None,
        Flow {
            bytes: 10_000_000,
            age_ms: 29_999,
        },
        &three(),
    );
    assert_eq!(names(&young), ["rmnet0", "bnep0"]);
    assert_eq!(
        young.explain,
        ["line 4: start on cell then add wifi after 30s (flow.age 29999ms < 30s; removes wlan0)"]
    );
    let old = decide(
        &p,
        None,
        Flow {
            bytes: 0,
            age_ms: 30_000,
        },
        &three(),
    );
    assert_eq!(names(&old), ["wlan0", "rmnet0", "bnep0"]);
    let no_flow = p.evaluate(&State {
        app: None,
        flow: None,
        interfaces: three(),
    });
    assert_eq!(names(&no_flow), ["rmnet0", "bnep0"]);
}

// ---- Step 4: base order ------------------------------------------------------------------

#[test]
fn step4_base_order() {
    let p = policy("");
    let ifs = vec![
        itf("wlan9", Wifi, Degraded).rtt(5.0),
        itf("wlan1", Wifi, Up),
        itf("wlan2", Wifi, Validated), // unknown rtt: after known ones
        itf("wlan3", Wifi, Validated).rtt(30.0),
        itf("wlan4", Wifi, Validated).rtt(10.0),
        itf("wlan0", Wifi, Validated).rtt(10.0), // same rtt: by name
        itf("bnep0", Bt, Validated).rtt(1.0),    // class order first: bt is declared last
        itf("rmnet0", Cell, Validated),
    ];
    let d = decide(&p, None, NO_FLOW, &ifs);
    assert_eq!(
        names(&d),
        [
            "wlan0", "wlan4", "wlan3", "wlan2", "wlan1", "wlan9", "rmnet0", "bnep0"
        ]
    );
    assert!(d.explain.is_empty(), "{:?}", d.explain);
}

// ---- Step 5: order constraints -------------------------------------------------------------

#[test]
fn step5_prefer_reorders_and_is_explained_with_its_condition() {
    let p = policy(
        "app \"voip\" {\n  prefer cell over wifi if wifi.rtt > 150ms or wifi.loss > 3%\n}\n",
    );
    let mut ifs = three();
    ifs[0] = ifs[0].clone().rtt(210.0).loss(0.5);
    let d = decide(&p, Some("voip"), NO_FLOW, &ifs);
    assert_eq!(names(&d), ["rmnet0", "wlan0", "bnep0"]);
    assert_eq!(
        d.explain,
        ["line 5: prefer cell over wifi (wifi.rtt 210ms > 150ms)"]
    );

    ifs[0] = ifs[0].clone().rtt(40.0).loss(5.0);
    let d = decide(&p, Some("voip"), NO_FLOW, &ifs);
    assert_eq!(
        d.explain,
        ["line 5: prefer cell over wifi (wifi.loss 5% > 3%)"]
    );

    ifs[0] = ifs[0].clone().rtt(40.0).loss(1.0);
    let d = decide(&p, Some("voip"), NO_FLOW, &ifs);
    assert_eq!(names(&d), ["wlan0", "rmnet0", "bnep0"]);
    assert!(d.explain.is_empty());
}

#[test]
fn step5_chains_and_the_topological_pick_of_lowest_base_position() {
    let p = policy("default { prefer bt over wifi }\n");
    // bt must precede wifi; cell is free and has a lower base position than bt.
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(names(&d), ["rmnet0", "bnep0", "wlan0"]);
    let p = policy("default { prefer bt over cell over wifi }\n");
    assert_eq!(
        names(&decide(&p, None, NO_FLOW, &three())),
        ["bnep0", "rmnet0", "wlan0"]
    );
}

#[test]
fn step5_a_constraint_that_closes_a_cycle_is_dropped_in_list_order() {
    // The app block comes first in the list: its `prefer cell over wifi` is taken and the
    // default's `prefer wifi over cell` would close a cycle, so it is dropped.
    let p = policy("default { prefer wifi over cell }\napp \"a\" { prefer cell over wifi }\n");
    assert_eq!(
        names(&decide(&p, Some("a"), NO_FLOW, &three())),
        ["rmnet0", "wlan0", "bnep0"]
    );
    assert_eq!(
        names(&decide(&p, None, NO_FLOW, &three())),
        ["wlan0", "rmnet0", "bnep0"]
    );
    // A three-way cycle: the third constraint (bt before wifi) is dropped.
    let p = policy(
        "default {\n  prefer cell over bt\n  prefer wifi over cell\n  prefer bt over wifi\n}\n",
    );
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(names(&d), ["wlan0", "rmnet0", "bnep0"]);
    // Only a statement that changed the base order is explained.
    assert!(d.explain.is_empty(), "{:?}", d.explain);
}

#[test]
fn step5_constraints_hold_transitively_through_a_class_without_interfaces() {
    let p = Policy::parse(
        "link a = interface \"a*\"\nlink b = interface \"b*\"\nlink c = interface \"c*\"\ndefault { prefer c over b over a }\n",
    )
    .unwrap();
    let ifs = vec![itf("a0", Wifi, Validated), itf("c0", Wifi, Validated)];
    assert_eq!(names(&decide(&p, None, NO_FLOW, &ifs)), ["c0", "a0"]);
}

#[test]
fn step5_start_on_puts_its_class_first_while_the_flow_is_short() {
    let p = policy("default { start on bt then add cell after 1MB }\n");
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(names(&d), ["bnep0", "wlan0"]);
    let d = decide(
        &p,
        None,
        Flow {
            bytes: 2_000_000,
            age_ms: 0,
        },
        &three(),
    );
    assert_eq!(names(&d), ["wlan0", "rmnet0", "bnep0"]);
}

#[test]
fn step5_avoid_moves_classes_last_keeping_their_order() {
    let p = policy("default {\n  avoid wifi\n  avoid cell\n}\n");
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(names(&d), ["bnep0", "wlan0", "rmnet0"]);
    assert_eq!(
        d.explain,
        [
            "line 5: avoid wifi (wlan0 moved last)",
            "line 6: avoid cell (rmnet0 moved last)"
        ]
    );
    // Bluetooth only as a last resort, unless cellular is down. `prefer bt over wifi` alone
    // gives rmnet0 (free, lowest base), bnep0, wlan0; the avoid then moves bnep0 last.
    let p = policy("default {\n  prefer bt over wifi\n  avoid bt unless cell.down\n}\n");
    let d = decide(&p, None, NO_FLOW, &three());
    assert_eq!(names(&d), ["rmnet0", "wlan0", "bnep0"]);
    assert_eq!(d.explain[1], "line 6: avoid bt (cell up; bnep0 moved last)");
    let mut ifs = three();
    ifs[1].state = Down;
    assert_eq!(names(&decide(&p, None, NO_FLOW, &ifs)), ["bnep0", "wlan0"]);
}

// ---- Step 6: hold ------------------------------------------------------------------------

#[test]
fn step6_hold_keeps_a_link_that_just_came_back_from_being_first() {
    let p = policy("default { hold 10s }\n");
    let ifs = vec![
        itf("wlan0", Wifi, Validated).up_for(2_000),
        itf("rmnet0", Cell, Validated).up_for(600_000),
        itf("bnep0", Bt, Validated).up_for(600_000),
    ];
    let d = decide(&p, None, NO_FLOW, &ifs);
    assert_eq!(names(&d), ["rmnet0", "wlan0", "bnep0"]);
    assert_eq!(
        d.explain,
        ["line 4: hold 10s (wlan0 up 2000ms < 10s: rmnet0 first)"]
    );
    // Up for exactly the hold time: it may be first.
    let mut ifs2 = ifs.clone();
    ifs2[0].up_for_ms = Some(10_000);
    assert_eq!(names(&decide(&p, None, NO_FLOW, &ifs2))[0], "wlan0");
    // No other candidate has been up long enough: nothing moves.
    let young: Vec<Interface> = ifs.iter().cloned().map(|i| i.up_for(1_000)).collect();
    assert_eq!(names(&decide(&p, None, NO_FLOW, &young))[0], "wlan0");
    // An interface with no up_for counts as up for ever.
    let mut ifs3 = ifs.clone();
    ifs3[1].up_for_ms = None;
    ifs3[2].up_for_ms = Some(0);
    assert_eq!(
        names(&decide(&p, None, NO_FLOW, &ifs3)),
        ["rmnet0", "wlan0", "bnep0"]
    );
}

#[test]
fn step6_the_first_hold_in_the_list_counts() {
    let p = policy("default { hold 10s }\napp \"a\" { hold 1s }\n");
    let ifs = vec![
        itf("wlan0", Wifi, Validated).up_for(2_000),
        itf("rmnet0", Cell, Validated),
    ];
    assert_eq!(names(&decide(&p, Some("a"), NO_FLOW, &ifs))[0], "wlan0");
    assert_eq!(names(&decide(&p, Some("b"), NO_FLOW, &ifs))[0], "rmnet0");
}

// ---- Step 7: roles -------------------------------------------------------------------------

#[test]
fn step7_roles_by_multipath_mode() {
    for (mode, want) in [
        ("off", vec!["wlan0:primary"]),
        (
            "handover",
            vec!["wlan0:primary", "rmnet0:backup", "bnep0:backup"],
        ),
        (
            "interactive",
            vec!["wlan0:primary", "rmnet0:backup", "bnep0:backup"],
        ),
        (
            "aggregate",
            vec!["wlan0:active", "rmnet0:active", "bnep0:active"],
        ),
    ] {
        let p = policy(&format!("default {{ multipath {mode} }}\n"));
        let d = decide(&p, None, NO_FLOW, &three());
        assert_eq!(paths(&d), want, "{mode}");
        assert_eq!(d.multipath.as_str(), mode);
    }
    // No multipath statement: handover.
    let d = decide(&policy(""), None, NO_FLOW, &three());
    assert_eq!(d.multipath, MultipathMode::Handover);
    // The first applicable one counts: the app's before the default's.
    let p = policy("default { multipath aggregate }\napp \"a\" { multipath off }\n");
    assert_eq!(
        decide(&p, Some("a"), NO_FLOW, &three()).multipath,
        MultipathMode::Off
    );
}

// ---- Conditions ----------------------------------------------------------------------------

#[test]
fn conditions_on_states_flags_and_figures() {
    let ifs = vec![
        itf("wlan0", Wifi, Degraded)
            .rtt(80.0)
            .loss(4.0)
            .signal(-80.0),
        itf("rmnet0", Cell, Validated).metered(),
        itf("bnep0", Bt, Down),
    ];
    for (cond, holds) in [
        ("wifi.up", true),
        ("wifi.down", false),
        ("bt.down", true),
        ("bt.up", false),
        ("wifi.degraded", true),
        ("wifi.validated", false),
        ("cell.validated", true),
        ("cell.metered", true),
        ("wifi.metered", false),
        ("bt.metered", false),
        ("wifi.rtt > 50ms", true),
        ("wifi.rtt > 0.08s", false),
        ("wifi.rtt >= 80ms", true),
        ("wifi.rtt == 80ms", true),
        ("wifi.rtt != 80ms", false),
        ("wifi.rtt < 100ms", true),
        ("wifi.rtt <= 79ms", false),
        ("wifi.loss > 3%", true),
        ("wifi.signal < -75dBm", true),
        ("wifi.signal > -75dBm", false),
        // Unknown figures and down classes: every comparison is false.
        ("cell.rtt > 0ms", false),
        ("cell.rtt < 1000s", false),
        ("bt.rtt < 1000s", false),
        ("not cell.rtt > 0ms", true),
        ("flow.bytes >= 1kB", true),
        ("flow.bytes > 1KiB", false),
        ("flow.age < 1m", true),
        ("wifi.up and cell.up and bt.up", false),
        ("bt.up or cell.up", true),
        ("not bt.up and cell.up", true),
        ("not (bt.up or wifi.up)", false),
        ("bt.up and cell.up or wifi.up", true),
        ("bt.up and (cell.up or wifi.up)", false),
    ] {
        let p = policy(&format!("default {{ never wifi if {cond} }}\n"));
        let d = decide(
            &p,
            None,
            Flow {
                bytes: 1000,
                age_ms: 5_000,
            },
            &ifs,
        );
        let removed = !names(&d).contains(&"wlan0");
        assert_eq!(removed, holds, "{cond}");
    }
}

#[test]
fn the_best_interface_of_a_class_is_the_one_conditions_see() {
    // Two WiFi interfaces: the validated one ranks first, so its rtt is compared.
    let ifs = vec![
        itf("wlan1", Wifi, Up).rtt(500.0),
        itf("wlan0", Wifi, Validated).rtt(20.0),
        itf("rmnet0", Cell, Validated),
    ];
    let p = policy("default { prefer cell over wifi if wifi.rtt > 150ms }\n");
    assert_eq!(names(&decide(&p, None, NO_FLOW, &ifs))[0], "wlan0");
}

// ---- The contract's example ----------------------------------------------------------------

#[test]
fn the_contract_example_decides_as_documented() {
    let p = Policy::parse(include_str!("../examples/handset.roam")).unwrap();
    let state: State = serde_json::from_str(include_str!("../examples/state-voip.json")).unwrap();
    let d = p.evaluate(&state);
    assert_eq!(d.app.as_deref(), Some("com.example.voip"));
    assert_eq!(d.multipath, MultipathMode::Interactive);
    assert_eq!(paths(&d), ["rmnet0:primary", "wlan0:backup"]);
    assert_eq!(d.paths[0].link, "cell");
    assert_eq!(d.paths[1].link, "wifi");
    assert_eq!(
        d.explain,
        ["line 19: prefer cell over wifi (wifi.rtt 210ms > 150ms)"]
    );
}

#[test]
fn duplicate_interface_names_count_once() {
    let p = policy("");
    let ifs = vec![
        itf("wlan0", Wifi, Up),
        itf("wlan0", Wifi, Validated),
        itf("rmnet0", Cell, Validated),
    ];
    assert_eq!(names(&decide(&p, None, NO_FLOW, &ifs)), ["wlan0", "rmnet0"]);
}

#[test]
fn no_usable_interface_is_explained() {
    let p = policy("");
    let d = decide(
        &p,
        None,
        NO_FLOW,
        &[itf("wlan0", Wifi, Down), itf("eth0", Eth, Up)],
    );
    assert!(d.is_blocked());
    assert_eq!(
        d.explain,
        ["no usable managed interface (eth0 matches no link class; wlan0 down)"]
    );
    assert_eq!(
        decide(&p, None, NO_FLOW, &[]).explain,
        ["no interface at all"]
    );
}

#[test]
fn the_built_in_default_policy() {
    let p = Policy::default_policy();
    let ifs = vec![
        itf("bnep0", Bt, Validated),
        itf("rmnet0", Cell, Validated),
        itf("wlan0", Wifi, Validated),
        itf("tun0", LinkKind::Vpn, Validated),
    ];
    assert_eq!(
        names(&decide(&p, Some("any.app"), NO_FLOW, &ifs)),
        ["tun0", "wlan0", "rmnet0", "bnep0"]
    );
}

#[test]
fn time_thresholds_for_agents() {
    use std::time::Duration;
    let p = policy(
        "default { hold 10s }\napp \"a\" { hold 1500ms\n start on cell then add wifi after 30s }\napp \"b\" { hold 10s\n never bt if flow.age > 2m or not flow.age < 5s }\n",
    );
    assert_eq!(
        p.hold_durations(),
        [Duration::from_millis(1500), Duration::from_secs(10)]
    );
    assert_eq!(
        p.flow_age_thresholds(),
        [
            Duration::from_secs(5),
            Duration::from_secs(30),
            // `> 2m` changes its answer at the first millisecond above two minutes.
            Duration::from_millis(120_001)
        ]
    );
    assert!(policy("").hold_durations().is_empty());
}

#[test]
fn flow_thresholds_are_those_of_the_statements_that_apply_to_the_app() {
    use roam_policy::FlowThresholds;
    let p = policy(
        "default { never bt if flow.bytes > 10MB }
         app \"a\" { start on cell then add wifi after 1MB\n prefer cell over wifi if flow.age >= 1500ms }\n         app \"b\" { avoid cell unless flow.bytes == 4kB or flow.age < 2.5ms }\n         app \"c\" { avoid cell }\n",
    );
    assert_eq!(
        p.flow_thresholds(Some("a")),
        FlowThresholds {
            bytes: vec![1_000_000, 10_000_001],
            age_ms: vec![1500],
        }
    );
    assert_eq!(
        p.flow_thresholds(Some("b")),
        FlowThresholds {
            bytes: vec![4000, 4001, 10_000_001],
            age_ms: vec![3],
        }
    );
    // Only the default block's own.
    let default_only = FlowThresholds {
        bytes: vec![10_000_001],
        age_ms: vec![],
    };
    assert_eq!(p.flow_thresholds(Some("c")), default_only);
    assert_eq!(p.flow_thresholds(None), default_only);
    assert!(
        policy("app \"x\" { avoid cell }\n")
            .flow_thresholds(Some("x"))
            .is_empty()
    );
}

#[test]
fn the_decision_is_the_same_anywhere_between_two_flow_thresholds() {
    let p = policy(
        "app \"a\" { start on cell then add wifi after 1MB\n never bt if flow.bytes > 3MB or flow.age == 20ms }\n",
    );
    let ifs = vec![
        itf("wlan0", Wifi, Validated),
        itf("rmnet0", Cell, Validated),
        itf("bnep0", Bt, Validated),
    ];
    let t = p.flow_thresholds(Some("a"));
    assert_eq!(t.bytes, [1_000_000, 3_000_001]);
    assert_eq!(t.age_ms, [20, 21]);
    assert_eq!(t.next_bytes(0), Some(1_000_000));
    assert_eq!(t.next_bytes(1_000_000), Some(3_000_001));
    assert_eq!(t.next_bytes(3_000_001), None);
    assert_eq!(t.next_age_ms(20), Some(21));
    for bytes in [
        0, 1, 999_999, 1_000_000, 2_500_000, 3_000_000, 3_000_001, 9_000_000,
    ] {
        for age_ms in [0, 19, 20, 21, 5000] {
            let flow = Flow { bytes, age_ms };
            let at_start = t.interval_of(flow);
            assert!(at_start.bytes <= bytes && at_start.age_ms <= age_ms);
            assert_eq!(
                names(&decide(&p, Some("a"), flow, &ifs)),
                names(&decide(&p, Some("a"), at_start, &ifs)),
                "{flow:?} against {at_start:?}"
            );
        }
    }
    // And it does change at each byte point.
    let at = |bytes| {
        let d = decide(&p, Some("a"), Flow { bytes, age_ms: 0 }, &ifs);
        names(&d).join(" ")
    };
    assert_eq!(at(999_999), "rmnet0 bnep0");
    assert_eq!(at(1_000_000), "wlan0 rmnet0 bnep0");
    assert_eq!(at(3_000_001), "wlan0 rmnet0");
}
