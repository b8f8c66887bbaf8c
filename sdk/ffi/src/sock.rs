//! The socketpairs behind roam descriptors: one end for the app, one for the library.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::guard::FfiError;

/// A connected `AF_UNIX` `SOCK_STREAM` pair, both ends close-on-exec (an exec'd child never
/// holds a session open): `(app, library)`, the library's end non-blocking.
pub fn pair() -> Result<(OwnedFd, OwnedFd), FfiError> {
    let mut fds: [RawFd; 2] = [-1; 2];
    // SAFETY: socketpair writes two descriptors into the array or fails.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(FfiError::os("making the descriptor's socketpair", &e));
    }
    // SAFETY: both descriptors were just made and belong to no one else.
    let (app, lib) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: F_GETFL/F_SETFL on a descriptor we own.
    let ok = unsafe {
        let flags = libc::fcntl(lib.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(lib.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == 0
    };
    if !ok {
        let e = std::io::Error::last_os_error();
        return Err(FfiError::os("making the library's end non-blocking", &e));
    }
    Ok((app, lib))
}

/// Whether the peer of `fd` has closed its end entirely (`POLLHUP`), as opposed to having
/// only shut down its writing (`shutdown(SHUT_WR)`).
pub fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}

/// Reads into `buf` without blocking.
pub fn read(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of writing.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes `buf` without raising `SIGPIPE` when the app has closed its end (`EPIPE` instead).
pub fn send(fd: RawFd, buf: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes of reading.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Ends the library's writing on `fd`: the app reads end-of-stream.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown on a descriptor we own; failure (already shut) is harmless.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}
