//! A chat client: lines typed go to the room, lines from the room are printed, and the
//! session's moves between links are told as they happen.
//!
//! ```sh
//! cargo run -p roam --example chat_client -- chat.example:4433 --ca cert.pem --name alice
//! ```
//!
//! The session is one `roam::Session`: when WiFi goes away it moves to cellular and the chat
//! goes on, with nothing to reconnect or resend in the app.

use std::path::PathBuf;

use roam::{ClientTls, Session, SessionEvent};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let (target, ca, name) = args()?;
    let cas = CertificateDer::pem_file_iter(&ca)?.collect::<std::result::Result<_, _>>()?;
    let session = Session::builder()
        .app("com.example.chat")
        .tls(ClientTls::Ca(cas))
        .connect(&target)
        .await?;
    eprintln!(
        "* connected as {name} over {} on {}",
        session.transport(),
        session.path().interface.unwrap_or_default()
    );
    let mut events = session.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let SessionEvent::PathChanged { from, to, reason } = e {
                let from = from.map(|f| f.interface).unwrap_or_default();
                eprintln!("* moved {from} -> {} ({reason})", to.interface);
            }
        }
    });

    let (rx, mut tx) = tokio::io::split(session);
    tx.write_all(format!("{name}\n").as_bytes()).await?;
    let typed = async {
        let mut stdin = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = stdin.next_line().await? {
            tx.write_all(format!("{line}\n").as_bytes()).await?;
        }
        // Typing ended: say so to the server; what others say is still printed.
        tx.shutdown().await?;
        std::future::pending::<()>().await;
        Ok::<_, std::io::Error>(())
    };
    let heard = async {
        let mut lines = BufReader::new(rx).lines();
        while let Some(line) = lines.next_line().await? {
            println!("{line}");
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        r = typed => r?,
        r = heard => r?,
    }
    eprintln!("* the server ended the chat");
    Ok(())
}

/// `HOST:PORT --ca FILE --name NAME`.
fn args() -> Result<(String, PathBuf, String)> {
    let mut it = std::env::args().skip(1);
    let target = it
        .next()
        .ok_or("usage: chat_client HOST:PORT --ca FILE --name NAME")?;
    let (mut ca, mut name) = (None, None);
    while let Some(a) = it.next() {
        let value = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--ca" => ca = Some(value.into()),
            "--name" => name = Some(value),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    Ok((
        target,
        ca.ok_or("--ca FILE is needed")?,
        name.ok_or("--name NAME is needed")?,
    ))
}
