//! Putting a socket on an Android `Network`: the platform's binder.
//!
//! On a device, [`NdkBinder`] calls the NDK's `android_setsocknetwork(net_handle_t, int)` (API
//! 23), found with `dlopen("libandroid.so")` so the library also loads where there is none. An
//! app can instead give a Java object with `void bindSocket(int fd, long networkHandle)`
//! ([`JavaBinder`]), which on Android calls `Network.fromNetworkHandle(h).bindSocket(fd)`
//! and on the host test records the call.

use std::ffi::{CStr, c_int};
use std::fmt;
use std::os::fd::RawFd;

use jni::JavaVM;
use jni::objects::{GlobalRef, JValue};

use crate::error::BridgeError;
use crate::links::NetworkHandle;

/// Binds sockets to networks.
pub trait SocketBinder: Send + Sync + fmt::Debug {
    /// Makes `fd`'s traffic go through `network` only.
    fn bind(&self, fd: RawFd, network: NetworkHandle) -> Result<(), BridgeError>;
}

type SetSockNetwork = unsafe extern "C" fn(network: u64, fd: c_int) -> c_int;

/// The NDK's `android_setsocknetwork`.
#[derive(Clone, Copy)]
pub struct NdkBinder {
    set_sock_network: SetSockNetwork,
}

impl fmt::Debug for NdkBinder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NdkBinder(android_setsocknetwork)")
    }
}

impl NdkBinder {
    /// Finds `android_setsocknetwork` in `libandroid.so`; fails off Android (the host), or
    /// below API 23.
    pub fn load() -> Result<NdkBinder, String> {
        const LIB: &CStr = c"libandroid.so";
        const SYM: &CStr = c"android_setsocknetwork";
        // SAFETY: both names are NUL-terminated constants; dlopen of a system library runs
        // only its initialisers. The handle is kept for ever (never dlclose'd) because the
        // function pointer taken from it is kept for ever.
        let lib = unsafe { libc::dlopen(LIB.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(format!("libandroid.so cannot be loaded ({})", dl_error()));
        }
        // SAFETY: `lib` is a live handle from dlopen above and SYM is NUL-terminated.
        let sym = unsafe { libc::dlsym(lib, SYM.as_ptr()) };
        if sym.is_null() {
            return Err(format!(
                "libandroid.so has no android_setsocknetwork (API 23 or later needed): {}",
                dl_error()
            ));
        }
        // SAFETY: the NDK declares `int android_setsocknetwork(net_handle_t network, int fd)`
        // with `typedef uint64_t net_handle_t`, which is exactly `SetSockNetwork`.
        let set_sock_network =
            unsafe { std::mem::transmute::<*mut libc::c_void, SetSockNetwork>(sym) };
        Ok(NdkBinder { set_sock_network })
    }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string owned by libc, valid until the
    // next dl* call on this thread; it is copied at once.
    let e = unsafe { libc::dlerror() };
    if e.is_null() {
        "no detail".to_owned()
    } else {
        // SAFETY: non-null and NUL-terminated, per dlerror's contract.
        unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
    }
}

impl SocketBinder for NdkBinder {
    fn bind(&self, fd: RawFd, network: NetworkHandle) -> Result<(), BridgeError> {
        // SAFETY: the function pointer came from dlsym with the NDK's signature; it only
        // reads its two integer arguments (an invalid fd is an error return, not UB).
        let rc = unsafe { (self.set_sock_network)(network.0, fd) };
        if rc == 0 {
            Ok(())
        } else {
            Err(BridgeError::Bind {
                fd,
                network,
                detail: format!(
                    "android_setsocknetwork: {}",
                    std::io::Error::last_os_error()
                ),
            })
        }
    }
}

/// A Java object with `void bindSocket(int fd, long networkHandle)`.
#[derive(Debug)]
pub struct JavaBinder {
    vm: JavaVM,
    object: GlobalRef,
}

impl JavaBinder {
    /// Calls `object.bindSocket` through `vm`.
    pub fn new(vm: JavaVM, object: GlobalRef) -> JavaBinder {
        JavaBinder { vm, object }
    }
}

impl SocketBinder for JavaBinder {
    fn bind(&self, fd: RawFd, network: NetworkHandle) -> Result<(), BridgeError> {
        let mut env = self.vm.attach_current_thread()?;
        // A handle above i64::MAX does not exist on Android (it is a netId shifted left).
        let handle = i64::try_from(network.0)
            .map_err(|_| BridgeError::invalid("networkHandle", "above Long.MAX_VALUE"))?;
        env.call_method(
            &self.object,
            "bindSocket",
            "(IJ)V",
            &[JValue::Int(fd), JValue::Long(handle)],
        )?;
        Ok(())
    }
}

/// Checks that `fd` is an open socket, so a binder is never handed a random descriptor.
pub fn check_socket(fd: RawFd) -> Result<(), BridgeError> {
    if fd < 0 {
        return Err(BridgeError::invalid("fd", format!("{fd} is negative")));
    }
    let mut ty: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `ty` and `len` are live locals of the sizes passed; getsockopt on any integer
    // is safe (a bad descriptor is EBADF, a non-socket ENOTSOCK).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&raw mut ty).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(BridgeError::invalid(
            "fd",
            format!(
                "{fd} is not an open socket ({})",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_open_sockets_pass_the_check() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        use std::os::fd::AsRawFd;
        check_socket(s.as_raw_fd()).unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let e = check_socket(f.as_raw_fd()).unwrap_err().to_string();
        assert!(e.contains("not an open socket"), "{e}");
        assert!(check_socket(-1).is_err());
    }

    #[test]
    fn the_ndk_binder_says_why_it_is_missing_on_the_host() {
        if std::path::Path::new("/system/lib64/libandroid.so").exists() {
            return; // on a device it loads
        }
        let e = NdkBinder::load().unwrap_err();
        assert!(e.contains("libandroid.so"), "{e}");
    }
}
