//! The embedded decision source: a route socket, the link table it feeds, and the policy
//! evaluated whenever a link changes or a `hold` runs out.

use std::sync::Arc;
use std::time::Duration;

use roam_link::socket::{RouteSocket, SocketError, Watch};
use roam_policy::{Policy, State};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::{DecisionSource, Snapshot, SubscribeFuture};
use crate::error::Error;
use crate::monitor::Links;

/// Decisions made in the app's process: a link monitor and a policy.
///
/// Link states are `up` or `down` only (carrier, admin state and a usable address): with no
/// prober there is no `validated` or `degraded`. The session's own stall detection covers
/// silent failures. Links, kinds, addresses and up times are roam-link's: a link
/// usable when the session subscribes counts as up since an unknown, long time for `hold`.
#[derive(Debug, Clone)]
pub struct Embedded {
    policy: Arc<Policy>,
}

impl Embedded {
    /// A source that evaluates `policy`.
    pub fn new(policy: Policy) -> Embedded {
        Embedded {
            policy: Arc::new(policy),
        }
    }

    /// A source with roam's built-in policy ([`roam_policy::DEFAULT_POLICY`]).
    pub fn default_policy() -> Embedded {
        Embedded::new(Policy::default_policy())
    }
}

impl DecisionSource for Embedded {
    fn subscribe<'a>(&'a self, app: Option<&'a str>) -> SubscribeFuture<'a> {
        Box::pin(async move {
            let mut socket = RouteSocket::open(Watch::LinksAndAddresses)
                .map_err(|e| Error::io("opening the netlink route socket", e))?;
            let events = socket
                .dump()
                .await
                .map_err(|e| Error::io("dumping links and addresses", e.into()))?;
            let now = Instant::now();
            let mut links = Links::new();
            for e in &events {
                links.apply(e, now.into_std());
            }
            links.started();
            let run = Monitor {
                policy: self.policy.clone(),
                holds: self.policy.hold_durations(),
                app: app.map(str::to_owned),
                links,
            };
            let first = run.snapshot(now);
            let (tx, rx) = watch::channel(Arc::new(first));
            let span = tracing::info_span!("embedded_monitor", app = app.unwrap_or("default"));
            tokio::spawn(run.run(socket, tx).instrument(span));
            Ok(rx)
        })
    }

    fn name(&self) -> String {
        "embedded (the app's own link monitor and policy)".into()
    }
}

struct Monitor {
    policy: Arc<Policy>,
    holds: Vec<Duration>,
    app: Option<String>,
    links: Links,
}

impl Monitor {
    async fn run(mut self, mut socket: RouteSocket, tx: watch::Sender<Arc<Snapshot>>) {
        loop {
            let wake = self.next_hold(Instant::now());
            let changed = tokio::select! {
                r = socket.next() => match r {
                    Ok(events) => {
                        let now = Instant::now().into_std();
                        let mut changed = false;
                        for e in &events {
                            changed |= self.links.apply(e, now);
                        }
                        changed
                    }
                    Err(SocketError::Overrun) => {
                        tracing::warn!("netlink notifications were dropped; dumping again");
                        self.links.begin_resync();
                        let dumped = socket.dump().await;
                        let now = Instant::now().into_std();
                        match dumped {
                            Ok(events) => {
                                for e in &events {
                                    self.links.apply(e, now);
                                }
                                self.links.end_resync(now);
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "netlink dump failed; decisions frozen");
                                return;
                            }
                        }
                        true
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "netlink route socket failed; decisions frozen");
                        return;
                    }
                },
                _ = sleep_until(wake) => true,
                _ = tx.closed() => return,
            };
            if changed {
                let snap = self.snapshot(Instant::now());
                tx.send_if_modified(|cur| {
                    if **cur == snap {
                        return false;
                    }
                    tracing::debug!(paths = ?snap.decision.paths, "decision updated");
                    *cur = Arc::new(snap);
                    true
                });
            }
        }
    }

    /// The earliest moment a usable link's time up crosses one of the policy's holds.
    fn next_hold(&self, now: Instant) -> Option<Instant> {
        self.links
            .next_hold(now.into_std(), &self.holds)
            .map(Instant::from_std)
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let state = State {
            app: self.app.clone(),
            flow: None,
            interfaces: self.links.interfaces(now.into_std()),
        };
        Snapshot {
            decision: self.policy.evaluate(&state),
            links: self.links.views(),
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
