//! Whether this process may build namespaces, and what a test does when it may not.

/// CAP_NET_ADMIN's bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;
/// CAP_SYS_ADMIN's bit: `ip netns add` mounts and `setns` need it.
const CAP_SYS_ADMIN: u32 = 21;

/// Why namespaces cannot be built here, or `None` when they can (root, or the capabilities
/// CAP_NET_ADMIN and CAP_SYS_ADMIN).
pub fn missing() -> Option<String> {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot read /proc/self/status: {e}")),
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |bit: u32| cap_eff & (1 << bit) != 0;
    if has(CAP_NET_ADMIN) && has(CAP_SYS_ADMIN) {
        None
    } else {
        Some("needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) to build network namespaces".into())
    }
}

/// For tests: `true` when the test may go on. Without privileges it prints why and returns
/// `false` (skip), except under CI (`CI` set), where it panics: in CI these tests always run.
pub fn require_netns(test: &str) -> bool {
    match missing() {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("{test}: {why}, and CI is set, so this test may not skip")
        }
        Some(why) => {
            skip(test, &why);
            false
        }
    }
}

/// For tests: `true` when the program `tool` runs here (`tool --version`). Without it, prints
/// why (naming the Debian `package` that has it) and returns `false` (skip), except under CI,
/// where it panics.
pub fn require_tool(test: &str, tool: &str, package: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok()
    {
        return true;
    }
    let why = format!("the `{tool}` tool is not installed (Debian package {package})");
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {why}, and CI is set, so this test may not skip"
    );
    skip(test, &why);
    false
}

/// Says why a test did nothing, straight to the stream: the test harness captures eprintln!
/// of passing tests, and a skip nobody sees is a pass nobody questions.
pub fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping {test}: {why}");
}
