//! A decision source of the app's own: the app, not roamd nor the embedded monitor, says which
//! links a session may use and which one first. Here the links come from the command line and
//! the person at the keyboard picks one (`use rmnet0`); on Android they would come from
//! ConnectivityManager's callbacks.
//!
//! ```sh
//! roam serve --listen 0.0.0.0:4433 --cert cert.pem --key key.pem --echo &
//! cargo run -p roam --example custom_source -- server.example:4433 --ca cert.pem \
//!     --link wlan0=wifi=192.168.1.20 --link rmnet0=cellular=10.64.0.7
//! ```
//!
//! Every 200 ms the example sends a line to the echo server and prints it when it comes back,
//! with the interface it went over. Type `use IFACE` to put that link first, `drop IFACE` to
//! withdraw it, `add IFACE` to permit it again.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roam::decision::{DecisionSource, LinkView, SubscribeFuture};
use roam::model::{Decision, LinkKind, LinkState, MultipathMode, Path, Role};
use roam::{ClientTls, Session, SessionEvent, Snapshot};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The app's choice of links: an order and a set of withdrawn links, published to every
/// session that subscribed.
#[derive(Debug)]
struct AppChoice {
    links: Vec<LinkView>,
    /// Interface names, best first; withdrawn ones are left out.
    order: Mutex<Vec<String>>,
    tx: watch::Sender<Arc<Snapshot>>,
}

impl AppChoice {
    fn new(links: Vec<LinkView>) -> AppChoice {
        let order: Vec<String> = links.iter().map(|l| l.name.clone()).collect();
        let (tx, _) = watch::channel(Arc::new(snapshot(&links, &order, "as given")));
        AppChoice {
            links,
            order: Mutex::new(order),
            tx,
        }
    }

    /// Applies a command (`use X`, `drop X`, `add X`) and publishes the new decision.
    fn command(&self, line: &str) -> std::result::Result<(), String> {
        let (verb, name) = line
            .trim()
            .split_once(' ')
            .ok_or("say `use IFACE`, `drop IFACE` or `add IFACE`")?;
        if !self.links.iter().any(|l| l.name == name) {
            return Err(format!("no link {name}"));
        }
        let mut order = self.order.lock().unwrap();
        order.retain(|n| n != name);
        match verb {
            "use" => order.insert(0, name.to_owned()),
            "add" => order.push(name.to_owned()),
            "drop" => {}
            _ => return Err(format!("unknown command {verb}")),
        }
        let why = format!("the app said `{}`", line.trim());
        self.tx
            .send_replace(Arc::new(snapshot(&self.links, &order, &why)));
        Ok(())
    }
}

/// A decision for `order`: the first link primary, the others backups.
fn snapshot(links: &[LinkView], order: &[String], why: &str) -> Snapshot {
    let paths = order
        .iter()
        .enumerate()
        .map(|(i, name)| Path {
            interface: name.clone(),
            link: name.clone(),
            role: if i == 0 { Role::Primary } else { Role::Backup },
        })
        .collect();
    Snapshot {
        decision: Decision {
            app: None,
            multipath: MultipathMode::Handover,
            paths,
            explain: vec![why.to_owned()],
        },
        links: links.to_vec(),
        // This source names no flow-size rule: sessions report no flow to it.
        flow_thresholds: Default::default(),
    }
}

impl DecisionSource for AppChoice {
    fn subscribe<'a>(&'a self, _app: Option<&'a str>) -> SubscribeFuture<'a> {
        // The receiver holds the current decision at once and sees every later one.
        let rx = self.tx.subscribe();
        Box::pin(async move { Ok(rx) })
    }

    fn name(&self) -> String {
        "the app's own choice".into()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let (target, ca, links) = args()?;
    let choice = Arc::new(AppChoice::new(links));
    let cas = CertificateDer::pem_file_iter(&ca)?.collect::<std::result::Result<_, _>>()?;
    let session = Session::builder()
        .app("com.example.custom")
        .tls(ClientTls::Ca(cas))
        .decision_source(choice.clone())
        .connect(&target)
        .await?;
    let on = Arc::new(Mutex::new(session.path().interface.unwrap_or_default()));
    println!("connected on {}", on.lock().unwrap());
    let mut events = session.events();
    let moved = on.clone();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            match e {
                SessionEvent::PathChanged { from, to, reason } => {
                    let from = from.map(|f| f.interface).unwrap_or_default();
                    println!("path changed: {from} -> {} ({reason})", to.interface);
                    *moved.lock().unwrap() = to.interface;
                }
                SessionEvent::DecisionSourceChosen { source, .. } => {
                    println!("decisions from {source}")
                }
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = stdin.next_line().await {
            if let Err(e) = choice.command(&line) {
                println!("{e}");
            }
        }
    });

    let (rx, mut tx) = tokio::io::split(session);
    let mut echoes = BufReader::new(rx).lines();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    for n in 0u64.. {
        tick.tick().await;
        tx.write_all(format!("ping {n}\n").as_bytes()).await?;
        match echoes.next_line().await? {
            Some(line) => println!("echo via {}: {line}", on.lock().unwrap()),
            None => break,
        }
    }
    Ok(())
}

/// `HOST:PORT --ca FILE --link NAME=KIND=ADDR...`
fn args() -> Result<(String, PathBuf, Vec<LinkView>)> {
    let usage = "usage: custom_source HOST:PORT --ca FILE --link NAME=KIND=ADDR [--link ...]";
    let mut it = std::env::args().skip(1);
    let target = it.next().ok_or(usage)?;
    let (mut ca, mut links) = (None, Vec::new());
    while let Some(a) = it.next() {
        let value = it.next().ok_or(usage)?;
        match a.as_str() {
            "--ca" => ca = Some(value.into()),
            "--link" => {
                let mut parts = value.splitn(3, '=');
                let (Some(name), Some(kind), Some(addr)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(format!("--link {value}: write NAME=KIND=ADDR").into());
                };
                links.push(LinkView {
                    name: name.to_owned(),
                    kind: kind.parse::<LinkKind>()?,
                    state: LinkState::Validated,
                    addrs: vec![addr.parse::<IpAddr>()?],
                });
            }
            _ => return Err(format!("unknown argument {a}\n{usage}").into()),
        }
    }
    if links.is_empty() {
        return Err(usage.into());
    }
    Ok((target, ca.ok_or(usage)?, links))
}
