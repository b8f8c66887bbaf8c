//! roamd, the agent, run as a process inside a handset namespace, and its decisions as they
//! are pushed (`roamctl watch --json`), for the demo's timeline.
//!
//! Only the agent's command line is relied on (`roamd --policy --socket --dry-run`, its
//! `roamd: ready:` line, `roamctl watch --json`), and it runs in `--dry-run`: it observes the
//! links and decides, and leaves the kernel to the topology.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// One decision roamd pushed.
#[derive(Debug, Clone)]
pub struct AgentUpdate {
    /// When it arrived.
    pub at: Instant,
    /// The primary interface, if any.
    pub primary: Option<String>,
    /// `name=state` of every interface, as the agent sees them.
    pub links: Vec<String>,
}

/// A running roamd and a `roamctl watch` subscribed to it; both are stopped on drop.
#[derive(Debug)]
pub struct Agent {
    roamd: Child,
    watch: Child,
    dir: PathBuf,
    updates: Arc<Mutex<Vec<AgentUpdate>>>,
}

/// Where `roamd` and `roamctl` are when they were built with the current executable: the same
/// directory (`target/release` or `target/debug`).
pub fn beside_current_exe() -> Option<(PathBuf, PathBuf)> {
    let dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let (d, c) = (dir.join("roamd"), dir.join("roamctl"));
    (d.is_file() && c.is_file()).then_some((d, c))
}

impl Agent {
    /// Starts `roamd` in `ns` with `policy`, waits for its ready line, subscribes to the
    /// decisions for `app` and waits for the first one (at most 5 s each).
    pub fn start(
        ns: &Netns,
        roamd: &Path,
        roamctl: &Path,
        policy: &str,
        app: &str,
    ) -> Result<Agent> {
        let dir =
            std::env::temp_dir().join(format!("roam-agent-{}-{}", std::process::id(), ns.name()));
        std::fs::create_dir_all(&dir)?;
        let policy_path = dir.join("policy.roam");
        std::fs::write(&policy_path, policy)?;
        let socket = dir.join("roamd.sock");
        let mut child = ns
            .command(&roamd.to_string_lossy())
            .arg("--policy")
            .arg(&policy_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--dry-run")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting roamd")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().context("roamd has no stdout")?;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("roamd: ready:") {
                    let _ = tx.send(line);
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(5)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&dir);
            bail!("roamd printed no ready line within 5 s");
        }
        let mut watch = Command::new(roamctl)
            .arg("--socket")
            .arg(&socket)
            .args(["watch", "--json", "--app", app])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting roamctl watch")?;
        let updates = Arc::new(Mutex::new(Vec::new()));
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let out = watch.stdout.take().context("roamctl has no stdout")?;
        let u = updates.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(update) = parse_update(Instant::now(), &line) {
                    u.lock().unwrap_or_else(|e| e.into_inner()).push(update);
                    let _ = first_tx.send(());
                }
            }
        });
        let agent = Agent {
            roamd: child,
            watch,
            dir,
            updates,
        };
        if first_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            bail!("roamctl watch delivered no decision within 5 s");
        }
        Ok(agent)
    }

    /// Every decision pushed so far.
    pub fn updates(&self) -> Vec<AgentUpdate> {
        self.updates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        for child in [&mut self.watch, &mut self.roamd] {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One line of `roamctl watch --json`: `{"decision": {..., "paths": [...]}, "interfaces": [...]}`.
fn parse_update(at: Instant, line: &str) -> Option<AgentUpdate> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let paths = v.get("decision")?.get("paths")?.as_array()?;
    let primary = paths
        .iter()
        .find(|p| p.get("role").and_then(|r| r.as_str()) == Some("primary"))
        .and_then(|p| p.get("interface")?.as_str())
        .map(str::to_owned);
    let links = v
        .get("interfaces")
        .and_then(|i| i.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    Some(format!(
                        "{}={}",
                        i.get("name")?.as_str()?,
                        i.get("state")?.as_str()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(AgentUpdate { at, primary, links })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_watch_line() {
        let line = r#"{"decision":{"app":"a","multipath":"handover","paths":[{"interface":"rmnet0","link":"cell","role":"primary"}],"explain":[]},"interfaces":[{"name":"rmnet0","kind":"cellular","state":"up","up_for_ms":4954},{"name":"wlan0","kind":"wifi","state":"down"}]}"#;
        let u = parse_update(Instant::now(), line).unwrap();
        assert_eq!(u.primary.as_deref(), Some("rmnet0"));
        assert_eq!(u.links, ["rmnet0=up", "wlan0=down"]);
        assert!(parse_update(Instant::now(), "not json").is_none());
    }
}
