//! The session header. On ALPN `roam/1` the client's first bidirectional stream (QUIC) or the
//! TLS stream (TCP transports) starts with `ROAM`, a version byte (1), the app id's length
//! (one byte) and the app id. With an app's own ALPN a QUIC stream carries the app's bytes
//! only.

use tokio::io::AsyncRead;

use crate::error::{Error, Result};

/// The first four bytes of a session (inside TLS).
pub(crate) const MAGIC: &[u8; 4] = b"ROAM";
const VERSION: u8 = 1;

/// The session header: `ROAM`, version, app id length, app id.
pub(crate) fn header(app: Option<&str>) -> Result<Vec<u8>> {
    let app = app.unwrap_or("");
    let len = u8::try_from(app.len())
        .map_err(|_| Error::Protocol(format!("app id of {} bytes is over 255", app.len())))?;
    let mut h = Vec::with_capacity(6 + app.len());
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(len);
    h.extend_from_slice(app.as_bytes());
    Ok(h)
}

/// Writes the session header on a fresh stream (client, ALPN `roam/1`).
pub(crate) async fn write_header(send: &mut noq::SendStream, app: Option<&str>) -> Result<()> {
    let h = header(app)?;
    send.write_all(&h)
        .await
        .map_err(|e| Error::Stream(format!("writing the session header: {e}")))
}

/// Reads the session header after its magic (server, ALPN `roam/1`); returns the app id.
pub(crate) async fn read_header_after_magic<R: AsyncRead + Unpin>(
    recv: &mut R,
) -> Result<Option<String>> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    recv.read_exact(&mut h)
        .await
        .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
    if h[0] != VERSION {
        return Err(Error::Protocol(format!("unknown version {}", h[0])));
    }
    let mut app = vec![0u8; h[1] as usize];
    recv.read_exact(&mut app)
        .await
        .map_err(|e| Error::Protocol(format!("reading the app id: {e}")))?;
    let app =
        String::from_utf8(app).map_err(|_| Error::Protocol("the app id is not UTF-8".into()))?;
    Ok((!app.is_empty()).then_some(app))
}

/// Reads the session header (server, ALPN `roam/1`); returns the app id.
pub(crate) async fn read_header(recv: &mut noq::RecvStream) -> Result<Option<String>> {
    let mut m = [0u8; 4];
    recv.read_exact(&mut m)
        .await
        .map_err(|e| Error::Protocol(format!("reading the session header: {e}")))?;
    if &m != MAGIC {
        return Err(Error::Protocol(format!("bad magic {m:?}")));
    }
    read_header_after_magic(recv).await
}

/// The fuzz target's body (sdk/fuzz, `session_header`) and its corpus replay: `data` as the
/// bytes a TCP client sends inside TLS, read as the Listener reads them (the magic, then
/// [`read_header_after_magic`]). Never panics on any input; a header it accepts is exactly
/// what [`header`] writes for its app id.
pub(crate) fn fuzz(data: &[u8]) {
    let Some((magic, mut rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    if magic != MAGIC {
        return;
    }
    let before = rest.len();
    let r = {
        let read = std::pin::pin!(read_header_after_magic(&mut rest));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        // A reader over a slice never waits.
        let std::task::Poll::Ready(r) = std::future::Future::poll(read, &mut cx) else {
            panic!("reading the header from a slice waited");
        };
        r
    };
    if let Ok(app) = r {
        let used = 4 + before - rest.len();
        let again = header(app.as_deref()).expect("an app id read back fits");
        assert_eq!(again, data[..used], "the header does not round-trip");
    }
}
