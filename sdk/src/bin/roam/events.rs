//! Session events for people and for programs: a sentence, or one JSON object per line.
//!
//! JSON lines have an `event` field and `t_ms`, the milliseconds since the session was
//! established (`roam serve` adds `session`, a number per accepted session). Interfaces are
//! named as the kernel names them. Words of reasons are the SDK's, with `_` for spaces
//! (`link_lost`, `primary_changed`, `path_stalled`, `address_changed`).
//!
//! Every path a session starts using or stops using is a `path_added` or `path_removed` line
//! with its `interface`: MPTCP subflows as the kernel lists them, and for a session on one
//! path (QUIC without multipath, tcp-resume) its first path and each move, which removes the
//! path it left and adds the one it went to.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use roam::path::LocalPath;
use roam::{PathInfo, SessionEvent, Subflow};
use serde_json::{Value, json};

/// Where event lines go: JSON or sentences, to standard output or standard error.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// One JSON object per line instead of sentences.
    pub json: bool,
    /// Standard output carries the session's bytes: everything printed goes to standard error.
    pub stdout_busy: bool,
}

impl Printer {
    /// Prints a JSON object (with `--json`) on its own line.
    pub fn json(&self, v: &Value) {
        if self.json {
            self.line(&v.to_string(), !self.stdout_busy);
        }
    }

    /// Prints a sentence (without `--json`), always to standard error: standard output is for
    /// data and JSON.
    pub fn say(&self, text: &str) {
        if !self.json {
            self.line(text, false);
        }
    }

    fn line(&self, text: &str, stdout: bool) {
        // A closed pipe on the other end is not worth a panic.
        if stdout {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        } else {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }
}

/// Milliseconds from `start` to now.
pub fn t_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

/// A reason's words as a JSON word (`link lost` -> `link_lost`).
fn word(reason: impl std::fmt::Display) -> String {
    reason
        .to_string()
        .replace([' ', ','], "_")
        .replace("__", "_")
}

fn iface(p: &LocalPath) -> &str {
    &p.interface
}

/// One subflow as JSON.
/// One path as JSON; a local port 0 is one the event did not say (a move): the address alone.
fn subflow_json(s: &Subflow) -> Value {
    let local = s.local.map(|a| match a.port() {
        0 => a.ip().to_string(),
        _ => a.to_string(),
    });
    json!({
        "id": s.id,
        "interface": s.interface,
        "local": local,
        "remote": s.remote.map(|a| a.to_string()),
        "backup": s.backup,
    })
}

/// Turns a session's events into lines, remembering the paths it saw so that additions and
/// removals can be told apart.
#[derive(Debug, Default)]
pub struct Narrator {
    /// The paths in use, by (local, remote) address.
    subflows: BTreeMap<(Option<String>, Option<String>), Subflow>,
    /// The session lists its paths (`SubflowsChanged`): a move is then a change of the
    /// primary among them, not a path added and one removed.
    listed: bool,
}

impl Narrator {
    /// The `path_added` line of the session's first path (`t_ms` 0), to print after the
    /// `connected` line.
    pub fn connected(&mut self, path: &PathInfo) -> Value {
        let first = Subflow {
            id: 0,
            local: path.local,
            remote: Some(path.remote),
            interface: path.interface.clone(),
            backup: Some(false),
            rtt: path.rtt,
            bytes_sent: None,
            bytes_acked: None,
            bytes_received: None,
        };
        let mut v = self.subflow_changes(&[first]).pop().unwrap_or_default();
        v["t_ms"] = json!(0);
        v
    }

    /// The JSON objects for `e` (usually one; a change of subflows gives one per path added or
    /// removed), each with `t_ms`.
    pub fn json(&mut self, e: &SessionEvent, t_ms: u64) -> Vec<Value> {
        let mut out = match e {
            SessionEvent::PathChanged { from, to, reason } => {
                let mut v = vec![json!({
                    "event": "path_changed",
                    "from": from.as_ref().map(iface),
                    "to": to.interface,
                    "to_local": to.local.to_string(),
                    "reason": word(reason),
                })];
                if !self.listed {
                    v.extend(self.moved(to));
                }
                v
            }
            SessionEvent::Degraded { path, reason } => vec![json!({
                "event": "degraded", "path": path.interface, "reason": word(reason),
            })],
            SessionEvent::Recovered { path } => {
                vec![json!({"event": "recovered", "path": path.interface})]
            }
            SessionEvent::DecisionUpdated(d) => vec![json!({
                "event": "decision",
                "primary": d.primary().map(|p| p.interface.as_str()),
                "paths": d.paths.iter().map(|p| json!({
                    "interface": p.interface, "link": p.link, "role": p.role.as_str(),
                })).collect::<Vec<_>>(),
            })],
            SessionEvent::DecisionSourceChosen { source, why } => vec![json!({
                "event": "decision_source", "source": source, "why": why,
            })],
            SessionEvent::TransportChosen { transport, why } => vec![json!({
                "event": "transport", "transport": transport.as_str(), "why": why,
            })],
            SessionEvent::MptcpFallback { path, detail, now } => vec![json!({
                "event": "mptcp_fallback", "path": path.interface, "detail": detail,
                "now": now.as_str(),
            })],
            SessionEvent::KernelPathManager { detail } => {
                vec![json!({"event": "kernel_path_manager", "detail": detail})]
            }
            SessionEvent::SubflowsChanged(now) => {
                self.listed = true;
                self.subflow_changes(now)
            }
            SessionEvent::Resumed { path, resent } => vec![json!({
                "event": "resumed",
                "path": path.as_ref().map(iface),
                "resent": resent,
            })],
            other => vec![json!({"event": "other", "debug": format!("{other:?}")})],
        };
        for v in &mut out {
            v["t_ms"] = json!(t_ms);
        }
        out
    }

    /// A session on one path moved to `to`: the path it left removed, `to` added (towards
    /// the same peer, from an address whose port the event does not say).
    fn moved(&mut self, to: &LocalPath) -> Vec<Value> {
        let remote = self.subflows.values().find_map(|s| s.remote);
        let next = Subflow {
            id: 0,
            local: Some(std::net::SocketAddr::new(to.local, 0)),
            remote,
            interface: Some(to.interface.clone()),
            backup: Some(false),
            rtt: std::time::Duration::ZERO,
            bytes_sent: None,
            bytes_acked: None,
            bytes_received: None,
        };
        self.subflow_changes(&[next])
    }

    /// `path_added` and `path_removed` objects for the difference to the last set of paths.
    fn subflow_changes(&mut self, now: &[Subflow]) -> Vec<Value> {
        let key = |s: &Subflow| {
            (
                s.local.map(|a| a.to_string()),
                s.remote.map(|a| a.to_string()),
            )
        };
        let next: BTreeMap<_, _> = now.iter().map(|s| (key(s), s.clone())).collect();
        let mut out = Vec::new();
        for (k, s) in &self.subflows {
            if !next.contains_key(k) {
                let mut v = subflow_json(s);
                v["event"] = json!("path_removed");
                out.push(v);
            }
        }
        for (k, s) in &next {
            if !self.subflows.contains_key(k) {
                let mut v = subflow_json(s);
                v["event"] = json!("path_added");
                out.push(v);
            }
        }
        self.subflows = next;
        out
    }
}

/// A sentence for `e`, for events a person watching wants to see (`None` for the others).
pub fn sentence(e: &SessionEvent) -> Option<String> {
    Some(match e {
        SessionEvent::PathChanged { from, to, reason } => format!(
            "path changed: {} -> {} ({reason})",
            from.as_ref().map(iface).unwrap_or("nothing"),
            to
        ),
        SessionEvent::Degraded { path, reason } => {
            format!("degraded on {} ({reason})", path.interface)
        }
        SessionEvent::Recovered { path } => format!("recovered on {}", path.interface),
        SessionEvent::DecisionSourceChosen { source, why } => {
            format!("decisions from {source} ({why})")
        }
        SessionEvent::TransportChosen { transport, why } => {
            format!("transport {transport} ({why})")
        }
        SessionEvent::MptcpFallback { path, detail, now } => {
            format!("MPTCP removed on {}: {detail}; now {now}", path.interface)
        }
        SessionEvent::KernelPathManager { detail } => {
            format!("the kernel's path manager is in charge: {detail}")
        }
        SessionEvent::Resumed { path, resent } => format!(
            "resumed on {} ({resent} bytes sent again)",
            path.as_ref().map(iface).unwrap_or("a new connection")
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: u32, iface: &str, port: u16) -> Subflow {
        Subflow {
            id,
            local: Some(([198, 18, 0, 2], port).into()),
            remote: Some(([198, 19, 0, 1], 4433).into()),
            interface: Some(iface.into()),
            backup: Some(false),
            rtt: std::time::Duration::from_millis(1),
            bytes_sent: None,
            bytes_acked: None,
            bytes_received: None,
        }
    }

    #[test]
    fn a_path_change_names_both_links_and_the_reason_as_a_word() {
        let e = SessionEvent::PathChanged {
            from: Some(LocalPath {
                interface: "wlan0".into(),
                local: [198, 18, 0, 2].into(),
            }),
            to: LocalPath {
                interface: "rmnet0".into(),
                local: [198, 18, 1, 2].into(),
            },
            reason: roam::path::MigrationReason::LinkLost,
        };
        let v = Narrator::default().json(&e, 512);
        // The path it went to is added too (the narrator saw no path before).
        assert_eq!(v.len(), 2);
        assert_eq!(v[1]["event"], "path_added");
        assert_eq!(v[0]["event"], "path_changed");
        assert_eq!(v[0]["from"], "wlan0");
        assert_eq!(v[0]["to"], "rmnet0");
        assert_eq!(v[0]["reason"], "link_lost");
        assert_eq!(v[0]["t_ms"], 512);
        assert!(sentence(&e).unwrap().contains("wlan0 -> rmnet0"));
    }

    #[test]
    fn a_session_on_one_path_adds_its_first_path_and_each_move_removes_one_and_adds_one() {
        let mut n = Narrator::default();
        let first = n.connected(&PathInfo {
            interface: Some("rmnet0".into()),
            local: Some(([198, 18, 1, 2], 5000).into()),
            remote: ([198, 19, 0, 1], 4433).into(),
            rtt: std::time::Duration::from_millis(1),
            bytes_sent: 0,
            bytes_received: 0,
        });
        assert_eq!(
            (&first["event"], &first["interface"], &first["t_ms"]),
            (&json!("path_added"), &json!("rmnet0"), &json!(0))
        );
        let moved = n.json(
            &SessionEvent::PathChanged {
                from: Some(LocalPath {
                    interface: "rmnet0".into(),
                    local: [198, 18, 1, 2].into(),
                }),
                to: LocalPath {
                    interface: "wlan0".into(),
                    local: [198, 18, 0, 2].into(),
                },
                reason: roam::path::MigrationReason::PrimaryChanged,
            },
            900,
        );
        let kinds: Vec<_> = moved
            .iter()
            .map(|v| (v["event"].as_str().unwrap(), v["t_ms"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("path_changed", 900),
                ("path_removed", 900),
                ("path_added", 900)
            ]
        );
        assert_eq!(moved[1]["interface"], "rmnet0");
        assert_eq!(moved[2]["interface"], "wlan0");
        assert_eq!(moved[2]["remote"], "198.19.0.1:4433");
        assert_eq!(
            moved[2]["local"], "198.18.0.2",
            "the new port is not known here"
        );
        assert_eq!(moved[1]["local"], "198.18.1.2:5000");
    }

    #[test]
    fn a_session_that_lists_its_paths_is_narrated_from_the_list() {
        let mut n = Narrator::default();
        let first = n.connected(&PathInfo {
            interface: Some("wlan0".into()),
            local: Some(([198, 18, 0, 2], 1000).into()),
            remote: ([198, 19, 0, 1], 4433).into(),
            rtt: std::time::Duration::from_millis(1),
            bytes_sent: 0,
            bytes_received: 0,
        });
        assert_eq!(first["interface"], "wlan0");
        // The kernel's list names the first subflow again: not a second addition.
        let listed = n.json(
            &SessionEvent::SubflowsChanged(vec![sub(1, "wlan0", 1000), sub(2, "rmnet0", 1001)]),
            5,
        );
        assert_eq!(listed.len(), 1, "{listed:?}");
        assert_eq!(listed[0]["interface"], "rmnet0");
        // A move among listed paths changes no path.
        let moved = n.json(
            &SessionEvent::PathChanged {
                from: None,
                to: LocalPath {
                    interface: "rmnet0".into(),
                    local: [198, 18, 0, 2].into(),
                },
                reason: roam::path::MigrationReason::LinkLost,
            },
            6,
        );
        assert_eq!(moved.len(), 1);
    }

    #[test]
    fn subflow_sets_become_paths_added_and_removed() {
        let mut n = Narrator::default();
        let first = n.json(
            &SessionEvent::SubflowsChanged(vec![sub(1, "wlan0", 1000)]),
            1,
        );
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["event"], "path_added");
        let next = n.json(
            &SessionEvent::SubflowsChanged(vec![sub(2, "rmnet0", 1001)]),
            2,
        );
        let kinds: Vec<_> = next
            .iter()
            .map(|v| {
                (
                    v["event"].as_str().unwrap(),
                    v["interface"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(kinds, [("path_removed", "wlan0"), ("path_added", "rmnet0")]);
    }
}
