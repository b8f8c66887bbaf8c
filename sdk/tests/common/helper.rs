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

/// The body of a roamd helper process (a `#[test]` that returns at once unless `env` names
/// a directory): roamd with `DIR/roamd.toml` (else `default_config`), `DIR/policy.roam` and
/// its socket at `DIR/roamd.sock`, logging to standard error, until it is killed. `before`
/// runs first, in the helper process (e.g. to mount what roamd needs there).
pub fn agent_process_body(env: &str, default_config: &str, before: impl FnOnce()) {
    let Some(dir) = std::env::var_os(env).map(std::path::PathBuf::from) else {
        return;
    };
    // Standard output is read for the ready line.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    before();
    let text = std::fs::read_to_string(dir.join("roamd.toml"))
        .unwrap_or_else(|_| default_config.to_owned());
    let config = roam_agent::config::Config::from_str("roamd.toml", &text)
        .unwrap_or_else(|e| panic!("{}", e.render()));
    let opts = roam_agent::daemon::Options {
        config,
        policy_path: Some(dir.join("policy.roam")),
        socket: dir.join("roamd.sock"),
        dry_run: false,
        sysfs_root: std::path::PathBuf::from("/sys/class/net"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(roam_agent::daemon::run(opts, |_| {
        println!("agent-ready");
    }));
    r.expect("roamd failed");
}

/// roamd running in a namespace as a helper process of this test binary (whose helper test
/// `agent_process_helper` calls [`agent_process_body`] with `env`), with a directory of its
/// own for its config, policy and socket; killed on drop, the directory removed.
pub struct AgentProc {
    proc: Option<HelperProc>,
    dir: std::path::PathBuf,
    env: String,
}

impl AgentProc {
    /// Writes `config` and `policy` to a new directory named after `tag` and starts roamd in
    /// `ns`; returns once it serves.
    pub fn start(
        ns: &Netns,
        env: &str,
        tag: &str,
        config: &str,
        policy: &str,
    ) -> Result<AgentProc> {
        let dir = std::env::temp_dir().join(format!("roam-sdk-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("policy.roam"), policy)?;
        std::fs::write(dir.join("roamd.toml"), config)?;
        let mut a = AgentProc {
            proc: None,
            dir,
            env: env.to_owned(),
        };
        a.restart(ns)?;
        Ok(a)
    }

    /// Starts roamd again in `ns` (after [`AgentProc::kill`]) with the same directory.
    pub fn restart(&mut self, ns: &Netns) -> Result<()> {
        self.kill();
        self.proc = Some(HelperProc::start(
            ns,
            "agent_process_helper",
            (&self.env, self.dir.as_os_str()),
            "agent-ready",
            "ROAM_AGENT_LOG",
        )?);
        Ok(())
    }

    /// Kills roamd (SIGKILL: no clean-up of its own runs) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Its socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.join("roamd.sock")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
