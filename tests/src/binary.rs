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

/// For the tests of these binaries: runs `cmd`, which must exit successfully (else it panics
/// quoting both outputs), and returns its standard output.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// For the tests of these binaries: a path in the temporary directory for a file a run of
/// `what` writes, unique to this process (`WHAT-PID.EXT`).
pub fn scratch_path(what: &str, ext: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{what}-{}.{ext}", std::process::id()))
}

/// For the tests of these binaries: the JSON a run wrote to `path`, which is then removed.
pub fn take_json(path: &std::path::Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
