//! What the roam-ffi tests share: a test PKI as PEM files, the C compiler with libroam, the
//! two-link handset, and an echo server (a roam `Listener`) in the server namespace.
#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use roam_sdk::{Listener, Session};
use roam_tests::topology::{SERVICE_V4, Topology};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncWriteExt;

pub const SERVER_NAME: &str = "server.roam.test";
pub const PORT: u16 = 4433;
/// WiFi preferred over cellular.
pub const POLICY: &str = "link wifi = kind wifi\nlink cell = kind cellular\n\
                          default {\n  prefer wifi over cell\n  hold 1s\n}\n";

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The service address the echo server listens on.
pub fn service() -> String {
    format!("{SERVICE_V4}:{PORT}")
}

/// A fresh scratch directory for one test.
pub fn scratch(test: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("roam-ffi-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A CA and a server certificate it signs, also written as PEM files (`ca.pem`,
/// `chain.pem`, `key.pem`) for the C side.
pub struct Pki {
    pub dir: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Pki {
    pub fn generate(dir: &Path) -> Result<Pki> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, &ca_key);
        let leaf_key = KeyPair::generate()?;
        let leaf =
            CertificateParams::new(vec![SERVER_NAME.to_owned()])?.signed_by(&leaf_key, &issuer)?;
        std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
        std::fs::write(dir.join("chain.pem"), leaf.pem())?;
        std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem())?;
        Ok(Pki {
            dir: dir.to_owned(),
            chain: vec![leaf.der().clone()],
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        })
    }

    /// The CA certificate (DER), for Rust clients.
    pub fn ca_der(&self) -> Result<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        Ok(CertificateDer::from_pem_file(self.dir.join("ca.pem"))?)
    }

    pub fn server_tls(&self) -> Result<rustls::ServerConfig> {
        Ok(roam_sdk::tls::server_config(
            self.chain.clone(),
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
            &[],
        )?)
    }

    /// The options JSON of a client on the two-link handset: this CA, the server's name, the
    /// WiFi-first policy, the embedded decision source, and `extra` keys.
    pub fn client_options(&self, extra: &[(&str, serde_json::Value)]) -> String {
        let mut o = serde_json::json!({
            "ca": self.dir.join("ca.pem"),
            "server_name": SERVER_NAME,
            "policy": POLICY,
            "decision_source": "embedded",
            "app": "com.example.ffi",
        });
        for (k, v) in extra {
            o[*k] = v.clone();
        }
        o.to_string()
    }

    /// The options JSON of `roam_listen` with this certificate.
    pub fn listen_options(&self) -> String {
        serde_json::json!({
            "cert": self.dir.join("chain.pem"),
            "key": self.dir.join("key.pem"),
        })
        .to_string()
    }
}

/// The directory holding `libroam.so` (the test binary's target directory), built now: `cargo
/// test` builds the crate's rlib for the tests but not its cdylib, which the C and Python
/// programs load.
pub fn lib_dir() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let o = Command::new(env!("CARGO"))
                // --all-targets: the features of the test build, so that the two builds do
                // not rebuild each other's dependencies.
                .args(["build", "-p", "roam-ffi", "--all-targets"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .output()
                .map_err(|e| format!("running cargo: {e}"))?;
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building libroam.so failed: {e}"))?;
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("no target directory above the test binary")?
        .to_owned();
    ensure!(
        dir.join("libroam.so").exists(),
        "{} has no libroam.so after cargo build",
        dir.display()
    );
    Ok(dir)
}

/// Compiles the C program `source` (a file) into `out` against roam.h and libroam.so.
pub fn cc(source: &Path, out: &Path) -> Result<PathBuf> {
    let lib = lib_dir()?;
    let include = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = Command::new("gcc")
        .args(["-Wall", "-Wextra", "-Werror", "-O1", "-o"])
        .arg(out)
        .arg(source)
        .arg(format!("-I{}", include.display()))
        .arg(format!("-L{}", lib.display()))
        .arg("-lroam")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .output()
        .context("running gcc")?;
    if !o.status.success() {
        bail!(
            "gcc {} failed:\n{}",
            source.display(),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(out.to_owned())
}

/// Compiles the C program text `text` as `name` in `dir`.
pub fn cc_text(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, text)?;
    cc(&src, &dir.join(name))
}

/// The two-link handset of the handover tests: `wlan0` (WiFi, preferred) and `rmnet0`.
pub fn two_links() -> Result<Topology> {
    init_tracing();
    Topology::builder()
        .link("wlan0", roam_sdk::model::LinkKind::Wifi)
        .link("rmnet0", roam_sdk::model::LinkKind::Cellular)
        .build()
}

/// What the echo server did.
#[derive(Debug, Default)]
pub struct Echoed {
    /// Sessions served to their end.
    pub sessions: usize,
    /// Sessions that failed (a client's abandoned racing connection, or a real failure, which
    /// the byte count shows).
    pub failed: usize,
    /// Bytes echoed over all of them.
    pub bytes: u64,
}

impl Echoed {
    fn add(&mut self, r: Result<u64>) {
        match r {
            Ok(n) => {
                self.sessions += 1;
                self.bytes += n;
            }
            Err(e) => {
                tracing::info!(error = %e, "an echo session failed");
                self.failed += 1;
            }
        }
    }
}

/// A roam `Listener` on the service address in the server namespace that echoes every
/// session, each in a task of its own, until [`EchoServer::finish`].
pub struct EchoServer {
    stop: tokio::sync::oneshot::Sender<()>,
    handle: JoinHandle<Result<Echoed>>,
}

impl EchoServer {
    /// Starts the server; returns once it listens.
    pub fn start(topo: &Topology, pki: &Pki) -> Result<EchoServer> {
        let tls = pki.server_tls()?;
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel();
        let handle = topo.server().spawn("roam-echo", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let listener = Listener::bind(SocketAddr::new(SERVICE_V4.into(), PORT), tls)?;
                let _ = ready_tx.send(());
                let mut tasks = tokio::task::JoinSet::new();
                let mut done = Echoed::default();
                // A client racing its links may leave a second, abandoned session: every
                // session is served, and only their sum counts.
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        s = listener.accept() => { tasks.spawn(echo(s?)); }
                        Some(r) = tasks.join_next(), if !tasks.is_empty() => done.add(r?),
                    }
                }
                let mut e = done;
                let drain = async {
                    while let Some(r) = tasks.join_next().await {
                        e.add(r?);
                    }
                    anyhow::Ok(())
                };
                tokio::time::timeout(Duration::from_secs(15), drain)
                    .await
                    .context("echo sessions still open 15 s after the stop")??;
                Ok(e)
            })
        })?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the echo server did not start listening")?;
        Ok(EchoServer { stop, handle })
    }

    /// Stops accepting, waits for the sessions to end, and says what was echoed.
    pub fn finish(self) -> Result<Echoed> {
        let _ = self.stop.send(());
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("the echo server panicked"))?
    }
}

/// Echoes `s` to the end of the client's stream, ends its own, and waits (10 s at most) for
/// the client to close.
async fn echo(s: Session) -> Result<u64> {
    let (mut r, mut w) = tokio::io::split(s);
    let n = tokio::io::copy(&mut r, &mut w).await.context("echo")?;
    w.shutdown().await.context("ending the echo")?;
    let s = r.unsplit(w);
    let _ = tokio::time::timeout(Duration::from_secs(10), s.closed()).await;
    Ok(n)
}

/// Output lines of a child, as they come, with a deadline.
pub struct Lines {
    rx: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Lines {
    pub fn of(out: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix` (up to `limit`); `None` when the child ended.
    pub fn wait_for(&mut self, prefix: &str, limit: Duration) -> Result<Option<String>> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(l) => {
                    eprintln!("child: {l}");
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return Ok(Some(l));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!(
                        "no line `{prefix}...` within {limit:?}; saw {:?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Every remaining line until the child closes its output.
    pub fn rest(&mut self, limit: Duration) -> Result<()> {
        while self.wait_for("\u{0}", limit)?.is_some() {}
        Ok(())
    }
}
