//! The handset of roamd's namespace tests, built from roam-tests' harness: a handset namespace
//! with veths named as on phones (`wlan0`, `rmnet0`, `bnep0`), each reaching a server
//! namespace on its own 198.18.N.0/24 (addresses only: the routing tests add the routes they
//! need), a reflector (`roamd reflect`) in the server, and this crate's `roamd` in the handset,
//! run by `roam_tests::agent::Roamd`. Everything is removed on drop, also when a test panics.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use roam_agent::core::Update;
use roam_agent::ipc::client::Client;
use roam_tests::agent::{AgentExe, Reflector, Roamd};
use roam_tests::netns::Netns;

pub use roam_tests::netlink::LinkWatcher;
pub use roam_tests::privilege::require_netns as can_run;

/// The handset's links: name, kind word, subnet number.
pub const LINKS: [(&str, &str, u8); 3] = [
    ("wlan0", "wifi", 1),
    ("rmnet0", "cellular", 2),
    ("bnep0", "bluetooth", 3),
];

/// Wifi first, then cellular, then Bluetooth; no hold, so a returning link is primary at once.
pub const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\nlink bt = kind bluetooth\n\
                          default {\n  prefer wifi over cell over bt\n}\n";

/// The real roamd binary of this crate.
fn roamd_exe() -> AgentExe {
    AgentExe::roamd(env!("CARGO_BIN_EXE_roamd"))
}

/// One handset, one server, a reflector and a roamd.
pub struct Handset {
    /// roamd in the handset (its files stay while it is stopped and started again).
    pub roamd: Roamd,
    // Dropped before the namespaces: the processes go first.
    _reflector: Reflector,
    /// The handset namespace.
    pub h: Netns,
    /// The server namespace.
    pub s: Netns,
}

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
        let h = Netns::new("h").unwrap();
        let s = Netns::new("s").unwrap();
        // The extra lines go first: top-level keys must come before any table.
        let mut config = format!("{config_extra}\n");
        for (name, _, net) in LINKS {
            let peer = format!("s{name}");
            h.ip(&[
                "link",
                "add",
                name,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                s.name(),
            ])
            .unwrap();
            h.ip(&["addr", "add", &format!("198.18.{net}.2/24"), "dev", name])
                .unwrap();
            s.ip(&["addr", "add", &format!("198.18.{net}.1/24"), "dev", &peer])
                .unwrap();
            h.ip(&["link", "set", name, "up"]).unwrap();
            s.ip(&["link", "set", &peer, "up"]).unwrap();
            config.push_str(&format!(
                "[[interface]]\nname = \"{name}\"\nprobe_targets = [\"198.18.{net}.1:7777\"]\n"
            ));
        }
        let reflector =
            Reflector::start(&s, &roamd_exe(), "0.0.0.0:7777".parse().unwrap()).unwrap();
        let roamd = Roamd::new(&h, &roamd_exe(), POLICY, &config).unwrap();
        Handset {
            roamd,
            _reflector: reflector,
            h,
            s,
        }
    }

    /// Starts roamd with `extra` arguments and waits for its ready line, which must count the
    /// handset's three links.
    pub fn start_roamd(&mut self, extra: &[&str]) {
        let line = self.roamd.launch(extra).unwrap();
        assert!(line.contains("(3 interfaces)"), "{line}");
    }

    /// Stops roamd with `signal` (SIGTERM: a clean stop, which must succeed; SIGKILL: a crash)
    /// and waits for it.
    pub fn stop_roamd(&mut self, signal: i32) {
        let status = self.roamd.stop(signal).unwrap();
        if signal == libc::SIGTERM {
            assert!(
                status.success(),
                "roamd exited with {status}\n{}",
                self.log()
            );
        }
    }

    /// roamd's socket.
    pub fn socket(&self) -> &Path {
        self.roamd.socket()
    }

    /// The policy file roamd reads.
    pub fn policy(&self) -> std::path::PathBuf {
        self.roamd.policy_path()
    }

    /// The handset's rules and routes, less the kernel-managed local table (whose link-local
    /// entries come and go with IPv6 address configuration, not with roamd).
    pub fn kernel_routing(&self) -> String {
        let routes: String = self
            .h
            .ip(&["route", "show", "table", "all"])
            .unwrap()
            .lines()
            .filter(|l| !l.contains("table local"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!("{}{routes}", self.h.ip(&["rule", "show"]).unwrap())
    }

    /// roamd's pid.
    pub fn roamd_pid(&self) -> u32 {
        self.roamd.pid().expect("roamd runs")
    }

    /// Runs `ip -n HANDSET ARGS...`, which must succeed.
    pub fn ip_h(&self, args: &[&str]) {
        self.h.ip(args).unwrap();
    }

    /// A connected, subscribed client (as `app`, or as itself).
    pub fn subscriber(&self, app: Option<&str>) -> Client {
        self.roamd.subscriber(app).unwrap()
    }

    /// roamd's log so far (for assertion messages).
    pub fn log(&self) -> String {
        self.roamd.log()
    }

    /// Runs roamctl with `args` (socket given), as `uid` (and gid = uid) if set; returns (exit
    /// code, stdout, stderr).
    pub fn roamctl(&self, uid: Option<u32>, args: &[&str]) -> (i32, String, String) {
        self.roamctl_as(uid.map(|u| (u, u)), args)
    }

    /// Runs roamctl with `args` as `(uid, gid)` if set.
    pub fn roamctl_as(&self, ids: Option<(u32, u32)>, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roamctl"));
        cmd.arg("--socket").arg(self.socket()).args(args);
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

/// Reads updates until one satisfies `pred`, for at most `within`. Returns it and when it
/// arrived; panics with the updates seen otherwise.
pub fn wait_update(
    c: &mut Client,
    within: Duration,
    what: &str,
    pred: impl Fn(&Update) -> bool,
) -> (Update, Instant) {
    roam_tests::agent::wait_update(c, within, what, pred).unwrap_or_else(|e| panic!("{e:#}"))
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

pub use roam_tests::privilege::skip;

/// Runs a command that must succeed (e.g. `ip netns exec NS nft ...`).
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
