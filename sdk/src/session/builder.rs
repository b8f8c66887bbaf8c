//! [`SessionBuilder`]: how a session connects.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use roam_policy::{MultipathMode, Policy};
use tokio::sync::watch;

use super::Session;
use crate::decision::{DecisionSource, Embedded, FlowWatch, Roamd, Snapshot};
use crate::error::Result;
use crate::net::resolve::DnsConfig;
use crate::net::socket::SocketBinder;
use crate::path::manager;
use crate::tls::ClientTls;
use crate::vocab::SessionEvent;

/// Which transport a session uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportPreference {
    /// Every transport raced, Happy-Eyeballs style: QUIC first (MPTCP first when the
    /// decision aggregates), each next one 100 ms later or as soon as the one before fails;
    /// the first to connect wins.
    #[default]
    Auto,
    /// QUIC (noq): a path per interface with a multipath peer (RFC 10069), connection
    /// migration across interfaces without one.
    Quic,
    /// Multipath TCP with subflows per interface.
    Mptcp,
    /// TCP with roam's resumption layer over a fresh connection (sdk/RESUME.md).
    TcpResume,
}

impl TransportPreference {
    /// The word used in configuration (`auto`, `quic`, `mptcp`, `tcp-resume`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportPreference::Auto => "auto",
            TransportPreference::Quic => "quic",
            TransportPreference::Mptcp => "mptcp",
            TransportPreference::TcpResume => "tcp-resume",
        }
    }
}

impl fmt::Display for TransportPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TransportPreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            TransportPreference::Auto,
            TransportPreference::Quic,
            TransportPreference::Mptcp,
            TransportPreference::TcpResume,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
        .ok_or_else(|| format!("unknown transport `{s}`; expected auto, quic, mptcp or tcp-resume"))
    }
}

/// Options of a session. Every setter has a default; [`SessionBuilder::connect`] makes it.
#[derive(Debug, Clone)]
pub struct SessionBuilder {
    pub(crate) app: Option<String>,
    pub(crate) transport: TransportPreference,
    pub(crate) multipath: Option<MultipathMode>,
    pub(crate) tls: ClientTls,
    pub(crate) alpn: Vec<Vec<u8>>,
    pub(crate) server_name: Option<String>,
    pub(crate) connect_timeout: Duration,
    pub(crate) attempt_delay: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) keep_alive: Duration,
    pub(crate) source: Option<Arc<dyn DecisionSource>>,
    pub(crate) policy: Option<String>,
    pub(crate) path: manager::Config,
    pub(crate) path_control: Option<Arc<dyn crate::mptcp::control::PathControl>>,
    /// roamd's socket; `None`: `ROAM_SOCKET`, else the default.
    pub(crate) roamd_socket: Option<PathBuf>,
    pub(crate) use_roamd: bool,
    pub(crate) binder: Option<SocketBinder>,
    pub(crate) dns: DnsConfig,
}

impl Default for SessionBuilder {
    fn default() -> Self {
        SessionBuilder::new()
    }
}

impl SessionBuilder {
    /// The defaults: no app id, `auto` transport, the decision's multipath mode, the
    /// system's trust store, connect timeout 10 s, Happy Eyeballs attempt delay 250 ms
    /// (RFC 8305), idle timeout 30 s, keep-alive every 1 s, the built-in policy, names
    /// resolved over each link through `/etc/resolv.conf`'s nameservers with a 2 s timeout.
    pub fn new() -> Self {
        SessionBuilder {
            app: None,
            transport: TransportPreference::Auto,
            multipath: None,
            tls: ClientTls::SystemRoots,
            alpn: Vec::new(),
            server_name: None,
            connect_timeout: Duration::from_secs(10),
            attempt_delay: Duration::from_millis(250),
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(1),
            source: None,
            policy: None,
            path: manager::Config::default(),
            path_control: None,
            roamd_socket: None,
            use_roamd: true,
            binder: None,
            dns: DnsConfig::default(),
        }
    }

    /// The app id the policy's `app "..."` blocks match (`com.example.video`).
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// The transport (default `auto`).
    pub fn transport(mut self, t: TransportPreference) -> Self {
        self.transport = t;
        self
    }

    /// Overrides the decision's multipath mode. QUIC with a multipath peer: `interactive` keeps
    /// a backup path open and validated, `handover` opens one only when the primary fails,
    /// `aggregate` sends over every permitted path; without multipath, `interactive` keeps a
    /// backup socket bound.
    pub fn multipath(mut self, mode: MultipathMode) -> Self {
        self.multipath = Some(mode);
        self
    }

    /// Which certificates to trust.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.tls = tls;
        self
    }

    /// Adds an app ALPN protocol, offered after `roam/1`.
    pub fn alpn(mut self, protocol: impl Into<Vec<u8>>) -> Self {
        self.alpn.push(protocol.into());
        self
    }

    /// The name the server's certificate must carry, when it is not the target's host (for
    /// an IP literal target, say).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// How long resolving, racing and the handshake may take in all.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long the race waits before starting the next candidate (RFC 8305 suggests 250 ms).
    pub fn attempt_delay(mut self, d: Duration) -> Self {
        self.attempt_delay = d;
        self
    }

    /// How long a session may go without progress before it fails (default 30 s). QUIC: a
    /// session that hears nothing for this long is over (the idle timeout). tcp-resume: how
    /// long it may stay without a connection. MPTCP and plain TCP: how long data may stay
    /// outstanding with no subflow acknowledging or receiving a byte; the session raises
    /// [`crate::SessionEvent::Degraded`] as soon as no subflow makes progress (a few RTTs),
    /// and after this bound every read and write fails with an error that says what happened
    /// and what would have saved it (roamd, a kernel endpoint, a roam peer), instead of
    /// blocking until TCP gives up (many minutes).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// How often an idle session sends a keep-alive, which also lets it notice a dead path.
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.keep_alive = d;
        self
    }

    /// A policy text (the roam policy language) to evaluate instead of the built-in one.
    /// Errors surface from [`SessionBuilder::connect`] as [`crate::Error::Policy`].
    pub fn policy(mut self, text: impl Into<String>) -> Self {
        self.policy = Some(text.into());
        self
    }

    /// A hook called for every socket the session opens (the first UDP socket, the warm
    /// backup, every rebind, TCP and MPTCP sockets, tcp-resume reconnects), after the socket is
    /// made and before it is bound, with the path it is for. On Android the bridge puts the
    /// socket on the path's `Network` here. An error fails that socket like a failed bind.
    pub fn socket_binder(mut self, binder: Arc<super::SocketBinderFn>) -> Self {
        self.binder = Some(SocketBinder(binder));
        self
    }

    /// The nameservers (port 53) of `interface`, as its DHCP lease or carrier gave them: names
    /// are resolved on each link through its own nameservers, asked over that link, and the
    /// addresses a link resolved are the ones tried on it. A link without nameservers of its
    /// own asks `/etc/resolv.conf`'s over itself, or, when that lists none or only loopback
    /// ones (a local stub), uses the system resolver. Called again for the same interface,
    /// replaces its list.
    pub fn nameservers(
        mut self,
        interface: impl Into<String>,
        servers: impl IntoIterator<Item = std::net::IpAddr>,
    ) -> Self {
        self.dns
            .per_link
            .insert(interface.into(), servers.into_iter().collect());
        self
    }

    /// How long resolving a name on one link may take, its nameservers asked in turn with an
    /// equal share each (default 2 s). Links are asked at once; one that does not answer in
    /// time just offers no candidates.
    pub fn dns_timeout(mut self, d: Duration) -> Self {
        self.dns.timeout = d;
        self
    }

    /// Where roamd listens (default: `ROAM_SOCKET`, else `/run/roam/roamd.sock`).
    pub fn roamd_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.roamd_socket = Some(path.into());
        self
    }

    /// Whether to follow roamd when its socket answers (default: yes). With `false` the
    /// session always runs the embedded monitor and the builder's policy.
    pub fn use_roamd(mut self, yes: bool) -> Self {
        self.use_roamd = yes;
        self
    }

    /// Where decisions come from. The default: roamd ([`Roamd`]) when its socket answers,
    /// else [`Embedded`] with the builder's policy (the policy text applies only then).
    pub fn decision_source(mut self, source: Arc<dyn DecisionSource>) -> Self {
        self.source = Some(source);
        self
    }

    /// Tunables of the path manager (stall threshold, sampling, suspicion).
    pub fn path_config(mut self, cfg: manager::Config) -> Self {
        self.path = cfg;
        self
    }

    /// Who carries out [`Session::open_path`], [`Session::close_path`] and
    /// [`Session::set_backup`] for MPTCP sessions; the default is roamd
    /// ([`crate::mptcp::control::Roamd::from_env`]).
    pub fn path_control(mut self, c: Arc<dyn crate::mptcp::control::PathControl>) -> Self {
        self.path_control = Some(c);
        self
    }

    /// Resolves `target` (`host:port`), races the candidates and returns the session.
    pub async fn connect(self, target: &str) -> Result<Session> {
        super::connect::connect(self, target).await
    }

    pub(crate) fn make_source(&self) -> Result<Arc<dyn DecisionSource>> {
        if let Some(s) = &self.source {
            return Ok(s.clone());
        }
        let policy = match &self.policy {
            Some(text) => Policy::parse(text)?,
            None => Policy::default_policy(),
        };
        Ok(Arc::new(Embedded::new(policy)))
    }

    /// Picks the decision source and subscribes with the session's `flow`: the app's own,
    /// else roamd when its socket answers within [`crate::decision::SUBSCRIBE_TIMEOUT`], else
    /// the embedded one. The event says which and why.
    pub(crate) async fn subscribe_source(
        &self,
        flow: FlowWatch,
    ) -> Result<(
        Arc<dyn DecisionSource>,
        watch::Receiver<Arc<Snapshot>>,
        SessionEvent,
    )> {
        let app = self.app.as_deref();
        let chosen = |source: &Arc<dyn DecisionSource>, why: String| {
            tracing::info!(source = %source.name(), %why, "decision source");
            SessionEvent::DecisionSourceChosen {
                source: source.name(),
                why,
            }
        };
        if let Some(s) = &self.source {
            let rx = s.subscribe_with_flow(app, flow).await?;
            let told = chosen(s, "given by the app".into());
            return Ok((s.clone(), rx, told));
        }
        // Parse first: a bad policy text is the app's error whether or not roamd runs.
        let embedded = self.make_source()?;
        let why = if self.use_roamd {
            let socket = self
                .roamd_socket
                .clone()
                .unwrap_or_else(|| roam_ipc::socket_path(None));
            let roamd: Arc<dyn DecisionSource> = Arc::new(Roamd::at(&socket));
            match roamd.subscribe_with_flow(app, flow.clone()).await {
                Ok(rx) => {
                    let told = chosen(&roamd, "roamd answered on its socket".into());
                    return Ok((roamd, rx, told));
                }
                Err(e) => format!("roamd is not available ({e})"),
            }
        } else {
            "the app turned roamd off".into()
        };
        let rx = embedded.subscribe_with_flow(app, flow).await?;
        let told = chosen(&embedded, why);
        Ok((embedded, rx, told))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn transport_words_round_trip() {
        for w in ["auto", "quic", "mptcp", "tcp-resume"] {
            assert_eq!(w.parse::<TransportPreference>().unwrap().as_str(), w);
        }
        assert!("sctp".parse::<TransportPreference>().is_err());
    }

    #[test]
    fn a_bad_policy_text_is_a_policy_error() {
        let e = SessionBuilder::new()
            .policy("prefer wifi over")
            .make_source()
            .unwrap_err();
        assert!(matches!(e, Error::Policy(_)), "{e}");
    }
}
