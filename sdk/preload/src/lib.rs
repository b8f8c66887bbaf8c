//! `libroam_preload.so`: loaded with `LD_PRELOAD` by `roam run`, it makes an unmodified
//! program's TCP sockets MPTCP sockets, as `mptcpize` does: `socket(AF_INET or AF_INET6,
//! SOCK_STREAM, 0 or IPPROTO_TCP)` asks the kernel for `IPPROTO_MPTCP` instead. Everything
//! else (UDP, Unix sockets, raw sockets, an explicit other protocol) goes to the C library's
//! `socket` untouched.
//!
//! - A kernel without MPTCP, or with `net.mptcp.enabled = 0`, refuses `IPPROTO_MPTCP`: the
//!   socket is then made as asked (plain TCP), so the program works as it would without roam.
//! - A peer that does not speak MPTCP: the kernel falls back to plain TCP on that connection
//!   by itself (RFC 8684 fallback), invisible to the program.
//! - An MPTCP socket answers the TCP socket options programs use (`TCP_NODELAY`,
//!   keepalive, ...), non-blocking `connect`, `listen`/`accept`: a program that listens gets
//!   an MPTCP listener, which accepts plain TCP clients too.
//! - The variable is inherited: children started with `fork`/`exec` are covered as well,
//!   unless they clear the environment; setuid programs ignore `LD_PRELOAD`, and statically
//!   linked programs (most Go binaries) do not call the C library's `socket` at all.
//!
//! Set `ROAM_PRELOAD_DEBUG=1` to have every replaced socket written to standard error.
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering};

/// `IPPROTO_MPTCP` (Linux 5.6+).
const IPPROTO_MPTCP: c_int = 262;

/// `socket()` of the next object in the lookup order (the C library's), found once.
static REAL_SOCKET: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

type SocketFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;

fn real_socket() -> Option<SocketFn> {
    let mut p = REAL_SOCKET.load(Ordering::Acquire);
    if p.is_null() {
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name has no precondition; a race
        // between two threads stores the same pointer twice.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, c"socket".as_ptr()) };
        REAL_SOCKET.store(p, Ordering::Release);
    }
    if p.is_null() {
        None
    } else {
        // SAFETY: the symbol `socket` of the C library has exactly this signature
        // (`int socket(int, int, int)`), and a non-null dlsym result is its address.
        Some(unsafe { std::mem::transmute::<*mut c_void, SocketFn>(p) })
    }
}

/// Writes `roam-preload: socket FD is MPTCP` to standard error, ignoring failures (the
/// program's stderr may be closed; `eprintln!` would panic, and a panic here aborts it).
fn debug(fd: c_int) {
    let line = format!("roam-preload: socket {fd} is MPTCP\n");
    // SAFETY: fd 2 and a valid buffer of `line.len()` bytes; the result is ignored on purpose.
    let _ = unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Whether the call asks for a TCP socket of the internet families.
fn is_tcp(domain: c_int, ty: c_int, protocol: c_int) -> bool {
    // SOCK_NONBLOCK and SOCK_CLOEXEC are or-ed into the type.
    let kind = ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    (domain == libc::AF_INET || domain == libc::AF_INET6)
        && kind == libc::SOCK_STREAM
        && (protocol == 0 || protocol == libc::IPPROTO_TCP)
}

/// The `socket` the program calls instead of the C library's.
///
/// # Safety
///
/// The C contract of `socket(2)`: any arguments, no pointers. Exported under the C library's
/// name, so the dynamic linker binds the program's calls here first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    let Some(real) = real_socket() else {
        // SAFETY: errno is thread-local; setting it is always allowed.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
        return -1;
    };
    if is_tcp(domain, ty, protocol) {
        // SAFETY: `real` is the C library's socket(), called with valid arguments.
        let fd = unsafe { real(domain, ty, IPPROTO_MPTCP) };
        if fd >= 0 {
            if std::env::var_os("ROAM_PRELOAD_DEBUG").is_some() {
                debug(fd);
            }
            return fd;
        }
        // No MPTCP here (EPROTONOSUPPORT, or ENOPROTOOPT when net.mptcp.enabled = 0): TCP,
        // as asked; the errno of the fallback call is the one the program sees.
    }
    // SAFETY: as above, with the program's own arguments.
    unsafe { real(domain, ty, protocol) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internet_stream_sockets_of_tcp_are_replaced() {
        assert!(is_tcp(libc::AF_INET, libc::SOCK_STREAM, 0));
        assert!(is_tcp(
            libc::AF_INET6,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_TCP
        ));
        assert!(!is_tcp(libc::AF_INET, libc::SOCK_DGRAM, 0));
        assert!(!is_tcp(libc::AF_UNIX, libc::SOCK_STREAM, 0));
        assert!(!is_tcp(
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_SCTP
        ));
        assert!(!is_tcp(libc::AF_INET, libc::SOCK_STREAM, IPPROTO_MPTCP));
    }
}
