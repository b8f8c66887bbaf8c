//! roam's test bench: network-namespace handsets, the link emulator, handover scenarios,
//! benchmarks and the demo.
#![warn(missing_docs)]
