//! Entry points of the fuzz targets in `sdk/fuzz` (not part of the API): the bytes a peer
//! sends, through the parsers the Listener and the client run on them. `cargo test -p roam
//! --lib` replays every corpus and regression file through the same functions, so a
//! regression fails CI without cargo-fuzz.

/// The session header a TCP client sends inside TLS (`ROAM`, version, app id).
pub fn session_header(data: &[u8]) {
    crate::session::header::fuzz(data);
}

/// What a tcp-resume peer sends after `RRES`: frames into a session's state.
pub fn resume_frames(data: &[u8]) {
    crate::transport::resume::fuzz_frames(data);
}

/// A DNS server's UDP reply to the client's query.
pub fn dns_answer(data: &[u8]) {
    crate::net::resolve::fuzz(data);
}

/// The fuzz targets by name (their file names in `sdk/fuzz/fuzz_targets`).
/// A fuzz target's body.
pub type Target = fn(&[u8]);

pub const TARGETS: &[(&str, Target)] = &[
    ("session_header", session_header),
    ("resume_frames", resume_frames),
    ("dns_answer", dns_answer),
];
