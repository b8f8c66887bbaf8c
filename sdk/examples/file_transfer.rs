//! A file transfer that survives losing WiFi halfway: the sender writes the file into one
//! `roam::Session`; when the link under it dies the session moves to another and the bytes go
//! on from where they were. The receiver checks what arrived and answers with its length and
//! checksum, which the sender compares with its own.
//!
//! ```sh
//! cargo run -p roam --example file_transfer -- receive --listen 0.0.0.0:4433 \
//!     --cert cert.pem --key key.pem --dir incoming/
//! cargo run -p roam --example file_transfer -- send big.iso server.example:4433 --ca cert.pem
//! ```
//!
//! On the wire: the name's length (u16, big-endian), the name, the size (u64, big-endian), the
//! bytes; the receiver answers `ok SIZE CHECKSUM\n`. The checksum (64-bit FNV-1a) catches a
//! lost, repeated or reordered chunk; it is not a defence against an attacker (TLS is).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use roam::{ClientTls, Listener, Session, SessionEvent};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const USAGE: &str = "usage: file_transfer send FILE HOST:PORT --ca FILE\n       \
                     file_transfer receive --listen ADDR:PORT --cert FILE --key FILE --dir DIR";

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("send") if args.len() == 5 && args[3] == "--ca" => {
            send(Path::new(&args[1]), &args[2], Path::new(&args[4])).await
        }
        Some("receive") => {
            let flag = |name: &str| {
                args.iter()
                    .position(|a| a == name)
                    .and_then(|i| args.get(i + 1))
                    .ok_or(format!("{name} is needed\n{USAGE}"))
            };
            let listen: SocketAddr = flag("--listen")?.parse()?;
            let (cert, key) = (flag("--cert")?, flag("--key")?);
            receive(
                listen,
                Path::new(cert),
                Path::new(key),
                flag("--dir")?.into(),
            )
            .await
        }
        _ => Err(USAGE.into()),
    }
}

/// 64-bit FNV-1a, carried on across chunks.
fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// Sends `file` to the receiver at `target`, trusting the CA certificates in `ca`.
async fn send(file: &Path, target: &str, ca: &Path) -> Result<()> {
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the file needs a UTF-8 name")?;
    let size = std::fs::metadata(file)?.len();
    let cas = CertificateDer::pem_file_iter(ca)?.collect::<std::result::Result<_, _>>()?;
    let mut session = Session::builder()
        .app("com.example.files")
        .tls(ClientTls::Ca(cas))
        .connect(target)
        .await?;
    let started = Instant::now();
    println!(
        "sending {name} ({size} bytes) over {} on {}",
        session.transport(),
        session.path().interface.unwrap_or_default()
    );
    let mut events = session.events();
    tokio::spawn(async move {
        while let Some(e) = events.next().await {
            if let SessionEvent::PathChanged { from, to, reason } = e {
                let from = from.map(|f| f.interface).unwrap_or_default();
                println!(
                    "moved {from} -> {} ({reason}); the transfer goes on",
                    to.interface
                );
            }
        }
    });

    session.write_u16(name.len() as u16).await?;
    session.write_all(name.as_bytes()).await?;
    session.write_u64(size).await?;
    let mut f = tokio::fs::File::open(file).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sum = FNV_START;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        sum = fnv1a(sum, &buf[..n]);
        session.write_all(&buf[..n]).await?;
    }
    session.flush().await?;
    let mut answer = String::new();
    BufReader::new(&mut session).read_line(&mut answer).await?;
    let expected = format!("ok {size} {sum:016x}");
    if answer.trim() != expected {
        return Err(format!(
            "the receiver answered `{}`, expected `{expected}`",
            answer.trim()
        )
        .into());
    }
    println!(
        "sent {name}: {size} bytes in {:.2} s, intact (checksum {sum:016x})",
        started.elapsed().as_secs_f64()
    );
    session.close_and_wait(0, b"done").await;
    Ok(())
}

/// Receives files into `dir`, one session after another, for ever.
async fn receive(listen: SocketAddr, cert: &Path, key: &Path, dir: PathBuf) -> Result<()> {
    let chain = CertificateDer::pem_file_iter(cert)?.collect::<std::result::Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let listener = Listener::bind(listen, roam::tls::server_config(chain, key, &[])?)?;
    println!(
        "receiving into {} on {}",
        dir.display(),
        listener.local_addr()?
    );
    loop {
        let session = listener.accept().await?;
        let dir = dir.clone();
        tokio::spawn(async move {
            if let Err(e) = receive_one(session, &dir).await {
                println!("a transfer failed: {e}");
            }
        });
    }
}

/// One file: header, bytes, answer.
async fn receive_one(mut session: Session, dir: &Path) -> Result<()> {
    let len = session.read_u16().await?;
    let mut name = vec![0u8; len.into()];
    session.read_exact(&mut name).await?;
    let name = String::from_utf8(name)?;
    // Only a plain file name: never a path out of the directory.
    if name.contains('/') || name == ".." || name.is_empty() {
        return Err(format!("refusing the file name `{name}`").into());
    }
    let size = session.read_u64().await?;
    let path = dir.join(&name);
    let mut f = tokio::fs::File::create(&path).await?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut left, mut sum) = (size, FNV_START);
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = session.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(format!("{name}: the stream ended {left} bytes early").into());
        }
        sum = fnv1a(sum, &buf[..n]);
        f.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    f.sync_all().await?;
    session
        .write_all(format!("ok {size} {sum:016x}\n").as_bytes())
        .await?;
    session.shutdown().await?;
    println!("received {name}: {size} bytes, checksum {sum:016x}");
    // The answer must reach the sender before the session goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), session.closed()).await;
    Ok(())
}
