//! Fuzz a local peer's byte stream of roamd IPC frames (requests and replies): never a panic, and what parses round-trips (the checks are in
//! `roam_ipc::proto::fuzz_frames`, which `cargo test` also runs on every corpus and regression file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    roam_ipc::proto::fuzz_frames(data);
});
