//! roamd in a network namespace: classification, link loss, silent failure, IPC robustness,
//! permissions and reload. Each test makes its own namespaces (see `common`); every wait is on
//! an event (a ready line, a pushed update, a reply) with a deadline, never a sleep.
mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Handset, LinkWatcher, can_run, paths, state_of, wait_update};
use roam_agent::ipc::proto::{self, Reply, Request};
use roam_policy::Interface;

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn classifies_phone_interfaces_and_follows_link_down_and_address_removal() {
    if !can_run("classifies_phone_interfaces_and_follows_link_down_and_address_removal") {
        return;
    }
    let hs = Handset::start("");
    let (code, out, err) = hs.roamctl(None, &["links", "--json"]);
    assert_eq!(code, 0, "{err}");
    let links: Vec<Interface> =
        serde_json::from_str(out.trim()).expect("links --json is an interface array");
    let kinds: Vec<(&str, &str)> = links
        .iter()
        .map(|i| (i.name.as_str(), i.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("bnep0", "bluetooth"),
            ("rmnet0", "cellular"),
            ("wlan0", "wifi")
        ]
    );

    let mut sub = hs.subscriber(None);
    let (first, _) = wait_update(&mut sub, WAIT, "wlan0 is primary", |u| {
        paths(u).first() == Some(&"wlan0")
    });
    assert_eq!(paths(&first), ["wlan0", "rmnet0", "bnep0"]);

    let t = Instant::now();
    hs.ip_h(&["link", "set", "wlan0", "down"]);
    let (u, at) = wait_update(&mut sub, WAIT, "wlan0 down and off the decision", |u| {
        state_of(u, "wlan0") == Some("down") && !paths(u).contains(&"wlan0")
    });
    assert_eq!(paths(&u), ["rmnet0", "bnep0"]);
    eprintln!(
        "link down -> new decision at the subscriber: {:?} (includes running `ip`)",
        at - t
    );

    hs.ip_h(&["link", "set", "wlan0", "up"]);
    wait_update(&mut sub, WAIT, "wlan0 back first", |u| {
        paths(u).first() == Some(&"wlan0")
    });

    let t = Instant::now();
    hs.ip_h(&["addr", "del", "198.18.1.2/24", "dev", "wlan0"]);
    let (u, at) = wait_update(&mut sub, WAIT, "wlan0 down after address removal", |u| {
        state_of(u, "wlan0") == Some("down")
    });
    assert_eq!(paths(&u), ["rmnet0", "bnep0"]);
    eprintln!(
        "address removal -> new decision: {:?} (includes running `ip`)",
        at - t
    );
}

#[test]
fn a_silent_blackhole_turns_the_link_down_within_the_window() {
    if !can_run("a_silent_blackhole_turns_the_link_down_within_the_window") {
        return;
    }
    if !roam_tests::privilege::require_tool(
        "a_silent_blackhole_turns_the_link_down_within_the_window",
        "nft",
        "nftables",
    ) {
        return;
    }
    // The periodic pace finds a silent link with nobody sending; the shipped evidence pace
    // needs a session's suspicion first (`a_stall_report_...` below).
    let hs = Handset::start("[probe]\npacing = \"periodic\"\n");
    let mut sub = hs.subscriber(None);
    wait_update(&mut sub, WAIT, "wlan0 validated by probes", |u| {
        state_of(u, "wlan0") == Some("validated") && paths(u).first() == Some(&"wlan0")
    });
    // Drop the probes from wlan0 in the server: the link stays up, only traffic dies.
    let t = Instant::now();
    hs.s.exec(
        "nft",
        &[
            "add table inet roamt; add chain inet roamt in { type filter hook input priority 0; }; \
           add rule inet roamt in ip saddr 198.18.1.2 drop",
        ],
    )
    .unwrap();
    let (u, at) = wait_update(&mut sub, WAIT, "wlan0 down by silence", |u| {
        state_of(u, "wlan0") == Some("down")
    });
    assert_eq!(paths(&u).first(), Some(&"rmnet0"));
    let took = at - t;
    eprintln!(
        "silent blackhole -> link down at the subscriber: {took:?} (3 missed probes, 50 ms apart, 100 ms timeout)"
    );
    // 3 * 50 ms + 100 ms is the bound in the core; allow for `nft` and a busy CI machine.
    assert!(
        took < Duration::from_millis(1_000),
        "{took:?}\n{}",
        hs.log()
    );
}

#[test]
fn a_malformed_frame_costs_only_that_client_its_connection() {
    if !can_run("a_malformed_frame_costs_only_that_client_its_connection") {
        return;
    }
    let hs = Handset::start("");
    let mut good = hs.subscriber(None);
    wait_update(&mut good, WAIT, "first update", |_| true);

    let hello = |s: &mut UnixStream| {
        proto::write_frame(s, &Request::Hello { version: 1 }).unwrap();
        let r: Reply = proto::read_frame(s).unwrap();
        assert!(matches!(r, Reply::Hello { .. }), "{r:?}");
    };
    let bad_inputs: [(&str, Vec<u8>, &str); 4] = [
        (
            "oversized length",
            vec![0xff, 0xff, 0xff, 0xff],
            "bad_frame",
        ),
        ("zero length", vec![0, 0, 0, 0], "bad_frame"),
        (
            "not JSON",
            [&[0, 0, 0, 5][..], b"{{{{{"].concat(),
            "bad_request",
        ),
        (
            "unknown request",
            proto::encode(&serde_json::json!({"type": "shutdown", "id": 1})),
            "bad_request",
        ),
    ];
    for (what, bytes, code) in bad_inputs {
        let mut s = UnixStream::connect(hs.socket()).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        hello(&mut s);
        s.write_all(&bytes).unwrap();
        match proto::read_frame::<Reply>(&mut s) {
            Ok(Reply::Error { code: c, .. }) => assert_eq!(c, code, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        let mut rest = Vec::new();
        let n = s
            .read_to_end(&mut rest)
            .expect("the agent closes the connection");
        assert_eq!(n, 0, "{what}: nothing after the error, then EOF");
    }
    // A frame before hello, and a wrong version, are refused the same way.
    let mut s = UnixStream::connect(hs.socket()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    proto::write_frame(&mut s, &Request::Hello { version: 99 }).unwrap();
    assert!(
        matches!(proto::read_frame::<Reply>(&mut s), Ok(Reply::Error { code, .. }) if code == "version")
    );

    // The well-behaved client is still served and still told about changes.
    match good.call(|id| Request::Status { id }).unwrap() {
        Reply::Status { status, .. } => assert_eq!(status.subscribers, 1),
        other => panic!("{other:?}"),
    }
    hs.ip_h(&["link", "set", "bnep0", "down"]);
    wait_update(&mut good, WAIT, "bnep0 down", |u| {
        state_of(u, "bnep0") == Some("down")
    });
}

#[test]
fn another_uid_can_neither_reload_nor_read_another_apps_decision() {
    if !can_run("another_uid_can_neither_reload_nor_read_another_apps_decision") {
        return;
    }
    let nobody = 65534;
    // gid 4242 is the admin group; uid 4243 is in it, nobody is not.
    let hs = Handset::start(&format!(
        "admin_group = 4242\n[[app]]\nuid = {nobody}\nid = \"com.example.nobody\"\n"
    ));
    let denied = |args: &[&str]| {
        let (code, out, err) = hs.roamctl(Some(nobody), args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains("denied"), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
    };
    denied(&["reload"]);
    denied(&["explain", "--app", "com.example.other", "--json"]);
    denied(&["watch", "--app", "com.example.other", "--count", "1"]);

    // Its own decision it may read, under the app id the config gives its uid.
    let (code, out, err) = hs.roamctl(Some(nobody), &["explain", "--json"]);
    assert_eq!(code, 0, "{err}");
    let d: roam_policy::Decision = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(d.app.as_deref(), Some("com.example.nobody"));
    assert_eq!(d.paths[0].interface, "wlan0");
    // Status without the admin detail.
    let (code, out, _) = hs.roamctl(Some(nobody), &["status", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        v.get("clients").is_none() && v.get("probes").is_none(),
        "{v}"
    );
    // A member of the admin group may reload and read another app's decision.
    let (code, _, err) = hs.roamctl_as(Some((4243, 4242)), &["reload"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = hs.roamctl_as(
        Some((4243, 4242)),
        &["explain", "--app", "com.example.nobody", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"app\":\"com.example.nobody\""), "{out}");
    // Root may do all of it.
    let (code, out, err) = hs.roamctl(None, &["explain", "--app", "com.example.nobody", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"app\":\"com.example.nobody\""), "{out}");
    let (code, _, err) = hs.roamctl(None, &["reload"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn an_invalid_reload_keeps_the_old_policy() {
    if !can_run("an_invalid_reload_keeps_the_old_policy") {
        return;
    }
    let hs = Handset::start("");
    let mut sub = hs.subscriber(Some("com.example.voip"));
    wait_update(&mut sub, WAIT, "wlan0 first", |u| {
        paths(u).first() == Some(&"wlan0")
    });

    std::fs::write(
        hs.policy(),
        "link wifi = kind wifi\ndefault {\n  prefer wifi over cel\n}\n",
    )
    .unwrap();
    let (code, out, err) = hs.roamctl(None, &["reload"]);
    assert_eq!(code, 1, "{out}{err}");
    let file = hs.policy().display().to_string();
    assert!(
        err.contains(&format!("{file}:3:")),
        "the error names file and line: {err}"
    );
    assert!(err.contains("stays in force"), "{err}");
    let (_, out, _) = hs.roamctl(None, &["explain", "--app", "com.example.voip", "--json"]);
    assert!(
        out.contains(r#""paths":[{"interface":"wlan0""#),
        "old policy still decides: {out}"
    );

    // A valid policy through `roamctl reload`...
    std::fs::write(
        hs.policy(),
        common::POLICY.replace(
            "prefer wifi over cell over bt",
            "prefer cell over wifi over bt",
        ),
    )
    .unwrap();
    let (code, _, err) = hs.roamctl(None, &["reload"]);
    assert_eq!(code, 0, "{err}");
    wait_update(&mut sub, WAIT, "rmnet0 first after reload", |u| {
        paths(u).first() == Some(&"rmnet0")
    });
    // ...and through SIGHUP.
    std::fs::write(
        hs.policy(),
        common::POLICY.replace(
            "prefer wifi over cell over bt",
            "prefer bt over wifi over cell",
        ),
    )
    .unwrap();
    // SAFETY: kill(2) on the pid of the roamd this test started.
    assert_eq!(
        unsafe { libc::kill(hs.roamd_pid() as i32, libc::SIGHUP) },
        0
    );
    wait_update(&mut sub, WAIT, "bnep0 first after SIGHUP", |u| {
        paths(u).first() == Some(&"bnep0")
    });
}

#[test]
fn watch_prints_updates_and_stops_at_count() {
    if !can_run("watch_prints_updates_and_stops_at_count") {
        return;
    }
    let hs = Handset::start("");
    let (code, out, err) = hs.roamctl(None, &["watch", "--count", "1", "--json"]);
    assert_eq!(code, 0, "{err}");
    let u: roam_agent::core::Update = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(u.decision.app.as_deref(), Some("uid:0"));
    assert_eq!(u.interfaces.len(), 3);
    let (code, out, _) = hs.roamctl(None, &["links"]);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap_or("");
    assert!(
        header.starts_with("NAME    KIND       STATE"),
        "aligned table: {out}"
    );
}

#[test]
fn policy_routing_is_applied_and_removed_exactly_also_after_a_crash() {
    if !can_run("policy_routing_is_applied_and_removed_exactly_also_after_a_crash") {
        return;
    }
    let mut hs = Handset::new("");
    hs.ip_h(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.1.1",
        "dev",
        "wlan0",
        "metric",
        "100",
    ]);
    hs.ip_h(&[
        "route",
        "add",
        "default",
        "via",
        "198.18.2.1",
        "dev",
        "rmnet0",
        "metric",
        "200",
    ]);
    let before = hs.kernel_routing();
    let route_get = |hs: &Handset, args: &[&str]| {
        let mut all = vec!["route", "get", "198.18.200.1"];
        all.extend_from_slice(args);
        hs.h.ip(&all).unwrap()
    };
    assert!(
        route_get(&hs, &["from", "198.18.2.2"]).contains("dev wlan0"),
        "main table alone"
    );

    // rmnet0 backs wlan0 up: roamd's copy of its routes carries the failover window
    // (`BACKUP_INITCWND`), wlan0's none. Waited for: the links' first figures come in first.
    let window = format!("initcwnd {}", roam_agent::core::BACKUP_INITCWND);
    let table_of = |hs: &Handset, dev: &str| {
        hs.h.ip(&["route", "show", "table", "all", "dev", dev, "proto", "177"])
            .unwrap()
    };
    let settled = |hs: &Handset, backup_window: bool| {
        // Woken by the kernel's route notifications (`ip monitor route`, started before the
        // first look so no change falls between), not by a timer; bounded by the failover
        // window (3 s) and a loaded machine's margin.
        let mut monitor = std::process::Command::new("ip")
            .args(["-n", hs.h.name(), "monitor", "route"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, changes) = std::sync::mpsc::channel();
        let out = monitor.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for _ in std::io::BufReader::new(out).lines() {
                if tx.send(()).is_err() {
                    break;
                }
            }
        });
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while table_of(hs, "rmnet0").contains(&window) != backup_window {
            let left = until.saturating_duration_since(std::time::Instant::now());
            if changes.recv_timeout(left).is_err() {
                break;
            }
        }
        let _ = monitor.kill();
        let _ = monitor.wait();
        hs.kernel_routing()
    };

    hs.start_roamd(&[]);
    let during = settled(&hs, true);
    let rmnet = table_of(&hs, "rmnet0");
    assert!(
        rmnet.contains("default via 198.18.2.1") && rmnet.contains(&window),
        "{rmnet}"
    );
    assert!(!table_of(&hs, "wlan0").contains("initcwnd"), "{during}");
    assert!(during.contains("from 198.18.2.2 lookup"), "{during}");
    assert!(during.contains("proto 177"), "{during}");
    // A socket bound to rmnet0's address leaves through rmnet0; unbound traffic still
    // follows the main table.
    assert!(route_get(&hs, &["from", "198.18.2.2"]).contains("dev rmnet0"));
    assert!(route_get(&hs, &[]).contains("dev wlan0"));

    // A second roamd on the same socket refuses to start and leaves the first one's work.
    let second =
        hs.h.command(env!("CARGO_BIN_EXE_roamd"))
            .arg("--socket")
            .arg(hs.socket())
            .output()
            .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another roamd is listening there"), "{err}");
    assert_eq!(hs.kernel_routing(), during);
    let (code, _, err) = hs.roamctl(None, &["status"]);
    assert_eq!(code, 0, "the first roamd still answers: {err}");

    // wlan0's carrier goes: rmnet0 is primary. It keeps the window for the failover
    // (`FAILOVER_WINDOW`), then its routes get the kernel's window back, replaced in place
    // (never missing); wlan0 returns and rmnet0 backs it up again.
    hs.s.ip(&["link", "set", "swlan0", "down"]).unwrap();
    let cut = std::time::Instant::now();
    let promoted = settled(&hs, false);
    assert!(
        cut.elapsed() >= roam_agent::core::FAILOVER_WINDOW,
        "rmnet0 lost the failover window after {:?}",
        cut.elapsed()
    );
    let rmnet = table_of(&hs, "rmnet0");
    assert!(
        rmnet.contains("default via 198.18.2.1") && !rmnet.contains("initcwnd"),
        "{promoted}"
    );
    hs.s.ip(&["link", "set", "swlan0", "up"]).unwrap();
    assert_eq!(settled(&hs, true), during);

    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(
        hs.kernel_routing(),
        before,
        "a clean stop leaves the kernel as it was"
    );

    hs.start_roamd(&[]);
    hs.stop_roamd(libc::SIGKILL);
    let crashed = hs.kernel_routing();
    assert_ne!(crashed, before, "a killed roamd leaves its rules behind");

    hs.start_roamd(&["--dry-run"]);
    assert_eq!(hs.kernel_routing(), crashed, "--dry-run changes nothing");
    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(
        hs.kernel_routing(),
        crashed,
        "--dry-run changes nothing, also on exit"
    );

    hs.start_roamd(&[]);
    assert_eq!(
        settled(&hs, true),
        during,
        "the restart replaced, not duplicated"
    );
    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(hs.kernel_routing(), before);
}

#[test]
fn mptcp_endpoints_follow_the_default_decision_and_are_removed_exactly() {
    if !can_run("mptcp_endpoints_follow_the_default_decision_and_are_removed_exactly") {
        return;
    }
    let mut hs = Handset::new("");
    // Someone else's endpoint, outside roamd's ids: it must survive everything.
    hs.ip_h(&[
        "mptcp",
        "endpoint",
        "add",
        "198.18.3.2",
        "id",
        "5",
        "signal",
        "dev",
        "bnep0",
    ]);
    let endpoints = |hs: &Handset| {
        let mut v: Vec<String> =
            hs.h.ip(&["mptcp", "endpoint", "show"])
                .unwrap()
                .lines()
                .map(|l| l.trim().to_owned())
                .collect();
        v.sort();
        v
    };
    // The kernel sends no notification when endpoints change, and roamd applies them from a
    // worker thread: read the table again until it matches, within the deadline.
    let wait_endpoints = |hs: &Handset, what: &str, pred: &dyn Fn(&[String]) -> bool| {
        let end = Instant::now() + WAIT;
        loop {
            let v = endpoints(hs);
            if pred(&v) {
                return v;
            }
            assert!(
                Instant::now() < end,
                "endpoints never {what}: {v:?}\n{}",
                hs.log()
            );
            std::thread::yield_now();
        }
    };
    let has = |v: &[String], e: &str| v.iter().any(|x| x == e);
    let before = endpoints(&hs);
    hs.start_roamd(&[]);
    let during = wait_endpoints(&hs, "set up", &|v| {
        has(v, "198.18.1.2 id 200 subflow dev wlan0")
            && has(v, "198.18.2.2 id 201 subflow backup dev rmnet0")
    });
    assert!(
        during
            .iter()
            .any(|e| e.starts_with("198.18.3.2 id 5 signal")),
        "{during:?}"
    );

    // wlan0 dies: its endpoint goes, rmnet0's stops being a backup.
    let mut sub = hs.subscriber(None);
    wait_update(&mut sub, WAIT, "wlan0 primary", |u| {
        paths(u).first() == Some(&"wlan0")
    });
    hs.ip_h(&["link", "set", "wlan0", "down"]);
    wait_update(&mut sub, WAIT, "rmnet0 primary", |u| {
        paths(u).first() == Some(&"rmnet0")
    });
    wait_endpoints(&hs, "moved off wlan0", &|v| {
        has(v, "198.18.2.2 id 201 subflow dev rmnet0")
            && !v.iter().any(|e| e.starts_with("198.18.1.2 "))
    });

    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(
        endpoints(&hs),
        before,
        "a clean stop leaves only what was there"
    );
    hs.ip_h(&["link", "set", "wlan0", "up"]);
    hs.start_roamd(&[]);
    wait_endpoints(&hs, "set up again", &|v| v.len() > before.len());
    hs.stop_roamd(libc::SIGKILL);
    let crashed = endpoints(&hs);
    assert_ne!(crashed, before, "a killed roamd leaves its endpoints");
    hs.start_roamd(&["--dry-run"]);
    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(endpoints(&hs), crashed, "--dry-run changes nothing");
    hs.start_roamd(&[]);
    hs.stop_roamd(libc::SIGTERM);
    assert_eq!(
        endpoints(&hs),
        before,
        "the next start removed what the killed one left"
    );
}

#[test]
fn reaction_latency_from_kernel_notification_to_subscriber() {
    if !can_run("reaction_latency_from_kernel_notification_to_subscriber") {
        return;
    }
    // ROAM_TEST_EXTRA adds config lines (e.g. `[mptcp]\nenabled = false`) to measure the
    // agent without an enforcer.
    let hs = Handset::start(
        &std::env::var("ROAM_TEST_EXTRA")
            .unwrap_or_default()
            .replace("\\n", "\n"),
    );
    let mut sub = hs.subscriber(None);
    wait_update(&mut sub, WAIT, "wlan0 primary", |u| {
        paths(u).first() == Some(&"wlan0")
    });

    let watcher = LinkWatcher::start(&hs.h, "wlan0").unwrap();

    let flaps = 40;
    let mut lat = Vec::new();
    for _ in 0..flaps {
        for (up, word) in [(false, "down"), (true, "up")] {
            watcher.drain();
            hs.ip_h(&["link", "set", "wlan0", word]);
            let (_, at) = wait_update(&mut sub, WAIT, "wlan0 change", |u| {
                (paths(u).first() == Some(&"wlan0")) == up
            });
            // The first notification of the new state is the one that triggered the change.
            let kernel_at = watcher.first(up, WAIT).unwrap();
            lat.push(at.saturating_duration_since(kernel_at));
        }
    }
    drop(watcher);
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    eprintln!(
        "link change -> decision at the subscriber over {} changes: p50 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );
    // A bound for a debug build on a busy two-core CI machine; the figures are printed.
    assert!(pct(0.99) < Duration::from_millis(100), "{lat:?}");
}

#[test]
fn one_change_reaches_a_thousand_subscribers() {
    if !can_run("one_change_reaches_a_thousand_subscribers") {
        return;
    }
    let hs = Handset::start("");
    let n = 1000;
    // A thousand client sockets plus the test's own descriptors outgrow a 1024 soft limit:
    // lift it to the hard one (roamd lifts its own).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let mut subs: Vec<_> = (0..n).map(|_| hs.subscriber(None)).collect();
    for s in &mut subs {
        wait_update(s, WAIT, "first update", |u| {
            paths(u).first() == Some(&"wlan0")
        });
    }
    let watcher = LinkWatcher::start(&hs.h, "wlan0").unwrap();
    hs.ip_h(&["link", "set", "wlan0", "down"]);
    let mut last = Instant::now();
    for s in &mut subs {
        let (_, at) = wait_update(s, WAIT, "rmnet0 primary", |u| {
            paths(u).first() == Some(&"rmnet0")
        });
        last = at;
    }
    let kernel_at = watcher.first(false, WAIT).unwrap();
    drop(watcher);
    let took = last.saturating_duration_since(kernel_at);
    eprintln!("one link change -> decision read by all {n} subscribers: {took:?}");
    // A bound for a debug build on a busy two-core CI machine; the figure is printed.
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn the_reflector_answers_only_probes_and_never_more_than_it_got() {
    if !can_run("the_reflector_answers_only_probes_and_never_more_than_it_got") {
        return;
    }
    use roam_agent::probe::wire::{LEN, Probe};
    let hs = Handset::new("");
    // From the handset, to the reflector the fixture runs in the server namespace.
    let got =
        hs.h.run(|| {
            let s = std::net::UdpSocket::bind("198.18.1.2:0").unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            let to = "198.18.1.1:7777";
            s.send_to(b"hello", to).unwrap();
            s.send_to(
                &Probe {
                    reply: true,
                    token: 1,
                    seq: 1,
                }
                .emit(),
                to,
            )
            .unwrap();
            let mut long = Probe {
                reply: false,
                token: 1,
                seq: 2,
            }
            .emit()
            .to_vec();
            long.extend_from_slice(&[0; 1000]);
            s.send_to(&long, to).unwrap();
            let req = Probe {
                reply: false,
                token: 7,
                seq: 3,
            };
            s.send_to(&req.emit(), to).unwrap();
            let mut buf = [0u8; 2048];
            let n = s.recv(&mut buf).expect("a reply to the one valid probe");
            (n, Probe::parse(&buf[..n]), req)
        })
        .unwrap();
    let (n, parsed, req) = got;
    // UDP between two veths keeps order: the first reply is to the valid probe, so nothing
    // before it was answered.
    assert_eq!(n, LEN);
    assert_eq!(parsed, Some(Probe { reply: true, ..req }));
}

/// A tiny HTTP server in a namespace: answers every request with `status` (changeable while it
/// runs) and reports each request's line and peer. Stops when dropped.
struct HttpResponder {
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl HttpResponder {
    fn start(
        ns: &roam_tests::netns::Netns,
        listen: &str,
        status: u16,
    ) -> (
        std::sync::mpsc::Receiver<(String, std::net::SocketAddr)>,
        HttpResponder,
    ) {
        use std::io::BufRead;
        use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
        let listen: std::net::SocketAddr = listen.parse().unwrap();
        let status = std::sync::Arc::new(AtomicU16::new(status));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (status2, stop2) = (status.clone(), stop.clone());
        let thread = ns.spawn("http-responder", move || {
            let listener = std::net::TcpListener::bind(listen)?;
            // The timeout only lets the thread see `stop`.
            socket2::SockRef::from(&listener)
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let end = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                let Ok((mut conn, peer)) = listener.accept() else {
                    continue;
                };
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut line = String::new();
                let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
                let _ = reader.read_line(&mut line);
                let code = status2.load(Ordering::Relaxed);
                let body = if code == 204 {
                    ""
                } else {
                    "<html><form>log in to the hotel WiFi</form></html>"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} Whatever\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tx.send((line.trim_end().to_owned(), peer));
            }
            Ok(())
        })
        .unwrap();
        ready_rx.recv().unwrap();
        (
            rx,
            HttpResponder {
                status,
                stop,
                thread: Some(thread),
            },
        )
    }

    fn set_status(&self, code: u16) {
        self.status
            .store(code, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for HttpResponder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_captive_portal_keeps_wifi_unvalidated_until_it_answers_204() {
    if !can_run("a_captive_portal_keeps_wifi_unvalidated_until_it_answers_204") {
        return;
    }
    let mut hs = Handset::new(
        "[[interface]]\nname = \"wlan0\"\nportal_url = \"http://198.18.1.1:8080/generate_204\"\n",
    );
    // A hotel WiFi: the portal answers its login page (200) to everything.
    let (requests, portal) = HttpResponder::start(&hs.s, "198.18.1.1:8080", 200);
    hs.start_roamd(&[]);
    let mut sub = hs.subscriber(None);
    wait_update(&mut sub, WAIT, "rmnet0 validated by its echo probes", |u| {
        state_of(u, "rmnet0") == Some("validated")
    });
    let (line, peer) = requests.recv_timeout(WAIT).expect("the portal check");
    assert_eq!(line, "GET /generate_204 HTTP/1.1");
    assert_eq!(
        peer.ip(),
        std::net::IpAddr::from([198, 18, 1, 2]),
        "the check must leave through wlan0"
    );
    // Asked again at the idle pace only because the first answer marked wlan0 captive.
    requests.recv_timeout(WAIT).expect("the portal asked again");
    let (code, out, err) = hs.roamctl(None, &["links", "--json"]);
    assert_eq!(code, 0, "{err}");
    let links: Vec<Interface> = serde_json::from_str(out.trim()).unwrap();
    let state = |name: &str| {
        links
            .iter()
            .find(|i| i.name == name)
            .map(|i| i.state.as_str().to_owned())
    };
    assert_eq!(
        state("wlan0").as_deref(),
        Some("up"),
        "echo probes answer on wlan0, yet a portal is in the way: {out}"
    );
    assert_eq!(state("rmnet0").as_deref(), Some("validated"), "{out}");
    assert!(
        hs.log()
            .contains("captive portal: http://198.18.1.1:8080/generate_204 answered HTTP 200"),
        "{}",
        hs.log()
    );
    // The user logs in: the next check gets 204 and wlan0 is validated.
    portal.set_status(204);
    wait_update(&mut sub, WAIT, "wlan0 validated after the login", |u| {
        state_of(u, "wlan0") == Some("validated")
    });
}

/// A client speaking the protocol as another uid (40002, app `uid:40002`): hello, subscribe,
/// then `report_path` `stalled` on wlan0 `N` times, 20 ms apart; prints how many were `ok`.
const LIAR: &str = r#"
import json, socket, struct, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
def send(m):
    b = json.dumps(m).encode(); s.sendall(struct.pack(">I", len(b)) + b)
def recv():
    n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
    return json.loads(s.recv(n, socket.MSG_WAITALL))
send({"type": "hello", "version": 1}); recv()
send({"type": "subscribe", "id": 1})
n = int(sys.argv[2]); ok = 0
for i in range(n):
    send({"type": "report_path", "id": 10 + i, "interface": "wlan0", "stalled": True})
    time.sleep(0.02)
deadline = time.time() + 3
while ok < n and time.time() < deadline:
    m = recv()
    if m.get("type") == "ok": ok += 1
print("ok", ok)
"#;

/// With the shipped pacing, a stall report is evidence weighed, never obeyed: an app of
/// another uid that reports wlan0 stalled over and over (wlan0 is fine) gets one confirming
/// burst, which wlan0 answers, and nobody moves. When wlan0 really dies, the next stall
/// report's burst turns it down for everyone.
#[test]
fn a_lying_app_of_another_uid_moves_nobody_and_a_confirmed_stall_moves_everyone() {
    let what = "a_lying_app_of_another_uid_moves_nobody_and_a_confirmed_stall_moves_everyone";
    if !can_run(what) {
        return;
    }
    for tool in ["nft", "setpriv", "/usr/bin/python3"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "{tool} missing under CI");
            common::skip(what, &format!("`{tool}` is not installed"));
            return;
        }
    }
    let hs = Handset::start("");
    // IPv6 stays on: the kernel's router solicitations and MLD reports, sent with nothing
    // received, once made a link suspect by its counters and added a burst to the count
    // below (seen in CI: 9 probes, not 6). roamd now leaves IPv6 multicast out of a link's
    // sent packets (`Ip6OutMcastPkts`).
    let mut sub = hs.subscriber(None);
    wait_update(
        &mut sub,
        WAIT,
        "every link validated by its first burst",
        |u| {
            ["wlan0", "rmnet0", "bnep0"]
                .iter()
                .all(|l| state_of(u, l) == Some("validated"))
                && paths(u).first() == Some(&"wlan0")
        },
    );
    let socket = hs.socket().display().to_string();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            hs.h.name(),
            "setpriv",
            "--reuid=40002",
            "--regid=40002",
        ])
        .args([
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            LIAR,
            &socket,
            "50",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Heard (every report answered `ok`), weighed, not obeyed.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 50");
    sub.set_timeout(Some(Duration::from_millis(1_500))).unwrap();
    match sub.next_event() {
        Ok(Reply::Update(u)) => panic!("the liar moved someone: {u:?}\n{}", hs.log()),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(_) => {} // 1.5 s without any update
    }
    let (code, status, err) = hs.roamctl(None, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    let wlan = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["interface"] == "wlan0")
        .unwrap()
        .clone();
    // The first burst, and one for the liar's fifty reports.
    assert_eq!(wlan["energy"]["probes_sent"], 6, "{wlan}");
    assert_eq!(wlan["readiness"], "warm", "{wlan}");

    // Now wlan0 dies silently; the honest subscriber's session says so.
    common::run(&[
        "ip",
        "netns",
        "exec",
        hs.s.name(),
        "nft",
        "add table inet roamt; add chain inet roamt in { type filter hook input priority 0; }; \
         add rule inet roamt in ip saddr 198.18.1.2 drop",
    ]);
    let t = Instant::now();
    let r = sub
        .call(|id| Request::ReportPath {
            id,
            interface: "wlan0".into(),
            rtt_ms: None,
            stalled: true,
        })
        .unwrap();
    assert!(matches!(r, Reply::Ok { .. }), "{r:?}");
    let (u, at) = wait_update(&mut sub, WAIT, "wlan0 down after the burst", |u| {
        state_of(u, "wlan0") == Some("down")
    });
    assert_eq!(paths(&u).first(), Some(&"rmnet0"));
    let took = at - t;
    eprintln!(
        "stall report on a silent link -> down at the subscriber: {took:?} (burst of 3, 10 ms apart, each probe waiting its RTT and margin, 50 to 100 ms)"
    );
    // At most 2 x 10 + 100 ms in the core; allow for a busy CI machine.
    assert!(
        took < Duration::from_millis(1_000),
        "{took:?}\n{}",
        hs.log()
    );
}

/// A backup that died silently while nobody probed it does not strand anyone: with a short
/// validity (13 s), rmnet0 is blackholed, left alone past its validity, then wlan0 goes down.
/// The decision moves to rmnet0, whose stale validation gets a burst at once; the burst fails
/// and the decision ends on bnep0.
#[test]
fn a_silently_dead_backup_is_checked_when_needed_and_the_decision_ends_on_the_third_link() {
    let what =
        "a_silently_dead_backup_is_checked_when_needed_and_the_decision_ends_on_the_third_link";
    if !can_run(what) {
        return;
    }
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(std::env::var_os("CI").is_none(), "nft missing under CI");
        common::skip(
            what,
            "the `nft` tool is not installed (Debian package nftables)",
        );
        return;
    }
    // The validity outlasts the cellular tail (11.5 s) after the validation burst: otherwise
    // the refresh would ride along on the radio the burst itself kept awake.
    let hs = Handset::start("[probe]\nvalidity_s = 13\n");
    // A cellular link carries no neighbour discovery (rmnet is raw IP): on this veth, ARP and
    // IPv6 housekeeping would show the "radio" awake and let roamd refresh rmnet0 early.
    let mac = |ns: &str, dev: &str| {
        let o = std::process::Command::new("ip")
            .args(["-n", ns, "-br", "link", "show", "dev", dev])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.split_whitespace().nth(2).unwrap().to_owned()
    };
    let (hmac, smac) = (mac(hs.h.name(), "rmnet0"), mac(hs.s.name(), "srmnet0"));
    for (ns, dev) in [(hs.h.name(), "rmnet0"), (hs.s.name(), "srmnet0")] {
        common::run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
        ]);
    }
    common::run(&[
        "ip",
        "-n",
        hs.h.name(),
        "neigh",
        "replace",
        "198.18.2.1",
        "lladdr",
        &smac,
        "nud",
        "permanent",
        "dev",
        "rmnet0",
    ]);
    common::run(&[
        "ip",
        "-n",
        hs.s.name(),
        "neigh",
        "replace",
        "198.18.2.2",
        "lladdr",
        &hmac,
        "nud",
        "permanent",
        "dev",
        "srmnet0",
    ]);
    let mut sub = hs.subscriber(None);
    wait_update(
        &mut sub,
        WAIT,
        "every link validated by its first burst",
        |u| {
            ["wlan0", "rmnet0", "bnep0"]
                .iter()
                .all(|l| state_of(u, l) == Some("validated"))
        },
    );
    // rmnet0 (198.18.2.2) dies silently; nobody sends on it, nobody notices.
    common::run(&[
        "ip",
        "netns",
        "exec",
        hs.s.name(),
        "nft",
        "add table inet roamt; add chain inet roamt in { type filter hook input priority 0; }; \
         add rule inet roamt in ip saddr 198.18.2.2 drop",
    ]);
    std::thread::sleep(Duration::from_secs(14));
    let (code, status, err) = hs.roamctl(None, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    let rmnet = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["interface"] == "rmnet0")
        .unwrap()
        .clone();
    assert_eq!(
        rmnet["energy"]["probes_sent"], 3,
        "an idle cellular backup is not probed after its validation: {rmnet}"
    );
    let t = Instant::now();
    hs.ip_h(&["link", "set", "wlan0", "down"]);
    let (u, on_rmnet) = wait_update(&mut sub, WAIT, "the decision on rmnet0", |u| {
        paths(u).first() == Some(&"rmnet0")
    });
    assert_eq!(
        state_of(&u, "rmnet0"),
        Some("validated"),
        "stale, not yet known dead"
    );
    let (_, on_bnep) = wait_update(&mut sub, WAIT, "the decision on bnep0", |u| {
        paths(u).first() == Some(&"bnep0") && state_of(u, "rmnet0") == Some("down")
    });
    let gap = on_bnep - t;
    eprintln!(
        "figure: wlan0 down -> rmnet0 (stale) after {:?} -> bnep0 after {gap:?} (burst of 3, 10 ms apart, each probe waiting its RTT and margin, 50 to 100 ms)",
        on_rmnet - t
    );
    assert!(gap < Duration::from_millis(1_000), "{gap:?}\n{}", hs.log());
}
