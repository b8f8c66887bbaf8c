//! The userspace MPTCP path manager as roamd runs it: the worker that carries out subflow
//! commands ([`crate::core::SubflowCommand`]), the kernel's `mptcp_pm_events` group,
//! `net.mptcp.pm_type` switched to userspace while it runs, and TCP options for one subflow
//! (BPF). The core decides which commands to send and whether an app may ask for one; this file
//! only carries them out and turns the kernel's answers into the app's reply.
use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use tokio::sync::mpsc;

use super::owners::Owners;
use super::subflow_opts::{self, Outcome, SubflowOptions};
use super::userspace_pm::{self, Done, PmEvents, UserspacePm};
use crate::core::{ClientId, MptcpEvent, Requested, SubflowCommand};
use crate::ipc::proto::{Reply, TcpOptions};

/// The congestion controls the kernel has loaded.
const AVAILABLE_CC: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// Who a command's answer goes to: the app's client and request id, or nobody (the core's own
/// steering).
type Tag = Option<(ClientId, u64)>;

/// What the kernel said.
#[derive(Debug)]
pub enum FromKernel {
    /// Connection and subflow events, for the core.
    Events(Vec<MptcpEvent>),
    /// A command was carried out or refused.
    Done(Done<Tag>),
}

/// The running userspace path manager.
#[derive(Debug)]
pub struct Subflows {
    upm: UserspacePm<Tag>,
    done: mpsc::UnboundedReceiver<Done<Tag>>,
    /// `None` once reading the group failed: connections are no longer steered.
    events: Option<PmEvents>,
    /// Owners of new connections, for steering those nobody registered; `None` when
    /// sock_diag could not be opened (only registered connections are steered then).
    owners: Option<Owners>,
    pm_type_was: u8,
    /// Per-subflow TCP options, when BPF could be used.
    options: Option<SubflowOptions>,
    /// Subflow creations with options under way: their map keys, by client and request id.
    pending: HashMap<(ClientId, u64), subflow_opts::Key>,
}

impl Subflows {
    /// Joins the event group, starts the worker, switches `net.mptcp.pm_type` to userspace and
    /// loads the per-subflow options program (cgroup `bpf_cgroup`, default the cgroup v2
    /// root). The second value says whether apps may give per-subflow options, or why not:
    /// for [`crate::core::Core::enable_steering`].
    pub fn start(bpf_cgroup: Option<&Path>) -> anyhow::Result<(Subflows, Result<(), String>)> {
        // Events first: a connection made while the rest starts is still seen.
        let events = PmEvents::open().context(
            "joining the mptcp_pm_events group (set `[mptcp] userspace = false` on a kernel without it)",
        )?;
        let (tx, done) = mpsc::unbounded_channel();
        let upm = UserspacePm::start(tx)
            .context("opening the mptcp_pm family for the userspace path manager")?;
        let pm_type_was = userspace_pm::set_pm_type(1).context(
            "setting net.mptcp.pm_type = 1 (userspace path manager) in roamd's network namespace",
        )?;
        tracing::info!(
            was = pm_type_was,
            "userspace MPTCP path manager on: net.mptcp.pm_type = 1 in this network namespace"
        );
        let (options, available) = match SubflowOptions::open(bpf_cgroup) {
            Ok(o) => {
                tracing::info!(cgroup = %o.cgroup().display(), "per-subflow TCP options on: sock_ops program attached (bpf_link)");
                (Some(o), Ok(()))
            }
            Err(e) => {
                tracing::warn!(error = %e, "per-subflow TCP options are unavailable; mptcp_subflow_create with options will fail");
                (None, Err(e))
            }
        };
        let owners = Owners::open()
            .inspect_err(|e| tracing::warn!(error = %e, "no sock_diag: only registered MPTCP connections are steered"))
            .ok();
        let s = Subflows {
            upm,
            done,
            events: Some(events),
            owners,
            pm_type_was,
            options,
            pending: HashMap::new(),
        };
        Ok((s, available))
    }

    /// Waits for the kernel's next events or answer. Cancel-safe.
    pub async fn next(&mut self) -> FromKernel {
        loop {
            let events = async {
                match &mut self.events {
                    Some(e) => e.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(done) = self.done.recv() => return FromKernel::Done(done),
                r = events => match r {
                    Ok(e) => {
                        let e = match &mut self.owners {
                            Some(o) => o.annotate(e),
                            None => e,
                        };
                        return FromKernel::Events(e);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading mptcp_pm_events failed; registered connections are no longer steered");
                        self.events = None;
                    }
                },
            }
        }
    }

    /// [`Subflows::next`] of a path manager that may be off: never, when it is.
    pub async fn next_of(s: &mut Option<Subflows>) -> FromKernel {
        match s {
            Some(s) => s.next().await,
            None => std::future::pending().await,
        }
    }

    /// Hands `command` to the worker; an app's subflow options are recorded for the BPF
    /// program first. Returns the reply for the app when it cannot be carried out.
    pub fn submit(
        &mut self,
        command: SubflowCommand,
        requested: Option<Requested>,
    ) -> Option<(ClientId, Reply)> {
        let Some(Requested {
            client,
            id,
            options,
        }) = requested
        else {
            self.upm.submit(None, command);
            return None;
        };
        if let Some(options) = options {
            match self.record_options(&command, &options) {
                Ok(key) => {
                    self.pending.insert((client, id), key);
                }
                Err(message) => {
                    let reply = Reply::Error {
                        id: Some(id),
                        code: "failed".into(),
                        message,
                    };
                    return Some((client, reply));
                }
            }
        }
        self.upm.submit(Some((client, id)), command);
        None
    }

    /// Records a new subflow's TCP options in the BPF map (the core checked them) and returns
    /// the key to remove once the kernel answered.
    fn record_options(
        &self,
        command: &SubflowCommand,
        options: &TcpOptions,
    ) -> Result<subflow_opts::Key, String> {
        let (SubflowCommand::Create { local, remote, .. }, Some(so)) = (command, &self.options)
        else {
            return Err("this roamd cannot set per-subflow TCP options".into());
        };
        // The program cannot load a module (bpf_setsockopt does not): a name the kernel does
        // not have now is refused before any subflow is made.
        if let Some(cc) = &options.congestion {
            let have = std::fs::read_to_string(AVAILABLE_CC).unwrap_or_default();
            if !have.split_whitespace().any(|a| a == cc) {
                return Err(format!(
                    "TCP_CONGESTION = {cc:?}: the kernel has no such congestion control \
                     (available: {}); load its module (`modprobe tcp_{cc}`) or pick another",
                    have.trim()
                ));
            }
        }
        let k = so.key(local.ip(), *remote);
        so.insert(&k, options).map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => format!(
                "another subflow {} -> {remote} with options is being created; ask again when \
                 it is answered",
                local.ip()
            ),
            Some(libc::E2BIG) => format!(
                "{} subflow creations with options are under way, the most roamd keeps; ask \
                 again when one is answered",
                subflow_opts::MAX_ENTRIES
            ),
            _ => format!("recording the subflow's options in the BPF map: {e}"),
        })?;
        Ok(k)
    }

    /// The kernel answered a command: the reply for the app that asked, if one did.
    pub fn answer(&mut self, (tag, cmd, result, detail): Done<Tag>) -> Option<(ClientId, Reply)> {
        let (client, id) = tag?;
        let why = detail
            .map(|d| format!(" (the kernel says: {d})"))
            .unwrap_or_default();
        let options = self
            .pending
            .remove(&(client, id))
            .map(|k| self.take_options(&k));
        let reply = match result {
            Ok(()) => match options {
                None | Some(Ok(())) => Reply::Ok { id },
                Some(Err(message)) => Reply::Error {
                    id: Some(id),
                    code: "failed".into(),
                    message,
                },
            },
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENOENT)) => {
                Reply::Error {
                    id: Some(id),
                    code: "not_found".into(),
                    message: format!(
                        "the kernel has no such subflow of {:#010x}: {e}{why}",
                        cmd.token()
                    ),
                }
            }
            Err(e) => Reply::Error {
                id: Some(id),
                code: "failed".into(),
                message: format!("the kernel refused {cmd:?}: {e}{why}"),
            },
        };
        Some((client, reply))
    }

    /// Removes a subflow's options entry once the kernel answered its creation, and says
    /// whether the program applied them (it ran while the kernel connected the subflow).
    fn take_options(&mut self, k: &subflow_opts::Key) -> Result<(), String> {
        let Some(so) = &self.options else {
            return Ok(());
        };
        let keep = "the subflow is open with the connection's own options; close it with \
                    mptcp_subflow_destroy if they do not do";
        match so.take(k) {
            Ok(Outcome::Applied) => Ok(()),
            Ok(Outcome::Refused { options, errno }) => Err(format!(
                "the kernel refused {} for the new subflow: {}; {keep}",
                options.join(", "),
                std::io::Error::from_raw_os_error(errno)
            )),
            Ok(Outcome::NotRun) => Err(format!(
                "the subflow was created but roamd's sock_ops program did not see it connect: \
                 the app's MPTCP socket is not in the cgroup {} (set `[mptcp] bpf_cgroup` to \
                 one that holds the apps); {keep}",
                so.cgroup().display()
            )),
            Err(e) => Err(format!("reading the subflow's options entry: {e}; {keep}")),
        }
    }

    /// Stops the worker and gives `net.mptcp.pm_type` back its old value.
    pub fn stop(self) {
        let old = self.pm_type_was;
        drop(self);
        if let Err(e) = userspace_pm::set_pm_type(old) {
            tracing::warn!(error = %e, old, "could not restore net.mptcp.pm_type");
        }
    }
}
