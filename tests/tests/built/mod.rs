//! The SDK's binaries for tests that run them: the `roam` command line and the examples in
//! `sdk/examples/`, built by cargo (once per test process, a no-op when they are fresh) into
//! the target directory and profile of the running test, and the files they are given.
//!
//! `CARGO_BIN_EXE_*` names only binaries of the test's own package; these belong to the `roam`
//! package, so the test asks cargo for them.

#![allow(dead_code)] // Each test file uses its own part.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

/// The profile directory the running test was built into (`target/debug`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps")
        .to_path_buf()
}

/// Builds `roam` and the SDK's examples with the running test's profile, once.
fn build() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = profile_dir();
        let target = dir.parent().expect("target directory");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", "roam", "--bin", "roam", "--examples"])
            .env("CARGO_TARGET_DIR", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the roam binaries");
        assert!(
            status.success(),
            "cargo build -p roam --bin roam --examples failed"
        );
        dir
    })
}

/// The `roam` command line.
pub fn roam() -> PathBuf {
    build().join("roam")
}

/// The SDK example `name` (`sdk/examples/NAME.rs`).
pub fn example(name: &str) -> PathBuf {
    build().join("examples").join(name)
}

/// A directory of this test's own, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named after `what` and the process.
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("roam-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// A path inside it.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `names` (IP addresses become IP SANs) and its key, as PEM
/// files `cert.pem` and `key.pem` in `dir`; clients trust `cert.pem` itself.
pub fn certificate(dir: &Scratch, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// `roam serve --echo --json` on `addr` in `ns` with `cert` and `key`, once it said it listens.
pub fn serve_echo(
    ns: &roam_tests::netns::Netns,
    addr: std::net::SocketAddr,
    (cert, key): (&Path, &Path),
) -> Running {
    let mut serve = ns.command(roam().to_str().unwrap());
    serve
        .args(["serve", "--listen", &addr.to_string(), "--echo", "--json"])
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key);
    let mut server = Running::start(serve);
    let listening = server.wait_for("listening line", Duration::from_secs(10), |l| {
        l.contains("\"listening\"")
    });
    assert!(listening.contains(&addr.to_string()), "{listening}");
    server
}

/// `roam connect` to the test service (`SERVICE_V4:port`) in `ns`, trusting `ca`, with no roamd
/// to follow (`ROAM_SOCKET` names a socket in `dir` that nothing listens on: the session decides
/// with its embedded monitor). Add the test's own arguments.
pub fn connect(ns: &roam_tests::netns::Netns, port: u16, ca: &Path, dir: &Scratch) -> Command {
    let mut c = ns.command(roam().to_str().unwrap());
    c.args([
        "connect",
        &format!("{}:{port}", roam_tests::topology::SERVICE_V4),
    ])
    .arg("--ca")
    .arg(ca)
    .env("ROAM_SOCKET", dir.0.join("no-roamd.sock"));
    c
}

/// A running process whose standard output is read line by line on a thread; killed on drop.
pub struct Running {
    pub child: Child,
    /// The process's standard input (a pipe; dropping it is end of file).
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
}

impl Running {
    /// Starts `cmd` with standard input and output piped (standard error inherited, so the
    /// test's output shows it).
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    /// Writes `line` and a newline to the process's standard input.
    pub fn type_line(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("standard input is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line within `timeout`, or `None` when the output ended or the time ran out.
    pub fn line(&mut self, timeout: Duration) -> Option<String> {
        let l = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    /// Reads lines until one satisfies `pred`, within `timeout` in all; panics with what it saw
    /// otherwise.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.line(left) {
                Some(l) if pred(&l) => return l,
                Some(_) => {}
                None => panic!(
                    "no {what} within {timeout:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (at most `timeout`) for the process to exit, reading the rest of its output;
    /// returns its exit code (`None`: killed by a signal or still running, then killed).
    pub fn finish(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while self
            .line(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_some()
        {}
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if std::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
