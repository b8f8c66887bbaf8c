//! The captive-portal check: one HTTP `GET` of a configured URL over a TCP socket bound to the
//! interface (`SO_BINDTODEVICE`), as Android's "generate_204" check does. The expected status
//! (204 by default) means the link reaches the internet; anything else (a 200 login page, a
//! 30x redirect to one, no answer) means a portal or a filter stands in between. Whether that
//! keeps the link from being validated is the core's business (`crate::core`).
//!
//! Plain HTTP to an address literal only: the agent resolves no names, and a portal answers
//! plain HTTP precisely so that it can intercept it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The URL type is the core's: the config parses it, the core decides when to check.
pub use crate::core::PortalUrl;

/// The longest a check may take, connection and answer together; no answer by then is a
/// failed check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The status line and headers are read up to this size; a portal's page is not read.
const MAX_HEAD: usize = 4096;

/// Fetches `url` from interface `interface` and returns the HTTP status, or why there is none.
pub async fn check(interface: &str, url: &PortalUrl) -> Result<u16, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, fetch_status(interface, url)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
    }
}

async fn fetch_status(interface: &str, url: &PortalUrl) -> Result<u16, String> {
    let socket = if url.addr.is_ipv6() {
        TcpSocket::new_v6()
    } else {
        TcpSocket::new_v4()
    }
    .map_err(|e| format!("socket: {e}"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(|e| format!("SO_BINDTODEVICE {interface}: {e}"))?;
    let mut stream = socket
        .connect(url.addr)
        .await
        .map_err(|e| format!("connecting to {}: {e}", url.addr))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: roamd\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    // Bounded by MAX_HEAD (and by CHECK_TIMEOUT around it).
    while head.len() < MAX_HEAD && !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| "the answer is not HTTP".to_owned())
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 204 No Content`).
pub fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut words = line.split(' ');
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_of_a_status_line() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n\r\n"), Some(204));
        assert_eq!(
            parse_status(b"HTTP/1.0 302 Found\r\nLocation: x\r\n"),
            Some(302)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
    }
}
