//! Connecting: resolve the name, ask the decision source which interfaces may carry the
//! session, and race the candidates Happy Eyeballs style (RFC 8305).
//!
//! Candidates are (interface, peer address) pairs: interfaces in the decision's order, and
//! for each, the peer's addresses with the families interleaved, IPv6 first. The first attempt
//! starts at once; each next one starts when the attempt delay passes or the previous attempt
//! fails, whichever comes first. The first handshake to finish wins; the others are dropped,
//! with their endpoints, so the session keeps exactly one endpoint.
//!
//! Names are resolved on each permitted interface through that link's nameservers
//! (`resolve`), and a link's candidates are the addresses it resolved; an IP literal is tried
//! on every permitted interface.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::builder::{SessionBuilder, TransportPreference};
use super::driver::Driver;
use super::resolve::Resolved;
use super::socket::bind_udp;
use super::{Session, Shared, negotiated_alpn, write_header};
use crate::decision::{DecisionSource, Snapshot};
use crate::error::{Error, Result};
use crate::events::SessionEvent;
use crate::path::LocalPath;
use crate::path::manager::PathManager;

pub(super) async fn connect(b: SessionBuilder, target: &str) -> Result<Session> {
    let (host, port) = parse_target(target)?;
    let span = tracing::info_span!("session", app = b.app.as_deref().unwrap_or("default"), %target);
    let limit = b.connect_timeout;
    let run = async move {
        let p = prepare(&b, host, port).await?;
        match b.transport {
            TransportPreference::Auto => connect_auto(b, p).await,
            t => connect_one(b, p, t, "asked for".into()).await,
        }
    };
    tokio::time::timeout(limit, run.instrument(span))
        .await
        .map_err(|_| Error::Timeout {
            what: format!("connecting to {target}"),
            limit,
        })?
}

/// Connects with one transport.
async fn connect_one(
    b: SessionBuilder,
    p: Prepared,
    t: TransportPreference,
    why: String,
) -> Result<Session> {
    match t {
        TransportPreference::Mptcp => super::mptcp::connect_mptcp(b, p, why).await,
        TransportPreference::TcpResume => {
            let told = vec![
                p.source_event.clone(),
                SessionEvent::TransportChosen {
                    transport: super::Transport::TcpResume,
                    why,
                },
            ];
            super::resume::connect_client(b, p, None, told).await
        }
        TransportPreference::Quic | TransportPreference::Auto => connect_quic(b, p, why).await,
    }
}

/// The order `auto` tries the transports in, in the decision's spirit: `aggregate` wants
/// every path at once, which only MPTCP gives; otherwise QUIC moves without the kernel's help
/// and comes first. MPTCP before tcp-resume: where MPTCP is stripped the same connection goes
/// on as tcp-resume anyway; tcp-resume alone is for kernels or networks without MPTCP.
fn auto_order(mode: roam_policy::MultipathMode) -> [TransportPreference; 3] {
    use TransportPreference::{Mptcp, Quic, TcpResume};
    match mode {
        roam_policy::MultipathMode::Aggregate => [Mptcp, Quic, TcpResume],
        _ => [Quic, Mptcp, TcpResume],
    }
}

/// `auto`: each transport in [`auto_order`] gets a third of the connect timeout; the first
/// that connects wins, and the session says which and why.
async fn connect_auto(b: SessionBuilder, p: Prepared) -> Result<Session> {
    let order = auto_order(b.multipath.unwrap_or(p.snap.decision.multipath));
    let budget = b.connect_timeout / 3;
    let mut tried: Vec<String> = Vec::new();
    let mut last = None;
    for t in order {
        let why = if tried.is_empty() {
            format!(
                "auto: {t} first for multipath mode {}",
                p.snap.decision.multipath
            )
        } else {
            format!("auto: {}", tried.join("; "))
        };
        match tokio::time::timeout(budget, connect_one(b.clone(), p.clone(), t, why)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => {
                tracing::info!(transport = %t, error = %e, "auto: transport failed");
                tried.push(format!("{t} failed ({e})"));
                last = Some(e);
            }
            Err(_) => {
                tracing::info!(transport = %t, ?budget, "auto: transport timed out");
                tried.push(format!("{t} took over {budget:?}"));
                last = Some(Error::Timeout {
                    what: format!("connecting with {t}"),
                    limit: budget,
                });
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Stream("no transport was tried".into())))
}

/// What every transport starts from: the decision, its snapshot and the candidates.
#[derive(Clone)]
pub(super) struct Prepared {
    pub(super) source: Arc<dyn DecisionSource>,
    pub(super) decisions: watch::Receiver<Arc<Snapshot>>,
    pub(super) snap: Arc<Snapshot>,
    pub(super) cands: Vec<(LocalPath, SocketAddr)>,
    pub(super) server_name: String,
    /// Which decision source, said first among the connect events.
    pub(super) source_event: SessionEvent,
}

async fn prepare(b: &SessionBuilder, host: String, port: u16) -> Result<Prepared> {
    let (source, decisions, source_event) = b.subscribe_source().await?;
    let snap = decisions.borrow().clone();
    let app = b.app.clone().unwrap_or_else(|| "default".into());
    if snap.decision.is_blocked() {
        return Err(Error::NoPermittedPath {
            app,
            detail: snap.blocked_detail(),
        });
    }
    let peers = match host.parse::<IpAddr>() {
        Ok(ip) => Resolved::everywhere(vec![SocketAddr::new(ip, port)], &snap),
        Err(_) => super::resolve::resolve(&b.dns, &snap, &host, port, b.binder.as_ref()).await?,
    };
    let cands = candidates(&snap, &peers);
    if cands.is_empty() {
        return Err(Error::NoPermittedPath {
            app,
            detail: format!(
                "the permitted interfaces ({}) have no address of the peer's family ({peers})",
                snap.decision
                    .paths
                    .iter()
                    .map(|p| p.interface.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(Prepared {
        source,
        decisions,
        snap,
        cands,
        server_name: b.server_name.clone().unwrap_or(host),
        source_event,
    })
}

/// Splits `host:port` or `[v6]:port`.
pub(super) fn parse_target(target: &str) -> Result<(String, u16)> {
    let bad = |why| Error::InvalidTarget {
        target: target.to_owned(),
        why,
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    let (host, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(h) => (h, true),
        None => (host, false),
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(':') && !bracketed {
        return Err(bad("an IPv6 address must be in brackets"));
    }
    Ok((host.to_owned(), port))
}

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
pub(super) fn candidates(snap: &Snapshot, peers: &Resolved) -> Vec<(LocalPath, SocketAddr)> {
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

struct Attempt {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    path: LocalPath,
    local: SocketAddr,
}

async fn connect_quic(b: SessionBuilder, p: Prepared, why: String) -> Result<Session> {
    let Prepared {
        source,
        decisions,
        snap,
        cands,
        server_name,
        source_event,
    } = p;
    let tls = b.tls.build(&b.alpn)?;
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| Error::TlsConfig(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(b.transport_config()?));

    let won = race(&cands, b.attempt_delay, |path, peer| {
        attempt(
            path,
            peer,
            client.clone(),
            server_name.clone(),
            b.binder.clone(),
        )
    })
    .await?;
    tracing::info!(path = %won.path, local = %won.local, peer = %won.conn.remote_address(), "connected");
    let alpn = negotiated_alpn(&won.conn);
    let (mut send, recv) = won.conn.open_bi().await?;
    if alpn == crate::tls::ALPN {
        write_header(&mut send, b.app.as_deref()).await?;
    }

    let v6 = won.conn.remote_address().is_ipv6();
    let mut cfg = b.path.clone();
    cfg.mode = b.multipath.unwrap_or(snap.decision.multipath);
    let now = tokio::time::Instant::now().into_std();
    let mut pm = PathManager::new(cfg, won.path.clone(), now);
    pm.handle(
        now,
        crate::path::manager::Input::Paths(snap.local_paths(v6)),
    );
    let (events, _) = broadcast::channel(64);
    let shared = Arc::new(Shared {
        path: Mutex::new(Some((won.path.clone(), won.local))),
    });
    let activity = Arc::new(Notify::new());
    let driver = Driver {
        pm,
        conn: won.conn.clone(),
        endpoint: won.endpoint.clone(),
        decisions,
        v6,
        activity: activity.clone(),
        events: events.clone(),
        shared: shared.clone(),
        warm: None,
        binder: b.binder.clone(),
        source,
        reported: None,
    };
    let handle = driver.spawn();
    let session = Session {
        inner: super::Inner::Quic(super::Quic {
            conn: won.conn,
            send,
            recv,
            shared,
            activity: Some(activity),
            _driver: Some(handle),
            endpoint: won.endpoint,
        }),
        events,
        app: b.app,
        alpn,
        transport: super::Transport::Quic,
        connect_events: vec![
            source_event,
            SessionEvent::TransportChosen {
                transport: super::Transport::Quic,
                why,
            },
        ],
    };
    Ok(session)
}

/// Races `attempt` over the candidates: in order, the next one starting when the attempt
/// delay passes or the previous attempt fails, whichever comes first; the first success wins
/// and the other attempts are dropped.
pub(super) async fn race<T, F, Fut>(
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

async fn attempt(
    path: LocalPath,
    peer: SocketAddr,
    client: quinn::ClientConfig,
    server_name: String,
    binder: Option<super::socket::SocketBinder>,
) -> Result<Attempt> {
    let socket = bind_udp(&path, binder.as_ref())
        .map_err(|e| Error::io(format!("binding a UDP socket on {path}"), e))?;
    let local = socket
        .local_addr()
        .map_err(|e| Error::io("reading the socket's address", e))?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::io("starting QUIC", std::io::Error::other("no tokio runtime")))?;
    let endpoint = quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|e| Error::io(format!("creating the QUIC endpoint on {path}"), e))?;
    let connecting = endpoint
        .connect_with(client, peer, &server_name)
        .map_err(|e| Error::TlsConfig(format!("connecting to {peer} as {server_name}: {e}")))?;
    let conn = connecting.await.map_err(|e| handshake_error(peer, e))?;
    Ok(Attempt {
        endpoint,
        conn,
        path,
        local,
    })
}

/// Sorts a handshake failure into the variants an app reacts to differently.
fn handshake_error(peer: SocketAddr, e: quinn::ConnectionError) -> Error {
    use quinn::ConnectionError as C;
    let crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        C::TransportError(t) if crypto(t.code) => Error::Tls {
            peer,
            detail: t.to_string(),
        },
        C::ConnectionClosed(c) if crypto(c.error_code) => Error::Tls {
            peer,
            detail: c.to_string(),
        },
        C::ConnectionClosed(c) if c.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED => {
            Error::Refused {
                peer,
                detail: c.to_string(),
            }
        }
        C::ApplicationClosed(a) => Error::Refused {
            peer,
            detail: a.to_string(),
        },
        other => Error::Connection(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tries_mptcp_first_only_to_aggregate() {
        use TransportPreference::{Mptcp, Quic, TcpResume};
        assert_eq!(
            auto_order(roam_policy::MultipathMode::Aggregate),
            [Mptcp, Quic, TcpResume]
        );
        for m in [
            roam_policy::MultipathMode::Off,
            roam_policy::MultipathMode::Handover,
            roam_policy::MultipathMode::Interactive,
        ] {
            assert_eq!(auto_order(m), [Quic, Mptcp, TcpResume]);
        }
    }
    use roam_policy::{Decision, MultipathMode, Path, Role};

    #[test]
    fn targets_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_target("api.example.com:443").unwrap(),
            ("api.example.com".into(), 443)
        );
        assert_eq!(
            parse_target("[2001:db8::1]:8443").unwrap(),
            ("2001:db8::1".into(), 8443)
        );
        assert_eq!(
            parse_target("198.18.0.1:1").unwrap(),
            ("198.18.0.1".into(), 1)
        );
        for bad in ["api.example.com", ":443", "host:http", "2001:db8::1:443"] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(e.contains("host:port"), "{bad}: {e}");
        }
    }

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
        }
    }
}
