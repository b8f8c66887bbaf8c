//! Fuzz the session header a TCP client sends the Listener inside TLS: never a panic, and what parses round-trips (the checks are in
//! `roam::fuzzing::session_header`, which `cargo test` also runs on every corpus and regression file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roam::fuzzing::session_header(data);
});
