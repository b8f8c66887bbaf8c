//! Virtual-time tests of the shipped pacing ([`Pacing::Evidence`]): validated once, kept valid
//! by evidence, probed only on suspicion, and what it costs the radios.
use super::*;

/// One simulated handset: probes answered after `rtt` (None: lost), counters as `counters`
/// says; every action logged with its instant.
pub(super) fn sim(
    core: &mut Core,
    from: Instant,
    end: Instant,
    rtt: impl Fn(&str, Instant) -> Option<Duration>,
    counters: impl Fn(&str, Instant) -> (u64, u64),
) -> Vec<(Instant, Action)> {
    sim_multicast(core, from, end, rtt, |name, now| {
        let (rx, tx) = counters(name, now);
        (rx, 0, tx, 0)
    })
}

/// [`sim`] with multicast in the counters: `counters` says (received, of which multicast,
/// sent, of which IPv6 multicast).
fn sim_multicast(
    core: &mut Core,
    from: Instant,
    end: Instant,
    rtt: impl Fn(&str, Instant) -> Option<Duration>,
    counters: impl Fn(&str, Instant) -> (u64, u64, u64, u64),
) -> Vec<(Instant, Action)> {
    let mut now = from;
    let mut replies: Vec<(Instant, u32, u64)> = Vec::new();
    let mut log = Vec::new();
    for _ in 0..200_000 {
        loop {
            let actions = drain(core);
            if actions.is_empty() {
                break;
            }
            for a in actions {
                match &a {
                    Action::SendProbe {
                        index,
                        interface,
                        seq,
                        ..
                    } => {
                        if let Some(d) = rtt(interface, now) {
                            replies.push((now + d, *index, *seq));
                        }
                    }
                    Action::ReadCounters { index, interface } => {
                        let (rx_packets, rx_multicast, tx_packets, tx_multicast) =
                            counters(interface, now);
                        core.handle(
                            now,
                            Event::Counters {
                                index: *index,
                                rx_packets,
                                rx_multicast,
                                tx_packets,
                                tx_multicast,
                            },
                        );
                    }
                    _ => {}
                }
                log.push((now, a));
            }
        }
        let next_reply = replies.iter().map(|r| r.0).min();
        let Some(next) = [core.poll_timeout(), next_reply]
            .into_iter()
            .flatten()
            .min()
            .filter(|n| *n <= end)
        else {
            return log;
        };
        now = next;
        if let Some(pos) = replies.iter().position(|r| r.0 == now) {
            let (_, index, seq) = replies.remove(pos);
            core.handle(now, Event::ProbeReply { index, seq });
        } else {
            core.handle_timeout(now);
        }
    }
    panic!("simulation did not settle");
}

fn probes(log: &[(Instant, Action)], name: &str, from: Instant, to: Instant) -> Vec<Instant> {
    log.iter()
        .filter(|(t, a)| {
            *t >= from
                && *t < to
                && matches!(a, Action::SendProbe { interface, .. } if interface == name)
        })
        .map(|(t, _)| *t)
        .collect()
}

fn shipped(t0: Instant) -> Core {
    handset_with(plain(), true, t0, ProbeConfig::default())
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Counters that never move: nothing but roamd's own probes on any link.
pub(super) fn quiet(_: &str, _: Instant) -> (u64, u64) {
    (0, 0)
}

/// The moves of `client`: each push whose primary differs from the one before.
fn primary_pushes(log: &[(Instant, Action)], client: ClientId) -> Vec<(Instant, String)> {
    let mut v: Vec<(Instant, String)> = Vec::new();
    for (t, a) in log {
        if let Action::Push { client: c, update } = a
            && *c == client
            && let Some(p) = update.decision.primary()
            && v.last().is_none_or(|(_, n)| *n != p.interface)
        {
            v.push((*t, p.interface.clone()));
        }
    }
    v
}

#[test]
fn links_are_validated_once_with_a_burst_then_left_alone_while_evidence_lasts() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    assert_eq!(core.poll_timeout(), None, "no subscriber: no timer");
    subscribe(&mut core, t0, 1, "a");
    // wlan0 receives traffic every second (the session's keep-alives); the others nothing.
    let log = sim(
        &mut core,
        t0,
        t0 + secs(30 * 60),
        |_, _| Some(ms(3)),
        |name, now| {
            let n = now.saturating_duration_since(t0).as_secs();
            if name == "wlan0" { (n, n) } else { (0, 0) }
        },
    );
    for name in ["wlan0", "rmnet0", "bnep0"] {
        let first = probes(&log, name, t0, t0 + secs(1));
        assert_eq!(
            first,
            [t0, t0 + ms(10), t0 + ms(20)],
            "{name}: one burst of 3"
        );
    }
    // wlan0's traffic keeps it valid: never probed again.
    assert!(probes(&log, "wlan0", t0 + secs(1), t0 + secs(1800)).is_empty());
    // rmnet0, a cellular backup whose validation went stale, waits for its radio to be awake
    // anyway; bnep0 (not cellular) is refreshed when stale: once per validity, a burst each.
    assert!(probes(&log, "rmnet0", t0 + secs(1), t0 + secs(1800)).is_empty());
    let bt = probes(&log, "bnep0", t0 + secs(1), t0 + secs(1800));
    assert_eq!(bt.len(), 6, "{bt:?}");
    // Noticed at the next counter reading: within a second of going stale.
    assert!(bt[0] >= t0 + secs(600) && bt[0] < t0 + secs(602), "{bt:?}");
    let view = core.probes(t0 + secs(1800));
    let rm = view.iter().find(|p| p.interface == "rmnet0").unwrap();
    assert_eq!(rm.energy.probes_sent, 3);
    assert_eq!(rm.energy.radio_wakeups, 1, "a burst wakes the radio once");
    let wl = view.iter().find(|p| p.interface == "wlan0").unwrap();
    assert_eq!(wl.readiness, Readiness::Warm);
    assert_eq!(rm.readiness, Readiness::Validated);
    assert!(wl.validated_ms_ago.is_some_and(|ms| ms <= 1_000));
}

#[test]
fn a_stale_cellular_backup_is_refreshed_when_its_radio_is_awake_anyway() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "a");
    // rmnet0 carries someone's traffic from minute 12 on (its counters move).
    let busy = t0 + secs(720);
    let log = sim(
        &mut core,
        t0,
        t0 + secs(730),
        |_, _| Some(ms(3)),
        |name, now| {
            let n = now.saturating_duration_since(busy).as_secs();
            if name == "rmnet0" { (0, n) } else { (0, 0) }
        },
    );
    let later = probes(&log, "rmnet0", t0 + secs(1), t0 + secs(730));
    assert_eq!(later.len(), 3, "{later:?}");
    assert!(later[0] > busy && later[0] <= busy + secs(2), "{later:?}");
    let view = core.probes(t0 + secs(730));
    let rm = view.iter().find(|p| p.interface == "rmnet0").unwrap();
    assert_eq!(
        rm.energy.radio_wakeups, 1,
        "the refresh rode on an awake radio: no new wake-up"
    );
}

#[test]
fn a_stall_report_is_confirmed_by_one_burst_and_a_lying_app_moves_nobody() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "honest");
    subscribe(&mut core, t0, 2, "liar");
    let log = sim(&mut core, t0, t0 + secs(5), |_, _| Some(ms(3)), quiet);
    assert_eq!(primary_pushes(&log, 1).last().unwrap().1, "wlan0");
    // The liar reports wlan0 stalled, again and again; wlan0 answers every probe.
    let t1 = t0 + secs(5);
    let mut moved = Vec::new();
    let mut sent = Vec::new();
    for i in 0..50u64 {
        let t = t1 + ms(100 * i);
        core.request(t, 2, report(Some(5.0), true));
        let log = sim(&mut core, t, t + ms(100), |_, _| Some(ms(3)), quiet);
        sent.extend(probes(&log, "wlan0", t, t + ms(100)));
        moved.extend(primary_pushes(&log, 1));
        moved.extend(primary_pushes(&log, 2));
    }
    assert!(moved.is_empty(), "nobody moves: {moved:?}");
    // One burst per report period, however often it reports.
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(core.interfaces(t1 + secs(5))[2].state, LinkState::Validated);
}

#[test]
fn a_confirmed_stall_turns_the_link_down_for_everyone_within_the_burst() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "a");
    subscribe(&mut core, t0, 2, "b");
    let dies = t0 + secs(5);
    let alive = move |name: &str, now: Instant| (name != "wlan0" || now < dies).then_some(ms(3));
    let _ = sim(&mut core, t0, dies + ms(150), alive, quiet);
    let stalled = dies + ms(150);
    // Nobody probes an idle link: the death goes unseen until a session says so.
    assert_eq!(core.interfaces(stalled)[2].state, LinkState::Validated);
    core.request(stalled, 1, report(None, true));
    let log = sim(&mut core, stalled, stalled + secs(1), alive, quiet);
    for client in [1, 2] {
        let p = primary_pushes(&log, client);
        let (at, _) = p
            .iter()
            .find(|(_, n)| n == "rmnet0")
            .cloned()
            .expect("a move to rmnet0");
        let took = at - stalled;
        // 3 probes 10 ms apart, each given its RTT and margin but at least 50 ms (wlan0
        // answered in 3 ms): 2 x 10 + 50.
        assert!(took <= ms(70), "{took:?}");
    }
}

#[test]
fn sending_without_receiving_is_a_suspicion() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "a");
    let dies = t0 + secs(10);
    // wlan0 transmits all along; after `dies` nothing comes back (counters and probes).
    let log = sim(
        &mut core,
        t0,
        t0 + secs(13),
        move |name, now| (name != "wlan0" || now < dies).then_some(ms(3)),
        move |name, now| {
            let n = now.saturating_duration_since(t0).as_millis() as u64 / 100;
            let rx = now.min(dies).saturating_duration_since(t0).as_millis() as u64 / 100;
            if name == "wlan0" { (rx, n) } else { (0, 0) }
        },
    );
    let p = primary_pushes(&log, 1);
    let (at, name) = p.last().unwrap().clone();
    assert_eq!(name, "rmnet0");
    // Counters are read every second: seen within one, confirmed within the burst.
    assert!(at - dies <= ms(1_000 + 140), "{:?}", at - dies);
}

/// The kernel's IPv6 housekeeping (router solicitations, MLD reports, duplicate address
/// detection) goes out as multicast and gets no unicast answer: on an idle link it is no
/// sign of a path that stopped answering, and costs no burst. The same count of unicast
/// packets sent with nothing back does.
#[test]
fn ipv6_multicast_sent_with_nothing_back_is_no_suspicion() {
    for unicast in [false, true] {
        let t0 = Instant::now();
        let mut core = shipped(t0);
        subscribe(&mut core, t0, 1, "a");
        // Three packets on every link from 10 s on; nothing but the probes' answers comes
        // back.
        let from = t0 + secs(10);
        let log = sim_multicast(
            &mut core,
            t0,
            t0 + secs(20),
            |_, _| Some(ms(3)),
            move |_, now| {
                let tx = if now >= from { 3 } else { 0 };
                (0, 0, tx, if unicast { 0 } else { tx })
            },
        );
        for link in ["wlan0", "rmnet0"] {
            let later = probes(&log, link, from, t0 + secs(20));
            if unicast {
                assert!(
                    !later.is_empty(),
                    "{link}: unicast sent unanswered, no burst"
                );
            } else {
                assert!(
                    later.is_empty(),
                    "{link}: multicast made {} probes",
                    later.len()
                );
            }
        }
    }
}

#[test]
fn a_silently_dead_backup_is_checked_before_sessions_move_to_it() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "a");
    // rmnet0 dies silently at minute 1; nobody probes it. At minute 15 wlan0 goes down.
    let rm_dies = t0 + secs(60);
    let alive =
        move |name: &str, now: Instant| (name != "rmnet0" || now < rm_dies).then_some(ms(3));
    let wl_down = t0 + secs(900);
    let log = sim(&mut core, t0, wl_down, alive, quiet);
    assert!(probes(&log, "rmnet0", t0 + secs(1), wl_down).is_empty());
    let mut i = info(WLAN, "wlan0", LinkKind::Wifi, true);
    i.carrier = false;
    core.handle(wl_down, Event::LinkUpdated(i));
    let log = sim(&mut core, wl_down, wl_down + secs(2), alive, quiet);
    let moves = primary_pushes(&log, 1);
    let names: Vec<&str> = moves.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["rmnet0", "bnep0"], "{moves:?}");
    // The stale backup got a burst the moment it became primary, and failed it.
    let burst = probes(&log, "rmnet0", wl_down, wl_down + secs(2));
    assert_eq!(burst[0], wl_down);
    let gap = moves[1].0 - wl_down;
    assert!(gap <= ms(90), "on bnep0 {gap:?} after wlan0 went down");
}

#[test]
fn a_failed_link_is_rechecked_with_backoff_and_comes_back() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "a");
    let heals = t0 + secs(20);
    let log = sim(
        &mut core,
        t0,
        t0 + secs(40),
        move |name, now| (name != "wlan0" || now >= heals).then_some(ms(3)),
        quiet,
    );
    let rechecks = probes(&log, "wlan0", t0 + ms(100), t0 + secs(40));
    // 2 s, 4 s, 8 s, then 16 s later (after `heals`): answered.
    let gaps: Vec<u64> = rechecks
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    assert_eq!(gaps, [4, 8, 16], "{rechecks:?}");
    assert_eq!(primary_pushes(&log, 1).last().unwrap().1, "wlan0");
}

#[test]
fn a_burst_waits_the_floor_for_a_fast_link_and_the_full_timeout_for_a_slow_one() {
    let t0 = Instant::now();
    let mut core = shipped(t0);
    subscribe(&mut core, t0, 1, "a");
    // wlan0 answers in 2 ms, rmnet0 in 60 ms; then both die and a session reports stalls.
    let dies = t0 + secs(5);
    let rtt = move |name: &str, now: Instant| {
        (now < dies).then_some(if name == "rmnet0" { ms(60) } else { ms(2) })
    };
    let _ = sim(&mut core, t0, dies, rtt, quiet);
    core.request(dies, 1, report(None, true));
    let mut r = report(None, true);
    if let Request::ReportPath { interface, .. } = &mut r {
        *interface = "rmnet0".into();
    }
    core.request(dies, 1, r);
    let log = sim(&mut core, dies, dies + secs(1), rtt, quiet);
    let down = |name: &str| {
        log.iter().find_map(|(t, a)| match a {
            Action::Push { update, .. }
                if update
                    .interfaces
                    .iter()
                    .any(|i| i.name == name && i.state == LinkState::Down) =>
            {
                Some(*t - dies)
            }
            _ => None,
        })
    };
    // 2 x 10 ms + the 50 ms floor (2 ms and its margin are less); rmnet0: 2 x 10 ms + the
    // 100 ms timeout (three samples of 60 ms leave a variation of 17 ms: 60 + 4 x 17 > 100).
    assert_eq!(down("wlan0"), Some(ms(70)));
    assert_eq!(down("rmnet0"), Some(ms(120)));
}

#[test]
fn validate_once_never_probes_a_validated_link_again() {
    let t0 = Instant::now();
    let cfg = ProbeConfig {
        pacing: Pacing::Once,
        ..ProbeConfig::default()
    };
    let mut core = handset_with(plain(), true, t0, cfg);
    subscribe(&mut core, t0, 1, "a");
    core.request(t0 + secs(5), 1, report(None, true));
    let log = sim(&mut core, t0, t0 + secs(3600), |_, _| Some(ms(3)), quiet);
    for name in ["wlan0", "rmnet0", "bnep0"] {
        assert_eq!(probes(&log, name, t0, t0 + secs(3600)).len(), 3, "{name}");
    }
}

/// The MPTCP endpoint plans in `log`, as (interface index, backup) in address order.
fn endpoint_plans(log: &[(Instant, Action)]) -> Vec<(Instant, Vec<(u32, bool)>)> {
    log.iter()
        .filter_map(|(t, a)| match a {
            Action::Mptcp(p) => Some((
                *t,
                p.endpoints.values().map(|e| (e.index, e.backup)).collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn a_suspect_primarys_backups_carry_data_until_the_bursts_verdict() {
    for dead in [false, true] {
        let t0 = Instant::now();
        let mut core = shipped(t0);
        core.enable_mptcp(t0);
        subscribe(&mut core, t0, 1, "a");
        let dies = t0 + secs(5);
        let rtt = move |name: &str, now: Instant| {
            (!dead || name != "wlan0" || now < dies).then_some(ms(3))
        };
        let _ = sim(&mut core, t0, dies + ms(150), rtt, quiet);
        let stalled = dies + ms(150);
        core.request(stalled, 1, report(None, true));
        let log = sim(&mut core, stalled, stalled + secs(1), rtt, quiet);
        let plans = endpoint_plans(&log);
        let backups = [(WLAN, false), (RMNET, true), (BNEP, true)];
        let all_on = [(WLAN, false), (RMNET, false), (BNEP, false)];
        // At the report itself: the backups' endpoints lose `backup` (MP_PRIO to the peer).
        assert_eq!(
            plans.first(),
            Some(&(stalled, all_on.to_vec())),
            "dead {dead}: {plans:?}"
        );
        let (at, last) = plans.last().cloned().expect("a verdict");
        if dead {
            // Down: wlan0's endpoint goes, rmnet0 carries, bnep0 backs up again.
            assert_eq!(last, [(RMNET, false), (BNEP, true)], "{plans:?}");
            assert!(at - stalled <= ms(70), "{:?}", at - stalled);
        } else {
            // Answered: back as they were, one probe's round trip later.
            assert_eq!(last, backups, "{plans:?}");
            assert!(at - stalled <= ms(10), "{:?}", at - stalled);
            assert_eq!(plans.len(), 2, "{plans:?}");
        }
    }
}
