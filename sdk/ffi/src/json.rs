//! What roam descriptors say in JSON: a session's paths, an accepted peer, session events.

use roam_sdk::path::LocalPath;
use roam_sdk::{Session, SessionEvent, Subflow};
use serde_json::{Value, json};

fn local_path(p: &LocalPath) -> Value {
    json!({ "interface": p.interface, "local": p.local.to_string() })
}

fn subflow(s: &Subflow) -> Value {
    json!({
        "id": s.id,
        "local": s.local.map(|a| a.to_string()),
        "remote": s.remote.map(|a| a.to_string()),
        "interface": s.interface,
        "backup": s.backup,
        "rtt_us": u64::try_from(s.rtt.as_micros()).unwrap_or(u64::MAX),
        "bytes_sent": s.bytes_sent,
        "bytes_acked": s.bytes_acked,
        "bytes_received": s.bytes_received,
    })
}

/// `roam_paths`: the transport, the local and peer address lists (the multipath
/// getsockname/getpeername) and every path.
pub fn paths(s: &Session) -> String {
    let paths = s.paths();
    json!({
        "transport": s.transport().as_str(),
        "local_addrs": s.local_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "peer_addrs": s.peer_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "paths": paths.iter().map(subflow).collect::<Vec<_>>(),
    })
    .to_string()
}

/// `roam_accept`: the peer's addresses, its app id and the transport.
pub fn peer(s: &Session) -> String {
    json!({
        "peer_addrs": s.peer_addrs().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "app": s.app(),
        "transport": s.transport().as_str(),
    })
    .to_string()
}

/// One line of an events descriptor.
pub fn event(e: &SessionEvent) -> Value {
    match e {
        SessionEvent::PathChanged { from, to, reason } => json!({
            "event": "path_changed",
            "from": from.as_ref().map(local_path),
            "to": local_path(to),
            "reason": reason.to_string(),
        }),
        SessionEvent::Degraded { path, reason } => json!({
            "event": "degraded", "path": local_path(path), "reason": reason.to_string(),
        }),
        SessionEvent::Recovered { path } => {
            json!({ "event": "recovered", "path": local_path(path) })
        }
        SessionEvent::DecisionUpdated(d) => json!({ "event": "decision_updated", "decision": d }),
        SessionEvent::DecisionSourceChosen { source, why } => json!({
            "event": "decision_source_chosen", "source": source, "why": why,
        }),
        SessionEvent::TransportChosen { transport, why } => json!({
            "event": "transport_chosen", "transport": transport.as_str(), "why": why,
        }),
        SessionEvent::MptcpFallback { path, detail, now } => json!({
            "event": "mptcp_fallback", "path": local_path(path), "detail": detail,
            "now": now.as_str(),
        }),
        SessionEvent::KernelPathManager { detail } => json!({
            "event": "kernel_path_manager", "detail": detail,
        }),
        SessionEvent::SubflowsChanged(s) => json!({
            "event": "subflows_changed", "paths": s.iter().map(subflow).collect::<Vec<_>>(),
        }),
        SessionEvent::Resumed { path, resent } => json!({
            "event": "resumed", "path": path.as_ref().map(local_path), "resent": resent,
        }),
        // An event this build does not know by name yet: still told, as its debug text.
        other => json!({ "event": "other", "debug": format!("{other:?}") }),
    }
}

/// The last line of an events descriptor: the session ended, and why.
pub fn ended(why: &str) -> Value {
    json!({ "event": "session_ended", "why": why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_change_names_both_paths_and_the_reason() {
        let p = |i: &str, a: &str| LocalPath {
            interface: i.into(),
            local: a.parse().unwrap(),
        };
        let e = SessionEvent::PathChanged {
            from: Some(p("wlan0", "198.18.0.2")),
            to: p("rmnet0", "198.18.1.2"),
            reason: roam_sdk::path::MigrationReason::LinkLost,
        };
        assert_eq!(
            event(&e).to_string(),
            r#"{"event":"path_changed","from":{"interface":"wlan0","local":"198.18.0.2"},"reason":"link lost","to":{"interface":"rmnet0","local":"198.18.1.2"}}"#
        );
    }
}
