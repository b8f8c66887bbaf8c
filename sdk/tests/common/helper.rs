//! A process of this test binary started again inside a namespace to run one helper "test"
//! (roamd, its reflector): the filter names the helper, an environment variable hands it its
//! arguments, and it prints a ready line when it serves. Killed (SIGKILL) on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;

use anyhow::{Context, Result, bail};
use roam_tests::netns::Netns;

use super::EVENT_TIMEOUT;

/// A helper process; killed on drop.
pub struct HelperProc {
    child: Child,
    what: String,
}

impl HelperProc {
    /// Runs `<this test binary> FILTER --exact` in `ns` with `env` set, and waits up to
    /// [`EVENT_TIMEOUT`] for a line of its standard output containing `ready`. `RUST_LOG` for
    /// it comes from `log_var` (default `warn`).
    pub fn start(
        ns: &Netns,
        filter: &str,
        env: (&str, &std::ffi::OsStr),
        ready: &str,
        log_var: &str,
    ) -> Result<HelperProc> {
        let exe = std::env::current_exe()?;
        let mut cmd = ns.command(exe.to_str().context("exe path")?);
        cmd.args([filter, "--exact", "--nocapture", "--test-threads=1"])
            .env(env.0, env.1)
            .env(
                "RUST_LOG",
                std::env::var(log_var).unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().with_context(|| format!("starting {filter}"))?;
        let out = child.stdout.take().context("helper stdout")?;
        let (tx, rx) = mpsc::channel();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            // Ends with the process (its stdout closes).
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(());
                }
            }
        });
        let mut p = HelperProc {
            child,
            what: filter.to_owned(),
        };
        if rx.recv_timeout(EVENT_TIMEOUT).is_err() {
            p.kill();
            bail!("{} did not become ready within {EVENT_TIMEOUT:?}", p.what);
        }
        Ok(p)
    }

    /// Kills it (SIGKILL) and reaps it. `ip netns exec` execs the program: the pid is its own.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HelperProc {
    fn drop(&mut self) {
        self.kill();
    }
}
