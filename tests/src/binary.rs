//! What the bench and demo binaries do before anything else.

use std::process::ExitCode;

/// Installs the log subscriber (`RUST_LOG`, default `warn` with quinn-udp's send errors left
/// out: the failures these binaries inject make every datagram sent on a dead link fail, which
/// is the point, not news) and checks the
/// privileges namespaces need. Without them it prints one line saying so and returns the exit
/// code to leave with.
pub fn start(name: &str, sudo_hint: &str) -> Result<(), ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,quinn_udp=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    match crate::privilege::missing() {
        None => Ok(()),
        Some(why) => {
            eprintln!("{name}: {why}; run it as root, e.g. {sudo_hint}");
            Err(ExitCode::from(2))
        }
    }
}
