//! The one error type of the SDK's public API.
//!
//! Each variant says what failed and where; its message says what to do next. A resolver
//! failure, a refused connection and a TLS failure are distinct variants, because an app reacts
//! to each differently (check the name, check the server, check the certificates).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything a session, a listener or a builder can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The target is not `host:port` (or `[v6]:port`).
    #[error(
        "`{target}` is not a valid target: {why}; write it as host:port, e.g. api.example.com:443"
    )]
    InvalidTarget {
        /// What the app passed.
        target: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The name resolved to no address on any permitted link: each link's nameservers (set
    /// with `SessionBuilder::nameservers`, else resolv.conf's, asked over that link) or, where
    /// there are none, the system resolver. `detail` says what each link's server answered.
    #[error("the name `{host}` does not resolve ({detail}); check the name and the device's DNS")]
    Resolve {
        /// The name that was looked up.
        host: String,
        /// What the resolvers said, link by link.
        detail: String,
    },
    /// The policy leaves this app no usable interface: the session is blocked rather than sent
    /// on a link the user did not permit.
    #[error(
        "no permitted path for app {app}: {detail}; the policy allows no interface that is up \
         (wait for a permitted link or change the policy)"
    )]
    NoPermittedPath {
        /// The app id the decision was made for (`default` when none was given).
        app: String,
        /// The interfaces the device has and why none can be used.
        detail: String,
    },
    /// The server refused the connection (QUIC `CONNECTION_REFUSED`, or the server closed it
    /// during the handshake).
    #[error("{peer} refused the connection ({detail}); is the service running and accepting?")]
    Refused {
        /// The address that refused.
        peer: SocketAddr,
        /// The peer's reason.
        detail: String,
    },
    /// The TLS handshake failed: the certificate did not verify, the name did not match, or no
    /// application protocol (ALPN) was common.
    #[error(
        "TLS with {peer} failed: {detail}; {advice}",
        advice = crate::tls::advice(detail)
    )]
    Tls {
        /// The server address.
        peer: SocketAddr,
        /// What went wrong, as rustls or the peer's alert says.
        detail: String,
    },
    /// Something took longer than the limit the builder set.
    #[error("{what} took longer than {limit:?}; is the server reachable over the permitted links?")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// The limit.
        limit: Duration,
    },
    /// Every candidate (interface × address) failed; the last reason is kept.
    #[error("no candidate connected ({tried} tried); the last error: {last}")]
    AllCandidatesFailed {
        /// How many (interface, address) pairs were tried.
        tried: usize,
        /// The error of the last candidate.
        last: Box<Error>,
    },
    /// The transport asked for is not implemented by this build.
    #[error("transport `{0}` is not implemented yet; use `quic` (or `auto`)")]
    Unsupported(&'static str),
    /// The call exists for another transport only (extra streams are QUIC's).
    #[error("`{what}` is not available on a {transport} session; it needs a QUIC session")]
    NotOnThisTransport {
        /// The call.
        what: &'static str,
        /// The session's transport.
        transport: &'static str,
    },
    /// Subflow control needs roamd (CAP_NET_ADMIN, the userspace path manager), and it is not
    /// reachable or does not know the request.
    #[error(
        "{what} needs roamd, the privileged agent ({detail}); start roamd (or set ROAM_SOCKET \
         to its socket); until then the kernel's path manager decides the subflows"
    )]
    AgentRequired {
        /// The request.
        what: String,
        /// Why it could not be made.
        detail: String,
    },
    /// roamd answered the request with an error.
    #[error("roamd refused {what}: {code}: {message}")]
    Agent {
        /// The request.
        what: String,
        /// roamd's error code (`denied`, `bad_request`, ...).
        code: String,
        /// roamd's explanation.
        message: String,
    },
    /// A resumption of a tcp-resume session was refused by the listener (unknown or expired
    /// session, wrong proof) or failed on every usable interface.
    #[error("resuming the session failed: {0}")]
    Resume(String),
    /// The policy text passed to the builder does not parse or check.
    #[error("{0}; fix the policy text passed to SessionBuilder::policy")]
    Policy(#[from] roam_policy::PolicyError),
    /// The rustls configuration could not be built (an empty root store, a bad key).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// The QUIC connection ended after it was established.
    #[error("the QUIC connection ended: {0}")]
    Connection(#[from] noq::ConnectionError),
    /// A stream of the session ended abnormally.
    #[error("stream error: {0}")]
    Stream(String),
    /// tcp-resume met a TLS server that did not choose ALPN `roam/1`: it is not a roam
    /// Listener, so nothing could resume the session.
    #[error(
        "the server at {peer} does not speak roam/1 (it chose {alpn}): use transport mptcp or \
         quic, or a roam Listener"
    )]
    NotRoam {
        /// The server.
        peer: SocketAddr,
        /// What it chose instead (`no ALPN`, or the protocol's name).
        alpn: String,
    },
    /// `auto` raced every transport and none connected: each one's own failure, in the order
    /// they started.
    #[error("no transport connected: {}", each_failure(.0))]
    AllTransportsFailed(Vec<(crate::TransportPreference, Error)>),
    /// The peer does not speak roam's session protocol on its first stream.
    #[error("the peer's session header is invalid: {0}; is it a roam listener?")]
    Protocol(String),
    /// A socket or netlink call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// `quic: ...; mptcp: ...` for [`Error::AllTransportsFailed`].
fn each_failure(each: &[(crate::TransportPreference, Error)]) -> String {
    each.iter()
        .map(|(t, e)| format!("{t}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// An [`Error::Io`] that says what was being done.
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    fn kind(&self) -> io::ErrorKind {
        match self {
            Error::InvalidTarget { .. } | Error::Policy(_) | Error::TlsConfig(_) => {
                io::ErrorKind::InvalidInput
            }
            Error::Resolve { .. } => io::ErrorKind::NotFound,
            Error::NoPermittedPath { .. } => io::ErrorKind::NetworkUnreachable,
            Error::Refused { .. } => io::ErrorKind::ConnectionRefused,
            Error::Tls { .. } | Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::AllCandidatesFailed { last, .. } => last.kind(),
            // The last transport to give up is the app's answer, as when one was tried.
            Error::AllTransportsFailed(each) => each
                .last()
                .map(|(_, e)| e.kind())
                .unwrap_or(io::ErrorKind::NotConnected),
            Error::Unsupported(_) | Error::NotOnThisTransport { .. } | Error::NotRoam { .. } => {
                io::ErrorKind::Unsupported
            }
            Error::AgentRequired { .. } => io::ErrorKind::NotConnected,
            Error::Agent { .. } => io::ErrorKind::PermissionDenied,
            Error::Resume(_) => io::ErrorKind::ConnectionAborted,
            Error::Connection(noq::ConnectionError::TimedOut) => io::ErrorKind::TimedOut,
            Error::Connection(_) | Error::Stream(_) => io::ErrorKind::ConnectionAborted,
            Error::Io { source, .. } => source.kind(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_error_kinds_keep_the_distinction() {
        let peer: SocketAddr = "198.18.0.1:443".parse().unwrap();
        let cases = [
            (
                Error::Resolve {
                    host: "x.invalid".into(),
                    detail: "not found".into(),
                },
                io::ErrorKind::NotFound,
            ),
            (
                Error::Refused {
                    peer,
                    detail: "refused".into(),
                },
                io::ErrorKind::ConnectionRefused,
            ),
            (
                Error::Tls {
                    peer,
                    detail: "unknown issuer".into(),
                },
                io::ErrorKind::InvalidData,
            ),
            (
                Error::NoPermittedPath {
                    app: "a".into(),
                    detail: "wlan0 down".into(),
                },
                io::ErrorKind::NetworkUnreachable,
            ),
            (Error::Unsupported("mptcp"), io::ErrorKind::Unsupported),
        ];
        for (e, kind) in cases {
            let text = e.to_string();
            let io: io::Error = e.into();
            assert_eq!(io.kind(), kind, "{text}");
            assert_eq!(io.to_string(), text);
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = Error::NoPermittedPath {
            app: "com.example.video".into(),
            detail: "wlan0 (wifi) is down".into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("no permitted path for app com.example.video"),
            "{text}"
        );
        assert!(text.contains("change the policy"), "{text}");
    }
}
