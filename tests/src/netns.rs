//! Named network namespaces that belong to one test process.
//!
//! A [`Netns`] is made with `ip netns add` under a name unique to this process (`roamPID-N-ROLE`)
//! and deleted when dropped, which also happens while a panicking test unwinds. Code runs inside
//! it on a thread of its own that first calls `setns(CLONE_NEWNET)` ([`Netns::run`],
//! [`Netns::spawn`]); sockets opened there stay in that namespace whatever thread uses them later.
//! Processes run in it through `ip netns exec` ([`Netns::command`]). Nothing here touches the root
//! namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};

/// Where iproute2 keeps the bind mounts of named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// Every namespace this crate makes starts with this, followed by the pid.
const PREFIX: &str = "roam";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// A network namespace owned by this process, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes a new empty namespace whose name ends with `role` (`h` for a handset, `s` for a
    /// server, ...), with its loopback up. `ip netns add ROAM..`
    pub fn new(role: &str) -> Result<Self> {
        SWEEP.call_once(sweep_orphans);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}{role}", std::process::id());
        run_checked(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        tracing::debug!(netns = %ns.name, "namespace created");
        Ok(ns)
    }

    /// The namespace's name as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind mount that names this namespace.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME ARGS...` and returns its standard output; a non-zero exit is an error
    /// that quotes the command and its standard error.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        run_checked(&mut cmd)
    }

    /// Like [`Netns::ip`] but an error is only logged: for clean-up steps whose failure must not
    /// hide the failure being cleaned up after.
    pub fn ip_quiet(&self, args: &[&str]) {
        if let Err(e) = self.ip(args) {
            tracing::debug!(netns = %self.name, error = %e, "ip command failed");
        }
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program ARGS...` inside the namespace and returns its standard output.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(program);
        cmd.args(args);
        run_checked(&mut cmd)
    }

    /// Runs `nft -f -` inside the namespace with `script` on its standard input.
    pub fn nft(&self, script: &str) -> Result<()> {
        use std::io::Write;
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft (is the nftables package installed?)")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {} failed: {}\nscript:\n{script}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Writes a sysctl of this namespace (`net.ipv4.ip_forward` style key).
    ///
    /// `/proc/sys/net` shows the namespace of the task that opens it, so the write happens on a
    /// thread inside the namespace instead of through a `sysctl` process.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))?
            .with_context(|| format!("writing {path} = {value} in {}", self.name))
    }

    /// Moves the calling thread into this namespace. Only for threads the caller owns and that
    /// will never serve anything else: prefer [`Netns::run`] and [`Netns::spawn`].
    pub fn enter(&self) -> io::Result<()> {
        enter_path(&self.path())
    }

    /// Runs `f` on a fresh thread inside the namespace and waits for its result. Threads that `f`
    /// starts inherit the namespace.
    pub fn run<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let path = self.path();
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> io::Result<R> {
                enter_path(&path)?;
                Ok(f())
            });
            match handle.join() {
                Ok(r) => r.with_context(|| format!("entering namespace {}", self.name)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a named thread inside the namespace and returns at once.
    pub fn spawn<F, R>(&self, thread_name: &str, f: F) -> Result<JoinHandle<Result<R>>>
    where
        F: FnOnce() -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        let ns = self.name.clone();
        let handle = std::thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                enter_path(&path).with_context(|| format!("entering namespace {ns}"))?;
                f()
            })?;
        Ok(handle)
    }

    /// Starts a named thread inside the namespace with a current-thread tokio runtime, runs the
    /// future `f` makes there to completion, and returns at once: join the handle for its
    /// result. The future is made on that thread, so it need not be `Send`.
    pub fn spawn_async<F, Fut, R>(&self, thread_name: &str, f: F) -> Result<JoinHandle<Result<R>>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<R>>,
        R: Send + 'static,
    {
        self.spawn(thread_name, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(f())
        })
    }

    /// Runs a future to completion on a current-thread tokio runtime inside the namespace.
    pub fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        self.run(|| -> Result<F::Output> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt.block_on(fut))
        })?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {
                tracing::debug!(netns = %self.name, "namespace deleted");
            }
            Ok(out) => tracing::warn!(
                netns = %self.name,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "could not delete namespace"
            ),
            Err(e) => tracing::warn!(netns = %self.name, error = %e, "could not run ip netns del"),
        }
    }
}

/// Whether a namespace of that name exists (`/run/netns/NAME`).
pub fn exists(name: &str) -> bool {
    PathBuf::from(NETNS_DIR).join(name).exists()
}

fn enter_path(path: &std::path::Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns only reads the descriptor, which `file` keeps open for the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs a command, failing with its standard error when it exits non-zero.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<String> {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Deletes namespaces left by earlier runs of this crate whose process is gone (a test killed by
/// SIGKILL cannot run its destructors). Namespaces of live processes are left alone.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            tracing::info!(netns = %name, "deleting namespace left by a dead test process");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}
