//! [`SessionBuilder::connect`], from the top: parse the target, subscribe to the decision
//! source, resolve the name on each permitted interface ([`crate::net::resolve`]), list the
//! candidates ([`crate::net::race::candidates`]), then hand them to a transport
//! ([`crate::transport`]), or, with `auto`, to each in turn; the transport races its
//! attempts ([`crate::net::race`]) and returns the connection the [`Session`] wraps.
//!
//! Names are resolved on each permitted interface through that link's nameservers, and a
//! link's candidates are the addresses it resolved; an IP literal is tried on every permitted
//! interface.

use std::net::{IpAddr, SocketAddr};

use tracing::Instrument;

use super::Session;
use super::builder::{SessionBuilder, TransportPreference};
use super::flow::FlowMeter;
use crate::error::{Error, Result};
use crate::net::race::candidates;
use crate::net::resolve::{self, Resolved};
use crate::transport::{self, Dial};
use crate::vocab::{SessionEvent, Transport};

pub(super) async fn connect(b: SessionBuilder, target: &str) -> Result<Session> {
    let (host, port) = parse_target(target)?;
    let span = tracing::info_span!("session", app = b.app.as_deref().unwrap_or("default"), %target);
    let limit = b.connect_timeout;
    let run = async move {
        let (d, flow) = prepare(&b, host, port).await?;
        let c = match b.transport {
            TransportPreference::Auto => connect_auto(d).await,
            t => connect_one(d, t, "asked for".into()).await,
        }?;
        let mut s = Session::from(c);
        s.flow = Some(flow);
        Ok(s)
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
    d: Dial,
    t: TransportPreference,
    why: String,
) -> Result<transport::Connection> {
    match t {
        TransportPreference::Mptcp => transport::mptcp::connect(d, why).await,
        TransportPreference::TcpResume => {
            let told = vec![
                d.source_event.clone(),
                SessionEvent::TransportChosen {
                    transport: Transport::TcpResume,
                    why,
                },
            ];
            transport::resume::connect(d, None, told).await
        }
        TransportPreference::Quic | TransportPreference::Auto => {
            transport::quic::connect(d, why).await
        }
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
async fn connect_auto(d: Dial) -> Result<transport::Connection> {
    let order = auto_order(d.multipath.unwrap_or(d.snap.decision.multipath));
    let budget = d.connect_timeout / 3;
    let mut tried: Vec<String> = Vec::new();
    let mut last = None;
    for t in order {
        let why = if tried.is_empty() {
            format!(
                "auto: {t} first for multipath mode {}",
                d.snap.decision.multipath
            )
        } else {
            format!("auto: {}", tried.join("; "))
        };
        match tokio::time::timeout(budget, connect_one(d.clone(), t, why)).await {
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

/// What every transport starts from: the app's options, the decision source and its
/// snapshot, and the candidates; and the session's flow meter, the flow beginning at the
/// subscription.
async fn prepare(b: &SessionBuilder, host: String, port: u16) -> Result<(Dial, FlowMeter)> {
    let (reports, flow, began) = FlowMeter::channel();
    let (source, decisions, source_event) = b.subscribe_source(flow).await?;
    let meter = FlowMeter::new(reports, began, decisions.clone());
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
        Err(_) => resolve::resolve(&b.dns, &snap, &host, port, b.binder.as_ref()).await?,
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
    let dial = Dial {
        app: b.app.clone(),
        tls: b.tls.clone(),
        alpn: b.alpn.clone(),
        server_name: b.server_name.clone().unwrap_or(host),
        connect_timeout: b.connect_timeout,
        attempt_delay: b.attempt_delay,
        idle_timeout: b.idle_timeout,
        keep_alive: b.keep_alive,
        binder: b.binder.clone(),
        path: b.path.clone(),
        multipath: b.multipath,
        path_control: b.path_control.clone(),
        roamd_socket: b.roamd_socket.clone(),
        source,
        decisions,
        snap,
        cands,
        source_event,
    };
    Ok((dial, meter))
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
}
