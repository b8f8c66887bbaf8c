//! Listener descriptors: a roam [`Listener`] whose accepted sessions wait in a queue, one byte
//! each on the descriptor, so the app's event loop sees it readable like a listening socket.
//! `roam_accept` reads one byte (blocking or `EAGAIN`, as the descriptor's mode says) and
//! takes the oldest session. Closing the descriptor stops the listener and drops the sessions
//! no one took.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use roam_sdk::{Listener, Session};
use tokio::runtime::Handle;

use crate::guard::FfiError;
use crate::registry::{self, Kind, ListenerShared};
use crate::{json, sock};

/// Gives `listener` a descriptor: returns the app's end, owned by the caller from now on.
pub fn start(handle: &Handle, listener: Listener) -> Result<RawFd, FfiError> {
    let (app, lib) = sock::pair()?;
    let identity = registry::identity(app.as_raw_fd())?;
    // SAFETY: dup of a descriptor we own; the copy is owned by the OwnedFd made from it.
    let wake = unsafe { libc::fcntl(lib.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if wake < 0 {
        let e = io::Error::last_os_error();
        return Err(FfiError::os("duplicating the listener's descriptor", &e));
    }
    // SAFETY: `wake` was just made and belongs to no one else.
    let wake = unsafe { OwnedFd::from_raw_fd(wake) };
    let lib = {
        let _in_runtime = handle.enter();
        tokio::net::UnixStream::from_std(std::os::unix::net::UnixStream::from(lib))
            .map_err(|e| FfiError::os("registering the listener's descriptor", &e))?
    };
    let shared = Arc::new(ListenerShared {
        queue: Mutex::new(VecDeque::new()),
        wake,
    });
    let fd = app.into_raw_fd();
    let id = registry::insert(fd, identity, Kind::Listener(shared.clone()));
    handle.spawn(async move {
        serve(&listener, lib, &shared).await;
        registry::remove(fd, id);
        listener.close();
        shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    });
    Ok(fd)
}

/// Accepts sessions into the queue until the app closes the descriptor.
async fn serve(listener: &Listener, lib: tokio::net::UnixStream, shared: &ListenerShared) {
    loop {
        tokio::select! {
            s = listener.accept() => match s {
                Ok(s) => {
                    shared.queue.lock().unwrap_or_else(|p| p.into_inner()).push_back(s);
                    if crate::pump::send_all(&lib, &[1]).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a roam listener descriptor's listener stopped");
                    return;
                }
            },
            r = lib.readable() => {
                // The app never writes here: readable means it closed the descriptor.
                let mut b = [0u8; 64];
                match (r, lib.try_read(&mut b)) {
                    (Ok(()), Ok(n)) if n > 0 => {}
                    (Ok(()), Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => return,
                }
            }
        }
    }
}

/// Takes the oldest accepted session of the listener behind `fd`, with its peer as JSON.
/// `fits` says whether the JSON fits the app's buffer; when it does not, the session stays
/// first in the queue and the descriptor readable, and the error says the size needed.
pub fn accept(
    fd: RawFd,
    shared: &ListenerShared,
    fits: impl FnOnce(&str) -> Result<(), FfiError>,
) -> Result<(Session, String), FfiError> {
    let mut b = [0u8; 1];
    match sock::read(fd, &mut b) {
        Ok(1) => {}
        Ok(_) => {
            return Err(FfiError::new(
                libc::EINVAL,
                format!("listener descriptor {fd}: the listener has stopped"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(FfiError::new(
                libc::EAGAIN,
                format!("listener descriptor {fd} is non-blocking and no session is waiting"),
            ));
        }
        Err(e) => return Err(FfiError::os(&format!("listener descriptor {fd}"), &e)),
    }
    let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
    let s = q.pop_front().ok_or_else(|| {
        FfiError::new(
            libc::EINVAL,
            format!("listener descriptor {fd}: no session waiting (was a byte read from it?)"),
        )
    })?;
    let peer = json::peer(&s);
    if let Err(e) = fits(&peer) {
        q.push_front(s);
        // Readable again for the session put back.
        let _ = sock::send(shared.wake.as_raw_fd(), &[1]);
        return Err(e);
    }
    Ok((s, peer))
}
