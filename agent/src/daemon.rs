//! The tokio shell around the core: one loop that waits on the netlink monitor, the clients,
//! the probe replies, the signals and the core's next deadline, feeds what arrives into the
//! core, and carries out the actions it returns. Nothing here decides anything.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::caps;
use crate::config::Config;
use crate::core::{Action, AgentFacts, ClientId, Core, Event, Policy};
use crate::enforce::Enforcers;
use crate::enforce::subflows::{FromKernel, Subflows};
use crate::ipc::conns::{Conn, Conns};
use crate::ipc::proto::{Reply, Update};
use crate::ipc::server::{self, FromClient};
use crate::monitor::LinkFacts;
use crate::monitor::classify::KindOverride;
use crate::monitor::counters;
use crate::monitor::netlink::{Monitor, MonitorError, MonitorEvent};
use crate::monitor::nl80211::{Wireless, WirelessAsker};
use crate::probe::{ProbeReply, Prober, portal};
use tracing::Instrument;

/// Per-interface IPv6 counters of the network namespace roamd runs in (procfs resolves
/// `/proc/net` through the reading process).
const SNMP6: &str = "/proc/net/dev_snmp6";

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

struct Daemon {
    core: Core,
    conns: Conns,
    prober: Prober,
    config: Config,
    overrides: Vec<KindOverride>,
    sysfs_root: PathBuf,
    policy_path: Option<PathBuf>,
    kernel: Enforcers,
    /// nl80211, when the kernel has cfg80211.
    wireless: Option<WirelessAsker>,
    /// Finished captive-portal checks: interface index and HTTP status (or why none).
    portal_tx: mpsc::Sender<(u32, Result<u16, String>)>,
    /// The userspace path manager, when the config asks for it (never in a dry run).
    subflows: Option<Subflows>,
}

/// Runs the agent until SIGTERM or SIGINT. `ready` is called once the initial dump is in and
/// the socket accepts connections.
pub async fn run(opts: Options, ready: impl FnOnce(&Core)) -> anyhow::Result<()> {
    let policy = match &opts.policy_path {
        Some(p) => load_policy(p).map_err(|e| anyhow::anyhow!("{e}\nroamd: not started; fix the policy file (`roamctl policy check FILE` shows every error)"))?,
        None => Policy::default_policy(),
    };
    tracing::info!(policy = %policy.summary(), file = ?opts.policy_path, "policy loaded");
    if !opts.dry_run
        && (opts.config.routing.is_some() || opts.config.mptcp)
        && !caps::has(caps::NET_ADMIN)
    {
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

    let identify = server::identify(&opts.config);

    // Bound first: a second roamd must fail here, before it touches the first one's routes
    // and endpoints.
    let listener = server::bind(&opts.socket)
        .with_context(|| format!("listening on {}", opts.socket.display()))?;
    let _socket_file = server::SocketFile(opts.socket.clone());
    let mut config = opts.config.clone();
    // CAP_NET_RAW is what SO_BINDTODEVICE needs. Without it every probe would fail to
    // leave, and a failed probe counts as a lost one: links would be declared dead for the
    // agent's own lack of rights. Not probing at all is the honest outcome.
    if config.probes_anything() && !caps::has(caps::NET_RAW) {
        tracing::warn!(
            "probes need CAP_NET_RAW to bind to an interface; without it links are never validated by probes (they stay `up`)"
        );
        config.without_probes();
    }
    let mut monitor = Monitor::open().context("opening the netlink route socket")?;
    let (reply_tx, mut replies) = mpsc::channel::<ProbeReply>(1024);
    let (wireless_tx, mut wireless) = mpsc::channel::<(u32, Wireless)>(64);
    let (portal_tx, mut portal_done) = mpsc::channel::<(u32, Result<u16, String>)>(64);
    let mut core = Core::new(policy, opts.config.probe.clone());
    core.describe(AgentFacts {
        agent: server::agent_name(),
        policy: opts
            .policy_path
            .as_ref()
            .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
        dry_run: opts.dry_run,
    });
    let kernel = Enforcers::open(
        opts.config.routing.is_some(),
        opts.config.mptcp,
        opts.dry_run,
    )?;
    if let Some(cfg) = opts.config.routing {
        core.enable_routing(cfg);
    }
    core.set_apps(opts.config.apps.clone());
    let mut subflows = None;
    if opts.config.mptcp_userspace && opts.dry_run {
        tracing::info!("dry run: the userspace MPTCP path manager is not started");
    } else if opts.config.mptcp_userspace {
        let (s, options) = Subflows::start(opts.config.mptcp_bpf_cgroup.as_deref())?;
        core.enable_steering(options);
        subflows = Some(s);
    }
    let mut d = Daemon {
        core,
        conns: Conns::default(),
        prober: Prober::new(reply_tx),
        overrides: config.kind_overrides(),
        config,
        sysfs_root: opts.sysfs_root.clone(),
        policy_path: opts.policy_path.clone(),
        kernel,
        wireless: WirelessAsker::open(wireless_tx),
        portal_tx,
        subflows,
    };
    let initial = monitor
        .dump()
        .await
        .context("dumping links, addresses and routes")?;
    d.on_monitor(initial);
    d.core.started();
    if opts.config.mptcp {
        d.core.enable_mptcp(Instant::now());
    }
    d.run_actions();

    let (client_tx, mut from_clients) = mpsc::channel::<FromClient>(1024);
    let clients = server::ClientThread::start(listener, identify, client_tx)
        .context("starting the clients' thread")?;

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
                if let Ok((policy, _)) = d.reload() {
                    d.core.handle(Instant::now(), Event::PolicyReplaced(policy));
                }
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
            k = Subflows::next_of(&mut d.subflows) => match k {
                FromKernel::Events(events) => {
                    d.core.handle_all(Instant::now(), events.into_iter().map(Event::Mptcp));
                }
                FromKernel::Done(done) => {
                    if let Some((client, reply)) = d.subflows.as_mut().and_then(|s| s.answer(done)) {
                        d.reply(client, &reply);
                    }
                }
            },
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
    clients.stop();
    if let Some(s) = d.subflows.take() {
        s.stop();
    }
    d.kernel.clear();
    tracing::info!("roamd stopped");
    result
}

impl Daemon {
    fn on_monitor(&mut self, events: Vec<MonitorEvent>) {
        let events = self.translate_all(events);
        if !events.is_empty() {
            self.core.handle_all(Instant::now(), events);
        }
    }

    /// The core's events for a batch from the monitor; a link that is gone stops being
    /// probed at once.
    fn translate_all(&mut self, events: Vec<MonitorEvent>) -> Vec<Event> {
        let facts = LinkFacts {
            sysfs_root: &self.sysfs_root,
            config: &self.config,
            overrides: &self.overrides,
        };
        let events: Vec<Event> = events.into_iter().filter_map(|e| facts.event(e)).collect();
        for e in &events {
            if let Event::LinkRemoved { index } = e {
                self.prober.stop(*index);
            }
        }
        events
    }

    fn run_actions(&mut self) {
        // Bounded: every round either empties the queue or feeds send failures back, and a
        // send failure produces no new probe until the next deadline.
        for _ in 0..8 {
            // Probe send failures and counter readings go back in as one batch.
            let mut failed = Vec::new();
            loop {
                let Some(a) = self.core.poll_action() else {
                    if !self.conns.batch_open() {
                        break;
                    }
                    // Dropping a client that failed a frame may queue more actions.
                    self.flush_pushes();
                    continue;
                };
                if !matches!(a, Action::Push { .. }) {
                    // Everything before this action goes out before it (a `subscribed` reply
                    // before the first update).
                    self.flush_pushes();
                }
                match a {
                    Action::Push { client, update } => self.push(client, update),
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
                    Action::ReadCounters { index, interface } => {
                        match counters::read(&self.sysfs_root, Path::new(SNMP6), &interface) {
                            Ok(c) => failed.push(Event::Counters {
                                index,
                                rx_packets: c.rx_packets,
                                rx_multicast: c.rx_multicast,
                                tx_packets: c.tx_packets,
                                tx_multicast: c.tx_multicast,
                            }),
                            Err(e) => {
                                tracing::debug!(%interface, error = %e, "packet counters unread")
                            }
                        }
                    }
                    Action::QueryWireless { index } => {
                        if let Some(w) = &self.wireless {
                            w.ask(index);
                        }
                    }
                    Action::Routing(plan) => self.kernel.routing(&plan),
                    Action::Mptcp(plan) => self.kernel.mptcp(&plan),
                    Action::Reload { client, id } => {
                        let outcome = self.reload();
                        self.core.reloaded(Instant::now(), client, id, outcome);
                    }
                    Action::Subflow { command, requested } => match &mut self.subflows {
                        Some(s) => {
                            if let Some((client, reply)) = s.submit(command, requested) {
                                self.reply(client, &reply);
                            }
                        }
                        None => tracing::info!(?command, "dry run: subflow not changed"),
                    },
                }
            }
            if failed.is_empty() {
                return;
            }
            self.core.handle_all(Instant::now(), failed);
        }
    }

    /// Writes a reply, dropping clients that could not take their frames.
    fn reply(&mut self, client: ClientId, reply: &Reply) {
        let dropped = self.conns.reply(client, reply);
        self.drop_all(dropped);
    }

    /// Queues a decision in the round's batch ([`Conns::push`]).
    fn push(&mut self, client: ClientId, update: Arc<Update>) {
        let dropped = self.conns.push(client, update);
        self.drop_all(dropped);
    }

    /// Writes the round's batch of pushes ([`Conns::flush`]).
    fn flush_pushes(&mut self) {
        let dropped = self.conns.flush();
        self.drop_all(dropped);
    }

    fn drop_all(&mut self, clients: Vec<ClientId>) {
        for c in clients {
            self.drop_client(c);
        }
    }

    fn drop_client(&mut self, client: ClientId) {
        self.conns.remove(client);
        self.core.disconnect(Instant::now(), client);
    }

    fn on_client(&mut self, m: FromClient) {
        match m {
            FromClient::Connected {
                client,
                peer,
                out,
                reader,
            } => {
                tracing::info!(client, uid = peer.uid, app = %peer.app, admin = peer.admin, "client connected");
                let conn = Conn::new(peer.app.clone(), peer.uid, peer.pid, out, reader);
                self.conns.insert(client, conn);
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

    /// Re-reads the policy file: the new policy and the file's name, or the rendered error
    /// (file, line, column, caret), logged either way. The caller puts it in force.
    fn reload(&self) -> Result<(Policy, String), String> {
        let Some(path) = self.policy_path.clone() else {
            let msg = "roamd runs the built-in policy (started without --policy): there is no file to reload".to_owned();
            tracing::warn!("{msg}");
            return Err(msg);
        };
        match load_policy(&path) {
            Ok(policy) => {
                tracing::info!(file = %path.display(), policy = %policy.summary(), "policy reloaded");
                Ok((policy, path.display().to_string()))
            }
            Err(rendered) => {
                tracing::error!(file = %path.display(), "reload failed; the previous policy stays in force:\n{rendered}");
                Err(format!("{rendered}\nthe previous policy stays in force"))
            }
        }
    }
}
