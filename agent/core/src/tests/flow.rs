//! Virtual-time tests of flow-size rules: a subscriber that reports its flow is told the
//! thresholds of its app, its decision is made again when its bytes reach one (a `subscribe`
//! with the new flow) or its age does (no message: the core wakes up), and its MPTCP
//! connection is steered by the new decision.
use super::*;

const REPORTER: ClientId = 11;
const QUIET: ClientId = 12;
const APP: &str = "com.example.backup";
const TOKEN: u32 = 0x0bad_cafe;

fn policy(after: &str) -> Policy {
    Policy::parse(&format!(
        "link wifi = kind wifi\nlink cell = kind cellular\n\
         app \"{APP}\" {{ start on cell then add wifi after {after} }}\n"
    ))
    .expect("a valid policy")
}

fn flow(bytes: u64, age_ms: u64) -> Option<Flow> {
    Some(Flow { bytes, age_ms })
}

/// `client` subscribes as [`APP`] (connecting it first when `connect`), with `flow`.
fn subscribe_flow(core: &mut Core, now: Instant, client: ClientId, f: Option<Flow>) {
    core.request(
        now,
        client,
        Request::Subscribe {
            id: 3,
            app: None,
            flow: f,
        },
    );
}

/// The updates among `actions`, by client.
fn updates(actions: &[Action]) -> BTreeMap<ClientId, Update> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Push { client, update } => Some((*client, (**update).clone())),
            _ => None,
        })
        .collect()
}

fn names(u: &Update) -> Vec<&str> {
    u.decision
        .paths
        .iter()
        .map(|p| p.interface.as_str())
        .collect()
}

/// A handset (wlan0, rmnet0; bnep0 matches no class) with a reporter at zero and a
/// subscriber of the same app that reports nothing, both told their first decision.
fn two_subscribers(after: &str, t0: Instant) -> Core {
    let mut core = handset(policy(after), false, t0);
    core.connect(REPORTER, peer(APP));
    core.connect(QUIET, peer(APP));
    subscribe_flow(&mut core, t0, REPORTER, flow(0, 0));
    subscribe_flow(&mut core, t0, QUIET, None);
    let first = updates(&drain(&mut core));
    assert_eq!(names(&first[&REPORTER]), ["rmnet0"]);
    assert_eq!(names(&first[&QUIET]), ["rmnet0"]);
    assert_eq!(
        first[&QUIET].flow_thresholds, None,
        "a subscriber that reports no flow is told no thresholds"
    );
    core
}

#[test]
fn a_reporter_is_told_its_thresholds_and_gets_wifi_when_its_bytes_reach_one() {
    let t0 = Instant::now();
    let mut core = handset(policy("1MB"), false, t0);
    core.connect(REPORTER, peer(APP));
    subscribe_flow(&mut core, t0, REPORTER, flow(0, 0));
    let u = updates(&drain(&mut core));
    assert_eq!(
        u[&REPORTER].flow_thresholds,
        Some(FlowThresholds {
            bytes: vec![1_000_000],
            age_ms: vec![],
        })
    );
    let mut core = two_subscribers("1MB", t0);
    // Below the threshold: answered, and nothing pushed (the decision did not change).
    subscribe_flow(&mut core, t0 + ms(40), REPORTER, flow(999_999, 40));
    let a = drain(&mut core);
    assert!(
        matches!(
            &a[..],
            [Action::Reply {
                client: REPORTER,
                reply: roam_ipc::proto::Reply::Subscribed { .. }
            }]
        ),
        "{a:?}"
    );
    // At it: WiFi is added, primary (declared first), cellular its backup; only the
    // reporter's decision moved.
    subscribe_flow(&mut core, t0 + ms(80), REPORTER, flow(1_000_000, 80));
    let u = updates(&drain(&mut core));
    assert_eq!(u.keys().copied().collect::<Vec<_>>(), [REPORTER]);
    assert_eq!(names(&u[&REPORTER]), ["wlan0", "rmnet0"]);
    assert_eq!(
        u[&REPORTER].decision.paths[1].role,
        roam_policy::Role::Backup
    );
    // Nothing to wake up for: the policy names no age.
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn the_age_is_counted_by_the_core_and_crossing_it_needs_no_message() {
    let t0 = Instant::now();
    let mut core = two_subscribers("30s", t0);
    // The reporter said its flow began 2 s ago: 28 s to go.
    subscribe_flow(&mut core, t0 + ms(5_000), REPORTER, flow(12_345, 2_000));
    assert!(updates(&drain(&mut core)).is_empty());
    let due = t0 + ms(33_000);
    assert_eq!(core.poll_timeout(), Some(due));
    core.handle_timeout(due - ms(1));
    assert!(updates(&drain(&mut core)).is_empty(), "not yet");
    core.handle_timeout(due);
    let u = updates(&drain(&mut core));
    assert_eq!(u.keys().copied().collect::<Vec<_>>(), [REPORTER]);
    assert_eq!(names(&u[&REPORTER]), ["wlan0", "rmnet0"]);
    assert_eq!(
        core.poll_timeout(),
        None,
        "past its last threshold, the flow wakes nobody"
    );
}

#[test]
fn a_reload_that_moves_the_threshold_tells_the_reporter() {
    let t0 = Instant::now();
    let mut core = two_subscribers("1MB", t0);
    subscribe_flow(&mut core, t0 + ms(10), REPORTER, flow(600_000, 10));
    assert!(updates(&drain(&mut core)).is_empty());
    // 500 kB now: the reporter's 600 kB is past it.
    core.handle(t0 + ms(20), Event::PolicyReplaced(policy("500kB")));
    let u = updates(&drain(&mut core));
    assert_eq!(names(&u[&REPORTER]), ["wlan0", "rmnet0"]);
    assert_eq!(
        u[&REPORTER]
            .flow_thresholds
            .as_ref()
            .map(|t| t.bytes.clone()),
        Some(vec![500_000])
    );
    assert!(!u.contains_key(&QUIET), "{u:?}");
}

#[test]
fn a_steered_connection_gets_a_subflow_on_wifi_when_the_flow_adds_it() {
    let t0 = Instant::now();
    let mut core = handset(policy("1MB"), false, t0);
    core.enable_steering(Ok(()));
    core.connect(REPORTER, peer(APP));
    subscribe_flow(&mut core, t0, REPORTER, flow(0, 0));
    drain(&mut core);
    let rmnet = SocketAddr::from(([198, 18, RMNET as u8, 2], 40000));
    let server = SocketAddr::from(([198, 19, 0, 1], 4433));
    core.handle(
        t0,
        Event::Mptcp(MptcpEvent::Connection {
            token: TOKEN,
            local: rmnet,
            remote: server,
        }),
    );
    core.request(
        t0,
        REPORTER,
        Request::RegisterMptcp {
            id: 4,
            token: TOKEN,
        },
    );
    let subflows = |a: &[Action]| -> Vec<SubflowCommand> {
        a.iter()
            .filter_map(|a| match a {
                Action::Subflow { command, .. } => Some(*command),
                _ => None,
            })
            .collect()
    };
    assert!(
        subflows(&drain(&mut core)).is_empty(),
        "below the threshold the decision has cellular alone: nothing to add"
    );
    subscribe_flow(&mut core, t0 + ms(90), REPORTER, flow(1_048_576, 90));
    let a = drain(&mut core);
    let wlan: IpAddr = IpAddr::from([198, 18, WLAN as u8, 2]);
    let made = subflows(&a);
    // Roles first (cellular is the backup now), then the subflow on WiFi, the new primary.
    assert!(
        matches!(made[..], [
            SubflowCommand::SetBackup { local: l, backup: true, .. },
            SubflowCommand::Create { local, remote, backup: false, .. },
        ] if l == rmnet && local.ip() == wlan && remote == server),
        "{made:?}"
    );
    // The subflows move before the app hears of the decision.
    let last_subflow = a.iter().rposition(|a| matches!(a, Action::Subflow { .. }));
    let push = a.iter().position(|a| matches!(a, Action::Push { .. }));
    assert!(last_subflow < push, "{a:?}");
    // Once it is up, nothing more: both paths have their subflow and role.
    core.handle(
        t0 + ms(95),
        Event::Mptcp(MptcpEvent::SubflowUp {
            token: TOKEN,
            local: SocketAddr::new(wlan, 40001),
            remote: server,
            backup: false,
        }),
    );
    assert_eq!(subflows(&drain(&mut core)), []);
}
