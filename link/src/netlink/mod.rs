//! The kernel's netlink wire formats roam speaks, typed: parse and emit, no sockets.
//!
//! - [`header`]: the netlink message header (`struct nlmsghdr`), walking the messages of a
//!   datagram, and the kernel's error/acknowledgement messages with their extended ack.
//! - [`attr`]: netlink attributes (`struct nlattr`): one bounds-checked iterator and one
//!   builder, with 4-byte alignment and nesting.
//! - [`genl`]: the generic netlink header and the `nlctrl` family (resolving a family's id and
//!   multicast groups by name).
//! - [`mptcp_pm`]: the MPTCP path manager family: endpoint and subflow requests, and the
//!   `mptcp_pm_events` multicast events.
//! - [`nl80211`]: the two WiFi questions roam asks (an interface's SSID, its station's signal).
//! - [`sock_diag`]: `inet_diag` requests and replies, and the MPTCP subflow info they carry.
//!
//! Every constant is the kernel's (`include/uapi/linux/...`), defined once here. Values the
//! kernel may extend (commands, event types, message types) are enums that keep unknown
//! values as `Other(raw)`. Parsers never panic: a short or malformed buffer gives `None` or
//! stops the attribute walk. Numbers are in host order (netlink is host-endian) unless the
//! kernel documents them big-endian (ports in events and in `inet_diag_sockid`).
//!
//! The tests in `link/tests/netlink_captured.rs` pin these parsers and emitters to bytes
//! captured once from Linux 6.18 (`link/tests/data/`).

/// Defines an enum of kernel values that keeps the values it does not name as `Other(raw)`,
/// with the conversions both ways (`From<raw>`, `From<enum> for raw`).
macro_rules! kernel_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $raw:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value not named here, as the kernel sent it.
            Other($raw),
        }

        impl From<$raw> for $name {
            fn from(v: $raw) -> Self {
                match v {
                    $( $value => $name::$variant, )*
                    o => $name::Other(o),
                }
            }
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> $raw {
                match v {
                    $( $name::$variant => $value, )*
                    $name::Other(o) => o,
                }
            }
        }
    };
}

pub mod attr;
pub mod genl;
pub mod header;
pub mod mptcp_pm;
pub mod nl80211;
pub mod sock_diag;

pub use attr::{Attr, Attrs};
pub use header::{ErrorMessage, Header, Message, MessageType, Messages};

/// Address families as the kernel numbers them (`linux/socket.h`), used by `mptcp_pm`
/// addresses and `inet_diag` requests.
pub const AF_INET: u16 = 2;
/// `AF_INET6`.
pub const AF_INET6: u16 = 10;

/// The kernel's address family number for `ip`.
pub fn family_of(ip: std::net::IpAddr) -> u16 {
    match ip {
        std::net::IpAddr::V4(_) => AF_INET,
        std::net::IpAddr::V6(_) => AF_INET6,
    }
}

/// The fuzz targets' bodies (link/fuzz) and their corpus replay: datagrams as a netlink
/// socket receives them, through the parsers roamd and the SDK run on the kernel's answers
/// and events. Never panic on any input.
#[doc(hidden)]
pub mod fuzz {
    use super::genl::{Family, GenlMessage};
    use super::mptcp_pm::{Event, Request};
    use super::sock_diag::Socket;
    use super::{Attrs, Messages};

    /// A `mptcp_pm` datagram: events, answers, acks and errors (and, as the tests read
    /// iproute2's requests, requests).
    pub fn mptcp_pm(datagram: &[u8]) {
        for m in Messages::new(datagram) {
            let _ = m.error();
            let Some(g) = GenlMessage::parse(&m) else {
                continue;
            };
            let e = Event::parse(g.header.cmd, g.attrs);
            let _ = (e.local(), e.remote());
            let _ = Request::parse(g.header.cmd, g.attrs);
            let _ = Family::parse(g.attrs);
            walk(g.attrs, 0);
        }
    }

    /// A `SOCK_DIAG_BY_FAMILY` answer: the socket and its MPTCP subflow nest, or an error.
    pub fn sock_diag(datagram: &[u8]) {
        for m in Messages::new(datagram) {
            let _ = m.error();
            if let Some(s) = Socket::parse(m.payload) {
                let _ = s.ulp();
                walk(s.attrs, 0);
            }
        }
    }

    /// Every attribute's every reading, nests included (a few levels: the kernel's go two).
    fn walk(attrs: &[u8], depth: usize) {
        for a in Attrs::new(attrs) {
            let _ = (a.u8(), a.u16(), a.be16(), a.u32(), a.i32(), a.u64());
            let _ = (a.ipv4(), a.ipv6(), a.string());
            if depth < 4 {
                walk(a.value(), depth + 1);
            }
        }
    }

    /// A fuzz target's body.
    pub type Target = fn(&[u8]);

    /// The targets by name (their file names in `link/fuzz/fuzz_targets`).
    pub const TARGETS: &[(&str, Target)] = &[("mptcp_pm", mptcp_pm), ("sock_diag", sock_diag)];
}
