//! Where a session's decisions come from.
//!
//! A [`DecisionSource`] publishes [`Snapshot`]s: the policy's decision for the app and the
//! interfaces it names, with their addresses. Two sources: [`Roamd`] follows the decisions
//! roamd pushes over its socket (`ipc/PROTOCOL.md`) and sends the session's path figures back;
//! [`Embedded`] runs a link monitor in the app's process and evaluates a policy itself.
//! [`crate::SessionBuilder`] picks roamd when its socket answers and says which in
//! [`crate::SessionEvent::DecisionSourceChosen`].
//!
//! Flow-size rules (`start on cell then add wifi after 1MB`, `if flow.bytes > 10MB`): a
//! session subscribes with [`DecisionSource::subscribe_with_flow`] and a [`FlowWatch`]. The
//! snapshot says where the flow can change the decision ([`Snapshot::flow_thresholds`]: roamd
//! sends them, the embedded source asks its policy); the session counts its bytes both ways
//! and sets the watch only when they reach one of those points; the source counts the age
//! itself ([`roam_policy::FlowClock`]), evaluates again at each report and each age point, and
//! publishes the decision like any other change, so the transports follow it as they follow
//! a link going down.

mod embedded;
mod roamd;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use roam_policy::{Decision, Flow, FlowClock, FlowThresholds, LinkKind, LinkState};
use tokio::sync::watch;

pub use embedded::Embedded;
pub use roamd::{Roamd, SUBSCRIBE_TIMEOUT};

use crate::error::Result;
use crate::path::LocalPath;

/// One interface as a decision source sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    /// The kernel's name.
    pub name: String,
    /// What kind of link it is.
    pub kind: LinkKind,
    /// How usable it is.
    pub state: LinkState,
    /// Its usable global addresses.
    pub addrs: Vec<IpAddr>,
}

/// A decision and the interfaces it was made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// What the policy decided for the app.
    pub decision: Decision,
    /// Every interface the source knows.
    pub links: Vec<LinkView>,
    /// Where the session's flow can change the decision; the session reports its flow when
    /// its bytes reach one of `bytes`. Empty from a source that takes no flow reports (a
    /// subscription without [`FlowWatch`], an agent from before flow reports, an app's own
    /// source that names none).
    pub flow_thresholds: FlowThresholds,
}

impl Snapshot {
    /// The decision's paths, best first, each with an address of `family_v6`'s family;
    /// interfaces without one are left out.
    pub fn local_paths(&self, v6: bool) -> Vec<LocalPath> {
        self.decision
            .paths
            .iter()
            .filter_map(|p| {
                let link = self.links.iter().find(|l| l.name == p.interface)?;
                let local = *link.addrs.iter().find(|a| a.is_ipv6() == v6)?;
                Some(LocalPath {
                    interface: p.interface.clone(),
                    local,
                })
            })
            .collect()
    }

    /// Why no path is permitted, for [`crate::Error::NoPermittedPath`].
    pub fn blocked_detail(&self) -> String {
        let links: Vec<String> = self
            .links
            .iter()
            .map(|l| format!("{} ({}) {}", l.name, l.kind, l.state))
            .collect();
        let mut text = if links.is_empty() {
            "the device has no interface".to_owned()
        } else {
            format!("interfaces: {}", links.join(", "))
        };
        if let Some(why) = self.decision.explain.last() {
            text.push_str("; ");
            text.push_str(why);
        }
        text
    }
}

/// A session's flow as it tells its decision source: bytes both ways and the age, set only
/// when the bytes reach one of the snapshot's [`Snapshot::flow_thresholds`] (never on every
/// write). The source counts the age from the value it got.
pub type FlowWatch = watch::Receiver<Flow>;

/// A session's flow as a source follows it: the session's reports, and the clock the last one
/// set (the age is counted from it, never reported on a timer).
#[derive(Debug)]
pub(crate) struct FlowFollow {
    watch: FlowWatch,
    pub(crate) clock: FlowClock,
    /// The session is gone (its end was told once).
    ended: bool,
}

impl FlowFollow {
    /// Follows `watch`, its current value taken as reported at `now`.
    pub(crate) fn new(watch: FlowWatch, now: std::time::Instant) -> FlowFollow {
        let clock = FlowClock::new(*watch.borrow(), now);
        FlowFollow {
            watch,
            clock,
            ended: false,
        }
    }

    /// Waits for the session's next report and sets the clock by it; `Some` with the flow
    /// reported. Pending for ever without a flow to follow, and once the session is gone
    /// (after one `None`).
    pub(crate) async fn next_report(flow: &mut Option<FlowFollow>) -> Option<Flow> {
        let Some(f) = flow.as_mut().filter(|f| !f.ended) else {
            return std::future::pending().await;
        };
        match f.watch.changed().await {
            Ok(()) => {
                let reported = *f.watch.borrow_and_update();
                f.clock = FlowClock::new(reported, std::time::Instant::now());
                Some(reported)
            }
            Err(_) => {
                f.ended = true;
                None
            }
        }
    }
}

/// A future a [`DecisionSource`] returns.
pub type SubscribeFuture<'a> =
    Pin<Box<dyn Future<Output = Result<watch::Receiver<Arc<Snapshot>>>> + Send + 'a>>;

/// What a session tells its decision source about its paths.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PathReport {
    /// Figures of the path on `interface` (roamd's `report_path`).
    Path {
        /// The interface the session sends from.
        interface: String,
        /// The RTT the session measured.
        rtt: Option<std::time::Duration>,
        /// The session saw no acknowledgement progress with data in flight.
        stalled: bool,
    },
    /// An MPTCP connection with this token is up (roamd's `register_mptcp`): the agent may
    /// steer its subflows.
    MptcpConnected {
        /// The connection's MPTCP token.
        token: u32,
    },
}

/// Something that tells a session which paths it may use.
pub trait DecisionSource: Send + Sync + std::fmt::Debug + 'static {
    /// Starts following the decisions for `app` (`None`: the policy's default block). The
    /// receiver holds a first snapshot when the future completes, and sees every change after.
    /// Runs on the caller's tokio runtime and in the caller's network namespace.
    fn subscribe<'a>(&'a self, app: Option<&'a str>) -> SubscribeFuture<'a>;

    /// [`DecisionSource::subscribe`] for a session that reports its flow on `flow`: the
    /// decisions take the flow into account, and the snapshots carry the thresholds the
    /// session reports at. The default ignores the flow (no thresholds, no reports).
    fn subscribe_with_flow<'a>(
        &'a self,
        app: Option<&'a str>,
        flow: FlowWatch,
    ) -> SubscribeFuture<'a> {
        let _ = flow;
        self.subscribe(app)
    }

    /// Takes a session's report about its paths. Never blocks; a source that has no use for
    /// reports (the default) drops them.
    fn report(&self, report: PathReport) {
        let _ = report;
    }

    /// Whether MPTCP registrations reach an agent that can steer subflows (roamd): then the
    /// session does not claim the kernel's path manager is alone in charge.
    fn steers_mptcp(&self) -> bool {
        false
    }

    /// Says what this source is, for [`crate::SessionEvent::DecisionSourceChosen`].
    fn name(&self) -> String {
        format!("{self:?}")
    }
}
