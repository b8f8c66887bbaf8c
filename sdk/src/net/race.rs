//! The Happy Eyeballs race (RFC 8305) over a decision's candidates.
//!
//! Candidates are (interface, peer address) pairs: interfaces in the decision's order, and
//! for each, the peer's addresses it resolved with the families interleaved, IPv6 first. The
//! first attempt starts at once; each next one starts when the attempt delay passes or the
//! previous attempt fails, whichever comes first. The first to finish wins; the others are
//! dropped, with their sockets, so the session keeps exactly one. Every transport races its
//! own attempts (QUIC handshakes, TCP connects: [`super::tcp::race`]) through [`race`].

use std::net::SocketAddr;

use tokio::task::JoinSet;
use tracing::Instrument;

use super::resolve::Resolved;
use crate::decision::Snapshot;
use crate::error::{Error, Result};
use crate::vocab::LocalPath;

/// RFC 8305 section 4: alternate the families, starting with IPv6, keeping each family's
/// order.
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let (v6, v4): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6());
    let mut out = Vec::with_capacity(addrs.len());
    let (mut a, mut b) = (v6.into_iter(), v4.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Every (local path, peer) pair, interfaces in the decision's order, each with the addresses
/// it resolved.
pub(crate) fn candidates(snap: &Snapshot, peers: &Resolved) -> Vec<(LocalPath, SocketAddr)> {
    let (paths_v4, paths_v6) = (snap.local_paths(false), snap.local_paths(true));
    let mut out = Vec::new();
    for p in &snap.decision.paths {
        for peer in &interleave(peers.on(&p.interface)) {
            let list = if peer.is_ipv6() { &paths_v6 } else { &paths_v4 };
            if let Some(lp) = list.iter().find(|l| l.interface == p.interface) {
                out.push((lp.clone(), *peer));
            }
        }
    }
    out
}

/// Races `attempt` over the candidates: in order, the next one starting when the attempt
/// delay passes or the previous attempt fails, whichever comes first; the first success wins
/// and the other attempts are dropped.
pub(crate) async fn race<T, F, Fut>(
    cands: &[(LocalPath, SocketAddr)],
    delay: std::time::Duration,
    attempt: F,
) -> Result<T>
where
    T: Send + 'static,
    F: Fn(LocalPath, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut next = 0;
    let mut last_err = None;
    let mut start_next = tokio::time::Instant::now();
    for _ in 0..cands.len() * 2 + 1 {
        if next < cands.len() && (set.is_empty() || tokio::time::Instant::now() >= start_next) {
            let (path, peer) = cands[next].clone();
            tracing::debug!(%path, %peer, attempt = next, "starting a candidate");
            set.spawn(attempt(path, peer).in_current_span());
            next += 1;
            start_next = tokio::time::Instant::now() + delay;
        }
        let more = next < cands.len();
        tokio::select! {
            joined = set.join_next() => match joined {
                Some(Ok(Ok(won))) => {
                    set.abort_all();
                    return Ok(won);
                }
                Some(Ok(Err(e))) => {
                    tracing::debug!(error = %e, "candidate failed");
                    last_err = Some(e);
                    // A failure starts the next candidate at once (RFC 8305 section 5).
                    start_next = tokio::time::Instant::now();
                }
                Some(Err(join)) => last_err = Some(Error::Stream(format!("attempt task: {join}"))),
                None => {}
            },
            _ = tokio::time::sleep_until(start_next), if more => {}
        }
        if set.is_empty() && next >= cands.len() {
            break;
        }
    }
    let last = last_err.unwrap_or_else(|| Error::Stream("no candidate was tried".into()));
    Err(if cands.len() == 1 {
        last
    } else {
        Error::AllCandidatesFailed {
            tried: cands.len(),
            last: Box::new(last),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use roam_policy::{Decision, MultipathMode, Path, Role};

    #[test]
    fn families_interleave_v6_first() {
        let a: Vec<SocketAddr> = ["198.18.0.1:1", "198.18.0.2:1", "[2001:db8::1]:1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let order: Vec<String> = interleave(&a).iter().map(|a| a.to_string()).collect();
        assert_eq!(order, ["[2001:db8::1]:1", "198.18.0.1:1", "198.18.0.2:1"]);
    }

    #[test]
    fn candidates_follow_the_decision_order_then_the_families() {
        let snap = snapshot(
            &["rmnet0", "wlan0"],
            &[
                ("wlan0", &["198.18.0.2", "2001:db8:0:0::2"]),
                ("rmnet0", &["198.18.1.2"]),
            ],
        );
        let peers: Vec<SocketAddr> = vec![
            "198.19.0.1:9".parse().unwrap(),
            "[2001:db8:ffff::1]:9".parse().unwrap(),
        ];
        let c: Vec<String> = candidates(&snap, &Resolved::everywhere(peers, &snap))
            .iter()
            .map(|(p, a)| format!("{}>{a}", p.interface))
            .collect();
        assert_eq!(
            c,
            [
                "rmnet0>198.19.0.1:9",
                "wlan0>[2001:db8:ffff::1]:9",
                "wlan0>198.19.0.1:9"
            ]
        );
    }

    #[test]
    fn each_link_tries_the_addresses_it_resolved() {
        let snap = snapshot(
            &["wlan0", "rmnet0"],
            &[("wlan0", &["198.18.0.2"]), ("rmnet0", &["198.18.1.2"])],
        );
        let mut r = Resolved::default();
        r.insert("wlan0".into(), vec!["198.18.0.1:9".parse().unwrap()]);
        r.insert("rmnet0".into(), vec!["198.18.1.1:9".parse().unwrap()]);
        let c: Vec<String> = candidates(&snap, &r)
            .iter()
            .map(|(p, a)| format!("{}>{a}", p.interface))
            .collect();
        assert_eq!(c, ["wlan0>198.18.0.1:9", "rmnet0>198.18.1.1:9"]);
        // A link that resolved nothing has no candidates.
        let mut r = Resolved::default();
        r.insert("rmnet0".into(), vec!["198.18.1.1:9".parse().unwrap()]);
        assert_eq!(candidates(&snap, &r).len(), 1);
    }

    /// A handover decision over `order` (primary first) and the links with their addresses.
    fn snapshot(order: &[&str], links: &[(&str, &[&str])]) -> Snapshot {
        let role = |i| if i == 0 { Role::Primary } else { Role::Backup };
        Snapshot {
            decision: Decision {
                app: None,
                multipath: MultipathMode::Handover,
                paths: order
                    .iter()
                    .enumerate()
                    .map(|(i, name)| Path {
                        interface: (*name).into(),
                        link: "x".into(),
                        role: role(i),
                    })
                    .collect(),
                explain: vec![],
            },
            links: links
                .iter()
                .map(|(name, addrs)| crate::decision::LinkView {
                    name: (*name).into(),
                    kind: crate::monitor::links::kind_from_name(name),
                    state: roam_policy::LinkState::Up,
                    addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                })
                .collect(),
            flow_thresholds: Default::default(),
        }
    }
}
