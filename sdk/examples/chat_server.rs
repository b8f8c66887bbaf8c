//! A chat server: every line a client sends goes to every other client, prefixed with the
//! sender's name (the first line each client sends).
//!
//! ```sh
//! cargo run -p roam --example chat_server -- --listen 0.0.0.0:4433 --cert cert.pem --key key.pem
//! ```
//!
//! Clients are `roam::Session`s (see `chat_client.rs`); one that moves from WiFi to cellular
//! stays in the room: the server sees the same session from a new address.

use std::net::SocketAddr;
use std::path::PathBuf;

use roam::{Listener, Session};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One line said in the room: who said it (a session number) and the text.
#[derive(Debug, Clone)]
struct Said {
    from: u64,
    line: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let (listen, cert, key) = args()?;
    let chain = CertificateDer::pem_file_iter(&cert)?.collect::<std::result::Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(&key)?;
    let listener = Listener::bind(listen, roam::tls::server_config(chain, key, &[])?)?;
    println!("chat server on {}", listener.local_addr()?);
    let (room, _) = broadcast::channel::<Said>(256);
    for id in 1.. {
        let session = listener.accept().await?;
        tokio::spawn(member(session, id, room.clone()));
    }
    Ok(())
}

/// One client: its first line is its name, every later line goes to the room; what the
/// others say goes back to it.
async fn member(session: Session, id: u64, room: broadcast::Sender<Said>) {
    let peer = session.path().remote;
    let (rx, mut tx) = tokio::io::split(session);
    let mut lines = BufReader::new(rx).lines();
    let name = match lines.next_line().await {
        Ok(Some(name)) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => return,
    };
    println!("{name} joined from {peer}");
    let mut heard = room.subscribe();
    let _ = room.send(Said {
        from: id,
        line: format!("* {name} joined"),
    });
    let relay = async {
        loop {
            match heard.recv().await {
                Ok(s) if s.from == id => {}
                Ok(s) => tx.write_all(format!("{}\n", s.line).as_bytes()).await?,
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok::<_, std::io::Error>(()),
            }
        }
    };
    let listen = async {
        while let Some(line) = lines.next_line().await? {
            let _ = room.send(Said {
                from: id,
                line: format!("{name}: {line}"),
            });
        }
        Ok::<_, std::io::Error>(())
    };
    // The client leaving (its stream ends or fails) ends both.
    tokio::select! {
        r = listen => if let Err(e) = r { println!("{name}: {e}") },
        r = relay => if let Err(e) = r { println!("{name}: {e}") },
    }
    println!("{name} left");
    let _ = room.send(Said {
        from: id,
        line: format!("* {name} left"),
    });
}

/// `--listen ADDR:PORT --cert FILE --key FILE`.
fn args() -> Result<(SocketAddr, PathBuf, PathBuf)> {
    let (mut listen, mut cert, mut key) = (None, None, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => listen = Some(value.parse()?),
            "--cert" => cert = Some(value.into()),
            "--key" => key = Some(value.into()),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    match (listen, cert, key) {
        (Some(l), Some(c), Some(k)) => Ok((l, c, k)),
        _ => Err("usage: chat_server --listen ADDR:PORT --cert FILE --key FILE".into()),
    }
}
