//! The one rule for which addresses make a link usable.
//!
//! An address is usable, as a session's source towards a peer, when
//! - the kernel has finished with it: not `tentative` (IPv6 duplicate address detection still
//!   running: the kernel refuses to bind it) and not `dadfailed` (another host has it), and
//! - its value can reach beyond the link: not unspecified, loopback, multicast, broadcast or
//!   link-local (`169.254.0.0/16`, `fe80::/10`).
//!
//! A `deprecated` IPv6 address (its preferred lifetime ran out, RFC 4862 §5.5.4) stays usable:
//! the kernel still sends from it when asked, existing sessions keep working on it, and a link
//! whose only global address is deprecated still reaches the internet. The kernel's address
//! scope is not consulted: it only restates the value's class for the addresses roam sees, and
//! Android does not report it.
//!
//! roamd, the SDK's embedded monitor and Android all decide through [`AddrFacts::usable`] (or,
//! with only a value in hand, [`usable_ip`]).
#![forbid(unsafe_code)]

use std::net::IpAddr;

/// What the kernel (or Android) says about one address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddrFacts {
    /// The address (`IFA_LOCAL` on point-to-point links, `IFA_ADDRESS` elsewhere).
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// `IFA_F_TENTATIVE`: duplicate address detection has not finished.
    pub tentative: bool,
    /// `IFA_F_DADFAILED`: duplicate address detection found another owner.
    pub dadfailed: bool,
    /// `IFA_F_DEPRECATED`: past its preferred lifetime (still usable, see the module doc).
    pub deprecated: bool,
}

impl AddrFacts {
    /// An address with no flags set (what Android's `LinkAddress` gives).
    pub fn plain(addr: IpAddr, prefix_len: u8) -> AddrFacts {
        AddrFacts {
            addr,
            prefix_len,
            tentative: false,
            dadfailed: false,
            deprecated: false,
        }
    }

    /// Whether the kernel lets it be used: neither tentative nor DAD-failed. Its value is not
    /// looked at ([`AddrFacts::usable`] does both).
    pub fn settled(&self) -> bool {
        !self.tentative && !self.dadfailed
    }

    /// Whether this address makes its link usable: the rule in the module documentation.
    pub fn usable(&self) -> bool {
        self.settled() && usable_ip(self.addr)
    }
}

/// The value half of the rule: false for unspecified, loopback, multicast, broadcast and
/// link-local addresses, true for every other address.
pub fn usable_ip(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_link_local())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        let f = |a: &str| AddrFacts::plain(a.parse().unwrap(), 24);
        for (facts, want) in [
            (f("198.18.0.2"), true),
            (f("10.0.0.1"), true),
            (f("2001:db8::2"), true),
            (f("fe80::1"), false),
            (f("169.254.3.4"), false),
            (f("127.0.0.1"), false),
            (f("::1"), false),
            (f("0.0.0.0"), false),
            (f("::"), false),
            (f("224.0.0.1"), false),
            (f("ff02::1"), false),
            (f("255.255.255.255"), false),
            (
                AddrFacts {
                    tentative: true,
                    ..f("2001:db8::3")
                },
                false,
            ),
            (
                AddrFacts {
                    dadfailed: true,
                    ..f("2001:db8::4")
                },
                false,
            ),
            (
                AddrFacts {
                    deprecated: true,
                    ..f("2001:db8::5")
                },
                true,
            ),
        ] {
            assert_eq!(facts.usable(), want, "{facts:?}");
        }
    }
}
