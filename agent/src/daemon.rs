//! The tokio shell around the core: one loop that waits on the netlink monitor, the clients,
//! the probe replies, the signals and the core's next deadline, feeds what arrives into the
//! core, and carries out the actions it returns. Nothing here decides anything.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::config::{Config, resolve_group};
use crate::core::{Action, ClientId, Core, Event, LinkInfo, MptcpPlan, Policy, RoutingPlan};
use crate::enforce::mptcp::MptcpEnforcer;
use crate::enforce::routing::RoutingEnforcer;
use crate::enforce::subflow_opts::{self, Outcome, SubflowOptions};
use crate::enforce::userspace_pm::{self, Done, PmCommand, PmEvent, PmEvents, UserspacePm};
use crate::ipc::proto::{self, Reply, Request, Status};
use crate::ipc::server::{self, FromClient, Peer};
use crate::monitor::classify::{KindOverride, SysfsFacts, classify};
use crate::monitor::netlink::{Monitor, MonitorError, MonitorEvent};
use crate::monitor::nl80211::{Nl80211, Wireless};
use crate::probe::{ProbeReply, Prober, portal};
use tracing::Instrument;

/// How roamd was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The parsed config (default when no `--config`).
    pub config: Config,
    /// The policy file; `None`: the built-in policy, and `reload` has nothing to re-read.
    pub policy_path: Option<PathBuf>,
    /// Where to listen.
    pub socket: PathBuf,
    /// Observe and decide, change nothing in the kernel.
    pub dry_run: bool,
    /// Where interfaces' sysfs entries are (`/sys/class/net`).
    pub sysfs_root: PathBuf,
}

/// Reads and checks a policy file; the error is the rendered diagnostic a person reads.
pub fn load_policy(path: &Path) -> Result<Policy, String> {
    let source = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: error: cannot read the policy file: {e}",
            path.display()
        )
    })?;
    Policy::parse(&source).map_err(|e| e.render(&path.display().to_string()))
}

struct Conn {
    peer: Peer,
    tx: mpsc::Sender<Arc<[u8]>>,
    reader: AbortHandle,
    subscribed: bool,
    mptcp_tokens: Vec<u32>,
}

struct Daemon {
    core: Core,
    conns: HashMap<ClientId, Conn>,
    prober: Prober,
    config: Config,
    overrides: Vec<KindOverride>,
    sysfs_root: PathBuf,
    policy_path: Option<PathBuf>,
    dry_run: bool,
    routing: Option<RoutingEnforcer>,
    mptcp: Option<MptcpEnforcer>,
    /// nl80211, when the kernel has cfg80211; queried off the loop (generic netlink requests
    /// can wait behind another family's slow one).
    nl80211: Option<Arc<std::sync::Mutex<Nl80211>>>,
    wireless_tx: mpsc::Sender<(u32, Wireless)>,
    /// Finished captive-portal checks: interface index and HTTP status (or why none).
    portal_tx: mpsc::Sender<(u32, Result<u16, String>)>,
    /// The userspace path manager's worker; answers carry the client and request id to reply
    /// to (`None`: the core's own steering).
    upm: Option<UserspacePm<Reply2>>,
    /// Per-subflow TCP options (BPF): `None` without the userspace path manager, `Some(Err)`
    /// with why BPF could not be used.
    subflow_opts: Option<Result<SubflowOptions, String>>,
    /// Subflow creations with options under way: their map keys, by client and request id.
    opts_pending: HashMap<(ClientId, u64), subflow_opts::Key>,
}

/// The congestion controls the kernel has loaded.
const AVAILABLE_CC: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// Who a userspace path manager answer goes to.
type Reply2 = Option<(ClientId, u64)>;

/// Runs the agent until SIGTERM or SIGINT. `ready` is called once the initial dump is in and
/// the socket accepts connections.
pub async fn run(opts: Options, ready: impl FnOnce(&Core)) -> anyhow::Result<()> {
    let policy = match &opts.policy_path {
        Some(p) => load_policy(p).map_err(|e| anyhow::anyhow!("{e}\nroamd: not started; fix the policy file (`roamctl policy check FILE` shows every error)"))?,
        None => Policy::default_policy(),
    };
    tracing::info!(policy = %policy.summary(), file = ?opts.policy_path, "policy loaded");
    if !opts.dry_run && (opts.config.routing.is_some() || opts.config.mptcp) && !has_net_admin() {
        anyhow::bail!(
            "roamd changes routing rules and MPTCP endpoints and needs CAP_NET_ADMIN (and CAP_NET_RAW \
             for its probes); run it as root or with those capabilities, pass --dry-run to only \
             observe, or turn the enforcers off with `[routing] enabled = false` and \
             `[mptcp] enabled = false`"
        );
    }
    if opts.dry_run {
        tracing::info!("dry run: observing and deciding only; the kernel is not changed");
    }

    let admin_gid = opts.config.admin_group.as_ref().and_then(|g| {
        let etc = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let gid = resolve_group(g, &etc);
        if gid.is_none() {
            tracing::warn!(group = ?g, "admin_group not found in /etc/group; only root is admin");
        }
        gid
    });

    // Bound first: a second roamd must fail here, before it touches the first one's routes
    // and endpoints.
    let listener = server::bind(&opts.socket)
        .with_context(|| format!("listening on {}", opts.socket.display()))?;
    let _socket_file = SocketFile(opts.socket.clone());
    let mut config = opts.config.clone();
    let probing = !config.probe_targets.is_empty()
        || config.interfaces.iter().any(|i| i.probe_targets.is_some());
    // CAP_NET_RAW (13) is what SO_BINDTODEVICE needs. Without it every probe would fail to
    // leave, and a failed probe counts as a lost one: links would be declared dead for the
    // agent's own lack of rights. Not probing at all is the honest outcome.
    if probing && !has_capability(13) {
        tracing::warn!(
            "probes need CAP_NET_RAW to bind to an interface; without it links are never validated by probes (they stay `up`)"
        );
        config.probe_targets.clear();
        for i in &mut config.interfaces {
            i.probe_targets = None;
        }
    }
    let mut monitor = Monitor::open().context("opening the netlink route socket")?;
    let (reply_tx, mut replies) = mpsc::channel::<ProbeReply>(1024);
    let (wireless_tx, mut wireless) = mpsc::channel::<(u32, Wireless)>(64);
    let (portal_tx, mut portal_done) = mpsc::channel::<(u32, Result<u16, String>)>(64);
    let nl80211 = match Nl80211::open() {
        Ok(n) => Some(Arc::new(std::sync::Mutex::new(n))),
        Err(e) => {
            tracing::debug!(error = %e, "no nl80211: WiFi SSID and signal stay unknown");
            None
        }
    };
    let mut d = Daemon {
        core: Core::new(policy, opts.config.probe.clone()),
        conns: HashMap::new(),
        prober: Prober::new(reply_tx),
        overrides: config.kind_overrides(),
        config,
        sysfs_root: opts.sysfs_root.clone(),
        policy_path: opts.policy_path.clone(),
        dry_run: opts.dry_run,
        routing: None,
        mptcp: None,
        nl80211,
        wireless_tx,
        portal_tx,
        upm: None,
        subflow_opts: None,
        opts_pending: HashMap::new(),
    };
    if let Some(cfg) = opts.config.routing {
        let mut enforcer =
            RoutingEnforcer::open().context("opening the rtnetlink request socket")?;
        // A roamd that was killed left its rules and tables: remove them before planning anew.
        if opts.dry_run {
            for item in enforcer.stale()? {
                tracing::info!(%item, "dry run: would remove stale");
            }
        } else {
            let n = enforcer
                .remove_stale()
                .context("removing policy routing left by an earlier roamd")?;
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "removed routes and rules left by an earlier roamd"
                );
            }
        }
        d.routing = Some(enforcer);
        d.core.enable_routing(cfg);
    }
    if opts.config.mptcp {
        let mut enforcer = MptcpEnforcer::open().context(
            "opening the mptcp_pm generic netlink family (set `[mptcp] enabled = false` in the config on a kernel without MPTCP)",
        )?;
        if opts.dry_run {
            for e in enforcer.stale()? {
                tracing::info!(endpoint = %e, "dry run: would remove stale endpoint");
            }
        } else {
            let n = enforcer
                .remove_stale()
                .context("removing MPTCP endpoints left by an earlier roamd")?;
            if n > 0 {
                tracing::info!(
                    removed = n,
                    "removed MPTCP endpoints left by an earlier roamd"
                );
            }
        }
        d.mptcp = Some(enforcer);
    }
    let (upm_tx, mut upm_done) = mpsc::unbounded_channel::<Done<Reply2>>();
    let mut pm_events: Option<PmEvents> = None;
    let mut pm_type_was: Option<u8> = None;
    if opts.config.mptcp_userspace && opts.dry_run {
        tracing::info!("dry run: the userspace MPTCP path manager is not started");
    } else if opts.config.mptcp_userspace {
        // Events first: a connection made while the rest starts is still seen.
        pm_events = Some(PmEvents::open().context(
            "joining the mptcp_pm_events group (set `[mptcp] userspace = false` on a kernel without it)",
        )?);
        d.upm = Some(
            UserspacePm::start(upm_tx)
                .context("opening the mptcp_pm family for the userspace path manager")?,
        );
        pm_type_was = Some(userspace_pm::set_pm_type(1).context(
            "setting net.mptcp.pm_type = 1 (userspace path manager) in roamd's network namespace",
        )?);
        tracing::info!(
            was = pm_type_was,
            "userspace MPTCP path manager on: net.mptcp.pm_type = 1 in this network namespace"
        );
        d.core.enable_steering();
        let opts = SubflowOptions::open(opts.config.mptcp_bpf_cgroup.as_deref());
        match &opts {
            Ok(o) => {
                tracing::info!(cgroup = %o.cgroup().display(), "per-subflow TCP options on: sock_ops program attached (bpf_link)")
            }
            Err(e) => {
                tracing::warn!(error = %e, "per-subflow TCP options are unavailable; mptcp_subflow_create with options will fail")
            }
        }
        d.subflow_opts = Some(opts);
    }
    let initial = monitor
        .dump()
        .await
        .context("dumping links, addresses and routes")?;
    d.on_monitor(initial);
    if d.mptcp.is_some() {
        d.core.enable_mptcp(Instant::now());
    }
    d.run_actions();

    let (client_tx, mut from_clients) = mpsc::channel::<FromClient>(1024);
    let cfg = opts.config.clone();
    let identify = Arc::new(move |uid: u32, gid: u32, pid: Option<i32>| Peer {
        uid,
        gid,
        pid,
        app: cfg.app_of(uid),
        admin: uid == 0
            || admin_gid.is_some_and(|g| gid == g || supplementary_groups(pid).contains(&g)),
    });
    let acceptor = tokio::spawn(server::accept_loop(listener, identify, client_tx));

    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    ready(&d.core);

    let result = loop {
        let deadline = d.core.poll_timeout();
        let sleep = async move {
            match deadline {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigterm.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading the policy");
                // The outcome is logged inside; SIGHUP has nobody else to tell.
                let _ = d.reload();
            }
            r = monitor.next() => match r {
                Ok(events) => d.on_monitor(events),
                Err(MonitorError::Overrun) => {
                    tracing::warn!("netlink notifications were lost; dumping again");
                    match monitor.dump().await {
                        Ok(events) => d.resync(events),
                        Err(e) => break Err(anyhow::Error::from(e).context("re-dumping after an overrun")),
                    }
                }
                Err(e) => break Err(anyhow::Error::from(e).context("reading the netlink route socket")),
            },
            Some(m) = from_clients.recv() => d.on_client(m),
            Some((index, w)) = wireless.recv() => {
                d.core.handle(Instant::now(), Event::Wireless { index, ssid: w.ssid, signal_dbm: w.signal_dbm });
            }
            r = next_pm_events(&mut pm_events) => match r {
                Ok(events) => d.on_pm_events(events),
                Err(e) => {
                    tracing::error!(error = %e, "reading mptcp_pm_events failed; registered connections are no longer steered");
                    pm_events = None;
                }
            },
            Some(done) = upm_done.recv() => d.on_pm_done(done),
            Some((index, status)) = portal_done.recv() => {
                d.core.handle(Instant::now(), Event::PortalChecked { index, status });
            }
            Some(r) = replies.recv() => {
                d.core.handle(r.at, Event::ProbeReply { index: r.index, seq: r.seq });
            }
            _ = sleep => d.core.handle_timeout(Instant::now()),
        }
        d.run_actions();
    };
    acceptor.abort();
    if let Some(old) = pm_type_was {
        drop(d.upm.take());
        if let Err(e) = userspace_pm::set_pm_type(old) {
            tracing::warn!(error = %e, old, "could not restore net.mptcp.pm_type");
        }
    }
    if !d.dry_run {
        if let Some(m) = &mut d.mptcp {
            m.clear();
        }
        if let Some(r) = &mut d.routing {
            r.clear();
        }
    }
    tracing::info!("roamd stopped");
    result
}

/// The next batch of MPTCP events, or never when the userspace path manager is off.
async fn next_pm_events(e: &mut Option<PmEvents>) -> std::io::Result<Vec<PmEvent>> {
    match e {
        Some(e) => e.next().await,
        None => std::future::pending().await,
    }
}

/// Removes the socket file when roamd stops, also on an error after binding.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether this process holds CAP_NET_ADMIN.
fn has_net_admin() -> bool {
    has_capability(12)
}

/// Whether this process holds capability number `bit` (`CapEff` in `/proc/self/status`).
fn has_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1u64 << bit) != 0)
}

/// Supplementary groups of a process, from `/proc/PID/status`. Read at connect time: the
/// group list of a live peer that connected a moment ago.
fn supplementary_groups(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid.filter(|p| *p > 0) else {
        return Vec::new();
    };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

impl Daemon {
    fn on_monitor(&mut self, events: Vec<MonitorEvent>) {
        let core_events: Vec<Event> = events
            .into_iter()
            .filter_map(|e| self.translate(e))
            .collect();
        if !core_events.is_empty() {
            self.core.handle_all(Instant::now(), core_events);
        }
    }

    /// After lost notifications: links missing from a fresh dump are gone, and the others
    /// have exactly the dump's addresses and routes. One batch, so subscribers only see the
    /// outcome.
    fn resync(&mut self, events: Vec<MonitorEvent>) {
        let seen: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                MonitorEvent::Link(l) => Some(l.index),
                _ => None,
            })
            .collect();
        let mut core_events: Vec<Event> = self
            .core
            .link_indices()
            .into_iter()
            .map(|index| {
                if seen.contains(&index) {
                    Event::Forget { index }
                } else {
                    Event::LinkRemoved { index }
                }
            })
            .collect();
        core_events.extend(events.into_iter().filter_map(|e| self.translate(e)));
        self.core.handle_all(Instant::now(), core_events);
    }

    fn translate(&mut self, e: MonitorEvent) -> Option<Event> {
        Some(match e {
            MonitorEvent::Link(l) if l.loopback => return None,
            MonitorEvent::Link(l) => {
                let facts = SysfsFacts::read(&self.sysfs_root, &l.name);
                let kind = classify(&l.name, &facts, l.info_kind.as_deref(), &self.overrides);
                let (metered, probe_targets) = self.config.link_settings(&l.name);
                let portal = self.config.portal_for(&l.name);
                Event::LinkUpdated(LinkInfo {
                    index: l.index,
                    name: l.name,
                    kind,
                    admin_up: l.admin_up,
                    carrier: l.carrier,
                    metered,
                    probe_targets,
                    wireless: facts.wireless || facts.devtype.as_deref() == Some("wlan"),
                    portal,
                })
            }
            MonitorEvent::LinkGone { index } => {
                self.prober.stop(index);
                Event::LinkRemoved { index }
            }
            MonitorEvent::Address {
                index,
                addr,
                prefix_len,
                present,
            } => {
                if present {
                    Event::AddressAdded {
                        index,
                        addr,
                        prefix_len,
                    }
                } else {
                    Event::AddressRemoved {
                        index,
                        addr,
                        prefix_len,
                    }
                }
            }
            MonitorEvent::Route { route, present } => {
                if present {
                    Event::RouteAdded(route)
                } else {
                    Event::RouteRemoved(route)
                }
            }
        })
    }

    fn run_actions(&mut self) {
        // Bounded: every round either empties the queue or feeds send failures back, and a
        // send failure produces no new probe until the next deadline.
        for _ in 0..8 {
            let mut failed = Vec::new();
            while let Some(a) = self.core.poll_action() {
                match a {
                    Action::Push { client, update } => {
                        let frame: Arc<[u8]> = proto::encode(&Reply::Update(update)).into();
                        self.send(client, frame);
                    }
                    Action::SendProbe {
                        index,
                        interface,
                        target,
                        seq,
                    } => {
                        if let Err(e) = self.prober.send(index, &interface, target, seq) {
                            tracing::debug!(%interface, %target, error = %e, "probe not sent");
                            failed.push(Event::ProbeSendFailed { index, seq });
                        }
                    }
                    Action::CheckPortal {
                        index,
                        interface,
                        url,
                    } => {
                        let done = self.portal_tx.clone();
                        let span = tracing::debug_span!("portal", %interface, %url);
                        tokio::spawn(
                            async move {
                                let status = portal::check(&interface, &url).await;
                                tracing::debug!(?status, "portal check");
                                let _ = done.send((index, status)).await;
                            }
                            .instrument(span),
                        );
                    }
                    Action::StopProbing { index } => self.prober.stop(index),
                    Action::QueryWireless { index } => self.query_wireless(index),
                    Action::Routing(plan) => self.apply_routing(&plan),
                    Action::Mptcp(plan) => self.apply_mptcp(&plan),
                    Action::SubflowCreate {
                        token,
                        local,
                        remote,
                        backup,
                        index,
                        id,
                    } => self.steer(PmCommand::Create {
                        token,
                        local,
                        remote,
                        backup,
                        index,
                        id,
                    }),
                    Action::SubflowSetBackup {
                        token,
                        local,
                        remote,
                        backup,
                    } => self.steer(PmCommand::SetBackup {
                        token,
                        local,
                        remote,
                        backup,
                    }),
                    Action::SubflowDestroy {
                        token,
                        local,
                        remote,
                    } => self.steer(PmCommand::Destroy {
                        token,
                        local,
                        remote,
                    }),
                }
            }
            if failed.is_empty() {
                return;
            }
            self.core.handle_all(Instant::now(), failed);
        }
    }

    fn query_wireless(&mut self, index: u32) {
        let Some(nl) = self.nl80211.clone() else {
            return;
        };
        let tx = self.wireless_tx.clone();
        tokio::task::spawn_blocking(move || {
            let answer = match nl.lock() {
                Ok(mut nl) => nl.query(index),
                Err(_) => return,
            };
            match answer {
                Ok(w) => {
                    let _ = tx.blocking_send((index, w));
                }
                Err(e) => tracing::debug!(index, error = %e, "nl80211 query failed"),
            }
        });
    }

    fn apply_routing(&mut self, plan: &RoutingPlan) {
        let Some(r) = &mut self.routing else { return };
        if self.dry_run {
            tracing::info!(
                routes = plan.routes.len(),
                rules = plan.rules.len(),
                "dry run: policy routing not applied"
            );
            return;
        }
        r.apply(plan);
    }

    fn steer(&mut self, cmd: PmCommand) {
        match &self.upm {
            Some(u) => u.submit(None, cmd),
            None => tracing::info!(?cmd, "dry run: subflow not changed"),
        }
    }

    fn on_pm_events(&mut self, events: Vec<PmEvent>) {
        let events: Vec<Event> = events
            .into_iter()
            .map(|e| match e {
                PmEvent::Connection {
                    token,
                    local,
                    remote,
                } => Event::MptcpConnection {
                    token,
                    local,
                    remote,
                },
                PmEvent::Closed { token } => Event::MptcpClosed { token },
                PmEvent::SubflowUp {
                    token,
                    local,
                    remote,
                    backup,
                } => Event::MptcpSubflowUp {
                    token,
                    local,
                    remote,
                    backup,
                },
                PmEvent::SubflowClosed {
                    token,
                    local,
                    remote,
                } => Event::MptcpSubflowClosed {
                    token,
                    local,
                    remote,
                },
            })
            .collect();
        if !events.is_empty() {
            self.core.handle_all(Instant::now(), events);
        }
    }

    /// The kernel answered a userspace path manager request: reply to the app that asked.
    fn on_pm_done(&mut self, (tag, cmd, result, detail): Done<Reply2>) {
        let Some((client, id)) = tag else { return };
        let why = detail
            .map(|d| format!(" (the kernel says: {d})"))
            .unwrap_or_default();
        let options = self
            .opts_pending
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
        self.reply(client, &reply);
    }

    /// Removes a subflow's options entry once the kernel answered its creation, and says
    /// whether the program applied them (it ran while the kernel connected the subflow).
    fn take_options(&mut self, k: &subflow_opts::Key) -> Result<(), String> {
        let Some(Ok(so)) = &self.subflow_opts else {
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

    fn apply_mptcp(&mut self, plan: &MptcpPlan) {
        let Some(m) = &mut self.mptcp else { return };
        if self.dry_run {
            tracing::info!(
                endpoints = plan.endpoints.len(),
                "dry run: MPTCP endpoints not changed"
            );
            return;
        }
        m.apply(plan);
    }

    /// Queues a frame for a client; a client whose queue is full is not reading and is dropped.
    fn send(&mut self, client: ClientId, frame: Arc<[u8]>) {
        let Some(c) = self.conns.get(&client) else {
            return;
        };
        match c.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(client, app = %c.peer.app, "client does not read its events; dropping it");
                self.drop_client(client);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.drop_client(client),
        }
    }

    fn reply(&mut self, client: ClientId, reply: &Reply) {
        self.send(client, proto::encode(reply).into());
    }

    fn drop_client(&mut self, client: ClientId) {
        if let Some(c) = self.conns.remove(&client) {
            c.reader.abort();
            if c.subscribed {
                self.core
                    .handle(Instant::now(), Event::ClientUnsubscribed { client });
            }
        }
    }

    fn on_client(&mut self, m: FromClient) {
        match m {
            FromClient::Connected {
                client,
                peer,
                tx,
                reader,
            } => {
                tracing::info!(client, uid = peer.uid, app = %peer.app, admin = peer.admin, "client connected");
                self.conns.insert(
                    client,
                    Conn {
                        peer,
                        tx,
                        reader,
                        subscribed: false,
                        mptcp_tokens: Vec::new(),
                    },
                );
            }
            FromClient::Gone { client } => {
                tracing::debug!(client, "client gone");
                self.drop_client(client);
            }
            FromClient::Request { client, request } => self.on_request(client, request),
        }
    }

    fn on_request(&mut self, client: ClientId, request: Request) {
        let Some(conn) = self.conns.get(&client) else {
            return;
        };
        let peer = conn.peer.clone();
        let id = request.id();
        let denied = |what: &str| Reply::Error {
            id,
            code: "denied".into(),
            message: format!(
                "{what} needs root or the admin group; this connection is uid {} (app `{}`)",
                peer.uid, peer.app
            ),
        };
        let now = Instant::now();
        let reply = match request {
            // The connection task answers hello and refuses a second one.
            Request::Hello { .. } => return,
            Request::Subscribe { id, app, flow } => {
                let app = app.unwrap_or_else(|| peer.app.clone());
                if app != peer.app && !peer.admin {
                    denied(&format!("subscribing as another app (`{app}`)"))
                } else {
                    self.reply(
                        client,
                        &Reply::Subscribed {
                            id,
                            app: app.clone(),
                        },
                    );
                    if let Some(c) = self.conns.get_mut(&client) {
                        c.subscribed = true;
                    }
                    self.core
                        .handle(now, Event::ClientSubscribed { client, app, flow });
                    return;
                }
            }
            Request::Unsubscribe { id } => {
                if let Some(c) = self.conns.get_mut(&client) {
                    c.subscribed = false;
                }
                self.core.handle(now, Event::ClientUnsubscribed { client });
                Reply::Ok { id }
            }
            Request::Status { id } => {
                let detail = peer.admin;
                let status = Status {
                    agent: server::agent_name(),
                    policy: self
                        .policy_path
                        .as_ref()
                        .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
                    dry_run: self.dry_run,
                    interfaces: self.core.interfaces(now).len(),
                    subscribers: self.conns.values().filter(|c| c.subscribed).count(),
                    mptcp_connections: self.conns.values().map(|c| c.mptcp_tokens.len()).sum(),
                    clients: detail.then(|| self.core.clients()),
                    probes: detail.then(|| self.core.probes()),
                };
                Reply::Status { id, status }
            }
            Request::Links { id } => Reply::Links {
                id,
                interfaces: self.core.interfaces(now),
            },
            Request::Explain { id, app, flow } => {
                let app = app.unwrap_or_else(|| peer.app.clone());
                if app != peer.app && !peer.admin {
                    denied(&format!("reading another app's decision (`{app}`)"))
                } else {
                    Reply::Decision {
                        id,
                        decision: self.core.explain(&app, flow, now),
                    }
                }
            }
            Request::Reload { id } => {
                if !peer.admin {
                    denied("reload")
                } else {
                    match self.reload() {
                        Ok(policy) => Reply::Reloaded { id, policy },
                        Err(message) => Reply::Error {
                            id: Some(id),
                            code: "reload_failed".into(),
                            message,
                        },
                    }
                }
            }
            Request::ReportPath {
                id,
                interface,
                rtt_ms,
                stalled,
            } => {
                if !self.conns.get(&client).is_some_and(|c| c.subscribed) {
                    Reply::Error {
                        id: Some(id),
                        code: "not_subscribed".into(),
                        message:
                            "path reports are taken from subscribed sessions only; subscribe first"
                                .into(),
                    }
                } else {
                    self.core.handle(
                        now,
                        Event::PathReport {
                            client,
                            interface,
                            rtt_ms,
                            stalled,
                        },
                    );
                    Reply::Ok { id }
                }
            }
            Request::RegisterMptcp { id, token } => {
                if let Some(c) = self.conns.get_mut(&client)
                    && !c.mptcp_tokens.contains(&token)
                {
                    // Bounded: a client cannot grow the agent without limit.
                    if c.mptcp_tokens.len() >= 1024 {
                        c.mptcp_tokens.remove(0);
                    }
                    c.mptcp_tokens.push(token);
                }
                self.core
                    .handle(now, Event::MptcpRegistered { client, token });
                Reply::Ok { id }
            }
            Request::MptcpSubflowCreate { id, token, .. }
            | Request::MptcpSubflowDestroy { id, token, .. }
            | Request::MptcpSubflowSetBackup { id, token, .. } => {
                // The same app: a connection of the same uid that registered the token and is
                // still open (one-shot control connections next to a session's subscription).
                let uid = self.conns.get(&client).map(|c| c.peer.uid);
                let registered = self
                    .conns
                    .values()
                    .any(|c| Some(c.peer.uid) == uid && c.mptcp_tokens.contains(&token));
                if !registered {
                    Reply::Error {
                        id: Some(id),
                        code: "denied".into(),
                        message: format!(
                            "MPTCP connection {token:#010x} was not registered by this app \
                             (send register_mptcp first)"
                        ),
                    }
                } else if self.upm.is_none() {
                    Reply::Error {
                        id: Some(id),
                        code: "failed".into(),
                        message: "this roamd does not steer MPTCP subflows (no userspace path \
                                  manager; `[mptcp] userspace = true` in its config)"
                            .into(),
                    }
                } else {
                    let key = match self.subflow_options(&request) {
                        Ok(k) => k,
                        Err(message) => {
                            let reply = Reply::Error {
                                id: Some(id),
                                code: "failed".into(),
                                message,
                            };
                            self.reply(client, &reply);
                            return;
                        }
                    };
                    match self.subflow_command(&request) {
                        Ok(cmd) => {
                            if let Some(k) = key {
                                self.opts_pending.insert((client, id), k);
                            }
                            if let Some(u) = &self.upm {
                                u.submit(Some((client, id)), cmd);
                            }
                            // Answered when the kernel has (on_pm_done).
                            return;
                        }
                        Err(message) => {
                            if let (Some(k), Some(Ok(so))) = (key, &self.subflow_opts) {
                                let _ = so.remove(&k);
                            }
                            Reply::Error {
                                id: Some(id),
                                code: "not_found".into(),
                                message,
                            }
                        }
                    }
                }
            }
        };
        self.reply(client, &reply);
    }

    /// For a `mptcp_subflow_create` with options: records them in the BPF map for the
    /// subflow's addresses and returns the key to remove once the kernel answered.
    fn subflow_options(&self, request: &Request) -> Result<Option<subflow_opts::Key>, String> {
        let Request::MptcpSubflowCreate {
            local,
            remote,
            options: Some(options),
            ..
        } = request
        else {
            return Ok(None);
        };
        if options.is_empty() {
            return Ok(None);
        }
        options
            .check()
            .map_err(|e| format!("invalid subflow options: {e}"))?;
        if let Some(n) = options.notsent_lowat {
            return Err(format!(
                "TCP_NOTSENT_LOWAT = {n} belongs to the connection, not to one subflow (the \
                 kernel keeps it on the MPTCP socket): set it with set_tcp_options"
            ));
        }
        let so = match &self.subflow_opts {
            Some(Ok(so)) => so,
            Some(Err(why)) => {
                return Err(format!(
                    "this roamd cannot set per-subflow TCP options: {why}"
                ));
            }
            None => {
                return Err(
                    "this roamd cannot set per-subflow TCP options: it runs no userspace \
                            path manager (`[mptcp] userspace = true`)"
                        .into(),
                );
            }
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
        Ok(Some(k))
    }

    /// The kernel request for an app's `mptcp_subflow_*`, checked against the connections and
    /// subflows the kernel's events told about.
    fn subflow_command(&mut self, request: &Request) -> Result<PmCommand, String> {
        let token = match request {
            Request::MptcpSubflowCreate { token, .. }
            | Request::MptcpSubflowDestroy { token, .. }
            | Request::MptcpSubflowSetBackup { token, .. } => *token,
            _ => return Err("not a subflow request".into()),
        };
        let Some(subflows) = self.core.mptcp_subflows(token) else {
            return Err(format!(
                "the kernel has no client MPTCP connection {token:#010x} that roamd saw \
                 established (connections made before roamd started are not steered)"
            ));
        };
        let find = |local: std::net::SocketAddr, remote: std::net::SocketAddr| {
            subflows.iter().any(|(l, r)| {
                l.ip() == local.ip()
                    && (local.port() == 0 || l.port() == local.port())
                    && *r == remote
            })
        };
        Ok(match *request {
            Request::MptcpSubflowCreate {
                local,
                remote,
                backup,
                ..
            } => PmCommand::Create {
                token,
                local,
                remote,
                backup,
                index: 0,
                id: self.core.mptcp_local_id(token, local.ip()).ok_or_else(|| {
                    format!("connection {token:#010x} has no MPTCP address id left for {local}")
                })?,
            },
            Request::MptcpSubflowDestroy { local, remote, .. } => {
                if !find(local, remote) {
                    return Err(format!(
                        "connection {token:#010x} has no subflow {local} -> {remote}"
                    ));
                }
                PmCommand::Destroy {
                    token,
                    local,
                    remote,
                }
            }
            Request::MptcpSubflowSetBackup {
                local,
                remote,
                backup,
                ..
            } => {
                if !find(local, remote) {
                    return Err(format!(
                        "connection {token:#010x} has no subflow {local} -> {remote}"
                    ));
                }
                PmCommand::SetBackup {
                    token,
                    local,
                    remote,
                    backup,
                }
            }
            _ => return Err("not a subflow request".into()),
        })
    }

    /// Re-reads the policy file. On error the policy in force stays and the rendered error
    /// (file, line, column, caret) is returned and logged.
    fn reload(&mut self) -> Result<String, String> {
        let Some(path) = self.policy_path.clone() else {
            let msg = "roamd runs the built-in policy (started without --policy): there is no file to reload".to_owned();
            tracing::warn!("{msg}");
            return Err(msg);
        };
        match load_policy(&path) {
            Ok(policy) => {
                tracing::info!(file = %path.display(), policy = %policy.summary(), "policy reloaded");
                self.core
                    .handle(Instant::now(), Event::PolicyReplaced(policy));
                Ok(path.display().to_string())
            }
            Err(rendered) => {
                tracing::error!(file = %path.display(), "reload failed; the previous policy stays in force:\n{rendered}");
                Err(format!("{rendered}\nthe previous policy stays in force"))
            }
        }
    }
}
