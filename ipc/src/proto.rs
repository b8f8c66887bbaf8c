//! The messages of the roamd protocol, version 1, and their framing. `ipc/PROTOCOL.md` is
//! the document; this file is its implementation.
//!
//! A frame is a 4-byte big-endian length N (1..=[`MAX_FRAME`]) followed by N bytes of one JSON
//! object. Anything else (a length of 0 or over the limit, bytes that are not a JSON object of a
//! known `type`, a request before `hello`) costs the sender its connection, and only that.
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use roam_policy::{Decision, Flow, FlowThresholds, Interface};
use serde::{Deserialize, Serialize};

/// The protocol version this agent speaks.
pub const VERSION: u32 = 1;

/// The largest frame either side may send, in bytes (length prefix excluded).
pub const MAX_FRAME: usize = 64 * 1024;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// First message on every connection.
    Hello {
        /// The protocol version the client speaks.
        version: u32,
    },
    /// Receive `update` events for an app id: at once, then on every change.
    Subscribe {
        /// Echoed in the reply.
        id: u64,
        /// The app id; default: the caller's own. Only admins may name another.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        /// The flow the decision is for; default: none (zero bytes, zero age). A subscriber
        /// that sends one reports its flow: its updates carry the app's `flow_thresholds`, and
        /// it sends `subscribe` again with its flow when the bytes reach one of them (the
        /// agent counts the age itself from the flow given).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<Flow>,
    },
    /// Stop receiving `update` events.
    Unsubscribe {
        /// Echoed in the reply.
        id: u64,
    },
    /// The agent's status; admins get the per-client and per-link detail.
    Status {
        /// Echoed in the reply.
        id: u64,
    },
    /// The link table.
    Links {
        /// Echoed in the reply.
        id: u64,
    },
    /// The decision for an app now, with its explanation. Only admins may name another app.
    Explain {
        /// Echoed in the reply.
        id: u64,
        /// The app id; default: the caller's own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        app: Option<String>,
        /// The flow; default: none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<Flow>,
    },
    /// Re-read the policy file (admin only). An invalid file leaves the policy in force.
    Reload {
        /// Echoed in the reply.
        id: u64,
    },
    /// A session's view of the path it uses (only subscribed clients are heard).
    ReportPath {
        /// Echoed in the reply.
        id: u64,
        /// Interface name.
        interface: String,
        /// RTT measured by the session, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtt_ms: Option<f64>,
        /// The session saw no progress for a while.
        #[serde(default)]
        stalled: bool,
    },
    /// An MPTCP connection of this client, by its token (from `mptcp_pm` events or
    /// `MPTCP_INFO`), so the agent can steer its subflows.
    RegisterMptcp {
        /// Echoed in the reply.
        id: u64,
        /// The connection's MPTCP token.
        token: u32,
    },
    /// Open a subflow of a registered MPTCP connection (userspace path manager).
    MptcpSubflowCreate {
        /// Echoed in the reply.
        id: u64,
        /// The connection's token, registered by this client with `register_mptcp`.
        token: u32,
        /// The local address; port 0 lets the kernel choose.
        local: SocketAddr,
        /// The peer's address.
        remote: SocketAddr,
        /// Open it as a backup subflow (MP_PRIO).
        #[serde(default)]
        backup: bool,
        /// TCP options for this subflow alone, set by roamd's sock_ops program when the
        /// subflow sends its SYN. Absent: the connection's own options. An agent from before
        /// this field refuses the request as `bad_request` (unknown field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        options: Option<TcpOptions>,
    },
    /// Close one subflow of a registered MPTCP connection.
    MptcpSubflowDestroy {
        /// Echoed in the reply.
        id: u64,
        /// The connection's token.
        token: u32,
        /// The subflow's local address and port.
        local: SocketAddr,
        /// The subflow's remote address and port.
        remote: SocketAddr,
    },
    /// Set or clear the backup flag of one subflow of a registered MPTCP connection.
    MptcpSubflowSetBackup {
        /// Echoed in the reply.
        id: u64,
        /// The connection's token.
        token: u32,
        /// The subflow's local address and port.
        local: SocketAddr,
        /// The subflow's remote address and port.
        remote: SocketAddr,
        /// The new flag.
        backup: bool,
    },
}

impl Request {
    /// The request id, for everything but `hello`.
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Hello { .. } => None,
            Request::Subscribe { id, .. }
            | Request::Unsubscribe { id }
            | Request::Status { id }
            | Request::Links { id }
            | Request::Explain { id, .. }
            | Request::Reload { id }
            | Request::ReportPath { id, .. }
            | Request::RegisterMptcp { id, .. }
            | Request::MptcpSubflowCreate { id, .. }
            | Request::MptcpSubflowDestroy { id, .. }
            | Request::MptcpSubflowSetBackup { id, .. } => Some(*id),
        }
    }
}

/// TCP options of one connection or subflow; every field is optional and an absent one is
/// left as the kernel has it. Linux applies all of them to an MPTCP socket and passes them to
/// every subflow, present and future (`net/mptcp/sockopt.c`); roamd applies them to a single
/// subflow with `bpf_setsockopt` (`mptcp_subflow_create` with `options`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TcpOptions {
    /// `TCP_NODELAY`: send small segments at once instead of coalescing them (Nagle off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodelay: Option<bool>,
    /// `SO_KEEPALIVE` with `TCP_KEEPIDLE`, `TCP_KEEPINTVL` and `TCP_KEEPCNT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<Keepalive>,
    /// `TCP_CONGESTION`: a congestion control the kernel has (`reno`, `cubic`, `bbr`; see
    /// `/proc/sys/net/ipv4/tcp_available_congestion_control`), at most 15 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion: Option<String>,
    /// `TCP_NOTSENT_LOWAT`: the socket is writable only while fewer than this many bytes wait
    /// unsent, which keeps the send queue (and the latency of what is written next) short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notsent_lowat: Option<u32>,
}

/// TCP keepalive: after `idle_secs` without traffic, a probe every `interval_secs`; after
/// `count` unanswered probes the connection (or subflow) is reset. `ss -tno` shows the timer as
/// `timer:(keepalive,...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keepalive {
    /// `TCP_KEEPIDLE`, 1 to 32767 seconds.
    pub idle_secs: u32,
    /// `TCP_KEEPINTVL`, 1 to 32767 seconds.
    pub interval_secs: u32,
    /// `TCP_KEEPCNT`, 1 to 127 probes.
    pub count: u32,
}

/// The kernel's limits (`MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL`, `MAX_TCP_KEEPCNT`,
/// `TCP_CA_NAME_MAX - 1`).
const MAX_KEEPIDLE: u32 = 32767;
const MAX_KEEPINTVL: u32 = 32767;
const MAX_KEEPCNT: u32 = 127;
/// The longest congestion control name the kernel takes.
pub const MAX_CONGESTION_NAME: usize = 15;

impl TcpOptions {
    /// No option set.
    pub fn new() -> TcpOptions {
        TcpOptions::default()
    }

    /// Sets `TCP_NODELAY`.
    pub fn nodelay(mut self, on: bool) -> TcpOptions {
        self.nodelay = Some(on);
        self
    }

    /// Turns keepalive on with these timings (seconds, and probes).
    pub fn keepalive(mut self, idle_secs: u32, interval_secs: u32, count: u32) -> TcpOptions {
        self.keepalive = Some(Keepalive {
            idle_secs,
            interval_secs,
            count,
        });
        self
    }

    /// Sets the congestion control by name (`reno`, `cubic`, `bbr`, ...).
    pub fn congestion(mut self, name: impl Into<String>) -> TcpOptions {
        self.congestion = Some(name.into());
        self
    }

    /// Sets `TCP_NOTSENT_LOWAT` in bytes.
    pub fn notsent_lowat(mut self, bytes: u32) -> TcpOptions {
        self.notsent_lowat = Some(bytes);
        self
    }

    /// Whether no option is set.
    pub fn is_empty(&self) -> bool {
        *self == TcpOptions::default()
    }

    /// Checks the values against the kernel's limits; the error names the option and the
    /// range it takes.
    pub fn check(&self) -> Result<(), String> {
        if let Some(k) = &self.keepalive {
            for (name, v, max) in [
                (
                    "TCP_KEEPIDLE (keepalive idle_secs)",
                    k.idle_secs,
                    MAX_KEEPIDLE,
                ),
                (
                    "TCP_KEEPINTVL (keepalive interval_secs)",
                    k.interval_secs,
                    MAX_KEEPINTVL,
                ),
                ("TCP_KEEPCNT (keepalive count)", k.count, MAX_KEEPCNT),
            ] {
                if !(1..=max).contains(&v) {
                    return Err(format!("{name} = {v} is outside 1..={max}"));
                }
            }
        }
        if let Some(c) = &self.congestion
            && (c.is_empty()
                || c.len() > MAX_CONGESTION_NAME
                || !c.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!(
                "TCP_CONGESTION = {c:?} is not a congestion control name (1 to \
                 {MAX_CONGESTION_NAME} printable ASCII bytes, e.g. `reno`, `cubic`, `bbr`)"
            ));
        }
        if let Some(n) = self.notsent_lowat
            && i32::try_from(n).is_err()
        {
            return Err(format!("TCP_NOTSENT_LOWAT = {n} is over {}", i32::MAX));
        }
        Ok(())
    }
}

/// The agent's status as `status` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// `roamd VERSION`.
    pub agent: String,
    /// The policy in force: its file, or `built-in`.
    pub policy: String,
    /// Whether the agent was started with `--dry-run`.
    pub dry_run: bool,
    /// Managed interfaces.
    pub interfaces: usize,
    /// Subscribed clients.
    pub subscribers: usize,
    /// Registered MPTCP connections.
    pub mptcp_connections: usize,
    /// Admin detail: every subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<ClientView>>,
    /// Admin detail: how each link is probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<Vec<ProbeView>>,
}

/// What a subscriber is sent: its decision and the link table it was made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    /// The decision for the subscriber's app.
    pub decision: Decision,
    /// Every interface the agent manages, as in the policy state file.
    pub interfaces: Vec<Interface>,
    /// Where the subscriber's flow can change its decision, for a subscriber that reports its
    /// flow (one that sent `subscribe` with `flow`); absent for the others, so a client from
    /// before this field never sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_thresholds: Option<FlowThresholds>,
}

/// A subscriber as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientView {
    /// Connection id.
    pub client: u64,
    /// App id it subscribed as.
    pub app: String,
    /// The primary interface of its current decision, if any.
    pub primary: Option<String>,
}

/// How often a link is probed right now: the pace roamd's core sets (`roam-agent-core` uses
/// this very type) and `status` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeMode {
    /// Not probed: no subscriber, no target, or the link has no carrier or address.
    Off,
    /// Usable but unused by any subscriber: slow probes.
    Idle,
    /// A subscriber uses it or backs up on it: fast probes.
    Fast,
}

/// How ready a link is to carry a session (`roam-agent-core` uses this very type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Readiness {
    /// Down, or up with nothing known yet: the kernel says up, no probe or traffic got
    /// through since.
    Cold,
    /// A probe or real traffic got through (`validated_ms_ago` says when); kept valid by
    /// evidence (received traffic, sessions' progress reports), not by timers.
    Validated,
    /// Validated, and a subscribed session's decision has it as its primary path.
    Warm,
}

/// What roamd's probing cost one link since it appeared: the figures that tell a handset
/// integrator how often roamd woke a radio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEnergy {
    /// Probe packets roamd sent on the link.
    pub probes_sent: u64,
    /// Probe packets sent after more than the radio's tail of silence on the link (11.5 s for
    /// cellular, 200 ms otherwise): each one woke the radio up, as far as roamd can tell from
    /// the interface's packet counters (read once a second, so a wake-up within a second of
    /// other traffic may be missed).
    pub radio_wakeups: u64,
}

/// A link's probing as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeView {
    /// Interface name.
    pub interface: String,
    /// Current pace.
    pub mode: ProbeMode,
    /// Default routes through this interface in the main table.
    pub default_routes: usize,
    /// Addresses on it, as `ADDR/LEN`.
    pub addresses: Vec<String>,
    /// How ready it is to carry a session.
    #[serde(default = "cold")]
    pub readiness: Readiness,
    /// How long ago the last evidence (probe answered, traffic received, a session's
    /// progress) proved it; `None` when never since it came up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validated_ms_ago: Option<u64>,
    /// What probing cost it.
    #[serde(default)]
    pub energy: LinkEnergy,
}

fn cold() -> Readiness {
    Readiness::Cold
}

/// One link's readiness and probing cost as `links` shows them, next to its [`Interface`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkUsage {
    /// Interface name.
    pub interface: String,
    /// How ready it is to carry a session.
    pub readiness: Readiness,
    /// What probing cost it.
    pub energy: LinkEnergy,
}

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// Answer to `hello`: who the agent thinks the caller is.
    Hello {
        /// The protocol version the agent speaks.
        version: u32,
        /// `roamd VERSION`.
        agent: String,
        /// The caller's app id (from its uid).
        app: String,
        /// The caller's uid, from `SO_PEERCRED`.
        uid: u32,
        /// Whether the caller may make admin calls.
        admin: bool,
    },
    /// A request succeeded and has nothing else to say.
    Ok {
        /// The request id.
        id: u64,
    },
    /// Answer to `subscribe`; an `update` follows at once.
    Subscribed {
        /// The request id.
        id: u64,
        /// The app id subscribed to.
        app: String,
    },
    /// Answer to `status`.
    Status {
        /// The request id.
        id: u64,
        /// The status.
        status: Status,
    },
    /// Answer to `links`.
    Links {
        /// The request id.
        id: u64,
        /// Every managed interface.
        interfaces: Vec<Interface>,
        /// Per interface, sorted like `interfaces`: readiness and probing cost (absent from
        /// agents older than this field).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        usage: Vec<LinkUsage>,
    },
    /// Answer to `explain`.
    Decision {
        /// The request id.
        id: u64,
        /// The decision.
        decision: Decision,
    },
    /// Answer to `reload`: the new policy is in force.
    Reloaded {
        /// The request id.
        id: u64,
        /// The policy file now in force.
        policy: String,
    },
    /// A request failed. With a code of `bad_frame`, `bad_request` or `version` the agent
    /// closes the connection after sending it.
    Error {
        /// The request id, when the request got far enough to have one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// Machine-readable: `bad_frame`, `bad_request`, `version`, `denied`, `not_subscribed`,
        /// `reload_failed`.
        code: String,
        /// For a person: what happened and what to do.
        message: String,
    },
    /// Pushed to subscribers: the decision changed, or the link table did.
    Update(Update),
}

impl Reply {
    /// The id of the request this answers; `None` for `hello`, pushed `update`s and errors
    /// that came before a request had one.
    pub fn id(&self) -> Option<u64> {
        match self {
            Reply::Ok { id }
            | Reply::Subscribed { id, .. }
            | Reply::Status { id, .. }
            | Reply::Links { id, .. }
            | Reply::Decision { id, .. }
            | Reply::Reloaded { id, .. } => Some(*id),
            Reply::Error { id, .. } => *id,
            Reply::Hello { .. } | Reply::Update(_) => None,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection between frames.
    Closed,
    /// A length of zero or over [`MAX_FRAME`].
    BadLength(usize),
    /// The bytes are not a message of this protocol.
    BadMessage(serde_json::Error),
    /// The connection failed.
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => f.write_str("connection closed"),
            FrameError::BadLength(n) => write!(f, "frame length {n} is outside 1..={MAX_FRAME}"),
            FrameError::BadMessage(e) => write!(f, "not a protocol message: {e}"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::BadMessage(e) => Some(e),
            FrameError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<serde_json::Error> for FrameError {
    fn from(e: serde_json::Error) -> Self {
        FrameError::BadMessage(e)
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl From<FrameError> for io::Error {
    fn from(e: FrameError) -> io::Error {
        match e {
            FrameError::Io(e) => e,
            FrameError::Closed => io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// Serialises one message into a frame (length prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising these types cannot fail: no maps with non-string keys, no custom Serialize.
    let body = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Checks a length prefix.
pub fn check_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(FrameError::BadLength(len));
    }
    Ok(len)
}

/// Writes one message as a frame (blocking).
pub fn write_frame<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode(msg))?;
    w.flush()
}

/// Reads one frame and parses it (blocking).
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut prefix = [0; 4];
    if let Err(e) = r.read_exact(&mut prefix) {
        return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
            FrameError::Closed
        } else {
            FrameError::Io(e)
        });
    }
    let len = check_len(prefix)?;
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Takes one whole frame off the front of `buf`, if it holds one, and parses it. Readers that
/// must be cancel-safe (a `select!` over the socket and something else) append whatever the
/// socket gives to `buf` and call this until it says `None`.
pub fn take_frame<T: for<'de> Deserialize<'de>>(
    buf: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = check_len(*prefix)?;
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[4..4 + len]);
    buf.drain(..4 + len);
    Ok(Some(msg?))
}

/// The fuzz target's body (ipc/fuzz, `ipc_frames`) and its corpus replay: `data` as a byte
/// stream from a local peer, taken frame by frame as roamd takes its clients' requests and
/// the SDK the agent's replies ([`take_frame`]). Never panics on any input; every message
/// parsed encodes to a frame that parses to the same message.
#[doc(hidden)]
pub fn fuzz_frames(data: &[u8]) {
    fn stream<T>(data: &[u8])
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        let mut buf = data.to_vec();
        loop {
            match take_frame::<T>(&mut buf) {
                Ok(Some(m)) => {
                    let again = take_frame::<T>(&mut encode(&m));
                    match again {
                        Ok(Some(again)) => assert_eq!(again, m, "a message does not round-trip"),
                        other => panic!("{m:?} encodes to a frame that reads as {other:?}"),
                    }
                }
                // The frame was taken off: the next one follows.
                Err(FrameError::BadMessage(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    }
    stream::<Request>(data);
    stream::<Reply>(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let cases = [
            (
                r#"{"type":"hello","version":1}"#,
                Request::Hello { version: 1 },
            ),
            (
                r#"{"type":"subscribe","id":1,"app":"com.example.voip"}"#,
                Request::Subscribe {
                    id: 1,
                    app: Some("com.example.voip".into()),
                    flow: None,
                },
            ),
            (
                r#"{"type":"subscribe","id":2,"flow":{"bytes":1000000,"age_ms":1500}}"#,
                Request::Subscribe {
                    id: 2,
                    app: None,
                    flow: Some(Flow {
                        bytes: 1_000_000,
                        age_ms: 1500,
                    }),
                },
            ),
            (
                r#"{"type":"report_path","id":4,"interface":"wlan0","rtt_ms":12.5,"stalled":true}"#,
                Request::ReportPath {
                    id: 4,
                    interface: "wlan0".into(),
                    rtt_ms: Some(12.5),
                    stalled: true,
                },
            ),
            (
                r#"{"type":"register_mptcp","id":5,"token":3735928559}"#,
                Request::RegisterMptcp {
                    id: 5,
                    token: 0xdead_beef,
                },
            ),
            (
                r#"{"type":"mptcp_subflow_create","id":6,"token":7,"local":"198.18.1.2:0","remote":"[2001:db8::1]:443","backup":true}"#,
                Request::MptcpSubflowCreate {
                    id: 6,
                    token: 7,
                    local: "198.18.1.2:0".parse().unwrap(),
                    remote: "[2001:db8::1]:443".parse().unwrap(),
                    backup: true,
                    options: None,
                },
            ),
            (
                r#"{"type":"mptcp_subflow_create","id":7,"token":7,"local":"198.18.1.2:0","remote":"198.19.0.1:443","backup":false,"options":{"nodelay":true,"keepalive":{"idle_secs":30,"interval_secs":5,"count":3},"congestion":"reno","notsent_lowat":16384}}"#,
                Request::MptcpSubflowCreate {
                    id: 7,
                    token: 7,
                    local: "198.18.1.2:0".parse().unwrap(),
                    remote: "198.19.0.1:443".parse().unwrap(),
                    backup: false,
                    options: Some(
                        TcpOptions::new()
                            .nodelay(true)
                            .keepalive(30, 5, 3)
                            .congestion("reno")
                            .notsent_lowat(16384),
                    ),
                },
            ),
            (
                r#"{"type":"mptcp_subflow_set_backup","id":8,"token":7,"local":"198.18.1.2:40000","remote":"198.19.0.1:4433","backup":false}"#,
                Request::MptcpSubflowSetBackup {
                    id: 8,
                    token: 7,
                    local: "198.18.1.2:40000".parse().unwrap(),
                    remote: "198.19.0.1:4433".parse().unwrap(),
                    backup: false,
                },
            ),
        ];
        for (text, want) in cases {
            let got: Request = serde_json::from_str(text).unwrap();
            assert_eq!(got, want);
            assert_eq!(serde_json::to_string(&got).unwrap(), text);
        }
        for bad in [
            r#"{"type":"hello","version":1,"extra":2}"#,
            r#"{"type":"shutdown","id":1}"#,
            r#"{"id":1}"#,
            r#"[1,2]"#,
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_options_are_checked_against_the_kernels_limits() {
        assert_eq!(TcpOptions::new().check(), Ok(()));
        assert!(TcpOptions::new().is_empty());
        let ok = TcpOptions::new()
            .keepalive(32767, 1, 127)
            .congestion("cubic")
            .notsent_lowat(0);
        assert_eq!(ok.check(), Ok(()));
        for (bad, names) in [
            (TcpOptions::new().keepalive(0, 5, 3), "TCP_KEEPIDLE"),
            (TcpOptions::new().keepalive(30, 32768, 3), "TCP_KEEPINTVL"),
            (TcpOptions::new().keepalive(30, 5, 128), "TCP_KEEPCNT"),
            (TcpOptions::new().congestion(""), "TCP_CONGESTION"),
            (
                TcpOptions::new().congestion("a-very-long-name"),
                "TCP_CONGESTION",
            ),
            (TcpOptions::new().congestion("re no"), "TCP_CONGESTION"),
            (
                TcpOptions::new().notsent_lowat(1 << 31),
                "TCP_NOTSENT_LOWAT",
            ),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.contains(names), "{e}");
        }
        // An unknown option is refused, not ignored.
        assert!(serde_json::from_str::<TcpOptions>(r#"{"cork":true}"#).is_err());
    }

    #[test]
    fn frames_round_trip_and_bad_lengths_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &Request::Status { id: 9 }).unwrap();
        assert_eq!(&buf[..4], &(buf.len() as u32 - 4).to_be_bytes());
        let back: Request = read_frame(&mut buf.as_slice()).unwrap();
        assert_eq!(back, Request::Status { id: 9 });
        assert!(matches!(
            read_frame::<Request>(&mut [0u8, 0, 0, 0].as_slice()),
            Err(FrameError::BadLength(0))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut [0u8, 1, 0, 1].as_slice()),
            Err(FrameError::BadLength(65537))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut [].as_slice()),
            Err(FrameError::Closed)
        ));
        let update = Reply::Error {
            id: None,
            code: "bad_frame".into(),
            message: "m".into(),
        };
        assert_eq!(
            serde_json::to_string(&update).unwrap(),
            r#"{"type":"error","code":"bad_frame","message":"m"}"#
        );
    }

    #[test]
    fn frames_are_taken_whole_from_a_buffer_filled_piecemeal() {
        let mut wire = encode(&Request::Status { id: 1 });
        wire.extend(encode(&Request::Links { id: 2 }));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        // One byte at a time: a frame is never taken before its last byte.
        for b in wire {
            buf.push(b);
            while let Some(r) = take_frame::<Request>(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, [Request::Status { id: 1 }, Request::Links { id: 2 }]);
        assert!(buf.is_empty());
        let mut bad = vec![0u8, 0, 0, 0];
        assert!(matches!(
            take_frame::<Request>(&mut bad),
            Err(FrameError::BadLength(0))
        ));
    }

    #[test]
    fn an_update_is_a_flat_object_with_its_type() {
        let u = Reply::Update(Update {
            decision: Decision {
                app: Some("a".into()),
                multipath: roam_policy::MultipathMode::Handover,
                paths: vec![],
                explain: vec![],
            },
            interfaces: vec![Interface::new(
                "wlan0",
                roam_policy::LinkKind::Wifi,
                roam_policy::LinkState::Up,
            )],
            flow_thresholds: None,
        });
        let text = serde_json::to_string(&u).unwrap();
        assert!(
            text.starts_with(r#"{"type":"update","decision":{"app":"a""#),
            "{text}"
        );
        assert!(!text.contains("flow_thresholds"), "{text}");
        assert_eq!(serde_json::from_str::<Reply>(&text).unwrap(), u);
    }

    /// The bytes of an update to a subscriber that reports its flow, as roamd sends them: the
    /// thresholds last, so a client reads the update it knew with one field more.
    #[test]
    fn an_update_to_a_flow_reporter_carries_its_thresholds() {
        let text = r#"{"type":"update","decision":{"app":"com.example.backup","multipath":"handover","paths":[{"interface":"rmnet0","link":"cell","role":"primary"}],"explain":["line 4: start on cell then add wifi after 1MB (flow.bytes 0B < 1MB; removes wlan0)"]},"interfaces":[{"name":"rmnet0","kind":"cellular","state":"validated"},{"name":"wlan0","kind":"wifi","state":"validated"}],"flow_thresholds":{"bytes":[1000000],"age_ms":[]}}"#;
        let Reply::Update(u) = serde_json::from_str::<Reply>(text).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(
            u.flow_thresholds,
            Some(FlowThresholds {
                bytes: vec![1_000_000],
                age_ms: vec![],
            })
        );
        assert_eq!(serde_json::to_string(&Reply::Update(u)).unwrap(), text);
        // An update from an agent that predates the field reads as no thresholds.
        let old = r#"{"type":"update","decision":{"app":null,"multipath":"handover","paths":[],"explain":[]},"interfaces":[]}"#;
        let Reply::Update(u) = serde_json::from_str::<Reply>(old).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(u.flow_thresholds, None);
        // The thresholds are checked like every other object.
        let typo = text.replace("age_ms", "age");
        assert!(serde_json::from_str::<Reply>(&typo).is_err());
    }
}
