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
//!   the same uid registered ([`ClientTable::owns`]); admin rights do not widen this;
//! - a registration steers the connection only while its registrant is subscribed.
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use roam_ipc::proto::{Reply, Request, Status, TcpOptions};
use roam_policy::{Decision, Flow, LinkKind, LinkState, MultipathMode, Path};

use crate::{Action, ClientId, Core, Requested, SubflowCommand};

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
pub(crate) type Pushed = (MultipathMode, Vec<Path>, Vec<(String, LinkKind, LinkState)>);

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
    pub(crate) flow: Option<Flow>,
    /// What was last pushed: decision without its explanation, and the link summary.
    pub(crate) pushed: Option<Pushed>,
    pub(crate) last: Option<Decision>,
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
                    self.clients.subs.insert(
                        client,
                        Subscription {
                            app,
                            flow,
                            pushed: None,
                            last: None,
                        },
                    );
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
                    probes: peer.admin.then(|| self.probes()),
                },
            },
            Request::Links { id } => Reply::Links {
                id,
                interfaces: self.interfaces(now),
            },
            Request::Explain { id, app, flow } => {
                let app = app.unwrap_or_else(|| peer.app.clone());
                if !may_act_as(&peer, &app) {
                    denied(id, &format!("reading another app's decision (`{app}`)"))
                } else {
                    Reply::Decision {
                        id,
                        decision: self.explain(&app, flow, now),
                    }
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
                    self.path_report(now, &interface, rtt_ms, stalled);
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

    /// The shell read the policy file again for an admin's `reload`: `Ok` with the file's name
    /// (the new policy is in force already), or the rendered error (the old one stays).
    pub fn reloaded(&mut self, client: ClientId, id: u64, outcome: Result<String, String>) {
        let reply = match outcome {
            Ok(policy) => Reply::Reloaded { id, policy },
            Err(message) => error(id, "reload_failed", message),
        };
        self.reply(client, reply);
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
