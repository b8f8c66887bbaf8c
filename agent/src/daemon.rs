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
use crate::core::{
    Action, AgentFacts, ClientId, Core, Event, LinkInfo, MptcpEvent, Policy, Requested,
    SubflowCommand,
};
use crate::enforce::mptcp::MptcpEnforcer;
use crate::enforce::routing::RoutingEnforcer;
use crate::enforce::subflow_opts::{self, Outcome, SubflowOptions};
use crate::enforce::userspace_pm::{self, Done, PmEvents, UserspacePm};
use crate::ipc::proto::{self, Reply, TcpOptions};
use crate::ipc::server::{self, FromClient, Peer, supplementary_groups};
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

/// The I/O half of a client; who it is and what it may do is the core's (`Core::connect`).
struct Conn {
    app: String,
    tx: mpsc::Sender<Arc<[u8]>>,
    reader: AbortHandle,
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
    upm: Option<UserspacePm<Tag>>,
    /// Per-subflow TCP options (BPF): `None` without the userspace path manager or when BPF
    /// could not be used (the core knows why and tells apps).
    subflow_opts: Option<SubflowOptions>,
    /// Subflow creations with options under way: their map keys, by client and request id.
    opts_pending: HashMap<(ClientId, u64), subflow_opts::Key>,
}

/// The congestion controls the kernel has loaded.
const AVAILABLE_CC: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

/// Who a userspace path manager answer goes to.
type Tag = Option<(ClientId, u64)>;

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
    let mut core = Core::new(policy, opts.config.probe.clone());
    core.describe(AgentFacts {
        agent: server::agent_name(),
        policy: opts
            .policy_path
            .as_ref()
            .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
        dry_run: opts.dry_run,
    });
    let mut d = Daemon {
        core,
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
    let (upm_tx, mut upm_done) = mpsc::unbounded_channel::<Done<Tag>>();
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
        let opts = SubflowOptions::open(opts.config.mptcp_bpf_cgroup.as_deref());
        d.core
            .enable_steering(opts.as_ref().map(|_| ()).map_err(|e| e.clone()));
        match &opts {
            Ok(o) => {
                tracing::info!(cgroup = %o.cgroup().display(), "per-subflow TCP options on: sock_ops program attached (bpf_link)")
            }
            Err(e) => {
                tracing::warn!(error = %e, "per-subflow TCP options are unavailable; mptcp_subflow_create with options will fail")
            }
        }
        d.subflow_opts = opts.ok();
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
                        Ok(events) => {
                            let dump = d.translate_all(events);
                            d.core.resync(Instant::now(), dump);
                        }
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
                Ok(events) => if !events.is_empty() {
                d.core.handle_all(Instant::now(), events.into_iter().map(Event::Mptcp));
            },
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
async fn next_pm_events(e: &mut Option<PmEvents>) -> std::io::Result<Vec<MptcpEvent>> {
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

impl Daemon {
    fn on_monitor(&mut self, events: Vec<MonitorEvent>) {
        let events = self.translate_all(events);
        if !events.is_empty() {
            self.core.handle_all(Instant::now(), events);
        }
    }

    fn translate_all(&mut self, events: Vec<MonitorEvent>) -> Vec<Event> {
        events
            .into_iter()
            .filter_map(|e| self.translate(e))
            .collect()
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
                present: true,
            } => Event::AddressAdded {
                index,
                addr,
                prefix_len,
            },
            MonitorEvent::Address {
                index,
                addr,
                prefix_len,
                present: false,
            } => Event::AddressRemoved {
                index,
                addr,
                prefix_len,
            },
            MonitorEvent::Route {
                route,
                present: true,
            } => Event::RouteAdded(route),
            MonitorEvent::Route {
                route,
                present: false,
            } => Event::RouteRemoved(route),
        })
    }

    fn run_actions(&mut self) {
        // Bounded: every round either empties the queue or feeds send failures back, and a
        // send failure produces no new probe until the next deadline.
        for _ in 0..8 {
            let mut failed = Vec::new();
            while let Some(a) = self.core.poll_action() {
                match a {
                    Action::Push { client, update } => self.reply(client, &Reply::Update(update)),
                    Action::Reply { client, reply } => self.reply(client, &reply),
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
                    Action::Routing(plan) => match &mut self.routing {
                        Some(_) if self.dry_run => tracing::info!(
                            routes = plan.routes.len(),
                            rules = plan.rules.len(),
                            "dry run: policy routing not applied"
                        ),
                        Some(r) => r.apply(&plan),
                        None => {}
                    },
                    Action::Mptcp(plan) => match &mut self.mptcp {
                        Some(_) if self.dry_run => tracing::info!(
                            endpoints = plan.endpoints.len(),
                            "dry run: MPTCP endpoints not changed"
                        ),
                        Some(m) => m.apply(&plan),
                        None => {}
                    },
                    Action::Reload { client, id } => {
                        let outcome = self.reload();
                        self.core.reloaded(client, id, outcome);
                    }
                    Action::Subflow { command, requested } => self.subflow(command, requested),
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

    /// Hands a subflow command to the userspace path manager; an app's subflow options are
    /// recorded for the BPF program first.
    fn subflow(&mut self, command: SubflowCommand, requested: Option<Requested>) {
        let Some(upm) = &self.upm else {
            tracing::info!(?command, "dry run: subflow not changed");
            return;
        };
        let Some(Requested {
            client,
            id,
            options,
        }) = requested
        else {
            upm.submit(None, command);
            return;
        };
        if let Some(options) = options {
            match self.record_options(&command, &options) {
                Ok(key) => {
                    self.opts_pending.insert((client, id), key);
                }
                Err(message) => {
                    let reply = Reply::Error {
                        id: Some(id),
                        code: "failed".into(),
                        message,
                    };
                    return self.reply(client, &reply);
                }
            }
        }
        if let Some(upm) = &self.upm {
            upm.submit(Some((client, id)), command);
        }
    }

    /// Records a new subflow's TCP options in the BPF map (the core checked them) and returns
    /// the key to remove once the kernel answered.
    fn record_options(
        &self,
        command: &SubflowCommand,
        options: &TcpOptions,
    ) -> Result<subflow_opts::Key, String> {
        let (SubflowCommand::Create { local, remote, .. }, Some(so)) =
            (command, &self.subflow_opts)
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

    /// The kernel answered a userspace path manager request: reply to the app that asked.
    fn on_pm_done(&mut self, (tag, cmd, result, detail): Done<Tag>) {
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
        let Some(so) = &self.subflow_opts else {
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

    /// Queues a frame for a client; a client whose queue is full is not reading and is dropped.
    fn send(&mut self, client: ClientId, frame: Arc<[u8]>) {
        let Some(c) = self.conns.get(&client) else {
            return;
        };
        match c.tx.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(client, app = %c.app, "client does not read its events; dropping it");
                self.drop_client(client);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.drop_client(client),
        }
    }

    fn reply(&mut self, client: ClientId, reply: &Reply) {
        let frame: Arc<[u8]> = proto::encode(reply).into();
        self.send(client, frame);
    }

    fn drop_client(&mut self, client: ClientId) {
        if let Some(c) = self.conns.remove(&client) {
            c.reader.abort();
        }
        self.core.disconnect(Instant::now(), client);
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
                let app = peer.app.clone();
                self.conns.insert(client, Conn { app, tx, reader });
                self.core.connect(client, peer);
            }
            FromClient::Gone { client } => {
                tracing::debug!(client, "client gone");
                self.drop_client(client);
            }
            FromClient::Request { client, request } => {
                self.core.request(Instant::now(), client, request)
            }
        }
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
