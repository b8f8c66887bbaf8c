//! Fuzz a sock_diag answer: never a panic, and what parses round-trips (the checks are in
//! `roam_link::netlink::fuzz::sock_diag`, which `cargo test` also runs on every corpus and regression file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roam_link::netlink::fuzz::sock_diag(data);
});
