//! A minimal handset fixture for roamd's namespace tests: a "handset" namespace with veths
//! named as on phones (`wlan0`, `rmnet0`, `bnep0`), each reaching a "server" namespace on its
//! own 198.18.N.0/24, a reflector in the server, and roamd in the handset. Everything is
//! removed on drop, also when a test panics.
//!
//! This should move onto the `roam-tests` namespace harness (`tests/src/netns.rs`,
//! `topology.rs`); it is self-contained here because that crate depends on this one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use roam_agent::core::Update;
use roam_agent::ipc::client::Client;
use roam_agent::ipc::proto::{Reply, Request};

/// The handset's links: name, kind word, subnet number.
pub const LINKS: [(&str, &str, u8); 3] = [
    ("wlan0", "wifi", 1),
    ("rmnet0", "cellular", 2),
    ("bnep0", "bluetooth", 3),
];

/// Wifi first, then cellular, then Bluetooth; no hold, so a returning link is primary at once.
pub const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\n\
                          default {\n  prefer wifi over cell over bt\n}\n";

/// True when the test may run; prints why not otherwise. Under CI a missing privilege fails.
pub fn can_run(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what}: needs root (network namespaces), and CI is set: failing instead of skipping"
    );
    skip(what, "needs root to create network namespaces");
    false
}

/// Says why a test did nothing, past the test harness's output capture (a skip nobody sees is
/// a pass nobody questions).
pub fn skip(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skipped {what}: {why}");
}

/// Runs a command that must succeed.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One handset, one server, a reflector and a roamd.
pub struct Handset {
    /// Handset namespace name.
    pub h: String,
    /// Server namespace name.
    pub s: String,
    /// Scratch directory (config, policy, socket, roamd's log).
    pub dir: PathBuf,
    /// roamd's socket.
    pub socket: PathBuf,
    /// The policy file roamd was started with.
    pub policy: PathBuf,
    roamd: Option<Child>,
    reflector: Option<Child>,
    // Dropped last: the namespaces outlive the processes in them.
    _ns: Vec<Netns>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Handset {
    /// Builds the namespaces and starts roamd with `config_extra` put before a config that
    /// gives every link its reflector as probe target.
    pub fn start(config_extra: &str) -> Handset {
        let mut hs = Handset::new(config_extra);
        hs.start_roamd(&[]);
        hs
    }

    /// Builds the namespaces and the reflector; roamd is not started.
    pub fn new(config_extra: &str) -> Handset {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id());
        let (h, s) = (format!("roamt-h{tag}"), format!("roamt-s{tag}"));
        let mut ns = Vec::new();
        for name in [&h, &s] {
            run(&["ip", "netns", "add", name]);
            ns.push(Netns(name.clone()));
        }
        let dir = std::env::temp_dir().join(format!("roam-agent-test-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Other uids (the permission tests) must reach the socket inside.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();

        // The extra lines go first: top-level keys must come before any table.
        let mut config = format!("{config_extra}\n");
        for (name, _, net) in LINKS {
            let peer = format!("s{name}");
            run(&[
                "ip", "link", "add", name, "netns", &h, "type", "veth", "peer", "name", &peer,
                "netns", &s,
            ]);
            run(&[
                "ip",
                "-n",
                &h,
                "addr",
                "add",
                &format!("198.18.{net}.2/24"),
                "dev",
                name,
            ]);
            run(&[
                "ip",
                "-n",
                &s,
                "addr",
                "add",
                &format!("198.18.{net}.1/24"),
                "dev",
                &peer,
            ]);
            run(&["ip", "-n", &h, "link", "set", name, "up"]);
            run(&["ip", "-n", &s, "link", "set", &peer, "up"]);
            config.push_str(&format!(
                "[[interface]]\nname = \"{name}\"\nprobe_targets = [\"198.18.{net}.1:7777\"]\n"
            ));
        }
        run(&["ip", "-n", &h, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &s, "link", "set", "lo", "up"]);
        let cfg_path = dir.join("roamd.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let policy = dir.join("policy.roam");
        std::fs::write(&policy, POLICY).unwrap();
        let socket = dir.join("roamd.sock");

        let mut hs = Handset {
            h: h.clone(),
            s: s.clone(),
            dir: dir.clone(),
            socket: socket.clone(),
            policy: policy.clone(),
            roamd: None,
            reflector: None,
            _ns: ns,
        };
        let roamd = env!("CARGO_BIN_EXE_roamd");
        let (reflector, _) = spawn_ready(
            Command::new("ip").args([
                "netns",
                "exec",
                &s,
                roamd,
                "reflect",
                "--listen",
                "0.0.0.0:7777",
            ]),
            &dir.join("reflector.log"),
        );
        hs.reflector = Some(reflector);
        hs
    }

    /// Starts roamd with `extra` arguments and waits for its ready line.
    pub fn start_roamd(&mut self, extra: &[&str]) {
        assert!(self.roamd.is_none(), "roamd already running");
        let (child, line) = spawn_ready(
            Command::new("ip")
                .args(["netns", "exec", &self.h, env!("CARGO_BIN_EXE_roamd")])
                .arg("--config")
                .arg(self.dir.join("roamd.toml"))
                .arg("--policy")
                .arg(&self.policy)
                .arg("--socket")
                .arg(&self.socket)
                .args(extra),
            &self.dir.join("roamd.log"),
        );
        assert!(line.contains("(3 interfaces)"), "{line}");
        self.roamd = Some(child);
    }

    /// Stops roamd with `signal` (SIGTERM: a clean stop; SIGKILL: a crash) and waits for it.
    pub fn stop_roamd(&mut self, signal: i32) {
        let Some(mut child) = self.roamd.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child this fixture started and has not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = child.wait().unwrap();
        if signal == libc::SIGTERM {
            assert!(
                status.success(),
                "roamd exited with {status}\n{}",
                self.log()
            );
        }
    }

    /// The handset's rules and routes, less the kernel-managed local table (whose link-local
    /// entries come and go with IPv6 address configuration, not with roamd).
    pub fn kernel_routing(&self) -> String {
        let out = |args: &[&str]| {
            let o = Command::new("ip")
                .args(["-n", &self.h])
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success());
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let routes: String = out(&["route", "show", "table", "all"])
            .lines()
            .filter(|l| !l.contains("table local"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{}{routes}", out(&["rule", "show"]))
    }

    /// roamd's pid (`ip netns exec` execs it, so the child is roamd itself).
    pub fn roamd_pid(&self) -> u32 {
        self.roamd.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Runs `ip -n HANDSET ARGS...`.
    pub fn ip_h(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.h];
        v.extend_from_slice(args);
        run(&v);
    }

    /// A connected, subscribed client (as `app`, or as itself).
    pub fn subscriber(&self, app: Option<&str>) -> Client {
        let mut c = Client::connect(&self.socket, Some(Duration::from_secs(10))).unwrap();
        let app = app.map(str::to_owned);
        match c
            .call(|id| Request::Subscribe {
                id,
                app,
                flow: None,
            })
            .unwrap()
        {
            Reply::Subscribed { .. } => c,
            other => panic!("{other:?}"),
        }
    }

    /// roamd's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("roamd.log")).unwrap_or_default()
    }

    /// Runs roamctl with `args` (socket given), as `uid` (and gid = uid) if set; returns (exit
    /// code, stdout, stderr).
    pub fn roamctl(&self, uid: Option<u32>, args: &[&str]) -> (i32, String, String) {
        self.roamctl_as(uid.map(|u| (u, u)), args)
    }

    /// Runs roamctl with `args` as `(uid, gid)` if set.
    pub fn roamctl_as(&self, ids: Option<(u32, u32)>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roamctl"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        if let Some((uid, gid)) = ids {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Handset {
    fn drop(&mut self) {
        for child in [self.roamd.take(), self.reflector.take()]
            .into_iter()
            .flatten()
        {
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Spawns `cmd` with stderr to `log` and waits (at most 10 s) for its first stdout line, the
/// ready line.
fn spawn_ready(cmd: &mut Command, log: &Path) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(line) if line.contains("ready") => (child, line),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "not ready: {other:?}\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// Reads updates until one satisfies `pred`, for at most `within`. Returns it and when it
/// arrived.
pub fn wait_update(
    c: &mut Client,
    within: Duration,
    what: &str,
    pred: impl Fn(&Update) -> bool,
) -> (Update, Instant) {
    let end = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no update where {what} within {within:?}; saw {seen:#?}"
        );
        c.set_timeout(Some(left)).unwrap();
        match c.next_event() {
            Ok(Reply::Update(u)) => {
                let at = Instant::now();
                if pred(&u) {
                    return (u, at);
                }
                seen.push(u);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("no update where {what}: {e}; saw {seen:#?}"),
        }
    }
}

/// The interface names of a decision, best first.
pub fn paths(u: &Update) -> Vec<&str> {
    u.decision
        .paths
        .iter()
        .map(|p| p.interface.as_str())
        .collect()
}

/// The state word of an interface in an update.
pub fn state_of<'a>(u: &'a Update, name: &str) -> Option<&'a str> {
    u.interfaces
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.state.as_str())
}

/// A netlink socket of the test's own inside a namespace, timestamping the kernel's link
/// notifications for one interface: (when read, admin up and carrier). Stops when dropped.
pub struct LinkWatcher {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LinkWatcher {
    /// Starts watching `ifname` in namespace `ns`; returns once the socket listens.
    pub fn start(ns: &str, ifname: &str) -> (mpsc::Receiver<(Instant, bool)>, LinkWatcher) {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::Ordering;
        let ns = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        let ifname = ifname.to_owned();
        let (tx, rx) = mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace fd.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).unwrap();
            s.bind_auto().unwrap();
            s.add_membership(libc::RTNLGRP_LINK).unwrap();
            // The timeout only lets the thread see `stop`.
            socket2::SockRef::from(&s)
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let n = {
                    let mut slice = &mut buf[..];
                    match s.recv(&mut slice, 0) {
                        Ok(n) => n,
                        Err(_) => continue,
                    }
                };
                let at = Instant::now();
                let Ok((events, _)) =
                    roam_agent::monitor::netlink::parse_datagram(&buf[..n.min(buf.len())], None)
                else {
                    continue;
                };
                for e in events {
                    if let roam_agent::monitor::netlink::MonitorEvent::Link(l) = e
                        && l.name == ifname
                    {
                        let _ = tx.send((at, l.admin_up && l.carrier));
                    }
                }
            }
        });
        ready_rx.recv().unwrap();
        (
            rx,
            LinkWatcher {
                stop,
                thread: Some(thread),
            },
        )
    }
}

impl Drop for LinkWatcher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
