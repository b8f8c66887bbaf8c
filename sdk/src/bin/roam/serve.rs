//! `roam serve`: a listener for sessions, echoing them or printing what they send.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use roam::{Listener, ListenerConfig, Session};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Result;
use crate::events::{Narrator, Printer, sentence, t_ms};

/// How long an echoing server keeps a finished session open for its client to read the end.
const LINGER: std::time::Duration = std::time::Duration::from_secs(10);

/// `roam serve --help`.
pub const LONG_ABOUT: &str = "Accept sessions on one address: QUIC on UDP, and MPTCP (which accepts plain \
        TCP too) for the mptcp and tcp-resume transports on the same TCP port number. Runs \
        until interrupted (Ctrl-C).\n\n\
        With --echo every session gets its own bytes back; without it, what sessions send is \
        written to standard output. Sentences about sessions go to standard error; --json \
        prints one JSON object per line per session event instead (to standard output with \
        --echo, else to standard error), each with `session`, a number per accepted session.\n\n\
        With --reset-key FILE a restarted server ends its predecessor's QUIC sessions at once \
        (a stateless reset the clients can verify) instead of leaving them to their idle \
        timeout (30 s by default): give every run of the server the same file, made once with \
        `openssl rand -hex 32 > reset.key && chmod 600 reset.key`, and keep it secret like the \
        TLS key (whoever has it can end this server's QUIC sessions).";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address and port to listen on (UDP for QUIC, TCP for the others), e.g. 0.0.0.0:4433.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// The server's certificate chain, PEM, leaf first.
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// The certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The QUIC stateless-reset key: a file of 64 hexadecimal digits (`openssl rand -hex 32`)
    /// or of exactly 32 raw bytes. The same file for every run of this server lets a restarted
    /// one end the old QUIC sessions at once; without it they end at their idle timeout.
    #[arg(long, value_name = "FILE")]
    reset_key: Option<PathBuf>,
    /// Send every session's bytes back to it.
    #[arg(long)]
    echo: bool,
    /// One JSON object per line per session event.
    #[arg(long)]
    json: bool,
}

/// Runs the listener until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> Result<ExitCode> {
    let chain = crate::pki::certificates("--cert", &args.cert)?;
    let key = crate::pki::private_key("--key", &args.key)?;
    let stateless_reset_key = match &args.reset_key {
        Some(path) => Some(crate::pki::reset_key("--reset-key", path)?),
        None => None,
    };
    let tls = roam::tls::server_config(chain, key, &[])?;
    let listener = Listener::bind_with(
        args.listen,
        tls,
        ListenerConfig {
            stateless_reset_key,
            ..ListenerConfig::default()
        },
    )?;
    let out = Printer {
        json: args.json,
        stdout_busy: !args.echo,
    };
    let local = listener.local_addr()?;
    out.json(&json!({"event": "listening", "addr": local.to_string(), "echo": args.echo}));
    out.say(&format!(
        "listening on {local} (QUIC on UDP, MPTCP/TCP on TCP){}",
        if args.echo { ", echoing" } else { "" }
    ));
    let mut next = 1u64;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let s = tokio::select! {
            s = listener.accept() => s?,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        tokio::spawn(serve_one(s, next, args.echo, out));
        next += 1;
    }
    listener.close();
    Ok(ExitCode::SUCCESS)
}

/// One accepted session: told, echoed or printed, and its end told.
async fn serve_one(mut s: Session, id: u64, echo: bool, out: Printer) {
    let start = Instant::now();
    let mut peer = s.path().remote;
    let app = s.app().map(str::to_owned);
    out.json(&json!({
        "event": "accepted", "session": id, "t_ms": 0, "peer": peer.to_string(),
        "app": app, "transport": s.transport().as_str(),
        "alpn": String::from_utf8_lossy(s.alpn()),
    }));
    out.say(&format!(
        "session {id}: {} from {peer} (app {}, {})",
        if echo { "echoing" } else { "printing" },
        app.as_deref().unwrap_or("none"),
        s.transport()
    ));
    let mut events = s.events();
    tokio::spawn(async move {
        let mut narrator = Narrator::default();
        while let Some(e) = events.next().await {
            for mut v in narrator.json(&e, t_ms(start)) {
                v["session"] = json!(id);
                out.json(&v);
            }
            if let Some(text) = sentence(&e) {
                out.say(&format!("session {id}: {text}"));
            }
        }
    });
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut stdout = tokio::io::stdout();
    let result: Result<()> = async {
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            // The server sees a client that moved as a new address.
            let now = s.path().remote;
            if now != peer {
                out.json(&json!({
                    "event": "peer_changed", "session": id, "t_ms": t_ms(start),
                    "from": peer.to_string(), "to": now.to_string(),
                }));
                out.say(&format!("session {id}: the client moved: {peer} -> {now}"));
                peer = now;
            }
            if echo {
                s.write_all(&buf[..n]).await?;
            } else {
                stdout.write_all(&buf[..n]).await?;
                stdout.flush().await?;
            }
        }
        if echo {
            s.shutdown().await?;
            // Dropping the session closes it at once; the client ends it once it read the
            // echo's end (TCP sessions return at once, the kernel delivers what was written).
            let _ = tokio::time::timeout(LINGER, s.closed()).await;
        }
        Ok(())
    }
    .await;
    let error = result
        .as_ref()
        .err()
        .map(|e| crate::one_line(&e.to_string()));
    out.json(&json!({
        "event": "ended", "session": id, "t_ms": t_ms(start), "bytes_received": bytes,
        "error": error,
    }));
    match error {
        None => out.say(&format!("session {id}: ended cleanly after {bytes} bytes")),
        Some(e) => out.say(&format!("session {id}: ended after {bytes} bytes: {e}")),
    }
}
