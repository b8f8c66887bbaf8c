//! The client table: who is connected (uid, app id, admin or not), who subscribed to which
//! app's decisions, and which MPTCP connections each registered. Requests arrive through
//! [`Core::request`] and leave as [`Action::Reply`] (or as a deferred piece of work for the
//! shell: [`Action::Reload`], [`Action::Subflow`]); every permission rule of the agent is
//! decided in this file:
//!
//! - acting for an app other than the connection's own (subscribing as it, reading its
//!   decision) needs admin rights ([`may_act_as`]);
//! - `reload` needs admin rights, and so does the per-client and per-link detail of `status`;
//! - path reports are heard from subscribed connections only;
//! - a connection keeps at most [`MAX_TOKENS`] registered MPTCP tokens, the oldest forgotten
//!   first;
//! - an `mptcp_subflow_*` request is carried out only for a token that an open connection of
//!   the same uid registered (`ClientTable::owns`); admin rights do not widen this;
//! - a registration steers the connection only while its registrant is subscribed.
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use roam_ipc::proto::{Reply, Request, Status, TcpOptions};
use roam_policy::{Decision, FlowClock, FlowThresholds, LinkKind, LinkState, MultipathMode, Path};

use crate::{Action, ClientId, Core, Event, Policy, Requested, SubflowCommand};

/// Who is on the other end of a connection, as the shell identified it (`SO_PEERCRED`, the
/// config's uid-to-app map, the admin group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// uid from `SO_PEERCRED`.
    pub uid: u32,
    /// Primary gid from `SO_PEERCRED`.
    pub gid: u32,
    /// pid from `SO_PEERCRED`, if the kernel gave one.
    pub pid: Option<i32>,
    /// The app id the uid maps to (`uid:N` when the config does not name it).
    pub app: String,
    /// Root, or a member of the configured admin group.
    pub admin: bool,
}

/// The most MPTCP tokens one connection keeps registered: a client cannot grow the agent
/// without limit. Registering one more forgets the oldest.
pub const MAX_TOKENS: usize = 1024;

/// What the shell knows about itself that `status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    /// `roamd VERSION`.
    pub agent: String,
    /// The policy file, or `built-in`.
    pub policy: String,
    /// Whether the agent runs with `--dry-run`.
    pub dry_run: bool,
}

impl Default for AgentFacts {
    fn default() -> Self {
        AgentFacts {
            agent: "roamd".into(),
            policy: "built-in".into(),
            dry_run: false,
        }
    }
}

/// What a client was last sent, less the explanation: a new explanation alone (a figure in it
/// moved) is not worth a push.
pub(crate) type Pushed = std::sync::Arc<(
    MultipathMode,
    Vec<Path>,
    Vec<(String, LinkKind, LinkState)>,
    Option<FlowThresholds>,
)>;

/// One open connection.
#[derive(Debug)]
pub(crate) struct Connected {
    pub(crate) peer: Peer,
    /// MPTCP tokens it registered, oldest first, at most [`MAX_TOKENS`].
    pub(crate) tokens: VecDeque<u32>,
}

/// A subscribed connection and what it was last told.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) app: String,
    /// The flow of a subscriber that reports one; `None`: zero bytes, zero age, and no
    /// thresholds in its updates.
    pub(crate) flow: Option<FlowClock>,
    /// When its flow's age next crosses one of its app's thresholds.
    pub(crate) next_flow_check: Option<Instant>,
    /// What was last pushed: decision without its explanation, and the link summary.
    pub(crate) pushed: Option<Pushed>,
    /// Its decision now; shared by every subscriber of the app in the same flow interval.
    pub(crate) last: Option<std::sync::Arc<Decision>>,
}

/// Every open connection and every subscription.
#[derive(Debug, Default)]
pub(crate) struct ClientTable {
    pub(crate) conns: BTreeMap<ClientId, Connected>,
    pub(crate) subs: BTreeMap<ClientId, Subscription>,
}

/// Whether `peer` may act for `app` (subscribe as it, read its decision): its own app, or any
/// app with admin rights.
pub fn may_act_as(peer: &Peer, app: &str) -> bool {
    app == peer.app || peer.admin
}

impl ClientTable {
    /// Registers `token` for `client`, forgetting its oldest token beyond [`MAX_TOKENS`].
    fn register(&mut self, client: ClientId, token: u32) {
        if let Some(c) = self.conns.get_mut(&client)
            && !c.tokens.contains(&token)
        {
            if c.tokens.len() >= MAX_TOKENS {
                c.tokens.pop_front();
            }
            c.tokens.push_back(token);
        }
    }

    /// Whether `client` may steer MPTCP connection `token`: the same app, that is a connection
    /// of the same uid that registered the token and is still open (one-shot control
    /// connections next to a session's subscription).
    pub(crate) fn owns(&self, client: ClientId, token: u32) -> bool {
        let Some(uid) = self.conns.get(&client).map(|c| c.peer.uid) else {
            return false;
        };
        self.conns
            .values()
            .any(|c| c.peer.uid == uid && c.tokens.contains(&token))
    }
}

fn error(id: u64, code: &str, message: String) -> Reply {
    Reply::Error {
        id: Some(id),
        code: code.into(),
        message,
    }
}

impl Core {
    /// Tells the core what `status` should say about the agent itself.
    pub fn describe(&mut self, facts: AgentFacts) {
        self.facts = facts;
    }

    /// A client said hello: from now on its requests are heard.
    pub fn connect(&mut self, client: ClientId, peer: Peer) {
        self.clients.conns.insert(
            client,
            Connected {
                peer,
                tokens: VecDeque::new(),
            },
        );
    }

    /// A client went away (or was dropped): its subscription ends and its tokens no longer
    /// authorise anyone.
    pub fn disconnect(&mut self, now: Instant, client: ClientId) {
        if self.clients.conns.remove(&client).is_some() && self.unsubscribe(client) {
            self.settle(now);
        }
    }

    /// One request from a connected client. The answer comes out as [`Action::Reply`] before
    /// whatever else the request changes; requests of unknown clients are ignored, and
    /// `hello` is the connection's business (answered before the client is connected here).
    pub fn request(&mut self, now: Instant, client: ClientId, request: Request) {
        let Some(conn) = self.clients.conns.get(&client) else {
            return;
        };
        let peer = conn.peer.clone();
        let denied = |id: u64, what: &str| {
            error(
                id,
                "denied",
                format!(
                    "{what} needs root or the admin group; this connection is uid {} (app `{}`)",
                    peer.uid, peer.app
                ),
            )
        };
        let reply = match request {
            Request::Hello { .. } => return,
            Request::Subscribe { id, app, flow } => {
                let app = app.unwrap_or_else(|| peer.app.clone());
                if !may_act_as(&peer, &app) {
                    denied(id, &format!("subscribing as another app (`{app}`)"))
                } else {
                    self.reply(
                        client,
                        Reply::Subscribed {
                            id,
                            app: app.clone(),
                        },
                    );
                    let flow = flow.map(|f| FlowClock::new(f, now));
                    match self.clients.subs.get_mut(&client) {
                        // A flow reporter's flow again (same app): what was pushed stays,
                        // so an update follows only when the decision changed.
                        Some(sub) if sub.app == app && sub.flow.is_some() && flow.is_some() => {
                            sub.flow = flow
                        }
                        _ => {
                            self.clients.subs.insert(
                                client,
                                Subscription {
                                    app,
                                    flow,
                                    next_flow_check: None,
                                    pushed: None,
                                    last: None,
                                },
                            );
                        }
                    }
                    self.settle(now);
                    return;
                }
            }
            Request::Unsubscribe { id } => {
                self.reply(client, Reply::Ok { id });
                self.unsubscribe(client);
                self.settle(now);
                return;
            }
            Request::Status { id } => Reply::Status {
                id,
                status: Status {
                    agent: self.facts.agent.clone(),
                    policy: self.facts.policy.clone(),
                    dry_run: self.facts.dry_run,
                    interfaces: self.links.len(),
                    subscribers: self.clients.subs.len(),
                    mptcp_connections: self.clients.conns.values().map(|c| c.tokens.len()).sum(),
                    clients: peer.admin.then(|| self.clients()),
                    probes: peer.admin.then(|| self.probes(now)),
                },
            },
            Request::Links { id } => Reply::Links {
                id,
                interfaces: self.interfaces(now),
                usage: self.usage(),
            },
            Request::Explain { id, app, flow } => {
                let app = app.unwrap_or_else(|| peer.app.clone());
                if !may_act_as(&peer, &app) {
                    denied(id, &format!("reading another app's decision (`{app}`)"))
                } else {
                    let mut decision = self.explain(&app, flow, now);
                    decision.explain.extend(self.app_rule_lines(&app));
                    Reply::Decision { id, decision }
                }
            }
            Request::Reload { id } => {
                if !peer.admin {
                    denied(id, "reload")
                } else {
                    self.actions.push_back(Action::Reload { client, id });
                    return;
                }
            }
            Request::ReportPath {
                id,
                interface,
                rtt_ms,
                stalled,
            } => {
                if !self.clients.subs.contains_key(&client) {
                    error(
                        id,
                        "not_subscribed",
                        "path reports are taken from subscribed sessions only; subscribe first"
                            .into(),
                    )
                } else {
                    self.reply(client, Reply::Ok { id });
                    let app = self.clients.subs.get(&client).map(|c| c.app.clone());
                    self.path_report(now, &app.unwrap_or_default(), &interface, rtt_ms, stalled);
                    self.settle(now);
                    return;
                }
            }
            Request::RegisterMptcp { id, token } => {
                self.reply(client, Reply::Ok { id });
                self.clients.register(client, token);
                // Steered by the registrant's decision, hence only while it is subscribed.
                if self.clients.subs.contains_key(&client)
                    && let Some(st) = &mut self.steering
                {
                    st.conn(token).client = Some(client);
                }
                self.settle(now);
                return;
            }
            Request::MptcpSubflowCreate { id, .. }
            | Request::MptcpSubflowDestroy { id, .. }
            | Request::MptcpSubflowSetBackup { id, .. } => {
                match self.subflow_request(client, &request) {
                    Ok((command, options)) => {
                        self.actions.push_back(Action::Subflow {
                            command,
                            requested: Some(Requested {
                                client,
                                id,
                                options,
                            }),
                        });
                        // Answered when the kernel has.
                        return;
                    }
                    Err((code, message)) => error(id, code, message),
                }
            }
        };
        self.reply(client, reply);
    }

    /// The shell read the policy file again for an admin's `reload` ([`Action::Reload`]): the
    /// new policy with the file's name, or the rendered error (the old policy stays). The
    /// admin is answered first, then the new policy is put in force.
    pub fn reloaded(
        &mut self,
        now: Instant,
        client: ClientId,
        id: u64,
        outcome: Result<(Policy, String), String>,
    ) {
        match outcome {
            Ok((policy, file)) => {
                self.reply(client, Reply::Reloaded { id, policy: file });
                self.handle(now, Event::PolicyReplaced(policy));
            }
            Err(message) => self.reply(client, error(id, "reload_failed", message)),
        }
    }

    fn reply(&mut self, client: ClientId, reply: Reply) {
        self.actions.push_back(Action::Reply { client, reply });
    }

    /// Ends `client`'s subscription; its connections are no longer steered. Returns whether
    /// it was subscribed.
    fn unsubscribe(&mut self, client: ClientId) -> bool {
        if let Some(st) = &mut self.steering {
            for c in st.conns.values_mut().filter(|c| c.client == Some(client)) {
                c.client = None;
            }
        }
        self.clients.subs.remove(&client).is_some()
    }

    /// Checks an app's `mptcp_subflow_*` and turns it into the kernel command (with the
    /// subflow's own TCP options, if it gave valid ones), or says why not: `(code, message)`.
    fn subflow_request(
        &mut self,
        client: ClientId,
        request: &Request,
    ) -> Result<(SubflowCommand, Option<TcpOptions>), (&'static str, String)> {
        let (token, local, remote) = match *request {
            Request::MptcpSubflowCreate {
                token,
                local,
                remote,
                ..
            }
            | Request::MptcpSubflowDestroy {
                token,
                local,
                remote,
                ..
            }
            | Request::MptcpSubflowSetBackup {
                token,
                local,
                remote,
                ..
            } => (token, local, remote),
            _ => return Err(("bad_request", "not a subflow request".into())),
        };
        if !self.clients.owns(client, token) {
            return Err((
                "denied",
                format!(
                    "MPTCP connection {token:#010x} was not registered by this app \
                     (send register_mptcp first)"
                ),
            ));
        }
        let Some(st) = &self.steering else {
            return Err((
                "failed",
                "this roamd does not steer MPTCP subflows (no userspace path manager; \
                 `[mptcp] userspace = true` in its config)"
                    .into(),
            ));
        };
        let options = match request {
            Request::MptcpSubflowCreate {
                options: Some(o), ..
            } if !o.is_empty() => {
                subflow_options(o, &st.options).map_err(|m| ("failed", m))?;
                Some(o.clone())
            }
            _ => None,
        };
        let not_found = |message: String| ("not_found", message);
        let Some(conn) = st.conns.get(&token) else {
            return Err(not_found(format!(
                "the kernel has no client MPTCP connection {token:#010x} that roamd saw \
                 established (connections made before roamd started are not steered)"
            )));
        };
        let has_subflow = conn.subflows.keys().any(|(l, r)| {
            l.ip() == local.ip() && (local.port() == 0 || l.port() == local.port()) && *r == remote
        });
        let no_subflow = || {
            not_found(format!(
                "connection {token:#010x} has no subflow {local} -> {remote}"
            ))
        };
        let command = match *request {
            Request::MptcpSubflowCreate { backup, .. } => SubflowCommand::Create {
                token,
                local,
                remote,
                backup,
                index: 0,
                id: self.mptcp_local_id(token, local.ip()).ok_or_else(|| {
                    not_found(format!(
                        "connection {token:#010x} has no MPTCP address id left for {local}"
                    ))
                })?,
            },
            Request::MptcpSubflowDestroy { .. } if has_subflow => SubflowCommand::Destroy {
                token,
                local,
                remote,
            },
            Request::MptcpSubflowSetBackup { backup, .. } if has_subflow => {
                SubflowCommand::SetBackup {
                    token,
                    local,
                    remote,
                    backup,
                }
            }
            _ => return Err(no_subflow()),
        };
        Ok((command, options))
    }
}

/// Whether TCP options given for one new subflow can be honoured: valid values, none that
/// belongs to the whole connection, and a shell able to set them (`available`).
fn subflow_options(options: &TcpOptions, available: &Result<(), String>) -> Result<(), String> {
    options
        .check()
        .map_err(|e| format!("invalid subflow options: {e}"))?;
    if let Some(n) = options.notsent_lowat {
        return Err(format!(
            "TCP_NOTSENT_LOWAT = {n} belongs to the connection, not to one subflow (the \
             kernel keeps it on the MPTCP socket): set it with set_tcp_options"
        ));
    }
    available
        .as_ref()
        .map_err(|why| format!("this roamd cannot set per-subflow TCP options: {why}"))?;
    Ok(())
}

/// Every permission rule of the module documentation, one test each, driven through
/// [`Core::request`] as the shell drives it: no socket, no root.
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use roam_ipc::proto::{Reply, Request, TcpOptions};
    use roam_policy::LinkKind;

    use super::*;
    use crate::tests::{addr, info};
    use crate::{Event, MptcpEvent, Policy, ProbeConfig};

    const ALICE: ClientId = 1;
    const ALICE_CTL: ClientId = 2;
    const BOB: ClientId = 3;
    const ROOT: ClientId = 4;
    const TOKEN: u32 = 0x0102_0304;

    fn peer(uid: u32, app: &str, admin: bool) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: None,
            app: app.into(),
            admin,
        }
    }

    /// wlan0 and rmnet0 up with an address each; alice (uid 1000, two connections), bob
    /// (uid 1001) and root connected, nobody subscribed.
    fn core(t0: Instant) -> Core {
        let policy = Policy::parse(
            "link wifi = kind wifi\nlink cell = kind cellular\n\
             default { prefer wifi over cell }\n",
        )
        .unwrap();
        let mut core = Core::new(policy, ProbeConfig::default());
        for (index, name, kind) in [
            (2, "wlan0", LinkKind::Wifi),
            (3, "rmnet0", LinkKind::Cellular),
        ] {
            core.handle(t0, Event::LinkUpdated(info(index, name, kind, false)));
            core.handle(t0, addr(index));
        }
        core.connect(ALICE, peer(1000, "alice", false));
        core.connect(ALICE_CTL, peer(1000, "alice", false));
        core.connect(BOB, peer(1001, "bob", false));
        core.connect(ROOT, peer(0, "uid:0", true));
        drain(&mut core);
        core
    }

    fn drain(core: &mut Core) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    /// Sends `request` from `client` and returns every action it caused.
    fn ask(core: &mut Core, t: Instant, client: ClientId, request: Request) -> Vec<Action> {
        core.request(t, client, request);
        drain(core)
    }

    /// The one reply among `actions`, which must go to `client`.
    fn reply(actions: &[Action], client: ClientId) -> Reply {
        let replies: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { client: c, reply } => Some((*c, reply.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(replies.len(), 1, "{actions:?}");
        assert_eq!(replies[0].0, client);
        replies[0].1.clone()
    }

    /// The error code of a reply, or `ok` for anything else.
    fn code(r: &Reply) -> String {
        match r {
            Reply::Error { code, .. } => code.clone(),
            _ => "ok".into(),
        }
    }

    fn subscribe(app: Option<&str>) -> Request {
        Request::Subscribe {
            id: 1,
            app: app.map(Into::into),
            flow: None,
        }
    }

    fn status(core: &mut Core, t: Instant, client: ClientId) -> roam_ipc::proto::Status {
        match reply(&ask(core, t, client, Request::Status { id: 9 }), client) {
            Reply::Status { status, .. } => status,
            r => panic!("{r:?}"),
        }
    }

    fn register(core: &mut Core, t: Instant, client: ClientId, token: u32) {
        let r = reply(
            &ask(core, t, client, Request::RegisterMptcp { id: 5, token }),
            client,
        );
        assert_eq!(code(&r), "ok");
    }

    fn local(index: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([198, 18, index, 2], port))
    }

    fn server() -> SocketAddr {
        SocketAddr::from(([198, 19, 0, 1], 4433))
    }

    fn destroy(token: u32) -> Request {
        Request::MptcpSubflowDestroy {
            id: 7,
            token,
            local: local(2, 40000),
            remote: server(),
        }
    }

    fn create(options: Option<TcpOptions>) -> Request {
        Request::MptcpSubflowCreate {
            id: 8,
            token: TOKEN,
            local: local(3, 0),
            remote: server(),
            backup: true,
            options,
        }
    }

    /// Steering on, and the kernel told about alice's connection from wlan0.
    fn steering(core: &mut Core, t: Instant, options: Result<(), String>) {
        core.enable_steering(options);
        core.handle(
            t,
            Event::Mptcp(MptcpEvent::Connection {
                token: TOKEN,
                local: local(2, 40000),
                remote: server(),
            }),
        );
        drain(core);
    }

    /// The subflow commands among `actions` with the request each answers.
    fn subflows(actions: &[Action]) -> Vec<(SubflowCommand, Option<Requested>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Subflow { command, requested } => Some((*command, requested.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn subscribing_as_another_app_needs_admin_rights() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let a = ask(&mut core, t0, BOB, subscribe(Some("alice")));
        let r = reply(&a, BOB);
        assert_eq!(code(&r), "denied");
        assert!(format!("{r:?}").contains("uid 1001"), "{r:?}");
        assert_eq!(status(&mut core, t0, ROOT).subscribers, 0);
        // Its own app, named or not, is anyone's.
        for app in [None, Some("bob")] {
            let a = ask(&mut core, t0, BOB, subscribe(app));
            assert!(
                matches!(&a[0], Action::Reply { reply: Reply::Subscribed { app, .. }, .. } if app == "bob")
            );
        }
        // An admin may subscribe as anyone; the answer comes before the first update.
        let a = ask(&mut core, t0, ROOT, subscribe(Some("alice")));
        assert!(
            matches!(&a[0], Action::Reply { client: ROOT, reply: Reply::Subscribed { app, .. } } if app == "alice")
        );
        assert!(matches!(&a[1], Action::Push { client: ROOT, .. }), "{a:?}");
        assert_eq!(status(&mut core, t0, ROOT).subscribers, 2);
    }

    #[test]
    fn reading_another_apps_decision_needs_admin_rights() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let explain = |app: &str| Request::Explain {
            id: 3,
            app: Some(app.into()),
            flow: None,
        };
        assert_eq!(
            code(&reply(&ask(&mut core, t0, BOB, explain("alice")), BOB)),
            "denied"
        );
        let own = reply(&ask(&mut core, t0, BOB, explain("bob")), BOB);
        assert!(matches!(own, Reply::Decision { .. }), "{own:?}");
        let any = reply(&ask(&mut core, t0, ROOT, explain("alice")), ROOT);
        assert!(matches!(any, Reply::Decision { .. }), "{any:?}");
    }

    #[test]
    fn reload_needs_admin_rights_and_answers_with_the_outcome() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let a = ask(&mut core, t0, BOB, Request::Reload { id: 4 });
        assert_eq!(code(&reply(&a, BOB)), "denied");
        assert!(!a.iter().any(|a| matches!(a, Action::Reload { .. })));
        let a = ask(&mut core, t0, ROOT, Request::Reload { id: 4 });
        assert_eq!(
            a,
            [Action::Reload {
                client: ROOT,
                id: 4
            }]
        );
        // The admin is answered before anyone hears of the new policy's decisions.
        ask(&mut core, t0, ALICE, subscribe(None));
        let cell_first = Policy::parse(
            "link wifi = kind wifi\nlink cell = kind cellular\n\
             default { prefer cell over wifi }\n",
        )
        .unwrap();
        let file = "/etc/roam/policy.roam".to_owned();
        core.reloaded(t0, ROOT, 4, Ok((cell_first, file.clone())));
        let a = drain(&mut core);
        assert_eq!(
            a[0],
            Action::Reply {
                client: ROOT,
                reply: Reply::Reloaded {
                    id: 4,
                    policy: file
                }
            }
        );
        assert!(
            matches!(&a[1], Action::Push { client: ALICE, update } if update.decision.paths[0].interface == "rmnet0"),
            "{a:?}"
        );
        core.reloaded(t0, ROOT, 4, Err("p.roam:3:20: error: ...".into()));
        let a = drain(&mut core);
        assert_eq!(code(&reply(&a, ROOT)), "reload_failed");
        assert!(
            !a.iter().any(|a| matches!(a, Action::Push { .. })),
            "the old policy stays"
        );
    }

    #[test]
    fn status_detail_is_for_admins_only() {
        let t0 = Instant::now();
        let mut core = core(t0);
        ask(&mut core, t0, ALICE, subscribe(None));
        register(&mut core, t0, ALICE, TOKEN);
        let s = status(&mut core, t0, BOB);
        assert_eq!(
            (s.interfaces, s.subscribers, s.mptcp_connections),
            (2, 1, 1)
        );
        assert_eq!((s.clients, s.probes), (None, None));
        let s = status(&mut core, t0, ROOT);
        let clients = s.clients.expect("admin detail");
        assert_eq!(clients.len(), 1);
        assert_eq!(
            (clients[0].client, clients[0].app.as_str()),
            (ALICE, "alice")
        );
        assert_eq!(s.probes.map(|p| p.len()), Some(2));
    }

    #[test]
    fn path_reports_are_heard_from_subscribed_connections_only() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let report = Request::ReportPath {
            id: 6,
            interface: "wlan0".into(),
            rtt_ms: Some(40.0),
            stalled: false,
        };
        let rtt = |core: &Core| core.interfaces(t0)[1].rtt_ms;
        let r = reply(&ask(&mut core, t0, ALICE, report.clone()), ALICE);
        assert_eq!(code(&r), "not_subscribed");
        assert_eq!(rtt(&core), None, "an unsubscribed report moves nothing");
        ask(&mut core, t0, ALICE, subscribe(None));
        assert_eq!(
            code(&reply(&ask(&mut core, t0, ALICE, report.clone()), ALICE)),
            "ok"
        );
        assert_eq!(rtt(&core), Some(40.0));
        // Unsubscribed again: not heard again.
        ask(&mut core, t0, ALICE, Request::Unsubscribe { id: 2 });
        let r = reply(&ask(&mut core, t0, ALICE, report), ALICE);
        assert_eq!(code(&r), "not_subscribed");
    }

    #[test]
    fn a_connection_keeps_at_most_max_tokens_and_forgets_the_oldest() {
        let t0 = Instant::now();
        let mut core = core(t0);
        steering(&mut core, t0, Ok(()));
        for token in 0..MAX_TOKENS as u32 {
            register(&mut core, t0, ALICE, token);
        }
        // Registering one again is not one more.
        register(&mut core, t0, ALICE, 0);
        assert_eq!(status(&mut core, t0, BOB).mptcp_connections, MAX_TOKENS);
        register(&mut core, t0, ALICE, TOKEN);
        assert_eq!(status(&mut core, t0, BOB).mptcp_connections, MAX_TOKENS);
        assert!(!core.clients.owns(ALICE, 0), "the oldest went");
        assert!(core.clients.owns(ALICE, 1));
        assert!(core.clients.owns(ALICE, TOKEN));
        let r = reply(&ask(&mut core, t0, ALICE, destroy(0)), ALICE);
        assert_eq!(code(&r), "denied");
    }

    #[test]
    fn subflows_are_steered_only_by_a_live_connection_of_the_registrants_uid() {
        let t0 = Instant::now();
        let mut core = core(t0);
        steering(&mut core, t0, Ok(()));
        // Nobody registered it yet.
        assert_eq!(
            code(&reply(&ask(&mut core, t0, ALICE, destroy(TOKEN)), ALICE)),
            "denied"
        );
        register(&mut core, t0, ALICE, TOKEN);
        // Another uid may not, admin or not.
        assert_eq!(
            code(&reply(&ask(&mut core, t0, BOB, destroy(TOKEN)), BOB)),
            "denied"
        );
        assert_eq!(
            code(&reply(&ask(&mut core, t0, ROOT, destroy(TOKEN)), ROOT)),
            "denied"
        );
        // The same uid on another connection (a one-shot control connection) may.
        let a = ask(&mut core, t0, ALICE_CTL, destroy(TOKEN));
        assert_eq!(
            subflows(&a),
            [(
                SubflowCommand::Destroy {
                    token: TOKEN,
                    local: local(2, 40000),
                    remote: server(),
                },
                Some(Requested {
                    client: ALICE_CTL,
                    id: 7,
                    options: None,
                })
            )]
        );
        assert!(
            !a.iter().any(|a| matches!(a, Action::Reply { .. })),
            "answered by the kernel"
        );
        // Once the registrant is gone, its registration authorises nobody.
        core.disconnect(t0, ALICE);
        drain(&mut core);
        let r = reply(&ask(&mut core, t0, ALICE_CTL, destroy(TOKEN)), ALICE_CTL);
        assert_eq!(code(&r), "denied");
    }

    #[test]
    fn subflow_requests_need_the_userspace_path_manager() {
        let t0 = Instant::now();
        let mut core = core(t0);
        register(&mut core, t0, ALICE, TOKEN);
        let r = reply(&ask(&mut core, t0, ALICE, destroy(TOKEN)), ALICE);
        assert_eq!(code(&r), "failed");
        assert!(format!("{r:?}").contains("userspace = true"), "{r:?}");
    }

    #[test]
    fn subflow_requests_name_a_connection_and_subflow_the_kernel_told_about() {
        let t0 = Instant::now();
        let mut core = core(t0);
        steering(&mut core, t0, Ok(()));
        register(&mut core, t0, ALICE, 7);
        assert_eq!(
            code(&reply(&ask(&mut core, t0, ALICE, destroy(7)), ALICE)),
            "not_found"
        );
        register(&mut core, t0, ALICE, TOKEN);
        let wrong = Request::MptcpSubflowSetBackup {
            id: 7,
            token: TOKEN,
            local: local(3, 40000),
            remote: server(),
            backup: true,
        };
        assert_eq!(
            code(&reply(&ask(&mut core, t0, ALICE, wrong), ALICE)),
            "not_found"
        );
        // Port 0 names the subflow from that address whatever its port.
        let any_port = Request::MptcpSubflowSetBackup {
            id: 7,
            token: TOKEN,
            local: local(2, 0),
            remote: server(),
            backup: true,
        };
        let a = ask(&mut core, t0, ALICE, any_port);
        assert!(matches!(
            subflows(&a)[..],
            [(SubflowCommand::SetBackup { backup: true, .. }, Some(_))]
        ));
        // A creation gets the connection's next address id, the one roamd's own would get.
        let a = ask(&mut core, t0, ALICE, create(None));
        assert!(
            matches!(
                subflows(&a)[..],
                [(
                    SubflowCommand::Create {
                        id: 1,
                        index: 0,
                        backup: true,
                        ..
                    },
                    Some(_)
                )]
            ),
            "{a:?}"
        );
    }

    #[test]
    fn subflow_options_must_be_valid_per_subflow_and_settable() {
        let t0 = Instant::now();
        let mut core = core(t0);
        steering(&mut core, t0, Ok(()));
        register(&mut core, t0, ALICE, TOKEN);
        let refused = |core: &mut Core, o: TcpOptions| {
            let r = reply(&ask(core, t0, ALICE, create(Some(o))), ALICE);
            assert_eq!(code(&r), "failed");
            format!("{r:?}")
        };
        assert!(
            refused(&mut core, TcpOptions::new().keepalive(0, 1, 1))
                .contains("invalid subflow options")
        );
        assert!(
            refused(&mut core, TcpOptions::new().notsent_lowat(4096))
                .contains("belongs to the connection")
        );
        let ok = TcpOptions::new().nodelay(true);
        let a = ask(&mut core, t0, ALICE, create(Some(ok.clone())));
        assert_eq!(
            subflows(&a)[0].1.as_ref().and_then(|r| r.options.clone()),
            Some(ok.clone())
        );
        // Empty options are none at all.
        let a = ask(&mut core, t0, ALICE, create(Some(TcpOptions::new())));
        assert_eq!(
            subflows(&a)[0].1.as_ref().map(|r| r.options.clone()),
            Some(None)
        );
        // A shell that cannot set them says why.
        let mut core = self::core(t0);
        steering(&mut core, t0, Err("no cgroup v2".into()));
        register(&mut core, t0, ALICE, TOKEN);
        assert!(refused(&mut core, ok).contains("no cgroup v2"));
    }

    #[test]
    fn a_registration_steers_only_while_its_registrant_is_subscribed() {
        let t0 = Instant::now();
        let mut core = core(t0);
        steering(&mut core, t0, Ok(()));
        // Registered unsubscribed: allowed, but nobody's decision to steer it by.
        let a = ask(
            &mut core,
            t0,
            ALICE,
            Request::RegisterMptcp {
                id: 5,
                token: TOKEN,
            },
        );
        assert!(subflows(&a).is_empty(), "{a:?}");
        ask(&mut core, t0, ALICE, subscribe(None));
        let a = ask(
            &mut core,
            t0,
            ALICE,
            Request::RegisterMptcp {
                id: 5,
                token: TOKEN,
            },
        );
        assert!(
            matches!(
                subflows(&a)[..],
                [(SubflowCommand::Create { backup: true, .. }, None)]
            ),
            "{a:?}"
        );
        // Unsubscribed: the connection is no longer steered when its paths change.
        ask(&mut core, t0, ALICE, Request::Unsubscribe { id: 2 });
        core.handle(
            t0,
            Event::Mptcp(MptcpEvent::SubflowUp {
                token: TOKEN,
                local: local(3, 40001),
                remote: server(),
                backup: true,
            }),
        );
        core.handle(t0, Event::LinkRemoved { index: 2 });
        assert!(subflows(&drain(&mut core)).is_empty());
    }

    #[test]
    fn a_client_that_goes_away_leaves_nothing_behind() {
        let t0 = Instant::now();
        let mut core = core(t0);
        ask(&mut core, t0, ALICE, subscribe(None));
        register(&mut core, t0, ALICE, TOKEN);
        core.disconnect(t0, ALICE);
        drain(&mut core);
        let s = status(&mut core, t0, ROOT);
        assert_eq!((s.subscribers, s.mptcp_connections), (0, 0));
        // Its requests, should any still arrive, are not heard.
        assert!(ask(&mut core, t0, ALICE, Request::Status { id: 1 }).is_empty());
        assert!(
            ask(&mut core, t0, 99, subscribe(None)).is_empty(),
            "never connected"
        );
    }

    #[test]
    fn only_a_subscribers_own_app_or_an_admin_may_act_as_an_app() {
        assert!(may_act_as(&peer(1000, "alice", false), "alice"));
        assert!(!may_act_as(&peer(1000, "alice", false), "bob"));
        assert!(may_act_as(&peer(0, "uid:0", true), "bob"));
    }
}
