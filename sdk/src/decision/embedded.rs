//! The embedded decision source: a route socket, the link table it feeds, and the policy
//! evaluated whenever a link changes or a `hold` runs out.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use roam_policy::{Interface, LinkState, Policy, State};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::{DecisionSource, LinkView, Snapshot, SubscribeFuture};
use crate::error::Error;
use crate::monitor::links::LinkTable;
use crate::monitor::netlink::RouteSocket;

/// Decisions made in the app's process: a link monitor and a policy.
///
/// Link states are `up` or `down` only (carrier, admin state and a usable address): with no
/// prober there is no `validated` or `degraded`. The session's own stall detection covers
/// silent failures.
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
            let mut socket = RouteSocket::open()
                .map_err(|e| Error::io("opening the netlink route socket", e))?;
            let mut table = LinkTable::default();
            socket
                .dump(&mut table)
                .await
                .map_err(|e| Error::io("dumping links and addresses", e))?;
            let run = Monitor {
                policy: self.policy.clone(),
                holds: self.policy.hold_durations(),
                app: app.map(str::to_owned),
                usable: usable_names(&table),
                table,
                up_since: HashMap::new(),
            };
            let first = run.snapshot(Instant::now());
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
    table: LinkTable,
    /// The links usable at the last look.
    usable: HashSet<String>,
    /// When each link became usable, for links that did so after the first dump (the others
    /// have been up "for ever", as far as `hold` is concerned).
    up_since: HashMap<String, Instant>,
}

impl Monitor {
    async fn run(mut self, mut socket: RouteSocket, tx: watch::Sender<Arc<Snapshot>>) {
        for _ in 0.. {
            let wake = self.next_hold(Instant::now());
            let changed = tokio::select! {
                r = socket.next(&mut self.table) => match r {
                    Ok(changed) => changed,
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        tracing::warn!("netlink notifications were dropped; dumping again");
                        self.table = LinkTable::default();
                        if let Err(e) = socket.dump(&mut self.table).await {
                            tracing::error!(error = %e, "netlink dump failed; decisions frozen");
                            return;
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
                let now = Instant::now();
                self.track_up(now);
                let snap = self.snapshot(now);
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

    fn track_up(&mut self, now: Instant) {
        let usable = usable_names(&self.table);
        // A link that just came (back) starts its hold now; one that went forgets it.
        for name in usable.difference(&self.usable) {
            self.up_since.insert(name.clone(), now);
        }
        self.up_since.retain(|name, _| usable.contains(name));
        self.usable = usable;
    }

    /// The earliest moment a usable link's time up crosses one of the policy's holds.
    fn next_hold(&self, now: Instant) -> Option<Instant> {
        self.up_since
            .values()
            .flat_map(|since| self.holds.iter().map(move |h| *since + *h))
            .filter(|t| *t > now)
            .min()
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        let links: Vec<LinkView> = self
            .table
            .iter()
            .filter(|l| !l.loopback)
            .map(|l| LinkView {
                name: l.name.clone(),
                kind: l.kind(),
                state: if l.is_usable() {
                    LinkState::Up
                } else {
                    LinkState::Down
                },
                addrs: l.addrs.clone(),
            })
            .collect();
        let interfaces = links
            .iter()
            .map(|l| {
                let mut i = Interface::new(l.name.clone(), l.kind, l.state);
                i.up_for_ms = self
                    .up_since
                    .get(&l.name)
                    .map(|s| now.saturating_duration_since(*s).as_millis() as u64);
                i
            })
            .collect();
        let state = State {
            app: self.app.clone(),
            flow: None,
            interfaces,
        };
        Snapshot {
            decision: self.policy.evaluate(&state),
            links,
        }
    }
}

fn usable_names(table: &LinkTable) -> HashSet<String> {
    table
        .iter()
        .filter(|l| l.is_usable())
        .map(|l| l.name.clone())
        .collect()
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
