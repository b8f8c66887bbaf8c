//! One table of link cases — classification, usable addresses, up times and `hold` — run
//! through roamd's, the SDK's and Android's entry points, which must give the same answers.
//!
//! Entry points: roamd = its route-socket parser (`roam_agent::monitor::netlink`), its
//! classifier (`roam_agent::monitor::classify`) and its core (`roam_agent::core::Core`), fed
//! as the daemon feeds them; the SDK = the embedded monitor's table (`roam::monitor::Links`)
//! fed with the same bytes; Android = `roam_android::LinkBook` fed what ConnectivityManager
//! would say. Each case runs through every entry point that can express it (Android has no
//! sysfs, no rtnetlink kind and no address flags; only roamd has config overrides).
//!
//! Pure: no namespace, no root, virtual instants.
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use roam_agent::config::Config;
use roam_agent::core::{Core, Event, Policy as AgentPolicy, ProbeConfig};
use roam_agent::monitor::LinkFacts;
use roam_agent::monitor::classify::KindOverride;
use roam_agent::monitor::netlink::parse_datagram;
use roam_android::{LinkBook, LinkUpdate, NetworkHandle, Transport};
use roam_link::AddrFacts;
use roam_link::rtnl::{self, emit};
use roam_policy::{Interface, LinkKind, LinkState, Policy, State};

/// A fake `/sys/class/net` with the interfaces the cases need facts for.
struct Sysfs(PathBuf);

impl Sysfs {
    fn new() -> Sysfs {
        let root = std::env::temp_dir().join(format!("roam-link-model-{}", std::process::id()));
        for (name, devtype, wireless) in [
            ("eth3", Some("wlan"), false),
            ("eth4", None, true),
            ("usb5", Some("wwan"), false),
            ("x6", Some("bluetooth"), false),
            ("wlan7", Some("vlan"), false),
        ] {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(d) = devtype {
                std::fs::write(
                    dir.join("uevent"),
                    format!("DEVTYPE={d}\nINTERFACE={name}\n"),
                )
                .unwrap();
            }
            if wireless {
                std::fs::create_dir_all(dir.join("wireless")).unwrap();
            }
        }
        Sysfs(root)
    }
}

impl Drop for Sysfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// roamd, as the daemon drives it: datagrams in, core events (the daemon's own translation,
/// `LinkFacts`), the core's interfaces out.
struct Agent<'a> {
    core: Core,
    sysfs: &'a Path,
    config: Config,
    overrides: &'a [KindOverride],
}

impl<'a> Agent<'a> {
    fn new(sysfs: &'a Path, overrides: &'a [KindOverride]) -> Agent<'a> {
        Agent {
            core: Core::new(AgentPolicy::default_policy(), ProbeConfig::default()),
            sysfs,
            config: Config::default(),
            overrides,
        }
    }

    fn feed(&mut self, bytes: &[u8], now: Instant) {
        let (events, _) = parse_datagram(bytes, None).unwrap();
        let facts = LinkFacts {
            sysfs_root: self.sysfs,
            config: &self.config,
            overrides: self.overrides,
        };
        let core_events: Vec<Event> = events.into_iter().filter_map(|e| facts.event(e)).collect();
        self.core.handle_all(now, core_events);
    }

    fn interfaces(&self, now: Instant) -> Vec<Interface> {
        self.core.interfaces(now)
    }
}

/// The SDK's embedded monitor's table, fed the same bytes.
fn sdk_feed(links: &mut roam::monitor::Links, bytes: &[u8], now: Instant) {
    let (events, _) = rtnl::parse_datagram(bytes, None).unwrap();
    for e in &events {
        links.apply(e, now);
    }
}

fn one(interfaces: Vec<Interface>) -> Interface {
    assert_eq!(interfaces.len(), 1, "{interfaces:?}");
    interfaces.into_iter().next().unwrap()
}

fn android_update(net: u64, transport: Transport, name: &str, addrs: &[IpAddr]) -> LinkUpdate {
    LinkUpdate {
        network: NetworkHandle(net),
        transport,
        interface: name.into(),
        addrs: addrs.to_vec(),
        not_metered: true,
        validated: false,
        signal_dbm: None,
    }
}

#[test]
fn classification_is_the_same_everywhere() {
    let sysfs = Sysfs::new();
    let usb_modem = [KindOverride {
        pattern: "eth1".into(),
        kind: LinkKind::Cellular,
    }];
    // (name, rtnetlink kind, with roamd's override, expected)
    let cases: &[(&str, Option<&str>, bool, LinkKind)] = &[
        ("wlan0", None, false, LinkKind::Wifi),
        ("wlp2s0", None, false, LinkKind::Wifi),
        ("swlan0", None, false, LinkKind::Wifi),
        ("rmnet_data0", None, false, LinkKind::Cellular),
        ("ccmni1", None, false, LinkKind::Cellular),
        ("wwan0", None, false, LinkKind::Cellular),
        ("v4-rmnet_data0", None, false, LinkKind::Cellular),
        // Android's CLAT device is a tun: the name still says cellular.
        ("v4-rmnet_data0", Some("tun"), false, LinkKind::Cellular),
        ("bnep0", None, false, LinkKind::Bluetooth),
        ("bt-pan", None, false, LinkKind::Bluetooth),
        ("usb0", None, false, LinkKind::Usb),
        ("rndis0", None, false, LinkKind::Usb),
        ("ncm0", None, false, LinkKind::Usb),
        ("eth0", None, false, LinkKind::Ethernet),
        ("enp3s0", None, false, LinkKind::Ethernet),
        ("tun0", None, false, LinkKind::Vpn),
        ("wg0", None, false, LinkKind::Vpn),
        ("ppp0", None, false, LinkKind::Vpn),
        ("mullvad", Some("wireguard"), false, LinkKind::Vpn),
        ("veth9", Some("veth"), false, LinkKind::Other),
        ("s-wlan0", None, false, LinkKind::Other),
        // sysfs beats the name (facts in the fake sysfs above).
        ("eth3", None, false, LinkKind::Wifi),
        ("eth4", None, false, LinkKind::Wifi),
        ("usb5", None, false, LinkKind::Cellular),
        ("x6", None, false, LinkKind::Bluetooth),
        // An unknown DEVTYPE says nothing: the name decides.
        ("wlan7", None, false, LinkKind::Wifi),
        // roamd's config beats everything.
        ("eth1", None, true, LinkKind::Cellular),
        ("eth1", None, false, LinkKind::Ethernet),
    ];
    let t0 = Instant::now();
    let mut ran = [0; 3];
    for (i, &(name, info_kind, overridden, want)) in cases.iter().enumerate() {
        let index = 10 + i as u32;
        let bytes = emit::bytes(emit::link(index, name, true, true, info_kind), 0);
        let has_sysfs = sysfs.0.join(name).exists();

        let overrides: &[KindOverride] = if overridden { &usb_modem } else { &[] };
        let mut agent = Agent::new(&sysfs.0, overrides);
        agent.feed(&bytes, t0);
        assert_eq!(
            one(agent.interfaces(t0)).kind,
            want,
            "roamd: {name} {info_kind:?}"
        );
        ran[0] += 1;

        if !overridden {
            let mut sdk = roam::monitor::Links::with_sysfs(sysfs.0.clone());
            sdk_feed(&mut sdk, &bytes, t0);
            assert_eq!(
                one(sdk.interfaces(t0)).kind,
                want,
                "SDK: {name} {info_kind:?}"
            );
            ran[1] += 1;
        }

        // Android knows a network's transport; when it names no kind, the interface name
        // decides. It has no sysfs facts and no rtnetlink kind.
        if !overridden && !has_sysfs && info_kind.is_none() {
            let mut book = LinkBook::default();
            let addr: IpAddr = "198.18.0.2".parse().unwrap();
            book.update(t0, android_update(1, Transport::Other(-1), name, &[addr]));
            assert_eq!(one(book.interfaces(t0)).kind, want, "Android: {name}");
            ran[2] += 1;
        }
    }
    assert_eq!(
        ran,
        [cases.len(), cases.len() - 1, 19],
        "cases run per entry point"
    );
}

#[test]
fn usable_addresses_are_the_same_everywhere() {
    let p = |a: &str| AddrFacts::plain(a.parse().unwrap(), if a.contains(':') { 64 } else { 24 });
    let flagged = |a: &str, set: fn(&mut AddrFacts)| {
        let mut f = p(a);
        set(&mut f);
        f
    };
    // (admin up, carrier, addresses, expected usable addresses); the link is `up` with both
    // flags and a usable address.
    let cases: Vec<(bool, bool, Vec<AddrFacts>, Vec<&str>)> = vec![
        (true, true, vec![p("198.18.0.2")], vec!["198.18.0.2"]),
        (true, true, vec![p("2001:db8::2")], vec!["2001:db8::2"]),
        (true, true, vec![p("fe80::1")], vec![]),
        (true, true, vec![p("169.254.7.1")], vec![]),
        (
            true,
            true,
            vec![p("fe80::1"), p("198.18.0.2")],
            vec!["198.18.0.2"],
        ),
        (
            true,
            true,
            vec![flagged("2001:db8::3", |f| f.tentative = true)],
            vec![],
        ),
        (
            true,
            true,
            vec![flagged("2001:db8::4", |f| f.dadfailed = true)],
            vec![],
        ),
        (
            true,
            true,
            vec![flagged("2001:db8::5", |f| f.deprecated = true)],
            vec!["2001:db8::5"],
        ),
        (
            true,
            true,
            vec![p("198.18.0.2"), p("2001:db8::2")],
            vec!["198.18.0.2", "2001:db8::2"],
        ),
        // The address is usable; the link is not.
        (true, false, vec![p("198.18.0.2")], vec!["198.18.0.2"]),
        (false, true, vec![p("198.18.0.2")], vec!["198.18.0.2"]),
        (true, true, vec![], vec![]),
    ];
    let t0 = Instant::now();
    let mut ran = [0; 3];
    for (i, (admin_up, carrier, addrs, want)) in cases.iter().enumerate() {
        let want: Vec<IpAddr> = want.iter().map(|a| a.parse().unwrap()).collect();
        let want_state = if want.is_empty() || !admin_up || !carrier {
            LinkState::Down
        } else {
            LinkState::Up
        };
        let mut bytes = emit::bytes(emit::link(3, "wlan0", *admin_up, *carrier, None), 0);
        for a in addrs {
            bytes.extend(emit::bytes(emit::address(3, *a, true), 0));
        }
        let what = format!("case {i}: {addrs:?} up {admin_up} carrier {carrier}");

        let mut agent = Agent::new(Path::new("/nonexistent"), &[]);
        agent.feed(&bytes, t0);
        assert_eq!(one(agent.interfaces(t0)).state, want_state, "roamd: {what}");
        ran[0] += 1;

        let mut sdk = roam::monitor::Links::with_sysfs("/nonexistent".into());
        sdk_feed(&mut sdk, &bytes, t0);
        assert_eq!(one(sdk.interfaces(t0)).state, want_state, "SDK: {what}");
        assert_eq!(sdk.usable_addrs("wlan0"), want, "SDK: {what}");
        ran[1] += 1;

        // Android reports connected networks only, with addresses and no flags.
        if *admin_up && *carrier && addrs.iter().all(AddrFacts::settled) {
            let mut book = LinkBook::default();
            let plain: Vec<IpAddr> = addrs.iter().map(|a| a.addr).collect();
            book.update(t0, android_update(1, Transport::Wifi, "wlan0", &plain));
            assert_eq!(
                one(book.interfaces(t0)).state,
                want_state,
                "Android: {what}"
            );
            assert_eq!(book.link_views()[0].addrs, want, "Android: {what}");
            ran[2] += 1;
        }
    }
    assert_eq!(ran, [12, 12, 8], "cases run per entry point");
}

/// The `hold` timeline every entry point goes through: wlan0 and rmnet0 usable at start-up;
/// at +10 s wlan0 loses its address, at +12 s it is back; usb0 first comes at +20 s.
#[test]
fn up_times_and_hold_are_the_same_everywhere() {
    let wlan: IpAddr = "198.18.0.2".parse().unwrap();
    let cell: IpAddr = "198.18.1.2".parse().unwrap();
    let usb: IpAddr = "198.18.2.2".parse().unwrap();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let policy = Policy::default_policy();
    let primary = |interfaces: Vec<Interface>| {
        policy
            .evaluate(&State {
                app: None,
                flow: None,
                interfaces,
            })
            .primary()
            .map(|p| p.interface.clone())
    };
    let up_for = |interfaces: &[Interface], name: &str| {
        interfaces
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} in {interfaces:?}"))
            .up_for_ms
    };

    let link_bytes = |index, name, addr: IpAddr, present| {
        let mut b = emit::bytes(emit::link(index, name, true, true, None), 0);
        b.extend(emit::bytes(
            emit::address(index, AddrFacts::plain(addr, 24), present),
            0,
        ));
        b
    };
    let start = [
        link_bytes(3, "wlan0", wlan, true),
        link_bytes(4, "rmnet0", cell, true),
    ]
    .concat();

    // Each entry point's view at the checkpoints: (at start, +13 s, +18 s, +21 s).
    let mut views: Vec<(&str, Vec<Vec<Interface>>)> = Vec::new();

    let mut sdk = roam::monitor::Links::with_sysfs("/nonexistent".into());
    sdk_feed(&mut sdk, &start, t0);
    sdk.started();
    let mut v = vec![sdk.interfaces(t0)];
    sdk_feed(&mut sdk, &link_bytes(3, "wlan0", wlan, false), at(10));
    sdk_feed(&mut sdk, &link_bytes(3, "wlan0", wlan, true), at(12));
    v.push(sdk.interfaces(at(13)));
    v.push(sdk.interfaces(at(18)));
    assert_eq!(
        sdk.next_hold(at(13), &policy.hold_durations()),
        Some(at(17)),
        "SDK: the decision is looked at again when wlan0's hold runs out"
    );
    sdk_feed(&mut sdk, &link_bytes(5, "usb0", usb, true), at(20));
    v.push(sdk.interfaces(at(21)));
    views.push(("SDK", v));

    let mut book = LinkBook::default();
    book.update(t0, android_update(3, Transport::Wifi, "wlan0", &[wlan]));
    book.update(
        t0,
        android_update(4, Transport::Cellular, "rmnet0", &[cell]),
    );
    let mut v = vec![book.interfaces(t0)];
    book.update(at(10), android_update(3, Transport::Wifi, "wlan0", &[]));
    book.update(at(12), android_update(3, Transport::Wifi, "wlan0", &[wlan]));
    v.push(book.interfaces(at(13)));
    v.push(book.interfaces(at(18)));
    assert_eq!(
        book.next_hold(at(13), &policy.hold_durations()),
        Some(at(17))
    );
    book.update(at(20), android_update(5, Transport::Usb, "usb0", &[usb]));
    v.push(book.interfaces(at(21)));
    views.push(("Android", v));

    // roamd: the same flap through its monitor and core, started after the first dump.
    let mut agent = Agent::new(Path::new("/nonexistent"), &[]);
    agent.feed(&start, t0);
    agent.core.started();
    let mut v = vec![agent.interfaces(t0)];
    agent.feed(&link_bytes(3, "wlan0", wlan, false), at(10));
    agent.feed(&link_bytes(3, "wlan0", wlan, true), at(12));
    v.push(agent.interfaces(at(13)));
    v.push(agent.interfaces(at(18)));
    agent.feed(&link_bytes(5, "usb0", usb, true), at(20));
    v.push(agent.interfaces(at(21)));
    views.push(("roamd", v));
    assert_eq!(views.len(), 3, "every entry point ran the timeline");

    for (who, v) in &views {
        // Links usable at start-up are up since an unknown, long time: nothing is held back.
        assert_eq!(up_for(&v[0], "wlan0"), None, "{who}");
        assert_eq!(up_for(&v[0], "rmnet0"), None, "{who}");
        assert_eq!(primary(v[0].clone()).as_deref(), Some("wlan0"), "{who}");
        // After the flap wlan0 counts from its return and waits out `hold 5s`.
        assert_eq!(up_for(&v[1], "wlan0"), Some(1000), "{who}");
        assert_eq!(up_for(&v[1], "rmnet0"), None, "{who}");
        assert_eq!(primary(v[1].clone()).as_deref(), Some("rmnet0"), "{who}");
        assert_eq!(primary(v[2].clone()).as_deref(), Some("wlan0"), "{who}");
        // A link that first comes after start-up counts from then.
        assert_eq!(up_for(&v[3], "usb0"), Some(1000), "{who}");
    }
}
