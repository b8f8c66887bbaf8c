//! roam's test bench: network-namespace handsets, the link emulator, handover scenarios,
//! benchmarks and the demo.
//!
//! - [`netns`]: namespaces owned by one process, entered by threads, deleted on drop.
//! - [`netlink`]: waiting for link state by netlink event, timestamping the kernel's link
//!   notifications; link counters.
//! - [`topology`]: the handset (`wlan0`, `rmnet0`, `bnep0`, ...) and the server, addresses and
//!   routing.
//! - [`inject`]: failures as a phone sees them (link down, carrier loss, address removal, silent
//!   blackhole, rate collapse, flapping, the preferred link returning).
//! - [`emulator`]: the user-space link emulator (delay, jitter, loss, rate, blackhole).
//! - [`probe`]: a UDP ping to check paths and the emulator.
//! - [`traffic`]: numbered, self-checking messages and the receiver that timestamps them.
//! - [`system`]: what is measured: the baselines today, roam's sessions later.
//! - [`scenario`], [`handover`], [`mod@bench`]: the handover benchmark's failures, one measurement,
//!   and the aggregated report (table and JSON).
//! - [`transfer`], [`tls_pump`], [`stats`]: what the benches share: a bulk transfer's
//!   counter pattern and its check, raw TLS pumped over a socket, percentiles and medians.
//! - [`agent`]: roamd run as a process in a namespace (a real `roamd`, this crate's binaries,
//!   or a helper test), its reflector, and the decisions it pushes: the one way every test and
//!   bench of the workspace runs it.
//! - [`timeline`]: per-interface counters around a failure and their SVG picture.
//! - [`tls`]: the test PKI (a CA and a server certificate) and its rustls/quinn configurations.
//! - [`privilege`]: the root check every namespace test and binary starts with; [`binary`]:
//!   the binaries' common start.
//! - [`serial`]: a lock that keeps timing-sensitive tests from running at once.
//! - [`soak`]: many handovers in a row on long-lived sessions, and what they cost in memory
//!   and descriptors.
#![warn(missing_docs)]

pub mod agent;
pub mod bench;
pub mod binary;
pub mod emulator;
pub mod handover;
pub mod idle;
pub mod inject;
pub mod netlink;
pub mod netns;
pub mod privilege;
pub mod probe;
pub mod scenario;
pub mod serial;
pub mod soak;
pub mod stats;
pub mod system;
pub mod timeline;
pub mod tls;
pub mod tls_pump;
pub mod topology;
pub mod traffic;
pub mod transfer;
