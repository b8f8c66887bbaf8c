//! Policy benchmarks: one decision on a realistic policy (10 link classes, 30 app blocks,
//! 8 interfaces), and parsing + checking a 1,000-line policy.
//!
//! Run: `cargo bench -p roam-policy`. Targets (issue 2): at most 2 µs per decision and
//! 5 ms per 1,000-line parse.
use divan::{Bencher, black_box};
use roam_policy::{Flow, Interface, LinkKind, LinkState, Policy, State};

fn main() {
    divan::main();
}

/// 10 classes, a default block and 30 app blocks (globs and exact ids, conditions on figures).
fn realistic_policy() -> String {
    let mut s = String::from(
        "link home = kind wifi and ssid \"HomeNet\"
link work = kind wifi and ssid \"Corp\"
link wifi = kind wifi
link cell = kind cellular
link bt = kind bluetooth
link eth = kind ethernet
link vpn = kind vpn
link tether = interface \"usb*\"
link rndis = interface \"rndis*\"
link other = kind other

default {
  prefer home over work over wifi over cell
  prefer eth over wifi
  avoid bt unless cell.down and wifi.down
  never other
  hold 10s
}
",
    );
    for i in 0..30 {
        let body = match i % 6 {
            0 => "  use wifi, home only\n".to_owned(),
            1 => "  multipath interactive\n  prefer cell over wifi if wifi.rtt > 150ms or wifi.loss > 3%\n".to_owned(),
            2 => "  start on cell then add wifi after 1MB\n".to_owned(),
            3 => "  never bt\n  avoid cell if cell.metered\n".to_owned(),
            4 => "  prefer cell over home if home.signal < -80dBm\n  multipath aggregate\n".to_owned(),
            _ => "  use vpn only unless vpn.down\n".to_owned(),
        };
        // Half the blocks are globs, so matching walks the list like a real lookup.
        let pattern = if i % 2 == 0 {
            format!("com.vendor{i}.*")
        } else {
            format!("org.example.app{i}")
        };
        s.push_str(&format!("\napp \"{pattern}\" {{\n{body}}}\n"));
    }
    s
}

fn interfaces() -> Vec<Interface> {
    let mut v = vec![
        Interface::new("wlan0", LinkKind::Wifi, LinkState::Validated),
        Interface::new("wlan1", LinkKind::Wifi, LinkState::Up),
        Interface::new("rmnet0", LinkKind::Cellular, LinkState::Validated),
        Interface::new("rmnet1", LinkKind::Cellular, LinkState::Degraded),
        Interface::new("bnep0", LinkKind::Bluetooth, LinkState::Validated),
        Interface::new("eth0", LinkKind::Ethernet, LinkState::Down),
        Interface::new("tun0", LinkKind::Vpn, LinkState::Validated),
        Interface::new("usb0", LinkKind::Usb, LinkState::Up),
    ];
    v[0].ssid = Some("HomeNet".into());
    v[0].rtt_ms = Some(210.0);
    v[0].signal_dbm = Some(-85.0);
    v[0].up_for_ms = Some(4_000);
    v[2].rtt_ms = Some(48.0);
    v[2].metered = Some(true);
    v[3].rtt_ms = Some(300.0);
    v
}

/// A policy of about 1,000 lines: many classes and app blocks with conditions.
fn thousand_lines() -> String {
    let mut s = String::new();
    for i in 0..100 {
        s.push_str(&format!("link c{i} = interface \"if{i}*\"\n"));
    }
    s.push_str("\ndefault {\n  prefer c0 over c1 over c2\n  hold 5s\n}\n");
    let mut i = 0;
    while s.lines().count() < 1000 {
        s.push_str(&format!(
            "\napp \"org.example.app{i}\" {{\n  prefer c{} over c{} if c{}.rtt > {}ms or c{}.loss > 2%\n  use c{}, c{}, c{} only\n  never c{} unless flow.bytes > 1MB\n  multipath interactive\n}}\n",
            i % 100, (i + 1) % 100, i % 100, 50 + i % 200, i % 100,
            i % 100, (i + 1) % 100, (i + 7) % 100, (i + 3) % 100
        ));
        i += 1;
    }
    s
}

#[divan::bench]
fn decide_realistic(bencher: Bencher<'_, '_>) {
    let policy = Policy::parse(&realistic_policy()).expect("benchmark policy is valid");
    let state = State {
        app: Some("org.example.app29".into()),
        flow: Some(Flow {
            bytes: 500_000,
            age_ms: 10_000,
        }),
        interfaces: interfaces(),
    };
    bencher.bench_local(|| black_box(&policy).evaluate(black_box(&state)));
}

#[divan::bench]
fn decide_default_block_only(bencher: Bencher<'_, '_>) {
    let policy = Policy::parse(&realistic_policy()).expect("benchmark policy is valid");
    let state = State {
        app: Some("no.such.app".into()),
        flow: None,
        interfaces: interfaces(),
    };
    bencher.bench_local(|| black_box(&policy).evaluate(black_box(&state)));
}

#[divan::bench]
fn parse_1000_lines(bencher: Bencher<'_, '_>) {
    let text = thousand_lines();
    assert!(text.lines().count() >= 1000);
    Policy::parse(&text).expect("benchmark policy is valid");
    bencher
        .counter(divan::counter::BytesCount::of_str(&text))
        .bench_local(|| Policy::parse(black_box(&text)).is_ok());
}
