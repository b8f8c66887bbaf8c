//! Applying decisions to the kernel, always through netlink, never by running `ip`.
//!
//! - [`routing`]: a table per interface and a source rule per address (rtnetlink).
//! - [`mptcp`]: the in-kernel MPTCP path manager's endpoints, from the device-wide default
//!   decision (generic netlink `mptcp_pm`).
//!
//! - [`userspace_pm`]: per-connection subflow control through the userspace path manager
//!   (subflow create/destroy and MP_PRIO by connection token) and its event stream, for
//!   connections apps registered (`[mptcp] userspace = true`).
//!
//! - [`owners`]: the uid owning an MPTCP connection (sock_diag), so connections nobody
//!   registered are steered by their uid's app.
//!
//! - [`subflows`]: the userspace path manager as roamd runs it (worker, events, pm_type,
//!   per-subflow options, answers to apps).
//!
//! - [`subflow_opts`]: TCP options for one subflow (`mptcp_subflow_create` with `options`),
//!   set by a BPF sock_ops program roamd loads and attaches to a cgroup with a bpf_link, so it
//!   goes away with roamd.
//!
//! Both remove exactly what they added, on exit and, after a crash, at the next start.
pub mod mptcp;
pub mod owners;
pub mod routing;
pub mod subflow_opts;
pub mod subflows;
pub mod userspace_pm;

use anyhow::Context;

use crate::core::{MptcpPlan, RoutingPlan};
use mptcp::MptcpEnforcer;
use routing::RoutingEnforcer;

/// The enforcers the config turns on, and whether roamd may change anything (`--dry-run`).
#[derive(Debug)]
pub struct Enforcers {
    routing: Option<RoutingEnforcer>,
    mptcp: Option<MptcpEnforcer>,
    dry_run: bool,
}

impl Enforcers {
    /// Opens policy routing and the MPTCP endpoints as asked, and removes what a roamd that
    /// was killed left behind (in a dry run: logs what it would remove).
    pub fn open(routing: bool, mptcp: bool, dry_run: bool) -> anyhow::Result<Enforcers> {
        let mut e = Enforcers {
            routing: None,
            mptcp: None,
            dry_run,
        };
        if routing {
            let mut r = RoutingEnforcer::open().context("opening the rtnetlink request socket")?;
            if dry_run {
                for item in r.stale()? {
                    tracing::info!(%item, "dry run: would remove stale");
                }
            } else {
                let n = r
                    .remove_stale()
                    .context("removing policy routing left by an earlier roamd")?;
                if n > 0 {
                    tracing::info!(
                        removed = n,
                        "removed routes and rules left by an earlier roamd"
                    );
                }
            }
            e.routing = Some(r);
        }
        if mptcp {
            let mut m = MptcpEnforcer::open().context(
                "opening the mptcp_pm generic netlink family (set `[mptcp] enabled = false` in the config on a kernel without MPTCP)",
            )?;
            if dry_run {
                for item in m.stale()? {
                    tracing::info!(endpoint = %item, "dry run: would remove stale endpoint");
                }
            } else {
                let n = m
                    .remove_stale()
                    .context("removing MPTCP endpoints left by an earlier roamd")?;
                if n > 0 {
                    tracing::info!(
                        removed = n,
                        "removed MPTCP endpoints left by an earlier roamd"
                    );
                }
            }
            e.mptcp = Some(m);
        }
        Ok(e)
    }

    /// Makes policy routing match `plan`.
    pub fn routing(&mut self, plan: &RoutingPlan) {
        match &mut self.routing {
            Some(_) if self.dry_run => {
                tracing::info!(
                    routes = plan.routes.len(),
                    rules = plan.rules.len(),
                    app_rules = plan.app_rules.len(),
                    "dry run: policy routing not applied"
                );
                for r in &plan.app_rules {
                    tracing::info!(rule = %r, "dry run: would have app rule");
                }
            }
            Some(r) => r.apply(plan),
            None => {}
        }
    }

    /// Makes the in-kernel MPTCP endpoints match `plan`.
    pub fn mptcp(&mut self, plan: &MptcpPlan) {
        match &mut self.mptcp {
            Some(_) if self.dry_run => tracing::info!(
                endpoints = plan.endpoints.len(),
                "dry run: MPTCP endpoints not changed"
            ),
            Some(m) => m.apply(plan),
            None => {}
        }
    }

    /// Removes every route, rule and endpoint roamd added (when it stops).
    pub fn clear(&mut self) {
        if self.dry_run {
            return;
        }
        if let Some(m) = &mut self.mptcp {
            m.clear();
        }
        if let Some(r) = &mut self.routing {
            r.clear();
        }
    }
}
