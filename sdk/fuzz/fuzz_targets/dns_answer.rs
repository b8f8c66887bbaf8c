//! Fuzz a DNS server's UDP reply to the client's query: never a panic, and what parses round-trips (the checks are in
//! `roam::fuzzing::dns_answer`, which `cargo test` also runs on every corpus and regression file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roam::fuzzing::dns_answer(data);
});
