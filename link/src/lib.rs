//! roam's one link model, shared by roamd, the SDK's embedded monitor and Android.
//!
//! - [`classify()`]: what kind of link an interface is (config overrides, sysfs facts, Linux
//!   and Android names including CLAT's `v4-` interfaces, the rtnetlink kind). The only place
//!   that knows interface-name conventions.
//! - [`addr`]: the one rule for which addresses make a link usable ([`AddrFacts::usable`],
//!   [`usable_ip`]).
//! - [`table`]: the link table with up times and the start-up rule for `hold` (links usable
//!   when watching starts count as up since an unknown, long time).
//! - [`rtnl`] (feature `rtnl`): rtnetlink messages translated into link events.
//! - [`socket`] (feature `socket`): the route socket (dump, notifications), the FIB lookup,
//!   `if_nametoindex` and `SysfsFacts::read`.
//! - [`netlink`]: the kernel's netlink wire formats, typed.
//!
//! Everything but [`socket`] is pure: no I/O, no clock (callers pass `now`), no `unsafe`
//! (each such module says `#![forbid(unsafe_code)]`), no tokio, netlink sockets or libc.
#![cfg_attr(not(feature = "socket"), forbid(unsafe_code))]
#![cfg_attr(feature = "socket", deny(unsafe_code))]
#![warn(missing_docs)]

pub mod addr;
pub mod classify;
pub mod netlink;
#[cfg(feature = "rtnl")]
pub mod rtnl;
#[cfg(feature = "socket")]
pub mod socket;
pub mod table;

pub use addr::{AddrFacts, usable_ip};
pub use classify::{KindOverride, SysfsFacts, classify, glob_match, kind_from_name};
pub use table::{Link, LinkFacts, LinkTable, Route, UpTime};
