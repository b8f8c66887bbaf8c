//! Fuzz a datagram arriving at the prober or the reflector: never a panic, and what parses round-trips (the checks are in
//! `roam_agent::probe::wire::fuzz`, which `cargo test` also runs on every corpus and regression file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roam_agent::probe::wire::fuzz(data);
});
