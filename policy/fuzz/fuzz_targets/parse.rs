//! Fuzz the whole front end: any bytes through lexing, parsing, checking, rendering of every
//! diagnostic, formatting, and evaluation of whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use roam_policy::{Interface, LinkKind, LinkState, State};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let checked = roam_policy::check(&text);
    for d in &checked.diagnostics {
        let _ = d.render("fuzz.roam", &text);
    }
    if let Some(policy) = checked.policy {
        let formatted = roam_policy::fmt::format(&text).expect("a valid policy formats");
        let again = roam_policy::Policy::parse(&formatted).expect("formatted policy parses");
        let state = State {
            app: Some("com.example.app".into()),
            flow: None,
            interfaces: vec![
                Interface::new("wlan0", LinkKind::Wifi, LinkState::Validated),
                Interface::new("rmnet0", LinkKind::Cellular, LinkState::Up),
                Interface::new("bnep0", LinkKind::Bluetooth, LinkState::Degraded),
            ],
        };
        assert_eq!(policy.evaluate(&state).paths, again.evaluate(&state).paths);
    }
});
