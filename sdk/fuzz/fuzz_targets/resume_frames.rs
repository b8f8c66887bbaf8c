//! Fuzz tcp-resume frames a peer sends, fed to a session: never a panic, and what parses round-trips (the checks are in
//! `roam::fuzzing::resume_frames`, which `cargo test` also runs on every corpus and regression file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roam::fuzzing::resume_frames(data);
});
