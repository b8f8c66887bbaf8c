//! Virtual-time tests of the core: every instant is `t0 + offset`, no clock is read.
use std::collections::BTreeMap;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use roam_ipc::proto::Request;
use roam_policy::LinkKind;

use super::*;

const WLAN: u32 = 2;
const RMNET: u32 = 3;
const BNEP: u32 = 4;

/// Wifi before cellular before Bluetooth, nothing else: the tests below are about the core,
/// not about the built-in policy's choices.
const PLAIN: &str = "link wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\n\
                     default { prefer wifi over cell over bt }\n";

fn plain() -> Policy {
    Policy::parse(PLAIN).expect("PLAIN is valid")
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A link with carrier, admin-up, and a probe target when `targets`.
pub(crate) fn info(index: u32, name: &str, kind: LinkKind, targets: bool) -> LinkInfo {
    LinkInfo {
        index,
        name: name.into(),
        kind,
        admin_up: true,
        carrier: true,
        metered: None,
        probe_targets: if targets {
            vec![SocketAddr::from(([198, 18, index as u8, 1], 7777))]
        } else {
            Vec::new()
        },
        wireless: false,
        portal: None,
    }
}

/// Address 198.18.INDEX.2/24 on link `index`.
pub(crate) fn addr(index: u32) -> Event {
    Event::AddressAdded {
        index,
        addr: IpAddr::from([198, 18, index as u8, 2]),
        prefix_len: 24,
    }
}

/// The old pace ([`Pacing::Periodic`]), which the tests written for it keep checking.
pub(crate) fn periodic() -> ProbeConfig {
    ProbeConfig {
        pacing: Pacing::Periodic,
        ..ProbeConfig::default()
    }
}

/// A handset with wlan0, rmnet0 and bnep0, each with carrier and an address, probed at the
/// periodic pace.
fn handset(policy: Policy, targets: bool, t0: Instant) -> Core {
    handset_with(policy, targets, t0, periodic())
}

/// [`handset`] with these probe settings.
fn handset_with(policy: Policy, targets: bool, t0: Instant, cfg: ProbeConfig) -> Core {
    let mut core = Core::new(policy, cfg);
    for (i, n, k) in [
        (WLAN, "wlan0", LinkKind::Wifi),
        (RMNET, "rmnet0", LinkKind::Cellular),
        (BNEP, "bnep0", LinkKind::Bluetooth),
    ] {
        core.handle(t0, Event::LinkUpdated(info(i, n, k, targets)));
        core.handle(t0, addr(i));
    }
    // The handset's links were there when roamd started (the first dump).
    core.started();
    drain(&mut core);
    core
}

fn drain(core: &mut Core) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

/// client -> names of its paths, for every push among `actions`.
fn pushes(actions: &[Action]) -> BTreeMap<ClientId, Vec<String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Push { client, update } => Some((
                *client,
                update
                    .decision
                    .paths
                    .iter()
                    .map(|p| p.interface.clone())
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

/// A peer of uid 1000 running `app`, without admin rights.
fn peer(app: &str) -> Peer {
    Peer {
        uid: 1000,
        gid: 1000,
        pid: None,
        app: app.into(),
        admin: false,
    }
}

/// Connects `client` as `app` and subscribes it to its own decisions.
fn subscribe(core: &mut Core, now: Instant, client: ClientId, app: &str) {
    core.connect(client, peer(app));
    core.request(
        now,
        client,
        Request::Subscribe {
            id: 1,
            app: None,
            flow: None,
        },
    );
}

fn report(rtt_ms: Option<f64>, stalled: bool) -> Request {
    Request::ReportPath {
        id: 2,
        interface: "wlan0".into(),
        rtt_ms,
        stalled,
    }
}

/// Something a test feeds the core.
enum Input {
    Event(Event),
    Request(ClientId, Request),
    Subscribe(ClientId, &'static str),
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_link_going_down_changes_every_subscribers_decision() {
    let wlan_down = |i: &mut LinkInfo| i.admin_up = false;
    let wlan_no_carrier = |i: &mut LinkInfo| i.carrier = false;
    type Case = (&'static str, Box<dyn Fn(&mut Core, Instant)>);
    let cases: Vec<Case> = vec![
        (
            "admin down",
            Box::new(move |c: &mut Core, t| {
                let mut i = info(WLAN, "wlan0", LinkKind::Wifi, false);
                wlan_down(&mut i);
                c.handle(t, Event::LinkUpdated(i));
            }),
        ),
        (
            "carrier lost",
            Box::new(move |c: &mut Core, t| {
                let mut i = info(WLAN, "wlan0", LinkKind::Wifi, false);
                wlan_no_carrier(&mut i);
                c.handle(t, Event::LinkUpdated(i));
            }),
        ),
        (
            "address removed",
            Box::new(|c: &mut Core, t| {
                c.handle(
                    t,
                    Event::AddressRemoved {
                        index: WLAN,
                        addr: IpAddr::from([198, 18, WLAN as u8, 2]),
                        prefix_len: 24,
                    },
                )
            }),
        ),
        (
            "link removed",
            Box::new(|c: &mut Core, t| c.handle(t, Event::LinkRemoved { index: WLAN })),
        ),
    ];
    for (what, inject) in cases {
        let t0 = Instant::now();
        let mut core = handset(plain(), false, t0);
        subscribe(&mut core, t0, 1, "com.example.video");
        subscribe(&mut core, t0, 2, "com.example.voip");
        let first = pushes(&drain(&mut core));
        assert_eq!(first[&1], names(&["wlan0", "rmnet0", "bnep0"]), "{what}");
        assert_eq!(first.len(), 2, "{what}");

        inject(&mut core, t0 + ms(1000));
        let after = pushes(&drain(&mut core));
        assert_eq!(after.len(), 2, "{what}: both subscribers told");
        for client in [1, 2] {
            assert_eq!(after[&client], names(&["rmnet0", "bnep0"]), "{what}");
        }
        let wlan = core
            .interfaces(t0 + ms(1000))
            .into_iter()
            .find(|i| i.name == "wlan0");
        if let Some(w) = wlan {
            assert_eq!(w.state, LinkState::Down, "{what}");
            assert_eq!(w.up_for_ms, None, "{what}");
        }
    }
}

#[test]
fn nothing_is_pushed_when_nothing_changed() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    subscribe(&mut core, t0, 1, "a");
    assert_eq!(pushes(&drain(&mut core)).len(), 1);
    let quiet: Vec<Input> = vec![
        Input::Event(Event::RouteAdded(Route {
            index: WLAN,
            table: 254,
            dst: None,
            gateway: Some(IpAddr::from([198, 18, 2, 1])),
        })),
        Input::Event(Event::AddressAdded {
            index: WLAN,
            addr: IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]),
            prefix_len: 64,
        }),
        Input::Event(Event::AddressAdded {
            index: RMNET,
            addr: IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, 2]),
            prefix_len: 64,
        }),
        Input::Event(Event::LinkUpdated(info(
            RMNET,
            "rmnet0",
            LinkKind::Cellular,
            false,
        ))),
        Input::Request(1, report(Some(12.0), false)),
        Input::Subscribe(9, "b"),
    ];
    for (n, input) in quiet.into_iter().enumerate() {
        let t = t0 + ms(10 * n as u64);
        match input {
            Input::Event(ev) => core.handle(t, ev),
            Input::Request(client, r) => core.request(t, client, r),
            Input::Subscribe(client, app) => subscribe(&mut core, t, client, app),
        }
        let p = pushes(&drain(&mut core));
        assert!(!p.contains_key(&1), "event {n} pushed to client 1: {p:?}");
    }
    assert_eq!(
        core.poll_timeout(),
        None,
        "no targets, no hold: no timer at all"
    );
}

/// What `ip link set wlan0 down` does in one drained netlink batch (the IPv6 address and
/// route go, then the link's own message): the subscribers are told once, at the end, and the
/// thousand subscribers of one app share one update (the shell encodes it once); a batch that
/// changes nothing they see pushes nothing.
#[test]
fn one_batch_is_one_push_per_subscriber_and_one_update_per_app() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    let v6 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 2]);
    core.handle(
        t0,
        Event::AddressAdded {
            index: WLAN,
            addr: v6,
            prefix_len: 64,
        },
    );
    for client in 1..=1000 {
        subscribe(&mut core, t0, client, "com.example.chat");
    }
    subscribe(&mut core, t0, 1001, "com.example.video");
    assert_eq!(pushes(&drain(&mut core)).len(), 1001);

    let mut down = info(WLAN, "wlan0", LinkKind::Wifi, false);
    down.admin_up = false;
    let v6_route = Route {
        index: WLAN,
        table: 254,
        dst: Some((IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 64)),
        gateway: None,
    };
    core.handle(t0 + ms(5), Event::RouteAdded(v6_route));
    assert!(
        pushes(&drain(&mut core)).is_empty(),
        "a route nobody's decision uses"
    );
    core.handle_all(
        t0 + ms(10),
        [
            Event::AddressRemoved {
                index: WLAN,
                addr: v6,
                prefix_len: 64,
            },
            Event::RouteRemoved(v6_route),
            Event::LinkUpdated(down),
        ],
    );
    let actions = drain(&mut core);
    let updates: Vec<(ClientId, &std::sync::Arc<Update>)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Push { client, update } => Some((*client, update)),
            _ => None,
        })
        .collect();
    assert_eq!(updates.len(), 1001, "one push per subscriber for the batch");
    let chat = updates[0].1;
    assert_eq!(chat.decision.paths[0].interface, "rmnet0");
    assert!(
        updates[..1000]
            .iter()
            .all(|(_, u)| std::sync::Arc::ptr_eq(u, chat)),
        "one app's subscribers share one update"
    );
    assert!(
        !std::sync::Arc::ptr_eq(updates[1000].1, chat),
        "another app's is its own"
    );

    // The same facts again (the kernel repeating itself): nothing anyone sees changed.
    let mut again = info(WLAN, "wlan0", LinkKind::Wifi, false);
    again.admin_up = false;
    core.handle_all(t0 + ms(20), [Event::LinkUpdated(again)]);
    assert!(pushes(&drain(&mut core)).is_empty());
}

#[test]
fn hold_and_up_for_follow_virtual_time() {
    let t0 = Instant::now();
    let mut core = Core::new(
        Policy::parse(&PLAIN.replace("over bt }", "over bt; hold 10s }")).unwrap(),
        ProbeConfig::default(),
    );
    // roamd has started with no links; they come later.
    core.started();
    core.handle(
        t0,
        Event::LinkUpdated(info(RMNET, "rmnet0", LinkKind::Cellular, false)),
    );
    core.handle(t0, addr(RMNET));
    subscribe(&mut core, t0, 1, "a");
    let t1 = t0 + ms(20_000);
    core.handle(
        t1,
        Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
    );
    core.handle(t1, addr(WLAN));
    let actions = drain(&mut core);
    assert_eq!(
        pushes(&actions)[&1],
        names(&["rmnet0", "wlan0"]),
        "wlan0 held back"
    );
    let Some(Action::Push { update, .. }) = actions.last() else {
        panic!("no push: {actions:?}");
    };
    let up_for: BTreeMap<_, _> = update
        .interfaces
        .iter()
        .map(|i| (i.name.as_str(), i.up_for_ms))
        .collect();
    assert_eq!(up_for["rmnet0"], Some(20_000));
    assert_eq!(up_for["wlan0"], Some(0));

    assert_eq!(
        core.poll_timeout(),
        Some(t1 + ms(10_000)),
        "wake exactly when the hold ends"
    );
    core.handle_timeout(t1 + ms(9_999));
    assert!(pushes(&drain(&mut core)).is_empty());
    core.handle_timeout(t1 + ms(10_000));
    assert_eq!(pushes(&drain(&mut core))[&1], names(&["wlan0", "rmnet0"]));
    assert_eq!(core.poll_timeout(), None);
}

/// Runs the core against a simulated network until `end`: each probe sent on an interface for
/// which `rtt` gives `Some(d)` is answered `d` later; others are lost. Returns every action.
fn simulate(
    core: &mut Core,
    from: Instant,
    end: Instant,
    rtt: impl Fn(&str, Instant) -> Option<Duration>,
) -> Vec<(Instant, Action)> {
    evidence::sim(core, from, end, rtt, evidence::quiet)
}

#[test]
fn no_subscriber_means_no_probe_and_no_timer() {
    let t0 = Instant::now();
    let mut core = handset(plain(), true, t0);
    assert_eq!(core.poll_timeout(), None);
    let log = simulate(&mut core, t0, t0 + ms(60_000), |_, _| Some(ms(5)));
    assert!(log.is_empty(), "{log:?}");
}

#[test]
fn silent_failure_turns_the_link_down_within_the_window() {
    let t0 = Instant::now();
    let mut core = handset(plain(), true, t0);
    subscribe(&mut core, t0, 1, "a");
    let dies = t0 + ms(1_003);
    let log = simulate(&mut core, t0, t0 + ms(6_000), |ifname, now| {
        (ifname != "wlan0" || now < dies).then_some(ms(2))
    });
    let probes_before = |name: &str, until: Instant| {
        log.iter()
            .filter(|(t, a)| {
                *t < until && matches!(a, Action::SendProbe { interface, .. } if interface == name)
            })
            .count()
    };
    // Fast probes (50 ms) on the primary and the backups: every path of a decision is probed.
    assert!((19..=22).contains(&probes_before("wlan0", t0 + ms(1_000))));
    assert!((19..=22).contains(&probes_before("bnep0", t0 + ms(1_000))));

    let down_at = log
        .iter()
        .find_map(|(t, a)| match a {
            Action::Push { update, .. } if update.decision.paths[0].interface == "rmnet0" => {
                Some(*t)
            }
            _ => None,
        })
        .expect("the decision moved to rmnet0");
    let reaction = down_at - dies;
    assert!(
        reaction <= ms(250),
        "declared down {reaction:?} after the failure"
    );
    assert!(reaction >= ms(100), "declared down after only {reaction:?}");

    // Off every decision, wlan0 is still probed, slowly, so it can come back.
    let after: Vec<_> = log
        .iter()
        .filter(|(t, a)| {
            *t > down_at && matches!(a, Action::SendProbe { interface, .. } if interface == "wlan0")
        })
        .map(|(t, _)| *t)
        .collect();
    assert!(!after.is_empty());
    assert!(
        after.windows(2).all(|w| w[1] - w[0] >= ms(2_000)),
        "{after:?}"
    );
    let w = core.interfaces(t0 + ms(6_000));
    assert_eq!(w[2].name, "wlan0");
    assert_eq!(w[2].state, LinkState::Down);
    assert!(w[2].loss_pct.is_some_and(|l| l > 0.0));
    assert_eq!(w[1].name, "rmnet0");
    assert_eq!(w[1].state, LinkState::Validated);
    assert_eq!(w[1].rtt_ms, Some(2.0));
}

#[test]
fn a_silently_failed_link_comes_back_when_probes_are_answered() {
    let t0 = Instant::now();
    let mut core = handset(plain(), true, t0);
    subscribe(&mut core, t0, 1, "a");
    let (dies, heals) = (t0 + ms(500), t0 + ms(1_500));
    let log = simulate(&mut core, t0, t0 + ms(6_000), |ifname, now| {
        (ifname != "wlan0" || now < dies || now >= heals).then_some(ms(2))
    });
    let primaries: Vec<String> = log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Push { update, .. } => Some(update.decision.paths[0].interface.clone()),
            _ => None,
        })
        .collect();
    assert!(
        primaries.ends_with(&names(&["rmnet0", "wlan0"])),
        "{primaries:?} {log:#?}"
    );
}

#[test]
fn unused_links_are_probed_slowly_and_unsubscribing_stops_everything() {
    let t0 = Instant::now();
    // rmnet0 loses carrier: a link that is down by carrier is not probed at all.
    let mut core = handset(plain(), true, t0);
    subscribe(&mut core, t0, 1, "a");
    core.handle(
        t0,
        Event::LinkUpdated({
            let mut i = info(RMNET, "rmnet0", LinkKind::Cellular, true);
            i.carrier = false;
            i
        }),
    );
    drain(&mut core);
    let log = simulate(&mut core, t0, t0 + ms(1_000), |_, _| Some(ms(1)));
    assert!(
        !log.iter()
            .any(|(_, a)| matches!(a, Action::SendProbe { index, .. } if *index == RMNET))
    );
    core.request(t0 + ms(1_000), 1, Request::Unsubscribe { id: 3 });
    let stops: Vec<_> = drain(&mut core)
        .into_iter()
        .filter_map(|a| match a {
            Action::StopProbing { index } => Some(index),
            _ => None,
        })
        .collect();
    assert_eq!(stops, [WLAN, BNEP]);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_stall_report_probes_at_once() {
    let t0 = Instant::now();
    let mut core = handset(plain(), true, t0);
    subscribe(&mut core, t0, 1, "a");
    simulate(&mut core, t0, t0 + ms(120), |_, _| Some(ms(1)));
    let t = t0 + ms(121);
    core.request(t, 1, report(None, true));
    let sent: Vec<_> = drain(&mut core)
        .into_iter()
        .filter(|a| matches!(a, Action::SendProbe { interface, .. } if interface == "wlan0"))
        .collect();
    assert_eq!(
        sent.len(),
        1,
        "one probe at the report, not at the next 50 ms turn"
    );
}

#[test]
fn policy_routing_mirrors_main_table_routes_with_one_rule_per_address() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    let routing = |actions: Vec<Action>| -> Vec<RoutingPlan> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Routing(p) => Some(p),
                _ => None,
            })
            .collect()
    };
    core.enable_routing(RoutingConfig::default());
    assert!(
        routing(drain(&mut core)).is_empty(),
        "no routes: nothing to plan"
    );

    let connected = Route {
        index: WLAN,
        table: MAIN_TABLE,
        dst: Some((IpAddr::from([198, 18, 2, 0]), 24)),
        gateway: None,
    };
    let default = Route {
        index: WLAN,
        table: MAIN_TABLE,
        dst: None,
        gateway: Some(IpAddr::from([198, 18, 2, 1])),
    };
    let ours = Route {
        table: 1000 + WLAN,
        ..default
    };
    core.handle_all(
        t0,
        [
            Event::RouteAdded(connected),
            Event::RouteAdded(default),
            // Our own copies come back through the monitor: they must not be copied again.
            Event::RouteAdded(ours),
            // A link-local address gets no rule.
            Event::AddressAdded {
                index: WLAN,
                addr: IpAddr::from([0xfe80, 0, 0, 0, 0, 0, 0, 9]),
                prefix_len: 64,
            },
        ],
    );
    let plans = routing(drain(&mut core));
    assert_eq!(plans.len(), 1);
    let table = 1000 + WLAN;
    assert_eq!(
        plans[0]
            .rules
            .iter()
            .map(|r| (r.from, r.table, r.priority))
            .collect::<Vec<_>>(),
        [(IpAddr::from([198, 18, WLAN as u8, 2]), table, 10000)]
    );
    let mut routes: Vec<_> = plans[0]
        .routes
        .iter()
        .map(|r| (r.table, r.dst, r.gateway))
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [(table, None, default.gateway), (table, connected.dst, None)]
    );

    // Nothing changed: no new plan. A route gone: a new plan without it.
    core.handle(
        t0,
        Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
    );
    assert!(routing(drain(&mut core)).is_empty());
    core.handle_all(
        t0,
        [Event::RouteRemoved(default), Event::RouteRemoved(connected)],
    );
    assert_eq!(routing(drain(&mut core)), [RoutingPlan::default()]);
}

/// (table, initial window) of every route of the last routing plan among `actions`.
fn windows(actions: &[Action]) -> Option<Vec<(u32, Option<u32>)>> {
    actions.iter().rev().find_map(|a| match a {
        Action::Routing(p) => Some(p.routes.iter().map(|r| (r.table, r.initcwnd)).collect()),
        _ => None,
    })
}

/// `default via 198.18.INDEX.1` on link `index`, in the main table.
pub(crate) fn default_route(index: u32) -> Event {
    Event::RouteAdded(Route {
        index,
        table: MAIN_TABLE,
        dst: None,
        gateway: Some(IpAddr::from([198, 18, index as u8, 1])),
    })
}

#[test]
fn a_backup_links_routes_carry_the_failover_window_while_it_backs_up_a_primary_and_just_after() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    core.enable_routing(RoutingConfig::default());
    core.handle_all(t0, [default_route(WLAN), default_route(RMNET)]);
    let (wlan, rmnet) = (1000 + WLAN, 1000 + RMNET);
    assert_eq!(
        windows(&drain(&mut core)).unwrap(),
        [(wlan, None), (rmnet, Some(BACKUP_INITCWND))],
        "wlan0 primary keeps the kernel's window; rmnet0, its backup, gets the failover one"
    );

    // wlan0 loses its carrier: rmnet0 is primary now. It keeps the window while the
    // sessions fail over to it, and gets the kernel's back when the failover window ends.
    let wlan_info = info(WLAN, "wlan0", LinkKind::Wifi, false);
    core.handle(
        t0 + ms(10),
        Event::LinkUpdated(LinkInfo {
            carrier: false,
            ..wlan_info.clone()
        }),
    );
    let w = windows(&drain(&mut core));
    assert!(
        w.as_ref()
            .is_none_or(|w| w.contains(&(rmnet, Some(BACKUP_INITCWND)))),
        "the failover to rmnet0 lost its window: {w:?}"
    );
    let ends = t0 + ms(10) + FAILOVER_WINDOW;
    assert!(
        core.poll_timeout().is_some_and(|t| t <= ends),
        "no deadline for the end of the failover window"
    );
    core.handle_timeout(ends - ms(1));
    assert_eq!(windows(&drain(&mut core)), None, "the window ended early");
    core.handle_timeout(ends);
    let w = windows(&drain(&mut core)).unwrap();
    assert!(
        w.contains(&(rmnet, None)) && w.iter().all(|(_, c)| c.is_none()),
        "{w:?}"
    );
    assert!(
        core.poll_timeout().is_none_or(|t| t > ends),
        "the ended window is still a deadline"
    );

    // wlan0 returns: rmnet0 backs it up again.
    let back = ends + ms(10);
    core.handle(back, Event::LinkUpdated(wlan_info));
    core.handle_timeout(back);
    assert_eq!(
        windows(&drain(&mut core)).unwrap(),
        [(wlan, None), (rmnet, Some(BACKUP_INITCWND))]
    );
}

#[test]
fn a_backup_link_that_an_app_uses_first_keeps_the_kernels_window() {
    let t0 = Instant::now();
    let policy = Policy::parse(&format!("{PLAIN}app \"tv\" {{ use cell only }}\n")).unwrap();
    let mut core = handset(policy, false, t0);
    core.enable_routing(RoutingConfig::default());
    core.handle_all(t0, [default_route(WLAN), default_route(RMNET)]);
    drain(&mut core);
    core.set_apps(vec![crate::apps::AppUids {
        first: 40001,
        last: 40001,
        app: "tv".into(),
    }]);
    core.handle_timeout(t0 + ms(1));
    let w = windows(&drain(&mut core)).unwrap();
    assert_eq!(
        w,
        [(1000 + WLAN, None), (1000 + RMNET, None)],
        "rmnet0 carries tv's fresh connections: no failover window there"
    );
}

#[test]
fn ipv4_routes_flushed_by_an_admin_down_leave_the_plan_and_return_to_it() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    let routing = |actions: Vec<Action>| -> Vec<RoutingPlan> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Routing(p) => Some(p),
                _ => None,
            })
            .collect()
    };
    core.enable_routing(RoutingConfig::default());
    let v4 = Route {
        index: WLAN,
        table: MAIN_TABLE,
        dst: None,
        gateway: Some(IpAddr::from([198, 18, 2, 1])),
    };
    let v6 = Route {
        gateway: Some(IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1])),
        ..v4
    };
    core.handle_all(t0, [Event::RouteAdded(v4), Event::RouteAdded(v6)]);
    assert_eq!(routing(drain(&mut core)).last().unwrap().routes.len(), 2);

    // `ip link set wlan0 down`: the kernel announces the IPv6 route's removal, not the
    // IPv4 one's.
    let up = info(WLAN, "wlan0", LinkKind::Wifi, false);
    core.handle_all(
        t0,
        [
            Event::LinkUpdated(LinkInfo {
                admin_up: false,
                ..up.clone()
            }),
            Event::RouteRemoved(v6),
        ],
    );
    assert_eq!(
        routing(drain(&mut core)).last(),
        Some(&RoutingPlan::default()),
        "no route of a downed link stays planned"
    );

    // Up again, the routes added again: planned again, so the enforcer adds them again.
    core.handle_all(
        t0,
        [
            Event::LinkUpdated(up),
            Event::RouteAdded(v4),
            Event::RouteAdded(v6),
        ],
    );
    assert_eq!(routing(drain(&mut core)).last().unwrap().routes.len(), 2);
}

#[test]
fn mptcp_endpoints_follow_the_device_default_decision() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    core.enable_mptcp(t0);
    let plans = |actions: Vec<Action>| -> Vec<Vec<(IpAddr, bool)>> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Mptcp(p) => Some(p.endpoints.iter().map(|(a, e)| (*a, e.backup)).collect()),
                _ => None,
            })
            .collect()
    };
    let addr = |i: u32| IpAddr::from([198, 18, i as u8, 2]);
    let first = plans(drain(&mut core));
    assert_eq!(
        first,
        [vec![
            (addr(WLAN), false),
            (addr(RMNET), true),
            (addr(BNEP), true)
        ]]
    );
    // wlan0 loses carrier: its endpoint goes and rmnet0 is promoted.
    let mut down = info(WLAN, "wlan0", LinkKind::Wifi, false);
    down.carrier = false;
    core.handle(t0, Event::LinkUpdated(down));
    subscribe(&mut core, t0, 1, "a");
    let actions = drain(&mut core);
    assert_eq!(
        plans(actions.clone()),
        [vec![(addr(RMNET), false), (addr(BNEP), true)]]
    );
    core.handle(
        t0,
        Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
    );
    let actions = drain(&mut core);
    let kinds: Vec<&str> = actions
        .iter()
        .map(|a| match a {
            Action::Mptcp(_) => "mptcp",
            Action::Push { .. } => "push",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["mptcp", "push"], "the kernel first, then the apps");
}

#[test]
fn the_last_mptcp_endpoints_stay_when_no_path_is_usable() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    core.enable_mptcp(t0);
    drain(&mut core);
    let plans = |core: &mut Core| -> Vec<Vec<IpAddr>> {
        drain(core)
            .into_iter()
            .filter_map(|a| match a {
                Action::Mptcp(p) => Some(p.endpoints.keys().copied().collect()),
                _ => None,
            })
            .collect()
    };
    let addr = |i: u32| IpAddr::from([198, 18, i as u8, 2]);
    let lose = |core: &mut Core, i: u32, name: &str, kind: LinkKind| {
        let mut down = info(i, name, kind, false);
        down.carrier = false;
        core.handle(t0, Event::LinkUpdated(down));
    };
    lose(&mut core, WLAN, "wlan0", LinkKind::Wifi);
    lose(&mut core, RMNET, "rmnet0", LinkKind::Cellular);
    assert_eq!(
        plans(&mut core),
        [vec![addr(RMNET), addr(BNEP)], vec![addr(BNEP)]]
    );
    // The last usable link goes too: nothing to move to, so bnep0's endpoint is not removed
    // (that would only close what its subflows still carry).
    lose(&mut core, BNEP, "bnep0", LinkKind::Bluetooth);
    assert!(plans(&mut core).is_empty());
    // A path returns: the plan follows again.
    core.handle(
        t0,
        Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
    );
    assert_eq!(plans(&mut core), [vec![addr(WLAN)]]);
}

#[test]
fn links_usable_at_start_are_not_held() {
    // roam-link's start-up rule: what the first dump shows usable was up before roamd
    // started, for an unknown, long time, so `hold` does not apply and no up time is shown.
    let t0 = Instant::now();
    let mut core = Core::new(
        Policy::parse(&PLAIN.replace("over bt }", "over bt; hold 10s }")).unwrap(),
        ProbeConfig::default(),
    );
    for (i, n, k) in [
        (WLAN, "wlan0", LinkKind::Wifi),
        (RMNET, "rmnet0", LinkKind::Cellular),
    ] {
        core.handle(t0, Event::LinkUpdated(info(i, n, k, false)));
        core.handle(t0, addr(i));
    }
    core.started();
    subscribe(&mut core, t0, 1, "a");
    let actions = drain(&mut core);
    assert_eq!(pushes(&actions)[&1], names(&["wlan0", "rmnet0"]));
    let Some(Action::Push { update, .. }) = actions.last() else {
        panic!("no push: {actions:?}");
    };
    assert!(update.interfaces.iter().all(|i| i.up_for_ms.is_none()));
    assert_eq!(core.poll_timeout(), None, "nothing held, no recheck");
    // A flap after start is held as before.
    let t1 = t0 + ms(1_000);
    let mut down = info(WLAN, "wlan0", LinkKind::Wifi, false);
    down.carrier = false;
    core.handle(t1, Event::LinkUpdated(down));
    core.handle(
        t1,
        Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
    );
    core.handle(t1, addr(WLAN));
    assert_eq!(pushes(&drain(&mut core))[&1], names(&["rmnet0", "wlan0"]));
    assert_eq!(core.poll_timeout(), Some(t1 + ms(10_000)));
}

#[test]
fn the_mptcp_plan_follows_hold_with_no_subscriber() {
    let t0 = Instant::now();
    let policy = Policy::parse(&PLAIN.replace("over bt }", "over bt; hold 10s }")).unwrap();
    let mut core = Core::new(policy, periodic());
    core.started();
    core.enable_mptcp(t0);
    core.handle(
        t0,
        Event::LinkUpdated(info(RMNET, "rmnet0", LinkKind::Cellular, false)),
    );
    core.handle(t0, addr(RMNET));
    let t1 = t0 + ms(20_000);
    core.handle(
        t1,
        Event::LinkUpdated(info(WLAN, "wlan0", LinkKind::Wifi, false)),
    );
    core.handle(t1, addr(WLAN));
    drain(&mut core);
    assert_eq!(core.poll_timeout(), Some(t1 + ms(10_000)));
    core.handle_timeout(t1 + ms(10_000));
    let plan = drain(&mut core)
        .into_iter()
        .find_map(|a| match a {
            Action::Mptcp(p) => Some(p),
            _ => None,
        })
        .expect("a new plan when the hold ends");
    assert!(!plan.endpoints[&IpAddr::from([198, 18, WLAN as u8, 2])].backup);
    assert!(plan.endpoints[&IpAddr::from([198, 18, RMNET as u8, 2])].backup);
}

#[test]
fn a_resync_batch_applies_only_its_outcome() {
    let t0 = Instant::now();
    let mut core = handset(plain(), false, t0);
    subscribe(&mut core, t0, 1, "a");
    drain(&mut core);
    let dump = |links: &[(u32, &str, LinkKind)], addrs: &[u32]| -> Vec<Event> {
        let mut v: Vec<Event> = links
            .iter()
            .map(|(i, n, k)| Event::LinkUpdated(info(*i, n, *k, false)))
            .collect();
        v.extend(addrs.iter().map(|i| addr(*i)));
        v
    };
    let all = [
        (WLAN, "wlan0", LinkKind::Wifi),
        (RMNET, "rmnet0", LinkKind::Cellular),
        (BNEP, "bnep0", LinkKind::Bluetooth),
    ];
    // The same state again after a re-dump: nothing to tell anyone.
    core.resync(t0, dump(&all, &[WLAN, RMNET, BNEP]));
    assert!(pushes(&drain(&mut core)).is_empty());
    // An address that went away while notifications were lost is gone after the re-dump.
    core.resync(t0, dump(&all, &[RMNET, BNEP]));
    assert_eq!(pushes(&drain(&mut core))[&1], names(&["rmnet0", "bnep0"]));
    // So is a link missing from the dump, and it is no longer probed or planned for.
    core.resync(t0, dump(&all[..2], &[WLAN, RMNET]));
    assert_eq!(pushes(&drain(&mut core))[&1], names(&["wlan0", "rmnet0"]));
    assert_eq!(core.link_indices(), [WLAN, RMNET]);
}

#[test]
fn wireless_facts_are_asked_when_a_link_comes_up_and_with_probes() {
    let t0 = Instant::now();
    let mut core = Core::new(plain(), periodic());
    let mut wifi = info(WLAN, "wlan0", LinkKind::Wifi, true);
    wifi.wireless = true;
    core.handle(t0, Event::LinkUpdated(wifi));
    core.handle(t0, addr(WLAN));
    let asked = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::QueryWireless { index } if *index == WLAN))
            .count()
    };
    assert_eq!(asked(&drain(&mut core)), 1, "asked when the link came up");
    core.handle(
        t0,
        Event::Wireless {
            index: WLAN,
            ssid: Some("HomeNet".into()),
            signal_dbm: Some(-61.0),
        },
    );
    let i = &core.interfaces(t0)[0];
    assert_eq!(
        (i.ssid.as_deref(), i.signal_dbm),
        (Some("HomeNet"), Some(-61.0))
    );
    // With a subscriber the link is probed every 50 ms; the facts are asked every 10 s.
    subscribe(&mut core, t0, 1, "a");
    let log = simulate(&mut core, t0, t0 + ms(25_000), |_, _| Some(ms(1)));
    let times: Vec<Instant> = log
        .iter()
        .filter(|(_, a)| matches!(a, Action::QueryWireless { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(times.len(), 2, "{times:?}");
    assert!(times[0] >= t0 + WIRELESS_REFRESH);
    // Down: the facts are forgotten, not kept stale.
    let mut down = info(WLAN, "wlan0", LinkKind::Wifi, true);
    down.wireless = true;
    down.carrier = false;
    core.handle(t0 + ms(25_000), Event::LinkUpdated(down));
    let i = &core.interfaces(t0 + ms(25_000))[0];
    assert_eq!((i.ssid.as_deref(), i.signal_dbm), (None, None));
}

/// Steering tests: a handset with roamd's userspace path manager, one subscribed app whose
/// MPTCP connection started on wlan0 towards the server.
mod steering {
    use super::*;

    const TOKEN: u32 = 0x1234_5678;
    const APP: ClientId = 7;

    fn local(index: u32, port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, index as u8, 2], port))
    }

    fn server() -> SocketAddr {
        SocketAddr::from(([198, 19, 0, 1], 4433))
    }

    /// The steering actions among `actions`, in order, as short strings a test can compare:
    /// `create rmnet0 backup`, `prio wlan0 primary`, `destroy wlan0`.
    fn steps(actions: &[Action]) -> Vec<String> {
        let name = |a: &SocketAddr| match a.ip() {
            IpAddr::V4(v4) => match u32::from(v4.octets()[2]) {
                WLAN => "wlan0",
                RMNET => "rmnet0",
                BNEP => "bnep0",
                _ => "?",
            },
            IpAddr::V6(_) => "?",
        };
        let role = |b: bool| if b { "backup" } else { "primary" };
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Subflow {
                    command:
                        SubflowCommand::Create {
                            token,
                            local,
                            remote,
                            backup,
                            index,
                            id,
                        },
                    requested: None,
                } => {
                    assert_eq!((*token, *remote), (TOKEN, server()));
                    assert_ne!(*id, 0, "id 0 is the initial subflow's");
                    assert_eq!(local.port(), 0, "a new subflow's port is the kernel's");
                    assert_eq!(
                        name(local),
                        ["?", "?", "wlan0", "rmnet0", "bnep0"][*index as usize]
                    );
                    Some(format!("create {} {}", name(local), role(*backup)))
                }
                Action::Subflow {
                    command:
                        SubflowCommand::SetBackup {
                            token,
                            local,
                            backup,
                            ..
                        },
                    requested: None,
                } => {
                    assert_eq!(*token, TOKEN);
                    Some(format!("prio {} {}", name(local), role(*backup)))
                }
                Action::Subflow {
                    command: SubflowCommand::Destroy { token, local, .. },
                    requested: None,
                } => {
                    assert_eq!(*token, TOKEN);
                    Some(format!("destroy {}", name(local)))
                }
                _ => None,
            })
            .collect()
    }

    /// The steering steps, and the index of the first push after them (pushes come after).
    fn steps_before_push(actions: &[Action]) -> Vec<String> {
        if let Some(p) = actions
            .iter()
            .position(|a| matches!(a, Action::Push { .. }))
        {
            assert!(
                steps(&actions[p..]).is_empty(),
                "subflows must move before apps are told: {actions:?}"
            );
        }
        steps(actions)
    }

    /// A handset with steering on, the app subscribed, its connection established from wlan0
    /// and registered; returns the steps that registering produced.
    fn steered(t0: Instant) -> (Core, Vec<String>) {
        let mut core = handset(plain(), false, t0);
        core.enable_steering(Ok(()));
        subscribe(&mut core, t0, APP, "com.example.chat");
        drain(&mut core);
        core.handle(
            t0,
            Event::Mptcp(MptcpEvent::Connection {
                token: TOKEN,
                local: local(WLAN, 40000),
                remote: server(),
            }),
        );
        assert!(
            steps(&drain(&mut core)).is_empty(),
            "an unregistered connection is nobody's to steer"
        );
        core.request(
            t0,
            APP,
            Request::RegisterMptcp {
                id: 4,
                token: TOKEN,
            },
        );
        let s = steps(&drain(&mut core));
        (core, s)
    }

    fn up(core: &mut Core, now: Instant, index: u32, port: u16, backup: bool) {
        core.handle(
            now,
            Event::Mptcp(MptcpEvent::SubflowUp {
                token: TOKEN,
                local: local(index, port),
                remote: server(),
                backup,
            }),
        );
    }

    fn down(core: &mut Core, now: Instant, index: u32, name: &str, kind: LinkKind) {
        let mut i = info(index, name, kind, false);
        i.admin_up = false;
        core.handle(now, Event::LinkUpdated(i));
    }

    #[test]
    fn registering_makes_a_backup_subflow_on_every_backup_path_ahead_of_time() {
        let t0 = Instant::now();
        let (mut core, s) = steered(t0);
        assert_eq!(s, ["create rmnet0 backup", "create bnep0 backup"]);
        // Established: nothing more to do, nothing to wake up for.
        up(&mut core, t0 + ms(3), RMNET, 40001, true);
        up(&mut core, t0 + ms(3), BNEP, 40002, true);
        assert!(steps(&drain(&mut core)).is_empty());
        let mut subflows = core.mptcp_subflows(TOKEN).expect("known connection");
        subflows.sort();
        assert_eq!(subflows.len(), 3);
        assert_eq!(core.poll_timeout(), None, "no periodic wakeup for steering");
    }

    #[test]
    fn link_down_promotes_the_backup_then_destroys_the_dead_subflow() {
        let t0 = Instant::now();
        let (mut core, _) = steered(t0);
        up(&mut core, t0 + ms(3), RMNET, 40001, true);
        up(&mut core, t0 + ms(3), BNEP, 40002, true);
        drain(&mut core);
        down(&mut core, t0 + ms(100), WLAN, "wlan0", LinkKind::Wifi);
        let actions = drain(&mut core);
        assert_eq!(
            steps_before_push(&actions),
            ["prio rmnet0 primary", "destroy wlan0"],
            "the survivor carries data before the dead subflow goes"
        );
        assert!(pushes(&actions).contains_key(&APP), "the app is told too");
        // The kernel confirms: nothing asked twice.
        core.handle(
            t0 + ms(101),
            Event::Mptcp(MptcpEvent::SubflowClosed {
                token: TOKEN,
                local: local(WLAN, 40000),
                remote: server(),
            }),
        );
        assert!(steps(&drain(&mut core)).is_empty());
    }

    #[test]
    fn our_backup_flag_holds_whatever_flag_the_kernel_event_carries() {
        // The kernel's SUB_ESTABLISHED carries the peer's backup bit (0 from a server that
        // never asks for backup), not the one this end joined with.
        let t0 = Instant::now();
        let (mut core, _) = steered(t0);
        up(&mut core, t0 + ms(3), RMNET, 40001, false);
        up(&mut core, t0 + ms(3), BNEP, 40002, false);
        assert!(steps(&drain(&mut core)).is_empty());
        down(&mut core, t0 + ms(100), WLAN, "wlan0", LinkKind::Wifi);
        assert_eq!(
            steps(&drain(&mut core)),
            ["prio rmnet0 primary", "destroy wlan0"]
        );
    }

    #[test]
    fn the_dead_subflow_stays_until_a_usable_one_is_established() {
        let t0 = Instant::now();
        let (mut core, s) = steered(t0);
        assert_eq!(s, ["create rmnet0 backup", "create bnep0 backup"]);
        // wlan0 dies before either backup subflow is established.
        down(&mut core, t0 + ms(1), WLAN, "wlan0", LinkKind::Wifi);
        let s = steps(&drain(&mut core));
        assert!(
            !s.iter().any(|s| s.starts_with("destroy")),
            "the only subflow was closed with nothing to take over: {s:?}"
        );
        // rmnet0's subflow is established, as a backup: promoted, then wlan0's goes.
        up(&mut core, t0 + ms(4), RMNET, 40001, true);
        assert_eq!(
            steps(&drain(&mut core)),
            ["prio rmnet0 primary", "destroy wlan0"]
        );
    }

    #[test]
    fn an_unanswered_creation_is_asked_again_after_one_second() {
        let t0 = Instant::now();
        let (mut core, s) = steered(t0);
        assert_eq!(s, ["create rmnet0 backup", "create bnep0 backup"]);
        // bnep0's join is established; rmnet0's is never answered.
        up(&mut core, t0 + ms(3), BNEP, 40002, true);
        assert!(steps(&drain(&mut core)).is_empty());
        assert_eq!(core.poll_timeout(), Some(t0 + steer::CREATE_RETRY));
        // Other events before then do not ask again.
        core.handle(t0 + ms(999), addr(BNEP));
        assert!(steps(&drain(&mut core)).is_empty());
        let t1 = core.poll_timeout().expect("a retry is due");
        assert_eq!(t1, t0 + steer::CREATE_RETRY);
        core.handle_timeout(t1);
        assert_eq!(steps(&drain(&mut core)), ["create rmnet0 backup"]);
        assert_eq!(core.poll_timeout(), Some(t1 + steer::CREATE_RETRY));
        // Once rmnet0 is gone, nothing waits for its subflow any more.
        down(&mut core, t1 + ms(10), RMNET, "rmnet0", LinkKind::Cellular);
        drain(&mut core);
        core.handle_timeout(t1 + steer::CREATE_RETRY);
        assert!(steps(&drain(&mut core)).is_empty());
        assert_eq!(core.poll_timeout(), None);
    }
}

#[test]
fn a_captive_portal_keeps_a_link_from_being_validated_until_it_answers_204() {
    let t0 = Instant::now();
    let mut core = handset(plain(), true, t0);
    let mut wlan = info(WLAN, "wlan0", LinkKind::Wifi, true);
    wlan.portal = Some(PortalCheck {
        url: "http://198.18.1.1/generate_204".parse().unwrap(),
        expect: 204,
    });
    core.handle(t0, Event::LinkUpdated(wlan));
    subscribe(&mut core, t0, 1, "app");
    let state = |core: &Core, now: Instant, name: &str| {
        core.interfaces(now)
            .into_iter()
            .find(|i| i.name == name)
            .map(|i| i.state)
    };
    let checks = |log: &[(Instant, Action)]| -> Vec<Instant> {
        log.iter()
            .filter_map(|(t, a)| match a {
                Action::CheckPortal { index, url, .. } => {
                    assert_eq!(*index, WLAN);
                    assert_eq!(url.to_string(), "http://198.18.1.1/generate_204");
                    Some(*t)
                }
                _ => None,
            })
            .collect()
    };
    // Echo probes answer everywhere; only wlan0 has a portal check, asked with its first probe.
    let log = simulate(&mut core, t0, t0 + ms(500), |_, _| Some(ms(2)));
    assert_eq!(checks(&log), vec![t0]);
    let now = t0 + ms(500);
    assert_eq!(state(&core, now, "rmnet0"), Some(LinkState::Validated));
    assert_eq!(
        state(&core, now, "wlan0"),
        Some(LinkState::Up),
        "no answer yet"
    );
    // A login page: not validated, and asked again at the idle pace, with a probe.
    core.handle(
        now,
        Event::PortalChecked {
            index: WLAN,
            status: Ok(200),
        },
    );
    assert_eq!(state(&core, now, "wlan0"), Some(LinkState::Up));
    let log = simulate(&mut core, now, t0 + ms(2_600), |_, _| Some(ms(2)));
    let again = checks(&log);
    assert_eq!(again.len(), 1, "{again:?}");
    assert!(again[0] >= t0 + ProbeConfig::default().idle_interval);
    let now = t0 + ms(2_600);
    assert_eq!(state(&core, now, "wlan0"), Some(LinkState::Up));
    // The user logged in: 204, validated, and no more checks.
    core.handle(
        now,
        Event::PortalChecked {
            index: WLAN,
            status: Ok(204),
        },
    );
    assert_eq!(state(&core, now, "wlan0"), Some(LinkState::Validated));
    let log = simulate(&mut core, now, t0 + ms(10_000), |_, _| Some(ms(2)));
    assert!(checks(&log).is_empty());
    // Down and up again: checked anew.
    let mut down = info(WLAN, "wlan0", LinkKind::Wifi, true);
    down.admin_up = false;
    core.handle(t0 + ms(10_000), Event::LinkUpdated(down));
    let mut up = info(WLAN, "wlan0", LinkKind::Wifi, true);
    up.portal = Some(PortalCheck {
        url: "http://198.18.1.1/generate_204".parse().unwrap(),
        expect: 204,
    });
    core.handle(t0 + ms(10_001), Event::LinkUpdated(up));
    let log = simulate(&mut core, t0 + ms(10_001), t0 + ms(10_500), |_, _| {
        Some(ms(2))
    });
    assert_eq!(checks(&log).len(), 1);
    assert_eq!(state(&core, t0 + ms(10_500), "wlan0"), Some(LinkState::Up));
}

mod evidence;
mod flow;
