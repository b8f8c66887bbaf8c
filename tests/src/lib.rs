//! roam's test bench: network-namespace handsets, the link emulator, handover scenarios,
//! benchmarks and the demo.
//!
//! - [`netns`]: namespaces owned by one process, entered by threads, deleted on drop.
//! - [`netlink`]: waiting for link state by netlink event; link counters.
//! - [`topology`]: the handset (`wlan0`, `rmnet0`, `bnep0`, ...) and the server, addresses and
//!   routing.
//! - [`inject`]: failures as a phone sees them (link down, carrier loss, address removal, silent
//!   blackhole, rate collapse, flapping, the preferred link returning).
//! - [`emulator`]: the user-space link emulator (delay, jitter, loss, rate, blackhole).
//! - [`privilege`]: the root check every namespace test and binary starts with.
#![warn(missing_docs)]

pub mod emulator;
pub mod inject;
pub mod netlink;
pub mod netns;
pub mod privilege;
pub mod probe;
pub mod topology;
